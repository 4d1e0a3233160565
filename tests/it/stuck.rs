//! ListStuckLeads through the real gRPC API: paging through the ranking, and thresholds that
//! follow a change to the pipeline at once.

use crate::common;

use chrono::{Duration, Utc};
use common::history::*;
use common::*;
use leadpipe::grpc::pb;

on_both_backends!(
    pages_walk_the_ranking_once_with_whole_leads,
    a_pipeline_change_applies_to_the_next_call,
);

/// `count` leads in qualification for 40 days (its rotting threshold is 21), amounts 1,000 to
/// `count` × 1,000, and one that entered yesterday.
async fn import_stuck(app: &TestApp, count: i64) {
    let now = Utc::now();
    let mut requests: Vec<_> = (1..=count)
        .map(|i| {
            import_request(
                &format!("stuck-{i}"),
                i * 1000,
                vec![
                    change("", "lead_generation", now - Duration::days(50)),
                    change("lead_generation", "qualification", now - Duration::days(40)),
                ],
            )
        })
        .collect();
    requests.push(import_request(
        "fresh",
        1_000_000,
        vec![
            change("", "lead_generation", now - Duration::days(3)),
            change("lead_generation", "qualification", now - Duration::days(1)),
        ],
    ));
    assert_eq!(import(app, requests).await.imported as i64, count + 1);
}

async fn stuck_page(app: &TestApp, page_token: String) -> pb::ListStuckLeadsResponse {
    forecasts(app)
        .await
        .list_stuck_leads(pb::ListStuckLeadsRequest {
            page_size: 3,
            page_token,
            ..Default::default()
        })
        .await
        .expect("list stuck leads")
        .into_inner()
}

async fn pages_walk_the_ranking_once_with_whole_leads(app: TestApp) {
    import_stuck(&app, 7).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = stuck_page(&app, token).await;
        pages += 1;
        assert_eq!(page.total_size, 7);
        for stuck in &page.stuck_leads {
            let lead = stuck.lead.as_ref().expect("the whole lead");
            assert_eq!(lead.stage, "qualification");
            assert_eq!(lead.title, format!("imported {}", lead.external_id));
            assert_eq!(stuck.threshold_kind, "ROTTING_DAYS");
            seen.push(lead.external_id.clone());
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    // Equal win probabilities, so the value at risk follows the amount, highest first.
    let expected: Vec<String> = (1..=7).rev().map(|i| format!("stuck-{i}")).collect();
    assert_eq!(seen, expected);
}

async fn a_pipeline_change_applies_to_the_next_call(app: TestApp) {
    import_stuck(&app, 2).await;
    assert_eq!(stuck_page(&app, String::new()).await.total_size, 2);

    let mut default = get_pipeline(&app, "default").await.unwrap();
    let qualification = default
        .stages
        .iter_mut()
        .find(|s| s.key == "qualification")
        .unwrap();
    qualification.rotting_days = 60;
    update_pipeline(&app, default, &["stages"]).await.unwrap();

    // 40 days in the stage is no longer past its threshold.
    let after = stuck_page(&app, String::new()).await;
    assert_eq!(after.total_size, 0, "{:?}", after.stuck_leads);
}
