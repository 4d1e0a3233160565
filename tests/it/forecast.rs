//! ImportLeads and ForecastService through the real gRPC API: metrics, stuck leads, learned
//! probabilities checked against a synthetic truth, seeded range forecasts and backtests.

use crate::common;

use std::collections::HashMap;

use chrono::{Duration, Utc};
use common::history::*;
use common::synthetic::{self, STAGES};
use common::*;
use leadpipe::grpc::pb;
use tonic::Code;

on_both_backends!(
    import_reports_bad_rows_and_skips_repeats,
    metrics_follow_their_definitions_on_a_small_history,
    learned_probabilities_recover_the_synthetic_truth,
    forecasts_are_seeded_ranges_per_currency,
    backtests_cover_the_actual_and_beat_the_naive_pipeline,
    totals_are_exact_or_out_of_range,
    won_amounts_past_int64_are_out_of_range,
    the_first_period_counts_each_win_at_the_amount_it_was_won_at,
);

async fn import_reports_bad_rows_and_skips_repeats(app: TestApp) {
    let t0 = Utc::now() - Duration::days(30);
    let good = vec![
        import_request("a-1", 1000, vec![change("", "lead_generation", t0)]),
        import_request(
            "a-2",
            2000,
            vec![
                change("", "lead_generation", t0),
                change("lead_generation", "qualification", t0 + Duration::days(2)),
                change("qualification", "closed_lost", t0 + Duration::days(5)),
            ],
        ),
        import_request("a-3", 3000, vec![]),
    ];
    let mut requests = good.clone();
    requests.push(import_request(
        "bad-chain",
        1,
        vec![
            change("", "lead_generation", t0),
            change("proposal", "negotiation", t0),
        ],
    ));
    requests.push(import_request(
        "bad-stage",
        1,
        vec![change("", "nowhere", t0)],
    ));
    requests.push(import_request("", 1, vec![]));
    let mut bad_email = import_request("bad-email", 1, vec![]);
    bad_email.lead.as_mut().unwrap().contact_email = "nope".into();
    requests.push(bad_email);

    let response = import(&app, requests).await;
    assert_eq!(response.received, 7);
    assert_eq!(response.imported, 3);
    assert_eq!(response.failed, 4);
    let errors: Vec<(i64, &str)> = response
        .errors
        .iter()
        .map(|e| (e.index, e.field.as_str()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (3, "history[1].from_stage"),
            (4, "history[0].to_stage"),
            (5, "external_id"),
            (6, "lead.contact_email"),
        ]
    );

    // Re-running the same import creates nothing new.
    let again = import(&app, good).await;
    assert_eq!((again.imported, again.already_imported), (0, 3));

    let page = app
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest {
            filter: r#"stage = "closed_lost""#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.total_size, 1);
    let lost = &page.leads[0];
    assert_eq!(lost.close_time, Some(ts(t0 + Duration::days(5))));
    assert_eq!(lost.create_time, Some(ts(t0)));
    let history = app
        .leads
        .clone()
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: lost.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .stage_changes;
    assert_eq!(history.len(), 3);
    // Each entry keeps the source system's actor; the revisions record the importing caller.
    assert!(history.iter().all(|c| c.imported && c.actor == "crm"));
    assert!(history.iter().all(|c| !c.note.contains("source system")));

    // Imported history is not streamed, and a live subscriber skips its sequences.
    let mut stream = app
        .leads
        .clone()
        .watch_stage_changes(pb::WatchStageChangesRequest {
            after_sequence: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let fresh = create(&app, new_lead("after the import")).await;
    let event = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.lead_id, fresh.id);
}

async fn metrics_follow_their_definitions_on_a_small_history(app: TestApp) {
    let now = Utc::now();
    let day = Duration::days(1);
    let t0 = now - Duration::days(60);
    let requests = vec![
        // Won after 10 days: lead_generation 2d, qualification 3d, proposal 3d, negotiation 2d.
        import_request(
            "won",
            10_000,
            vec![
                change("", "lead_generation", t0),
                change("lead_generation", "qualification", t0 + day * 2),
                change("qualification", "proposal", t0 + day * 5),
                change("proposal", "negotiation", t0 + day * 8),
                change("negotiation", "closed_won", t0 + day * 10),
            ],
        ),
        // Lost from qualification.
        import_request(
            "lost",
            5_000,
            vec![
                change("", "lead_generation", t0),
                change("lead_generation", "qualification", t0 + day * 4),
                change("qualification", "closed_lost", t0 + day * 6),
            ],
        ),
        // Stuck in qualification for 40 days (rotting days 21).
        import_request(
            "stuck",
            50_000,
            vec![
                change("", "lead_generation", t0 + day * 10),
                change("lead_generation", "qualification", t0 + day * 20),
            ],
        ),
        // Fresh in qualification.
        import_request(
            "fresh",
            1_000,
            vec![
                change("", "lead_generation", now - day * 3),
                change("lead_generation", "qualification", now - day),
            ],
        ),
    ];
    assert_eq!(import(&app, requests).await.imported, 4);

    let metrics = forecasts(&app)
        .await
        .get_pipeline_metrics(pb::GetPipelineMetricsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let stage = |key: &str| metrics.stages.iter().find(|s| s.stage == key).unwrap();
    let qualification = stage("qualification");
    assert_eq!(qualification.entered_count, 4);
    assert_eq!(qualification.advanced_count, 1);
    assert_eq!(qualification.lost_count, 1);
    assert!(
        (qualification.conversion_rate - 0.5).abs() < 1e-9,
        "1 of 2 ended visits advanced"
    );
    assert!(
        (qualification.win_rate - 0.5).abs() < 1e-9,
        "1 of 2 closed leads was won"
    );
    assert_eq!(qualification.open_count, 2);
    assert_eq!(qualification.stuck_count, 1);
    let lead_generation = stage("lead_generation");
    assert_eq!(
        (
            lead_generation.entered_count,
            lead_generation.advanced_count
        ),
        (4, 4)
    );
    assert!((metrics.win_rate - 0.5).abs() < 1e-9);
    assert_eq!(
        metrics.median_time_to_close.as_ref().unwrap().seconds / 86_400,
        10
    );
    assert_eq!(metrics.average_won_amount, vec![money("EUR", 10_000)]);
    assert_eq!(metrics.open_count, 2);
    assert_eq!(metrics.bottleneck_stage, "qualification");
    assert!(!metrics.bottleneck_explanation.is_empty());

    // Point in time: 7 days after t0 the won lead was still in proposal.
    let earlier = forecasts(&app)
        .await
        .get_pipeline_metrics(pb::GetPipelineMetricsRequest {
            as_of: Some(ts(t0 + day * 7)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        earlier
            .stages
            .iter()
            .find(|s| s.stage == "proposal")
            .unwrap()
            .open_count,
        1
    );
    assert_eq!(earlier.open_count, 1);

    let stuck = forecasts(&app)
        .await
        .list_stuck_leads(pb::ListStuckLeadsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stuck.total_size, 1);
    let only = &stuck.stuck_leads[0];
    assert_eq!(only.lead.as_ref().unwrap().external_id, "stuck");
    assert!(
        only.time_in_stage.as_ref().unwrap().seconds > only.threshold.as_ref().unwrap().seconds
    );
    assert!(!only.threshold_kind.is_empty());

    let status = forecasts(&app)
        .await
        .get_pipeline_metrics(pb::GetPipelineMetricsRequest {
            pipeline_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

/// Sums of amounts near the int64 limit: exact while they fit Money.units, OUT_OF_RANGE once
/// they do not, never clipped to i64::MAX (nor rounded through a double).
async fn totals_are_exact_or_out_of_range(app: TestApp) {
    // 2^62 + 1: a double rounds it to 2^62, and two of them reach 2^63, one past i64::MAX.
    const BIG: i64 = (1 << 62) + 1;
    let big_lead = |title: &str| pb::Lead {
        amount: Some(money("EUR", BIG)),
        ..new_lead(title)
    };
    create(&app, big_lead("first")).await;
    let metrics = || async {
        forecasts(&app)
            .await
            .get_pipeline_metrics(pb::GetPipelineMetricsRequest::default())
            .await
    };
    let forecast = || async {
        forecasts(&app)
            .await
            .get_forecast(pb::GetForecastRequest {
                currency_code: "EUR".into(),
                horizon_periods: 24,
                simulations: 100,
                seed: 3,
                ..Default::default()
            })
            .await
    };
    let open_amount = |metrics: &pb::PipelineMetrics| {
        let stage = &metrics.stages[0];
        assert_eq!(stage.stage, "lead_generation");
        stage
            .open_amount
            .iter()
            .map(|m| (m.currency_code.clone(), m.units, m.nanos))
            .collect::<Vec<_>>()
    };
    let pipeline_total = |forecast: &pb::Forecast| {
        let amounts: Vec<(i64, i32)> = forecast
            .periods
            .iter()
            .filter_map(|p| p.pipeline_amount.as_ref())
            .filter(|m| m.units != 0 || m.nanos != 0)
            .map(|m| (m.units, m.nanos))
            .collect();
        assert_eq!(amounts.len(), 1, "one period holds the lead: {amounts:?}");
        amounts[0]
    };

    let one = metrics().await.expect("one lead fits").into_inner();
    assert_eq!(open_amount(&one), vec![("EUR".to_string(), BIG, 0)]);
    let one = forecast().await.expect("one lead fits").into_inner();
    assert_eq!(pipeline_total(&one), (BIG, 0));

    create(&app, big_lead("second")).await;
    let status = metrics().await.expect_err("2^63 + 2 does not fit");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("EUR") && status.message().contains("9223372036854775807"),
        "{status:?}"
    );
    let status = forecast().await.expect_err("2^63 + 2 does not fit");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // Another currency is summed on its own, and still fits.
    let mut usd = big_lead("dollars");
    usd.amount = Some(money("USD", i64::MAX));
    create(&app, usd).await;
    let status = forecasts(&app)
        .await
        .get_forecast(pb::GetForecastRequest {
            currency_code: "USD".into(),
            horizon_periods: 24,
            simulations: 100,
            seed: 3,
            ..Default::default()
        })
        .await;
    match status {
        Ok(forecast) => assert_eq!(pipeline_total(&forecast.into_inner()), (i64::MAX, 0)),
        // The simulated amounts are estimates in doubles, where i64::MAX reads as 2^63.
        Err(status) => assert_eq!(status.code(), Code::OutOfRange, "{status:?}"),
    }
}

/// The average won amount sums the won leads' amounts in the database: two won leads of 2^62 + 1
/// each sum past int64, which is OUT_OF_RANGE, never INTERNAL and never a clipped figure.
async fn won_amounts_past_int64_are_out_of_range(app: TestApp) {
    const BIG: i64 = (1 << 62) + 1;
    let t0 = Utc::now() - Duration::days(30);
    let won = |id: &str| {
        import_request(
            id,
            BIG,
            vec![
                change("", "lead_generation", t0),
                change("lead_generation", "closed_won", t0 + Duration::days(3)),
            ],
        )
    };
    let metrics = || async {
        forecasts(&app)
            .await
            .get_pipeline_metrics(pb::GetPipelineMetricsRequest::default())
            .await
    };
    assert_eq!(import(&app, vec![won("won-1")]).await.imported, 1);
    metrics().await.expect("one won amount fits");
    assert_eq!(import(&app, vec![won("won-2")]).await.imported, 1);
    let status = metrics().await.expect_err("their sum does not fit int64");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
}

async fn import_synthetic(app: &TestApp, leads: usize, seed: u64) -> synthetic::SyntheticPipeline {
    let end = Utc::now() - Duration::hours(1);
    let generated = synthetic::generate(leads, end - Duration::days(365), end, seed);
    let started = std::time::Instant::now();
    // One stream, as a migration would send it: the model is retrained once, at the end.
    let response = import(app, generated.leads.clone()).await;
    assert_eq!(response.failed, 0, "{:?}", response.errors.first());
    assert_eq!(response.imported as usize, leads);
    let elapsed = started.elapsed();
    let changes: usize = generated.leads.iter().map(|l| l.history.len()).sum();
    eprintln!(
        "imported {leads} leads with {changes} history rows on {:?} in {elapsed:?} ({:.0} leads/s, including rescoring)",
        app.backend,
        leads as f64 / elapsed.as_secs_f64()
    );
    generated
}

async fn learned_probabilities_recover_the_synthetic_truth(app: TestApp) {
    let generated = import_synthetic(&app, 4000, 11).await;
    let truth = &generated.truth;
    let metrics = forecasts(&app)
        .await
        .get_pipeline_metrics(pb::GetPipelineMetricsRequest::default())
        .await
        .unwrap()
        .into_inner();
    for (i, key) in STAGES.iter().enumerate().take(4) {
        let stage = metrics.stages.iter().find(|s| s.stage == *key).unwrap();
        let advance = truth.transition[i][i + 1];
        assert!(
            (stage.conversion_rate - advance).abs() < 0.05,
            "{key}: conversion {} vs true advance probability {advance}",
            stage.conversion_rate
        );
        let p = truth.chain_win_probability[i];
        assert!(
            (stage.learned_win_probability - p).abs() < 0.06,
            "{key}: learned P(win) {} vs truth {p}",
            stage.learned_win_probability
        );
        let median_days = stage.median_time_in_stage.as_ref().unwrap().seconds as f64 / 86_400.0;
        let true_median = synthetic::true_median_dwell_days(truth.mean_dwell_days[i]);
        assert!(
            (median_days - true_median).abs() / true_median < 0.2,
            "{key}: median dwell {median_days} vs truth {true_median}"
        );
    }

    // Referrals close more often: the learned probabilities must say so.
    let mut client = app.leads.clone();
    let mut by_source: HashMap<String, Vec<f64>> = HashMap::new();
    let mut token = String::new();
    let mut previous = f64::INFINITY;
    loop {
        let page = client
            .list_leads(pb::ListLeadsRequest {
                filter: r#"stage = "proposal""#.into(),
                order_by: "win_probability desc".into(),
                page_size: 500,
                page_token: token,
                as_of: None,
            })
            .await
            .unwrap()
            .into_inner();
        for lead in &page.leads {
            assert!(lead.win_probability <= previous + 1e-12, "priority order");
            previous = lead.win_probability;
            by_source
                .entry(lead.source.clone())
                .or_default()
                .push(lead.win_probability);
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let mean = |s: &str| {
        let v = &by_source[s];
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(
        mean("referral") > mean("web") && mean("web") > mean("event"),
        "{by_source:?}"
    );

    let lead = client
        .list_leads(pb::ListLeadsRequest {
            filter: r#"stage = "negotiation" AND source = "referral""#.into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .leads
        .remove(0);
    let explanation = forecasts(&app)
        .await
        .explain_win_probability(pb::ExplainWinProbabilityRequest {
            id: lead.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!((explanation.win_probability - lead.win_probability).abs() < 1e-9);
    assert_eq!(explanation.factors[0].feature, "stage");
    let source = explanation
        .factors
        .iter()
        .find(|f| f.feature == "source")
        .unwrap();
    assert!(source.log_odds > 0.0, "referral raises the odds");
    assert!(explanation.training_size > 1000);
}

async fn forecasts_are_seeded_ranges_per_currency(app: TestApp) {
    import_synthetic(&app, 1500, 5).await;
    let request = pb::GetForecastRequest {
        currency_code: "EUR".into(),
        period: pb::Period::Month as i32,
        horizon_periods: 3,
        simulations: 500,
        seed: 7,
        ..Default::default()
    };
    let first = forecasts(&app)
        .await
        .get_forecast(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = forecasts(&app)
        .await
        .get_forecast(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.periods, second.periods,
        "the same seed gives the same answer"
    );
    assert_eq!(first.periods.len(), 3);
    assert!(first.open_leads > 0);
    let value = |m: &Option<pb::Money>| {
        let m = m.as_ref().unwrap();
        m.units as f64 + m.nanos as f64 / 1e9
    };
    let mut total_expected = 0.0;
    for period in &first.periods {
        assert!(value(&period.p10_amount) <= value(&period.p50_amount));
        assert!(value(&period.p50_amount) <= value(&period.p90_amount));
        assert!(value(&period.commit_amount) <= value(&period.best_case_amount));
        assert!(value(&period.best_case_amount) <= value(&period.pipeline_amount));
        assert!(value(&period.closed_won_amount) <= value(&period.p10_amount) + 1e-6);
        total_expected += value(&period.expected_amount);
    }
    assert!(total_expected > 0.0);
    let other_seed = forecasts(&app)
        .await
        .get_forecast(pb::GetForecastRequest {
            seed: 8,
            ..request.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other_seed.periods, first.periods);

    // A forecast for the present reads open leads from the lead rows; one with an explicit
    // as_of replays the history. Both must find the same deals and give the same ranges.
    let replayed = forecasts(&app)
        .await
        .get_forecast(pb::GetForecastRequest {
            as_of: Some(ts(Utc::now())),
            ..request.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.open_leads, first.open_leads);
    for (present, history) in first.periods.iter().zip(&replayed.periods) {
        for (a, b) in [
            (&present.p10_amount, &history.p10_amount),
            (&present.p50_amount, &history.p50_amount),
            (&present.p90_amount, &history.p90_amount),
            (&present.pipeline_amount, &history.pipeline_amount),
        ] {
            let (a, b) = (value(a), value(b));
            assert!(
                (a - b).abs() <= 0.01 * a.abs().max(1.0),
                "present {a} vs replayed {b}"
            );
        }
    }

    let usd = forecasts(&app)
        .await
        .get_forecast(pb::GetForecastRequest {
            currency_code: "USD".into(),
            ..request.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usd.open_leads, 0, "EUR leads are never forecast as USD");

    let status = forecasts(&app)
        .await
        .get_forecast(pb::GetForecastRequest {
            currency_code: "euro".into(),
            horizon_periods: 99,
            simulations: 5,
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&status),
        vec![
            "currency_code".to_string(),
            "horizon_periods".to_string(),
            "simulations".to_string()
        ]
    );
}

async fn backtests_cover_the_actual_and_beat_the_naive_pipeline(app: TestApp) {
    // Hand-typed stage probabilities are usually optimistic; make them so, as a CRM admin would.
    let mut default = get_pipeline(&app, "default").await.unwrap();
    for (stage, p) in default.stages.iter_mut().zip([0.3, 0.5, 0.7, 0.9]) {
        stage.probability = p;
    }
    update_pipeline(&app, default, &["stages"]).await.unwrap();
    import_synthetic(&app, 5000, 23).await;

    let mut covered = 0;
    let mut periods = 0;
    let mut learned_error = 0.0;
    let mut naive_error = 0.0;
    let mut brier = Vec::new();
    for months_back in [4, 5, 6, 7, 8] {
        let backtest = forecasts(&app)
            .await
            .backtest_forecast(pb::BacktestForecastRequest {
                as_of: Some(ts(Utc::now() - Duration::days(30 * months_back))),
                horizon_periods: 2,
                period: pb::Period::Month as i32,
                currency_code: "EUR".into(),
                simulations: 500,
                seed: months_back as u64,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for period in &backtest.periods {
            let v = |m: &Option<pb::Money>| m.as_ref().map_or(0, |m| m.units);
            eprintln!(
                "as_of -{months_back}m: actual {} p10 {} p50 {} p90 {} naive {}",
                v(&period.actual_amount),
                v(&period.p10_amount),
                v(&period.predicted_amount),
                v(&period.p90_amount),
                v(&period.naive_predicted_amount)
            );
            periods += 1;
            covered += usize::from(period.actual_within_p10_p90);
            learned_error += period.absolute_error;
            naive_error += period.naive_absolute_error;
        }
        assert!(backtest.scored_leads > 0);
        brier.push((backtest.brier_score, backtest.naive_brier_score));
    }
    let coverage = covered as f64 / periods as f64;
    eprintln!(
        "backtest: P10–P90 coverage {coverage:.2} over {periods} periods; error learned {learned_error:.0} vs naive {naive_error:.0}; brier {brier:?}"
    );
    assert!((0.6..=1.0).contains(&coverage), "coverage {coverage}");
    assert!(
        learned_error < naive_error,
        "learned {learned_error} vs naive {naive_error}"
    );
    assert!(
        brier.iter().all(|(learned, naive)| learned < naive),
        "{brier:?}"
    );
}

/// Import throughput at scale, for the record; run it in release:
/// `LEADPIPE_IMPORT_LEADS=100000 cargo test --release --test forecast -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; takes minutes in debug builds"]
async fn import_throughput() {
    let leads = std::env::var("LEADPIPE_IMPORT_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if let Some(app) = spawn_app(backend).await {
            import_synthetic(&app, leads, 3).await;
        }
    }
}

/// A large import refreshes PostgreSQL's planner statistics itself: statements prepared while
/// the tables were empty keep a full-scan plan until then, which made imports slow down as the
/// table grew. It ends with a VACUUM, so that reports read the open leads from the index alone.
/// `last_analyze` and `last_vacuum` are set only by an explicit ANALYZE or VACUUM, never by
/// autovacuum.
#[tokio::test]
async fn large_imports_refresh_planner_statistics_and_vacuum_on_postgres() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let end = Utc::now() - Duration::hours(1);
    let generated = synthetic::generate(1100, end - Duration::days(90), end, 5);
    let response = import(&app, generated.leads).await;
    assert_eq!(response.imported, 1100);

    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let db = Database::connect(&app.database_url).await.unwrap();
    for table in leadpipe::store::IMPORT_GROWN_TABLES {
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT (last_analyze IS NOT NULL) AS analyzed, \
                        (last_vacuum IS NOT NULL) AS vacuumed \
                 FROM pg_stat_user_tables WHERE relname = $1",
                [table.into()],
            ))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no statistics row for {table}"));
        let analyzed: bool = row.try_get("", "analyzed").unwrap();
        assert!(analyzed, "the import did not ANALYZE {table}");
        let vacuumed: bool = row.try_get("", "vacuumed").unwrap();
        assert!(vacuumed, "the import did not VACUUM {table}");
    }
    db.close().await.ok();
}

/// The forecast's first period counts what was won in it so far: each entry into a won stage
/// in this period and currency, at the amount the lead had when it was won, not its amount now,
/// whether the win was imported or made by MoveLead, and for changes recorded before the amount
/// was kept on them, whose amount is then found in the lead's revisions.
async fn the_first_period_counts_each_win_at_the_amount_it_was_won_at(app: TestApp) {
    use chrono::{Datelike, TimeZone};
    let mut now = app.clock.now();
    let month_start = |t: chrono::DateTime<Utc>| {
        Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
            .unwrap()
    };
    if now - month_start(now) < Duration::minutes(10) {
        app.clock.advance(Duration::minutes(15));
        now = app.clock.now();
    }
    let start = month_start(now);
    let won_at = |external_id: &str, amount: i64, at: chrono::DateTime<Utc>| {
        import_request(
            external_id,
            amount,
            vec![
                change("", "lead_generation", at - Duration::minutes(1)),
                change("lead_generation", "closed_won", at),
            ],
        )
    };
    let mut in_dollars = won_at("won-in-dollars", 300, start + Duration::minutes(3));
    in_dollars.lead.as_mut().unwrap().amount = Some(money("USD", 300));
    let response = import(
        &app,
        vec![
            won_at("won-this-month", 1000, start + Duration::minutes(2)),
            won_at("won-last-month", 700, start - Duration::days(1)),
            in_dollars,
            import_request(
                "won-live",
                400,
                vec![
                    change("", "lead_generation", start - Duration::days(20)),
                    change("lead_generation", "negotiation", start - Duration::days(10)),
                ],
            ),
        ],
    )
    .await;
    assert_eq!(response.imported, 4);
    let this_month = imported_lead(&app, "won-this-month").await;
    set_amount(&app, this_month, 5000).await;
    let live = imported_lead(&app, "won-live").await;
    let won = move_to(&app, &live.id, "closed_won").await.expect("win");
    // A change without a recorded amount finds it in the revisions by time.
    app.clock.advance(Duration::seconds(1));
    set_amount(&app, won, 9000).await;
    assert_eq!(won_so_far(&app).await, 1400);

    // Dropping the columns (and the open-lead groups after them) and adding them back leaves
    // every change as one recorded before they existed.
    let app = restart_after_rolling_back(app, 2, &[]).await;
    assert_eq!(
        won_so_far(&app).await,
        1400,
        "changes without a recorded amount"
    );
}

/// The one lead imported with `external_id`.
async fn imported_lead(app: &TestApp, external_id: &str) -> pb::Lead {
    let mut found = all_leads(app, &format!("external_id = \"{external_id}\"")).await;
    assert_eq!(found.len(), 1, "leads imported as {external_id}");
    found.remove(0)
}

async fn set_amount(app: &TestApp, lead: pb::Lead, euros: i64) {
    let lead = pb::Lead {
        amount: Some(money("EUR", euros)),
        ..lead
    };
    update_lead(app, lead, &["amount"]).await;
}

/// What the forecast's first month counts as won so far, in whole euros.
async fn won_so_far(app: &TestApp) -> i64 {
    let forecast = forecasts(app)
        .await
        .get_forecast(pb::GetForecastRequest {
            currency_code: "EUR".into(),
            period: pb::Period::Month as i32,
            horizon_periods: 1,
            simulations: 100,
            seed: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let won = forecast.periods[0].closed_won_amount.as_ref().unwrap();
    assert_eq!(won.currency_code, "EUR");
    won.units
}
