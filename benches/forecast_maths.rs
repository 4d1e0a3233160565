//! The forecast maths on its own, without a database: the Markov solve, the Monte Carlo and
//! Kaplan–Meier, at the sizes a tenant reaches. Run with `cargo bench --bench forecast_maths`.

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use leadpipe::domain::forecast::paths::close_times_from_chain;
use leadpipe::domain::forecast::periods::{PeriodKind, periods};
use leadpipe::domain::forecast::simulate::{OpenDeal, simulate, simulate_grouped};
use leadpipe::domain::forecast::{CloseTimes, KaplanMeier, TransitionCounts, fit_chain};
use leadpipe::domain::pipeline::StageKind;
use leadpipe::domain::policy::default_pipeline;

const SIMULATIONS: usize = 1_000;

/// Transition counts shaped like a real funnel: most leads advance, some are lost at each stage.
fn funnel_counts(stages: usize, leads: f64) -> TransitionCounts {
    let mut counts = TransitionCounts::new(stages);
    let (won, lost) = (stages - 2, stages - 1);
    let mut reaching = leads;
    for from in 0..won - 1 {
        counts.add(from, from + 1, reaching * 0.6);
        counts.add(from, lost, reaching * 0.4);
        reaching *= 0.6;
    }
    counts.add(won - 1, won, reaching * 0.5);
    counts.add(won - 1, lost, reaching * 0.5);
    counts
}

fn open_deals(count: usize, stages: usize, rng: &mut ChaCha8Rng) -> Vec<OpenDeal> {
    (0..count)
        .map(|_| OpenDeal {
            amount: rng.random_range(1_000.0..100_000.0),
            win_probability: rng.random_range(0.05..0.9),
            stage: rng.random_range(0..stages),
            days_in_stage: rng.random_range(0.0..120.0),
        })
        .collect()
}

fn close_times(stages: usize, rng: &mut ChaCha8Rng) -> CloseTimes {
    let mut times = CloseTimes::new(stages);
    for stage in 0..stages {
        for _ in 0..2_000 {
            times.add(stage, rng.random_range(1.0..200.0));
        }
    }
    times
}

fn markov(c: &mut Criterion) {
    let def = default_pipeline();
    let counts = funnel_counts(def.stages.len(), 100_000.0);
    c.bench_function("markov/fit_and_solve_default_pipeline", |b| {
        b.iter(|| fit_chain(black_box(&def), black_box(&counts), 10.0))
    });
    let chain = fit_chain(&def, &counts, 10.0);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let dwell: Vec<KaplanMeier> = (0..def.stages.len())
        .map(|_| KaplanMeier::fit((0..5_000).map(|_| (rng.random_range(0.0..90.0), true))))
        .collect();
    let won: Vec<bool> = def
        .stages
        .iter()
        .map(|s| s.kind == StageKind::Won)
        .collect();
    let lost: Vec<bool> = def
        .stages
        .iter()
        .map(|s| s.kind == StageKind::Lost)
        .collect();
    c.bench_function("markov/close_times_from_chain_2000_wins_per_stage", |b| {
        b.iter(|| close_times_from_chain(&chain, &dwell, &won, &lost, 2_000, 7))
    });
}

fn monte_carlo(c: &mut Criterion) {
    let stages = 4;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let times = close_times(stages, &mut rng);
    let as_of = Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap();
    let horizon = periods(PeriodKind::Month, as_of, 6);
    let mut group = c.benchmark_group("monte_carlo_1000_simulations");
    group.sample_size(10);
    for deals in [1_000usize, 10_000] {
        let open = open_deals(deals, stages, &mut rng);
        group.throughput(Throughput::Elements(deals as u64));
        group.bench_with_input(BenchmarkId::new("exact", deals), &open, |b, open| {
            b.iter(|| simulate(open, &times, as_of, &horizon, SIMULATIONS, 3))
        });
    }
    for deals in [10_000usize, 100_000, 1_000_000] {
        let open = open_deals(deals, stages, &mut rng);
        group.throughput(Throughput::Elements(deals as u64));
        group.bench_with_input(BenchmarkId::new("grouped", deals), &open, |b, open| {
            b.iter(|| simulate_grouped(open, &times, as_of, &horizon, SIMULATIONS, 3))
        });
    }
    group.finish();
}

fn kaplan_meier(c: &mut Criterion) {
    let mut group = c.benchmark_group("kaplan_meier_fit");
    group.sample_size(10);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for visits in [10_000usize, 100_000, 1_000_000] {
        let observations: Vec<(f64, bool)> = (0..visits)
            .map(|_| (rng.random_range(0.0..365.0), rng.random_bool(0.8)))
            .collect();
        group.throughput(Throughput::Elements(visits as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(visits),
            &observations,
            |b, obs| b.iter(|| KaplanMeier::fit(obs.iter().copied()).median()),
        );
    }
    group.finish();
}

criterion_group!(benches, markov, monte_carlo, kaplan_meier);
criterion_main!(benches);
