//! Monte Carlo revenue forecast over open deals: which deals are won, and when.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Exp};

use super::evaluate::percentile;
use super::periods::PeriodRange;

/// Mean of the close-time guess for a stage with no won history at all.
const DEFAULT_MEAN_DAYS: f64 = 30.0;
/// Above this many deals, `simulate` switches to the grouped approximation.
pub const EXACT_LIMIT: usize = 20_000;
/// Close times sampled per group to estimate where its wins land.
const GROUP_CLOSE_SAMPLES: usize = 256;
const SECONDS_PER_DAY: f64 = 86_400.0;

#[derive(Debug, Clone)]
pub struct OpenDeal {
    pub amount: f64,
    pub win_probability: f64,
    pub stage: usize,
    pub days_in_stage: f64,
}

/// Per stage, the days from entering it to winning, of visits that ended in a win.
#[derive(Debug, Clone, Default)]
pub struct CloseTimes {
    samples: Vec<Vec<f64>>,
    /// Sorted copies, built on first use so that `add` stays O(1) and sampling O(log n).
    sorted: Vec<OnceLock<Vec<f64>>>,
}

impl CloseTimes {
    pub fn new(stages: usize) -> Self {
        Self {
            samples: vec![Vec::new(); stages],
            sorted: vec![OnceLock::new(); stages],
        }
    }

    /// Learned from leads that entered `stage` and were later won.
    pub fn add(&mut self, stage: usize, days_from_stage_entry_to_win: f64) {
        if !days_from_stage_entry_to_win.is_finite() {
            return;
        }
        if stage >= self.samples.len() {
            self.samples.resize(stage + 1, Vec::new());
            self.sorted.resize(stage + 1, OnceLock::new());
        }
        self.samples[stage].push(days_from_stage_entry_to_win.max(0.0));
        self.sorted[stage] = OnceLock::new();
    }

    fn sorted(&self, stage: usize) -> &[f64] {
        match self.sorted.get(stage) {
            Some(cell) => cell.get_or_init(|| {
                let mut v = self.samples[stage].clone();
                v.sort_unstable_by(f64::total_cmp);
                v
            }),
            None => &[],
        }
    }

    /// Days still to go until the win, given `days_in_stage` already spent: a won visit that
    /// lasted longer than that, drawn uniformly, minus the time spent. A deal older than every
    /// won visit gets the stage's median; a stage with no data an exponential with a 30-day mean.
    pub fn sample_remaining(&self, stage: usize, days_in_stage: f64, rng: &mut impl Rng) -> f64 {
        let samples = self.sorted(stage);
        if samples.is_empty() {
            let exp = Exp::new(1.0 / DEFAULT_MEAN_DAYS).expect("a positive rate");
            return exp.sample(rng);
        }
        let spent = sanitize_days(days_in_stage);
        let longer = samples.partition_point(|&x| x <= spent);
        if longer < samples.len() {
            samples[rng.random_range(longer..samples.len())] - spent
        } else {
            percentile(samples, 0.5)
        }
    }

    /// The median of what `sample_remaining` draws from.
    pub fn median_remaining(&self, stage: usize, days_in_stage: f64) -> f64 {
        let samples = self.sorted(stage);
        if samples.is_empty() {
            return DEFAULT_MEAN_DAYS * std::f64::consts::LN_2;
        }
        let spent = sanitize_days(days_in_stage);
        let longer = samples.partition_point(|&x| x <= spent);
        if longer < samples.len() {
            percentile(&samples[longer..], 0.5) - spent
        } else {
            percentile(samples, 0.5)
        }
    }
}

fn sanitize_days(days: f64) -> f64 {
    if days.is_finite() { days.max(0.0) } else { 0.0 }
}

/// Additional won amount in one period, across simulations.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodOutcome {
    pub expected: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

/// Period boundaries as days after `as_of`, so that the hot loop compares floats.
struct Horizon {
    starts: Vec<f64>,
    ends: Vec<f64>,
}

impl Horizon {
    fn new(as_of: DateTime<Utc>, periods: &[PeriodRange]) -> Self {
        let days =
            |t: DateTime<Utc>| (t - as_of).num_milliseconds() as f64 / 1000.0 / SECONDS_PER_DAY;
        Self {
            starts: periods.iter().map(|p| days(p.start)).collect(),
            ends: periods.iter().map(|p| days(p.end)).collect(),
        }
    }

    fn locate(&self, days_from_now: f64) -> Option<usize> {
        let i = self
            .starts
            .partition_point(|&s| s <= days_from_now)
            .checked_sub(1)?;
        (days_from_now < self.ends[i]).then_some(i)
    }
}

/// Totals laid out period by period (`totals[period * simulations + sim]`), so each period's
/// outcomes are one contiguous slice to sort.
fn summarize(mut totals: Vec<f64>, periods: usize, simulations: usize) -> Vec<PeriodOutcome> {
    if simulations == 0 {
        let zero = PeriodOutcome {
            expected: 0.0,
            p10: 0.0,
            p50: 0.0,
            p90: 0.0,
        };
        return vec![zero; periods];
    }
    totals
        .chunks_mut(simulations)
        .map(|column| {
            let expected = column.iter().sum::<f64>() / simulations as f64;
            column.sort_unstable_by(f64::total_cmp);
            PeriodOutcome {
                expected,
                p10: percentile(column, 0.1),
                p50: percentile(column, 0.5),
                p90: percentile(column, 0.9),
            }
        })
        .collect()
}

fn counts(deal: &OpenDeal) -> bool {
    deal.win_probability > 0.0 && deal.amount > 0.0 && deal.amount.is_finite()
}

/// Simulates which deals are won and when, and reports the additional won amount per period
/// (the caller adds what was already won). The same seed gives the same result, on any number
/// of cores: the simulations are split over fixed random streams, run side by side. Memory is
/// `simulations × periods`; above `EXACT_LIMIT` deals it uses `simulate_grouped`.
pub fn simulate(
    deals: &[OpenDeal],
    close_times: &CloseTimes,
    as_of: DateTime<Utc>,
    periods: &[PeriodRange],
    simulations: usize,
    seed: u64,
) -> Vec<PeriodOutcome> {
    if deals.len() > EXACT_LIMIT {
        return simulate_grouped(deals, close_times, as_of, periods, simulations, seed);
    }
    let horizon = Horizon::new(as_of, periods);
    let deals: Vec<&OpenDeal> = deals.iter().filter(|d| counts(d)).collect();
    let totals = in_streams(simulations, periods.len(), seed, |rng, sims, totals| {
        for sim in 0..sims {
            for deal in &deals {
                if rng.random::<f64>() >= deal.win_probability {
                    continue;
                }
                let days = close_times.sample_remaining(deal.stage, deal.days_in_stage, rng);
                if let Some(k) = horizon.locate(days) {
                    totals[k * sims + sim] += deal.amount;
                }
            }
        }
    });
    summarize(totals, periods.len(), simulations)
}

/// Simulations run in this many random streams of their own, each seeded from the seed and its
/// number, so that a seed gives the same result on any number of cores.
const STREAMS: usize = 4;

/// Runs `simulations` split over [`STREAMS`] streams, on as many threads as there are cores up to
/// that, and returns the totals laid out for [`summarize`]. `run(rng, sims, totals)` simulates
/// `sims` times into `totals[period * sims + sim]`. Stream 0 is left to the caller's own draws.
fn in_streams<F>(simulations: usize, periods: usize, seed: u64, run: F) -> Vec<f64>
where
    F: Fn(&mut ChaCha8Rng, usize, &mut [f64]) + Sync,
{
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    in_streams_on(cores, simulations, periods, seed, run)
}

fn in_streams_on<F>(cores: usize, simulations: usize, periods: usize, seed: u64, run: F) -> Vec<f64>
where
    F: Fn(&mut ChaCha8Rng, usize, &mut [f64]) + Sync,
{
    let sizes: Vec<usize> = (0..STREAMS)
        .map(|s| simulations / STREAMS + usize::from(s < simulations % STREAMS))
        .collect();
    let run_stream = |s: usize| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(s as u64 + 1);
        let mut totals = vec![0.0; periods * sizes[s]];
        run(&mut rng, sizes[s], &mut totals);
        (s, totals)
    };
    let threads = cores.clamp(1, STREAMS);
    let mut streams: Vec<Vec<f64>> = vec![Vec::new(); STREAMS];
    std::thread::scope(|scope| {
        let run_stream = &run_stream;
        let others: Vec<_> = (1..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..STREAMS)
                        .step_by(threads)
                        .map(run_stream)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (s, totals) in (0..STREAMS).step_by(threads).map(run_stream) {
            streams[s] = totals;
        }
        for other in others {
            let done = other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (s, totals) in done {
                streams[s] = totals;
            }
        }
    });
    let mut totals = Vec::with_capacity(periods * simulations);
    for k in 0..periods {
        for (stream, size) in streams.iter().zip(&sizes) {
            totals.extend_from_slice(&stream[k * size..(k + 1) * size]);
        }
    }
    totals
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupKey {
    stage: usize,
    probability: u32,
    amount: i32,
    days: u32,
}

impl GroupKey {
    fn of(deal: &OpenDeal) -> Self {
        Self {
            stage: deal.stage,
            // 0.05-wide buckets; p = 1 gets a bucket of its own (those wins are certain).
            probability: (deal.win_probability.min(1.0) / 0.05).floor() as u32,
            // Amounts within a factor of two of each other.
            amount: deal.amount.log2().floor() as i32,
            // Octaves of age: members' own ages still drive the timing (see `Group::new`).
            days: (1.0 + sanitize_days(deal.days_in_stage)).log2().floor() as u32,
        }
    }
}

struct Group {
    winners: Binomial,
    /// The p-weighted mean amount, so that E[winners] × value = Σ p·amount exactly.
    value: f64,
    /// Cumulative probability that a win lands in period 0..=k (the rest is beyond the horizon).
    cumulative: Vec<f64>,
    /// P(period k | not in periods before k), for splitting many winners at once.
    conditional: Vec<f64>,
}

impl Group {
    fn new(
        run: &[(GroupKey, &OpenDeal)],
        close_times: &CloseTimes,
        horizon: &Horizon,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let stage = run[0].0.stage;
        let mut total_p = 0.0;
        let mut p_amount = 0.0;
        let by_p: Vec<f64> = run
            .iter()
            .map(|(_, d)| {
                let p = d.win_probability.min(1.0);
                p_amount += p * d.amount;
                total_p += p;
                total_p
            })
            .collect();
        // Where a winner of this group lands: the close time of a member drawn by p, so the
        // mixture of the members' ages is kept rather than replaced by an average age.
        let mut landed = vec![0u32; horizon.starts.len()];
        for _ in 0..GROUP_CLOSE_SAMPLES {
            let u = rng.random::<f64>() * total_p;
            let member = by_p.partition_point(|&c| c <= u).min(run.len() - 1);
            let days = close_times.sample_remaining(stage, run[member].1.days_in_stage, rng);
            if let Some(k) = horizon.locate(days) {
                landed[k] += 1;
            }
        }
        let (mut cumulative, mut conditional) = (Vec::new(), Vec::new());
        let (mut acc, mut left) = (0.0, 1.0);
        for &count in &landed {
            let q = f64::from(count) / GROUP_CLOSE_SAMPLES as f64;
            acc += q;
            cumulative.push(acc);
            conditional.push(if left > 0.0 {
                (q / left).clamp(0.0, 1.0)
            } else {
                0.0
            });
            left -= q;
        }
        let mean_p = (total_p / run.len() as f64).clamp(0.0, 1.0);
        Self {
            winners: Binomial::new(run.len() as u64, mean_p).expect("p in [0, 1]"),
            value: p_amount / total_p,
            cumulative,
            conditional,
        }
    }
}

/// Splitting fewer winners than this draws one period per winner instead of binomials.
const SMALL_SPLIT: u64 = 16;

/// The approximation behind large forecasts. Deals are grouped by stage, win probability (0.05
/// buckets), amount (powers of two) and age in stage (octaves). Per group, the chance that a win
/// lands in each period is estimated once, from 256 close times of members drawn by their win
/// probability. Each simulation then draws the group's winners from Binomial(n, mean p) and
/// splits them over periods with a multinomial (sequential binomials), valuing each winner at
/// the group's p-weighted mean amount.
///
/// The expected amount per period matches the exact simulation up to the noise of those 256
/// samples. The spread is slightly off: Binomial(n, mean p) has a little more variance than the
/// exact sum of Bernoullis with unequal p; one amount per group drops the spread of amounts
/// within a bucket (about 2% of the standard deviation for amounts spread evenly within a factor
/// of two); and a winner's timing is drawn from the group's mix rather than from its own age,
/// which loses any link between amount and timing inside a group. Cost is groups × simulations
/// instead of deals × simulations, and groups are bounded by the buckets, not by the deals.
pub fn simulate_grouped(
    deals: &[OpenDeal],
    close_times: &CloseTimes,
    as_of: DateTime<Utc>,
    periods: &[PeriodRange],
    simulations: usize,
    seed: u64,
) -> Vec<PeriodOutcome> {
    let horizon = Horizon::new(as_of, periods);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Sorted (stably) so that the random stream, and so the result, follows the input alone.
    let mut members: Vec<(GroupKey, &OpenDeal)> = deals
        .iter()
        .filter(|d| counts(d))
        .map(|d| (GroupKey::of(d), d))
        .collect();
    members.sort_by_key(|(key, _)| *key);
    let groups: Vec<Group> = members
        .chunk_by(|a, b| a.0 == b.0)
        .map(|run| Group::new(run, close_times, &horizon, &mut rng))
        .filter(|g| g.cumulative.last().is_some_and(|&c| c > 0.0))
        .collect();

    let totals = in_streams(simulations, periods.len(), seed, |rng, sims, totals| {
        for sim in 0..sims {
            for g in &groups {
                let winners = g.winners.sample(rng);
                if winners == 0 {
                    continue;
                }
                if winners < SMALL_SPLIT {
                    for _ in 0..winners {
                        let u: f64 = rng.random();
                        let k = g.cumulative.partition_point(|&c| c <= u);
                        if k < periods.len() {
                            totals[k * sims + sim] += g.value;
                        }
                    }
                    continue;
                }
                let mut left = winners;
                for (k, &p) in g.conditional.iter().enumerate() {
                    if left == 0 {
                        break;
                    }
                    let x = Binomial::new(left, p).expect("p in [0, 1]").sample(rng);
                    totals[k * sims + sim] += x as f64 * g.value;
                    left -= x;
                }
            }
        }
    });
    summarize(totals, periods.len(), simulations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::periods::{PeriodKind, periods as make_periods};
    use chrono::{Duration, TimeZone};

    fn as_of() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 4, 12, 0, 0).unwrap()
    }

    fn months(n: usize) -> Vec<PeriodRange> {
        make_periods(PeriodKind::Month, as_of(), n)
    }

    fn fixed(stage_days: f64) -> CloseTimes {
        let mut ct = CloseTimes::new(1);
        ct.add(0, stage_days);
        ct
    }

    fn deal(amount: f64, p: f64) -> OpenDeal {
        OpenDeal {
            amount,
            win_probability: p,
            stage: 0,
            days_in_stage: 0.0,
        }
    }

    #[test]
    fn a_certain_deal_lands_entirely_in_its_period() {
        // 40 days after 4 March is 13 April: the second month.
        let out = simulate(
            &[deal(1000.0, 1.0)],
            &fixed(40.0),
            as_of(),
            &months(3),
            200,
            7,
        );
        assert_eq!(
            out[0],
            PeriodOutcome {
                expected: 0.0,
                p10: 0.0,
                p50: 0.0,
                p90: 0.0
            }
        );
        assert_eq!(
            out[1],
            PeriodOutcome {
                expected: 1000.0,
                p10: 1000.0,
                p50: 1000.0,
                p90: 1000.0
            }
        );
        assert_eq!(out[2].expected, 0.0);
        // Beyond the horizon it is not counted at all.
        let out = simulate(
            &[deal(1000.0, 1.0)],
            &fixed(400.0),
            as_of(),
            &months(3),
            50,
            7,
        );
        assert!(out.iter().all(|o| o.expected == 0.0));
    }

    #[test]
    fn the_mean_is_the_weighted_pipeline_when_everything_closes_in_the_period() {
        let deals: Vec<_> = (0..50)
            .map(|i| deal(100.0 + 10.0 * f64::from(i), 0.1 + 0.015 * f64::from(i)))
            .collect();
        let weighted: f64 = deals.iter().map(|d| d.amount * d.win_probability).sum();
        let out = simulate(&deals, &fixed(3.0), as_of(), &months(2), 20_000, 1);
        assert!(
            (out[0].expected - weighted).abs() / weighted < 0.01,
            "{} vs {weighted}",
            out[0].expected
        );
        assert!(out[0].p10 < out[0].p50 && out[0].p50 < out[0].p90);
        assert_eq!(out[1].expected, 0.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_result() {
        let deals: Vec<_> = (0..30).map(|i| deal(1000.0, f64::from(i) / 30.0)).collect();
        let ct = CloseTimes::new(1); // exponential fallback, so timing is random too
        let a = simulate(&deals, &ct, as_of(), &months(3), 500, 42);
        let b = simulate(&deals, &ct, as_of(), &months(3), 500, 42);
        let c = simulate(&deals, &ct, as_of(), &months(3), 500, 43);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let a = simulate_grouped(&deals, &ct, as_of(), &months(3), 500, 42);
        assert_eq!(
            a,
            simulate_grouped(&deals, &ct, as_of(), &months(3), 500, 42)
        );
    }

    #[test]
    fn close_times_condition_on_time_already_spent() {
        let mut ct = CloseTimes::new(2);
        for d in [2.0, 4.0, 10.0, 20.0, 40.0] {
            ct.add(1, d);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let r = ct.sample_remaining(1, 15.0, &mut rng);
            assert!(r == 5.0 || r == 25.0, "{r}");
        }
        assert_eq!(ct.median_remaining(1, 15.0), 15.0);
        assert_eq!(ct.median_remaining(1, 0.0), 10.0);
        // Older than every won visit: the stage's median.
        assert_eq!(ct.sample_remaining(1, 50.0, &mut rng), 10.0);
        assert_eq!(ct.median_remaining(1, 50.0), 10.0);
        // No data: exponential with a 30-day mean.
        assert!((ct.median_remaining(0, 3.0) - 30.0 * std::f64::consts::LN_2).abs() < 1e-12);
        let mean = (0..20_000)
            .map(|_| ct.sample_remaining(0, 0.0, &mut rng))
            .sum::<f64>()
            / 20_000.0;
        assert!((mean - 30.0).abs() < 1.0, "{mean}");
        // Adding after sampling invalidates the sorted cache.
        ct.add(1, 100.0);
        assert_eq!(ct.median_remaining(1, 50.0), 50.0);
        assert_eq!(ct.median_remaining(7, 0.0), 30.0 * std::f64::consts::LN_2);
    }

    fn medium_case() -> (Vec<OpenDeal>, CloseTimes) {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut ct = CloseTimes::new(3);
        for stage in 0..3 {
            for _ in 0..200 {
                ct.add(stage, rng.random_range(1.0..120.0) / (stage as f64 + 1.0));
            }
        }
        let deals = (0..3000)
            .map(|_| OpenDeal {
                amount: (rng.random_range(7.0..11.0f64)).exp(),
                win_probability: rng.random_range(0.05..0.9),
                stage: rng.random_range(0..3),
                days_in_stage: rng.random_range(0.0..60.0),
            })
            .collect();
        (deals, ct)
    }

    #[test]
    fn grouped_and_exact_agree() {
        let (deals, ct) = medium_case();
        let periods = months(4);
        let exact = simulate(&deals, &ct, as_of(), &periods, 2000, 5);
        let grouped = simulate_grouped(&deals, &ct, as_of(), &periods, 2000, 5);
        for (e, g) in exact.iter().zip(&grouped) {
            let scale = e.expected.max(1.0);
            assert!(
                (e.expected - g.expected).abs() / scale < 0.03,
                "{e:?} vs {g:?}"
            );
            assert!((e.p10 - g.p10).abs() / scale < 0.06, "{e:?} vs {g:?}");
            assert!((e.p50 - g.p50).abs() / scale < 0.05, "{e:?} vs {g:?}");
            assert!((e.p90 - g.p90).abs() / scale < 0.06, "{e:?} vs {g:?}");
        }
        // The large path goes through `simulate` on its own past the limit.
        let many: Vec<_> = deals
            .iter()
            .cycle()
            .take(EXACT_LIMIT + 1)
            .cloned()
            .collect();
        let out = simulate(&many, &ct, as_of(), &periods, 10, 5);
        assert_eq!(out, simulate_grouped(&many, &ct, as_of(), &periods, 10, 5));
    }

    #[test]
    fn empty_inputs() {
        assert!(simulate(&[], &CloseTimes::default(), as_of(), &[], 100, 1).is_empty());
        let out = simulate(&[deal(5.0, 0.5)], &fixed(1.0), as_of(), &months(2), 0, 1);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].expected, 0.0);
        // A period that starts in the future only receives wins after its start.
        let later = [PeriodRange {
            start: as_of() + Duration::days(10),
            end: as_of() + Duration::days(20),
        }];
        let out = simulate(&[deal(5.0, 1.0)], &fixed(1.0), as_of(), &later, 10, 1);
        assert_eq!(out[0].expected, 0.0);
    }

    /// 200k deals × 1000 simulations through the grouped path: a smoke check of the large case.
    /// No timing is asserted; debug builds are too slow to bother, so it runs with --release.
    #[test]
    #[cfg_attr(
        debug_assertions,
        ignore = "slow without optimisations; run with --release"
    )]
    fn large_forecasts_run() {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let mut ct = CloseTimes::new(4);
        for _ in 0..10_000 {
            let stage = rng.random_range(0..4);
            ct.add(stage, rng.random_range(0.0..200.0));
        }
        let deals: Vec<_> = (0..200_000)
            .map(|_| OpenDeal {
                amount: rng.random_range(6.0..13.0f64).exp(),
                win_probability: rng.random_range(0.0..1.0),
                stage: rng.random_range(0..4),
                days_in_stage: rng.random_range(0.0..365.0),
            })
            .collect();
        let periods = months(3);
        let started = std::time::Instant::now();
        let out = simulate(&deals, &ct, as_of(), &periods, 1000, 1);
        eprintln!("200k deals × 1000 simulations: {:?}", started.elapsed());
        assert_eq!(out.len(), 3);
        assert!(
            out.iter()
                .all(|o| o.p10 <= o.p50 && o.p50 <= o.p90 && o.expected > 0.0)
        );
    }

    #[test]
    fn a_seed_gives_the_same_totals_on_any_number_of_cores() {
        let run = |rng: &mut ChaCha8Rng, sims: usize, totals: &mut [f64]| {
            for sim in 0..sims {
                for k in 0..3 {
                    totals[k * sims + sim] = rng.random::<f64>() + k as f64;
                }
            }
        };
        let one = in_streams_on(1, 1001, 3, 9, run);
        assert_eq!(one.len(), 3 * 1001);
        for cores in [2, 3, 4, 16] {
            assert_eq!(in_streams_on(cores, 1001, 3, 9, run), one, "{cores} cores");
        }
        assert_ne!(in_streams_on(2, 1001, 3, 10, run), one, "another seed");
        // Period-major: each period's simulations are one slice.
        assert!(one[..1001].iter().all(|&x| x < 1.0));
        assert!(one[2002..].iter().all(|&x| x >= 2.0));
    }
}
