//! ListStuckLeads through the real gRPC API: paging through the ranking, and thresholds that
//! follow a change to the pipeline at once.

use crate::common;

use std::collections::HashMap;

use chrono::{Duration, Utc};
use common::history::*;
use common::*;
use leadpipe::grpc::pb;

on_both_backends!(
    pages_walk_the_ranking_once_with_whole_leads,
    a_pipeline_change_applies_to_the_next_call,
    the_present_counts_open_leads_as_a_past_as_of_does,
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

/// GetPipelineMetrics for the present sums the open leads in SQL, grouped as they score alike,
/// and counts the stuck ones by entry time; for a past `as_of` it reads them one by one. Asked
/// at the present's own time, both must agree, and with ListStuckLeads.
async fn the_present_counts_open_leads_as_a_past_as_of_does(app: TestApp) {
    import_stuck(&app, 7).await;
    let now = Utc::now();
    let in_qualification = |days: i64| {
        vec![
            change("", "lead_generation", now - Duration::days(days + 5)),
            change(
                "lead_generation",
                "qualification",
                now - Duration::days(days),
            ),
        ]
    };
    let mut varied = Vec::new();
    for (i, (currency, units, source, region, days)) in [
        ("EUR", 500, "web", "emea", 30),
        ("EUR", 999, "web", "emea", 2),
        ("EUR", 2_500_000, "referral", "emea", 25),
        ("USD", 12_345, "web", "amer", 30),
        ("USD", 12_345, "web", "amer", 3),
        ("", 0, "event", "apac", 60),
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = import_request(&format!("varied-{i}"), units, in_qualification(days));
        let lead = request.lead.as_mut().unwrap();
        lead.amount = (!currency.is_empty()).then(|| money(currency, units));
        lead.source = source.into();
        lead.labels = HashMap::from([("region".to_string(), region.to_string())]);
        varied.push(request);
    }
    assert_eq!(import(&app, varied).await.imported, 6);
    // Two leads whose expected close slipped, one of them twice.
    let listed = all_leads(&app, "").await;
    for (lead, pushes) in listed.iter().filter(|l| l.source == "web").zip([1, 2]) {
        let mut lead = lead.clone();
        for push in 0..=pushes {
            lead.expected_close_time = Some(micro_ts(now + Duration::days(30 + push * 7)));
            lead = update_lead(&app, lead, &["expected_close_time"]).await;
        }
    }

    let metrics = |as_of: Option<prost_types::Timestamp>| {
        let app = &app;
        async move {
            forecasts(app)
                .await
                .get_pipeline_metrics(pb::GetPipelineMetricsRequest {
                    as_of,
                    ..Default::default()
                })
                .await
                .expect("metrics")
                .into_inner()
        }
    };
    let present = metrics(None).await;
    let past = metrics(present.as_of).await;
    assert_eq!(present.open_count, 14);
    assert_eq!(present.open_count, past.open_count);
    assert!(present.pushed_share > 0.0);
    assert_eq!(present.pushed_share, past.pushed_share);
    let (a, b) = (present.average_push_days, past.average_push_days);
    assert!((a - b).abs() < 1e-9, "{a} against {b}");
    for (p, r) in present.stages.iter().zip(&past.stages) {
        assert_eq!(p.stage, r.stage);
        assert_eq!(p.open_count, r.open_count, "{}", p.stage);
        assert_eq!(p.open_amount, r.open_amount, "{}", p.stage);
        assert_eq!(
            p.weighted_amount.len(),
            r.weighted_amount.len(),
            "{}",
            p.stage
        );
        for (w, v) in p.weighted_amount.iter().zip(&r.weighted_amount) {
            assert_eq!(w.currency_code, v.currency_code);
            let (w, v) = (
                w.units as f64 + w.nanos as f64 / 1e9,
                v.units as f64 + v.nanos as f64 / 1e9,
            );
            assert!(
                (w - v).abs() <= 1e-6 * v.max(1.0),
                "{}: {w} against {v}",
                p.stage
            );
        }
    }
    // Nothing has left qualification, so its threshold is the rotting days (21) on both paths.
    let qualification = |m: &pb::PipelineMetrics| {
        m.stages
            .iter()
            .find(|s| s.stage == "qualification")
            .unwrap()
            .clone()
    };
    let (p, r) = (qualification(&present), qualification(&past));
    assert_eq!(p.open_count, 14);
    assert_eq!(
        p.stuck_count,
        7 + 4,
        "the 40-day leads and the varied ones past 21 days"
    );
    assert_eq!(p.stuck_count, r.stuck_count);
    assert!(p.weighted_amount.iter().any(|m| m.currency_code == "USD"));
    let listed = forecasts(&app)
        .await
        .list_stuck_leads(pb::ListStuckLeadsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_size, 11);
}
