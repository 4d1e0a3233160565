//! Tenants and API keys: two tenants share one server, and nothing of one can be read, changed,
//! moved, watched or counted by the other; keys are required, checked on every call and
//! revocable at once; roles limit what a key may do; the recorded actor is the key.
//!

use crate::common;

use std::time::Duration;

use common::*;
use leadpipe::grpc::pb;
use tonic::{Code, Streaming};

on_both_backends!(
    tenant_b_cannot_touch_tenant_a_through_any_rpc,
    calls_without_a_valid_key_are_unauthenticated,
    ambiguous_credentials_are_unauthenticated,
    revocation_takes_effect_at_once,
    revocation_ends_open_streams_on_every_replica,
    roles_limit_what_a_key_may_do,
    auto_mode_requires_keys_once_one_exists,
);

/// How long a stream must stay silent to count as "receives nothing".
const QUIET: Duration = Duration::from_millis(700);

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(status) => status.code(),
    }
}

fn contacted(title: &str) -> pb::Lead {
    pb::Lead {
        contact_name: "Dana".into(),
        ..new_lead(title)
    }
}

/// discovery → won, with nothing required: a custom pipeline for tenant A.
fn small_pipeline(id: &str) -> pb::Pipeline {
    let stage = |key: &str, kind: pb::StageKind, probability: f64| pb::Stage {
        key: key.into(),
        kind: kind as i32,
        probability,
        rotting_days: 10,
        ..Default::default()
    };
    pb::Pipeline {
        id: id.into(),
        display_name: "A's secret pipeline".into(),
        stages: vec![
            stage("discovery", pb::StageKind::Open, 0.1),
            stage("won", pb::StageKind::Won, 1.0),
            stage("lost", pb::StageKind::Lost, 0.0),
        ],
        allow_skip: true,
        ..Default::default()
    }
}

async fn assert_silent(stream: &mut Streaming<pb::StageChangeEvent>, what: &str) {
    if let Ok(received) = tokio::time::timeout(QUIET, stream.message()).await {
        panic!("{what}: expected nothing, got {received:?}");
    }
}

async fn watch(
    clients: &AuthedClients,
    request: pb::WatchStageChangesRequest,
) -> Result<Streaming<pb::StageChangeEvent>, tonic::Status> {
    clients
        .leads
        .clone()
        .watch_stage_changes(request)
        .await
        .map(|r| r.into_inner())
}

async fn create_lead(clients: &AuthedClients, lead: pb::Lead, request_id: &str) -> pb::Lead {
    clients
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(lead),
            request_id: request_id.into(),
        })
        .await
        .expect("create lead")
        .into_inner()
}

async fn move_lead(
    clients: &AuthedClients,
    id: &str,
    stage: &str,
) -> Result<pb::Lead, tonic::Status> {
    clients
        .leads
        .clone()
        .move_lead(pb::MoveLeadRequest {
            id: id.into(),
            stage: stage.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn list_leads(clients: &AuthedClients, filter: &str) -> pb::ListLeadsResponse {
    clients
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest {
            filter: filter.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list leads")
        .into_inner()
}

async fn history(clients: &AuthedClients, id: &str) -> Result<Vec<pb::StageChange>, tonic::Status> {
    clients
        .leads
        .clone()
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: id.into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .map(|r| r.into_inner().stage_changes)
}

async fn import(
    clients: &AuthedClients,
    external_id: &str,
    pipeline_id: &str,
) -> Result<pb::ImportLeadsResponse, tonic::Status> {
    let message = pb::ImportLeadsRequest {
        external_id: external_id.into(),
        lead: Some(pb::Lead {
            pipeline_id: pipeline_id.into(),
            ..new_lead("imported")
        }),
        history: vec![],
        revisions: vec![],
        update_existing: false,
    };
    clients
        .leads
        .clone()
        .import_leads(futures::stream::iter(vec![message]))
        .await
        .map(|r| r.into_inner())
}

fn eur(units: i64) -> Option<pb::Money> {
    Some(money("EUR", units))
}

fn timestamp(time: std::time::SystemTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(time))
}

async fn metrics(
    clients: &AuthedClients,
    pipeline_id: &str,
) -> Result<pb::PipelineMetrics, tonic::Status> {
    clients
        .forecasts
        .clone()
        .get_pipeline_metrics(pb::GetPipelineMetricsRequest {
            pipeline_id: pipeline_id.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn stuck(
    clients: &AuthedClients,
    pipeline_id: &str,
) -> Result<pb::ListStuckLeadsResponse, tonic::Status> {
    clients
        .forecasts
        .clone()
        .list_stuck_leads(pb::ListStuckLeadsRequest {
            pipeline_id: pipeline_id.into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn explain(
    clients: &AuthedClients,
    id: &str,
) -> Result<pb::WinProbabilityExplanation, tonic::Status> {
    clients
        .forecasts
        .clone()
        .explain_win_probability(pb::ExplainWinProbabilityRequest { id: id.into() })
        .await
        .map(|r| r.into_inner())
}

async fn forecast(
    clients: &AuthedClients,
    pipeline_id: &str,
) -> Result<pb::Forecast, tonic::Status> {
    clients
        .forecasts
        .clone()
        .get_forecast(pb::GetForecastRequest {
            pipeline_id: pipeline_id.into(),
            currency_code: "EUR".into(),
            simulations: 200,
            seed: 1,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn backtest(
    clients: &AuthedClients,
    pipeline_id: &str,
    as_of: std::time::SystemTime,
) -> Result<pb::Backtest, tonic::Status> {
    clients
        .forecasts
        .clone()
        .backtest_forecast(pb::BacktestForecastRequest {
            pipeline_id: pipeline_id.into(),
            as_of: timestamp(as_of),
            currency_code: "EUR".into(),
            simulations: 200,
            seed: 1,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn pipeline_ids(clients: &AuthedClients) -> Vec<String> {
    clients
        .pipelines
        .clone()
        .list_pipelines(pb::ListPipelinesRequest {
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("list pipelines")
        .into_inner()
        .pipelines
        .into_iter()
        .map(|p| p.id)
        .collect()
}

async fn tenant_b_cannot_touch_tenant_a_through_any_rpc(app: TestApp) {
    let app = restart_with_auth(app).await;
    let a_key = create_key(&app, "acme", Role::Admin).await;
    // B holds the strongest role: tenancy, not the role, is what walls A off.
    let b_key = create_key(&app, "globex", Role::Admin).await;
    let a = app.clients_for(&a_key).await;
    let b = app.clients_for(&b_key).await;

    // B is watching, live and from the start, before A does anything.
    let mut b_live = watch(&b, pb::WatchStageChangesRequest::default())
        .await
        .expect("B watches");

    // Tenant A: a custom pipeline, a lead in it, and a default-pipeline lead that has moved.
    a.pipelines
        .clone()
        .create_pipeline(pb::CreatePipelineRequest {
            pipeline: Some(small_pipeline("enterprise")),
        })
        .await
        .expect("A creates a pipeline");
    let a_custom = create_lead(
        &a,
        pb::Lead {
            pipeline_id: "enterprise".into(),
            owner: "alice".into(),
            amount: eur(5000),
            ..new_lead("A enterprise deal")
        },
        "",
    )
    .await;
    let a_lead = create_lead(
        &a,
        pb::Lead {
            owner: "alice".into(),
            amount: eur(10_000),
            ..contacted("A deal")
        },
        "shared-request-id",
    )
    .await;
    let a_lead = move_lead(&a, &a_lead.id, "qualification")
        .await
        .expect("A moves");
    let a_import = import(&a, "crm-1", "default").await.expect("A imports");
    assert_eq!(a_import.imported, 1, "{a_import:?}");
    let a_ids = [a_lead.id.clone(), a_custom.id.clone()];
    // Forecasts see A's open leads, for A.
    assert!(
        metrics(&a, "default")
            .await
            .expect("A's metrics")
            .open_count
            > 0
    );
    assert!(
        metrics(&a, "enterprise")
            .await
            .expect("A's metrics")
            .open_count
            > 0
    );
    assert!(
        forecast(&a, "default")
            .await
            .expect("A's forecast")
            .open_leads
            > 0
    );
    assert!(
        forecast(&a, "enterprise")
            .await
            .expect("A's forecast")
            .open_leads
            > 0
    );
    explain(&a, &a_lead.id).await.expect("A explains its lead");
    // A moment at which A's leads are open; they close later, so a backtest from here scores them.
    app.clock.advance(chrono::TimeDelta::seconds(1));
    let a_open_time = std::time::SystemTime::from(app.clock.now());
    app.clock.advance(chrono::TimeDelta::seconds(1));

    // B's watch on A's lead id, opened after A's changes, replaying from the start.
    let mut b_on_a_lead = watch(
        &b,
        pb::WatchStageChangesRequest {
            after_sequence: Some(0),
            lead_id: a_lead.id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("B watches A's lead id");

    // GetLead, UpdateLead, MoveLead, CheckMove, ListStageChanges, DeleteLead: NOT_FOUND.
    for id in &a_ids {
        let mut leads = b.leads.clone();
        assert_eq!(
            code(
                leads
                    .get_lead(pb::GetLeadRequest {
                        as_of: None,
                        id: id.clone()
                    })
                    .await
            ),
            Code::NotFound
        );
        let update = leads
            .update_lead(pb::UpdateLeadRequest {
                lead: Some(pb::Lead {
                    id: id.clone(),
                    title: "stolen".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["title".into()],
                }),
            })
            .await;
        assert_eq!(code(update), Code::NotFound);
        assert_eq!(
            code(move_lead(&b, id, "qualification").await),
            Code::NotFound
        );
        assert_eq!(code(move_lead(&b, id, "won").await), Code::NotFound);
        let check = leads
            .check_move(pb::CheckMoveRequest {
                id: id.clone(),
                stage: "qualification".into(),
            })
            .await;
        assert_eq!(code(check), Code::NotFound);
        assert_eq!(code(history(&b, id).await), Code::NotFound);
        let delete = leads
            .delete_lead(pb::DeleteLeadRequest {
                id: id.clone(),
                etag: String::new(),
            })
            .await;
        assert_eq!(code(delete), Code::NotFound);
        assert_eq!(code(explain(&b, id).await), Code::NotFound);
    }

    // ListLeads: none of A's leads, under any filter, and none counted.
    for filter in [
        "",
        "owner = \"alice\"",
        "pipeline_id = \"enterprise\"",
        "stage = \"qualification\"",
    ] {
        let page = list_leads(&b, filter).await;
        assert!(page.leads.is_empty(), "{filter:?}: {:?}", page.leads);
        assert_eq!(page.total_size, 0, "{filter:?}");
    }

    // A's custom pipeline: invisible, and B cannot update it or create leads in it.
    let mut b_pipelines = b.pipelines.clone();
    let get = b_pipelines
        .get_pipeline(pb::GetPipelineRequest {
            id: "enterprise".into(),
        })
        .await;
    assert_eq!(code(get), Code::NotFound);
    let update = b_pipelines
        .update_pipeline(pb::UpdatePipelineRequest {
            pipeline: Some(pb::Pipeline {
                display_name: "taken over".into(),
                ..small_pipeline("enterprise")
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await;
    assert_eq!(code(update), Code::NotFound);
    assert_eq!(pipeline_ids(&b).await, vec!["default".to_string()]);

    // Metrics, stuck leads and forecasts: A's pipeline does not exist for B, and B's own
    // counts none of A's leads.
    assert_eq!(code(metrics(&b, "enterprise").await), Code::NotFound);
    assert_eq!(code(stuck(&b, "enterprise").await), Code::NotFound);
    assert_eq!(code(forecast(&b, "enterprise").await), Code::NotFound);
    assert_eq!(
        code(backtest(&b, "enterprise", a_open_time).await),
        Code::NotFound
    );
    let b_metrics = metrics(&b, "default").await.expect("B's metrics");
    assert_eq!(b_metrics.open_count, 0, "{b_metrics:?}");
    assert!(b_metrics.stages.iter().all(|s| s.open_count == 0));
    let b_stuck = stuck(&b, "default").await.expect("B's stuck leads");
    assert_eq!(b_stuck.total_size, 0);
    assert!(b_stuck.stuck_leads.is_empty());
    assert_eq!(
        forecast(&b, "default")
            .await
            .expect("B's forecast")
            .open_leads,
        0
    );
    let create_in_a_pipeline = b
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(pb::Lead {
                pipeline_id: "enterprise".into(),
                ..new_lead("B in A's pipeline")
            }),
            request_id: String::new(),
        })
        .await;
    let create_in_no_pipeline = b
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(pb::Lead {
                pipeline_id: "nonexistent".into(),
                ..new_lead("B in no pipeline")
            }),
            request_id: String::new(),
        })
        .await;
    assert_eq!(
        code(create_in_a_pipeline),
        code(create_in_no_pipeline),
        "A's pipeline looks to B like one that does not exist"
    );
    match import(&b, "crm-2", "enterprise").await {
        Ok(response) => assert_eq!((response.imported, response.failed), (0, 1), "{response:?}"),
        Err(status) => assert_ne!(status.code(), Code::Ok),
    }

    // B's own default pipeline is its own: renaming it leaves A's alone.
    b_pipelines
        .update_pipeline(pb::UpdatePipelineRequest {
            pipeline: Some(pb::Pipeline {
                id: "default".into(),
                display_name: "Globex pipeline".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .expect("B renames its default pipeline");
    // And the id A used is free in B's namespace.
    b_pipelines
        .create_pipeline(pb::CreatePipelineRequest {
            pipeline: Some(small_pipeline("enterprise")),
        })
        .await
        .expect("B creates its own enterprise pipeline");

    // Idempotency keys are per tenant: A's request_id gives B a new lead of its own, not A's
    // lead and not ALREADY_EXISTS.
    let b_lead = create_lead(&b, contacted("B deal"), "shared-request-id").await;
    assert!(!a_ids.contains(&b_lead.id));
    assert_eq!(b_lead.title, "B deal");

    // Imported external ids are per tenant too.
    let b_import = import(&b, "crm-1", "default").await.expect("B imports");
    assert_eq!((b_import.imported, b_import.already_imported), (1, 0));

    // Streams: B's live stream skipped all of A's events; its first event is B's own lead.
    let first = next_event(&mut b_live).await;
    assert_eq!(first.lead_id, b_lead.id, "{first:?}");
    assert_eq!(first.sequence, 1, "B's sequences are its own");
    // B's replay from the start holds only B's own changes.
    let mut b_replay = watch(
        &b,
        pb::WatchStageChangesRequest {
            after_sequence: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("B replays");
    let replayed = next_event(&mut b_replay).await;
    assert_eq!(replayed.lead_id, b_lead.id);
    // A moves again while B's streams are open: B receives none of it.
    move_lead(&a, &a_lead.id, "lost")
        .await
        .expect_err("lost needs a reason");
    a.leads
        .clone()
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                id: a_lead.id.clone(),
                lost_reason: "budget".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["lost_reason".into()],
            }),
        })
        .await
        .expect("A records a lost reason");
    move_lead(&a, &a_lead.id, "closed_lost")
        .await
        .expect("A closes its lead");
    move_lead(&a, &a_custom.id, "won")
        .await
        .expect("A wins its enterprise deal");
    assert_silent(&mut b_live, "B's live stream after A's moves").await;
    assert_silent(&mut b_replay, "B's replay after A's moves").await;
    assert_silent(&mut b_on_a_lead, "B's stream filtered on A's lead").await;
    // Backtests from when A's leads were open: A's scores them, B's does not see them.
    let a_backtest = backtest(&a, "default", a_open_time)
        .await
        .expect("A's backtest");
    assert!(a_backtest.scored_leads > 0, "{a_backtest:?}");
    let b_backtest = backtest(&b, "default", a_open_time)
        .await
        .expect("B's backtest");
    assert_eq!(b_backtest.scored_leads, 0, "{b_backtest:?}");
    // B's stream is alive: B's own move arrives.
    move_lead(&b, &b_lead.id, "qualification")
        .await
        .expect("B moves its own lead");
    let own = next_event(&mut b_live).await;
    assert_eq!(
        (own.lead_id.as_str(), own.to_stage.as_str()),
        (b_lead.id.as_str(), "qualification")
    );

    // Nothing of A changed: its leads, history and pipeline are intact.
    let list = list_leads(&a, "").await;
    assert_eq!(list.total_size, 3, "A's two leads and its import");
    assert!(list.leads.iter().all(|l| l.title != "stolen"));
    let a_history = history(&a, &a_lead.id).await.expect("A's history");
    assert_eq!(
        stage_path(&a_history),
        vec![
            (String::new(), "lead_generation".into()),
            ("lead_generation".into(), "qualification".into()),
            ("qualification".into(), "closed_lost".into()),
        ]
    );
    let a_pipeline = a
        .pipelines
        .clone()
        .get_pipeline(pb::GetPipelineRequest {
            id: "enterprise".into(),
        })
        .await
        .expect("A's pipeline")
        .into_inner();
    assert_eq!(a_pipeline.display_name, "A's secret pipeline");
    let a_default = a
        .pipelines
        .clone()
        .get_pipeline(pb::GetPipelineRequest {
            id: "default".into(),
        })
        .await
        .expect("A's default pipeline")
        .into_inner();
    assert_ne!(a_default.display_name, "Globex pipeline");
    assert_eq!(pipeline_ids(&a).await, vec!["default", "enterprise"]);
    // And B sees exactly its own.
    let b_list = list_leads(&b, "").await;
    assert_eq!(b_list.total_size, 2, "B's lead and its import");
    assert!(b_list.leads.iter().all(|l| !a_ids.contains(&l.id)));
}

async fn calls_without_a_valid_key_are_unauthenticated(app: TestApp) {
    let app = restart_with_auth(app).await;
    let good = create_key(&app, "acme", Role::Admin).await;
    let other = create_key(&app, "globex", Role::Admin).await;
    let lead = create_lead(&app.clients_for(&good).await, contacted("mine"), "").await;

    // A well-formed key whose secret is wrong, and one that names another tenant's key id.
    let forged = {
        let (head, secret) = good.key.rsplit_once('_').unwrap();
        let flipped = if secret.starts_with('a') { "b" } else { "a" };
        format!("{head}_{flipped}{}", &secret[1..])
    };
    let other_id = other.name.rsplit_once('_').unwrap().1;
    let (_, good_secret) = good.key.rsplit_once('_').unwrap();
    let wrong_tenant = format!("lp_acme_{other_id}_{good_secret}");
    let bearers = [
        ("no key", Bearer::none()),
        ("empty", Bearer::raw("")),
        ("no scheme", Bearer::raw(&good.key)),
        ("basic", Bearer::raw(&format!("Basic {}", good.key))),
        ("garbage", Bearer::raw("Bearer not-a-key")),
        ("bearer only", Bearer::raw("Bearer")),
        ("forged secret", Bearer::raw(&format!("Bearer {forged}"))),
        (
            "wrong tenant",
            Bearer::raw(&format!("Bearer {wrong_tenant}")),
        ),
        (
            "unknown id",
            Bearer::raw(&format!("Bearer lp_acme_aaaaaaaaaa_{good_secret}")),
        ),
    ];
    for (what, bearer) in bearers {
        let clients = app.clients_with(bearer).await;
        let mut leads = clients.leads.clone();
        let get = leads
            .get_lead(pb::GetLeadRequest {
                as_of: None,
                id: lead.id.clone(),
            })
            .await;
        assert_eq!(code(get), Code::Unauthenticated, "{what}: GetLead");
        let list = leads.list_leads(pb::ListLeadsRequest::default()).await;
        assert_eq!(code(list), Code::Unauthenticated, "{what}: ListLeads");
        let create = leads
            .create_lead(pb::CreateLeadRequest {
                lead: Some(new_lead("anonymous")),
                request_id: String::new(),
            })
            .await;
        assert_eq!(code(create), Code::Unauthenticated, "{what}: CreateLead");
        let watch = watch(&clients, pb::WatchStageChangesRequest::default()).await;
        assert_eq!(
            code(watch),
            Code::Unauthenticated,
            "{what}: WatchStageChanges"
        );
        let pipelines = clients
            .pipelines
            .clone()
            .list_pipelines(pb::ListPipelinesRequest::default())
            .await;
        assert_eq!(
            code(pipelines),
            Code::Unauthenticated,
            "{what}: ListPipelines"
        );
        assert_eq!(
            code(forecast(&clients, "default").await),
            Code::Unauthenticated,
            "{what}: GetForecast"
        );
        assert_eq!(
            code(explain(&clients, &lead.id).await),
            Code::Unauthenticated,
            "{what}: ExplainWinProbability"
        );
    }

    // Health stays open, for load balancers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "leadpipe.v1.LeadService".into(),
        })
        .await
        .expect("health needs no key")
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Nothing was created by the refused calls.
    let list = list_leads(&app.clients_for(&good).await, "").await;
    assert_eq!(list.total_size, 1);
}

/// Sends every listed `authorization` value, in order, with each call.
#[derive(Clone)]
struct EveryValue(Vec<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for EveryValue {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        for value in &self.0 {
            request
                .metadata_mut()
                .append("authorization", value.clone());
        }
        Ok(request)
    }
}

async fn ambiguous_credentials_are_unauthenticated(app: TestApp) {
    use leadpipe::grpc::pb::lead_service_client::LeadServiceClient;

    let app = restart_with_auth(app).await;
    let acme = create_key(&app, "acme", Role::Admin).await;
    let globex = create_key(&app, "globex", Role::Admin).await;
    let lead = create_lead(&app.clients_for(&acme).await, contacted("acme's"), "").await;
    let bearer = |key: &TestKey| format!("Bearer {}", key.key).parse().unwrap();
    let cases = [
        ("two tenants' keys", vec![bearer(&acme), bearer(&globex)]),
        ("the other order", vec![bearer(&globex), bearer(&acme)]),
        ("one key twice", vec![bearer(&acme), bearer(&acme)]),
        (
            "a key and garbage",
            vec![bearer(&acme), "Bearer not-a-key".parse().unwrap()],
        ),
    ];
    for (what, values) in cases {
        let mut leads =
            LeadServiceClient::with_interceptor(app.channel().await, EveryValue(values));
        let status = leads
            .get_lead(pb::GetLeadRequest {
                as_of: None,
                id: lead.id.clone(),
            })
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(
            status.message().contains("send exactly one"),
            "{what}: {status:?}"
        );
        let created = leads
            .create_lead(pb::CreateLeadRequest {
                lead: Some(new_lead("ambiguous")),
                request_id: String::new(),
            })
            .await;
        assert_eq!(code(created), Code::Unauthenticated, "{what}: CreateLead");
        let watch = leads
            .watch_stage_changes(pb::WatchStageChangesRequest::default())
            .await;
        assert_eq!(
            code(watch),
            Code::Unauthenticated,
            "{what}: WatchStageChanges"
        );
    }
    // Nothing was written by the refused calls, in either tenant.
    assert_eq!(
        list_leads(&app.clients_for(&acme).await, "")
            .await
            .total_size,
        1
    );
    assert_eq!(
        list_leads(&app.clients_for(&globex).await, "")
            .await
            .total_size,
        0
    );
}

async fn revocation_takes_effect_at_once(app: TestApp) {
    let app = restart_with_auth(app).await;
    let doomed = create_key(&app, "acme", Role::Writer).await;
    let kept = create_key(&app, "acme", Role::Writer).await;
    // Connections opened before the revocation, as a long-lived client has.
    let doomed_clients = app.clients_for(&doomed).await;
    let kept_clients = app.clients_for(&kept).await;
    let lead = create_lead(&doomed_clients, contacted("before"), "").await;

    revoke_key(&app, &doomed).await;

    let mut leads = doomed_clients.leads.clone();
    let get = leads
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: lead.id.clone(),
        })
        .await;
    let status = get.expect_err("revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("revoked"), "{status:?}");
    assert_eq!(
        code(move_lead(&doomed_clients, &lead.id, "qualification").await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(watch(&doomed_clients, pb::WatchStageChangesRequest::default()).await),
        Code::Unauthenticated
    );
    // The tenant's other key still works, on the same server.
    move_lead(&kept_clients, &lead.id, "qualification")
        .await
        .expect("the other key still works");
    // A new connection with the revoked key is refused too.
    let fresh = app.clients_for(&doomed).await;
    assert_eq!(code(history(&fresh, &lead.id).await), Code::Unauthenticated);
}

/// `leadpipe keys revoke` is another process: each replica learns of it only from the database.
async fn revocation_ends_open_streams_on_every_replica(app: TestApp) {
    let backend = app.backend;
    let database_url = app.database_url.clone();
    let dir = app.stop().await;
    let mut settings = settings_with_auth(&database_url);
    settings.event_poll_interval = Duration::from_millis(200);
    let app = spawn_app_with(backend, settings.clone(), dir).await;
    let replica = spawn_app_with(backend, settings, None).await;

    let doomed = create_key(&app, "acme", Role::Reader).await;
    let kept = create_key(&app, "acme", Role::Writer).await;
    let writer = app.clients_for(&kept).await;
    let mut streams = Vec::new();
    for server in [&app, &replica] {
        let doomed_stream = watch(
            &server.clients_for(&doomed).await,
            pb::WatchStageChangesRequest::default(),
        )
        .await
        .expect("the key is valid when the stream opens");
        let kept_stream = watch(
            &server.clients_for(&kept).await,
            pb::WatchStageChangesRequest::default(),
        )
        .await
        .expect("open");
        streams.push((doomed_stream, kept_stream));
    }
    let lead = create_lead(&writer, contacted("watched"), "").await;
    for (doomed_stream, kept_stream) in &mut streams {
        assert_eq!(next_event(doomed_stream).await.lead_id, lead.id);
        assert_eq!(next_event(kept_stream).await.lead_id, lead.id);
    }

    revoke_key(&app, &doomed).await;

    for (doomed_stream, _) in &mut streams {
        let ended = tokio::time::timeout(Duration::from_secs(20), doomed_stream.message())
            .await
            .expect("the revoked key's stream ends within the bound");
        let status = ended.expect_err("the stream ends with an error");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("revoked"), "{status:?}");
    }
    // The other key's streams still deliver, on both replicas.
    let later = create_lead(&writer, contacted("after the revocation"), "").await;
    for (_, kept_stream) in &mut streams {
        assert_eq!(next_event(kept_stream).await.lead_id, later.id);
    }
}

async fn roles_limit_what_a_key_may_do(app: TestApp) {
    let app = restart_with_auth(app).await;
    let reader_key = create_key(&app, "acme", Role::Reader).await;
    let writer_key = create_key(&app, "acme", Role::Writer).await;
    let admin_key = create_key(&app, "acme", Role::Admin).await;
    let reader = app.clients_for(&reader_key).await;
    let writer = app.clients_for(&writer_key).await;
    let admin = app.clients_for(&admin_key).await;

    let mut writer_stream = watch(&writer, pb::WatchStageChangesRequest::default())
        .await
        .expect("writers watch");

    // The writer changes leads; the actor on history and events is the writer key.
    let lead = create_lead(&writer, contacted("by writer"), "").await;
    let lead = move_lead(&writer, &lead.id, "qualification")
        .await
        .expect("writer moves");
    let changes = history(&writer, &lead.id).await.expect("history");
    assert_eq!(changes.len(), 2);
    for change in &changes {
        assert_eq!(change.actor, writer_key.actor(), "{change:?}");
    }
    let created = next_event(&mut writer_stream).await;
    let moved = next_event(&mut writer_stream).await;
    assert_eq!(created.actor, writer_key.actor());
    assert_eq!(moved.actor, writer_key.actor());
    assert_eq!(moved.to_stage, "qualification");

    // The reader reads everything: leads, lists, checks, history, streams, pipelines.
    let mut leads = reader.leads.clone();
    leads
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: lead.id.clone(),
        })
        .await
        .expect("reader gets");
    assert_eq!(list_leads(&reader, "").await.total_size, 1);
    leads
        .check_move(pb::CheckMoveRequest {
            id: lead.id.clone(),
            stage: "proposal".into(),
        })
        .await
        .expect("reader checks a move");
    history(&reader, &lead.id)
        .await
        .expect("reader reads history");
    let mut reader_stream = watch(
        &reader,
        pb::WatchStageChangesRequest {
            after_sequence: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("reader watches");
    assert_eq!(next_event(&mut reader_stream).await.lead_id, lead.id);
    assert_eq!(pipeline_ids(&reader).await, vec!["default"]);
    reader
        .pipelines
        .clone()
        .get_pipeline(pb::GetPipelineRequest {
            id: "default".into(),
        })
        .await
        .expect("reader gets a pipeline");

    // ... but changes nothing.
    let create = leads
        .create_lead(pb::CreateLeadRequest {
            lead: Some(new_lead("by reader")),
            request_id: String::new(),
        })
        .await;
    assert_eq!(code(create), Code::PermissionDenied, "reader CreateLead");
    let update = leads
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                id: lead.id.clone(),
                title: "renamed".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["title".into()],
            }),
        })
        .await;
    assert_eq!(code(update), Code::PermissionDenied, "reader UpdateLead");
    assert_eq!(
        code(move_lead(&reader, &lead.id, "lead_generation").await),
        Code::PermissionDenied,
        "reader MoveLead"
    );
    let delete = leads
        .delete_lead(pb::DeleteLeadRequest {
            id: lead.id.clone(),
            etag: String::new(),
        })
        .await;
    assert_eq!(code(delete), Code::PermissionDenied, "reader DeleteLead");
    assert_eq!(
        code(import(&reader, "crm-r", "default").await),
        Code::PermissionDenied,
        "reader ImportLeads"
    );

    // Writers change leads but not pipelines; admins do both.
    let create_pipeline = |clients: &AuthedClients, id: &str| {
        let mut pipelines = clients.pipelines.clone();
        let pipeline = small_pipeline(id);
        async move {
            pipelines
                .create_pipeline(pb::CreatePipelineRequest {
                    pipeline: Some(pipeline),
                })
                .await
        }
    };
    assert_eq!(
        code(create_pipeline(&reader, "by_reader").await),
        Code::PermissionDenied
    );
    let status = create_pipeline(&writer, "by_writer")
        .await
        .expect_err("writers cannot create pipelines");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("admin"), "{status:?}");
    let rename = |clients: &AuthedClients| {
        let mut pipelines = clients.pipelines.clone();
        async move {
            pipelines
                .update_pipeline(pb::UpdatePipelineRequest {
                    pipeline: Some(pb::Pipeline {
                        id: "default".into(),
                        display_name: "Renamed".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["display_name".into()],
                    }),
                })
                .await
        }
    };
    assert_eq!(code(rename(&writer).await), Code::PermissionDenied);
    import(&writer, "crm-w", "default")
        .await
        .expect("writers import");
    create_pipeline(&admin, "by_admin")
        .await
        .expect("admins create pipelines");
    rename(&admin).await.expect("admins update pipelines");
    let lead = create_lead(&admin, contacted("by admin"), "").await;
    let changes = history(&reader, &lead.id).await.expect("history");
    assert_eq!(changes[0].actor, admin_key.actor());
}

async fn auto_mode_requires_keys_once_one_exists(app: TestApp) {
    // Started without keys on loopback (the default, auto mode): open, as the default tenant.
    let lead = create(&app, contacted("anonymous")).await;
    assert_eq!(stage_changes(&app, &lead.id).await[0].actor, "anonymous");

    // A key now exists; on its next start the server requires keys, still in auto mode.
    let key = create_key(&app, "default", Role::Writer).await;
    let backend = app.backend;
    let database_url = app.database_url.clone();
    let dir = app.stop().await;
    let app = spawn_app_with(backend, settings_for(&database_url), dir).await;
    let anonymous = app.clients_with(Bearer::none()).await;
    assert_eq!(
        code(
            anonymous
                .leads
                .clone()
                .get_lead(pb::GetLeadRequest {
                    as_of: None,
                    id: lead.id.clone()
                })
                .await
        ),
        Code::Unauthenticated
    );
    // The key of the default tenant sees what was created before keys existed.
    let clients = app.clients_for(&key).await;
    let moved = move_lead(&clients, &lead.id, "qualification")
        .await
        .expect("move with the key");
    assert_eq!(moved.id, lead.id);
    let changes = history(&clients, &lead.id).await.expect("history");
    assert_eq!(changes[1].actor, key.actor());
}

// ---- the binary ------------------------------------------------------------------------

fn leadpipe(dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_leadpipe"));
    command
        .env_remove("LEADPIPE_AUTH")
        .env_remove("LEADPIPE_LISTEN")
        .env(
            "LEADPIPE_DATABASE_URL",
            format!("sqlite://{}/leadpipe.db", dir.display()),
        )
        .env("RUST_LOG", "warn");
    command
}

/// In auto mode, with no key, a non-loopback address is refused before the server binds it.
#[test]
fn auto_mode_refuses_a_public_address_without_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = leadpipe(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0", "--auth", "auto"])
        .output()
        .expect("run leadpipe");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to serve on 0.0.0.0:0 without authentication")
            && stderr.contains("leadpipe keys create")
            && stderr.contains("--auth disabled"),
        "{stderr}"
    );
    // A revoked key does not count.
    let created = leadpipe(dir.path())
        .args(["keys", "create", "--tenant", "acme", "--role", "admin"])
        .output()
        .expect("create a key");
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).expect("utf-8");
    let name = key
        .trim()
        .strip_prefix("lp_")
        .unwrap()
        .rsplit_once('_')
        .unwrap()
        .0
        .to_owned();
    let revoked = leadpipe(dir.path())
        .args(["keys", "revoke", &name])
        .output()
        .expect("revoke");
    assert!(revoked.status.success(), "{revoked:?}");
    let output = leadpipe(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run leadpipe");
    assert!(!output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("refusing to serve"));
}

/// `keys create` prints the key once; `keys list` never shows secrets; `keys revoke` takes the
/// `<tenant>_<id>` or the bare id, and refuses names that are not key ids.
#[test]
fn keys_commands_create_list_and_revoke() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        let output = leadpipe(dir.path()).args(args).output().expect("run");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, key, _) = run(&[
        "keys", "create", "--tenant", "acme_eu", "--role", "writer", "--label", "ci bot",
    ]);
    assert!(ok);
    let key = key.trim().to_owned();
    assert!(key.starts_with("lp_acme_eu_"), "{key}");
    assert_eq!(key.lines().count(), 1, "only the key on stdout");
    let name = key
        .strip_prefix("lp_")
        .unwrap()
        .rsplit_once('_')
        .unwrap()
        .0
        .to_owned();
    let id = name.rsplit_once('_').unwrap().1.to_owned();

    let (ok, listed, _) = run(&["keys", "list"]);
    assert!(ok);
    assert!(listed.contains(&name) && listed.contains("writer") && listed.contains("ci bot"));
    let secret = key.rsplit_once('_').unwrap().1;
    assert!(!listed.contains(secret), "list shows no secret");
    let (ok, other_tenant, _) = run(&["keys", "list", "--tenant", "globex"]);
    assert!(ok);
    assert!(!other_tenant.contains(&name));

    let (ok, _, stderr) = run(&["keys", "revoke", "not-a-key"]);
    assert!(!ok);
    assert!(stderr.contains("not a key id"), "{stderr}");
    let (ok, revoked, _) = run(&["keys", "revoke", &id]);
    assert!(ok);
    assert!(revoked.contains(&format!("revoked {name}")), "{revoked}");
    let (ok, listed, _) = run(&["keys", "list", "--tenant", "acme_eu"]);
    assert!(ok);
    let row = listed
        .lines()
        .find(|l| l.starts_with(&name))
        .expect("listed");
    assert!(
        !row.contains(" - "),
        "revoked keys show their revocation time: {row}"
    );

    let (ok, _, stderr) = run(&[
        "keys",
        "create",
        "--tenant",
        "Not Valid",
        "--role",
        "reader",
    ]);
    assert!(!ok);
    assert!(stderr.contains("--tenant"), "{stderr}");
}
