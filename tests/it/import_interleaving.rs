//! An import beside interactive writes of the same tenant: the moves acknowledged while the
//! import runs are all there afterwards, each lead's revisions follow its versions, and the
//! import's counts are exact.

use crate::common;

use common::history::import_request;
use common::*;
use leadpipe::grpc::pb;

on_both_backends!(moves_during_an_import_all_land_and_the_counts_are_exact);

/// More than one import batch, so that the import writes several transactions.
const IMPORTED: usize = 600;
const DUPLICATES: usize = 20;
const REFUSED: usize = 5;
const LEADS: usize = 4;

async fn moves_during_an_import_all_land_and_the_counts_are_exact(app: TestApp) {
    let mut ids = Vec::new();
    for i in 0..LEADS {
        let mut lead = new_lead(&format!("moved {i}"));
        lead.contact_name = "Dana".into();
        ids.push(create(&app, lead).await.id);
    }
    let mut requests: Vec<pb::ImportLeadsRequest> = (0..IMPORTED)
        .map(|i| import_request(&format!("crm-{i}"), 1_000, Vec::new()))
        .collect();
    requests
        .extend((0..DUPLICATES).map(|i| import_request(&format!("crm-{i}"), 1_000, Vec::new())));
    requests.extend((0..REFUSED).map(|i| {
        let mut request = import_request(&format!("bad-{i}"), 1_000, Vec::new());
        request.lead.as_mut().expect("lead").pipeline_id = "no-such-pipeline".into();
        request
    }));
    let mut client = app.leads.clone();
    let import = tokio::spawn(async move {
        client
            .import_leads(tokio_stream::iter(requests))
            .await
            .expect("import")
            .into_inner()
    });

    // Each lead moves back and forth while the import runs, one client per lead.
    let mut movers = Vec::new();
    for id in ids.clone() {
        let mut client = app.leads.clone();
        movers.push(tokio::spawn(async move {
            let mut acknowledged: Vec<pb::Lead> = Vec::new();
            for n in 0..40 {
                let stage = if n % 2 == 0 {
                    "qualification"
                } else {
                    "lead_generation"
                };
                let moved = client
                    .move_lead(pb::MoveLeadRequest {
                        id: id.clone(),
                        stage: stage.into(),
                        ..Default::default()
                    })
                    .await
                    .expect("move during the import")
                    .into_inner();
                acknowledged.push(moved);
            }
            acknowledged
        }));
    }
    let summary = import.await.expect("import task");
    assert_eq!(summary.received, (IMPORTED + DUPLICATES + REFUSED) as i64);
    assert_eq!(summary.imported, IMPORTED as i64);
    assert_eq!(summary.already_imported, DUPLICATES as i64);
    assert_eq!(summary.failed, REFUSED as i64);

    for (id, mover) in ids.iter().zip(movers) {
        let acknowledged = mover.await.expect("mover");
        let last = acknowledged.last().expect("moves");
        let stored = get_lead(&app, id).await;
        assert_eq!(stored.stage, last.stage);
        assert_eq!(stored.etag, last.etag);
        // Created, then one stage change per acknowledged move.
        let changes = stage_changes(&app, id).await;
        assert_eq!(changes.len(), 1 + acknowledged.len());
        // One revision per write, numbered 1, 2, … like the lead's versions.
        let revisions = crate::revisions::revisions(&app, id).await;
        let numbers: Vec<i64> = revisions.iter().map(|r| r.revision).collect();
        assert_eq!(
            numbers,
            (1..=1 + acknowledged.len() as i64).collect::<Vec<_>>()
        );
        let newest = revisions
            .last()
            .and_then(|r| r.lead.as_ref())
            .expect("lead");
        assert_eq!(newest.stage, stored.stage);
    }

    let listed = app
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.total_size, (IMPORTED + LEADS) as i32);
}
