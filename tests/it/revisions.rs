//! Lead revisions: every write appends the lead as it was after it, listed by
//! ListLeadRevisions; the slippage fields; and the backfill of existing leads.

use crate::common;

use common::*;
use leadpipe::grpc::pb;
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

on_both_backends!(
    every_write_appends_one_revision_with_what_changed,
    revisions_page_oldest_first_and_refuse_bad_requests,
    close_date_pushes_are_counted,
    imported_history_becomes_revisions,
    the_migration_backfills_existing_leads,
    a_backfilled_history_longer_than_the_version_numbers_the_next_revision_after_it,
    get_as_of_reads_the_lead_as_it_stood_then,
    the_lead_as_of_a_time_is_read_through_the_lead_time_index,
    retention_keeps_the_state_at_the_cutoff_and_refuses_older_reads,
);

fn day(n: i64) -> Timestamp {
    Timestamp {
        seconds: 1_900_000_000 + n * 86_400,
        nanos: 0,
    }
}

async fn update(app: &TestApp, lead: pb::Lead, paths: &[&str]) -> pb::Lead {
    app.leads
        .clone()
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(lead),
            update_mask: Some(FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        })
        .await
        .expect("update")
        .into_inner()
}

pub async fn revisions(app: &TestApp, lead_id: &str) -> Vec<pb::LeadRevision> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .leads
            .clone()
            .list_lead_revisions(pb::ListLeadRevisionsRequest {
                lead_id: lead_id.into(),
                page_size: 2,
                page_token,
            })
            .await
            .expect("list revisions")
            .into_inner();
        all.extend(page.revisions);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

fn paths(revision: &pb::LeadRevision) -> Vec<&str> {
    revision
        .changed_fields
        .as_ref()
        .map(|m| m.paths.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

async fn every_write_appends_one_revision_with_what_changed(app: TestApp) {
    let mut lead = new_lead("Acme renewal");
    lead.owner = "sam".into();
    lead.contact_name = "Dana".into();
    lead.amount = Some(money("EUR", 1000));
    lead.expected_close_time = Some(day(10));
    let created = create(&app, lead).await;

    let mut change = created.clone();
    change.amount = Some(money("EUR", 1500));
    let raised = update(&app, change, &["amount"]).await;
    // Writing the values the lead already has records nothing.
    let same = update(&app, raised.clone(), &["amount", "owner"]).await;
    assert_eq!(same.etag, raised.etag);
    let mut change = raised.clone();
    change.owner = "kim".into();
    change.labels.insert("region".into(), "emea".into());
    let reassigned = update(&app, change, &["owner", "labels"]).await;
    let moved = move_to(&app, &created.id, "qualification")
        .await
        .expect("move");

    let history = app
        .leads
        .clone()
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: created.id.clone(),
            ..Default::default()
        })
        .await
        .expect("stage changes")
        .into_inner()
        .stage_changes;
    let actor = history[0].actor.clone();

    app.leads
        .clone()
        .delete_lead(pb::DeleteLeadRequest {
            id: created.id.clone(),
            etag: moved.etag.clone(),
        })
        .await
        .expect("delete");

    let all = revisions(&app, &created.id).await;
    let summary: Vec<(i64, i32, Vec<&str>)> =
        all.iter().map(|r| (r.revision, r.kind, paths(r))).collect();
    use pb::LeadRevisionKind as K;
    assert_eq!(
        summary,
        vec![
            (
                1,
                K::Created as i32,
                vec![
                    "title",
                    "contact_name",
                    "owner",
                    "pipeline_id",
                    "stage",
                    "amount",
                    "expected_close_time"
                ]
            ),
            (2, K::Updated as i32, vec!["amount"]),
            (3, K::Updated as i32, vec!["owner", "labels"]),
            (4, K::Moved as i32, vec!["stage"]),
            (5, K::Deleted as i32, vec![]),
        ]
    );
    // Each revision holds the whole lead as the write left it.
    let leads: Vec<&pb::Lead> = all.iter().map(|r| r.lead.as_ref().unwrap()).collect();
    assert_eq!(leads[0], &created);
    assert_eq!(leads[1], &raised);
    assert_eq!(leads[2], &reassigned);
    assert_eq!(leads[3], &moved);
    assert_eq!(leads[4], &moved, "a deletion keeps the last state");
    assert_eq!(
        (all[0].from_stage.as_str(), all[0].to_stage.as_str()),
        ("", "lead_generation")
    );
    assert_eq!(
        (all[1].from_stage.as_str(), all[1].to_stage.as_str()),
        ("", "")
    );
    assert_eq!(
        (all[3].from_stage.as_str(), all[3].to_stage.as_str()),
        ("lead_generation", "qualification")
    );
    assert_eq!(all[0].change_time, created.create_time);
    assert_eq!(all[1].change_time, raised.update_time);
    assert_eq!(all[3].change_time, history[1].change_time);
    let t = |r: &pb::LeadRevision| r.change_time.map(|t| (t.seconds, t.nanos));
    assert!(t(&all[4]) >= t(&all[3]));
    assert!(all.iter().all(|r| r.actor == actor && !actor.is_empty()));

    // The stage history of the deleted lead is gone, as before; its revisions are not.
    let gone = app
        .leads
        .clone()
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: created.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

async fn revisions_page_oldest_first_and_refuse_bad_requests(app: TestApp) {
    let created = create(&app, new_lead("Paged")).await;
    let mut lead = created.clone();
    for n in 0..6 {
        lead.title = format!("Paged {n}");
        lead = update(&app, lead, &["title"]).await;
    }
    let first = app
        .leads
        .clone()
        .list_lead_revisions(pb::ListLeadRevisionsRequest {
            lead_id: created.id.clone(),
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first
            .revisions
            .iter()
            .map(|r| r.revision)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let all = revisions(&app, &created.id).await;
    assert_eq!(
        all.iter().map(|r| r.revision).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(all[6].lead.as_ref().unwrap().title, "Paged 5");

    let status = |request: pb::ListLeadRevisionsRequest| {
        let mut client = app.leads.clone();
        async move { client.list_lead_revisions(request).await.unwrap_err() }
    };
    let unknown = status(pb::ListLeadRevisionsRequest {
        lead_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    })
    .await;
    assert_eq!(unknown.code(), Code::NotFound);
    let bad = status(pb::ListLeadRevisionsRequest {
        lead_id: "not-a-uuid".into(),
        page_size: -1,
        page_token: String::new(),
    })
    .await;
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&bad), ["lead_id", "page_size"]);
    let token = status(pb::ListLeadRevisionsRequest {
        lead_id: created.id.clone(),
        page_size: 1,
        page_token: "garbage".into(),
    })
    .await;
    assert_eq!(token.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&token), ["page_token"]);
}

async fn close_date_pushes_are_counted(app: TestApp) {
    let created = create(&app, new_lead("Slipping")).await;
    assert_eq!(created.close_date_push_count, 0);
    assert_eq!(created.first_expected_close_time, None);
    let mut lead = created;
    let set = |lead: pb::Lead, close: Option<Timestamp>| {
        let mut lead = lead;
        lead.expected_close_time = close;
        let app = &app;
        async move { update(app, lead, &["expected_close_time"]).await }
    };
    lead = set(lead, Some(day(10))).await; // first set: not a push
    assert_eq!(
        (lead.close_date_push_count, lead.first_expected_close_time),
        (0, Some(day(10)))
    );
    lead = set(lead, Some(day(20))).await; // later: a push
    lead = set(lead, Some(day(15))).await; // earlier: not a push
    lead = set(lead, Some(day(30))).await; // later: a push
    assert_eq!(
        (lead.close_date_push_count, lead.first_expected_close_time),
        (2, Some(day(10)))
    );
    let fetched = app
        .leads
        .clone()
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: lead.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, lead);
    let counts: Vec<i64> = revisions(&app, &lead.id)
        .await
        .iter()
        .map(|r| r.lead.as_ref().unwrap().close_date_push_count)
        .collect();
    assert_eq!(counts, [0, 0, 1, 1, 2]);

    // The counters are output only.
    let refused = app
        .leads
        .clone()
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(lead),
            update_mask: Some(FieldMask {
                paths: vec!["close_date_push_count".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}

async fn imported_history_becomes_revisions(app: TestApp) {
    let mut lead = new_lead("From the old CRM");
    lead.amount = Some(money("USD", 5000));
    lead.expected_close_time = Some(day(-5));
    let now = chrono::Utc::now().timestamp();
    let at = |days_ago: i64| Timestamp {
        seconds: now - days_ago * 86_400,
        nanos: 0,
    };
    let step = |from: &str, to: &str, days_ago| pb::ImportedStageChange {
        from_stage: from.into(),
        to_stage: to.into(),
        change_time: Some(at(days_ago)),
        ..Default::default()
    };
    let response = app
        .leads
        .clone()
        .import_leads(futures::stream::iter(vec![pb::ImportLeadsRequest {
            external_id: "crm-1".into(),
            lead: Some(lead),
            history: vec![
                step("", "lead_generation", 30),
                step("lead_generation", "qualification", 20),
                step("qualification", "closed_won", 10),
            ],
            revisions: vec![],
            update_existing: false,
        }]))
        .await
        .expect("import")
        .into_inner();
    assert_eq!(response.imported, 1, "{:?}", response.errors);
    let imported = app
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .leads
        .remove(0);
    let all = revisions(&app, &imported.id).await;
    use pb::LeadRevisionKind as K;
    assert_eq!(
        all.iter()
            .map(|r| (r.kind, r.to_stage.as_str(), r.change_time.unwrap().seconds))
            .collect::<Vec<_>>(),
        [
            (K::Created as i32, "lead_generation", at(30).seconds),
            (K::Moved as i32, "qualification", at(20).seconds),
            (K::Moved as i32, "closed_won", at(10).seconds),
        ]
    );
    assert_eq!(all[2].lead.as_ref(), Some(&imported));
    let first = all[0].lead.as_ref().unwrap();
    assert_eq!(
        (first.stage.as_str(), first.close_time, first.amount.clone()),
        ("lead_generation", None, Some(money("USD", 5000)))
    );
    assert_eq!(paths(&all[2]), ["stage", "close_time"]);
    assert_eq!(imported.first_expected_close_time, Some(day(-5)));
}

/// Leads written before revisions existed get them from the migration: one per stage change,
/// each with the lead's current fields. The migration is rolled back and applied again over
/// leads written through the API.
async fn the_migration_backfills_existing_leads(app: TestApp) {
    let mut lead = new_lead("Old lead");
    lead.contact_name = "Dana".into();
    lead.amount = Some(money("EUR", 700));
    lead.expected_close_time = Some(day(3));
    let created = create(&app, lead).await;
    move_to(&app, &created.id, "qualification")
        .await
        .expect("move");
    let moved = move_to(&app, &created.id, "closed_lost").await;
    assert!(moved.is_err(), "closed_lost needs a lost reason");
    let mut change = created.clone();
    change.etag.clear();
    change.lost_reason = "budget".into();
    update(&app, change, &["lost_reason"]).await;
    let lost = move_to(&app, &created.id, "closed_lost")
        .await
        .expect("lose");
    let history = app
        .leads
        .clone()
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: created.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .stage_changes;

    // The revisions migration, and the six after it: versions raised to the revisions, the
    // stage aggregates, the report keys, the report statistics, the amounts on changes and the
    // open-lead groups.
    let app = restart_after_rolling_back(app, 7, &[]).await;

    let all = revisions(&app, &created.id).await;
    use pb::LeadRevisionKind as K;
    assert_eq!(
        all.iter()
            .map(|r| (r.revision, r.kind, r.to_stage.as_str(), r.change_time))
            .collect::<Vec<_>>(),
        [
            (
                1,
                K::Created as i32,
                "lead_generation",
                history[0].change_time
            ),
            (2, K::Moved as i32, "qualification", history[1].change_time),
            (3, K::Moved as i32, "closed_lost", history[2].change_time),
        ]
    );
    assert_eq!(
        all[2].lead.as_ref(),
        Some(&lost),
        "the last is the lead now"
    );
    assert_eq!(paths(&all[2]), ["stage", "close_time"]);
    let first = all[0].lead.as_ref().unwrap();
    assert_eq!(first.stage, "lead_generation");
    assert_eq!(first.close_time, None);
    assert_eq!(first.amount, Some(money("EUR", 700)));
    let fetched = app
        .leads
        .clone()
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.first_expected_close_time, Some(day(3)));
    assert_eq!(fetched.close_date_push_count, 0);

    // Writes continue the numbering with the lead's version: the update before revisions
    // existed took version 4 without a revision of its own, so the next revision is 5.
    let mut change = fetched.clone();
    change.title = "Old lead, renamed".into();
    update(&app, change, &["title"]).await;
    let all = revisions(&app, &created.id).await;
    assert_eq!(
        all.last().map(|r| (r.revision, paths(r))),
        Some((5, vec!["title"]))
    );
}

async fn get_as_of(app: &TestApp, id: &str, as_of: Timestamp) -> Result<pb::Lead, tonic::Status> {
    app.leads
        .clone()
        .get_lead(pb::GetLeadRequest {
            id: id.into(),
            as_of: Some(as_of),
        })
        .await
        .map(|r| r.into_inner())
}

fn shifted(t: &Timestamp, seconds: i64) -> Timestamp {
    Timestamp {
        seconds: t.seconds + seconds,
        nanos: t.nanos,
    }
}

async fn get_as_of_reads_the_lead_as_it_stood_then(app: TestApp) {
    let hour = chrono::TimeDelta::hours(1);
    let mut lead = new_lead("Time travel");
    lead.amount = Some(money("EUR", 1000));
    let created = create(&app, lead).await;
    let t0 = created.create_time.unwrap();
    app.clock.advance(hour);
    let mut change = created.clone();
    change.amount = Some(money("EUR", 2000));
    let raised = update(&app, change, &["amount"]).await;
    app.clock.advance(hour);
    app.leads
        .clone()
        .delete_lead(pb::DeleteLeadRequest {
            id: created.id.clone(),
            etag: String::new(),
        })
        .await
        .expect("delete");
    let deleted_at = revisions(&app, &created.id)
        .await
        .pop()
        .unwrap()
        .change_time;
    app.clock.advance(hour);

    let before = get_as_of(&app, &created.id, shifted(&t0, -1))
        .await
        .unwrap_err();
    assert_eq!(before.code(), Code::NotFound);
    assert_eq!(get_as_of(&app, &created.id, t0).await.unwrap(), created);
    let half_past = shifted(&t0, 1800);
    assert_eq!(
        get_as_of(&app, &created.id, half_past).await.unwrap(),
        created
    );
    let later = shifted(&t0, 5400);
    assert_eq!(get_as_of(&app, &created.id, later).await.unwrap(), raised);
    let gone = get_as_of(&app, &created.id, shifted(&t0, 3 * 3600))
        .await
        .unwrap();
    assert_eq!(gone.delete_time, deleted_at);
    assert_eq!(
        pb::Lead {
            delete_time: None,
            ..gone
        },
        raised
    );
    // Now the lead is gone.
    let now = app
        .leads
        .clone()
        .get_lead(pb::GetLeadRequest {
            id: created.id.clone(),
            as_of: None,
        })
        .await
        .unwrap_err();
    assert_eq!(now.code(), Code::NotFound);

    let future = get_as_of(&app, &created.id, shifted(&t0, 400 * 86_400))
        .await
        .unwrap_err();
    assert_eq!(future.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&future), ["as_of"]);
    let unknown = get_as_of(&app, &uuid::Uuid::now_v7().to_string(), t0)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

/// GetLead as_of reads one lead's latest revision up to a time: an index search on both
/// backends, never a scan of the tenant's revisions.
async fn the_lead_as_of_a_time_is_read_through_the_lead_time_index(app: TestApp) {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let lead = create(&app, new_lead("Planned")).await;
    let query = format!(
        "SELECT lead FROM lead_revisions WHERE tenant_id = 'default' AND lead_id = '{}' \
         AND change_time <= 9000000000000000 ORDER BY change_time DESC, revision DESC LIMIT 1",
        lead.id
    );
    let db = Database::connect(&app.database_url).await.expect("connect");
    let backend = db.get_database_backend();
    let plan: Vec<String> = match app.backend {
        Backend::Sqlite => db
            .query_all_raw(Statement::from_string(
                backend,
                format!("EXPLAIN QUERY PLAN {query}"),
            ))
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String>("", "detail").unwrap())
            .collect(),
        Backend::Postgres => {
            // A table this small is cheaper to scan; the question is whether the index can
            // answer the query, as it does once the table is large.
            let tx = sea_orm::TransactionTrait::begin(&db).await.unwrap();
            tx.execute_unprepared("SET LOCAL enable_seqscan = off")
                .await
                .unwrap();
            let rows = tx
                .query_all_raw(Statement::from_string(backend, format!("EXPLAIN {query}")))
                .await
                .unwrap();
            rows.iter()
                .map(|row| row.try_get_by_index::<String>(0).unwrap())
                .collect()
        }
    };
    let text = plan.join("\n");
    assert!(
        text.contains("lead_revisions_by_lead_time"),
        "not read through the index:\n{text}"
    );
    assert!(!text.contains("SCAN lead_revisions"), "{text}");
    db.close().await.ok();
}

async fn retention_keeps_the_state_at_the_cutoff_and_refuses_older_reads(app: TestApp) {
    let (backend, url) = (app.backend, app.database_url.clone());
    let dir = app.stop().await;
    let mut settings = settings_for(&url);
    settings.revision_retention = Some(std::time::Duration::from_secs(3600));
    settings.maintenance_interval = std::time::Duration::from_millis(50);
    let app = spawn_app_with(backend, settings, dir).await;

    let created = create(&app, new_lead("Old history")).await;
    let t0 = created.create_time.unwrap();
    let mut lead = created.clone();
    for n in 1..=2 {
        lead.title = format!("Old history {n}");
        lead = update(&app, lead, &["title"]).await;
    }
    let recent = create(&app, new_lead("Recent")).await;
    // Kept while they are younger than the retention.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(revisions(&app, &created.id).await.len(), 3);

    app.clock.advance(chrono::TimeDelta::hours(2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while revisions(&app, &created.id).await.len() > 1 {
        assert!(std::time::Instant::now() < deadline, "never pruned");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The state at the cutoff stays: the lead as of any time since is still answered.
    let kept = revisions(&app, &created.id).await;
    assert_eq!(kept[0].revision, 3);
    assert_eq!(kept[0].lead.as_ref(), Some(&lead));
    assert_eq!(revisions(&app, &recent.id).await.len(), 1);
    let an_hour_ago = shifted(&t0, 3600 + 60);
    assert_eq!(
        get_as_of(&app, &created.id, an_hour_ago).await.unwrap(),
        lead
    );
    // Before the cutoff the history is incomplete: refused, never answered from what is left.
    let old = get_as_of(&app, &created.id, t0).await.unwrap_err();
    assert_eq!(old.code(), Code::OutOfRange, "{old:?}");
    // So are past metrics, forecasts and backtests, which read every lead as of that time.
    let mut forecasts =
        pb::forecast_service_client::ForecastServiceClient::new(app.channel().await);
    let metrics = forecasts
        .get_pipeline_metrics(pb::GetPipelineMetricsRequest {
            as_of: Some(t0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(metrics.code(), Code::OutOfRange, "{metrics:?}");
    let backtest = forecasts
        .backtest_forecast(pb::BacktestForecastRequest {
            as_of: Some(t0),
            currency_code: "EUR".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(backtest.code(), Code::OutOfRange, "{backtest:?}");
    forecasts
        .get_pipeline_metrics(pb::GetPipelineMetricsRequest {
            as_of: Some(an_hour_ago),
            ..Default::default()
        })
        .await
        .expect("metrics as of a time retention still covers");
}

/// A lead imported before revisions existed kept version 1 however long its history, and the
/// backfill gives it a revision per stage change: the migration after it raises the version to
/// the last revision, so the next write's revision, numbered by the version, follows them.
async fn a_backfilled_history_longer_than_the_version_numbers_the_next_revision_after_it(
    app: TestApp,
) {
    let mut lead = new_lead("Imported long ago");
    lead.contact_name = "Dana".into();
    let created = create(&app, lead).await;
    move_to(&app, &created.id, "qualification")
        .await
        .expect("move");
    move_to(&app, &created.id, "lead_generation")
        .await
        .expect("move");

    // Back to before versions were raised to the revisions, with the lead's version as an
    // import then left it.
    let app = restart_after_rolling_back(
        app,
        6,
        &[format!(
            "UPDATE leads SET version = 1 WHERE id = '{}'",
            created.id
        )],
    )
    .await;

    assert_eq!(get_lead(&app, &created.id).await.etag, "\"3\"");
    move_to(&app, &created.id, "qualification")
        .await
        .expect("move after the migration");
    let numbers: Vec<i64> = revisions(&app, &created.id)
        .await
        .iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
}
