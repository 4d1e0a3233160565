//! Live streams of lead changes: every write (WatchLeadChanges), or only the stage changes among
//! them (WatchStageChanges), from the one outbox and with the same sequence numbers.
//!
//! The outbox is the source of truth; nothing is delivered that is not committed there. Per
//! tenant, one tailer task reads newly committed outbox rows once and fans them out over a
//! bounded broadcast channel. Each subscriber keeps a cursor (the last sequence it has passed)
//! and reads from the database whenever the broadcast cannot serve it: while replaying history,
//! after falling behind (the channel reports it lagged), or when it sees a gap. Because sequences
//! are assigned in commit order, "every event above the cursor, in order" is exact: nothing is
//! missed and nothing repeats, at the hand-over from replay to live or anywhere else. Gaps come
//! only from imported history (never streamed) or from retention, which a watermark tells apart.
//!
//! Tailers are woken by local commits, by the PostgreSQL relay for commits on other replicas,
//! and by a slow poll as a safety net.
//!
//! An event reaches every subscriber as the same [`StreamEvent`], which memoizes the event's
//! encoding for each kind of stream: the transport encodes it once for all of a tenant's streams
//! rather than once per stream, which at thousands of subscribers was most of the work of a
//! write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::task::TaskTracker;

use super::api_keys::{KeyName, KeyService};
use super::{AppError, RequestContext};
use crate::domain::history::LeadChangeEvent;
use crate::domain::ids::{LeadId, PipelineId, StageKey, TenantId};
use crate::store::{Store, outbox};

const FANOUT_CAPACITY: usize = 1024;
const READ_BATCH: u64 = 500;
/// Events buffered per stream before the subscriber waits for its client.
const STREAM_BUFFER: usize = 64;
/// How long a subscriber waits before re-reading the outbox after the database failed, at
/// first and at most (the wait doubles in between).
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Which events a subscriber wants; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Every write, rather than only the stage changes.
    pub every_write: bool,
    pub pipeline_id: Option<PipelineId>,
    /// Matched against the stage a stage change entered.
    pub stages: Vec<StageKey>,
    pub owner: Option<String>,
    pub lead_id: Option<LeadId>,
    /// Only writes that changed at least one of these `Lead` fields.
    pub changed_fields: Vec<String>,
}

impl EventFilter {
    pub fn matches(&self, event: &LeadChangeEvent) -> bool {
        let stage_ok = match &event.change {
            Some(change) => self.stages.is_empty() || self.stages.contains(&change.to_stage),
            None => self.every_write && self.stages.is_empty(),
        };
        let lead = &event.lead;
        stage_ok
            && self
                .pipeline_id
                .as_ref()
                .is_none_or(|p| *p == lead.pipeline_id)
            && self.owner.as_ref().is_none_or(|o| *o == lead.fields.owner)
            && self.lead_id.is_none_or(|id| id == lead.id)
            && (self.changed_fields.is_empty()
                || event
                    .changed_fields()
                    .iter()
                    .any(|f| self.changed_fields.contains(f)))
    }
}

/// The two kinds of stream, each with its own encoding of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Stage changes only (WatchStageChanges).
    StageChanges,
    /// Every write (WatchLeadChanges).
    LeadChanges,
}

/// An event as the streams share it: the change, and its encoding for each kind of stream,
/// made by the first stream that sends it and reused by every other. The bytes are opaque
/// here; the transport decides what they hold.
#[derive(Debug)]
pub struct StreamEvent {
    pub event: LeadChangeEvent,
    encoded: [OnceLock<Option<Bytes>>; 2],
}

impl StreamEvent {
    pub fn new(event: LeadChangeEvent) -> Self {
        Self {
            event,
            encoded: Default::default(),
        }
    }

    /// The event encoded for `kind`: `encode` runs for the first stream that asks, and later
    /// streams of that kind get the same bytes. None when `encode` has nothing to send.
    pub fn encoded(
        &self,
        kind: StreamKind,
        encode: impl FnOnce(&LeadChangeEvent) -> Option<Bytes>,
    ) -> Option<Bytes> {
        let slot = match kind {
            StreamKind::StageChanges => &self.encoded[0],
            StreamKind::LeadChanges => &self.encoded[1],
        };
        slot.get_or_init(|| encode(&self.event)).clone()
    }
}

/// What a stream carries. The error is boxed so that the channel's preallocated slots stay
/// small: an idle stream's memory is mostly its channel and its task.
pub type StreamItem = Result<Arc<StreamEvent>, Box<AppError>>;
pub type EventStream = mpsc::Receiver<StreamItem>;

struct TenantFeed {
    sender: broadcast::Sender<Arc<StreamEvent>>,
    wake: Notify,
    /// The last sequence the tailer has read and fanned out: for the outbox-lag metric, and for
    /// subscribers to notice events that were fanned out before they could receive them.
    delivered: AtomicI64,
}

/// Receives "tenant T committed" signals; the PostgreSQL relay implements it to tell other
/// replicas.
pub trait CommitListener: Send + Sync {
    fn committed(&self, tenant: &TenantId);
}

pub struct EventHub {
    store: Store,
    feeds: Mutex<HashMap<TenantId, Arc<TenantFeed>>>,
    shutdown: watch::Receiver<bool>,
    /// Stored as milliseconds so that it can be changed after the hub is shared.
    poll_interval_ms: AtomicU64,
    relay: Mutex<Option<Arc<dyn CommitListener>>>,
    /// Open streams per tenant, and the most each tenant may hold.
    open_streams: Arc<Mutex<HashMap<TenantId, usize>>>,
    max_streams_per_tenant: AtomicUsize,
    keys: Arc<KeyChecks>,
    /// The tailers and subscribers, so that shutdown can wait for them.
    tasks: TaskTracker,
}

impl EventHub {
    /// A hub whose tasks stop when `shutdown` turns true; `tasks` tracks them.
    pub fn new(
        store: Store,
        keys: KeyService,
        shutdown: watch::Receiver<bool>,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        let keys = Arc::new(KeyChecks {
            keys,
            recent: Mutex::default(),
        });
        Arc::new(Self {
            store,
            feeds: Mutex::new(HashMap::new()),
            shutdown,
            poll_interval_ms: AtomicU64::new(
                crate::defaults::EVENT_POLL_INTERVAL.as_millis() as u64
            ),
            relay: Mutex::new(None),
            open_streams: Arc::default(),
            max_streams_per_tenant: AtomicUsize::new(crate::defaults::MAX_STREAMS_PER_TENANT),
            keys,
            tasks,
        })
    }

    /// The most WatchStageChanges streams one tenant may hold open at once; further requests
    /// get RESOURCE_EXHAUSTED until one ends.
    pub fn set_max_streams_per_tenant(&self, max: usize) {
        self.max_streams_per_tenant.store(max, Ordering::Relaxed);
    }

    /// The number of streams `tenant` holds open.
    pub fn open_streams(&self, tenant: &TenantId) -> usize {
        let open = self.open_streams.lock().unwrap_or_else(|p| p.into_inner());
        open.get(tenant).copied().unwrap_or(0)
    }

    /// Open streams per tenant, for the metrics endpoint.
    pub fn open_streams_by_tenant(&self) -> Vec<(TenantId, usize)> {
        let open = self.open_streams.lock().unwrap_or_else(|p| p.into_inner());
        open.iter().map(|(t, n)| (t.clone(), *n)).collect()
    }

    /// For each tenant with live streams, the last sequence its tailer has fanned out (tailers
    /// still starting up are left out).
    pub fn tailer_positions(&self) -> Vec<(TenantId, i64)> {
        self.feeds()
            .iter()
            .map(|(t, feed)| (t.clone(), feed.delivered.load(Ordering::Relaxed)))
            .filter(|(_, delivered)| *delivered >= 0)
            .collect()
    }

    /// Takes one of the tenant's stream slots, released when the returned permit drops.
    fn stream_permit(&self, tenant: &TenantId) -> Result<StreamPermit, AppError> {
        let max = self.max_streams_per_tenant.load(Ordering::Relaxed);
        let mut open = self.open_streams.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(tenant.clone()).or_insert(0);
        if *count >= max {
            return Err(AppError::ResourceExhausted(format!(
                "tenant {tenant} already has {max} open WatchStageChanges streams, the most \
                 allowed; close one or retry later"
            )));
        }
        *count += 1;
        Ok(StreamPermit {
            open: self.open_streams.clone(),
            tenant: tenant.clone(),
        })
    }

    /// How often tailers re-read the outbox, and idle streams compare their position with the
    /// tailer's, when nothing woke them: the bound on delivery delay when a wake-up is lost.
    pub fn set_poll_interval(&self, interval: Duration) {
        let millis = interval.as_millis().clamp(1, u64::MAX as u128) as u64;
        self.poll_interval_ms.store(millis, Ordering::Relaxed);
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.load(Ordering::Relaxed))
    }

    pub fn set_relay(&self, relay: Arc<dyn CommitListener>) {
        *self.relay.lock().unwrap_or_else(|p| p.into_inner()) = Some(relay);
    }

    /// A local transaction of `tenant` committed an outbox row.
    pub fn committed(&self, tenant: &TenantId) {
        self.wake(tenant);
        if let Some(relay) = self
            .relay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            relay.committed(tenant);
        }
    }

    /// Another replica committed for `tenant`, or a poll is due.
    pub fn wake(&self, tenant: &TenantId) {
        if let Some(feed) = self.feeds().get(tenant) {
            feed.wake.notify_one();
        }
    }

    pub fn wake_all(&self) {
        for feed in self.feeds().values() {
            feed.wake.notify_one();
        }
    }

    /// Starts a stream: events above `after` (or, when None, events committed from now on) that
    /// match `filter`. A stream opened with an API key `key` re-reads the key from the database
    /// every poll interval, and ends with UNAUTHENTICATED once it is revoked: revocation is a
    /// write by another process, which every replica sees only in the database.
    pub async fn subscribe(
        self: &Arc<Self>,
        ctx: &RequestContext,
        key: Option<KeyName>,
        after: Option<i64>,
        filter: EventFilter,
    ) -> Result<EventStream, AppError> {
        let tenant = ctx.tenant.clone();
        let permit = self.stream_permit(&tenant)?;
        // Subscribe before reading the cursor's position, so that nothing committed in between
        // is missed: anything already read from the database is skipped by sequence.
        let (live, feed, new_feed) = self.live_events(&tenant);
        let reader = self.store.reader();
        let last = outbox::last_sequence(reader, &tenant).await;
        if new_feed {
            // The tailer fans out what comes after this subscriber's view of the outbox, so
            // that nothing committed in between has to wait for an idle check to be found.
            let start = last.as_ref().ok().copied();
            self.tasks
                .spawn(self.clone().tail(tenant.clone(), feed.clone(), start));
        }
        let last = last?;
        let cursor = match after {
            None => last,
            Some(after) => {
                check_retained(reader, &tenant, after, last).await?;
                after
            }
        };
        let (out, stream) = mpsc::channel(STREAM_BUFFER);
        let subscriber = Subscriber {
            store: self.store.clone(),
            tenant,
            filter,
            cursor,
            out,
            shutdown: self.shutdown.clone(),
            feed,
            poll_interval: self.poll_interval(),
            key: key.map(|key| (key, self.keys.clone())),
            _permit: permit,
        };
        self.tasks.spawn(subscriber.run(live));
        Ok(stream)
    }

    fn feeds(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Arc<TenantFeed>>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of the tenant's live events, and whether its feed is new (the caller then
    /// starts the feed's tailer). Created under the map lock so that a tailer that finds no
    /// receivers and retires cannot race with a new subscriber.
    fn live_events(
        &self,
        tenant: &TenantId,
    ) -> (broadcast::Receiver<Arc<StreamEvent>>, Arc<TenantFeed>, bool) {
        let mut feeds = self.feeds();
        if let Some(feed) = feeds.get(tenant) {
            return (feed.sender.subscribe(), feed.clone(), false);
        }
        let feed = Arc::new(TenantFeed {
            sender: broadcast::channel(FANOUT_CAPACITY).0,
            wake: Notify::new(),
            // Unknown until the tailer has read where the outbox ends.
            delivered: AtomicI64::new(-1),
        });
        let receiver = feed.sender.subscribe();
        feeds.insert(tenant.clone(), feed.clone());
        (receiver, feed, true)
    }

    /// The tenant's last committed sequence, retried until it can be read; None on shutdown.
    async fn end_of_outbox(&self, tenant: &TenantId) -> Option<i64> {
        let mut shutdown = self.shutdown.clone();
        loop {
            match outbox::last_sequence(self.store.reader(), tenant).await {
                Ok(last) => return Some(last),
                Err(error) => {
                    tracing::warn!(%tenant, %error, "could not start tailing the outbox; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(self.poll_interval()) => {}
                        _ = shutdown.changed() => return None,
                    }
                }
            }
        }
    }

    /// Reads each committed outbox row once and fans it out, until nobody listens. Starts after
    /// `start`, or after the end of the outbox when None.
    async fn tail(self: Arc<Self>, tenant: TenantId, feed: Arc<TenantFeed>, start: Option<i64>) {
        let mut shutdown = self.shutdown.clone();
        // Subscribers fill any gap between their cursor and this from the database.
        let mut last = match start {
            Some(start) => start,
            None => match self.end_of_outbox(&tenant).await {
                Some(last) => last,
                None => return,
            },
        };
        feed.delivered.store(last, Ordering::Relaxed);
        loop {
            tokio::select! {
                _ = feed.wake.notified() => {}
                _ = tokio::time::sleep(self.poll_interval()) => {}
                _ = shutdown.changed() => return,
            }
            {
                let mut feeds = self.feeds();
                if feed.sender.receiver_count() == 0 {
                    feeds.remove(&tenant);
                    return;
                }
            }
            loop {
                match outbox::read_after(self.store.reader(), &tenant, last, READ_BATCH).await {
                    Ok(events) => {
                        let full = events.len() as u64 == READ_BATCH;
                        for event in events {
                            last = event.sequence;
                            // No receivers is fine: the next subscriber reads the database.
                            let _ = feed.sender.send(Arc::new(StreamEvent::new(event)));
                        }
                        feed.delivered.store(last, Ordering::Relaxed);
                        if !full {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%tenant, %error, "could not read the outbox; retrying");
                        break;
                    }
                }
            }
        }
    }
}

async fn check_retained(
    db: &impl crate::store::Connection,
    tenant: &TenantId,
    after: i64,
    last: i64,
) -> Result<(), AppError> {
    if after < 0 {
        return Err(AppError::invalid("after_sequence", "must not be negative"));
    }
    if after > last {
        return Err(AppError::OutOfRange {
            message: format!("after_sequence {after} is beyond the latest sequence {last}"),
            oldest_available: None,
        });
    }
    let pruned_through = outbox::pruned_through(db, tenant).await?;
    if after < pruned_through {
        return Err(expired(after, pruned_through + 1));
    }
    Ok(())
}

fn expired(after: i64, oldest: i64) -> AppError {
    AppError::OutOfRange {
        message: format!(
            "events after sequence {after} are no longer retained; the oldest available is {oldest}"
        ),
        oldest_available: Some(oldest),
    }
}

/// One open stream of a tenant; dropping it (when the subscriber task ends) frees the slot.
struct StreamPermit {
    open: Arc<Mutex<HashMap<TenantId, usize>>>,
    tenant: TenantId,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

/// Whether API keys are still valid, each read at most once per poll interval however many of
/// its streams ask.
struct KeyChecks {
    keys: KeyService,
    recent: Mutex<HashMap<String, (tokio::time::Instant, bool)>>,
}

impl KeyChecks {
    /// Whether `key` is still valid, as read within the last `max_age`. A failed read counts as
    /// valid: streams stay open through a database outage, and the next check reads again.
    async fn is_active(&self, key: &KeyName, max_age: Duration) -> bool {
        let name = key.to_string();
        let now = tokio::time::Instant::now();
        let cached = {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.get(&name).copied()
        };
        if let Some((read, active)) = cached
            && now.duration_since(read) < max_age
        {
            return active;
        }
        match self.keys.is_active(key).await {
            Ok(active) => {
                let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                // Keys whose streams have all ended would otherwise stay here for good.
                recent.retain(|_, (read, _)| now.duration_since(*read) < max_age);
                recent.insert(name, (now, active));
                active
            }
            Err(error) => {
                tracing::warn!(%key, %error, "cannot re-check a stream's API key; retrying");
                true
            }
        }
    }
}

struct Subscriber {
    store: Store,
    tenant: TenantId,
    filter: EventFilter,
    /// The last sequence passed on or skipped by the filter.
    cursor: i64,
    out: mpsc::Sender<StreamItem>,
    shutdown: watch::Receiver<bool>,
    feed: Arc<TenantFeed>,
    poll_interval: Duration,
    /// The API key the stream was opened with, re-checked every poll interval.
    key: Option<(KeyName, Arc<KeyChecks>)>,
    _permit: StreamPermit,
}

/// Why a subscriber stops.
enum Stop {
    ClientGone,
    Failed(AppError),
}

impl Subscriber {
    async fn run(mut self, mut live: broadcast::Receiver<Arc<StreamEvent>>) {
        let stop = self.serve(&mut live).await;
        if let Stop::Failed(error) = stop {
            let _ = self.out.send(Err(Box::new(error))).await;
        }
    }

    /// Catch-ups are boxed: their database reads would otherwise make every idle subscriber's
    /// task as large as the largest read's state.
    async fn serve(&mut self, live: &mut broadcast::Receiver<Arc<StreamEvent>>) -> Stop {
        if let Err(stop) = Box::pin(self.catch_up()).await {
            return stop;
        }
        let mut shutdown = self.shutdown.clone();
        // Its own timer, unlike the idle check below, so that a busy stream is checked too.
        let mut key_check = tokio::time::interval_at(
            tokio::time::Instant::now() + self.poll_interval,
            self.poll_interval,
        );
        key_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let received = tokio::select! {
                received = live.recv() => received,
                _ = shutdown.changed() => return Stop::Failed(self.shutting_down()),
                _ = self.out.closed() => return Stop::ClientGone,
                _ = key_check.tick(), if self.key.is_some() => {
                    if let Err(stop) = self.check_key().await {
                        return stop;
                    }
                    continue;
                }
                // A tailer that another subscriber started while this one caught up may begin
                // past events this catch-up read did not see yet; they are never fanned out, and
                // without a later event nothing would reveal the gap. When idle, compare with
                // the tailer.
                _ = tokio::time::sleep(self.poll_interval) => {
                    if let Err(stop) = Box::pin(self.catch_up_with_tailer()).await {
                        return stop;
                    }
                    continue;
                }
            };
            let result = match received {
                Ok(shared) if shared.event.sequence <= self.cursor => Ok(()),
                Ok(shared) if shared.event.sequence == self.cursor + 1 => {
                    self.deliver(shared).await
                }
                // A gap (we subscribed while it was in flight) or lag: the database has it all.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    Box::pin(self.catch_up()).await
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Stop::Failed(self.shutting_down());
                }
            };
            if let Err(stop) = result {
                return stop;
            }
        }
    }

    /// Delivers everything committed above the cursor, from the database.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let events = self.read_after_cursor().await?;
            let full = events.len() as u64 == READ_BATCH;
            for event in events {
                if event.sequence != self.cursor + 1 {
                    self.check_gap().await?;
                }
                self.deliver(Arc::new(StreamEvent::new(event))).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Catches up to where the tailer has read. Every sequence up to that point is committed,
    /// so one the outbox does not hold was used by imported history or removed by retention:
    /// the first is skipped, the second ends the stream with OUT_OF_RANGE. Without this an idle
    /// stream would wait, unaware, until a later event revealed the gap.
    async fn catch_up_with_tailer(&mut self) -> Result<(), Stop> {
        let delivered = self.feed.delivered.load(Ordering::Relaxed);
        if delivered <= self.cursor {
            return Ok(());
        }
        self.catch_up().await?;
        if self.cursor < delivered {
            self.check_gap().await?;
            self.cursor = delivered;
        }
        Ok(())
    }

    /// Sequences used by imported history have no events, so gaps are normal; but if retention
    /// removed events this subscriber has not seen, it must be told rather than skip them.
    async fn check_gap(&self) -> Result<(), Stop> {
        let pruned_through = outbox::pruned_through(self.store.reader(), &self.tenant)
            .await
            .map_err(|e| Stop::Failed(e.into()))?;
        if pruned_through > self.cursor {
            return Err(Stop::Failed(expired(self.cursor, pruned_through + 1)));
        }
        Ok(())
    }

    /// Reads the next batch above the cursor. While the database is unavailable the stream stays
    /// open and keeps its cursor: the read is retried with backoff until it succeeds, the client
    /// goes away or the server shuts down, so no event is lost or repeated across an outage.
    async fn read_after_cursor(&mut self) -> Result<Vec<LeadChangeEvent>, Stop> {
        let mut delay = RETRY_FIRST;
        loop {
            match outbox::read_after(self.store.reader(), &self.tenant, self.cursor, READ_BATCH)
                .await
            {
                Ok(events) => return Ok(events),
                Err(
                    crate::store::StoreError::Unavailable(error)
                    | crate::store::StoreError::StorageFailure(error),
                ) => {
                    tracing::warn!(tenant = %self.tenant, cursor = self.cursor, %error,
                        "stream cannot read the outbox; retrying");
                }
                Err(error) => return Err(Stop::Failed(error.into())),
            }
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return Err(Stop::Failed(self.shutting_down())),
                _ = self.out.closed() => return Err(Stop::ClientGone),
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    async fn deliver(&mut self, shared: Arc<StreamEvent>) -> Result<(), Stop> {
        let sequence = shared.event.sequence;
        if self.filter.matches(&shared.event) {
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                sent = self.out.send(Ok(shared)) => sent.map_err(|_| Stop::ClientGone)?,
                _ = shutdown.changed() => return Err(Stop::Failed(self.shutting_down())),
            }
        }
        self.cursor = sequence;
        Ok(())
    }

    async fn check_key(&self) -> Result<(), Stop> {
        let Some((key, checks)) = &self.key else {
            return Ok(());
        };
        if checks.is_active(key, self.poll_interval).await {
            return Ok(());
        }
        Err(Stop::Failed(AppError::Unauthenticated(format!(
            "the API key {key} was revoked; the stream ended after sequence {}",
            self.cursor
        ))))
    }

    fn shutting_down(&self) -> AppError {
        AppError::ShuttingDown(format!(
            "the server is shutting down; reconnect with after_sequence = {}",
            self.cursor
        ))
    }
}
