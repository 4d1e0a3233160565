//! Starts a real leadpipe server on 127.0.0.1:0 with a fresh database and hands out generated
//! gRPC clients. Every test runs on SQLite, and on PostgreSQL when
//! `LEADPIPE_TEST_DATABASE_URL` is set (each test in a database of its own).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use leadpipe::app::Clock;
use leadpipe::config::{DatabaseArgs, Synchronous};
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::lead_service_client::LeadServiceClient;
use leadpipe::grpc::pb::pipeline_service_client::PipelineServiceClient;
use leadpipe::server::{App, Settings};
use leadpipe::store::Store;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const PG_URL_VAR: &str = "LEADPIPE_TEST_DATABASE_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub backend: Backend,
    pub database_url: String,
    pub leads: LeadServiceClient<Channel>,
    pub pipelines: PipelineServiceClient<Channel>,
    /// Where `GET /metrics` is served, when the settings turn metrics on.
    pub metrics_addr: Option<SocketAddr>,
    /// The server's store, for setting up what the API cannot (API keys) and for checking
    /// what it wrote.
    pub store: Store,
    /// The server's clock: `clock.advance(…)` moves the server's "now" forward instead of
    /// sleeping.
    pub clock: Clock,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    database: Option<TestDatabase>,
}

impl TestApp {
    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    /// Stops the server gracefully and waits until it has finished. Returns what keeps the
    /// database, so that a test can restart a server on the same data.
    pub async fn stop(mut self) -> Option<TestDatabase> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.database.take()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// What keeps a test's database: the SQLite file's directory, or the PostgreSQL database, which
/// is dropped with this. A failed test keeps its PostgreSQL database, named on stderr, to be
/// looked into.
pub struct TestDatabase {
    _dir: Option<tempfile::TempDir>,
    postgres: Option<PostgresDatabase>,
}

struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(PostgresDatabase { admin_url, name }) = self.postgres.take() else {
            return;
        };
        if std::thread::panicking() {
            eprintln!("kept the failed test's PostgreSQL database {name}");
            return;
        }
        // A test drops this inside a runtime or outside any: the drop runs on a thread and a
        // runtime of its own. FORCE ends the connections of a server that is still stopping.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                use sea_orm::ConnectionTrait;
                let admin = sea_orm::Database::connect(&admin_url).await?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop a test's PostgreSQL database: {e}");
        }
    }
}

/// A fresh database URL for `backend`, or None (with a note on stderr) when PostgreSQL is not
/// configured.
pub async fn fresh_database(backend: Backend) -> Option<(String, Option<TestDatabase>)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}/leadpipe.db", dir.path().display());
            let database = TestDatabase {
                _dir: Some(dir),
                postgres: None,
            };
            Some((url, Some(database)))
        }
        Backend::Postgres => {
            let Ok(admin_url) = std::env::var(PG_URL_VAR) else {
                // CI runs every test on both backends: there a missing URL is a failure, not a
                // silent pass.
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{PG_URL_VAR} must be set when CI is: the PostgreSQL runs cannot be skipped"
                );
                eprintln!("skipping the PostgreSQL run: {PG_URL_VAR} is not set");
                return None;
            };
            let name = format!("leadpipe_test_{}", uuid::Uuid::now_v7().simple());
            let admin = sea_orm::Database::connect(&admin_url)
                .await
                .expect("connect to LEADPIPE_TEST_DATABASE_URL");
            use sea_orm::ConnectionTrait;
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            let _ = admin.close().await;
            let (base, _) = admin_url.rsplit_once('/').expect("URL has a database name");
            let url = format!("{base}/{name}");
            let database = TestDatabase {
                _dir: None,
                postgres: Some(PostgresDatabase { admin_url, name }),
            };
            Some((url, Some(database)))
        }
    }
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    let (database_url, dir) = fresh_database(backend).await?;
    Some(spawn_app_on(backend, database_url, dir).await)
}

pub fn settings_for(database_url: &str) -> Settings {
    let args = DatabaseArgs {
        database_url: database_url.to_owned(),
        db_pool_size: 8,
        sqlite_synchronous: Synchronous::Normal,
        // Longer than a server's default: a loaded test machine must not turn a queue for the
        // SQLite writer into UNAVAILABLE.
        db_timeout: Duration::from_secs(5),
    };
    let mut settings = Settings::new(args.store_config());
    settings.clock = Clock::adjustable();
    settings
}

pub async fn spawn_app_on(
    backend: Backend,
    database_url: String,
    database: Option<TestDatabase>,
) -> TestApp {
    let settings = settings_for(&database_url);
    spawn_app_with(backend, settings, database).await
}

/// With `TEST_LOG` set, the servers' logs (at `RUST_LOG`, default `info`) go to the test's
/// output, which the harness shows for failing tests (or always, with `--nocapture`).
pub fn init_test_log() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

pub async fn spawn_app_with(
    backend: Backend,
    settings: Settings,
    database: Option<TestDatabase>,
) -> TestApp {
    init_test_log();
    let database_url = settings.store.database_url.clone();
    let app = App::build(&settings).await.expect("build app");
    let store = app.store.clone();
    let clock = settings.clock.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let mut metrics_addr = None;
    if settings.metrics {
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        metrics_addr = Some(metrics.local_addr().expect("metrics addr"));
        app.serve_metrics(metrics);
    }
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.serve(listener, async {
            let _ = rx.await;
        })
        .await
        .expect("server");
    });
    let channel = connect(addr).await;
    TestApp {
        addr,
        backend,
        database_url,
        leads: LeadServiceClient::new(channel.clone()),
        pipelines: PipelineServiceClient::new(channel),
        metrics_addr,
        store,
        clock,
        shutdown: Some(tx),
        server: Some(server),
        database,
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5));
    for _ in 0..50 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {addr} did not accept connections");
}

/// Declares each listed `async fn(TestApp)` as a test on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let app = $crate::common::spawn_app($crate::common::Backend::Sqlite).await.expect("sqlite");
                    super::$test(app).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(app) = $crate::common::spawn_app($crate::common::Backend::Postgres).await {
                        super::$test(app).await;
                    }
                }
            )*
        }
    };
}

// ---- request helpers -------------------------------------------------------------------

pub fn money(currency: &str, units: i64) -> pb::Money {
    pb::Money {
        currency_code: currency.into(),
        units,
        nanos: 0,
    }
}

pub fn new_lead(title: &str) -> pb::Lead {
    pb::Lead {
        title: title.into(),
        ..Default::default()
    }
}

/// The default tenant's leads that match `filter` (all with ""), which must fit one page of
/// 1,000.
pub async fn all_leads(app: &TestApp, filter: &str) -> Vec<pb::Lead> {
    let page = app
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest {
            filter: filter.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list leads")
        .into_inner();
    assert!(page.next_page_token.is_empty());
    page.leads
}

pub async fn create(app: &TestApp, lead: pb::Lead) -> pb::Lead {
    app.leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(lead),
            request_id: String::new(),
        })
        .await
        .expect("create lead")
        .into_inner()
}

pub async fn move_to(app: &TestApp, id: &str, stage: &str) -> Result<pb::Lead, tonic::Status> {
    app.leads
        .clone()
        .move_lead(pb::MoveLeadRequest {
            id: id.into(),
            stage: stage.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// The lead that calls sent at once under one request id created, from their outcomes (each a
/// lead id): at least one of them creates it, and the others answer ABORTED (the first is still
/// in progress) or the same lead.
pub fn the_one_lead_created(
    outcomes: &[Result<Result<String, tonic::Status>, tokio::task::JoinError>],
) -> String {
    let ids: Vec<&String> = outcomes
        .iter()
        .filter_map(|r| match r.as_ref().expect("task") {
            Ok(id) => Some(id),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
                None
            }
        })
        .collect();
    assert!(!ids.is_empty(), "one of the calls creates the lead");
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one request id, one lead"
    );
    ids[0].clone()
}

/// The field paths of a BadRequest detail.
pub fn bad_request_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// (type, subject) of each PreconditionFailure violation.
pub fn precondition_violations(status: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_details_precondition_failure()
        .map(|p| {
            p.violations
                .into_iter()
                .map(|v| (v.r#type, v.subject))
                .collect()
        })
        .unwrap_or_default()
}

// ---- stream helpers ---------------------------------------------------------------------

/// The next event of a stage-change stream; panics if none arrives within 20 s, or the stream
/// fails or ends.
pub async fn next_event(
    stream: &mut tonic::Streaming<pb::StageChangeEvent>,
) -> pb::StageChangeEvent {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("an event arrives in time")
        .expect("stream healthy")
        .expect("stream open")
}

// ---- pipeline helpers -------------------------------------------------------------------

pub async fn get_pipeline(app: &TestApp, id: &str) -> Result<pb::Pipeline, tonic::Status> {
    app.pipelines
        .clone()
        .get_pipeline(pb::GetPipelineRequest { id: id.into() })
        .await
        .map(|r| r.into_inner())
}

pub async fn update_pipeline(
    app: &TestApp,
    pipeline: pb::Pipeline,
    paths: &[&str],
) -> Result<pb::Pipeline, tonic::Status> {
    app.pipelines
        .clone()
        .update_pipeline(pb::UpdatePipelineRequest {
            pipeline: Some(pipeline),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        })
        .await
        .map(|r| r.into_inner())
}

// ---- move and history helpers (tests/it/moves.rs, tests/it/pipelines.rs) ---------------------

/// `(type, subject)`, for comparing violation lists.
pub fn violation(kind: &str, subject: &str) -> (String, String) {
    (kind.to_owned(), subject.to_owned())
}

pub async fn get_lead(app: &TestApp, id: &str) -> pb::Lead {
    app.leads
        .clone()
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: id.into(),
        })
        .await
        .expect("get lead")
        .into_inner()
}

/// UpdateLead with an explicit mask; the update must succeed.
pub async fn update_lead(app: &TestApp, lead: pb::Lead, paths: &[&str]) -> pb::Lead {
    app.leads
        .clone()
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(lead),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("update lead {paths:?}: {e:?}"))
        .into_inner()
}

pub async fn check_move(app: &TestApp, id: &str, stage: &str) -> pb::CheckMoveResponse {
    app.leads
        .clone()
        .check_move(pb::CheckMoveRequest {
            id: id.into(),
            stage: stage.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("check move to {stage}: {e:?}"))
        .into_inner()
}

/// `(type, subject)` of each CheckMove violation.
pub fn check_violations(response: &pb::CheckMoveResponse) -> Vec<(String, String)> {
    response
        .violations
        .iter()
        .map(|v| (v.r#type.clone(), v.subject.clone()))
        .collect()
}

/// Every stage change of a lead, oldest first, in one large page.
pub async fn stage_changes(app: &TestApp, lead_id: &str) -> Vec<pb::StageChange> {
    let page = app
        .leads
        .clone()
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: lead_id.into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("list stage changes")
        .into_inner();
    assert!(page.next_page_token.is_empty(), "one page holds them all");
    page.stage_changes
}

/// `(from_stage, to_stage)` of each change.
pub fn stage_path(changes: &[pb::StageChange]) -> Vec<(String, String)> {
    changes
        .iter()
        .map(|c| (c.from_stage.clone(), c.to_stage.clone()))
        .collect()
}

// ---- tenants and API keys (tests/tenants.rs) -------------------------------------------

pub use leadpipe::app::api_keys::Role;
use leadpipe::grpc::auth::AuthMode;
use leadpipe::grpc::pb::forecast_service_client::ForecastServiceClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;

/// An API key made for a test: the secret and the identity `<tenant>_<id>`.
#[derive(Debug, Clone)]
pub struct TestKey {
    pub key: String,
    pub name: String,
}

impl TestKey {
    /// The actor recorded on the changes this key makes.
    pub fn actor(&self) -> String {
        format!("key:{}", self.name)
    }
}

fn key_service(app: &TestApp) -> leadpipe::app::api_keys::KeyService {
    leadpipe::app::api_keys::KeyService::new(app.store.clone(), app.clock.clone())
}

/// Creates an API key in the test's database, as `leadpipe keys create` does.
pub async fn create_key(app: &TestApp, tenant: &str, role: Role) -> TestKey {
    let tenant = leadpipe::domain::ids::TenantId::parse(tenant).expect("tenant id");
    let created = key_service(app)
        .create(&tenant, role, "test")
        .await
        .expect("create key");
    TestKey {
        key: created.key,
        name: created.info.name.to_string(),
    }
}

/// Revokes a key, as `leadpipe keys revoke` does (the server keeps running).
pub async fn revoke_key(app: &TestApp, key: &TestKey) {
    key_service(app)
        .revoke(&key.name)
        .await
        .expect("revoke key");
}

/// Settings for a server that always requires API keys.
pub fn settings_with_auth(database_url: &str) -> Settings {
    let mut settings = settings_for(database_url);
    settings.auth = AuthMode::Required;
    settings
}

/// A server on a fresh database that requires API keys.
pub async fn spawn_app_with_auth(backend: Backend) -> Option<TestApp> {
    let (database_url, dir) = fresh_database(backend).await?;
    let settings = settings_with_auth(&database_url);
    Some(spawn_app_with(backend, settings, dir).await)
}

/// Stops `app` and starts a server on the same database that requires API keys.
pub async fn restart_with_auth(app: TestApp) -> TestApp {
    let backend = app.backend;
    let database_url = app.database_url.clone();
    let dir = app.stop().await;
    spawn_app_with(backend, settings_with_auth(&database_url), dir).await
}

/// Stops `app`, rolls back the last `migrations` migrations of its database, runs `then` on the
/// database as they left it, and starts a server on it again, which applies them anew: the
/// database as a version before them left it, upgraded.
pub async fn restart_after_rolling_back(app: TestApp, migrations: u32, then: &[String]) -> TestApp {
    use migration::MigratorTrait;
    use sea_orm::ConnectionTrait;
    let (backend, url) = (app.backend, app.database_url.clone());
    let dir = app.stop().await;
    let db = sea_orm::Database::connect(&url).await.expect("connect");
    migration::Migrator::down(&db, Some(migrations))
        .await
        .expect("roll back the migrations");
    for statement in then {
        db.execute_unprepared(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    db.close().await.ok();
    spawn_app_on(backend, url, dir).await
}

/// Adds `authorization` metadata to every call: `Bearer <key>`, a raw value, or nothing.
#[derive(Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    pub fn key(key: &TestKey) -> Self {
        Self::raw(&format!("Bearer {}", key.key))
    }

    pub fn raw(value: &str) -> Self {
        Self(Some(
            MetadataValue::try_from(value).expect("ASCII metadata"),
        ))
    }

    pub fn none() -> Self {
        Self(None)
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type AuthedLeads = LeadServiceClient<InterceptedService<Channel, Bearer>>;
pub type AuthedPipelines = PipelineServiceClient<InterceptedService<Channel, Bearer>>;
pub type AuthedForecasts = ForecastServiceClient<InterceptedService<Channel, Bearer>>;

/// Generated clients that send the given credentials with every call.
#[derive(Clone)]
pub struct AuthedClients {
    pub leads: AuthedLeads,
    pub pipelines: AuthedPipelines,
    pub forecasts: AuthedForecasts,
}

impl AuthedClients {
    pub fn new(channel: Channel, bearer: Bearer) -> Self {
        Self {
            leads: LeadServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            pipelines: PipelineServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            forecasts: ForecastServiceClient::with_interceptor(channel, bearer),
        }
    }
}

impl TestApp {
    /// Clients that authenticate with `key`.
    pub async fn clients_for(&self, key: &TestKey) -> AuthedClients {
        AuthedClients::new(self.channel().await, Bearer::key(key))
    }

    /// Clients that send `bearer` (for example no key, or a malformed one).
    pub async fn clients_with(&self, bearer: Bearer) -> AuthedClients {
        AuthedClients::new(self.channel().await, bearer)
    }
}
pub mod history;
pub mod synthetic;
