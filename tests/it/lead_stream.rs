//! WatchLeadChanges: every write of a lead, with the lead before and after, from the outbox that
//! WatchStageChanges reads, with the same sequence numbers.

use crate::common;

use std::time::Duration;

use common::*;
use leadpipe::grpc::pb;
use prost_types::FieldMask;
use tonic::{Code, Streaming};

on_both_backends!(
    every_write_is_one_event_with_the_lead_before_and_after,
    filters_run_on_the_server,
    resuming_after_a_restart_delivers_every_later_event_once,
    live_streams_of_both_kinds_share_each_event,
);

const WAIT: Duration = Duration::from_secs(20);

async fn watch(
    app: &TestApp,
    request: pb::WatchLeadChangesRequest,
) -> Streaming<pb::LeadChangeEvent> {
    app.leads
        .clone()
        .watch_lead_changes(request)
        .await
        .expect("watch")
        .into_inner()
}

fn after(sequence: i64) -> pb::WatchLeadChangesRequest {
    pb::WatchLeadChangesRequest {
        after_sequence: Some(sequence),
        ..Default::default()
    }
}

async fn next(stream: &mut Streaming<pb::LeadChangeEvent>) -> pb::LeadChangeEvent {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event arrives in time")
        .expect("stream healthy")
        .expect("stream open")
}

fn paths(event: &pb::LeadChangeEvent) -> Vec<&str> {
    event
        .changed_fields
        .as_ref()
        .map(|m| m.paths.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

async fn update(app: &TestApp, lead: pb::Lead, paths: &[&str]) -> pb::Lead {
    app.leads
        .clone()
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                etag: String::new(),
                ..lead
            }),
            update_mask: Some(FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        })
        .await
        .expect("update")
        .into_inner()
}

fn qualified(title: &str) -> pb::Lead {
    pb::Lead {
        contact_name: "Dana".into(),
        owner: "sam".into(),
        amount: Some(money("EUR", 100)),
        ..new_lead(title)
    }
}

async fn every_write_is_one_event_with_the_lead_before_and_after(app: TestApp) {
    let mut leads = watch(&app, after(0)).await;
    let mut stages = app
        .leads
        .clone()
        .watch_stage_changes(pb::WatchStageChangesRequest {
            after_sequence: Some(0),
            ..Default::default()
        })
        .await
        .expect("watch stages")
        .into_inner();

    let created = create(&app, qualified("Acme")).await;
    let mut change = created.clone();
    change.amount = Some(money("EUR", 250));
    let raised = update(&app, change, &["amount"]).await;
    let moved = move_to(&app, &created.id, "qualification")
        .await
        .expect("move");
    app.leads
        .clone()
        .delete_lead(pb::DeleteLeadRequest {
            id: created.id.clone(),
            etag: String::new(),
        })
        .await
        .expect("delete");

    use pb::LeadRevisionKind as K;
    let events = [
        next(&mut leads).await,
        next(&mut leads).await,
        next(&mut leads).await,
        next(&mut leads).await,
    ];
    assert_eq!(
        events
            .iter()
            .map(|e| (e.sequence, e.kind))
            .collect::<Vec<_>>(),
        [
            (1, K::Created as i32),
            (2, K::Updated as i32),
            (3, K::Moved as i32),
            (4, K::Deleted as i32)
        ]
    );
    assert_eq!(events[0].lead.as_ref(), Some(&created));
    assert_eq!(events[0].previous_lead, None);
    assert_eq!(events[1].previous_lead.as_ref(), Some(&created));
    assert_eq!(events[1].lead.as_ref(), Some(&raised));
    assert_eq!(paths(&events[1]), ["amount"]);
    assert_eq!(events[2].previous_lead.as_ref(), Some(&raised));
    assert_eq!(events[2].lead.as_ref(), Some(&moved));
    assert_eq!(paths(&events[2]), ["stage"]);
    assert_eq!(events[3].lead.as_ref(), Some(&moved), "the last state");
    assert_eq!(events[1].change_time, raised.update_time);
    assert!(events.iter().all(|e| !e.actor.is_empty()));

    // The stage stream carries only the creation and the move, under the same sequences.
    let first = next_event(&mut stages).await;
    let second = next_event(&mut stages).await;
    assert_eq!(
        [
            (first.sequence, first.to_stage.as_str()),
            (second.sequence, second.to_stage.as_str())
        ],
        [(1, "lead_generation"), (3, "qualification")]
    );
    let quiet = tokio::time::timeout(Duration::from_millis(1500), stages.message()).await;
    assert!(
        quiet.is_err(),
        "no stage event for the update or the delete: {quiet:?}"
    );

    // And the revisions carry the same sequences' writes.
    let revisions = crate::revisions::revisions(&app, &created.id).await;
    assert_eq!(revisions.len(), 4);
}

async fn filters_run_on_the_server(app: TestApp) {
    let mut closes = watch(
        &app,
        pb::WatchLeadChangesRequest {
            after_sequence: Some(0),
            changed_fields: Some(FieldMask {
                paths: vec!["expected_close_time".into()],
            }),
            ..Default::default()
        },
    )
    .await;
    let mut kims = watch(
        &app,
        pb::WatchLeadChangesRequest {
            after_sequence: Some(0),
            owner: "kim".into(),
            ..Default::default()
        },
    )
    .await;
    let lead = create(&app, qualified("Filtered")).await;
    let mut lead_only = watch(
        &app,
        pb::WatchLeadChangesRequest {
            after_sequence: Some(0),
            lead_id: lead.id.clone(),
            ..Default::default()
        },
    )
    .await;
    create(&app, qualified("Other")).await;
    let mut change = lead.clone();
    change.amount = Some(money("EUR", 300));
    let raised = update(&app, change, &["amount"]).await;
    let mut change = raised.clone();
    change.expected_close_time = Some(prost_types::Timestamp {
        seconds: 1_900_000_000,
        nanos: 0,
    });
    let dated = update(&app, change, &["expected_close_time"]).await;
    let mut change = dated.clone();
    change.owner = "kim".into();
    let handed = update(&app, change, &["owner"]).await;

    let close = next(&mut closes).await;
    assert_eq!(paths(&close), ["expected_close_time"]);
    assert_eq!(close.lead.as_ref(), Some(&dated));
    assert_eq!(close.previous_lead.as_ref(), Some(&raised));
    let kim = next(&mut kims).await;
    assert_eq!(
        (kim.lead.as_ref(), paths(&kim)),
        (Some(&handed), vec!["owner"])
    );
    let mine: Vec<i64> = [
        next(&mut lead_only).await,
        next(&mut lead_only).await,
        next(&mut lead_only).await,
        next(&mut lead_only).await,
    ]
    .iter()
    .map(|e| e.sequence)
    .collect();
    assert_eq!(
        mine,
        [1, 3, 4, 5],
        "sequence 2 is the other lead's creation"
    );

    let refused = app
        .leads
        .clone()
        .watch_lead_changes(pb::WatchLeadChangesRequest {
            changed_fields: Some(FieldMask {
                paths: vec!["amount".into(), "etag".into()],
            }),
            lead_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&refused), ["lead_id", "changed_fields"]);
}

async fn resuming_after_a_restart_delivers_every_later_event_once(app: TestApp) {
    let lead = create(&app, qualified("Restarted")).await;
    let mut change = lead.clone();
    change.title = "Restarted once".into();
    update(&app, change, &["title"]).await;
    let mut stream = watch(&app, after(0)).await;
    let seen = [next(&mut stream).await, next(&mut stream).await];
    assert_eq!(seen.map(|e| e.sequence), [1, 2]);
    drop(stream);

    let (backend, url) = (app.backend, app.database_url.clone());
    let dir = app.stop().await;
    let app = spawn_app_on(backend, url, dir).await;
    let mut stream = watch(&app, after(2)).await;
    let mut change = lead.clone();
    change.title = "Restarted twice".into();
    update(&app, change, &["title"]).await;
    move_to(&app, &lead.id, "qualification")
        .await
        .expect("move");
    let later = [next(&mut stream).await, next(&mut stream).await];
    assert_eq!(
        later
            .iter()
            .map(|e| (e.sequence, e.kind))
            .collect::<Vec<_>>(),
        [
            (3, pb::LeadRevisionKind::Updated as i32),
            (4, pb::LeadRevisionKind::Moved as i32)
        ]
    );
    assert_eq!(
        later[0].previous_lead.as_ref().map(|l| l.title.as_str()),
        Some("Restarted once")
    );
    let quiet = tokio::time::timeout(Duration::from_millis(1500), stream.message()).await;
    assert!(quiet.is_err(), "nothing more: {quiet:?}");
}

/// Live streams receive each event as bytes encoded once per kind of stream and shared: every
/// stream of either kind, whatever its filter, decodes the message of its own kind.
async fn live_streams_of_both_kinds_share_each_event(app: TestApp) {
    let watch_stages = |stages: &[&str]| {
        let request = pb::WatchStageChangesRequest {
            stages: stages.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut client = app.leads.clone();
        async move {
            client
                .watch_stage_changes(request)
                .await
                .expect("watch stages")
                .into_inner()
        }
    };
    let mut every_stage = Vec::new();
    for _ in 0..3 {
        every_stage.push(watch_stages(&[]).await);
    }
    let mut qualification = watch_stages(&["qualification"]).await;
    let mut every_write = Vec::new();
    for _ in 0..2 {
        every_write.push(watch(&app, pb::WatchLeadChangesRequest::default()).await);
    }

    let created = create(&app, qualified("Acme")).await;
    let moved = move_to(&app, &created.id, "qualification")
        .await
        .expect("move");

    for stream in &mut every_stage {
        let first = next_event(stream).await;
        let second = next_event(stream).await;
        assert_eq!(first.lead.as_ref(), Some(&created));
        assert_eq!(
            (first.from_stage.as_str(), first.to_stage.as_str()),
            ("", "lead_generation")
        );
        assert_eq!(second.lead.as_ref(), Some(&moved));
        assert_eq!(
            (second.from_stage.as_str(), second.to_stage.as_str()),
            ("lead_generation", "qualification")
        );
        assert_eq!(second.sequence, first.sequence + 1);
    }
    let only = next_event(&mut qualification).await;
    assert_eq!(only.lead.as_ref(), Some(&moved));
    assert_eq!(only.to_stage, "qualification");
    for stream in &mut every_write {
        let first = next(stream).await;
        let second = next(stream).await;
        assert_eq!(first.lead.as_ref(), Some(&created));
        assert_eq!(first.previous_lead, None);
        assert_eq!(second.previous_lead.as_ref(), Some(&created));
        assert_eq!(second.lead.as_ref(), Some(&moved));
        assert_eq!(paths(&second), ["stage"]);
    }
}
