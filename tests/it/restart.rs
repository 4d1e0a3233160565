//! SIGKILL in the middle of writes: after a restart, every acknowledged write is there, each
//! lead's stage matches its history, every committed change has exactly one event, and the
//! aggregates the reports read (the stage aggregates, the open-lead groups) still equal a replay
//! of the history.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::forecast_service_client::ForecastServiceClient;
use leadpipe::grpc::pb::lead_service_client::LeadServiceClient;
use rand::Rng;

const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_survives_sigkill_under_load() {
    let (url, dir) = fresh_database(Backend::Sqlite).await.unwrap();
    for round in 0..ROUNDS {
        kill_and_verify(&url, round).await;
    }
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_survives_sigkill_under_load() {
    let Some((url, _database)) = fresh_database(Backend::Postgres).await else {
        return;
    };
    for round in 0..ROUNDS {
        kill_and_verify(&url, round).await;
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn start_server(url: &str, addr: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_leadpipe"))
        .args([
            "--database-url",
            url,
            "serve",
            "--listen",
            &addr.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("start leadpipe")
}

/// The server accepts connections before its database is ready; writes start once health says so.
async fn wait_until_serving(channel: tonic::transport::Channel) {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for _ in 0..200 {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status);
        if status.is_ok_and(|s| s == ServingStatus::Serving as i32) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never reported SERVING");
}

/// What clients were told: lead id → etags of every acknowledged write.
type Acknowledged = Arc<Mutex<HashMap<String, Vec<String>>>>;

async fn kill_and_verify(url: &str, round: usize) {
    let addr = free_addr();
    let mut server = start_server(url, addr);
    let channel = connect(addr).await;
    wait_until_serving(channel.clone()).await;
    let acknowledged: Acknowledged = Arc::default();

    let writers: Vec<_> = (0..6)
        .map(|w| {
            let mut client = LeadServiceClient::new(channel.clone());
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    let Ok(lead) = client
                        .create_lead(pb::CreateLeadRequest {
                            lead: Some(pb::Lead {
                                contact_name: "Dana".into(),
                                ..new_lead(&format!("round {round} writer {w} lead {n}"))
                            }),
                            request_id: String::new(),
                        })
                        .await
                    else {
                        return;
                    };
                    let lead = lead.into_inner();
                    acknowledged
                        .lock()
                        .unwrap()
                        .insert(lead.id.clone(), vec![lead.etag.clone()]);
                    for m in 0..4 {
                        let stage = if m % 2 == 0 {
                            "qualification"
                        } else {
                            "lead_generation"
                        };
                        match client
                            .move_lead(pb::MoveLeadRequest {
                                id: lead.id.clone(),
                                stage: stage.into(),
                                ..Default::default()
                            })
                            .await
                        {
                            Ok(moved) => acknowledged
                                .lock()
                                .unwrap()
                                .get_mut(&lead.id)
                                .unwrap()
                                .push(moved.into_inner().etag),
                            Err(_) => return,
                        }
                    }
                }
            })
        })
        .collect();

    let delay = rand::rng().random_range(300..900);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    server.kill().expect("SIGKILL");
    server.wait().unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    drop(channel);

    let addr = free_addr();
    let mut server = start_server(url, addr);
    let channel = connect(addr).await;
    wait_until_serving(channel.clone()).await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    verify(LeadServiceClient::new(channel.clone()), &acknowledged).await;
    reports_agree_with_the_history(channel).await;
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The aggregates are written in the transactions of the writes they count, so whatever the kill
/// cut short, GetPipelineMetrics for the present (read from them) equals GetPipelineMetrics as
/// of the same instant (the history replayed).
async fn reports_agree_with_the_history(channel: tonic::transport::Channel) {
    let mut forecasts = ForecastServiceClient::new(channel);
    let present = forecasts
        .get_pipeline_metrics(pb::GetPipelineMetricsRequest::default())
        .await
        .expect("metrics for the present")
        .into_inner();
    let replay = forecasts
        .get_pipeline_metrics(pb::GetPipelineMetricsRequest {
            as_of: present.as_of,
            ..Default::default()
        })
        .await
        .expect("metrics as of the same instant")
        .into_inner();
    assert!(present.open_count > 0, "the acknowledged leads are open");
    assert_eq!(present.open_count, replay.open_count);
    for (p, r) in present.stages.iter().zip(&replay.stages) {
        assert_eq!(
            (&p.stage, p.open_count, &p.open_amount, p.entered_count),
            (&r.stage, r.open_count, &r.open_amount, r.entered_count),
            "the present's aggregates against the replay"
        );
        assert_eq!(
            (p.advanced_count, p.lost_count),
            (r.advanced_count, r.lost_count)
        );
    }
}

async fn verify(
    mut client: LeadServiceClient<tonic::transport::Channel>,
    acknowledged: &HashMap<String, Vec<String>>,
) {
    assert!(
        !acknowledged.is_empty(),
        "the load made progress before the kill"
    );
    // A marker write after the restart tells us the newest sequence.
    let marker = client
        .create_lead(pb::CreateLeadRequest {
            lead: Some(new_lead("marker")),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let newest = client
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: marker.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .stage_changes[0]
        .sequence;

    let mut stream = client
        .watch_stage_changes(pb::WatchStageChangesRequest {
            after_sequence: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while events
        .last()
        .map_or(0, |e: &pb::StageChangeEvent| e.sequence)
        < newest
    {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("replay continues")
            .unwrap()
            .unwrap();
        events.push(event);
    }
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=newest).collect::<Vec<_>>(),
        "the outbox holds every sequence exactly once"
    );

    let mut by_lead: HashMap<&str, Vec<&pb::StageChangeEvent>> = HashMap::new();
    for event in &events {
        by_lead
            .entry(event.lead_id.as_str())
            .or_default()
            .push(event);
    }
    for (lead_id, etags) in acknowledged {
        let lead_events = by_lead
            .get(lead_id.as_str())
            .expect("acknowledged lead has events");
        let event_etags: Vec<&str> = lead_events
            .iter()
            .map(|e| e.lead.as_ref().unwrap().etag.as_str())
            .collect();
        for etag in etags {
            assert_eq!(
                event_etags.iter().filter(|e| **e == etag).count(),
                1,
                "acknowledged write {etag} of lead {lead_id} has exactly one event"
            );
        }
    }
    // Every lead present: its stage is the last event's to_stage and its history is a chain.
    for (lead_id, lead_events) in &by_lead {
        let lead = match client
            .get_lead(pb::GetLeadRequest {
                as_of: None,
                id: lead_id.to_string(),
            })
            .await
        {
            Ok(lead) => lead.into_inner(),
            Err(status) => panic!("lead {lead_id} has events but cannot be read: {status}"),
        };
        assert_eq!(lead.stage, lead_events.last().unwrap().to_stage);
        let changes = client
            .list_stage_changes(pb::ListStageChangesRequest {
                lead_id: lead_id.to_string(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .stage_changes;
        assert_eq!(changes.len(), lead_events.len(), "history and events agree");
        assert_eq!(changes[0].from_stage, "");
        for pair in changes.windows(2) {
            assert_eq!(pair[1].from_stage, pair[0].to_stage, "history is one chain");
        }
        assert_eq!(changes.last().unwrap().to_stage, lead.stage);
        // Every write has its revision, numbered without a gap; the last is the lead as read.
        let revisions = client
            .list_lead_revisions(pb::ListLeadRevisionsRequest {
                lead_id: lead_id.to_string(),
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .revisions;
        assert_eq!(
            revisions.iter().map(|r| r.revision).collect::<Vec<_>>(),
            (1..=revisions.len() as i64).collect::<Vec<_>>()
        );
        assert_eq!(
            revisions.len(),
            lead_events.len(),
            "revisions and events agree"
        );
        assert_eq!(revisions.last().unwrap().lead.as_ref(), Some(&lead));
        if let Some(etags) = acknowledged.get(lead_id.to_owned()) {
            for etag in etags {
                assert_eq!(
                    revisions
                        .iter()
                        .filter(|r| r.lead.as_ref().unwrap().etag == *etag)
                        .count(),
                    1,
                    "acknowledged write {etag} of lead {lead_id} has exactly one revision"
                );
            }
        }
    }
}
