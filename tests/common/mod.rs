//! Starts a real leadpipe server on 127.0.0.1:0 with a fresh database and hands out generated
//! gRPC clients. Every test runs on SQLite, and on PostgreSQL when
//! `LEADPIPE_TEST_DATABASE_URL` is set (each test in a database of its own).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use leadpipe::config::DatabaseArgs;
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::lead_service_client::LeadServiceClient;
use leadpipe::grpc::pb::pipeline_service_client::PipelineServiceClient;
use leadpipe::server::App;
use leadpipe::store::SqliteSync;
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
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestApp {
    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    /// Stops the server gracefully and waits until it has finished.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A fresh database URL for `backend`, or None (with a note on stderr) when PostgreSQL is not
/// configured.
pub async fn fresh_database(backend: Backend) -> Option<(String, Option<tempfile::TempDir>)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}/leadpipe.db", dir.path().display());
            Some((url, Some(dir)))
        }
        Backend::Postgres => {
            let Ok(admin_url) = std::env::var(PG_URL_VAR) else {
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
            Some((format!("{base}/{name}"), None))
        }
    }
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    let (database_url, dir) = fresh_database(backend).await?;
    Some(spawn_app_on(backend, database_url, dir).await)
}

pub async fn spawn_app_on(
    backend: Backend,
    database_url: String,
    dir: Option<tempfile::TempDir>,
) -> TestApp {
    let args = DatabaseArgs {
        database_url: database_url.clone(),
        db_pool_size: 8,
        sqlite_synchronous: SqliteSync::Normal,
    };
    let app = App::build(&args.store_config()).await.expect("build app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
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
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
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
