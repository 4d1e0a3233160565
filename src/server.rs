//! Builds the application and serves it over gRPC.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::app::api_keys::KeyService;
use crate::app::forecast::ForecastService;
use crate::app::import::ImportService;
use crate::app::leads::LeadService;
use crate::app::pipelines::PipelineService;
use crate::app::{Clock, Services};
use crate::defaults;
use crate::grpc::auth::{AuthLayer, AuthMode, AuthRefused};
use crate::grpc::connections::{ConnectionLimits, FirstRequestLayer, LimitedIncoming};
use crate::grpc::forecast_service::ForecastApi;
use crate::grpc::guard::{GuardConfig, GuardLayer, Readiness};
use crate::grpc::lead_service::LeadApi;
use crate::grpc::observe::ObserveLayer;
use crate::grpc::pb;
use crate::grpc::pipeline_service::PipelineApi;
use crate::grpc::watch::LeadServiceRoutes;
use crate::metrics::Metrics;
use crate::store::{Store, StoreConfig, StoreError, idempotency, outbox, revisions, to_micros};

/// How long idempotency keys are remembered.
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone)]
pub struct Settings {
    pub store: StoreConfig,
    /// How long stage-change events stay replayable.
    pub outbox_retention: Duration,
    /// How long lead revisions are kept; None keeps them forever.
    pub revision_retention: Option<Duration>,
    /// How often expired events and idempotency keys are removed.
    pub maintenance_interval: Duration,
    /// TLS for the gRPC port; plaintext when None.
    pub tls: Option<TlsSettings>,
    pub limits: Limits,
    /// How often stream tailers re-read the outbox when no commit woke them: the longest a
    /// stage change waits when a wake-up is lost (for example while the PostgreSQL LISTEN
    /// connection reconnects).
    pub event_poll_interval: Duration,
    /// How often the database is pinged to keep the health status current.
    pub health_check_interval: Duration,
    /// When calls need an API key.
    pub auth: AuthMode,
    /// Collect Prometheus metrics; `App::serve_metrics` serves them.
    pub metrics: bool,
    /// Web origins (`https://app.example.com`, or `*` for any) whose pages may call the API
    /// with grpc-web. Empty: no CORS headers, so only pages of the server's own origin may.
    pub cors_allowed_origins: Vec<String>,
    /// Where the use cases and the maintenance task read the time: the system clock, or in
    /// tests one they can move forward.
    pub clock: Clock,
}

/// The server's certificate chain and key, and optionally the CA that client certificates must
/// chain to (mTLS). All PEM.
#[derive(Clone)]
pub struct TlsSettings {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("mtls", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    pub fn from_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> std::io::Result<Self> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
            })
        };
        Ok(Self {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: client_ca.map(read).transpose()?,
        })
    }

    fn server_config(&self) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            // A client that opens a connection and stalls the handshake is dropped.
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &self.client_ca_pem {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        config
    }
}

/// Limits that protect the server from abusive or runaway clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest message decoded from a client or encoded for one, on every service.
    pub max_message_size: usize,
    /// The most WatchStageChanges streams one tenant may hold open.
    pub max_streams_per_tenant: usize,
    /// The deadline of calls whose client sets none (or a longer one); None for no default.
    pub request_timeout: Option<Duration>,
    /// Sustained requests per second per tenant; 0 turns the rate limit off.
    pub rate_limit_per_second: u32,
    /// Requests a tenant may send in a burst above the sustained rate.
    pub rate_limit_burst: u32,
    /// The most connections open at once; further ones are closed as they arrive. None for no
    /// limit.
    pub max_connections: Option<usize>,
    /// How long a new connection has to complete its first request (TLS handshake and HTTP
    /// preamble included) before it is closed; None for no deadline.
    pub first_request_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: defaults::MAX_MESSAGE_SIZE,
            max_streams_per_tenant: defaults::MAX_STREAMS_PER_TENANT,
            request_timeout: Some(defaults::REQUEST_TIMEOUT),
            rate_limit_per_second: defaults::RATE_LIMIT_PER_SECOND,
            rate_limit_burst: defaults::RATE_LIMIT_BURST,
            max_connections: Some(defaults::MAX_CONNECTIONS),
            first_request_timeout: Some(defaults::FIRST_REQUEST_TIMEOUT),
        }
    }
}

impl Settings {
    pub fn new(store: StoreConfig) -> Self {
        Self {
            store,
            outbox_retention: defaults::OUTBOX_RETENTION,
            revision_retention: defaults::REVISION_RETENTION,
            maintenance_interval: defaults::MAINTENANCE_INTERVAL,
            tls: None,
            limits: Limits::default(),
            event_poll_interval: defaults::EVENT_POLL_INTERVAL,
            health_check_interval: defaults::HEALTH_CHECK_INTERVAL,
            auth: AuthMode::Auto,
            metrics: false,
            cors_allowed_origins: Vec::new(),
            clock: Clock::system(),
        }
    }
}

pub struct App {
    pub store: Store,
    pub leads: LeadService,
    pub pipelines: PipelineService,
    pub import: ImportService,
    pub forecasts: ForecastService,
    pub keys: KeyService,
    settings: Settings,
    shutdown: watch::Sender<bool>,
    /// Set once the database is connected and migrated.
    readiness: Readiness,
    metrics: Option<Arc<Metrics>>,
    /// Every background task, so that `serve` returns only once they have all stopped.
    tasks: TaskTracker,
}

impl App {
    /// Connects, migrates and wires the services. Fails if the database cannot be reached.
    pub async fn build(settings: &Settings) -> Result<Self, StoreError> {
        let store = Store::connect(&settings.store).await?;
        store.migrate().await?;
        Ok(Self::wire(store, settings, Readiness::ready()))
    }

    /// Wires the services without waiting for the database: it tries to connect and migrate
    /// once (waiting at most the store's acquire timeout for the database to answer), and only
    /// a malformed database URL fails. If the database is not ready, `serve` keeps connecting
    /// and migrating, with backoff, while health reports NOT_SERVING and calls get UNAVAILABLE;
    /// once the database is ready it serves normally.
    pub async fn start(settings: &Settings) -> Result<Self, StoreError> {
        let store = Store::connect_lazy(&settings.store).await?;
        // One attempt now, so that a server whose database is up is ready when it binds.
        let readiness = Readiness::default();
        match tokio::time::timeout(settings.store.acquire_timeout, store.ping()).await {
            Ok(Ok(())) => match store.migrate().await {
                Ok(()) => readiness.set_ready(),
                Err(error) => {
                    tracing::warn!(%error, "migrations failed; retrying in the background")
                }
            },
            Ok(Err(error)) => {
                tracing::warn!(%error, "database not reachable; serving NOT_SERVING until it is")
            }
            Err(_) => tracing::warn!("database did not answer; serving NOT_SERVING until it does"),
        }
        Ok(Self::wire(store, settings, readiness))
    }

    fn wire(store: Store, settings: &Settings, readiness: Readiness) -> Self {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tasks = TaskTracker::new();
        let services = Services::wire(store, settings.clock.clone(), shutdown_rx, tasks.clone());
        let events = services.leads.events();
        events.set_max_streams_per_tenant(settings.limits.max_streams_per_tenant);
        events.set_poll_interval(settings.event_poll_interval);
        Self {
            leads: services.leads,
            import: services.import,
            forecasts: services.forecasts,
            pipelines: services.pipelines,
            keys: services.keys,
            store: services.store,
            settings: settings.clone(),
            shutdown,
            readiness,
            metrics: settings.metrics.then(Metrics::new),
            tasks,
        }
    }

    /// Serves the Prometheus metrics as `GET /metrics` on `listener`, until the gRPC server
    /// stops. Does nothing unless `Settings::metrics` is on.
    pub fn serve_metrics(&self, listener: TcpListener) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let sources = crate::metrics::Sources {
            metrics: metrics.clone(),
            store: self.store.clone(),
            events: self.leads.events().clone(),
            db_timeout: self.settings.store.acquire_timeout,
        };
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "serving Prometheus metrics at /metrics");
        }
        let shutdown = self.shutdown.subscribe();
        self.tasks.spawn(async move {
            if let Err(error) = crate::metrics::serve(listener, sources, shutdown).await {
                tracing::error!(%error, "the metrics endpoint failed");
            }
        });
    }

    /// Serves until `shutdown` completes. Open streams then end with UNAVAILABLE, and in-flight
    /// calls are drained before this returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let initial = if self.readiness.is_ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        set_health(&health, initial).await;
        // For liveness probes: SERVING whenever the process answers, even while the database is
        // down, so that an outage takes replicas out of rotation without restarting them.
        health
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
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
                &self.tasks,
            );
        }
        self.tasks.spawn(supervise(
            self.store.clone(),
            self.settings.clone(),
            self.readiness.clone(),
            health,
            self.shutdown.subscribe(),
            self.tasks.clone(),
        ));

        let stop_streams = self.shutdown.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = stop_streams.send(true);
        };
        tracing::info!(
            address = %listener.local_addr()?,
            tls = self.settings.tls.is_some(),
            mtls = self.settings.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
            "leadpipe serving"
        );
        let limits = &self.settings.limits;
        let max = limits.max_message_size;
        let guard = GuardLayer::new(
            &GuardConfig {
                rate_limit_per_second: limits.rate_limit_per_second,
                rate_limit_burst: limits.rate_limit_burst,
                request_timeout: limits.request_timeout,
            },
            self.readiness.clone(),
        );
        let auth = AuthLayer::new(
            self.keys.clone(),
            self.settings.auth,
            listener.local_addr()?,
            self.readiness.clone(),
        );
        auth.resolve().await?;
        if let Some(metrics) = &self.metrics {
            self.tasks
                .spawn(metrics.clone().run_upkeep(self.shutdown.subscribe()));
        }
        self.tasks.spawn(guard.clone().run_upkeep(
            self.settings.maintenance_interval,
            self.shutdown.subscribe(),
        ));
        let observe = ObserveLayer::new(self.metrics.clone());
        let cors = cors_layer(&self.settings.cors_allowed_origins)?;
        // HTTP/1.1 as well as HTTP/2, for grpc-web: browsers use HTTP/2 only over TLS, and their
        // fetch API cannot read HTTP trailers, which plain gRPC needs.
        let mut server = Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)));
        if let Some(tls) = &self.settings.tls {
            server = server.tls_config(tls.server_config())?;
        }
        // Layers run outermost first. CORS answers browsers' preflight requests before anything
        // else sees them. grpc-web calls are translated into plain gRPC next, so that every layer
        // after it, and every service, handles both protocols alike. Observation sees every
        // call, refused ones included. The guard reads the tenant from the RequestContext that
        // authentication puts into the request's extensions, so it comes after that layer.
        // Marking a connection as having completed a request comes first, so that every request
        // counts, preflights included.
        let result = server
            .layer(FirstRequestLayer)
            .layer(tower::util::option_layer(cors))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(observe)
            .layer(auth)
            .layer(guard)
            .add_service(
                health_service
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                reflection_v1
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                reflection_v1alpha
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(LeadServiceRoutes::new(
                LeadApi {
                    leads: self.leads,
                    import: self.import,
                    forecasts: self.forecasts.clone(),
                },
                max,
            ))
            .add_service(
                pb::pipeline_service_server::PipelineServiceServer::new(PipelineApi {
                    pipelines: self.pipelines,
                })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            )
            .add_service(
                pb::forecast_service_server::ForecastServiceServer::new(ForecastApi {
                    forecasts: self.forecasts,
                })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            )
            // Without TCP_NODELAY, responses larger than one segment wait for the client's
            // delayed ACK (about 40 ms).
            .serve_with_incoming_shutdown(
                LimitedIncoming::new(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    ConnectionLimits {
                        max_connections: limits.max_connections,
                        first_request_timeout: limits.first_request_timeout,
                    },
                ),
                shutdown,
            )
            .await;
        // Streams, tailers and maintenance all watch this; the store closes only once every
        // one of them has stopped, so none is cut off mid-transaction.
        let _ = self.shutdown.send(true);
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_TASKS_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.tasks.len(),
                "background tasks still running at shutdown; closing the store anyway"
            );
        }
        self.store.close().await;
        tracing::info!("leadpipe stopped");
        Ok(result?)
    }
}

impl App {
    /// Refuses, before binding, to serve on `addr` without authentication when that is not
    /// allowed (auto mode, no unrevoked API key, not a loopback address).
    pub async fn check_auth(&self, addr: std::net::SocketAddr) -> Result<(), AuthRefused> {
        crate::grpc::auth::check(&self.keys, self.settings.auth, addr).await
    }
}

/// CORS for grpc-web calls from the pages of `origins`; None when there are none.
fn cors_layer(
    origins: &[String],
) -> Result<Option<tower_http::cors::CorsLayer>, http::header::InvalidHeaderValue> {
    use http::header::{HeaderName, HeaderValue};
    use tower_http::cors::{AllowOrigin, CorsLayer};

    if origins.is_empty() {
        return Ok(None);
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .map(|origin| HeaderValue::from_str(origin))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    // The request headers that grpc-web clients send, plus the API key; the response headers
    // they must read to learn a call's outcome from a trailers-only response.
    let allow_headers = [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "authorization",
    ]
    .map(HeaderName::from_static);
    let expose_headers =
        ["grpc-status", "grpc-message", "grpc-status-details-bin"].map(HeaderName::from_static);
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([http::Method::POST])
            .allow_headers(allow_headers)
            .expose_headers(expose_headers)
            .max_age(Duration::from_secs(24 * 60 * 60)),
    ))
}

/// How long shutdown waits for background tasks (a maintenance pass, a stream's last read)
/// before closing the store regardless.
const SHUTDOWN_TASKS_GRACE: Duration = Duration::from_secs(10);

/// The health service name that liveness probes ask about (see `serve`).
pub const LIVENESS_SERVICE: &str = "liveness";

/// The first and the longest wait between attempts to reach the database at start-up.
const CONNECT_BACKOFF_FIRST: Duration = Duration::from_millis(200);
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(10);

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <LeadServiceRoutes as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <pb::pipeline_service_server::PipelineServiceServer<PipelineApi> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <pb::forecast_service_server::ForecastServiceServer<ForecastApi> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}

/// Brings the database up if it is not yet (connect and migrate, with exponential backoff), then
/// runs maintenance and keeps the health status in step with the database: a failed ping flips
/// it to NOT_SERVING, the next good one back to SERVING.
async fn supervise(
    store: Store,
    settings: Settings,
    readiness: Readiness,
    health: HealthReporter,
    mut shutdown: watch::Receiver<bool>,
    tasks: TaskTracker,
) {
    let mut delay = CONNECT_BACKOFF_FIRST;
    let mut attempts = 0u32;
    while !readiness.is_ready() {
        attempts += 1;
        let attempt = async {
            store.ping().await?;
            store.migrate().await
        };
        match attempt.await {
            Ok(()) => {
                readiness.set_ready();
                tracing::info!(attempts, "database connected and migrated; serving");
                break;
            }
            Err(error) => {
                tracing::warn!(%error, attempts, retry_in = ?delay, "database not reachable at start-up; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(CONNECT_BACKOFF_MAX);
    }
    set_health(&health, ServingStatus::Serving).await;
    tasks.spawn(maintain(store.clone(), settings.clone(), shutdown.clone()));

    let mut serving = true;
    let mut interval = tokio::time::interval(settings.health_check_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let timeout = settings.store.acquire_timeout.max(Duration::from_secs(1));
        let reachable = match tokio::time::timeout(timeout, store.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                if serving {
                    tracing::warn!(%error, "database lost; health is NOT_SERVING");
                }
                false
            }
            Err(_) => {
                if serving {
                    tracing::warn!("database ping timed out; health is NOT_SERVING");
                }
                false
            }
        };
        let reachable = reachable && writes_commit(&store, &settings, timeout).await;
        if reachable != serving {
            serving = reachable;
            if serving {
                tracing::info!("database reachable again; health is SERVING");
            }
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&health, status).await;
        }
    }
}

/// Whether writes commit. A database can answer reads while writes fail (a full disk, I/O
/// errors, a file-size limit), and small writes can commit while larger ones fail. So after a
/// write failed in storage, writes count as failing until none has failed for
/// `STORAGE_FAILURE_HOLD_TICKS` health checks and then a probing commit succeeds.
async fn writes_commit(store: &Store, settings: &Settings, timeout: Duration) -> bool {
    let health = store.write_health();
    let Some(since) = health.since_last_failure() else {
        return true;
    };
    if since < settings.health_check_interval * STORAGE_FAILURE_HOLD_TICKS {
        return false;
    }
    match tokio::time::timeout(timeout, store.probe_write()).await {
        Ok(Ok(())) => {
            health.clear();
            true
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "writes still fail");
            false
        }
        Err(_) => false,
    }
}

/// Health checks without a storage failure before a failed write path is probed again.
const STORAGE_FAILURE_HOLD_TICKS: u32 = 5;

/// Periodically removes expired events and idempotency keys.
async fn maintain(store: Store, settings: Settings, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(settings.maintenance_interval);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = to_micros(settings.clock.now());
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
        let revision_cutoff = settings
            .revision_retention
            .map(|retention| now - retention.as_micros() as i64);
        for tenant in tenants {
            match outbox::prune(store.writer(), &tenant, event_cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(%tenant, removed = n, "pruned expired stage-change events"),
                Err(error) => tracing::warn!(%tenant, %error, "could not prune the outbox"),
            }
            if let Some(cutoff) = revision_cutoff {
                match revisions::prune(store.writer(), &tenant, cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(%tenant, removed = n, "pruned expired lead revisions"),
                    Err(error) => tracing::warn!(%tenant, %error, "could not prune lead revisions"),
                }
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
