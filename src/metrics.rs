//! Prometheus metrics, served over HTTP on a port of their own (`--metrics-listen`).
//!
//! Calls are counted and timed as they finish, by the transport's observe layer through
//! `Metrics::record_rpc`. Everything else (pools, open streams, outbox lag, leads per stage) is
//! read when Prometheus scrapes, so the values are current and nothing runs between scrapes.
//! Each server has its own registry rather than the process-wide `metrics` recorder, so several
//! servers in one process (as in the tests) never mix their numbers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{Label, SharedString, with_local_recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Code;

use crate::app::events::EventHub;
use crate::store::{Store, StoreError, gauges, to_micros};

pub const RPC_REQUESTS: &str = "leadpipe_rpc_requests_total";
pub const RPC_DURATION: &str = "leadpipe_rpc_duration_seconds";
pub const STREAMS_OPEN: &str = "leadpipe_streams_open";
pub const OUTBOX_LAG_EVENTS: &str = "leadpipe_outbox_lag_events";
pub const OUTBOX_LAG_SECONDS: &str = "leadpipe_outbox_lag_seconds";
pub const DB_POOL_CONNECTIONS: &str = "leadpipe_db_pool_connections";
pub const DB_POOL_MAX: &str = "leadpipe_db_pool_max_connections";
pub const LEADS: &str = "leadpipe_leads";
pub const SCRAPE_ERRORS: &str = "leadpipe_metrics_scrape_errors_total";

/// From half a millisecond (a cached read) to half an hour (a long-lived stream).
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 1800.0,
];

/// How often histogram samples are folded into their buckets, so that memory stays flat when
/// nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The `service` and `method` labels of one RPC.
#[derive(Debug, Clone)]
pub struct RpcLabels {
    service: SharedString,
    method: SharedString,
}

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Every method the server serves, by path. Paths a client makes up are labelled `unknown`,
    /// so that no caller can grow the number of series.
    methods: HashMap<String, RpcLabels>,
    unknown: RpcLabels,
    /// The label sets each scrape-time gauge had at the last scrape: a series that is gone (a
    /// stage emptied, a tenant's last stream closed) is set to 0 rather than left at its old
    /// value.
    scraped: Mutex<HashMap<&'static str, HashSet<Vec<Label>>>>,
    /// One scrape reads the database at a time.
    refreshing: tokio::sync::Mutex<()>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(RPC_DURATION.to_owned()), DURATION_BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        with_local_recorder(&recorder, describe);
        let unknown = RpcLabels {
            service: "unknown".into(),
            method: "unknown".into(),
        };
        Arc::new(Self {
            recorder,
            handle,
            methods: served_methods(),
            unknown,
            scraped: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The labels for a request path such as `/leadpipe.v1.LeadService/GetLead`.
    pub fn rpc_labels(&self, path: &str) -> RpcLabels {
        self.methods.get(path).unwrap_or(&self.unknown).clone()
    }

    /// Counts and times a finished call.
    pub fn record_rpc(&self, labels: &RpcLabels, code: Code, elapsed: Duration) {
        with_local_recorder(&self.recorder, || {
            let labels = [
                ("service", labels.service.clone()),
                ("method", labels.method.clone()),
                ("code", SharedString::const_str(code_name(code))),
            ];
            metrics::counter!(RPC_REQUESTS, &labels).increment(1);
            metrics::histogram!(RPC_DURATION, &labels).record(elapsed.as_secs_f64());
        });
    }

    /// The registry in Prometheus' text format, as last refreshed.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds recorded histogram samples into their buckets, every few seconds until shutdown.
    pub async fn run_upkeep(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = interval.tick() => self.handle.run_upkeep(),
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Sets a gauge for each label set in `values`, and to 0 for label sets it had last time
    /// that are now missing.
    fn set_gauges(&self, name: &'static str, values: Vec<(Vec<Label>, f64)>) {
        let mut scraped = self.scraped.lock().unwrap_or_else(|p| p.into_inner());
        let previous = scraped.remove(name).unwrap_or_default();
        let mut current = HashSet::with_capacity(values.len());
        with_local_recorder(&self.recorder, || {
            for (labels, value) in values {
                metrics::gauge!(name, labels.clone()).set(value);
                current.insert(labels);
            }
            for labels in previous.difference(&current) {
                metrics::gauge!(name, labels.clone()).set(0.0);
            }
        });
        scraped.insert(name, current);
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        RPC_REQUESTS,
        "Finished gRPC calls by service, method and status code."
    );
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "Time from request to the end of the response, by service, method and status code; \
         for streams, the stream's lifetime."
    );
    describe_gauge!(STREAMS_OPEN, "Open WatchStageChanges streams by tenant.");
    describe_gauge!(
        OUTBOX_LAG_EVENTS,
        "Sequence numbers between the newest committed stage-change event and the last one \
         the tenant's stream fan-out has read, for tenants with open streams."
    );
    describe_gauge!(
        OUTBOX_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest stage-change event the tenant's stream fan-out has not read yet; \
         0 when it is caught up."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database connections by pool and state (idle or in_use)."
    );
    describe_gauge!(DB_POOL_MAX, "The most connections each pool may open.");
    describe_gauge!(LEADS, "Leads by tenant, pipeline and stage.");
    describe_counter!(
        SCRAPE_ERRORS,
        "Scrapes whose database-derived values could not be refreshed (the previous values \
         were served)."
    );
}

/// The path of every method of every service the server registers: leadpipe's own, health
/// and both reflection versions.
fn served_methods() -> HashMap<String, RpcLabels> {
    let sets = [
        crate::api::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for bytes in sets {
        let set = prost_types::FileDescriptorSet::decode(bytes)
            .expect("compiled-in descriptor sets decode");
        for file in &set.file {
            for service in &file.service {
                let service_name = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in &service.method {
                    methods.insert(
                        format!("/{service_name}/{}", method.name()),
                        RpcLabels {
                            service: service_name.clone().into(),
                            method: method.name().to_owned().into(),
                        },
                    );
                }
            }
        }
    }
    methods
}

/// The status code as gRPC's documentation names it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// What a scrape reads besides the registry.
#[derive(Clone)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub events: Arc<EventHub>,
    /// The longest a scrape waits for the database before serving the previous values.
    pub db_timeout: Duration,
}

impl Sources {
    /// Refreshes the scrape-time gauges and renders the registry.
    pub async fn scrape(&self) -> String {
        let _one_at_a_time = self.metrics.refreshing.lock().await;
        self.refresh_in_memory();
        match tokio::time::timeout(self.db_timeout, self.refresh_from_database()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.scrape_failed(&error.to_string()),
            Err(_) => self.scrape_failed("the database did not answer in time"),
        }
        self.metrics.render()
    }

    fn scrape_failed(&self, error: &str) {
        tracing::warn!(%error, "metrics: could not read the database; serving previous values");
        with_local_recorder(&self.metrics.recorder, || {
            metrics::counter!(SCRAPE_ERRORS).increment(1)
        });
    }

    fn refresh_in_memory(&self) {
        let metrics = &self.metrics;
        let mut pools = Vec::new();
        let mut max = Vec::new();
        for pool in self.store.pool_stats() {
            let name = SharedString::const_str(pool.name);
            let labels = |state: &'static str| {
                vec![Label::new("pool", name.clone()), Label::new("state", state)]
            };
            let idle = pool.idle.min(pool.open);
            pools.push((labels("idle"), f64::from(idle)));
            pools.push((labels("in_use"), f64::from(pool.open - idle)));
            max.push((vec![Label::new("pool", name.clone())], f64::from(pool.max)));
        }
        metrics.set_gauges(DB_POOL_CONNECTIONS, pools);
        metrics.set_gauges(DB_POOL_MAX, max);
        let streams = self
            .events
            .open_streams_by_tenant()
            .into_iter()
            .map(|(tenant, open)| (tenant_label(tenant.as_str()), open as f64))
            .collect();
        metrics.set_gauges(STREAMS_OPEN, streams);
    }

    async fn refresh_from_database(&self) -> Result<(), StoreError> {
        let reader = self.store.reader();
        let now = to_micros(chrono::Utc::now());
        let mut lag_events = Vec::new();
        let mut lag_seconds = Vec::new();
        for (tenant, delivered) in self.events.tailer_positions() {
            let newest = gauges::newest_event(reader, &tenant).await?;
            let behind = (newest - delivered).max(0);
            let age = if behind == 0 {
                0.0
            } else {
                gauges::first_event_time_after(reader, &tenant, delivered)
                    .await?
                    .map_or(0.0, |time| (now - time).max(0) as f64 / 1e6)
            };
            lag_events.push((tenant_label(tenant.as_str()), behind as f64));
            lag_seconds.push((tenant_label(tenant.as_str()), age));
        }
        let leads = gauges::leads_per_stage(reader)
            .await?
            .into_iter()
            .map(|(tenant, pipeline, stage, count)| {
                let labels = vec![
                    Label::new("tenant_id", tenant),
                    Label::new("pipeline_id", pipeline),
                    Label::new("stage", stage),
                ];
                (labels, count as f64)
            })
            .collect();
        self.metrics.set_gauges(OUTBOX_LAG_EVENTS, lag_events);
        self.metrics.set_gauges(OUTBOX_LAG_SECONDS, lag_seconds);
        self.metrics.set_gauges(LEADS, leads);
        Ok(())
    }
}

fn tenant_label(tenant: &str) -> Vec<Label> {
    vec![Label::new("tenant_id", tenant.to_owned())]
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    sources: Sources,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let router = axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state(sources);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

async fn scrape(State(sources): State<Sources>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        sources.scrape().await,
    )
}
