//! The database going away: at start-up (the server binds, reports NOT_SERVING, and starts
//! serving once the database appears) and while running (calls fail fast with UNAVAILABLE,
//! health flips, service recovers by itself, and an open stream resumes without a gap or a
//! duplicate).
//!
//! On PostgreSQL the database is reached through a TCP proxy in the test that can be switched
//! off and on. SQLite is a local file that cannot go away like a server: on SQLite only the
//! start-up path runs.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::lead_service_client::LeadServiceClient;
use leadpipe::server::{App, Settings};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Starts a server with `App::start` (which does not wait for the database) and returns its
/// address once it accepts connections.
async fn start_server(settings: Settings) -> (SocketAddr, oneshot::Sender<()>) {
    init_test_log();
    let app = App::start(&settings).await.expect("start app");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        app.serve(listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("server");
    });
    (addr, stop)
}

/// The status every service reports (the server-wide "" and each leadpipe service); they flip
/// together, so a mixed answer is a flip in progress and is asked again.
async fn health(channel: &Channel) -> ServingStatus {
    let mut client = HealthClient::new(channel.clone());
    for _ in 0..100 {
        let mut statuses = Vec::new();
        for service in ["", "leadpipe.v1.LeadService", "leadpipe.v1.PipelineService"] {
            let response = client
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health answers whatever the database does")
                .into_inner();
            statuses.push(response.status());
        }
        if statuses.iter().all(|s| *s == statuses[0]) {
            return statuses[0];
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the services' health statuses disagree");
}

/// Waits until health reports `wanted`; returns how long that took.
async fn wait_for_health(channel: &Channel, wanted: ServingStatus, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if health(channel).await == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "health did not become {wanted:?} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn try_create(
    client: &mut LeadServiceClient<Channel>,
    title: &str,
) -> Result<pb::Lead, tonic::Status> {
    client
        .create_lead(pb::CreateLeadRequest {
            lead: Some(pb::Lead {
                contact_name: "Dana".into(),
                ..new_lead(title)
            }),
            request_id: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

/// SQLite is a local file: one that cannot be opened is a configuration error, reported at
/// once rather than retried. A good one serves straight away through the same start-up path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-directory");
    let settings = settings_for(&format!("sqlite://{}/leadpipe.db", missing.display()));
    let error = App::start(&settings)
        .await
        .err()
        .expect("an unopenable SQLite file fails the start");
    assert!(error.to_string().contains("unable to open"), "{error}");

    let settings = settings_for(&format!("sqlite://{}/leadpipe.db", dir.path().display()));
    let (addr, _stop) = start_server(settings).await;
    let channel = connect(addr).await;
    let took = wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(10)).await;
    eprintln!("SQLite: SERVING {took:?} after start");
    try_create(&mut LeadServiceClient::new(channel), "on time")
        .await
        .expect("serves");
}

// ---- PostgreSQL through a switchable proxy -----------------------------------------------

/// Forwards TCP connections to `target` while up. Switching it down closes every forwarded
/// connection, and connections made while it is down are closed at once.
struct Proxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(false);
        let state = up.subscribe();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*state.borrow() {
                    continue; // dropped: the client sees the connection close
                }
                let mut state = state.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// `postgres://user@host:port/db` with `host:port` replaced by `addr`; and the original address.
fn through(url: &str, addr: SocketAddr) -> (String, SocketAddr) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
    let (host_port, db) = rest.split_once('/').unwrap();
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    let host_port = host_port.replace("localhost", "127.0.0.1");
    let target: SocketAddr = host_port
        .parse()
        .expect("the test database URL has an IP host");
    let user = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    (format!("{scheme}://{user}{addr}/{db}"), target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outages_at_start_and_while_running() {
    let Some((url, _database)) = fresh_database(Backend::Postgres).await else {
        return;
    };
    let (_, target) = through(&url, "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(target).await;
    let (proxied_url, _) = through(&url, proxy.addr);
    let mut settings = settings_for(&proxied_url);
    settings.store.acquire_timeout = Duration::from_secs(2);
    let (addr, _stop) = start_server(settings).await;
    let channel = connect(addr).await;
    let mut client = LeadServiceClient::new(channel.clone());

    // Down at start-up: bound, NOT_SERVING, calls refused at once.
    assert_eq!(health(&channel).await, ServingStatus::NotServing);
    let started = Instant::now();
    let status = try_create(&mut client, "too early")
        .await
        .expect_err("no database");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    eprintln!("start-up outage: UNAVAILABLE after {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(health(&channel).await, ServingStatus::NotServing);

    proxy.set_up(true);
    let took = wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(20)).await;
    eprintln!("start-up outage: SERVING {took:?} after the database came up");
    let first = try_create(&mut client, "first").await.expect("serves");

    // A stream opened before the outage.
    let base = stage_changes_of(&mut client, &first.id).await[0].sequence;
    let mut stream = client
        .watch_stage_changes(pb::WatchStageChangesRequest {
            after_sequence: Some(base),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let before = try_create(&mut client, "before the outage").await.unwrap();
    let mut seen = vec![next_event(&mut stream).await];
    assert_eq!(seen[0].lead_id, before.id);

    // Lost while running: calls fail fast, health flips.
    proxy.set_up(false);
    let lost = Instant::now();
    for attempt in 0..3 {
        let started = Instant::now();
        let status = try_create(&mut client, "during the outage")
            .await
            .expect_err("the database is gone");
        let took = started.elapsed();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(took < Duration::from_secs(5), "UNAVAILABLE took {took:?}");
        eprintln!("outage: CreateLead #{attempt} UNAVAILABLE after {took:?}");
    }
    let status = client
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: first.id.clone(),
        })
        .await
        .expect_err("reads fail too");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    wait_for_health(&channel, ServingStatus::NotServing, Duration::from_secs(10)).await;
    eprintln!(
        "outage: NOT_SERVING {:?} after the database went away",
        lost.elapsed()
    );

    // Back: health recovers, calls succeed, the stream resumes.
    proxy.set_up(true);
    let back = Instant::now();
    let took = wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(20)).await;
    eprintln!("recovery: SERVING {took:?} after the database came back");
    let after = loop {
        match try_create(&mut client, "after the outage").await {
            Ok(lead) => break lead,
            Err(status) if status.code() == Code::Unavailable => {
                assert!(
                    back.elapsed() < Duration::from_secs(20),
                    "no recovery: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    eprintln!(
        "recovery: first CreateLead succeeded {:?} after the database came back",
        back.elapsed()
    );
    let moved = move_to_stage(&mut client, &after.id, "qualification").await;
    let last = stage_changes_of(&mut client, &moved.id)
        .await
        .last()
        .unwrap()
        .sequence;
    while seen.last().unwrap().sequence < last {
        seen.push(next_event(&mut stream).await);
    }
    let sequences: Vec<i64> = seen.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        ((base + 1)..=last).collect::<Vec<_>>(),
        "the stream resumed with no gap and no duplicate"
    );
    assert!(
        seen.iter()
            .any(|e| e.lead_id == after.id && e.to_stage == "qualification")
    );
    eprintln!(
        "recovery: the stream delivered every event up to {last}, {:?} after the database came back",
        back.elapsed()
    );
}

async fn stage_changes_of(
    client: &mut LeadServiceClient<Channel>,
    lead_id: &str,
) -> Vec<pb::StageChange> {
    client
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: lead_id.into(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("history")
        .into_inner()
        .stage_changes
}

async fn move_to_stage(client: &mut LeadServiceClient<Channel>, id: &str, stage: &str) -> pb::Lead {
    client
        .move_lead(pb::MoveLeadRequest {
            id: id.into(),
            stage: stage.into(),
            ..Default::default()
        })
        .await
        .expect("move")
        .into_inner()
}

// ---- Storage faults: every write acknowledged OK can be read back ------------------------
//
// Each test below injects a fault into the storage under a running server while calls write,
// then checks that no call was answered INTERNAL, that the fault was reported as UNAVAILABLE
// or RESOURCE_EXHAUSTED, and that every write acknowledged OK can be read back, after the
// fault is lifted and after a kill -9 and restart.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

/// A lead as large as the documented limits allow: the longest title and 64 labels with the
/// longest values, so that a few dozen writes fill megabytes.
fn largest_lead(title: &str) -> pb::Lead {
    let labels: std::collections::HashMap<String, String> = (0..64)
        .map(|i| {
            (
                format!("label_{i:02}"),
                format!("{i:02}{}", "v".repeat(253)),
            )
        })
        .collect();
    pb::Lead {
        title: format!("{title} {}", "t".repeat(200 - title.len() - 1)),
        contact_name: "Dana".into(),
        labels,
        ..new_lead(title)
    }
}

/// What the writers were told, and the statuses of the writes that failed.
#[derive(Default, Debug)]
struct Outcomes {
    acknowledged: Vec<String>,
    refused: BTreeMap<String, usize>,
}

impl Outcomes {
    fn record(&mut self, result: Result<pb::Lead, tonic::Status>) {
        match result {
            Ok(lead) => self.acknowledged.push(lead.id),
            Err(status) => {
                assert!(
                    matches!(status.code(), Code::Unavailable | Code::ResourceExhausted),
                    "a storage fault must be UNAVAILABLE or RESOURCE_EXHAUSTED, got {status:?}"
                );
                if status.code() == Code::Unavailable {
                    use tonic_types::StatusExt;
                    assert!(
                        status.get_details_retry_info().is_some(),
                        "UNAVAILABLE carries RetryInfo: {status:?}"
                    );
                }
                *self
                    .refused
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
        }
    }

    fn refusals(&self) -> usize {
        self.refused.values().sum()
    }
}

/// Reads every acknowledged lead back, with its revisions; returns how many were found whole:
/// the lead, and revisions numbered 1 to its version, the last one being the lead as read.
async fn found(channel: &Channel, ids: &[String]) -> usize {
    let mut client = LeadServiceClient::new(channel.clone());
    let mut found = 0;
    for id in ids {
        let lead = match client
            .get_lead(pb::GetLeadRequest {
                as_of: None,
                id: id.clone(),
            })
            .await
        {
            Ok(lead) => lead.into_inner(),
            Err(status) => {
                eprintln!("acknowledged lead {id} is missing: {status:?}");
                continue;
            }
        };
        let revisions = match client
            .list_lead_revisions(pb::ListLeadRevisionsRequest {
                lead_id: id.clone(),
                page_size: 1000,
                page_token: String::new(),
            })
            .await
        {
            Ok(page) => page.into_inner().revisions,
            Err(status) => {
                eprintln!("acknowledged lead {id} has no readable revisions: {status:?}");
                continue;
            }
        };
        let numbers: Vec<i64> = revisions.iter().map(|r| r.revision).collect();
        let version: i64 = lead.etag.trim_matches('"').parse().unwrap_or(-1);
        if numbers != (1..=version).collect::<Vec<_>>()
            || revisions.last().and_then(|r| r.lead.as_ref()) != Some(&lead)
        {
            eprintln!("acknowledged lead {id} at version {version} has revisions {numbers:?}");
            continue;
        }
        found += 1;
    }
    found
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `leadpipe serve` in a child process, killed when dropped.
/// Lifts the file-size limit of the running `server` and waits until it reports SERVING again.
async fn lift_file_size_limit(server: &ChildServer, channel: &Channel) {
    let lifted = Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), "--fsize=unlimited"])
        .status()
        .expect("prlimit");
    assert!(lifted.success());
    wait_for_health(channel, ServingStatus::Serving, Duration::from_secs(15)).await;
}

struct ChildServer(Child);

impl ChildServer {
    /// Starts `leadpipe serve` through `bash -c`, so that `prelude` (a ulimit, a mount) applies
    /// to it first. `TEST_LOG=1` shows its logs.
    fn start(prelude: &str, url: &str, addr: SocketAddr) -> Self {
        Self::start_in("", prelude, url, addr)
    }

    /// Like `start`, with the server run by `wrapper` (for example `nsenter …`).
    fn start_in(wrapper: &str, prelude: &str, url: &str, addr: SocketAddr) -> Self {
        let logs = std::env::var_os("TEST_LOG").is_some();
        let child = Command::new("bash")
            .args([
                "-c",
                &format!(
                    "{prelude} exec {wrapper} \"$0\" --database-url \"$1\" serve --listen \"$2\""
                ),
                env!("CARGO_BIN_EXE_leadpipe"),
                url,
                &addr.to_string(),
            ])
            .env("RUST_LOG", if logs { "info" } else { "off" })
            .stdout(if logs {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start leadpipe serve");
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill_hard(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// SQLite with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored): once the WAL cannot grow, every
/// write fails with EFBIG inside SQLite. A failed COMMIT once left the single writer connection
/// counting an open transaction, and every later write was acknowledged and never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_size_limit_loses_no_acknowledged_write() {
    file_size_limit_loses_no_acknowledged_write(1).await;
}

/// The same with writers that commit together: a batch whose commit fails in storage fails
/// every call in it, and none of them is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_size_limit_fails_whole_batches_and_loses_no_acknowledged_write() {
    file_size_limit_loses_no_acknowledged_write(16).await;
}

async fn file_size_limit_loses_no_acknowledged_write(writers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/leadpipe.db", dir.path().display());
    let addr = free_addr();
    let mut server = ChildServer::start("trap '' XFSZ; ulimit -S -f 3000;", &url, addr);
    let channel = connect(addr).await;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(30)).await;
    let mut client = LeadServiceClient::new(channel.clone());

    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Outcomes::default()));
    let tasks = (0..writers).map(|writer| {
        let mut client = client.clone();
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            for n in 0..400 / writers {
                let result = client
                    .create_lead(pb::CreateLeadRequest {
                        lead: Some(largest_lead(&format!("limited {writer}-{n}"))),
                        request_id: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner());
                let mut outcomes = outcomes.lock().unwrap();
                outcomes.record(result);
                if outcomes.refusals() >= 40 {
                    break;
                }
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.expect("writer");
    }
    let mut outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    eprintln!("file-size limit, {writers} writer(s): {outcomes:?}");
    assert!(
        outcomes.refusals() > 0,
        "the file-size limit never stopped a write"
    );
    wait_for_health(&channel, ServingStatus::NotServing, Duration::from_secs(15)).await;
    let before = outcomes.acknowledged.clone();
    assert_eq!(
        found(&channel, &before).await,
        before.len(),
        "while failing"
    );

    // Lift the limit of the running server: the writer recovers without a restart.
    lift_file_size_limit(&server, &channel).await;
    for n in 0..20 {
        let lead = client
            .create_lead(pb::CreateLeadRequest {
                lead: Some(largest_lead(&format!("lifted {n}"))),
                request_id: String::new(),
            })
            .await
            .expect("writes commit once the limit is lifted")
            .into_inner();
        outcomes.acknowledged.push(lead.id);
    }
    let all = outcomes.acknowledged.clone();
    assert_eq!(found(&channel, &all).await, all.len(), "after lifting");

    server.kill_hard();
    let addr = free_addr();
    let _server = ChildServer::start("", &url, addr);
    let channel = connect(addr).await;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(30)).await;
    let after_restart = found(&channel, &all).await;
    eprintln!(
        "file-size limit: {} writes acknowledged ({} before the limit was lifted), {} found after \
         kill -9 and restart; refused: {:?}",
        all.len(),
        before.len(),
        after_restart,
        outcomes.refused
    );
    assert_eq!(after_restart, all.len(), "after kill -9 and restart");
    // Every lead stored was acknowledged: a call of a failed batch left nothing behind.
    assert_eq!(
        total_leads(&channel).await,
        all.len() as i64,
        "only acknowledged writes are stored"
    );
}

/// Moves of writers that each move their own lead back and forth, while the file-size limit
/// makes commits fail: on SQLite most of them are built while another write holds the writer
/// and sent as one batch. Every move answered OK is found after the limit is lifted and after a
/// kill -9 and restart, and no refused move left anything: each lead's version and history
/// count exactly its acknowledged moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_size_limit_during_concurrent_moves_loses_no_acknowledged_move() {
    const WRITERS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/leadpipe.db", dir.path().display());
    let addr = free_addr();
    let mut server = ChildServer::start("trap '' XFSZ; ulimit -S -f 6000;", &url, addr);
    let channel = connect(addr).await;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(30)).await;
    let mut client = LeadServiceClient::new(channel.clone());
    let mut ids = Vec::new();
    for writer in 0..WRITERS {
        let lead = client
            .create_lead(pb::CreateLeadRequest {
                lead: Some(largest_lead(&format!("moved {writer}"))),
                request_id: String::new(),
            })
            .await
            .expect("the first leads fit under the limit")
            .into_inner();
        ids.push(lead.id);
    }

    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Outcomes::default()));
    let tasks = ids.iter().cloned().map(|id| {
        let mut client = client.clone();
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            let (mut stage, mut acknowledged) = ("lead_generation", 0usize);
            for _ in 0..60 {
                let to = match stage {
                    "lead_generation" => "qualification",
                    _ => "lead_generation",
                };
                let result = client
                    .move_lead(pb::MoveLeadRequest {
                        id: id.clone(),
                        stage: to.into(),
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner());
                if result.is_ok() {
                    (stage, acknowledged) = (to, acknowledged + 1);
                }
                let mut outcomes = outcomes.lock().unwrap();
                outcomes.record(result);
                if outcomes.refusals() >= 40 {
                    break;
                }
            }
            (id, stage, acknowledged)
        })
    });
    let mut moved = Vec::new();
    for task in futures::future::join_all(tasks).await {
        moved.push(task.expect("writer"));
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    eprintln!("file-size limit, {WRITERS} movers: {outcomes:?}");
    assert!(
        outcomes.refusals() > 0,
        "the file-size limit never stopped a move"
    );
    assert!(
        moved.iter().any(|(_, _, acknowledged)| *acknowledged > 0),
        "some moves were acknowledged before the limit"
    );

    lift_file_size_limit(&server, &channel).await;
    server.kill_hard();
    let addr = free_addr();
    let _server = ChildServer::start("", &url, addr);
    let channel = connect(addr).await;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(30)).await;
    let mut client = LeadServiceClient::new(channel.clone());
    assert_eq!(
        found(&channel, &ids).await,
        ids.len(),
        "after kill -9 and restart"
    );
    for (id, stage, acknowledged) in &moved {
        let lead = client
            .get_lead(pb::GetLeadRequest {
                as_of: None,
                id: id.clone(),
            })
            .await
            .expect("lead")
            .into_inner();
        assert_eq!(
            lead.stage, *stage,
            "{id}: the last acknowledged move's stage"
        );
        assert_eq!(
            lead.etag.trim_matches('"'),
            (1 + acknowledged).to_string(),
            "{id}: one version per acknowledged move"
        );
        assert_eq!(
            stage_changes_of(&mut client, id).await.len(),
            1 + acknowledged,
            "{id}: one stage change per acknowledged move"
        );
    }
}

async fn total_leads(channel: &Channel) -> i64 {
    LeadServiceClient::new(channel.clone())
        .list_leads(pb::ListLeadsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .total_size as i64
}

/// Another process holds SQLite's write lock: a write waits for it up to the database timeout,
/// succeeds when it is released in time, and otherwise answers UNAVAILABLE with RetryInfo, never
/// INTERNAL. Then `leadpipe demo` writes to the same file while the server takes writes, as the
/// docs say is safe: every write is acknowledged or refused as UNAVAILABLE, and every
/// acknowledged one is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_locked_by_another_process_waits_then_answers_unavailable() {
    use sea_orm::sqlx::{Connection, Executor, SqliteConnection};

    let (url, dir) = fresh_database(Backend::Sqlite).await.unwrap();
    let mut settings = settings_for(&url);
    // Twenty times the wait below before the lock is released, so that a loaded machine cannot
    // turn the second case into the first.
    settings.store.acquire_timeout = Duration::from_secs(2);
    let app = spawn_app_with(Backend::Sqlite, settings, dir).await;
    let channel = app.channel().await;
    let mut client = app.leads.clone();
    let mut outcomes = Outcomes::default();
    outcomes.record(try_create(&mut client, "before the lock").await);

    let mut other = SqliteConnection::connect(&url).await.expect("connect");
    other.execute("BEGIN IMMEDIATE").await.expect("lock");
    let started = Instant::now();
    let status = try_create(&mut client, "while locked")
        .await
        .expect_err("the write lock is held elsewhere");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "answered before waiting out the busy timeout: {:?}",
        started.elapsed()
    );
    outcomes.record(Err(status.clone()));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Released while a write waits for it: the write goes through.
    let waiting = {
        let mut client = client.clone();
        tokio::spawn(async move { try_create(&mut client, "waits for the lock").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    other.execute("ROLLBACK").await.expect("unlock");
    let waited = waiting.await.unwrap().expect("the lock came free in time");
    outcomes.acknowledged.push(waited.id);
    other.close().await.ok();

    let demo = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_leadpipe"))
                .args([
                    "--database-url",
                    &url,
                    "demo",
                    "--leads",
                    "4000",
                    "--tenant",
                    "demo",
                ])
                .env("RUST_LOG", "off")
                .stdout(Stdio::null())
                .status()
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut outcomes = Outcomes::default();
                for n in 0..60 {
                    outcomes.record(try_create(&mut client, &format!("beside demo {w}/{n}")).await);
                }
                outcomes
            })
        })
        .collect();
    for writer in writers {
        let theirs = writer.await.unwrap();
        outcomes.acknowledged.extend(theirs.acknowledged);
        for (code, n) in theirs.refused {
            *outcomes.refused.entry(code).or_default() += n;
        }
    }
    let demo = demo.await.unwrap().expect("run leadpipe demo");
    assert!(demo.success(), "leadpipe demo beside the server: {demo}");

    let all = outcomes.acknowledged.clone();
    let present = found(&channel, &all).await;
    eprintln!(
        "locked database: {} writes acknowledged, {present} found; refused: {:?}",
        all.len(),
        outcomes.refused
    );
    assert_eq!(present, all.len());
    assert_eq!(total_leads(&channel).await, all.len() as i64);
}

/// ImportLeads at the documented maxima: batches of leads with 64 labels of the longest values
/// each. SQLite once refused such a batch whole (`too many SQL variables`).
async fn imports_at_the_documented_maxima(app: TestApp) {
    let leads = 600;
    let messages: Vec<pb::ImportLeadsRequest> = (0..leads)
        .map(|n| pb::ImportLeadsRequest {
            external_id: format!("crm-{n:05}-{}", "x".repeat(180)),
            lead: Some(largest_lead(&format!("imported {n}"))),
            history: vec![],
            revisions: vec![],
            update_existing: false,
        })
        .collect();
    let response = app
        .leads
        .clone()
        .import_leads(futures::stream::iter(messages))
        .await
        .expect("import")
        .into_inner();
    assert_eq!(
        (response.imported, response.failed),
        (leads, 0),
        "{:?}",
        response.errors
    );
    let channel = app.channel().await;
    assert_eq!(total_leads(&channel).await, leads);
    let page = LeadServiceClient::new(channel)
        .list_leads(pb::ListLeadsRequest {
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for lead in page.leads {
        assert_eq!(lead.labels.len(), 64);
        assert!(lead.labels.values().all(|v| v.chars().count() == 255));
    }
}

mod storage_limits {
    use super::*;
    on_both_backends!(imports_at_the_documented_maxima);
}

/// PostgreSQL refuses the COMMIT itself: a deferred trigger, which runs at commit, raises an
/// I/O error (SQLSTATE 58030) or a full disk (53100) for some leads. Those calls answer
/// UNAVAILABLE or RESOURCE_EXHAUSTED and leave nothing behind; health is NOT_SERVING until writes
/// commit again; every acknowledged write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_failed_commits_are_never_acknowledged() {
    use sea_orm::ConnectionTrait;

    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let database = sea_orm::Database::connect(&app.database_url).await.unwrap();
    database
        .execute_unprepared(
            "CREATE FUNCTION leadpipe_test_fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.title LIKE 'io error at commit%' THEN
                 RAISE EXCEPTION 'injected I/O error' USING ERRCODE = '58030';
               ELSIF NEW.title LIKE 'disk full at commit%' THEN
                 RAISE EXCEPTION 'injected full disk' USING ERRCODE = '53100';
               END IF;
               RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER leadpipe_test_fail_commit AFTER INSERT ON leads
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
               EXECUTE FUNCTION leadpipe_test_fail_commit();",
        )
        .await
        .unwrap();
    let channel = app.channel().await;
    let mut client = app.leads.clone();
    let mut outcomes = Outcomes::default();
    for n in 0..30 {
        let title = match n % 3 {
            0 => format!("io error at commit {n}"),
            1 => format!("disk full at commit {n}"),
            _ => format!("commits {n}"),
        };
        let result = try_create(&mut client, &title).await;
        if n % 3 != 2 {
            let status = result.as_ref().expect_err("the commit failed");
            let expected = if n % 3 == 0 {
                Code::Unavailable
            } else {
                Code::ResourceExhausted
            };
            assert_eq!(status.code(), expected, "{status:?}");
        }
        outcomes.record(result);
    }
    wait_for_health(&channel, ServingStatus::NotServing, Duration::from_secs(10)).await;

    database
        .execute_unprepared("DROP TRIGGER leadpipe_test_fail_commit ON leads")
        .await
        .unwrap();
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(20)).await;
    for n in 0..10 {
        outcomes.record(try_create(&mut client, &format!("after {n}")).await);
    }
    let all = outcomes.acknowledged.clone();
    let present = found(&channel, &all).await;
    eprintln!(
        "failed commits: {} writes acknowledged, {present} found, {} leads stored; refused: {:?}",
        all.len(),
        total_leads(&channel).await,
        outcomes.refused
    );
    assert_eq!(all.len(), 20);
    assert_eq!(present, all.len());
    assert_eq!(
        total_leads(&channel).await,
        all.len() as i64,
        "no failed write left a lead"
    );
}

/// Every connection of the server to PostgreSQL is terminated again and again while calls write,
/// so that some die mid-statement and some mid-commit. A call whose connection died may or may
/// not have committed, but it is never answered OK unless it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_killed_mid_commit_lose_no_acknowledged_write() {
    use sea_orm::ConnectionTrait;

    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let admin = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let (stop, mut stopped) = watch::channel(false);
    let killer = tokio::spawn(async move {
        let mut kills = 0u64;
        while !*stopped.borrow() {
            let killed = admin
                .query_all_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                ))
                .await
                .map_or(0, |rows| rows.len() as u64);
            kills += killed;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(30)) => {}
                _ = stopped.changed() => {}
            }
        }
        kills
    });
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = app.leads.clone();
            tokio::spawn(async move {
                let mut outcomes = Outcomes::default();
                for n in 0..50 {
                    outcomes.record(try_create(&mut client, &format!("killed {w}/{n}")).await);
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Outcomes::default();
    for writer in writers {
        let theirs = writer.await.unwrap();
        outcomes.acknowledged.extend(theirs.acknowledged);
        for (code, n) in theirs.refused {
            *outcomes.refused.entry(code).or_default() += n;
        }
    }
    stop.send_replace(true);
    let kills = killer.await.unwrap();
    let channel = app.channel().await;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(20)).await;
    let all = outcomes.acknowledged.clone();
    let present = found(&channel, &all).await;
    eprintln!(
        "killed connections: {kills} backends terminated; {} writes acknowledged, {present} found, \
         {} leads stored; refused: {:?}",
        all.len(),
        total_leads(&channel).await,
        outcomes.refused
    );
    assert!(kills > 0, "no connection was terminated");
    assert_eq!(present, all.len());
}

/// A small filesystem of its own (a tmpfs in a private mount namespace) under the SQLite
/// database: once it is full, writes fail with ENOSPC, which is RESOURCE_EXHAUSTED. Growing the
/// filesystem lets writes commit again; a kill -9 and a restart in the same namespace find every
/// acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_full_disk_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small-disk");
    std::fs::create_dir(&mount).unwrap();
    // Holds the namespace, and so the filesystem, across server restarts.
    let Some(holder) = SmallDisk::mount(&mount, "6m") else {
        return;
    };
    let url = format!("sqlite://{}/leadpipe.db", mount.display());
    let wrapper = format!("nsenter --target {} --mount --", holder.pid());
    let addr = free_addr();
    let mut server = ChildServer::start_in(&wrapper, "", &url, addr);
    let channel = connect(addr).await;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(30)).await;
    let mut client = LeadServiceClient::new(channel.clone());

    let mut outcomes = Outcomes::default();
    for n in 0..600 {
        let result = client
            .create_lead(pb::CreateLeadRequest {
                lead: Some(largest_lead(&format!("small disk {n}"))),
                request_id: String::new(),
            })
            .await
            .map(|r| r.into_inner());
        outcomes.record(result);
        if outcomes.refusals() >= 30 {
            break;
        }
    }
    assert!(
        outcomes.refused.contains_key("ResourceExhausted"),
        "a full disk is RESOURCE_EXHAUSTED: {:?}",
        outcomes.refused
    );
    wait_for_health(&channel, ServingStatus::NotServing, Duration::from_secs(15)).await;
    let before = outcomes.acknowledged.clone();
    assert_eq!(found(&channel, &before).await, before.len(), "while full");

    holder.resize(&mount, "64m");
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(20)).await;
    for n in 0..20 {
        let lead = client
            .create_lead(pb::CreateLeadRequest {
                lead: Some(largest_lead(&format!("grown {n}"))),
                request_id: String::new(),
            })
            .await
            .expect("writes commit once there is room")
            .into_inner();
        outcomes.acknowledged.push(lead.id);
    }

    server.kill_hard();
    let addr = free_addr();
    let _server = ChildServer::start_in(&wrapper, "", &url, addr);
    let channel = connect(addr).await;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(30)).await;
    let all = outcomes.acknowledged.clone();
    let after_restart = found(&channel, &all).await;
    eprintln!(
        "full disk: {} writes acknowledged ({} before the disk grew), {after_restart} found after \
         kill -9 and restart; refused: {:?}",
        all.len(),
        before.len(),
        outcomes.refused
    );
    assert_eq!(after_restart, all.len(), "after kill -9 and restart");
}

/// A tmpfs mounted in a mount namespace of its own, which lives as long as this value.
struct SmallDisk(Child);

impl SmallDisk {
    /// None, with a note, where mount namespaces are not allowed (not root) outside CI; in CI,
    /// which runs as root, that is a failure.
    fn mount(at: &std::path::Path, size: &str) -> Option<Self> {
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash", "-c"])
            .arg("mount -t tmpfs -o size=\"$1\" tmpfs \"$0\" && exec sleep 600")
            .arg(at)
            .arg(size)
            .spawn()
            .expect("unshare");
        let disk = Self(holder);
        for _ in 0..100 {
            let mounted = Command::new("nsenter")
                .args(["--target", &disk.pid().to_string(), "--mount", "--"])
                .args(["mountpoint", "-q"])
                .arg(at)
                .status()
                .is_ok_and(|s| s.success());
            if mounted {
                return Some(disk);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "could not mount a tmpfs in a mount namespace of its own"
        );
        eprintln!("skipping the full-disk test: mount namespaces need root");
        None
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn resize(&self, at: &std::path::Path, size: &str) {
        let resized = Command::new("nsenter")
            .args(["--target", &self.pid().to_string(), "--mount", "--"])
            .args(["mount", "-o", &format!("remount,size={size}")])
            .arg(at)
            .status()
            .expect("nsenter");
        assert!(resized.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
