//! LeadService.MoveLead, CheckMove and ListStageChanges against the default pipeline's transition
//! policy, through the real gRPC API.

use crate::common;

use std::collections::HashSet;

use common::*;
use leadpipe::grpc::pb;
use tonic::Code;

on_both_backends!(
    walk_refuses_then_allows_every_default_criterion,
    closed_lost_needs_a_lost_reason_and_is_open_to_every_open_stage,
    transition_rules_of_the_default_pipeline,
    unknown_and_malformed_targets_are_precise_errors,
    move_checks_the_etag,
    move_retries_with_one_request_id_move_once,
    concurrent_moves_with_one_etag_let_exactly_one_win,
    concurrent_moves_without_etag_keep_the_history_chain,
    concurrent_writes_that_fail_leave_no_trace_and_sequences_stay_gap_free,
    a_move_whose_event_cannot_be_stored_leaves_nothing,
    a_create_whose_event_cannot_be_stored_leaves_nothing,
    stage_changes_list_oldest_first_in_pages,
    history_is_deleted_with_the_lead,
);

// ---- helpers ---------------------------------------------------------------------------

fn eur(units: i64) -> Option<pb::Money> {
    Some(money("EUR", units))
}

fn timeline() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: 1_800_000_000,
        nanos: 0,
    })
}

/// A lead that meets every criterion of the default pipeline.
fn qualified_lead(title: &str) -> pb::Lead {
    pb::Lead {
        contact_name: "Dana Smith".into(),
        amount: eur(5_000),
        bant: Some(pb::Bant {
            budget: eur(10_000),
            authority: "CFO".into(),
            need: "Faster invoicing".into(),
            timeline: timeline(),
        }),
        lost_reason: "Went with a competitor".into(),
        ..new_lead(title)
    }
}

fn micros(ts: &Option<prost_types::Timestamp>) -> i64 {
    let ts = ts.as_ref().expect("timestamp is set");
    ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1_000
}

fn transition(from: &str, to: &str) -> (String, String) {
    violation("TRANSITION", &format!("{from}->{to}"))
}

fn criteria(ids: &[&str]) -> Vec<(String, String)> {
    ids.iter()
        .map(|id| violation("STAGE_CRITERION", id))
        .collect()
}

/// `(type, subject, description)` of each PreconditionFailure violation.
fn precondition_details(status: &tonic::Status) -> Vec<(String, String, String)> {
    use tonic_types::StatusExt;
    status
        .get_details_precondition_failure()
        .map(|p| {
            p.violations
                .into_iter()
                .map(|v| (v.r#type, v.subject, v.description))
                .collect()
        })
        .unwrap_or_default()
}

async fn move_with(app: &TestApp, request: pb::MoveLeadRequest) -> Result<pb::Lead, tonic::Status> {
    app.leads
        .clone()
        .move_lead(request)
        .await
        .map(|r| r.into_inner())
}

/// CheckMove refuses with exactly `expected`; MoveLead then refuses with FAILED_PRECONDITION and
/// the very same violations (descriptions included), and neither writes anything.
async fn assert_refused(app: &TestApp, id: &str, stage: &str, expected: &[(String, String)]) {
    let before = get_lead(app, id).await;
    let history = stage_changes(app, id).await;

    let check = check_move(app, id, stage).await;
    assert!(
        !check.allowed,
        "CheckMove to {stage} must refuse: {check:?}"
    );
    assert_eq!(check_violations(&check), expected, "CheckMove to {stage}");
    assert!(
        check.violations.iter().all(|v| !v.description.is_empty()),
        "every violation explains itself: {check:?}"
    );

    let status = move_to(app, id, stage).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        precondition_violations(&status),
        expected,
        "MoveLead to {stage}"
    );
    let dry_run: Vec<(String, String, String)> = check
        .violations
        .iter()
        .map(|v| (v.r#type.clone(), v.subject.clone(), v.description.clone()))
        .collect();
    assert_eq!(
        precondition_details(&status),
        dry_run,
        "CheckMove predicts MoveLead exactly"
    );

    assert_eq!(
        get_lead(app, id).await,
        before,
        "a refused move writes nothing"
    );
    assert_eq!(
        stage_changes(app, id).await,
        history,
        "neither CheckMove nor a refused MoveLead records a change"
    );
}

/// CheckMove allows the move without writing; MoveLead then makes it and records one change.
async fn assert_moves(app: &TestApp, id: &str, stage: &str) -> pb::Lead {
    let before = get_lead(app, id).await;
    let history = stage_changes(app, id).await;

    let check = check_move(app, id, stage).await;
    assert!(check.allowed, "CheckMove to {stage} must allow: {check:?}");
    assert!(check.violations.is_empty(), "{check:?}");
    assert_eq!(get_lead(app, id).await, before, "CheckMove writes nothing");
    assert_eq!(
        stage_changes(app, id).await,
        history,
        "CheckMove records nothing"
    );

    let moved = move_to(app, id, stage)
        .await
        .unwrap_or_else(|e| panic!("move {} -> {stage}: {e:?}", before.stage));
    assert_eq!(moved.stage, stage);
    assert_ne!(moved.etag, before.etag);
    assert!(micros(&moved.stage_enter_time) > micros(&before.stage_enter_time));
    assert_eq!(moved.stage_enter_time, moved.update_time);
    assert_eq!(
        get_lead(app, id).await,
        moved,
        "MoveLead returns what is stored"
    );

    let after = stage_changes(app, id).await;
    assert_eq!(after.len(), history.len() + 1, "one change recorded");
    assert_eq!(after[..history.len()], history[..]);
    let last = after.last().unwrap();
    assert_eq!(
        (last.from_stage.as_str(), last.to_stage.as_str()),
        (before.stage.as_str(), stage)
    );
    assert_eq!(last.change_time, moved.stage_enter_time);
    moved
}

/// Each change leaves the stage the previous one entered; the first is the creation; sequences
/// strictly increase; the lead sits where the last change put it.
fn assert_unbroken_chain(changes: &[pb::StageChange], lead: &pb::Lead) {
    assert!(!changes.is_empty());
    assert_eq!(
        changes[0].from_stage, "",
        "the first change is the creation"
    );
    assert_eq!(changes[0].to_stage, "lead_generation");
    for pair in changes.windows(2) {
        assert_eq!(
            pair[1].from_stage, pair[0].to_stage,
            "broken chain: {:?} then {:?}",
            pair[0], pair[1]
        );
        assert!(
            pair[1].sequence > pair[0].sequence,
            "sequences must increase: {changes:#?}"
        );
    }
    for change in changes {
        assert_eq!(change.lead_id, lead.id);
        assert_eq!(change.pipeline_id, lead.pipeline_id);
    }
    assert_eq!(changes.last().unwrap().to_stage, lead.stage);
}

// ---- tests -----------------------------------------------------------------------------

async fn walk_refuses_then_allows_every_default_criterion(app: TestApp) {
    let lead = create(&app, new_lead("Walk")).await;
    let id = lead.id.clone();
    assert_eq!(lead.stage, "lead_generation");
    assert_eq!(lead.close_time, None);

    // qualification: contact_known
    assert_refused(&app, &id, "qualification", &criteria(&["contact_known"])).await;
    let current = get_lead(&app, &id).await;
    update_lead(
        &app,
        pb::Lead {
            id: id.clone(),
            etag: current.etag,
            contact_name: "Dana Smith".into(),
            ..Default::default()
        },
        &["contact_name"],
    )
    .await;
    let moved = assert_moves(&app, &id, "qualification").await;
    assert!((moved.win_probability - 0.20).abs() < 1e-9);
    assert_eq!(moved.close_time, None);

    // proposal: the four BANT criteria, in order, shrinking one update at a time.
    let bant = [
        "bant_budget",
        "bant_authority",
        "bant_need",
        "bant_timeline",
    ];
    assert_refused(&app, &id, "proposal", &criteria(&bant)).await;
    let fills: [(&str, pb::Bant); 4] = [
        (
            "bant.budget",
            pb::Bant {
                budget: eur(25_000),
                ..Default::default()
            },
        ),
        (
            "bant.authority",
            pb::Bant {
                authority: "Dana Smith, VP Sales".into(),
                ..Default::default()
            },
        ),
        (
            "bant.need",
            pb::Bant {
                need: "Faster invoicing".into(),
                ..Default::default()
            },
        ),
        (
            "bant.timeline",
            pb::Bant {
                timeline: timeline(),
                ..Default::default()
            },
        ),
    ];
    for (filled, (path, value)) in fills.into_iter().enumerate() {
        update_lead(
            &app,
            pb::Lead {
                id: id.clone(),
                bant: Some(value),
                ..Default::default()
            },
            &[path],
        )
        .await;
        let remaining = criteria(&bant[filled + 1..]);
        if remaining.is_empty() {
            break;
        }
        assert_refused(&app, &id, "proposal", &remaining).await;
    }
    let moved = assert_moves(&app, &id, "proposal").await;
    assert!((moved.win_probability - 0.40).abs() < 1e-9);

    // negotiation: amount_positive
    assert_refused(&app, &id, "negotiation", &criteria(&["amount_positive"])).await;
    update_lead(
        &app,
        pb::Lead {
            id: id.clone(),
            amount: eur(18_000),
            ..Default::default()
        },
        &["amount"],
    )
    .await;
    let moved = assert_moves(&app, &id, "negotiation").await;
    assert!((moved.win_probability - 0.70).abs() < 1e-9);

    // closed_won: amount_positive again; clearing the amount makes it unmet.
    update_lead(
        &app,
        pb::Lead {
            id: id.clone(),
            amount: None,
            ..Default::default()
        },
        &["amount"],
    )
    .await;
    assert_refused(&app, &id, "closed_won", &criteria(&["amount_positive"])).await;
    update_lead(
        &app,
        pb::Lead {
            id: id.clone(),
            amount: eur(18_000),
            ..Default::default()
        },
        &["amount"],
    )
    .await;
    let won = assert_moves(&app, &id, "closed_won").await;
    assert!((won.win_probability - 1.0).abs() < 1e-9);
    assert_eq!(
        won.close_time, won.stage_enter_time,
        "entering a won stage closes the lead"
    );

    let history = stage_changes(&app, &id).await;
    assert_eq!(
        stage_path(&history),
        [
            ("", "lead_generation"),
            ("lead_generation", "qualification"),
            ("qualification", "proposal"),
            ("proposal", "negotiation"),
            ("negotiation", "closed_won"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string())),
        "only the accepted moves are recorded"
    );
    assert_unbroken_chain(&history, &won);
}

async fn closed_lost_needs_a_lost_reason_and_is_open_to_every_open_stage(app: TestApp) {
    let lead = create(&app, new_lead("Lost early")).await;
    assert_refused(&app, &lead.id, "closed_lost", &criteria(&["lost_reason"])).await;
    update_lead(
        &app,
        pb::Lead {
            id: lead.id.clone(),
            lost_reason: "No budget this year".into(),
            ..Default::default()
        },
        &["lost_reason"],
    )
    .await;
    let lost = assert_moves(&app, &lead.id, "closed_lost").await;
    assert_eq!(lost.win_probability, 0.0);
    assert_eq!(
        lost.close_time, lost.stage_enter_time,
        "entering a lost stage closes the lead"
    );

    // A whitespace-only reason does not count.
    let blank = create(
        &app,
        pb::Lead {
            lost_reason: "   ".into(),
            ..new_lead("Blank reason")
        },
    )
    .await;
    assert_refused(&app, &blank.id, "closed_lost", &criteria(&["lost_reason"])).await;

    // From every open stage, closed_lost is one allowed move away.
    let lead = create(&app, qualified_lead("Lost late")).await;
    for stage in ["qualification", "proposal", "negotiation"] {
        let check = check_move(&app, &lead.id, "closed_lost").await;
        assert!(
            check.allowed,
            "closed_lost from {:?}: {check:?}",
            get_lead(&app, &lead.id).await.stage
        );
        assert_moves(&app, &lead.id, stage).await;
    }
    let lost = assert_moves(&app, &lead.id, "closed_lost").await;
    assert!(lost.close_time.is_some());
}

async fn transition_rules_of_the_default_pipeline(app: TestApp) {
    let lead = create(&app, qualified_lead("Rules")).await;
    let id = lead.id.clone();

    // Skipping forward over open stages is refused, even when every criterion is met.
    assert_refused(
        &app,
        &id,
        "proposal",
        &[transition("lead_generation", "proposal")],
    )
    .await;
    assert_refused(
        &app,
        &id,
        "negotiation",
        &[transition("lead_generation", "negotiation")],
    )
    .await;
    // Winning is only possible from the last open stage.
    assert_refused(
        &app,
        &id,
        "closed_won",
        &[transition("lead_generation", "closed_won")],
    )
    .await;
    // Moving to the current stage is not a move.
    assert_refused(
        &app,
        &id,
        "lead_generation",
        &[transition("lead_generation", "lead_generation")],
    )
    .await;

    // Transition first, then the unmet criteria of the target in definition order.
    let bare = create(&app, new_lead("Bare")).await;
    let mut expected = vec![transition("lead_generation", "proposal")];
    expected.extend(criteria(&[
        "bant_budget",
        "bant_authority",
        "bant_need",
        "bant_timeline",
    ]));
    assert_refused(&app, &bare.id, "proposal", &expected).await;

    // Backward moves are allowed and recorded.
    assert_moves(&app, &id, "qualification").await;
    let back = assert_moves(&app, &id, "lead_generation").await;
    assert!((back.win_probability - 0.10).abs() < 1e-9);
    assert_eq!(back.close_time, None);
    assert_moves(&app, &id, "qualification").await;
    assert_moves(&app, &id, "proposal").await;
    assert_moves(&app, &id, "negotiation").await;
    let won = assert_moves(&app, &id, "closed_won").await;
    assert!(won.close_time.is_some());

    // A closed lead cannot move to another closed stage, or stay where it is.
    assert_refused(
        &app,
        &id,
        "closed_lost",
        &[transition("closed_won", "closed_lost")],
    )
    .await;
    assert_refused(
        &app,
        &id,
        "closed_won",
        &[transition("closed_won", "closed_won")],
    )
    .await;

    // Reopening into an open stage is allowed and makes the lead open again.
    let reopened = assert_moves(&app, &id, "negotiation").await;
    assert_eq!(reopened.close_time, None, "reopening clears close_time");
    assert!((reopened.win_probability - 0.70).abs() < 1e-9);

    let history = stage_changes(&app, &id).await;
    assert_eq!(
        stage_path(&history),
        [
            ("", "lead_generation"),
            ("lead_generation", "qualification"),
            ("qualification", "lead_generation"),
            ("lead_generation", "qualification"),
            ("qualification", "proposal"),
            ("proposal", "negotiation"),
            ("negotiation", "closed_won"),
            ("closed_won", "negotiation"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_unbroken_chain(&history, &reopened);

    // closed_lost → qualification: reopened, close_time cleared, criteria of the target apply.
    let lost = create(
        &app,
        pb::Lead {
            lost_reason: "Timing".into(),
            ..new_lead("Reopen me")
        },
    )
    .await;
    let closed = assert_moves(&app, &lost.id, "closed_lost").await;
    assert!(closed.close_time.is_some());
    assert_refused(
        &app,
        &lost.id,
        "qualification",
        &criteria(&["contact_known"]),
    )
    .await;
    update_lead(
        &app,
        pb::Lead {
            id: lost.id.clone(),
            contact_email: "dana@acme.example".into(),
            ..Default::default()
        },
        &["contact_email"],
    )
    .await;
    let reopened = assert_moves(&app, &lost.id, "qualification").await;
    assert_eq!(reopened.close_time, None, "reopening clears close_time");
    assert!((reopened.win_probability - 0.20).abs() < 1e-9);
    let fetched = get_lead(&app, &lost.id).await;
    assert_eq!(
        fetched.close_time, None,
        "and the cleared close_time is stored"
    );
}

async fn unknown_and_malformed_targets_are_precise_errors(app: TestApp) {
    let lead = create(&app, qualified_lead("Targets")).await;
    let id = lead.id.clone();

    // A well-formed key that is not a stage of the lead's pipeline.
    assert_refused(&app, &id, "nope", &[transition("lead_generation", "nope")]).await;
    let check = check_move(&app, &id, "nope").await;
    assert!(
        check.violations[0].description.contains("does not exist"),
        "{check:?}"
    );

    // A malformed key is a bad argument, for both calls.
    let status = move_to(&app, &id, "Not A Key").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_request_fields(&status), vec!["stage".to_string()]);
    let status = app
        .leads
        .clone()
        .check_move(pb::CheckMoveRequest {
            id: id.clone(),
            stage: "Not A Key".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_request_fields(&status), vec!["stage".to_string()]);
    let status = move_to(&app, &id, "").await.unwrap_err();
    assert_eq!(bad_request_fields(&status), vec!["stage".to_string()]);

    // Every bad field of a MoveLead at once.
    let status = move_with(
        &app,
        pb::MoveLeadRequest {
            id: "42".into(),
            stage: "Not A Key".into(),
            etag: "garbage".into(),
            request_id: "r".repeat(129),
            note: "n".repeat(2001),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: HashSet<String> = bad_request_fields(&status).into_iter().collect();
    let expected: HashSet<String> = ["id", "stage", "etag", "request_id", "note"]
        .map(String::from)
        .into();
    assert_eq!(fields, expected);

    // Unknown leads.
    let missing = uuid::Uuid::now_v7().to_string();
    let status = move_to(&app, &missing, "qualification").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = app
        .leads
        .clone()
        .check_move(pb::CheckMoveRequest {
            id: missing,
            stage: "qualification".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    assert_eq!(stage_changes(&app, &id).await.len(), 1, "nothing moved");
}

async fn move_checks_the_etag(app: TestApp) {
    let lead = create(&app, qualified_lead("Etag")).await;
    let renamed = update_lead(
        &app,
        pb::Lead {
            id: lead.id.clone(),
            title: "Etag, renamed".into(),
            ..Default::default()
        },
        &["title"],
    )
    .await;
    assert_ne!(renamed.etag, lead.etag);

    let stale = move_with(
        &app,
        pb::MoveLeadRequest {
            id: lead.id.clone(),
            stage: "qualification".into(),
            etag: lead.etag.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert_eq!(
        get_lead(&app, &lead.id).await,
        renamed,
        "the stale move wrote nothing"
    );
    assert_eq!(
        stage_changes(&app, &lead.id).await.len(),
        1,
        "and recorded nothing"
    );

    let moved = move_with(
        &app,
        pb::MoveLeadRequest {
            id: lead.id.clone(),
            stage: "qualification".into(),
            etag: renamed.etag.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("a move with the current etag succeeds");
    assert_eq!(moved.stage, "qualification");
    assert_ne!(moved.etag, renamed.etag);
    assert_eq!(stage_changes(&app, &lead.id).await.len(), 2);

    // The etag the move consumed is now stale itself.
    let again = move_with(
        &app,
        pb::MoveLeadRequest {
            id: lead.id.clone(),
            stage: "proposal".into(),
            etag: renamed.etag,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(again.code(), Code::Aborted, "{again:?}");
    assert_eq!(get_lead(&app, &lead.id).await, moved);

    let malformed = move_with(
        &app,
        pb::MoveLeadRequest {
            id: lead.id.clone(),
            stage: "proposal".into(),
            etag: "garbage".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&malformed), vec!["etag".to_string()]);
}

async fn move_retries_with_one_request_id_move_once(app: TestApp) {
    let lead = create(&app, qualified_lead("Idempotent move")).await;
    let request = pb::MoveLeadRequest {
        id: lead.id.clone(),
        stage: "qualification".into(),
        request_id: "move-once-1".into(),
        note: "first contact made".into(),
        ..Default::default()
    };
    let first = move_with(&app, request.clone()).await.expect("first call");
    let second = move_with(&app, request.clone()).await.expect("retry");
    assert_eq!(second, first, "a retry returns the first call's result");
    assert_eq!(first.stage, "qualification");
    let history = stage_changes(&app, &lead.id).await;
    assert_eq!(history.len(), 2, "the lead moved once: {history:#?}");

    // Ten concurrent retries of another move.
    let concurrent = pb::MoveLeadRequest {
        id: lead.id.clone(),
        stage: "proposal".into(),
        request_id: "move-once-2".into(),
        ..Default::default()
    };
    let calls = (0..10).map(|_| {
        let mut client = app.leads.clone();
        let request = concurrent.clone();
        tokio::spawn(async move { client.move_lead(request).await.map(|r| r.into_inner()) })
    });
    let results: Vec<pb::Lead> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().expect("every concurrent retry succeeds"))
        .collect();
    assert!(
        results.iter().all(|r| *r == results[0]),
        "one result for all retries"
    );
    assert_eq!(results[0].stage, "proposal");
    let after = stage_changes(&app, &lead.id).await;
    assert_eq!(after.len(), 3, "exactly one new row: {after:#?}");
    assert_eq!(after[2].from_stage, "qualification");
    assert_eq!(after[2].to_stage, "proposal");

    // A late retry of the first move replays its result and does not move the lead back.
    let late = move_with(&app, request.clone()).await.expect("late retry");
    assert_eq!(late, first);
    assert_eq!(get_lead(&app, &lead.id).await.stage, "proposal");
    assert_eq!(stage_changes(&app, &lead.id).await, after);

    // The same request_id with another request is refused and changes nothing.
    let reused = move_with(
        &app,
        pb::MoveLeadRequest {
            stage: "negotiation".into(),
            ..request.clone()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    let reused_note = move_with(
        &app,
        pb::MoveLeadRequest {
            note: "another note".into(),
            ..request
        },
    )
    .await
    .unwrap_err();
    assert_eq!(reused_note.code(), Code::AlreadyExists, "{reused_note:?}");
    assert_eq!(get_lead(&app, &lead.id).await.stage, "proposal");
    assert_eq!(stage_changes(&app, &lead.id).await, after);
}

async fn concurrent_moves_with_one_etag_let_exactly_one_win(app: TestApp) {
    let lead = create(
        &app,
        pb::Lead {
            contact_name: "Dana Smith".into(),
            ..new_lead("Contended")
        },
    )
    .await;
    let calls = (0..100).map(|_| {
        let mut client = app.leads.clone();
        let request = pb::MoveLeadRequest {
            id: lead.id.clone(),
            stage: "qualification".into(),
            etag: lead.etag.clone(),
            ..Default::default()
        };
        tokio::spawn(async move { client.move_lead(request).await.map(|r| r.into_inner()) })
    });
    let results = futures::future::join_all(calls).await;
    let mut winners = Vec::new();
    let mut aborted = 0;
    for result in results {
        match result.unwrap() {
            Ok(lead) => winners.push(lead),
            Err(status) if status.code() == Code::Aborted => aborted += 1,
            Err(status) => panic!("expected OK or ABORTED, got {status:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one move wins");
    assert_eq!(aborted, 99, "every other move sees a stale etag");

    let current = get_lead(&app, &lead.id).await;
    assert_eq!(current, winners[0]);
    assert_eq!(current.stage, "qualification");
    let history = stage_changes(&app, &lead.id).await;
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_unbroken_chain(&history, &current);
}

async fn concurrent_moves_without_etag_keep_the_history_chain(app: TestApp) {
    let lead = create(
        &app,
        pb::Lead {
            contact_name: "Dana Smith".into(),
            ..new_lead("Ping-pong")
        },
    )
    .await;
    let targets: Vec<&'static str> = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                "qualification"
            } else {
                "lead_generation"
            }
        })
        .collect();
    let calls = targets.iter().map(|&stage| {
        let mut client = app.leads.clone();
        let request = pb::MoveLeadRequest {
            id: lead.id.clone(),
            stage: stage.into(),
            note: format!("to {stage}"),
            ..Default::default()
        };
        tokio::spawn(async move { client.move_lead(request).await.map(|r| r.into_inner()) })
    });
    let results = futures::future::join_all(calls).await;
    let mut succeeded = 0;
    for (result, &target) in results.into_iter().zip(&targets) {
        match result.unwrap() {
            Ok(moved) => {
                assert_eq!(moved.stage, target);
                succeeded += 1;
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                // The lead was already there when this move was judged.
                assert_eq!(
                    precondition_violations(&status),
                    vec![transition(target, target)],
                    "{status:?}"
                );
            }
            Err(status) if status.code() == Code::Aborted => {}
            Err(status) => panic!("a concurrent move failed imprecisely: {status:?}"),
        }
    }
    assert!(succeeded >= 1, "at least the first move succeeds");

    let current = get_lead(&app, &lead.id).await;
    let history = stage_changes(&app, &lead.id).await;
    assert_eq!(
        history.len(),
        succeeded + 1,
        "one change per successful move: {history:#?}"
    );
    assert_unbroken_chain(&history, &current);
    for change in &history[1..] {
        assert_eq!(change.note, format!("to {}", change.to_stage));
    }
}

/// Writes that commit together (on SQLite, in one batch of savepoints) while some of them are
/// refused: a refused move leaves no stage change, the others are all stored, a retried create
/// creates one lead, and the sequences of what committed run without a gap.
async fn concurrent_writes_that_fail_leave_no_trace_and_sequences_stay_gap_free(app: TestApp) {
    let mut movable = Vec::new();
    let mut unmovable = Vec::new();
    for n in 0..12 {
        movable.push(
            create(
                &app,
                pb::Lead {
                    contact_name: "Dana Smith".into(),
                    ..new_lead(&format!("movable {n}"))
                },
            )
            .await
            .id,
        );
        // No contact: qualification refuses it.
        unmovable.push(create(&app, new_lead(&format!("unmovable {n}"))).await.id);
    }
    let mut calls = Vec::new();
    for id in movable.iter().chain(&unmovable) {
        let mut client = app.leads.clone();
        let request = pb::MoveLeadRequest {
            id: id.clone(),
            stage: "qualification".into(),
            ..Default::default()
        };
        calls.push(tokio::spawn(async move {
            client.move_lead(request).await.map(|r| r.into_inner().id)
        }));
    }
    for n in 0..12 {
        // Each create is sent twice at once under one request id.
        for _ in 0..2 {
            let mut client = app.leads.clone();
            let request = pb::CreateLeadRequest {
                lead: Some(new_lead(&format!("created {n}"))),
                request_id: format!("concurrent-create-{n}"),
            };
            calls.push(tokio::spawn(async move {
                client.create_lead(request).await.map(|r| r.into_inner().id)
            }));
        }
    }
    let results = futures::future::join_all(calls).await;
    let (moves, creates) = results.split_at(movable.len() + unmovable.len());
    for (result, id) in moves.iter().zip(movable.iter().chain(&unmovable)) {
        let result = result.as_ref().expect("task");
        if movable.contains(id) {
            assert_eq!(result.as_deref().expect("a movable lead moves"), id);
        } else {
            let status = result.as_ref().expect_err("qualification needs a contact");
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        }
    }
    let mut created = HashSet::new();
    for pair in creates.chunks(2) {
        created.insert(the_one_lead_created(pair));
    }

    let mut sequences = Vec::new();
    for id in &movable {
        let changes = stage_changes(&app, id).await;
        assert_eq!(
            stage_path(&changes).len(),
            2,
            "created, then moved: {changes:#?}"
        );
        sequences.extend(changes.iter().map(|c| c.sequence));
    }
    for id in unmovable.iter().chain(&created) {
        let changes = stage_changes(&app, id).await;
        assert_eq!(changes.len(), 1, "only the creation: {changes:#?}");
        sequences.extend(changes.iter().map(|c| c.sequence));
    }
    sequences.sort_unstable();
    let expected: Vec<i64> = (1..=sequences.len() as i64).collect();
    assert_eq!(
        sequences, expected,
        "the committed writes' sequences, without a gap"
    );
}

/// The sequence, the stage change, the revision and the event of a move are written together
/// (one statement on PostgreSQL, one batch on SQLite): when the event's insert, the last of
/// them, fails, the move is not acknowledged and none of it is kept, the lead included, and
/// the next write takes the next sequence without a gap.
async fn a_move_whose_event_cannot_be_stored_leaves_nothing(app: TestApp) {
    let lead = create(&app, qualified_lead("Event fails")).await;
    let history = stage_changes(&app, &lead.id).await;
    let kept = crate::revisions::revisions(&app, &lead.id).await;

    let database = fail_events_where(&app, &format!("NEW.lead_id = '{}'", lead.id)).await;
    let failed = move_to(&app, &lead.id, "qualification").await;
    assert!(failed.is_err(), "{failed:?}");
    allow_events(&app, &database).await;

    let after = get_lead(&app, &lead.id).await;
    assert_eq!(
        (after.stage.as_str(), after.etag.as_str()),
        (lead.stage.as_str(), lead.etag.as_str()),
        "the lead is as it was"
    );
    assert_eq!(stage_changes(&app, &lead.id).await, history);
    assert_eq!(crate::revisions::revisions(&app, &lead.id).await, kept);

    let moved = move_to(&app, &lead.id, "qualification")
        .await
        .expect("the move applies once events can be stored");
    assert_eq!(moved.stage, "qualification");
    let changes = stage_changes(&app, &lead.id).await;
    assert_eq!(changes.len(), history.len() + 1);
    assert_eq!(
        changes.last().unwrap().sequence,
        history.last().unwrap().sequence + 1,
        "the failed move left no gap in the tenant's sequence"
    );
}

/// A new lead and its labels join the batch of its stage change, revision and event on SQLite
/// (and are written one after another in the call's transaction on PostgreSQL): when the event's
/// insert fails, the create is not acknowledged and neither the lead nor its labels are kept.
async fn a_create_whose_event_cannot_be_stored_leaves_nothing(app: TestApp) {
    use sea_orm::ConnectionTrait;

    let lead = pb::Lead {
        owner: "events-fail".into(),
        labels: [("region".to_string(), "emea".to_string())].into(),
        ..qualified_lead("Event fails on create")
    };
    let database = fail_events_where(&app, "NEW.owner = 'events-fail'").await;
    let failed = app
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(lead.clone()),
            request_id: String::new(),
        })
        .await;
    assert!(failed.is_err(), "{failed:?}");
    allow_events(&app, &database).await;

    assert_eq!(all_leads(&app, "").await, Vec::new(), "no lead is kept");
    let labels = database
        .query_one_raw(sea_orm::Statement::from_string(
            database.get_database_backend(),
            "SELECT CAST(COUNT(*) AS BIGINT) FROM lead_labels",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(labels, 0, "no label is kept");

    let created = create(&app, lead).await;
    assert_eq!(
        created.labels.get("region").map(String::as_str),
        Some("emea")
    );
    let changes = stage_changes(&app, &created.id).await;
    assert_eq!(
        changes.iter().map(|c| c.sequence).collect::<Vec<_>>(),
        [1],
        "the failed create took no sequence number"
    );
}

/// Makes every insert into the outbox whose row matches `condition` (SQL over `NEW`) fail, on
/// a connection of its own, which is returned for [`allow_events`].
async fn fail_events_where(app: &TestApp, condition: &str) -> sea_orm::DatabaseConnection {
    use sea_orm::ConnectionTrait;

    let database = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let inject = match app.backend {
        Backend::Sqlite => format!(
            "CREATE TRIGGER leadpipe_test_fail_event BEFORE INSERT ON outbox
             WHEN {condition}
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        ),
        Backend::Postgres => format!(
            "CREATE FUNCTION leadpipe_test_fail_event() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF {condition} THEN RAISE EXCEPTION 'injected failure'; END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER leadpipe_test_fail_event BEFORE INSERT ON outbox
               FOR EACH ROW EXECUTE FUNCTION leadpipe_test_fail_event();"
        ),
    };
    database.execute_unprepared(&inject).await.unwrap();
    database
}

async fn allow_events(app: &TestApp, database: &sea_orm::DatabaseConnection) {
    use sea_orm::ConnectionTrait;

    let drop = match app.backend {
        Backend::Sqlite => "DROP TRIGGER leadpipe_test_fail_event",
        Backend::Postgres => "DROP TRIGGER leadpipe_test_fail_event ON outbox",
    };
    database.execute_unprepared(drop).await.unwrap();
}

async fn stage_changes_list_oldest_first_in_pages(app: TestApp) {
    let lead = create(&app, qualified_lead("History")).await;
    let other = create(&app, qualified_lead("Someone else")).await;
    let mut client = app.leads.clone();
    for (stage, note) in [
        ("qualification", "  called Dana  "),
        ("lead_generation", ""),
        ("qualification", "second try"),
        ("proposal", "sent the offer"),
    ] {
        client
            .move_lead(pb::MoveLeadRequest {
                id: lead.id.clone(),
                stage: stage.into(),
                note: note.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    move_to(&app, &other.id, "qualification").await.unwrap();

    let all = stage_changes(&app, &lead.id).await;
    assert_eq!(all.len(), 5, "{all:#?}");
    assert_eq!(
        all.iter().map(|c| c.note.as_str()).collect::<Vec<_>>(),
        ["", "called Dana", "", "second try", "sent the offer"],
        "notes are recorded, trimmed"
    );
    for change in &all {
        assert!(!change.actor.is_empty(), "actor is recorded: {change:?}");
        assert!(change.change_time.is_some());
    }
    assert!(
        all.windows(2)
            .all(|w| micros(&w[0].change_time) <= micros(&w[1].change_time)),
        "oldest first"
    );
    assert_eq!(
        all[0].change_time,
        get_lead(&app, &lead.id).await.create_time
    );
    assert_unbroken_chain(&all, &get_lead(&app, &lead.id).await);

    // Pages of two return every change once, in the same order.
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_stage_changes(pb::ListStageChangesRequest {
                lead_id: lead.id.clone(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.stage_changes.len() <= 2);
        pages += 1;
        paged.extend(page.stage_changes);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, all);

    // Errors.
    let status = client
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = client
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: lead.id.clone(),
            page_size: 2,
            page_token: "not a token!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_request_fields(&status), vec!["page_token".to_string()]);
    let status = client
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: "42".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_fields(&status), vec!["lead_id".to_string()]);
    let status = client
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: lead.id.clone(),
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_fields(&status), vec!["page_size".to_string()]);
}

async fn history_is_deleted_with_the_lead(app: TestApp) {
    let doomed = create(&app, qualified_lead("Doomed")).await;
    let kept = create(&app, qualified_lead("Kept")).await;
    move_to(&app, &doomed.id, "qualification").await.unwrap();
    move_to(&app, &kept.id, "qualification").await.unwrap();
    assert_eq!(stage_changes(&app, &doomed.id).await.len(), 2);
    let kept_history = stage_changes(&app, &kept.id).await;

    app.leads
        .clone()
        .delete_lead(pb::DeleteLeadRequest {
            id: doomed.id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let status = app
        .leads
        .clone()
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: doomed.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = move_to(&app, &doomed.id, "proposal").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(
        stage_changes(&app, &kept.id).await,
        kept_history,
        "other leads keep theirs"
    );
}
