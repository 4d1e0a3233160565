//! The database going away: at start-up (the server binds, reports NOT_SERVING, and starts
//! serving once the database appears) and while running (calls fail fast with UNAVAILABLE,
//! health flips, service recovers by itself, and an open stream resumes without a gap or a
//! duplicate).
//!
//! On PostgreSQL the database is reached through a TCP proxy in the test that can be switched
//! off and on. SQLite is a local file that cannot go away like a server: on SQLite only the
//! start-up path runs.

mod common;

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
    let Some((url, _)) = fresh_database(Backend::Postgres).await else {
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
