//! WatchStageChanges: ordered, filtered, resumable delivery from the transactional outbox.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use leadpipe::grpc::pb;
use rand::Rng;
use tonic::{Code, Streaming};

on_both_backends!(
    replay_hands_over_to_live_without_gap_or_duplicate,
    unset_after_sequence_streams_new_events_only,
    filters_are_applied_on_the_server,
    concurrent_movers_and_random_reconnects_lose_nothing,
    slow_consumer_neither_blocks_others_nor_loses_events,
    shutdown_ends_streams_with_unavailable,
    expired_and_future_sequences_are_out_of_range,
    commits_reach_new_streams_without_polling,
    response_headers_mean_the_subscription_is_live,
);

const WAIT: Duration = Duration::from_secs(20);

async fn watch(
    app: &TestApp,
    request: pb::WatchStageChangesRequest,
) -> Streaming<pb::StageChangeEvent> {
    app.leads
        .clone()
        .watch_stage_changes(request)
        .await
        .expect("watch")
        .into_inner()
}

fn after(sequence: i64) -> pb::WatchStageChangesRequest {
    pb::WatchStageChangesRequest {
        after_sequence: Some(sequence),
        ..Default::default()
    }
}

async fn take(stream: &mut Streaming<pb::StageChangeEvent>, n: usize) -> Vec<pb::StageChangeEvent> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next_event(stream).await);
    }
    events
}

fn qualified(title: &str) -> pb::Lead {
    pb::Lead {
        contact_name: "Dana".into(),
        ..new_lead(title)
    }
}

async fn replay_hands_over_to_live_without_gap_or_duplicate(app: TestApp) {
    let first = create(&app, qualified("one")).await;
    create(&app, qualified("two")).await;
    move_to(&app, &first.id, "qualification").await.unwrap();

    let mut stream = watch(&app, after(0)).await;
    let replayed = take(&mut stream, 3).await;
    assert_eq!(
        replayed.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let moved = &replayed[2];
    assert_eq!(moved.lead_id, first.id);
    assert_eq!(
        (moved.from_stage.as_str(), moved.to_stage.as_str()),
        ("lead_generation", "qualification")
    );
    assert_eq!(moved.lead.as_ref().unwrap().stage, "qualification");
    assert!(!moved.actor.is_empty());
    assert_eq!(
        replayed[0].from_stage, "",
        "creation events have no from_stage"
    );

    // Live moves while the stream is open continue the sequence with no gap.
    let movers = (0..4).map(|i| {
        let app_leads = app.leads.clone();
        tokio::spawn(async move {
            let mut client = app_leads;
            let lead = client
                .create_lead(pb::CreateLeadRequest {
                    lead: Some(qualified(&format!("live {i}"))),
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            client
                .move_lead(pb::MoveLeadRequest {
                    id: lead.id,
                    stage: "qualification".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        })
    });
    futures::future::join_all(movers).await;
    let live = take(&mut stream, 8).await;
    assert_eq!(
        live.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (4..=11).collect::<Vec<_>>()
    );
}

async fn unset_after_sequence_streams_new_events_only(app: TestApp) {
    create(&app, new_lead("before")).await;
    let mut stream = watch(&app, pb::WatchStageChangesRequest::default()).await;
    let later = create(&app, new_lead("after")).await;
    let event = next_event(&mut stream).await;
    assert_eq!(event.sequence, 2);
    assert_eq!(event.lead_id, later.id);
}

async fn filters_are_applied_on_the_server(app: TestApp) {
    let sams = create(
        &app,
        pb::Lead {
            owner: "sam".into(),
            ..qualified("sam's")
        },
    )
    .await;
    let kims = create(
        &app,
        pb::Lead {
            owner: "kim".into(),
            ..qualified("kim's")
        },
    )
    .await;
    move_to(&app, &sams.id, "qualification").await.unwrap();
    move_to(&app, &kims.id, "qualification").await.unwrap();
    move_to(&app, &kims.id, "lead_generation").await.unwrap();

    let mut by_owner = watch(
        &app,
        pb::WatchStageChangesRequest {
            owner: "kim".into(),
            ..after(0)
        },
    )
    .await;
    let kim_events = take(&mut by_owner, 3).await;
    assert!(kim_events.iter().all(|e| e.lead_id == kims.id));

    let mut by_stage = watch(
        &app,
        pb::WatchStageChangesRequest {
            stages: vec!["qualification".into()],
            pipeline_id: "default".into(),
            ..after(0)
        },
    )
    .await;
    let entered = take(&mut by_stage, 2).await;
    assert_eq!(
        entered.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![3, 4]
    );

    let mut by_lead = watch(
        &app,
        pb::WatchStageChangesRequest {
            lead_id: sams.id.clone(),
            ..after(0)
        },
    )
    .await;
    let sam_events = take(&mut by_lead, 2).await;
    assert_eq!(
        sam_events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 3]
    );
    // The next event of that lead arrives live; other leads' events in between are skipped.
    move_to(&app, &kims.id, "qualification").await.unwrap();
    move_to(&app, &sams.id, "lead_generation").await.unwrap();
    assert_eq!(next_event(&mut by_lead).await.sequence, 7);

    let status = app
        .leads
        .clone()
        .watch_stage_changes(pb::WatchStageChangesRequest {
            stages: vec!["Not A Stage".into()],
            lead_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&status),
        vec!["stages[0]".to_string(), "lead_id".to_string()]
    );
}

async fn concurrent_movers_and_random_reconnects_lose_nothing(app: TestApp) {
    const MOVERS: usize = 8;
    const MOVES_EACH: usize = 15;
    let total = (MOVERS * (MOVES_EACH + 1)) as i64;

    let subscribers = (0..3).map(|_| {
        let addr = app.addr;
        tokio::spawn(async move {
            let mut client = pb::lead_service_client::LeadServiceClient::new(connect(addr).await);
            let mut seen = Vec::new();
            let mut last = 0;
            while last < total {
                let mut stream = client
                    .watch_stage_changes(after(last))
                    .await
                    .expect("resume")
                    .into_inner();
                let budget = rand::rng().random_range(1..25);
                for _ in 0..budget {
                    let event = next_event(&mut stream).await;
                    seen.push(event.sequence);
                    last = event.sequence;
                    if last == total {
                        break;
                    }
                }
            }
            seen
        })
    });
    let subscribers: Vec<_> = subscribers.collect();

    let movers = (0..MOVERS).map(|i| {
        let app_leads = app.leads.clone();
        tokio::spawn(async move {
            let mut client = app_leads;
            let lead = client
                .create_lead(pb::CreateLeadRequest {
                    lead: Some(qualified(&format!("mover {i}"))),
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            for m in 0..MOVES_EACH {
                let stage = if m % 2 == 0 {
                    "qualification"
                } else {
                    "lead_generation"
                };
                client
                    .move_lead(pb::MoveLeadRequest {
                        id: lead.id.clone(),
                        stage: stage.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        })
    });
    for mover in futures::future::join_all(movers).await {
        mover.unwrap();
    }
    for subscriber in futures::future::join_all(subscribers).await {
        let seen = subscriber.unwrap();
        assert_eq!(
            seen,
            (1..=total).collect::<Vec<_>>(),
            "every event exactly once, in order"
        );
    }
}

async fn slow_consumer_neither_blocks_others_nor_loses_events(app: TestApp) {
    const EVENTS: usize = 2000;
    let mut slow = watch(&app, after(0)).await;
    let mut fast = watch(&app, after(0)).await;
    let producer = {
        let app_leads = app.leads.clone();
        tokio::spawn(async move {
            let mut client = app_leads;
            for i in 0..EVENTS {
                client
                    .create_lead(pb::CreateLeadRequest {
                        lead: Some(new_lead(&format!("bulk {i}"))),
                        request_id: String::new(),
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let fast_events = take(&mut fast, EVENTS).await;
    producer.await.unwrap();
    assert_eq!(fast_events.last().unwrap().sequence, EVENTS as i64);

    // The slow subscriber fell far behind the in-memory fan-out; it is served from the outbox.
    let slow_events = take(&mut slow, EVENTS).await;
    assert_eq!(
        slow_events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=EVENTS as i64).collect::<Vec<_>>()
    );
}

async fn shutdown_ends_streams_with_unavailable(app: TestApp) {
    create(&app, new_lead("one")).await;
    let mut stream = watch(&app, after(0)).await;
    assert_eq!(next_event(&mut stream).await.sequence, 1);
    let stopped = tokio::time::timeout(WAIT, app.stop());
    let (_, message) = tokio::join!(stopped, tokio::time::timeout(WAIT, stream.message()));
    let status = message.expect("stream ends in time").unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("after_sequence = 1"),
        "{}",
        status.message()
    );
}

async fn expired_and_future_sequences_are_out_of_range(app: TestApp) {
    let url = app.database_url.clone();
    let backend = app.backend;
    let dir = app.stop().await;
    let mut settings = settings_for(&url);
    settings.outbox_retention = Duration::from_secs(3600);
    settings.maintenance_interval = Duration::from_millis(50);
    let app = spawn_app_with(backend, settings, dir).await;
    for i in 0..3 {
        create(&app, new_lead(&format!("short-lived {i}"))).await;
    }
    // Two hours later the three events have expired; the next one has an hour to live.
    app.clock.advance(chrono::TimeDelta::hours(2));
    let deadline = Instant::now() + WAIT;
    use tonic_types::StatusExt;
    // Wait until the pruner has removed all three events.
    loop {
        let result = app.leads.clone().watch_stage_changes(after(0)).await;
        if let Err(status) = &result {
            assert_eq!(status.code(), Code::OutOfRange);
            let info = status.get_details_error_info().expect("ErrorInfo detail");
            assert_eq!(info.reason, "SEQUENCE_EXPIRED");
            let oldest = info.metadata.get("oldest_available_sequence").cloned();
            if oldest.as_deref() == Some("4") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "events were never pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Resuming from the newest sequence still works: nothing after it was lost.
    let mut stream = watch(&app, after(3)).await;
    create(&app, new_lead("fresh")).await;
    assert_eq!(next_event(&mut stream).await.sequence, 4);

    let future = app
        .leads
        .clone()
        .watch_stage_changes(after(1000))
        .await
        .unwrap_err();
    assert_eq!(future.code(), Code::OutOfRange);
}

/// The first stream of a tenant starts the tenant's tailer, which must fan out everything after
/// what that stream saw, however late it starts: a commit right after the stream opens is
/// delivered by its wake-up alone, with the safety-net poll an hour away.
async fn commits_reach_new_streams_without_polling(app: TestApp) {
    let url = app.database_url.clone();
    let backend = app.backend;
    let dir = app.stop().await;
    let mut settings = settings_for(&url);
    settings.event_poll_interval = Duration::from_secs(3600);
    let app = spawn_app_with(backend, settings, dir).await;

    let mut stream = watch(&app, pb::WatchStageChangesRequest::default()).await;
    let lead = create(&app, qualified("right after the stream opened")).await;
    let created = next_event(&mut stream).await;
    assert_eq!((created.sequence, created.lead_id), (1, lead.id.clone()));

    // A second stream joins the running tailer, replays from the outbox and then goes live.
    let mut replaying = watch(&app, after(0)).await;
    assert_eq!(next_event(&mut replaying).await.sequence, 1);
    move_to(&app, &lead.id, "qualification").await.unwrap();
    assert_eq!(next_event(&mut stream).await.sequence, 2);
    assert_eq!(next_event(&mut replaying).await.sequence, 2);
}

/// The documented live signal: a stream's response headers are sent only once its subscription
/// is registered, so a client that has them and then moves a lead is sure to see the move, with
/// no replay position (`after_sequence` unset) to fall back on. Repeated, because a server that
/// sent headers first would lose the race only some of the time.
async fn response_headers_mean_the_subscription_is_live(app: TestApp) {
    let lead = create(&app, qualified("live signal")).await;
    let stages = ["qualification", "lead_generation"];
    for round in 0..20 {
        let mut stream = app
            .leads
            .clone()
            .watch_stage_changes(pb::WatchStageChangesRequest {
                lead_id: lead.id.clone(),
                ..Default::default()
            })
            .await
            .expect("response headers")
            .into_inner();
        let to = stages[round % 2];
        move_to(&app, &lead.id, to).await.expect("move");
        let event = next_event(&mut stream).await;
        assert_eq!(
            (event.lead_id.as_str(), event.to_stage.as_str()),
            (lead.id.as_str(), to)
        );
    }
}
