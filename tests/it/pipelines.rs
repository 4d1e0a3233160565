//! PipelineService, and how pipeline definitions steer MoveLead, through the real gRPC API.

use crate::common;

use std::collections::HashSet;

use common::*;
use leadpipe::grpc::pb;
use tonic::Code;

on_both_backends!(
    default_pipeline_is_documented_and_listed,
    custom_pipeline_steers_moves_end_to_end,
    invalid_definitions_name_each_bad_field,
    several_bad_fields_are_reported_together,
    duplicate_and_unknown_pipelines,
    update_renames_with_a_mask_and_checks_etags,
    updated_criteria_apply_to_the_next_move,
    removing_stages_that_hold_leads_is_refused,
    invalid_updates_change_nothing,
    list_pipelines_pages_through_every_pipeline,
    removing_a_stage_races_with_moves_into_it,
    a_thousand_long_violations_still_arrive_as_invalid_argument,
    costly_criteria_are_refused_before_they_run,
    a_stage_s_criteria_share_one_cost_limit,
    costlier_criteria_still_steer_moves,
    stored_criteria_above_the_limits_are_never_evaluated,
);

// ---- helpers ---------------------------------------------------------------------------

/// key, display name, kind, probability, rotting days, criterion ids.
type ExpectedStage = (
    &'static str,
    &'static str,
    pb::StageKind,
    f64,
    i32,
    &'static [&'static str],
);

fn criterion(id: &str, message: &str, expression: &str) -> pb::Criterion {
    pb::Criterion {
        id: id.into(),
        message: message.into(),
        expression: expression.into(),
    }
}

fn stage(
    key: &str,
    kind: pb::StageKind,
    probability: f64,
    criteria: Vec<pb::Criterion>,
) -> pb::Stage {
    pb::Stage {
        key: key.into(),
        display_name: String::new(),
        kind: kind as i32,
        probability,
        rotting_days: 10,
        entry_criteria: criteria,
    }
}

/// discovery → demo → pilot (pilot_signed) → won (big_enough) → lost, skipping allowed.
fn enterprise(id: &str) -> pb::Pipeline {
    pb::Pipeline {
        id: id.into(),
        display_name: "Enterprise deals".into(),
        stages: vec![
            pb::Stage {
                display_name: "Discovery".into(),
                ..stage("discovery", pb::StageKind::Open, 0.05, vec![])
            },
            stage("demo", pb::StageKind::Open, 0.25, vec![]),
            stage(
                "pilot",
                pb::StageKind::Open,
                0.5,
                vec![criterion(
                    "pilot_signed",
                    "The pilot agreement is signed",
                    r#"lead.labels["pilot_signed"] == "yes""#,
                )],
            ),
            stage(
                "won",
                pb::StageKind::Won,
                1.0,
                vec![criterion(
                    "big_enough",
                    "Enterprise deals are worth at least 1000",
                    "lead.amount.value >= 1000.0",
                )],
            ),
            stage("lost", pb::StageKind::Lost, 0.0, vec![]),
        ],
        allow_skip: true,
        ..Default::default()
    }
}

async fn create_pipeline(
    app: &TestApp,
    pipeline: pb::Pipeline,
) -> Result<pb::Pipeline, tonic::Status> {
    app.pipelines
        .clone()
        .create_pipeline(pb::CreatePipelineRequest {
            pipeline: Some(pipeline),
        })
        .await
        .map(|r| r.into_inner())
}

async fn create_in(app: &TestApp, pipeline_id: &str, lead: pb::Lead) -> pb::Lead {
    create(
        app,
        pb::Lead {
            pipeline_id: pipeline_id.into(),
            ..lead
        },
    )
    .await
}

fn stage_keys(pipeline: &pb::Pipeline) -> Vec<&str> {
    pipeline.stages.iter().map(|s| s.key.as_str()).collect()
}

/// The description of the BadRequest violation for `field`.
fn bad_request_description(status: &tonic::Status, field: &str) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .and_then(|b| {
            b.field_violations
                .into_iter()
                .find(|v| v.field == field)
                .map(|v| v.description)
        })
        .unwrap_or_else(|| panic!("no violation for {field}: {status:?}"))
}

async fn assert_invalid(app: &TestApp, pipeline: pb::Pipeline, fields: &[&str]) -> tonic::Status {
    let id = pipeline.id.clone();
    let status = create_pipeline(app, pipeline).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_request_fields(&status), fields, "{status:?}");
    if let Ok(pipeline) = get_pipeline(app, &id).await {
        panic!("an invalid pipeline was stored: {pipeline:?}");
    }
    status
}

fn transition(from: &str, to: &str) -> (String, String) {
    violation("TRANSITION", &format!("{from}->{to}"))
}

fn unmet(id: &str) -> (String, String) {
    violation("STAGE_CRITERION", id)
}

async fn assert_refused(app: &TestApp, id: &str, stage: &str, expected: &[(String, String)]) {
    let check = check_move(app, id, stage).await;
    assert!(!check.allowed, "{check:?}");
    assert_eq!(check_violations(&check), expected);
    let status = move_to(app, id, stage).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(precondition_violations(&status), expected);
}

async fn assert_moves(app: &TestApp, id: &str, stage: &str) -> pb::Lead {
    let check = check_move(app, id, stage).await;
    assert!(check.allowed && check.violations.is_empty(), "{check:?}");
    let moved = move_to(app, id, stage)
        .await
        .unwrap_or_else(|e| panic!("move to {stage}: {e:?}"));
    assert_eq!(moved.stage, stage);
    moved
}

async fn set_label(app: &TestApp, id: &str, key: &str, value: &str) {
    update_lead(
        app,
        pb::Lead {
            id: id.into(),
            labels: [(key.to_string(), value.to_string())].into(),
            ..Default::default()
        },
        &[&format!("labels.{key}")],
    )
    .await;
}

async fn set_amount(app: &TestApp, id: &str, units: i64) {
    update_lead(
        app,
        pb::Lead {
            id: id.into(),
            amount: Some(money("EUR", units)),
            ..Default::default()
        },
        &["amount"],
    )
    .await;
}

// ---- tests -----------------------------------------------------------------------------

async fn default_pipeline_is_documented_and_listed(app: TestApp) {
    let default = get_pipeline(&app, "default").await.unwrap();
    assert_eq!(default.id, "default");
    assert_eq!(default.display_name, "Default sales pipeline");
    assert!(!default.allow_skip);
    assert_eq!(default.allow_backward, Some(true));
    assert_eq!(default.allow_reopen, Some(true));
    assert!(!default.etag.is_empty());
    assert!(default.create_time.is_some() && default.update_time.is_some());

    use pb::StageKind::{Lost, Open, Won};
    let expected: [ExpectedStage; 6] = [
        ("lead_generation", "Lead generation", Open, 0.10, 14, &[]),
        (
            "qualification",
            "Qualification",
            Open,
            0.20,
            21,
            &["contact_known"],
        ),
        (
            "proposal",
            "Proposal",
            Open,
            0.40,
            30,
            &[
                "bant_budget",
                "bant_authority",
                "bant_need",
                "bant_timeline",
            ],
        ),
        (
            "negotiation",
            "Negotiation",
            Open,
            0.70,
            30,
            &["amount_positive"],
        ),
        (
            "closed_won",
            "Closed won",
            Won,
            1.0,
            0,
            &["amount_positive"],
        ),
        ("closed_lost", "Closed lost", Lost, 0.0, 0, &["lost_reason"]),
    ];
    assert_eq!(default.stages.len(), expected.len());
    for (stage, (key, name, kind, probability, rotting, criteria)) in
        default.stages.iter().zip(expected)
    {
        assert_eq!(stage.key, key);
        assert_eq!(stage.display_name, name);
        assert_eq!(stage.kind, kind as i32, "kind of {key}");
        assert!(
            (stage.probability - probability).abs() < 1e-9,
            "probability of {key}"
        );
        assert_eq!(stage.rotting_days, rotting, "rotting days of {key}");
        let ids: Vec<&str> = stage.entry_criteria.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, criteria, "criteria of {key}");
        for c in &stage.entry_criteria {
            assert!(!c.message.is_empty() && !c.expression.is_empty(), "{c:?}");
        }
    }

    let listed = app
        .pipelines
        .clone()
        .list_pipelines(pb::ListPipelinesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.next_page_token.is_empty());
    assert_eq!(listed.pipelines, vec![default]);
}

async fn custom_pipeline_steers_moves_end_to_end(app: TestApp) {
    let created = create_pipeline(&app, enterprise("enterprise"))
        .await
        .unwrap();
    assert_eq!(created.id, "enterprise");
    assert_eq!(created.display_name, "Enterprise deals");
    assert_eq!(
        stage_keys(&created),
        ["discovery", "demo", "pilot", "won", "lost"]
    );
    assert_eq!(created.stages[0].display_name, "Discovery");
    assert_eq!(
        created.stages[1].display_name, "demo",
        "display_name defaults to the key"
    );
    assert_eq!(
        created.stages[3].entry_criteria,
        enterprise("x").stages[3].entry_criteria
    );
    assert!(created.allow_skip);
    assert_eq!(created.allow_backward, Some(true), "unset means true");
    assert_eq!(created.allow_reopen, Some(true), "unset means true");
    assert!(!created.etag.is_empty() && created.create_time.is_some());
    assert_eq!(get_pipeline(&app, "enterprise").await.unwrap(), created);

    // A new lead enters the first stage with its probability.
    let lead = create_in(&app, "enterprise", new_lead("Big fish")).await;
    assert_eq!(lead.pipeline_id, "enterprise");
    assert_eq!(lead.stage, "discovery");
    assert!((lead.win_probability - 0.05).abs() < 1e-9);
    let first = stage_changes(&app, &lead.id).await;
    assert_eq!(first[0].pipeline_id, "enterprise");
    assert_eq!(first[0].to_stage, "discovery");

    // Stages of the default pipeline are not stages of this one.
    assert_refused(
        &app,
        &lead.id,
        "qualification",
        &[transition("discovery", "qualification")],
    )
    .await;
    let check = check_move(&app, &lead.id, "qualification").await;
    assert!(
        check.violations[0].description.contains("enterprise"),
        "{check:?}"
    );

    // pilot (skipping demo, which allow_skip permits) needs the signed pilot label.
    assert_refused(&app, &lead.id, "pilot", &[unmet("pilot_signed")]).await;
    set_label(&app, &lead.id, "pilot_signed", "no").await;
    assert_refused(&app, &lead.id, "pilot", &[unmet("pilot_signed")]).await;
    set_label(&app, &lead.id, "pilot_signed", "yes").await;
    let pilot = assert_moves(&app, &lead.id, "pilot").await;
    assert!((pilot.win_probability - 0.5).abs() < 1e-9);

    // won needs an amount of at least 1000.
    assert_refused(&app, &lead.id, "won", &[unmet("big_enough")]).await;
    set_amount(&app, &lead.id, 999).await;
    assert_refused(&app, &lead.id, "won", &[unmet("big_enough")]).await;
    set_amount(&app, &lead.id, 1000).await;
    let won = assert_moves(&app, &lead.id, "won").await;
    assert!((won.win_probability - 1.0).abs() < 1e-9);
    assert!(won.close_time.is_some());

    // Backward moves (a reopen here) and the lost stage follow the default movement rules.
    let reopened = assert_moves(&app, &lead.id, "demo").await;
    assert_eq!(reopened.close_time, None);
    let lost = assert_moves(&app, &lead.id, "lost").await;
    assert!(lost.close_time.is_some());

    // With allow_skip, a lead may go straight from the first stage to won.
    let quick = create_in(
        &app,
        "enterprise",
        pb::Lead {
            amount: Some(money("EUR", 50_000)),
            ..new_lead("Quick win")
        },
    )
    .await;
    assert_moves(&app, &quick.id, "won").await;

    let history = stage_changes(&app, &lead.id).await;
    assert_eq!(
        stage_path(&history),
        [
            ("", "discovery"),
            ("discovery", "pilot"),
            ("pilot", "won"),
            ("won", "demo"),
            ("demo", "lost"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(history.iter().all(|c| c.pipeline_id == "enterprise"));

    // The default pipeline is untouched: it still refuses skips.
    let classic = create(&app, new_lead("Classic")).await;
    assert_eq!(classic.pipeline_id, "default");
    assert_eq!(classic.stage, "lead_generation");
    let status = move_to(&app, &classic.id, "negotiation").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

async fn invalid_definitions_name_each_bad_field(app: TestApp) {
    // An expression that does not parse: its position is reported.
    let mut pipeline = enterprise("broken");
    pipeline.stages[2].entry_criteria[0].expression = "lead.amount.value >".into();
    let status = assert_invalid(
        &app,
        pipeline,
        &["pipeline.stages[2].entry_criteria[0].expression"],
    )
    .await;
    let description =
        bad_request_description(&status, "pipeline.stages[2].entry_criteria[0].expression");
    assert!(
        description.contains("line") && description.contains("column"),
        "{description}"
    );

    // A misspelled field is caught when the pipeline is saved, not on every move.
    let mut pipeline = enterprise("broken");
    pipeline.stages[3].entry_criteria[0].expression = "lead.amout.value > 0.0".into();
    let status = assert_invalid(
        &app,
        pipeline,
        &["pipeline.stages[3].entry_criteria[0].expression"],
    )
    .await;
    let description =
        bad_request_description(&status, "pipeline.stages[3].entry_criteria[0].expression");
    assert!(
        description.starts_with("line 1, column 5: "),
        "{description}"
    );
    assert!(description.contains("amout"), "{description}");

    // A long run of `!` is as deep as the operators it repeats, though the parser folds it.
    for expression in [
        format!("{}true", "!".repeat(4090)),
        format!("{}lead.amount.value > 0.0", "- ".repeat(33)),
    ] {
        let mut pipeline = enterprise("broken");
        pipeline.stages[3].entry_criteria[0].expression = expression;
        let status = assert_invalid(
            &app,
            pipeline,
            &["pipeline.stages[3].entry_criteria[0].expression"],
        )
        .await;
        let description =
            bad_request_description(&status, "pipeline.stages[3].entry_criteria[0].expression");
        assert!(
            description.contains("repeated more than 32 times"),
            "{description}"
        );
    }

    // An expression that is not a bool.
    let mut pipeline = enterprise("broken");
    pipeline.stages[3].entry_criteria[0].expression = "lead.amount.value".into();
    assert_invalid(
        &app,
        pipeline,
        &["pipeline.stages[3].entry_criteria[0].expression"],
    )
    .await;

    // Duplicate stage keys: the second one is reported.
    let mut pipeline = enterprise("broken");
    pipeline.stages[2].key = "demo".into();
    let status = assert_invalid(&app, pipeline, &["pipeline.stages[2].key"]).await;
    assert!(bad_request_description(&status, "pipeline.stages[2].key").contains("duplicate"));

    // The first stage must be open.
    let mut pipeline = enterprise("broken");
    pipeline.stages.swap(0, 3);
    assert_invalid(&app, pipeline, &["pipeline.stages[0].kind"]).await;

    // A won stage is required.
    let mut pipeline = enterprise("broken");
    pipeline.stages.remove(3);
    let status = assert_invalid(&app, pipeline, &["pipeline.stages"]).await;
    assert!(bad_request_description(&status, "pipeline.stages").contains("won"));

    // So is an open stage (and then the first stage is not open either).
    let mut pipeline = enterprise("broken");
    pipeline.stages.drain(0..3);
    assert_invalid(
        &app,
        pipeline,
        &["pipeline.stages", "pipeline.stages[0].kind"],
    )
    .await;

    // Probabilities are between 0 and 1.
    let mut pipeline = enterprise("broken");
    pipeline.stages[1].probability = 1.5;
    assert_invalid(&app, pipeline, &["pipeline.stages[1].probability"]).await;
    let mut pipeline = enterprise("broken");
    pipeline.stages[1].probability = -0.1;
    assert_invalid(&app, pipeline, &["pipeline.stages[1].probability"]).await;

    // The kind is required.
    let mut pipeline = enterprise("broken");
    pipeline.stages[1].kind = pb::StageKind::Unspecified as i32;
    assert_invalid(&app, pipeline, &["pipeline.stages[1].kind"]).await;

    // Malformed identifiers.
    let mut pipeline = enterprise("Not An Id");
    assert_invalid(&app, pipeline.clone(), &["pipeline.id"]).await;
    pipeline.id = String::new();
    assert_invalid(&app, pipeline, &["pipeline.id"]).await;
    let mut pipeline = enterprise("broken");
    pipeline.stages[1].key = "Demo Stage".into();
    assert_invalid(&app, pipeline, &["pipeline.stages[1].key"]).await;
    let mut pipeline = enterprise("broken");
    pipeline.stages[2].entry_criteria[0].id = "Bad Id".into();
    assert_invalid(&app, pipeline, &["pipeline.stages[2].entry_criteria[0].id"]).await;

    // A criterion must tell users what to do.
    let mut pipeline = enterprise("broken");
    pipeline.stages[2].entry_criteria[0].message = "  ".into();
    assert_invalid(
        &app,
        pipeline,
        &["pipeline.stages[2].entry_criteria[0].message"],
    )
    .await;

    let missing = app
        .pipelines
        .clone()
        .create_pipeline(pb::CreatePipelineRequest { pipeline: None })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&missing), vec!["pipeline".to_string()]);

    let listed = app
        .pipelines
        .clone()
        .list_pipelines(pb::ListPipelinesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .pipelines
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        ["default"],
        "no invalid pipeline was stored"
    );
}

async fn several_bad_fields_are_reported_together(app: TestApp) {
    // Only problems the definition checks find (order, probabilities, criteria).
    let mut pipeline = enterprise("broken");
    pipeline.stages[1].probability = 1.5;
    pipeline.stages[2].key = "demo".into();
    pipeline.stages[2].entry_criteria[0].expression = "lead.amount.value >".into();
    pipeline.stages[3].entry_criteria[0].expression = "lead.amout.value > 0.0".into();
    assert_invalid(
        &app,
        pipeline,
        &[
            "pipeline.stages[1].probability",
            "pipeline.stages[2].key",
            "pipeline.stages[2].entry_criteria[0].expression",
            "pipeline.stages[3].entry_criteria[0].expression",
        ],
    )
    .await;

    // Malformed values (id, kind) together with problems the definition checks find: every bad
    // field is reported in one response.
    let mut pipeline = enterprise("Bad Id");
    pipeline.stages[4].kind = pb::StageKind::Unspecified as i32;
    pipeline.stages[1].probability = 1.5;
    pipeline.stages[3].entry_criteria[0].expression = "lead.amout.value > 0.0".into();
    let status = create_pipeline(&app, pipeline).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: HashSet<String> = bad_request_fields(&status).into_iter().collect();
    for expected in [
        "pipeline.id",
        "pipeline.stages[4].kind",
        "pipeline.stages[1].probability",
        "pipeline.stages[3].entry_criteria[0].expression",
    ] {
        assert!(
            fields.contains(expected),
            "missing violation for {expected}: {fields:?}"
        );
    }
}

async fn duplicate_and_unknown_pipelines(app: TestApp) {
    create_pipeline(&app, enterprise("enterprise"))
        .await
        .unwrap();
    let mut again = enterprise("enterprise");
    again.display_name = "Another".into();
    let status = create_pipeline(&app, again).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(
        get_pipeline(&app, "enterprise").await.unwrap().display_name,
        "Enterprise deals",
        "the existing pipeline is kept"
    );
    let status = create_pipeline(&app, enterprise("default"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(get_pipeline(&app, "default").await.unwrap().stages.len(), 6);

    let status = get_pipeline(&app, "nope").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = get_pipeline(&app, "Not An Id").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_request_fields(&status), vec!["id".to_string()]);

    let status = update_pipeline(
        &app,
        pb::Pipeline {
            id: "nope".into(),
            display_name: "x".into(),
            ..Default::default()
        },
        &["display_name"],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

async fn update_renames_with_a_mask_and_checks_etags(app: TestApp) {
    let created = create_pipeline(&app, enterprise("enterprise"))
        .await
        .unwrap();
    let renamed = update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            display_name: "Strategic accounts".into(),
            etag: created.etag.clone(),
            allow_skip: false,
            ..Default::default()
        },
        &["display_name"],
    )
    .await
    .unwrap();
    assert_eq!(renamed.display_name, "Strategic accounts");
    assert_eq!(renamed.stages, created.stages, "stages are not in the mask");
    assert!(renamed.allow_skip, "allow_skip is not in the mask");
    assert_eq!(renamed.allow_backward, created.allow_backward);
    assert_eq!(renamed.allow_reopen, created.allow_reopen);
    assert_eq!(renamed.create_time, created.create_time);
    assert_ne!(renamed.etag, created.etag);
    assert_eq!(get_pipeline(&app, "enterprise").await.unwrap(), renamed);

    // The etag read before the rename is stale now.
    let status = update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            display_name: "Lost update".into(),
            etag: created.etag.clone(),
            ..Default::default()
        },
        &["display_name"],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(get_pipeline(&app, "enterprise").await.unwrap(), renamed);

    // Movement rules can be changed on their own; they apply to the next move.
    let lead = create_in(
        &app,
        "enterprise",
        pb::Lead {
            labels: [("pilot_signed".to_string(), "yes".to_string())].into(),
            ..new_lead("Rules")
        },
    )
    .await;
    let strict = update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            etag: renamed.etag.clone(),
            allow_skip: false,
            allow_backward: Some(false),
            ..Default::default()
        },
        &["allow_skip", "allow_backward"],
    )
    .await
    .unwrap();
    assert!(!strict.allow_skip);
    assert_eq!(strict.allow_backward, Some(false));
    assert_eq!(strict.display_name, "Strategic accounts");
    assert_refused(&app, &lead.id, "pilot", &[transition("discovery", "pilot")]).await;
    assert_moves(&app, &lead.id, "demo").await;
    assert_refused(
        &app,
        &lead.id,
        "discovery",
        &[transition("demo", "discovery")],
    )
    .await;

    // Output-only and unknown mask paths are refused.
    let status = update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            ..Default::default()
        },
        &["id", "nonsense"],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&status),
        vec![
            "update_mask.paths[0]".to_string(),
            "update_mask.paths[1]".to_string()
        ]
    );
    assert_eq!(get_pipeline(&app, "enterprise").await.unwrap(), strict);
}

async fn updated_criteria_apply_to_the_next_move(app: TestApp) {
    let created = create_pipeline(&app, enterprise("enterprise"))
        .await
        .unwrap();
    let lead = create_in(&app, "enterprise", new_lead("Moving target")).await;
    let check = check_move(&app, &lead.id, "demo").await;
    assert!(check.allowed, "demo has no criteria yet: {check:?}");

    let mut stages = created.stages.clone();
    stages[1].entry_criteria.push(criterion(
        "owner_assigned",
        "Assign an account executive",
        r#"lead.owner != """#,
    ));
    let updated = update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            etag: created.etag.clone(),
            stages,
            ..Default::default()
        },
        &["stages"],
    )
    .await
    .unwrap();
    assert_eq!(updated.stages[1].entry_criteria.len(), 1);
    assert!(updated.allow_skip, "allow_skip is not in the mask");

    assert_refused(&app, &lead.id, "demo", &[unmet("owner_assigned")]).await;
    update_lead(
        &app,
        pb::Lead {
            id: lead.id.clone(),
            owner: "kim".into(),
            ..Default::default()
        },
        &["owner"],
    )
    .await;
    assert_moves(&app, &lead.id, "demo").await;

    // Relaxing a criterion applies at once too.
    let mut stages = updated.stages.clone();
    stages[3].entry_criteria[0].expression = "lead.amount.value >= 0.0".into();
    update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            stages,
            ..Default::default()
        },
        &["stages"],
    )
    .await
    .unwrap();
    assert_moves(&app, &lead.id, "won").await;
}

async fn removing_stages_that_hold_leads_is_refused(app: TestApp) {
    let created = create_pipeline(&app, enterprise("enterprise"))
        .await
        .unwrap();
    let lead = create_in(&app, "enterprise", new_lead("Squatter")).await;
    assert_moves(&app, &lead.id, "demo").await;

    let without_demo: Vec<pb::Stage> = created
        .stages
        .iter()
        .filter(|s| s.key != "demo")
        .cloned()
        .collect();
    let status = update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            stages: without_demo.clone(),
            ..Default::default()
        },
        &["stages"],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        precondition_violations(&status),
        vec![violation("STAGE_NOT_EMPTY", "demo")]
    );
    assert_eq!(
        get_pipeline(&app, "enterprise").await.unwrap(),
        created,
        "nothing changes"
    );
    assert_eq!(get_lead(&app, &lead.id).await.stage, "demo");

    // Removing an empty stage succeeds.
    let without_pilot: Vec<pb::Stage> = created
        .stages
        .iter()
        .filter(|s| s.key != "pilot")
        .cloned()
        .collect();
    let updated = update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            stages: without_pilot,
            ..Default::default()
        },
        &["stages"],
    )
    .await
    .unwrap();
    assert_eq!(stage_keys(&updated), ["discovery", "demo", "won", "lost"]);
    assert_refused(&app, &lead.id, "pilot", &[transition("demo", "pilot")]).await;

    // Once the lead has moved on, its old stage can go.
    assert_moves(&app, &lead.id, "discovery").await;
    let updated = update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            stages: updated
                .stages
                .iter()
                .filter(|s| s.key != "demo")
                .cloned()
                .collect(),
            ..Default::default()
        },
        &["stages"],
    )
    .await
    .unwrap();
    assert_eq!(stage_keys(&updated), ["discovery", "won", "lost"]);

    // Occupied stages of the default pipeline are protected the same way.
    let classic = create(&app, new_lead("Classic")).await;
    let default = get_pipeline(&app, "default").await.unwrap();
    let status = update_pipeline(
        &app,
        pb::Pipeline {
            id: "default".into(),
            stages: default.stages[1..].to_vec(),
            ..Default::default()
        },
        &["stages"],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        precondition_violations(&status),
        vec![violation("STAGE_NOT_EMPTY", "lead_generation")]
    );
    assert_eq!(get_pipeline(&app, "default").await.unwrap(), default);
    assert_eq!(get_lead(&app, &classic.id).await.stage, "lead_generation");
}

async fn invalid_updates_change_nothing(app: TestApp) {
    let created = create_pipeline(&app, enterprise("enterprise"))
        .await
        .unwrap();
    let lead = create_in(
        &app,
        "enterprise",
        pb::Lead {
            labels: [("pilot_signed".to_string(), "yes".to_string())].into(),
            ..new_lead("Unaffected")
        },
    )
    .await;

    let mut stages = created.stages.clone();
    stages[2].entry_criteria[0].expression = "lead.labels[".into();
    let status = update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            stages: stages.clone(),
            ..Default::default()
        },
        &["stages"],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        bad_request_fields(&status),
        vec!["pipeline.stages[2].entry_criteria[0].expression".to_string()]
    );
    let description =
        bad_request_description(&status, "pipeline.stages[2].entry_criteria[0].expression");
    assert!(
        description.contains("line") && description.contains("column"),
        "{description}"
    );
    assert_eq!(get_pipeline(&app, "enterprise").await.unwrap(), created);
    // The old criterion still decides moves.
    assert_moves(&app, &lead.id, "pilot").await;

    // A bad stage list outside the mask is not looked at.
    let renamed = update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            display_name: "Renamed".into(),
            stages,
            ..Default::default()
        },
        &["display_name"],
    )
    .await
    .unwrap();
    assert_eq!(renamed.stages, created.stages);

    // Invalid structure: no won stage left, and a probability out of range.
    let mut stages = created.stages.clone();
    stages.retain(|s| s.key != "won");
    stages[0].probability = 2.0;
    let status = update_pipeline(
        &app,
        pb::Pipeline {
            id: "enterprise".into(),
            stages,
            ..Default::default()
        },
        &["stages"],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        bad_request_fields(&status),
        vec![
            "pipeline.stages".to_string(),
            "pipeline.stages[0].probability".to_string()
        ]
    );
    assert_eq!(get_pipeline(&app, "enterprise").await.unwrap(), renamed);

    // An overlong display name, with the full (empty) mask.
    let status = app
        .pipelines
        .clone()
        .update_pipeline(pb::UpdatePipelineRequest {
            pipeline: Some(pb::Pipeline {
                display_name: " ".repeat(3) + &"x".repeat(201),
                ..enterprise("enterprise")
            }),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        bad_request_fields(&status),
        vec!["pipeline.display_name".to_string()]
    );
    assert_eq!(get_pipeline(&app, "enterprise").await.unwrap(), renamed);
}

async fn list_pipelines_pages_through_every_pipeline(app: TestApp) {
    for id in ["zeta", "alpha", "beta-2", "beta"] {
        create_pipeline(&app, enterprise(id)).await.unwrap();
    }
    let mut client = app.pipelines.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_pipelines(pb::ListPipelinesRequest {
                page_size: 1,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.pipelines.len(), 1, "{page:?}");
        seen.extend(page.pipelines.into_iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(seen.len() < 20, "paging does not end");
    }
    assert_eq!(
        seen,
        ["alpha", "beta", "beta-2", "default", "zeta"],
        "ordered by id, each once"
    );

    let all = client
        .list_pipelines(pb::ListPipelinesRequest {
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.pipelines.len(), 5);
    assert!(all.next_page_token.is_empty());

    let status = client
        .list_pipelines(pb::ListPipelinesRequest {
            page_size: 1,
            page_token: "garbage!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_request_fields(&status), vec!["page_token".to_string()]);
    let status = client
        .list_pipelines(pb::ListPipelinesRequest {
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_fields(&status), vec!["page_size".to_string()]);
}

async fn removing_a_stage_races_with_moves_into_it(app: TestApp) {
    let two_step = |id: &str, keep_b: bool| pb::Pipeline {
        id: id.into(),
        display_name: "Race".into(),
        stages: [
            Some(stage("a", pb::StageKind::Open, 0.1, vec![])),
            keep_b.then(|| stage("b", pb::StageKind::Open, 0.5, vec![])),
            Some(stage("won", pb::StageKind::Won, 1.0, vec![])),
        ]
        .into_iter()
        .flatten()
        .collect(),
        ..Default::default()
    };
    let mut stranded = Vec::new();
    for round in 0..30 {
        let id = format!("race-{round}");
        create_pipeline(&app, two_step(&id, true)).await.unwrap();
        let lead = create_in(&app, &id, new_lead("Racer")).await;
        let mut pipelines = app.pipelines.clone();
        let remove = two_step(&id, false);
        let update = tokio::spawn(async move {
            pipelines
                .update_pipeline(pb::UpdatePipelineRequest {
                    pipeline: Some(remove),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["stages".into()],
                    }),
                })
                .await
        });
        let mut leads = app.leads.clone();
        let lead_id = lead.id.clone();
        let mv = tokio::spawn(async move {
            leads
                .move_lead(pb::MoveLeadRequest {
                    id: lead_id,
                    stage: "b".into(),
                    ..Default::default()
                })
                .await
        });
        let (update, mv) = (update.await.unwrap(), mv.await.unwrap());
        for status in [update.as_ref().err(), mv.as_ref().err()]
            .into_iter()
            .flatten()
        {
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        }
        // Whichever wins, the lead must end up in a stage its pipeline has.
        let stored = get_lead(&app, &lead.id).await;
        let pipeline = get_pipeline(&app, &id).await.unwrap();
        if !stage_keys(&pipeline).contains(&stored.stage.as_str()) {
            stranded.push((round, update.is_ok(), mv.is_ok()));
        }
    }
    assert!(
        stranded.is_empty(),
        "leads were stranded in a removed stage (round, update ok, move ok): {stranded:?}"
    );
}

async fn a_thousand_long_violations_still_arrive_as_invalid_argument(app: TestApp) {
    // 50 stages of 20 criteria, every id and expression malformed and long: each violation
    // quotes its input, and all of them together would not fit in the HTTP/2 trailers that
    // clients accept. The client must still get INVALID_ARGUMENT, not a protocol error.
    let long = "ꝝ¥🫳 ".repeat(120);
    let stages: Vec<pb::Stage> = (0..50)
        .map(|i| {
            stage(
                &format!("stage_{i}"),
                pb::StageKind::Open,
                0.1,
                (0..20)
                    .map(|j| criterion(&format!("{long}{j}"), "m", &format!("{long} >")))
                    .collect(),
            )
        })
        .collect();
    let pipeline = pb::Pipeline {
        id: "oversized".into(),
        display_name: "Oversized".into(),
        stages,
        ..Default::default()
    };
    let status = create_pipeline(&app, pipeline).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = bad_request_fields(&status);
    assert!(!fields.is_empty());
    assert!(fields[0].starts_with("pipeline.stages[0]"), "{fields:?}");
    assert!(status.message().contains(" more ("), "{}", status.message());
}

// ---- evaluation cost --------------------------------------------------------------------

/// How long a test waits for a call that must not evaluate anything costly.
const PROMPT: std::time::Duration = std::time::Duration::from_secs(10);

/// Three nested `all` over list literals of 300 elements: 27 million iterations in 1.8 KB.
fn cube() -> String {
    let list = format!("[{}]", vec!["1"; 300].join(","));
    format!("{list}.all(x, {list}.all(y, {list}.all(z, x == y && y == z)))")
}

/// A criterion whose estimated cost lies within `low..=high`.
fn costing_between(low: u64, high: u64) -> String {
    let ints = |n: usize| {
        let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        format!("[{}]", items.join(","))
    };
    (2..400)
        .map(|n| format!("{}.all(x, {}.all(y, x != y || x >= 0))", ints(n), ints(n)))
        .find(|e| {
            let cost = leadpipe::domain::criteria::compile_stored(e)
                .expect("compiles")
                .cost();
            (low..=high).contains(&cost)
        })
        .expect("some size lands in the range")
}

/// CreatePipeline, failing the test if it takes longer than [`PROMPT`].
async fn create_pipeline_promptly(
    app: &TestApp,
    pipeline: pb::Pipeline,
) -> Result<pb::Pipeline, tonic::Status> {
    let mut request = tonic::Request::new(pb::CreatePipelineRequest {
        pipeline: Some(pipeline),
    });
    request.set_timeout(PROMPT);
    let mut client = app.pipelines.clone();
    tokio::time::timeout(PROMPT, client.create_pipeline(request))
        .await
        .expect("CreatePipeline answers promptly")
        .map(|r| r.into_inner())
}

async fn costly_criteria_are_refused_before_they_run(app: TestApp) {
    let cube = cube();
    assert!((1_800..1_900).contains(&cube.len()), "{}", cube.len());
    let mut pipeline = enterprise("cubed");
    pipeline.stages[1]
        .entry_criteria
        .push(criterion("cube", "Costly", &cube));
    let status = create_pipeline_promptly(&app, pipeline).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        bad_request_fields(&status),
        ["pipeline.stages[1].entry_criteria[0].expression"]
    );
    let description =
        bad_request_description(&status, "pipeline.stages[1].entry_criteria[0].expression");
    assert!(
        description.starts_with("criterion \"cube\": its estimated cost is "),
        "{description}"
    );
    let limit = leadpipe::domain::criteria::cost::MAX_CRITERION_COST;
    assert!(
        description.contains(&format!("above the limit of {limit} per criterion")),
        "{description}"
    );
    assert_eq!(
        get_pipeline(&app, "cubed").await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn a_stage_s_criteria_share_one_cost_limit(app: TestApp) {
    use leadpipe::domain::criteria::cost::{MAX_CRITERION_COST, MAX_STAGE_COST};
    let costly = costing_between(MAX_STAGE_COST / 3 + 1, MAX_CRITERION_COST - 10);
    let mut pipeline = enterprise("heavy");
    pipeline.stages[1].entry_criteria = (0..3)
        .map(|i| criterion(&format!("heavy_{i}"), "Costly", &costly))
        .collect();
    let status = create_pipeline_promptly(&app, pipeline.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let field = "pipeline.stages[1].entry_criteria[2].expression";
    assert_eq!(bad_request_fields(&status), [field]);
    let description = bad_request_description(&status, field);
    assert!(
        description.starts_with("criterion \"heavy_2\": its estimated cost of "),
        "{description}"
    );
    assert!(
        description.contains(&format!("above the limit of {MAX_STAGE_COST} per stage")),
        "{description}"
    );
    // Two fit in a stage, and the limit is per stage: another stage may hold two more.
    pipeline.stages[1].entry_criteria.pop();
    pipeline.stages[2].entry_criteria = pipeline.stages[1].entry_criteria.clone();
    create_pipeline_promptly(&app, pipeline).await.unwrap();
}

async fn costlier_criteria_still_steer_moves(app: TestApp) {
    use leadpipe::app::evaluation::INLINE_COST;
    // Above the inline threshold: evaluated off the async workers.
    let short_labels = "lead.labels.all(k, size(lead.labels[k]) < 100)";
    let cost = leadpipe::domain::criteria::compile_stored(short_labels)
        .unwrap()
        .cost();
    assert!(cost > INLINE_COST, "{cost}");
    let words: Vec<String> = (0..36).map(|i| format!("\"source-{i:02}\"")).collect();
    let mut pipeline = enterprise("labelled");
    pipeline.stages[1].entry_criteria = vec![
        criterion("short_labels", "Label values are short", short_labels),
        criterion(
            "known_source",
            "The source is a known one",
            &format!("lead.source in [{}]", words.join(",")),
        ),
        criterion(
            "tiered",
            "The lead has a tier",
            r#"lead.labels.exists(k, k.startsWith("tier") && lead.labels[k] != "")"#,
        ),
    ];
    create_pipeline_promptly(&app, pipeline).await.unwrap();
    let lead = create_in(
        &app,
        "labelled",
        pb::Lead {
            source: "source-07".into(),
            ..new_lead("Labelled")
        },
    )
    .await;
    set_label(&app, &lead.id, "tier_level", &"x".repeat(150)).await;
    assert_refused(&app, &lead.id, "demo", &[unmet("short_labels")]).await;
    set_label(&app, &lead.id, "tier_level", "gold").await;
    assert_moves(&app, &lead.id, "demo").await;
}

async fn stored_criteria_above_the_limits_are_never_evaluated(app: TestApp) {
    use leadpipe::domain::criteria::cost::MAX_CRITERION_COST;
    use leadpipe::domain::ids::{CriterionId, PipelineId, TenantId};
    use leadpipe::domain::pipeline::{Criterion, Pipeline};
    use leadpipe::domain::policy::default_pipeline;

    // Saved before there were cost limits: written to the database directly.
    let mut definition = default_pipeline();
    definition.rules.allow_skip = true;
    definition.stages[1].entry_criteria = vec![Criterion {
        id: CriterionId::parse("cube").unwrap(),
        message: "Costly".into(),
        expression: cube(),
    }];
    definition.stages[3].entry_criteria.clear();
    let now = chrono::Utc::now();
    let legacy = Pipeline {
        id: PipelineId::parse("legacy").unwrap(),
        definition,
        create_time: now,
        update_time: now,
        version: 1,
    };
    let db = sea_orm::Database::connect(&app.database_url).await.unwrap();
    leadpipe::store::pipelines::insert(&db, &TenantId::default_tenant(), &legacy)
        .await
        .unwrap();
    db.close().await.ok();

    let stored = tokio::time::timeout(PROMPT, get_pipeline(&app, "legacy"))
        .await
        .expect("GetPipeline answers promptly")
        .unwrap();
    assert_eq!(stored.stages[1].entry_criteria[0].id, "cube");
    let lead = tokio::time::timeout(PROMPT, create_in(&app, "legacy", new_lead("Old rules")))
        .await
        .expect("CreateLead answers promptly");
    let check = tokio::time::timeout(PROMPT, check_move(&app, &lead.id, "qualification"))
        .await
        .expect("CheckMove answers promptly");
    assert!(!check.allowed);
    assert_eq!(check_violations(&check), [unmet("cube")]);
    let description = &check.violations[0].description;
    assert!(
        description.starts_with("Costly (not evaluated: its estimated cost is "),
        "{description}"
    );
    assert!(
        description.contains(&format!(
            "above the limit of {MAX_CRITERION_COST} per criterion"
        )),
        "{description}"
    );
    let status = tokio::time::timeout(PROMPT, move_to(&app, &lead.id, "qualification"))
        .await
        .expect("MoveLead answers promptly")
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(precondition_violations(&status), [unmet("cube")]);

    // Moves elsewhere work, and replacing the criterion makes the stage usable again.
    assert_moves(&app, &lead.id, "negotiation").await;
    let mut stages = stored.stages.clone();
    stages[1].entry_criteria[0].expression = "lead.title != \"\"".into();
    let update = pb::Pipeline {
        id: "legacy".into(),
        stages: stages.clone(),
        ..Default::default()
    };
    update_pipeline(&app, update, &["stages"]).await.unwrap();
    assert_moves(&app, &lead.id, "qualification").await;
}
