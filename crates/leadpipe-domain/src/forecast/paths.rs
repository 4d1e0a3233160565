//! Time to win, learned without survivorship bias.
//!
//! The times of leads already won by a point in time are biased short: leads on long cycles have
//! not won yet and are missing. Instead, simulate paths through the stage chain: each visit lasts
//! a time drawn from that stage's Kaplan–Meier estimate (which counts open visits as censored)
//! and moves on by the learned transition probabilities. The durations of paths that end in a
//! win give each stage's time-to-win distribution.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::markov::ChainModel;
use super::simulate::CloseTimes;
use super::survival::KaplanMeier;

/// Visits per path before giving up on it (cycles of backward moves).
const MAX_STEPS: usize = 200;

/// `won[i]` marks won stages, `lost[i]` lost ones; `dwell[i]` is in days.
pub fn close_times_from_chain(
    chain: &ChainModel,
    dwell: &[KaplanMeier],
    won: &[bool],
    lost: &[bool],
    wins_per_stage: usize,
    seed: u64,
) -> CloseTimes {
    let stages = chain.transition.len();
    let mut close_times = CloseTimes::new(stages);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for start in 0..stages {
        if won[start] || lost[start] || chain.win_probability[start] <= 0.0 {
            continue;
        }
        // Enough attempts to collect the wins at this stage's win probability, within reason.
        let attempts = ((wins_per_stage as f64 / chain.win_probability[start].max(0.01)) as usize)
            .min(wins_per_stage * 100);
        let mut collected = 0;
        for _ in 0..attempts {
            if collected == wins_per_stage {
                break;
            }
            if let Some(days) = walk(chain, dwell, won, lost, start, &mut rng) {
                close_times.add(start, days);
                collected += 1;
            }
        }
    }
    close_times
}

/// One path from entering `start`: the days until a win, or None if it is lost.
fn walk(
    chain: &ChainModel,
    dwell: &[KaplanMeier],
    won: &[bool],
    lost: &[bool],
    start: usize,
    rng: &mut impl Rng,
) -> Option<f64> {
    let mut stage = start;
    let mut days = 0.0;
    for _ in 0..MAX_STEPS {
        days += draw_dwell(&dwell[stage], rng);
        stage = next_stage(&chain.transition[stage], rng)?;
        if won[stage] {
            return Some(days);
        }
        if lost[stage] {
            return None;
        }
    }
    None
}

/// Inverse-transform sampling of the Kaplan–Meier estimate. Where censoring leaves the tail
/// unknown, the last observed exit time stands in for it.
fn draw_dwell(km: &KaplanMeier, rng: &mut impl Rng) -> f64 {
    let u: f64 = rng.random();
    km.quantile(u)
        .or_else(|| (0..=100).rev().find_map(|q| km.quantile(q as f64 / 100.0)))
        .unwrap_or(0.0)
}

fn next_stage(row: &[f64], rng: &mut impl Rng) -> Option<usize> {
    let total: f64 = row.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let mut u = rng.random::<f64>() * total;
    for (i, p) in row.iter().enumerate() {
        if u < *p {
            return Some(i);
        }
        u -= p;
    }
    row.iter().rposition(|p| *p > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// open(0) → open(1) → won(2); each open stage lasts exactly 5 days.
    #[test]
    fn a_deterministic_chain_gives_exact_times() {
        let chain = ChainModel {
            transition: vec![
                vec![0.0, 1.0, 0.0, 0.0],
                vec![0.0, 0.0, 1.0, 0.0],
                vec![0.0, 0.0, 1.0, 0.0],
                vec![0.0, 0.0, 0.0, 1.0],
            ],
            win_probability: vec![1.0, 1.0, 1.0, 0.0],
            exits: vec![1.0; 4],
        };
        let five = KaplanMeier::fit([(5.0, true), (5.0, true)]);
        let dwell = vec![
            five.clone(),
            five,
            KaplanMeier::default(),
            KaplanMeier::default(),
        ];
        let won = [false, false, true, false];
        let lost = [false, false, false, true];
        let times = close_times_from_chain(&chain, &dwell, &won, &lost, 50, 1);
        assert_eq!(times.median_remaining(0, 0.0), 10.0);
        assert_eq!(times.median_remaining(1, 0.0), 5.0);
    }

    #[test]
    fn losing_paths_are_not_counted() {
        // From stage 0: half lost at once, half won after 3 days.
        let chain = ChainModel {
            transition: vec![
                vec![0.0, 0.5, 0.5],
                vec![0.0, 1.0, 0.0],
                vec![0.0, 0.0, 1.0],
            ],
            win_probability: vec![0.5, 1.0, 0.0],
            exits: vec![10.0, 0.0, 0.0],
        };
        let dwell = vec![
            KaplanMeier::fit([(3.0, true)]),
            KaplanMeier::default(),
            KaplanMeier::default(),
        ];
        let times = close_times_from_chain(
            &chain,
            &dwell,
            &[false, true, false],
            &[false, false, true],
            100,
            7,
        );
        assert_eq!(times.median_remaining(0, 0.0), 3.0);
    }
}
