//! GetPipelineMetrics, GetForecast and BacktestForecast as of a past time read each lead as it
//! was then (its latest revision by then), never as it is now; and the slippage metrics.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::history::{forecasts, micro_ts, ts};
use common::*;
use leadpipe::grpc::pb;

on_both_backends!(
    past_reports_read_the_amounts_and_currencies_known_then,
    slippage_is_reported_as_of_a_time,
);

/// A point in time strictly between the writes before and after it.
async fn mark() -> DateTime<Utc> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    t
}

fn units(money: &Option<pb::Money>) -> f64 {
    money
        .as_ref()
        .map_or(0.0, |m| m.units as f64 + m.nanos as f64 / 1e9)
}

async fn past_reports_read_the_amounts_and_currencies_known_then(app: TestApp) {
    // Expected to close within the hour, so inside the first period of any horizon.
    let close = ts(Utc::now() + chrono::Duration::minutes(30));
    let mut cut = create(
        &app,
        pb::Lead {
            title: "cut before it closed".into(),
            amount: Some(money("EUR", 100_000)),
            expected_close_time: Some(close),
            ..Default::default()
        },
    )
    .await;
    let mut converted = create(
        &app,
        pb::Lead {
            title: "in dollars then".into(),
            amount: Some(money("USD", 500)),
            expected_close_time: Some(close),
            ..Default::default()
        },
    )
    .await;
    let then = mark().await;
    cut.amount = Some(money("EUR", 10_000));
    update_lead(&app, cut, &["amount"]).await;
    converted.amount = Some(money("EUR", 500));
    update_lead(&app, converted, &["amount"]).await;
    let _ = mark().await;

    let mut client = forecasts(&app).await;
    let backtest = client
        .backtest_forecast(pb::BacktestForecastRequest {
            as_of: Some(micro_ts(then)),
            currency_code: "EUR".into(),
            ..Default::default()
        })
        .await
        .expect("backtest")
        .into_inner();
    // The naive forecast is Σ configured probability (0.1 in lead_generation) × amount.
    let naive: f64 = backtest
        .periods
        .iter()
        .map(|p| units(&p.naive_predicted_amount))
        .sum();
    assert!(
        (naive - 10_000.0).abs() < 0.01,
        "the backtest must use the amount known at as_of (100,000), not today's: {naive}"
    );

    let forecast = client
        .get_forecast(pb::GetForecastRequest {
            as_of: Some(micro_ts(then)),
            currency_code: "EUR".into(),
            ..Default::default()
        })
        .await
        .expect("forecast")
        .into_inner();
    assert_eq!(
        forecast.open_leads, 1,
        "the lead in dollars at as_of is not in a EUR forecast as of then"
    );

    let metrics_at = |as_of: Option<DateTime<Utc>>| {
        let mut client = client.clone();
        async move {
            client
                .get_pipeline_metrics(pb::GetPipelineMetricsRequest {
                    as_of: as_of.map(micro_ts),
                    ..Default::default()
                })
                .await
                .expect("metrics")
                .into_inner()
        }
    };
    let open_amounts = |m: &pb::PipelineMetrics| -> Vec<(String, i64)> {
        let mut amounts: Vec<(String, i64)> = m.stages[0]
            .open_amount
            .iter()
            .map(|a| (a.currency_code.clone(), a.units))
            .collect();
        amounts.sort();
        amounts
    };
    let past = metrics_at(Some(then)).await;
    assert_eq!(
        open_amounts(&past),
        vec![("EUR".into(), 100_000), ("USD".into(), 500)]
    );
    let now = metrics_at(None).await;
    assert_eq!(open_amounts(&now), vec![("EUR".into(), 10_500)]);
}

async fn slippage_is_reported_as_of_a_time(app: TestApp) {
    let base = Utc::now() + chrono::Duration::days(30);
    let day = chrono::Duration::days;
    let mut leads = Vec::new();
    for title in ["pushed five days", "pushed and pulled back", "on time"] {
        leads.push(
            create(
                &app,
                pb::Lead {
                    title: title.into(),
                    expected_close_time: Some(ts(base + day(10))),
                    ..Default::default()
                },
            )
            .await,
        );
    }
    let before = mark().await;
    let set_close = |lead: pb::Lead, at: DateTime<Utc>| {
        let app = &app;
        async move {
            let mut lead = lead;
            lead.expected_close_time = Some(ts(at));
            update_lead(app, lead, &["expected_close_time"]).await
        }
    };
    set_close(leads[0].clone(), base + day(15)).await;
    let one_pushed = mark().await;
    let later = set_close(leads[1].clone(), base + day(20)).await;
    let pulled = set_close(later, base + day(12)).await;
    assert_eq!(pulled.close_date_push_count, 1, "pulling in is no push");

    let client = forecasts(&app).await;
    let slippage = |as_of: Option<DateTime<Utc>>| {
        let mut client = client.clone();
        async move {
            let m = client
                .get_pipeline_metrics(pb::GetPipelineMetricsRequest {
                    as_of: as_of.map(micro_ts),
                    ..Default::default()
                })
                .await
                .expect("metrics")
                .into_inner();
            (m.pushed_share, m.average_push_days)
        }
    };
    assert_eq!(slippage(Some(before)).await, (0.0, 0.0));
    let (share, days) = slippage(Some(one_pushed)).await;
    assert!((share - 1.0 / 3.0).abs() < 1e-9, "{share}");
    assert!((days - 5.0).abs() < 1e-6, "{days}");
    let (share, days) = slippage(None).await;
    assert!((share - 2.0 / 3.0).abs() < 1e-9, "{share}");
    assert!((days - 3.5).abs() < 1e-6, "{days}");
}

/// The figures BENCHMARKS.md reports: BacktestForecast on `leadpipe demo` data (seed 42, 3,000
/// leads, a year ending 2026-11-01), monthly, three months ahead, from four points in time. The
/// demo's leads are imported twice: with their amount and close-date changes as revisions, and
/// with every lead's final values from its creation on, which is what a backtest that reads
/// today's values sees.
/// `cargo test --test it point_in_time::demo_backtests -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a check: seeds 3,000 leads twice"]
async fn demo_backtests() {
    use chrono::TimeZone;
    use leadpipe::bulk::demo::{DemoOptions, generate};
    let until = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let options = DemoOptions {
        leads: 3000,
        days: 365,
        seed: 42,
        until,
    };
    let messages = generate(&options);
    let revisions: usize = messages.iter().map(|m| m.revisions.len()).sum();
    println!(
        "{} leads, {revisions} amount and close-date changes",
        messages.len()
    );
    let with_history = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let response = common::history::import(&with_history, messages.clone()).await;
    assert_eq!(response.failed, 0, "{:?}", response.errors);
    let flattened: Vec<pb::ImportLeadsRequest> = messages.into_iter().map(final_values).collect();
    let today_only = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let response = common::history::import(&today_only, flattened).await;
    assert_eq!(response.failed, 0, "{:?}", response.errors);
    for (name, app) in [
        ("as of each time", &with_history),
        ("today's values", &today_only),
    ] {
        println!("== {name}");
        backtests(app, until).await;
    }
}

/// The lead with every field change applied from its creation on.
fn final_values(mut message: pb::ImportLeadsRequest) -> pb::ImportLeadsRequest {
    let lead = message.lead.as_mut().expect("lead");
    for revision in std::mem::take(&mut message.revisions) {
        let changed = revision.lead.expect("lead");
        for path in revision.update_mask.expect("mask").paths {
            match path.as_str() {
                "amount" => lead.amount = changed.amount.clone(),
                "expected_close_time" => lead.expected_close_time = changed.expected_close_time,
                other => panic!("the demo changes no {other}"),
            }
        }
    }
    message
}

async fn backtests(app: &TestApp, until: DateTime<Utc>) {
    let mut client = forecasts(app).await;
    let (mut brier, mut naive_brier, mut error, mut naive_error, mut periods) =
        (0.0, 0.0, 0.0, 0.0, 0);
    for months in [3, 4, 5, 6] {
        let as_of = until - chrono::Duration::days(30 * months);
        let b = client
            .backtest_forecast(pb::BacktestForecastRequest {
                as_of: Some(micro_ts(as_of)),
                currency_code: "EUR".into(),
                horizon_periods: 3,
                seed: 7,
                ..Default::default()
            })
            .await
            .expect("backtest")
            .into_inner();
        let ape: Vec<f64> = b.periods.iter().map(|p| p.percentage_error).collect();
        let naive_ape: Vec<f64> = b.periods.iter().map(|p| p.naive_percentage_error).collect();
        println!(
            "as_of {}: brier {:.4} naive {:.4} scored {} | p50 APE {:?} naive APE {:?}",
            as_of.date_naive(),
            b.brier_score,
            b.naive_brier_score,
            b.scored_leads,
            ape.iter().map(|e| format!("{e:.3}")).collect::<Vec<_>>(),
            naive_ape
                .iter()
                .map(|e| format!("{e:.3}"))
                .collect::<Vec<_>>(),
        );
        brier += b.brier_score;
        naive_brier += b.naive_brier_score;
        error += ape.iter().sum::<f64>();
        naive_error += naive_ape.iter().sum::<f64>();
        periods += ape.len();
    }
    println!(
        "mean brier {:.4} (naive {:.4}); mean p50 APE {:.3} (naive {:.3}) over {periods} periods",
        brier / 4.0,
        naive_brier / 4.0,
        error / periods as f64,
        naive_error / periods as f64
    );
}
