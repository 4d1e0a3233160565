//! Cross-replica wake-ups over PostgreSQL LISTEN/NOTIFY.
//!
//! NOTIFY inside the write transaction takes a global lock at commit and costs a large share
//! of write throughput, so commits only mark their tenant as dirty here; a single task issues
//! at most one NOTIFY per dirty tenant per `COALESCE_WINDOW`, outside any write transaction.
//! A notification only wakes tailers, which then read the outbox: losing one (for example while
//! the listener reconnects) delays delivery until the tailers' poll, and never loses an event.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;

use crate::app::events::{CommitListener, EventHub};
use crate::domain::ids::TenantId;
use crate::store::Store;

pub const CHANNEL: &str = "leadpipe_outbox";
const COALESCE_WINDOW: Duration = Duration::from_millis(5);
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct PgRelay {
    dirty: Mutex<HashSet<TenantId>>,
    wake: Notify,
}

impl CommitListener for PgRelay {
    fn committed(&self, tenant: &TenantId) {
        let newly_dirty = self
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.clone());
        if newly_dirty {
            self.wake.notify_one();
        }
    }
}

/// Starts the notifier and the listener, and registers the relay with the hub.
pub fn start(
    store: Store,
    database_url: String,
    hub: Arc<EventHub>,
    shutdown: watch::Receiver<bool>,
    tasks: &TaskTracker,
) {
    let relay = Arc::new(PgRelay::default());
    hub.set_relay(relay.clone());
    tasks.spawn(notify_loop(store, relay, shutdown.clone()));
    tasks.spawn(listen_loop(database_url, hub, shutdown));
}

async fn notify_loop(store: Store, relay: Arc<PgRelay>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = relay.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        let tenants: Vec<TenantId> = relay
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for tenant in tenants {
            let statement = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [CHANNEL.into(), tenant.as_str().into()],
            );
            if let Err(error) = store.writer().execute_raw(statement).await {
                tracing::debug!(%error, "NOTIFY failed; other replicas fall back to polling");
            }
        }
        tokio::time::sleep(COALESCE_WINDOW).await;
    }
}

async fn listen_loop(
    database_url: String,
    hub: Arc<EventHub>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let mut listener = match connect(&database_url).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for other replicas' commits; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(RECONNECT_DELAY) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        // Notifications sent while we were not listening are lost; catch up now.
        hub.wake_all();
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                _ = shutdown.changed() => return,
            };
            match received {
                Ok(Some(notification)) => {
                    if let Ok(tenant) = TenantId::parse(notification.payload()) {
                        hub.wake(&tenant);
                    }
                }
                // The connection dropped; try_recv reconnects on the next call.
                Ok(None) => hub.wake_all(),
                Err(error) => {
                    tracing::warn!(%error, "LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect(database_url: &str) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect(database_url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
