//! Builds the application and serves it over gRPC.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::app::catalog::PipelineCatalog;
use crate::app::events::EventHub;
use crate::app::leads::LeadService;
use crate::app::pipelines::PipelineService;
use crate::grpc::lead_service::LeadApi;
use crate::grpc::pb;
use crate::grpc::pipeline_service::PipelineApi;
use crate::store::{Store, StoreConfig, StoreError, idempotency, outbox, to_micros};

/// How long idempotency keys are remembered.
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone)]
pub struct Settings {
    pub store: StoreConfig,
    /// How long stage-change events stay replayable.
    pub outbox_retention: Duration,
    /// How often expired events and idempotency keys are removed.
    pub maintenance_interval: Duration,
}

impl Settings {
    pub fn new(store: StoreConfig) -> Self {
        Self {
            store,
            outbox_retention: Duration::from_secs(7 * 24 * 60 * 60),
            maintenance_interval: Duration::from_secs(60),
        }
    }
}

pub struct App {
    pub store: Store,
    pub leads: LeadService,
    pub pipelines: PipelineService,
    settings: Settings,
    shutdown: watch::Sender<bool>,
}

impl App {
    /// Connects, migrates and wires the services.
    pub async fn build(settings: &Settings) -> Result<Self, StoreError> {
        let store = Store::connect(&settings.store).await?;
        store.migrate().await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let catalog = Arc::new(PipelineCatalog::default());
        let events = EventHub::new(store.clone(), shutdown_rx);
        Ok(Self {
            leads: LeadService::new(store.clone(), catalog.clone(), events),
            pipelines: PipelineService::new(store.clone(), catalog),
            store,
            settings: settings.clone(),
            shutdown,
        })
    }

    /// Serves until `shutdown` completes. Open streams then end with UNAVAILABLE, and in-flight
    /// calls are drained before this returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<pb::lead_service_server::LeadServiceServer<LeadApi>>()
            .await;
        health
            .set_serving::<pb::pipeline_service_server::PipelineServiceServer<PipelineApi>>()
            .await;
        // Both reflection versions: grpcurl before 1.9 and many other tools still ask v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        if self.store.backend() == sea_orm::DbBackend::Postgres {
            crate::relay::start(
                self.store.clone(),
                self.settings.store.database_url.clone(),
                self.leads.events().clone(),
                self.shutdown.subscribe(),
            );
        }
        tokio::spawn(maintain(
            self.store.clone(),
            self.settings.clone(),
            self.shutdown.subscribe(),
        ));

        let stop_streams = self.shutdown.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = stop_streams.send(true);
        };
        tracing::info!(address = %listener.local_addr()?, "leadpipe serving");
        let result = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(pb::lead_service_server::LeadServiceServer::new(LeadApi {
                leads: self.leads,
            }))
            .add_service(pb::pipeline_service_server::PipelineServiceServer::new(
                PipelineApi {
                    pipelines: self.pipelines,
                },
            ))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await;
        let _ = self.shutdown.send(true);
        self.store.close().await;
        tracing::info!("leadpipe stopped");
        Ok(result?)
    }
}

/// Periodically removes expired events and idempotency keys.
async fn maintain(store: Store, settings: Settings, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(settings.maintenance_interval);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = to_micros(chrono::Utc::now());
        let key_cutoff = now - IDEMPOTENCY_RETENTION.as_micros() as i64;
        if let Err(error) = idempotency::prune(store.writer(), key_cutoff).await {
            tracing::warn!(%error, "could not prune idempotency keys");
        }
        let event_cutoff = now - settings.outbox_retention.as_micros() as i64;
        let tenants = match outbox::tenants(store.reader()).await {
            Ok(tenants) => tenants,
            Err(error) => {
                tracing::warn!(%error, "could not list tenants for outbox pruning");
                continue;
            }
        };
        for tenant in tenants {
            match outbox::prune(store.writer(), &tenant, event_cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(%tenant, removed = n, "pruned expired stage-change events"),
                Err(error) => tracing::warn!(%tenant, %error, "could not prune the outbox"),
            }
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
