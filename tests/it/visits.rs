//! The stage aggregates against the history replay: random histories (imports with history,
//! creates, forward and backward moves, closes, reopens, amount changes, new owners, sources,
//! labels and expected closes, deletes, hours to days apart) go through the real API, then
//! GetPipelineMetrics for the present (read from the aggregates and the kept open-lead groups)
//! must give the counts, open amounts and slippage that GetPipelineMetrics as of the same instant
//! (the replay) gives, for several windows, and time-in-stage quantiles equal to the replay's
//! visits put through the same sketch.

use crate::common;

use chrono::{DateTime, Duration, Utc};
use common::history::*;
use common::*;
use leadpipe::domain::forecast::KaplanMeier;
use leadpipe::domain::forecast::visits::{bucket, bucket_value};
use leadpipe::domain::ids::{PipelineId, TenantId};
use leadpipe::grpc::pb;
use leadpipe::store::analytics::{HistoryScope, window_summary};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const STAGES: [&str; 6] = [
    "lead_generation",
    "qualification",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
];

#[derive(Debug, Clone)]
enum Op {
    /// A lead imported with this history: (stage index, hours after the previous change).
    Import(Vec<(usize, u32)>, i64),
    Create(i64),
    /// Move the n-th known lead (modulo) to a stage; refusals are fine.
    Move(usize, usize),
    Amount(usize, i64),
    /// Give the n-th known lead another owner, source, labels and expected close (days ahead).
    Attributes(usize, u8, u8),
    Delete(usize),
    /// Let this many hours pass.
    Wait(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let history = prop::collection::vec((0usize..6, 0u32..200), 1..6);
    prop_oneof![
        2 => (history, 0i64..5000).prop_map(|(h, a)| Op::Import(h, a)),
        2 => (0i64..5000).prop_map(Op::Create),
        6 => (any::<usize>(), 0usize..6).prop_map(|(l, s)| Op::Move(l, s)),
        1 => (any::<usize>(), 0i64..5000).prop_map(|(l, a)| Op::Amount(l, a)),
        2 => (any::<usize>(), 0u8..4, 1u8..90).prop_map(|(l, v, d)| Op::Attributes(l, v, d)),
        1 => any::<usize>().prop_map(Op::Delete),
        3 => (1u32..72).prop_map(Op::Wait),
    ]
}

/// Windows as (days before as_of the window starts, its length in hours less one); None for
/// the default window.
fn windows() -> impl Strategy<Value = Vec<Option<(u32, u32)>>> {
    prop::collection::vec(proptest::option::of((1u32..40, 0u32..400)), 1..4)
}

fn from_ts(t: &prost_types::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

async fn apply(app: &TestApp, ops: &[Op], case: usize) {
    let mut imported = 0;
    for op in ops {
        let leads = all_leads(app, "").await;
        let pick = |n: usize| (!leads.is_empty()).then(|| &leads[n % leads.len()]);
        match op {
            Op::Import(steps, amount) => {
                let now = app.clock.now();
                let total: i64 = steps.iter().map(|(_, h)| *h as i64).sum();
                let mut at = now - Duration::hours(total + 1);
                let mut from = "";
                let mut history = Vec::new();
                for (stage, hours) in steps {
                    let to = STAGES[*stage];
                    if to == from {
                        continue;
                    }
                    at += Duration::hours(*hours as i64) + Duration::minutes(7);
                    history.push(change(from, to, at.min(now)));
                    from = to;
                }
                imported += 1;
                let mut request = import_request(&format!("c{case}-{imported}"), *amount, history);
                request.lead.as_mut().unwrap().contact_email = "dana@example.com".into();
                import(app, vec![request]).await;
            }
            Op::Create(amount) => {
                let mut lead = new_lead("created");
                lead.contact_name = "Dana".into();
                lead.contact_email = "dana@example.com".into();
                if *amount > 0 {
                    lead.amount = Some(money("EUR", *amount));
                }
                create(app, lead).await;
            }
            Op::Move(n, stage) => {
                if let Some(lead) = pick(*n) {
                    let _ = move_to(app, &lead.id, STAGES[*stage]).await;
                }
            }
            Op::Amount(n, amount) => {
                if let Some(lead) = pick(*n) {
                    let mut lead = lead.clone();
                    lead.amount = (*amount > 0).then(|| money("USD", *amount));
                    update_lead(app, lead, &["amount"]).await;
                }
            }
            Op::Attributes(n, variant, days) => {
                if let Some(lead) = pick(*n) {
                    let mut lead = lead.clone();
                    lead.owner = ["ana", "bo"][usize::from(*variant % 2)].into();
                    lead.source = ["web", "referral"][usize::from(*variant / 2)].into();
                    lead.labels = [("tier".to_string(), format!("t{}", variant % 3))].into();
                    lead.expected_close_time =
                        Some(micro_ts(app.clock.now() + Duration::days(i64::from(*days))));
                    update_lead(
                        app,
                        lead,
                        &["owner", "source", "labels", "expected_close_time"],
                    )
                    .await;
                }
            }
            Op::Delete(n) => {
                if let Some(lead) = pick(*n) {
                    app.leads
                        .clone()
                        .delete_lead(pb::DeleteLeadRequest {
                            id: lead.id.clone(),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            }
            Op::Wait(hours) => app.clock.advance(Duration::hours(*hours as i64)),
        }
    }
}

async fn metrics(
    app: &TestApp,
    window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    as_of: Option<DateTime<Utc>>,
) -> pb::PipelineMetrics {
    forecasts(app)
        .await
        .get_pipeline_metrics(pb::GetPipelineMetricsRequest {
            pipeline_id: String::new(),
            start_time: window.map(|(s, _)| micro_ts(s)),
            end_time: window.map(|(_, e)| micro_ts(e)),
            as_of: as_of.map(micro_ts),
        })
        .await
        .unwrap()
        .into_inner()
}

fn seconds(hours: Option<f64>) -> Option<i64> {
    hours.map(|h| (h * 3600.0) as i64)
}

/// The replay's visits of the window through the sketch: (median, p90) per stage and the
/// median time to close.
async fn sketched_replay(
    app: &TestApp,
    as_of: DateTime<Utc>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (Vec<(Option<i64>, Option<i64>)>, Option<i64>) {
    let (tenant, pipeline) = (TenantId::default_tenant(), PipelineId::default_pipeline());
    let micros = |t: DateTime<Utc>| t.timestamp_micros();
    let scope = HistoryScope {
        tenant: &tenant,
        pipeline: &pipeline,
        as_of: micros(as_of),
        present: false,
    };
    let won: Vec<String> = get_pipeline(app, "default")
        .await
        .unwrap()
        .stages
        .into_iter()
        .filter(|s| s.kind == pb::StageKind::Won as i32)
        .map(|s| s.key)
        .collect();
    let summary = window_summary(app.store.reader(), &scope, &won, micros(start), micros(end))
        .await
        .unwrap();
    let stages = STAGES
        .iter()
        .map(|stage| {
            let km = KaplanMeier::fit_counts(
                summary
                    .dwell
                    .iter()
                    .filter(|r| r.stage == *stage)
                    .map(|r| (bucket_value(bucket(r.hours)), r.exited, r.visits as u64)),
            );
            (seconds(km.median()), seconds(km.quantile(0.9)))
        })
        .collect();
    let mut cycles: Vec<(i64, i64)> = summary
        .cycles
        .iter()
        .map(|(h, n)| (bucket(*h), *n))
        .collect();
    cycles.sort();
    let total: i64 = cycles.iter().map(|c| c.1).sum();
    let mut seen = 0;
    let mut median = None;
    for (b, n) in cycles {
        seen += n;
        if total > 0 && seen * 2 >= total {
            median = Some(bucket_value(b));
            break;
        }
    }
    (stages, seconds(median))
}

fn duration_seconds(d: &Option<prost_types::Duration>) -> Option<i64> {
    d.as_ref().map(|d| d.seconds)
}

async fn check(app: &TestApp, windows: &[Option<(u32, u32)>]) -> Result<(), TestCaseError> {
    for window in windows {
        let as_of_now = app.clock.now();
        let range = window.map(|(days, hours)| {
            let start =
                as_of_now - Duration::days(days as i64) - Duration::minutes(days as i64 * 37);
            (
                start,
                (start + Duration::hours(hours as i64 + 1)).min(as_of_now),
            )
        });
        let present = metrics(app, range, None).await;
        let as_of = from_ts(present.as_of.as_ref().unwrap());
        let replay = metrics(app, range, Some(as_of)).await;
        prop_assert_eq!(&present.start_time, &replay.start_time);
        prop_assert_eq!(&present.end_time, &replay.end_time);
        let (sketched, cycle) = sketched_replay(
            app,
            as_of,
            from_ts(present.start_time.as_ref().unwrap()),
            from_ts(present.end_time.as_ref().unwrap()),
        )
        .await;
        for ((p, r), (median, p90)) in present.stages.iter().zip(&replay.stages).zip(sketched) {
            let shown = format!("{window:?} {p:?} {r:?}");
            prop_assert_eq!(&p.stage, &r.stage);
            prop_assert_eq!(p.entered_count, r.entered_count, "entered {}", shown);
            prop_assert_eq!(p.advanced_count, r.advanced_count, "advanced {}", shown);
            prop_assert_eq!(p.lost_count, r.lost_count, "lost {}", shown);
            prop_assert_eq!(p.conversion_rate, r.conversion_rate, "conversion {}", shown);
            prop_assert_eq!(p.win_rate, r.win_rate, "win rate {}", shown);
            prop_assert_eq!(p.open_count, r.open_count, "open {}", shown);
            prop_assert_eq!(&p.open_amount, &r.open_amount, "open amount {}", shown);
            prop_assert_eq!(
                duration_seconds(&p.median_time_in_stage),
                median,
                "median {}",
                shown
            );
            prop_assert_eq!(duration_seconds(&p.p90_time_in_stage), p90, "p90 {}", shown);
        }
        prop_assert_eq!(present.win_rate, replay.win_rate);
        prop_assert_eq!(&present.average_won_amount, &replay.average_won_amount);
        prop_assert_eq!(present.open_count, replay.open_count);
        prop_assert_eq!(present.pushed_share, replay.pushed_share);
        prop_assert!(
            (present.average_push_days - replay.average_push_days).abs()
                <= 1e-9 * replay.average_push_days.abs().max(1.0),
            "average push {} against {}",
            present.average_push_days,
            replay.average_push_days
        );
        prop_assert_eq!(duration_seconds(&present.median_time_to_close), cycle);
    }
    Ok(())
}

fn aggregates_equal_the_replay(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(app) = runtime.block_on(spawn_app(backend)) else {
        return;
    };
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .map_or(16, |n| (n / 16).max(16));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(
            &(prop::collection::vec(op(), 1..25), windows()),
            |(ops, windows)| {
                let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                runtime.block_on(async {
                    apply(&app, &ops, case).await;
                    check(&app, &windows).await
                })
            },
        )
        .unwrap();
    runtime.block_on(app.stop());
}

/// Which stages are won decides each lead's first win, cycle time and won amount, so an update of
/// the pipeline that changes them recounts the aggregates: afterwards they still equal the replay.
async fn a_changed_won_stage_recounts_the_aggregates(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let ops = [
        Op::Import(vec![(0, 0), (1, 30), (2, 50), (4, 70)], 1200),
        Op::Import(vec![(0, 0), (2, 20), (5, 90)], 800),
        Op::Import(vec![(0, 0), (1, 10), (3, 40), (5, 30)], 3000),
        Op::Create(500),
        Op::Wait(30),
        Op::Move(3, 1),
        Op::Wait(5),
    ];
    apply(&app, &ops, 1).await;
    let windows = [None, Some((20, 300))];
    check(&app, &windows).await.unwrap();
    assert_eq!(metrics(&app, None, None).await.win_rate, 1.0 / 3.0);
    let mut pipeline = get_pipeline(&app, "default").await.unwrap();
    let lost = pipeline
        .stages
        .iter_mut()
        .find(|s| s.key == "closed_lost")
        .unwrap();
    lost.kind = pb::StageKind::Won as i32;
    update_pipeline(&app, pipeline, &["stages"]).await.unwrap();
    check(&app, &windows).await.unwrap();
    // Both closed stages are now won.
    assert_eq!(metrics(&app, None, None).await.win_rate, 1.0);
    app.stop().await;
}

/// Moves and creates sent at once, eight to each lead and some creates twice under one request
/// id: on SQLite most are built while another write holds the writer and written only if what
/// they read is unchanged, and the others are written again in the writer. The aggregates they
/// leave still equal the replay, and each request id creates one lead.
async fn concurrent_writes_keep_the_aggregates_equal_to_the_replay(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let contactable = |title: &str, amount: i64| pb::Lead {
        contact_name: "Dana".into(),
        contact_email: "dana@example.com".into(),
        amount: Some(money("EUR", amount)),
        ..new_lead(title)
    };
    let mut ids = Vec::new();
    for n in 0..16 {
        ids.push(
            create(&app, contactable(&format!("busy {n}"), 1000 + n))
                .await
                .id,
        );
    }
    let mut moved = 0;
    for round in 0..4 {
        let mut moves = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            for offset in 0..8 {
                let request = pb::MoveLeadRequest {
                    id: id.clone(),
                    stage: STAGES[(n + round + offset) % STAGES.len()].into(),
                    ..Default::default()
                };
                let mut client = app.leads.clone();
                moves.push(tokio::spawn(async move { client.move_lead(request).await }));
            }
        }
        let mut creates = Vec::new();
        for n in 0..8 {
            for _ in 0..2 {
                let request = pb::CreateLeadRequest {
                    lead: Some(contactable(&format!("round {round} lead {n}"), 500)),
                    request_id: format!("busy-{round}-{n}"),
                };
                let mut client = app.leads.clone();
                creates.push(tokio::spawn(async move {
                    client.create_lead(request).await.map(|r| r.into_inner().id)
                }));
            }
        }
        for result in futures::future::join_all(moves).await {
            match result.expect("task") {
                Ok(_) => moved += 1,
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::FailedPrecondition | tonic::Code::Aborted
                    ) => {}
                Err(status) => panic!("a concurrent move failed imprecisely: {status:?}"),
            }
        }
        let created = futures::future::join_all(creates).await;
        for pair in created.chunks(2) {
            the_one_lead_created(pair);
        }
        app.clock.advance(Duration::hours(5));
    }
    assert!(moved > 0, "some moves went through");
    assert_eq!(
        all_leads(&app, "").await.len(),
        16 + 4 * 8,
        "one lead per request id"
    );
    check(&app, &[None, Some((1, 30))]).await.unwrap();
    app.stop().await;
}

/// Leads written before the open-lead groups existed are grouped by the migration that creates
/// them: rolled back and applied again over leads of several owners, amounts and expected
/// closes, the present's open counts, amounts and slippage still equal the replay's, and writes
/// after it keep them equal.
async fn the_migration_groups_existing_open_leads(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let ops = [
        Op::Import(vec![(0, 0), (1, 30), (2, 50)], 1200),
        Op::Import(vec![(0, 0), (2, 20), (5, 90)], 800),
        Op::Create(500),
        Op::Create(0),
        Op::Attributes(0, 1, 20),
        Op::Attributes(0, 2, 45),
        Op::Attributes(2, 3, 10),
        Op::Attributes(2, 0, 30),
        Op::Move(3, 1),
    ];
    // No waits: the restarted server's clock starts again from the present.
    apply(&app, &ops, 1).await;
    let before = metrics(&app, None, None).await;
    assert!(before.pushed_share > 0.0, "some open lead was pushed");
    check(&app, &[None]).await.unwrap();

    let app = restart_after_rolling_back(app, 1, &[]).await;
    let after = metrics(&app, None, None).await;
    assert_eq!(after.open_count, before.open_count);
    assert_eq!(after.pushed_share, before.pushed_share);
    assert_eq!(after.average_push_days, before.average_push_days);
    for (a, b) in after.stages.iter().zip(&before.stages) {
        assert_eq!(
            (&a.stage, a.open_count, &a.open_amount),
            (&b.stage, b.open_count, &b.open_amount)
        );
    }
    check(&app, &[None]).await.unwrap();
    apply(
        &app,
        &[Op::Move(0, 3), Op::Attributes(1, 1, 60), Op::Delete(2)],
        2,
    )
    .await;
    check(&app, &[None]).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn sqlite_the_migration_groups_existing_open_leads() {
    the_migration_groups_existing_open_leads(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_the_migration_groups_existing_open_leads() {
    the_migration_groups_existing_open_leads(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_writes_keep_the_aggregates_equal_to_the_replay() {
    concurrent_writes_keep_the_aggregates_equal_to_the_replay(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_writes_keep_the_aggregates_equal_to_the_replay() {
    concurrent_writes_keep_the_aggregates_equal_to_the_replay(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_changed_won_stage_recounts_the_aggregates() {
    a_changed_won_stage_recounts_the_aggregates(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_a_changed_won_stage_recounts_the_aggregates() {
    a_changed_won_stage_recounts_the_aggregates(Backend::Postgres).await;
}

#[test]
fn sqlite_aggregates_equal_the_replay() {
    aggregates_equal_the_replay(Backend::Sqlite);
}

#[test]
fn postgres_aggregates_equal_the_replay() {
    aggregates_equal_the_replay(Backend::Postgres);
}
