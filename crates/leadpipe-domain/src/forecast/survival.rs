//! Kaplan–Meier estimates of time in stage, so that visits still in progress (censored) count.

/// A right-continuous step function S(t): the share of visits still in the stage after `t`.
#[derive(Debug, Clone, Default)]
pub struct KaplanMeier {
    /// (event time, S just after it), increasing in time, one entry per distinct exit time.
    steps: Vec<(f64, f64)>,
    observations: usize,
}

/// Tolerance for "S(t) has reached 1 − q": products like 4/6 · 3/4 should hit 0.5 exactly.
const EPS: f64 = 1e-12;

impl KaplanMeier {
    /// `(duration, exited)`; `exited == false` means censored (still in the stage). Durations that
    /// are not finite are ignored and negative ones are treated as zero.
    pub fn fit(observations: impl IntoIterator<Item = (f64, bool)>) -> Self {
        let mut obs: Vec<(f64, bool)> = observations
            .into_iter()
            .filter(|(d, _)| d.is_finite())
            .map(|(d, e)| (d.max(0.0), e))
            .collect();
        // Exits sort before censorings at the same time: a visit censored at t was still at risk
        // of exiting at t (the usual Kaplan–Meier convention).
        obs.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut steps = Vec::new();
        let mut survival = 1.0;
        let mut at_risk = obs.len();
        let mut i = 0;
        while i < obs.len() {
            let t = obs[i].0;
            let (mut exits, mut all) = (0usize, 0usize);
            while i < obs.len() && obs[i].0 == t {
                exits += usize::from(obs[i].1);
                all += 1;
                i += 1;
            }
            if exits > 0 {
                survival *= 1.0 - exits as f64 / at_risk as f64;
                steps.push((t, survival));
            }
            at_risk -= all;
        }
        Self {
            steps,
            observations: obs.len(),
        }
    }

    /// The same estimate from grouped observations: `(duration, exited, count)`. Equal to
    /// [`Self::fit`] over each group repeated `count` times, without building that list.
    pub fn fit_counts(groups: impl IntoIterator<Item = (f64, bool, u64)>) -> Self {
        let mut obs: Vec<(f64, bool, u64)> = groups
            .into_iter()
            .filter(|(d, _, n)| d.is_finite() && *n > 0)
            .map(|(d, e, n)| (d.max(0.0), e, n))
            .collect();
        obs.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        let total: u64 = obs.iter().map(|o| o.2).sum();
        let mut steps = Vec::new();
        let mut survival = 1.0;
        let mut at_risk = total as usize;
        let mut i = 0;
        while i < obs.len() {
            let t = obs[i].0;
            let (mut exits, mut all) = (0usize, 0usize);
            while i < obs.len() && obs[i].0 == t {
                if obs[i].1 {
                    exits += obs[i].2 as usize;
                }
                all += obs[i].2 as usize;
                i += 1;
            }
            if exits > 0 {
                survival *= 1.0 - exits as f64 / at_risk as f64;
                steps.push((t, survival));
            }
            at_risk -= all;
        }
        Self {
            steps,
            observations: total as usize,
        }
    }

    /// The smallest t with 1 − S(t) ≥ q; None when the estimate never gets there (too much
    /// censoring) or there is no data.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.observations == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        if q == 0.0 {
            return Some(0.0);
        }
        self.steps
            .iter()
            .find(|(_, s)| 1.0 - s >= q - EPS)
            .map(|(t, _)| *t)
    }

    pub fn median(&self) -> Option<f64> {
        self.quantile(0.5)
    }

    pub fn survival_at(&self, t: f64) -> f64 {
        let after = self.steps.partition_point(|(time, _)| *time <= t);
        match after {
            0 => 1.0,
            n => self.steps[n - 1].1,
        }
    }

    /// Observations fitted, censored ones included.
    pub fn len(&self) -> usize {
        self.observations
    }

    pub fn is_empty(&self) -> bool {
        self.observations == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Worked by hand:
    /// t=1: 8 at risk, 1 exit → S = 7/8
    /// t=3: 6 at risk (2 and the censored 2 are gone), 2 exits → S = 7/8 · 4/6 = 0.58333
    /// t=5: 3 at risk, 1 exit → S = 0.58333 · 2/3 = 0.38889
    /// t=7: 1 at risk, 1 exit → S = 0
    fn example() -> KaplanMeier {
        KaplanMeier::fit([
            (3.0, true),
            (1.0, true),
            (2.0, false),
            (3.0, true),
            (4.0, false),
            (5.0, true),
            (6.0, false),
            (7.0, true),
        ])
    }

    #[test]
    fn hand_worked_example_with_censoring() {
        let km = example();
        assert_eq!(km.len(), 8);
        assert!(close(km.survival_at(0.5), 1.0));
        assert!(close(km.survival_at(1.0), 0.875));
        assert!(close(km.survival_at(2.9), 0.875));
        assert!(close(km.survival_at(3.0), 0.875 * 4.0 / 6.0));
        assert!(close(km.survival_at(5.5), 0.875 * 4.0 / 6.0 * 2.0 / 3.0));
        assert!(close(km.survival_at(7.0), 0.0));
        assert_eq!(km.quantile(0.1), Some(1.0));
        assert_eq!(km.quantile(0.4), Some(3.0));
        assert_eq!(km.median(), Some(5.0));
        assert_eq!(km.quantile(0.9), Some(7.0));
    }

    #[test]
    fn grouped_observations_give_the_same_estimate() {
        let km = KaplanMeier::fit_counts([
            (3.0, true, 2),
            (1.0, true, 1),
            (2.0, false, 1),
            (4.0, false, 1),
            (5.0, true, 1),
            (6.0, false, 1),
            (7.0, true, 1),
            (9.0, true, 0),
        ]);
        let expected = example();
        assert_eq!(km.steps, expected.steps);
        assert_eq!(km.len(), expected.len());
    }

    #[test]
    fn heavy_censoring_leaves_high_quantiles_unknown() {
        let km = KaplanMeier::fit([
            (1.0, true),
            (3.0, true),
            (3.0, true),
            (5.0, true),
            (7.0, false),
            (8.0, false),
        ]);
        // S: 5/6, 5/6·3/5 = 1/2, 1/2·2/3 = 1/3, then only censorings.
        assert_eq!(km.median(), Some(3.0));
        assert_eq!(km.quantile(0.6), Some(5.0));
        assert_eq!(km.quantile(0.9), None);
        assert!(close(km.survival_at(100.0), 1.0 / 3.0));
    }

    #[test]
    fn censoring_at_an_exit_time_counts_as_at_risk() {
        // Without the convention, S(2) would be 1 − 1/1 = 0.
        let km = KaplanMeier::fit([(2.0, false), (2.0, true)]);
        assert!(close(km.survival_at(2.0), 0.5));
        assert_eq!(km.median(), Some(2.0));
        assert_eq!(km.quantile(0.9), None);
    }

    #[test]
    fn empty_and_all_censored() {
        let km = KaplanMeier::fit(std::iter::empty());
        assert!(km.is_empty());
        assert_eq!(km.median(), None);
        assert_eq!(km.survival_at(10.0), 1.0);
        let km = KaplanMeier::fit([(1.0, false), (f64::NAN, true)]);
        assert_eq!(km.len(), 1);
        assert_eq!(km.median(), None);
    }

    #[test]
    fn without_censoring_it_is_the_empirical_distribution() {
        let km = KaplanMeier::fit((1..=10).map(|d| (f64::from(d), true)));
        assert_eq!(km.median(), Some(5.0));
        assert_eq!(km.quantile(0.9), Some(9.0));
        assert_eq!(km.quantile(1.0), Some(10.0));
    }
}
