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
    use migration::MigratorTrait;
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

    let (backend, url) = (app.backend, app.database_url.clone());
    let dir = app.stop().await;
    let db = sea_orm::Database::connect(&url).await.expect("connect");
    migration::Migrator::down(&db, Some(1))
        .await
        .expect("roll back the revisions migration");
    db.close().await.ok();
    let app = spawn_app_on(backend, url, dir).await;

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
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.first_expected_close_time, Some(day(3)));
    assert_eq!(fetched.close_date_push_count, 0);

    // Writes continue the numbering.
    let mut change = fetched.clone();
    change.title = "Old lead, renamed".into();
    update(&app, change, &["title"]).await;
    let all = revisions(&app, &created.id).await;
    assert_eq!(
        all.last().map(|r| (r.revision, paths(r))),
        Some((4, vec!["title"]))
    );
}
