//! Adjusts a stage's win probability by a lead's attributes, naive-Bayes style on the log-odds
//! scale (as Odoo's predictive lead scoring does), with smoothing and shrinkage so that rare or
//! unseen values cannot swing a probability.

use std::collections::HashMap;

use crate::lead::Lead;
use crate::money::Money;

/// Fewer closed leads than this and the attributes are ignored.
pub const MIN_TRAINING_SIZE: u64 = 20;
/// Support at which a factor keeps half of its log-likelihood ratio.
const SHRINK_SUPPORT: f64 = 10.0;
/// No single attribute moves the log-odds further than this.
const MAX_FACTOR: f64 = 2.0;
const MIN_PROBABILITY: f64 = 0.001;
const MAX_PROBABILITY: f64 = 0.999;

#[derive(Debug, Clone, PartialEq)]
pub struct LeadFeatures {
    pub source: String,
    pub owner: String,
    pub amount_band: String,
    pub labels: Vec<(String, String)>,
}

impl LeadFeatures {
    pub fn of(lead: &Lead) -> Self {
        let f = &lead.fields;
        Self {
            source: f.source.clone(),
            owner: f.owner.clone(),
            amount_band: amount_band(f.amount.as_ref()).to_owned(),
            labels: f
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// The amount bands below the top one: each holds the amounts whose whole units are below its
/// bound (and at or above the previous band's). Whole units decide alone, since nanos never
/// reach a unit; so SQL can band stored amounts as Rust does (`band_case_sql`).
pub const AMOUNT_BANDS: [(i64, &str); 4] = [
    (1_000, "under_1k"),
    (10_000, "1k_10k"),
    (100_000, "10k_100k"),
    (1_000_000, "100k_1m"),
];
/// Amounts at or above the last bound of [`AMOUNT_BANDS`].
pub const TOP_AMOUNT_BAND: &str = "1m_plus";
/// Leads without an amount.
pub const NO_AMOUNT_BAND: &str = "none";

/// Order-of-magnitude bands of the amount in major units, whatever the currency.
pub fn amount_band(amount: Option<&Money>) -> &'static str {
    match amount {
        Some(money) => band_of_units(money.units),
        None => NO_AMOUNT_BAND,
    }
}

/// The band of an amount of `units` whole units (and any nanos).
pub fn band_of_units(units: i64) -> &'static str {
    band_at(band_position(units))
}

/// The position of the band of `units`, as [`band_at`] and [`band_case_sql`] number them.
pub fn band_position(units: i64) -> usize {
    AMOUNT_BANDS
        .iter()
        .position(|(bound, _)| units < *bound)
        .unwrap_or(AMOUNT_BANDS.len())
}

/// The band of position `index`: [`AMOUNT_BANDS`] in order, then the top band.
pub fn band_at(index: usize) -> &'static str {
    AMOUNT_BANDS
        .get(index)
        .map_or(TOP_AMOUNT_BAND, |(_, name)| name)
}

/// A SQL expression giving the position (as [`band_at`] reads it) of the band of `units`.
pub fn band_case_sql(units: &str) -> String {
    let mut sql = String::from("CASE");
    for (i, (bound, _)) in AMOUNT_BANDS.iter().enumerate() {
        sql.push_str(&format!(" WHEN {units} < {bound} THEN {i}"));
    }
    sql.push_str(&format!(" ELSE {} END", AMOUNT_BANDS.len()));
    sql
}

#[derive(Debug, Clone)]
pub struct Factor {
    /// "source", "owner", "amount_band" or "label".
    pub feature: String,
    /// The lead's value; labels as "key=value".
    pub value: String,
    pub log_odds: f64,
    /// Closed training leads with this value.
    pub support: u64,
}

#[derive(Debug, Clone)]
pub struct Scored {
    pub probability: f64,
    /// Largest |log_odds| first. The stage's own contribution is the caller's to add.
    pub factors: Vec<Factor>,
}

/// Won and lost counts per value of one feature.
#[derive(Debug, Clone, Default)]
struct ValueCounts {
    counts: HashMap<String, Counts>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    won: u64,
    lost: u64,
}

impl ValueCounts {
    fn add(&mut self, value: &str, won: bool) {
        let c = self.counts.entry(value.to_owned()).or_default();
        if won {
            c.won += 1;
        } else {
            c.lost += 1;
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AttributeModel {
    source: ValueCounts,
    owner: ValueCounts,
    amount_band: ValueCounts,
    /// Per label key; a lead without the key has the implicit value "absent".
    labels: HashMap<String, ValueCounts>,
    wins: u64,
    losses: u64,
}

impl AttributeModel {
    /// Trains on closed leads: `(features, won)`.
    pub fn train(examples: impl IntoIterator<Item = (LeadFeatures, bool)>) -> Self {
        let mut model = Self::default();
        for (features, won) in examples {
            if won {
                model.wins += 1;
            } else {
                model.losses += 1;
            }
            model.source.add(&features.source, won);
            model.owner.add(&features.owner, won);
            model.amount_band.add(&features.amount_band, won);
            for (key, value) in &features.labels {
                model.labels.entry(key.clone()).or_default().add(value, won);
            }
        }
        model
    }

    pub fn training_size(&self) -> u64 {
        self.wins + self.losses
    }

    fn is_usable(&self) -> bool {
        self.training_size() >= MIN_TRAINING_SIZE && self.wins > 0 && self.losses > 0
    }

    /// The factor of one value, or None for a value never seen in training.
    ///
    /// P(v | won) is Laplace-smoothed over the feature's vocabulary (`extra` slots for implicit
    /// values such as a label's absence) plus one slot for values not seen yet, so a value seen
    /// only among losses gets a finite ratio.
    fn factor(
        &self,
        feature: &str,
        counts: &ValueCounts,
        value: &str,
        extra: u64,
    ) -> Option<Factor> {
        let c = counts.counts.get(value)?;
        let support = c.won + c.lost;
        let slots = (counts.counts.len() as u64 + extra + 1) as f64;
        let p_won = (c.won as f64 + 1.0) / (self.wins as f64 + slots);
        let p_lost = (c.lost as f64 + 1.0) / (self.losses as f64 + slots);
        let shrink = support as f64 / (support as f64 + SHRINK_SUPPORT);
        let log_odds = ((p_won / p_lost).ln() * shrink).clamp(-MAX_FACTOR, MAX_FACTOR);
        Some(Factor {
            feature: feature.to_owned(),
            value: value.to_owned(),
            log_odds,
            support,
        })
    }

    pub fn adjust(&self, base_probability: f64, features: &LeadFeatures) -> Scored {
        if !self.is_usable() {
            return Scored {
                probability: base_probability,
                factors: Vec::new(),
            };
        }
        let mut factors: Vec<Factor> = [
            self.factor("source", &self.source, &features.source, 0),
            self.factor("owner", &self.owner, &features.owner, 0),
            self.factor("amount_band", &self.amount_band, &features.amount_band, 0),
        ]
        .into_iter()
        .flatten()
        .collect();
        for (key, value) in &features.labels {
            if let Some(counts) = self.labels.get(key)
                && let Some(mut f) = self.factor("label", counts, value, 1)
            {
                f.value = format!("{key}={value}");
                factors.push(f);
            }
        }
        factors.sort_by(|a, b| {
            b.log_odds
                .abs()
                .total_cmp(&a.log_odds.abs())
                .then_with(|| a.feature.cmp(&b.feature))
                .then_with(|| a.value.cmp(&b.value))
        });

        // Closed stages are certain; their factors are still reported for the explanation.
        let probability = if base_probability <= 0.0 || base_probability >= 1.0 {
            base_probability
        } else {
            let logit = (base_probability / (1.0 - base_probability)).ln()
                + factors.iter().map(|f| f.log_odds).sum::<f64>();
            (1.0 / (1.0 + (-logit).exp())).clamp(MIN_PROBABILITY, MAX_PROBABILITY)
        };
        Scored {
            probability,
            factors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(source: &str, owner: &str, labels: &[(&str, &str)]) -> LeadFeatures {
        LeadFeatures {
            source: source.into(),
            owner: owner.into(),
            amount_band: "10k_100k".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// 100 closed leads: referrals win 40 of 50, web wins 10 of 50; the owner carries no signal.
    fn trained() -> AttributeModel {
        let mut examples = Vec::new();
        for i in 0..50 {
            let owner = if i % 2 == 0 { "ann" } else { "bo" };
            examples.push((features("referral", owner, &[("region", "emea")]), i < 40));
            examples.push((features("web", owner, &[]), i < 10));
        }
        AttributeModel::train(examples)
    }

    #[test]
    fn amount_bands() {
        let eur = |units| Money::parse("EUR", units, 0).unwrap();
        assert_eq!(amount_band(None), "none");
        assert_eq!(amount_band(Some(&eur(0))), "under_1k");
        assert_eq!(amount_band(Some(&eur(999))), "under_1k");
        assert_eq!(amount_band(Some(&eur(1000))), "1k_10k");
        assert_eq!(amount_band(Some(&eur(99_999))), "10k_100k");
        assert_eq!(amount_band(Some(&eur(100_000))), "100k_1m");
        assert_eq!(amount_band(Some(&eur(1_000_000))), "1m_plus");
        let just_below = Money {
            nanos: 999_999_999,
            ..eur(999)
        };
        assert_eq!(amount_band(Some(&just_below)), "under_1k");
        for (i, (bound, name)) in AMOUNT_BANDS.iter().enumerate() {
            assert_eq!(band_at(i), *name);
            assert_eq!(band_of_units(bound - 1), *name);
        }
        assert_eq!(band_at(AMOUNT_BANDS.len()), TOP_AMOUNT_BAND);
        assert_eq!(
            band_case_sql("u"),
            "CASE WHEN u < 1000 THEN 0 WHEN u < 10000 THEN 1 WHEN u < 100000 THEN 2 \
             WHEN u < 1000000 THEN 3 ELSE 4 END"
        );
    }

    #[test]
    fn informative_values_move_the_probability_the_right_way() {
        let model = trained();
        assert_eq!(model.training_size(), 100);
        let referral = model.adjust(0.5, &features("referral", "ann", &[("region", "emea")]));
        let web = model.adjust(0.5, &features("web", "ann", &[]));
        assert!(referral.probability > 0.6, "{referral:?}");
        assert!(web.probability < 0.4, "{web:?}");
        let top = &referral.factors[0];
        assert!(top.feature == "source" || top.value == "region=emea");
        assert_eq!(
            referral
                .factors
                .iter()
                .find(|f| f.feature == "source")
                .unwrap()
                .support,
            50
        );
        let owner = web.factors.iter().find(|f| f.feature == "owner").unwrap();
        assert!(owner.log_odds.abs() < 0.2, "{owner:?}");
        assert!(
            referral
                .factors
                .windows(2)
                .all(|w| w[0].log_odds.abs() >= w[1].log_odds.abs())
        );
        assert!(
            referral
                .factors
                .iter()
                .all(|f| f.log_odds.abs() <= MAX_FACTOR)
        );
    }

    #[test]
    fn unseen_values_contribute_nothing() {
        let model = trained();
        let scored = model.adjust(0.3, &features("event", "cy", &[("tier", "gold")]));
        // Only amount_band was seen (on every lead, so it carries no signal).
        assert_eq!(scored.factors.len(), 1);
        assert_eq!(scored.factors[0].feature, "amount_band");
        assert!((scored.probability - 0.3).abs() < 1e-9);
    }

    #[test]
    fn values_seen_only_among_losses_stay_finite_and_bounded() {
        let mut examples: Vec<_> = (0..30)
            .map(|i| (features("web", "ann", &[]), i % 2 == 0))
            .collect();
        examples.extend((0..1000).map(|_| (features("spam", "ann", &[]), false)));
        let model = AttributeModel::train(examples);
        let scored = model.adjust(0.5, &features("spam", "ann", &[]));
        let source = &scored.factors[0];
        assert_eq!(source.feature, "source");
        assert!(source.log_odds.is_finite() && source.log_odds >= -MAX_FACTOR);
        assert!(scored.probability >= MIN_PROBABILITY && scored.probability < 0.5);
        let low = model.adjust(0.002, &features("spam", "ann", &[]));
        assert_eq!(low.probability, MIN_PROBABILITY);
    }

    #[test]
    fn small_or_one_sided_training_sets_change_nothing() {
        let f = features("referral", "ann", &[]);
        let tiny = AttributeModel::train((0..19).map(|i| (f.clone(), i % 2 == 0)));
        let scored = tiny.adjust(0.37, &f);
        assert_eq!(scored.probability, 0.37);
        assert!(scored.factors.is_empty());
        let all_won = AttributeModel::train((0..100).map(|_| (f.clone(), true)));
        assert_eq!(all_won.adjust(0.37, &f).probability, 0.37);
        let all_lost = AttributeModel::train((0..100).map(|_| (f.clone(), false)));
        assert_eq!(all_lost.adjust(0.37, &f).probability, 0.37);
        assert_eq!(AttributeModel::default().adjust(0.2, &f).probability, 0.2);
    }

    #[test]
    fn closed_stages_keep_zero_and_one() {
        let model = trained();
        let f = features("referral", "ann", &[]);
        assert_eq!(model.adjust(1.0, &f).probability, 1.0);
        assert_eq!(model.adjust(0.0, &f).probability, 0.0);
        assert!(!model.adjust(1.0, &f).factors.is_empty());
    }
}
