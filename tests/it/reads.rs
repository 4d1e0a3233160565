//! The read path: GetLead's in-place read on SQLite giving what the read pool gives, reads
//! seeing every acknowledged write, the learned model retrained exactly when its data changed,
//! and the present-time analytics reading open leads through `leads_by_stage`.

use crate::common;

use chrono::{Duration, Utc};
use common::history::*;
use common::synthetic::{self};
use common::*;
use leadpipe::domain::ids::{LeadId, PipelineId, TenantId};
use leadpipe::grpc::pb;
use leadpipe::store::analytics::{self, HistoryScope};
use leadpipe::store::leads;

on_both_backends!(
    get_lead_reads_what_the_read_pool_reads,
    get_lead_sees_every_acknowledged_write,
    open_leads_are_read_through_leads_by_stage,
);

/// Every field set, including the optional ones, so that each column's conversion is checked.
fn full_lead(title: &str) -> pb::Lead {
    pb::Lead {
        title: title.into(),
        company: "Initech".into(),
        contact_name: "Peter".into(),
        contact_email: "peter@initech.example".into(),
        owner: "milton".into(),
        source: "référence ✓".into(),
        amount: Some(pb::Money {
            currency_code: "EUR".into(),
            units: 12_345,
            nanos: 670_000_000,
        }),
        expected_close_time: Some(ts(Utc::now() + Duration::days(40))),
        labels: [("region".to_owned(), "emea".to_owned())].into(),
        ..Default::default()
    }
}

async fn get_lead_reads_what_the_read_pool_reads(app: TestApp) {
    let tenant = TenantId::default_tenant();
    let plain = create(&app, new_lead("Plain")).await;
    let full = create(&app, full_lead("Full")).await;
    let moved = move_to(&app, &full.id, "qualification")
        .await
        .expect("move");
    let mut ids = vec![plain.id.clone(), full.id.clone()];
    let deleted = create(&app, new_lead("Deleted")).await;
    app.leads
        .clone()
        .delete_lead(pb::DeleteLeadRequest {
            id: deleted.id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete");
    ids.push(deleted.id.clone());
    ids.push(uuid::Uuid::now_v7().to_string());
    for id in &ids {
        let id = LeadId::parse(id).expect("id");
        let read = leads::read(&app.store, &tenant, &id).await.expect("read");
        let pooled = leads::find(app.store.reader(), &tenant, &id)
            .await
            .expect("find");
        assert_eq!(read, pooled, "lead {id}");
    }
    // Another tenant's lead is not found, as through the pool.
    let other = TenantId::parse("other").expect("tenant");
    let id = LeadId::parse(&full.id).expect("id");
    assert_eq!(
        leads::read(&app.store, &other, &id).await.expect("read"),
        None
    );
    assert_eq!(get_lead(&app, &full.id).await, moved);
}

/// Writers on several leads at once (so that on SQLite their commits share batches), each
/// reading its lead back after every acknowledged write: the read has the written version.
async fn get_lead_sees_every_acknowledged_write(app: TestApp) {
    let mut writers = Vec::new();
    for w in 0..6 {
        let lead = create(&app, new_lead(&format!("Writer {w}"))).await;
        let mut client = app.leads.clone();
        writers.push(tokio::spawn(async move {
            let mut current = lead;
            for round in 0..25 {
                let mut changed = current.clone();
                changed.title = format!("Writer {w} round {round}");
                let updated = client
                    .update_lead(pb::UpdateLeadRequest {
                        lead: Some(changed),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["title".into()],
                        }),
                    })
                    .await
                    .expect("update")
                    .into_inner();
                let read = client
                    .get_lead(pb::GetLeadRequest {
                        id: updated.id.clone(),
                        ..Default::default()
                    })
                    .await
                    .expect("get")
                    .into_inner();
                assert_eq!(read, updated, "writer {w}, round {round}");
                current = updated;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
}

/// Stuck leads and forecasts for the present read the open leads from the lead rows; the
/// `leads_by_stage (tenant_id, pipeline_id, stage)` index answers that on both backends.
async fn open_leads_are_read_through_leads_by_stage(app: TestApp) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let end = Utc::now() - Duration::hours(1);
    let generated = synthetic::generate(300, end - Duration::days(365), end, 5);
    assert_eq!(import(&app, generated.leads).await.failed, 0);
    if app.backend == Backend::Postgres {
        // Statistics, as autovacuum would gather them on a table in use.
        use sea_orm::ConnectionTrait;
        app.store
            .writer()
            .execute_unprepared("ANALYZE leads")
            .await
            .expect("analyze");
    }
    let tenant = TenantId::default_tenant();
    let pipeline = PipelineId::default_pipeline();
    let scope = HistoryScope {
        tenant: &tenant,
        pipeline: &pipeline,
        as_of: leadpipe::store::to_micros(Utc::now()),
        present: true,
    };
    let stages: Vec<String> = ["lead_generation", "qualification", "proposal"]
        .map(String::from)
        .to_vec();
    for currency in [None, Some("EUR")] {
        let plan = match app.backend {
            Backend::Sqlite => {
                analytics::explain_leads_at(app.store.reader(), &scope, &stages, currency)
                    .await
                    .expect("explain")
            }
            Backend::Postgres => {
                // A table this small is cheaper to scan; the question is whether the index can
                // answer the query, as it does once the table is large.
                let tx = app.store.reader().begin().await.expect("begin");
                tx.execute_unprepared("SET LOCAL enable_seqscan = off")
                    .await
                    .expect("set");
                let plan = analytics::explain_leads_at(&tx, &scope, &stages, currency)
                    .await
                    .expect("explain");
                tx.rollback().await.ok();
                plan
            }
        };
        let text = plan.join("\n");
        assert!(
            text.contains("leads_by_stage"),
            "not through the index:\n{text}"
        );
        assert!(
            !text.contains("SCAN l\n") && !text.ends_with("SCAN l"),
            "{text}"
        );
    }
}
