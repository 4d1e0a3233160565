//! Synthetic pipeline histories with a known truth, to check what the forecast learns.
//!
//! Leads of the default pipeline move by a fixed absorbing Markov chain that depends on the
//! lead's source (referrals advance more often), with exponential dwell times per stage.

use crate::api::pb;
use crate::domain::forecast::markov::solve_win_probability;
use crate::domain::policy::default_pipeline;
use chrono::{DateTime, Duration, Utc};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};

/// The default pipeline's stages, by index.
pub const STAGES: [&str; 6] = [
    "lead_generation",
    "qualification",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
];
pub const WON: usize = 4;
pub const LOST: usize = 5;
/// Sources and their share of new leads.
pub const SOURCES: [(&str, f64); 3] = [("web", 0.5), ("referral", 0.2), ("event", 0.3)];
pub const OWNERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// Mean days per visit of each stage (closed stages: 0).
pub const MEAN_DWELL_DAYS: [f64; 6] = [5.0, 10.0, 14.0, 20.0, 0.0, 0.0];

/// The truth behind a synthetic history, over default_pipeline() stage indices.
pub struct Truth {
    /// Rows of open stages mix the sources by how often their leads visit the stage: what pooled
    /// transition counts converge to. Closed rows are absorbing.
    pub transition: Vec<Vec<f64>>,
    /// P(win | a lead now in the stage), mixing the sources by how often their leads visit it.
    pub win_probability: Vec<f64>,
    pub mean_dwell_days: Vec<f64>,
    /// The absorption probabilities of `transition` itself: what a pooled chain converges to.
    /// Close to `win_probability`, but not equal: a mixture of chains is not a chain.
    pub chain_win_probability: Vec<f64>,
    /// Per source (in `SOURCES` order): its transition matrix and win probabilities.
    pub by_source: Vec<SourceTruth>,
}

pub struct SourceTruth {
    pub source: &'static str,
    pub share: f64,
    pub transition: Vec<Vec<f64>>,
    pub win_probability: Vec<f64>,
}

pub struct SyntheticPipeline {
    pub truth: Truth,
    pub leads: Vec<pb::ImportLeadsRequest>,
}

pub fn true_median_dwell_days(mean: f64) -> f64 {
    mean * std::f64::consts::LN_2
}

/// Open-stage rows as (advance, back, lost); lead_generation cannot move back and negotiation
/// advances to won.
fn source_matrix(source: &str) -> Vec<Vec<f64>> {
    let rows: [(f64, f64, f64); 4] = match source {
        "referral" => [
            (0.75, 0.0, 0.25),
            (0.70, 0.05, 0.25),
            (0.72, 0.05, 0.23),
            (0.80, 0.05, 0.15),
        ],
        "event" => [
            (0.50, 0.0, 0.50),
            (0.45, 0.05, 0.50),
            (0.55, 0.05, 0.40),
            (0.60, 0.05, 0.35),
        ],
        _ => [
            (0.60, 0.0, 0.40),
            (0.55, 0.05, 0.40),
            (0.60, 0.05, 0.35),
            (0.65, 0.05, 0.30),
        ],
    };
    let mut t = vec![vec![0.0; 6]; 6];
    for (i, (advance, back, lost)) in rows.into_iter().enumerate() {
        t[i][i + 1] = advance;
        if i > 0 {
            t[i][i - 1] = back;
        }
        t[i][LOST] += lost;
    }
    t[WON][WON] = 1.0;
    t[LOST][LOST] = 1.0;
    t
}

/// Expected visits of each open stage for a lead starting in lead_generation: row 0 of the
/// fundamental matrix (I − Q)⁻¹.
fn expected_visits(t: &[Vec<f64>]) -> Vec<f64> {
    let q = DMatrix::from_fn(4, 4, |i, j| f64::from(u8::from(i == j)) - t[i][j]);
    let n = q.try_inverse().expect("every open stage can be left");
    (0..4).map(|j| n[(0, j)]).collect()
}

fn truth() -> Truth {
    let def = default_pipeline();
    let fallback = [0.0; 6];
    let by_source: Vec<SourceTruth> = SOURCES
        .iter()
        .map(|&(source, share)| {
            let transition = source_matrix(source);
            let win_probability = solve_win_probability(&def, &transition, &fallback);
            SourceTruth {
                source,
                share,
                transition,
                win_probability,
            }
        })
        .collect();
    let visits: Vec<Vec<f64>> = by_source
        .iter()
        .map(|s| expected_visits(&s.transition))
        .collect();

    let mut transition = source_matrix("web");
    let mut win_probability = vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    for i in 0..4 {
        let weights: Vec<f64> = by_source
            .iter()
            .zip(&visits)
            .map(|(s, v)| s.share * v[i])
            .collect();
        let total: f64 = weights.iter().sum();
        let mix = |value: &dyn Fn(&SourceTruth) -> f64| {
            by_source
                .iter()
                .zip(&weights)
                .map(|(s, w)| w * value(s))
                .sum::<f64>()
                / total
        };
        transition[i] = (0..6).map(|j| mix(&|s| s.transition[i][j])).collect();
        win_probability[i] = mix(&|s| s.win_probability[i]);
    }
    let chain_win_probability = solve_win_probability(&def, &transition, &fallback);
    Truth {
        transition,
        win_probability,
        mean_dwell_days: MEAN_DWELL_DAYS.to_vec(),
        chain_win_probability,
        by_source,
    }
}

pub(crate) fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

fn eur(units: i64) -> pb::Money {
    pb::Money {
        currency_code: "EUR".into(),
        units,
        nanos: 0,
    }
}

/// An index drawn with probability proportional to its weight.
pub(crate) fn pick<R: Rng>(rng: &mut R, weights: &[f64]) -> usize {
    let mut u: f64 = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

/// `leads` leads created uniformly in [start, end), with their histories up to `end` (later
/// moves are not recorded, so those leads stay open). `end` must not be in the future, since
/// imported history may not be. The same seed gives the same pipeline.
pub fn generate(
    leads: usize,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    seed: u64,
) -> SyntheticPipeline {
    let truth = truth();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shares: Vec<f64> = SOURCES.iter().map(|(_, share)| *share).collect();
    let amounts = LogNormal::new(20_000f64.ln(), 0.7).expect("valid log-normal");
    let dwell: Vec<Exp<f64>> = MEAN_DWELL_DAYS[..4]
        .iter()
        .map(|mean| Exp::new(1.0 / mean).expect("a positive rate"))
        .collect();
    let span_seconds = (end - start).num_seconds().max(1);

    // Sorted so that syn-0 is the oldest lead.
    let mut created: Vec<DateTime<Utc>> = (0..leads)
        .map(|_| start + Duration::seconds(rng.random_range(0..span_seconds)))
        .collect();
    created.sort();

    let requests = created
        .into_iter()
        .enumerate()
        .map(|(n, created)| {
            let source_index = pick(&mut rng, &shares);
            let matrix = &truth.by_source[source_index].transition;
            let owner = OWNERS[rng.random_range(0..OWNERS.len())];
            let amount = (amounts.sample(&mut rng).round() as i64).max(1);

            let mut history = vec![pb::ImportedStageChange {
                from_stage: String::new(),
                to_stage: STAGES[0].into(),
                change_time: Some(timestamp(created)),
                actor: "synthetic".into(),
                note: String::new(),
            }];
            let (mut stage, mut at) = (0usize, created);
            while stage < WON {
                let days = dwell[stage].sample(&mut rng);
                at += Duration::seconds((days * 86_400.0).round() as i64);
                if at > end {
                    break;
                }
                let next = pick(&mut rng, &matrix[stage]);
                history.push(pb::ImportedStageChange {
                    from_stage: STAGES[stage].into(),
                    to_stage: STAGES[next].into(),
                    change_time: Some(timestamp(at)),
                    actor: "synthetic".into(),
                    note: String::new(),
                });
                stage = next;
            }

            let lead = pb::Lead {
                title: format!("Synthetic deal {n}"),
                company: format!("Company {n}"),
                contact_name: format!("Contact {n}"),
                owner: owner.into(),
                source: SOURCES[source_index].0.into(),
                amount: Some(eur(amount)),
                bant: Some(pb::Bant {
                    budget: Some(eur(amount)),
                    authority: "Head of purchasing".into(),
                    need: "A better sales pipeline".into(),
                    timeline: Some(timestamp(created + Duration::days(90))),
                }),
                lost_reason: if stage == LOST {
                    "Went with a competitor".into()
                } else {
                    String::new()
                },
                ..Default::default()
            };
            pb::ImportLeadsRequest {
                external_id: format!("syn-{n}"),
                lead: Some(lead),
                history,
                revisions: Vec::new(),
                update_existing: false,
            }
        })
        .collect();
    SyntheticPipeline {
        truth,
        leads: requests,
    }
}
