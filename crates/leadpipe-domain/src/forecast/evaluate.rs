//! Scores for judging forecasts, and the percentile helper they share.

/// Mean squared error of predicted probabilities against outcomes; None without pairs.
pub fn brier_score(pairs: impl IntoIterator<Item = (f64, bool)>) -> Option<f64> {
    let (sum, n) = pairs.into_iter().fold((0.0, 0usize), |(sum, n), (p, won)| {
        let err = p - f64::from(u8::from(won));
        (sum + err * err, n + 1)
    });
    (n > 0).then(|| sum / n as f64)
}

/// The q-quantile of ascending `sorted` values, interpolating linearly between neighbours (the
/// "R-7" definition). `q` is clamped to [0, 1]; an empty slice gives 0.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
            let position = q * (n - 1) as f64;
            let lo = position.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let fraction = position - lo as f64;
            sorted[lo] + (sorted[hi] - sorted[lo]) * fraction
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brier() {
        assert_eq!(brier_score(std::iter::empty()), None);
        assert_eq!(brier_score([(1.0, true), (0.0, false)]), Some(0.0));
        assert_eq!(brier_score([(1.0, false)]), Some(1.0));
        // (0.8−1)² = .04, (0.3−0)² = .09, (0.5−1)² = .25 → .38 / 3
        let b = brier_score([(0.8, true), (0.3, false), (0.5, true)]).unwrap();
        assert!((b - 0.38 / 3.0).abs() < 1e-12);
        // Always saying 0.5 scores 0.25 whatever happens.
        assert_eq!(brier_score([(0.5, true), (0.5, false)]), Some(0.25));
    }

    #[test]
    fn percentiles_interpolate() {
        let v = [10.0, 20.0, 30.0, 40.0, 50.0];
        assert_eq!(percentile(&v, 0.0), 10.0);
        assert_eq!(percentile(&v, 0.5), 30.0);
        assert_eq!(percentile(&v, 1.0), 50.0);
        assert!((percentile(&v, 0.1) - 14.0).abs() < 1e-12);
        assert!((percentile(&v, 0.9) - 46.0).abs() < 1e-12);
        assert_eq!(percentile(&[10.0, 20.0], 0.5), 15.0);
        assert_eq!(percentile(&[7.0], 0.9), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&v, 2.0), 50.0);
    }
}
