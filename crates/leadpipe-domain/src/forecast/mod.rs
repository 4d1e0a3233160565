//! Forecasting maths: calendar periods, time-in-stage survival, the absorbing stage chain,
//! attribute scoring, the Monte Carlo revenue forecast and the scores that judge it.
//!
//! Pure functions over plain numbers; the store and the service feed them.

pub mod evaluate;
pub mod markov;
pub mod paths;
pub mod periods;
pub mod scoring;
pub mod simulate;
pub mod survival;
pub mod visits;

pub use evaluate::{brier_score, percentile};
pub use markov::{ChainModel, TransitionCounts, fit_chain};
pub use periods::{PeriodKind, PeriodRange, period_index, periods};
pub use scoring::{
    AMOUNT_BANDS, AttributeModel, Factor, LeadFeatures, Scored, amount_band, band_at,
    band_case_sql, band_position,
};
pub use simulate::{CloseTimes, OpenDeal, PeriodOutcome, simulate, simulate_grouped};
pub use survival::KaplanMeier;
