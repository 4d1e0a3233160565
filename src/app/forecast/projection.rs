//! GetForecast and BacktestForecast: a Monte Carlo over the leads open at a point in time, each
//! winning with its learned probability and closing after a learned time, per period.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::ForecastService;
use super::model::{LearnedModel, features_of, money_of, stage_index, stage_keys};
use crate::app::{AppError, RequestContext};
use crate::domain::forecast::{
    OpenDeal, PeriodKind, PeriodOutcome, PeriodRange, amount_band, brier_score, period_index,
    periods, simulate,
};
use crate::domain::ids::PipelineId;
use crate::domain::money::{CurrencyCode, Total};
use crate::domain::pipeline::{PipelineDefinition, StageKind};
use crate::store::analytics::{self, HistoryScope, LeadAt};
use crate::store::{from_micros, to_micros};

/// Leads at least this likely to win count towards the commit amount.
pub const COMMIT_PROBABILITY: f64 = 0.7;
/// Leads at least this likely to win count towards the best case.
pub const BEST_CASE_PROBABILITY: f64 = 0.3;

pub struct ForecastQuery {
    pub pipeline: PipelineId,
    pub currency: CurrencyCode,
    pub period: PeriodKind,
    pub horizon: usize,
    pub as_of: Option<DateTime<Utc>>,
    pub simulations: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PeriodReport {
    pub range: Option<PeriodRange>,
    pub closed_won: f64,
    pub expected: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    pub commit: f64,
    pub best_case: f64,
    /// Exact: a plain total of amounts.
    pub pipeline: Total,
    /// Backtests only.
    pub actual: f64,
    pub naive: f64,
}

impl PeriodReport {
    /// How far the median missed what was won: backtests only.
    pub fn absolute_error(&self) -> f64 {
        (self.p50 - self.actual).abs()
    }

    pub fn naive_absolute_error(&self) -> f64 {
        (self.naive - self.actual).abs()
    }

    /// The error relative to what was won; 0 when nothing was, where a ratio means nothing.
    pub fn percentage_error(&self) -> f64 {
        relative_error(self.absolute_error(), self.actual)
    }

    pub fn naive_percentage_error(&self) -> f64 {
        relative_error(self.naive_absolute_error(), self.actual)
    }

    /// Whether the actual amount fell inside the 80% band, with a tolerance for the sums of
    /// doubles that produced both.
    pub fn actual_within_p10_p90(&self) -> bool {
        self.p10 <= self.actual + 1e-6 && self.actual <= self.p90 + 1e-6
    }
}

fn relative_error(error: f64, actual: f64) -> f64 {
    if actual > 0.0 { error / actual } else { 0.0 }
}

pub struct ForecastReport {
    pub pipeline: PipelineId,
    pub currency: CurrencyCode,
    pub simulations: usize,
    pub as_of: DateTime<Utc>,
    pub periods: Vec<PeriodReport>,
    pub open_leads: usize,
}

pub struct BacktestReport {
    pub pipeline: PipelineId,
    pub currency: CurrencyCode,
    pub as_of: DateTime<Utc>,
    pub periods: Vec<PeriodReport>,
    pub brier: Option<f64>,
    pub naive_brier: Option<f64>,
    pub scored: usize,
}

/// One open lead at the forecast's point in time.
struct Deal {
    lead: LeadAt,
    stage: usize,
    amount: f64,
    probability: f64,
    days_in_stage: f64,
}

fn open_deals(
    definition: &PipelineDefinition,
    model: &LearnedModel,
    leads: Vec<LeadAt>,
    as_of: i64,
) -> Vec<Deal> {
    let index = stage_index(definition);
    // Many leads share a stage and attributes: each such group is scored once, keyed by the
    // leads' own strings.
    let mut scored: HashMap<(usize, &str, &str, &'static str, &str), f64> = HashMap::new();
    let scores: Vec<Option<(usize, f64, f64)>> = leads
        .iter()
        .map(|lead| {
            let stage = *index.get(lead.stage.as_str())?;
            let money = money_of(lead)?;
            let key = (
                stage,
                lead.source.as_str(),
                lead.owner.as_str(),
                amount_band(Some(&money)),
                lead.labels.as_str(),
            );
            let probability = *scored
                .entry(key)
                .or_insert_with(|| model.score(stage, &features_of(lead)).probability);
            Some((stage, money.value(), probability))
        })
        .collect();
    leads
        .into_iter()
        .zip(scores)
        .filter_map(|(lead, score)| {
            let (stage, amount, probability) = score?;
            Some(Deal {
                days_in_stage: ((as_of - lead.stage_enter_time) as f64 / 8.64e10).max(0.0),
                lead,
                stage,
                amount,
                probability,
            })
        })
        .collect()
}

impl ForecastService {
    /// Won amounts per period, simulated from the open leads and the learned model: the same
    /// seed gives the same ranges. Amounts in other currencies are left out. Reads only.
    pub async fn forecast(
        &self,
        ctx: &RequestContext,
        query: ForecastQuery,
    ) -> Result<ForecastReport, AppError> {
        let as_of = query.as_of.unwrap_or_else(|| self.clock.now());
        let Projection { deals, reports, .. } = self.project(ctx, &query, as_of).await?;
        Ok(ForecastReport {
            pipeline: query.pipeline.clone(),
            currency: query.currency.clone(),
            simulations: query.simulations,
            as_of,
            periods: reports,
            open_leads: deals.len(),
        })
    }

    /// The forecast as it would have been made at `as_of`, next to what was then won, and the
    /// naive forecast (configured stage probabilities) for comparison. Reads only.
    pub async fn backtest(
        &self,
        ctx: &RequestContext,
        query: ForecastQuery,
    ) -> Result<BacktestReport, AppError> {
        let as_of = query
            .as_of
            .ok_or_else(|| AppError::invalid("as_of", "is required"))?;
        if as_of >= self.clock.now() {
            return Err(AppError::invalid("as_of", "must be in the past"));
        }
        let Projection {
            periods,
            deals,
            model,
            mut reports,
        } = self.project(ctx, &query, as_of).await?;
        let pipeline = self.pipeline(ctx, &query.pipeline).await?;
        let definition = pipeline.compiled.definition();
        let horizon_end = periods.last().map_or(as_of, |p| p.end);
        // What happened to the leads that were open at as_of (and what had closed before it in
        // the first period): new leads are not forecast, so they are not counted either.
        let actual = self
            .wins(
                ctx,
                &query,
                (to_micros(periods[0].start), to_micros(horizon_end)),
                Some(to_micros(as_of)),
            )
            .await?;
        for (time, units, nanos) in actual {
            if let Some(i) = period_index(&periods, from_micros(time)) {
                reports[i].actual += units as f64 + nanos as f64 / 1e9;
            }
        }
        for (i, deal) in deals.iter().enumerate() {
            let configured = definition.stages[deal.stage].probability;
            let close = deal
                .lead
                .expected_close_time
                .map(from_micros)
                .filter(|t| *t >= as_of)
                .unwrap_or_else(|| close_estimate(&model, deal, as_of));
            if let Some(p) = period_index(&periods, close) {
                reports[p].naive += configured * deal.amount;
            }
            let _ = i;
        }
        for report in &mut reports {
            report.naive += report.closed_won;
        }

        // Brier scores of leads open at as_of that had closed by the end of the horizon.
        let scope_end = HistoryScope {
            tenant: &ctx.tenant,
            pipeline: &query.pipeline,
            as_of: to_micros(horizon_end),
            present: false,
        };
        let closed_stages = stage_keys(definition, &[StageKind::Won, StageKind::Lost]);
        let outcomes: HashMap<String, bool> =
            analytics::leads_at(self.store.reader(), &scope_end, &closed_stages, None)
                .await?
                .into_iter()
                .map(|l| {
                    let won = definition
                        .stage_index(
                            &crate::domain::ids::StageKey::parse(&l.stage)
                                .unwrap_or_else(|_| definition.first_stage().key.clone()),
                        )
                        .is_some_and(|i| definition.stages[i].kind == StageKind::Won);
                    (l.lead_id, won)
                })
                .collect();
        let scored: Vec<(f64, f64, bool)> = deals
            .iter()
            .filter_map(|d| {
                let won = *outcomes.get(&d.lead.lead_id)?;
                Some((d.probability, definition.stages[d.stage].probability, won))
            })
            .collect();
        Ok(BacktestReport {
            pipeline: query.pipeline.clone(),
            currency: query.currency.clone(),
            as_of,
            periods: reports,
            brier: brier_score(scored.iter().map(|(p, _, won)| (*p, *won))),
            naive_brier: brier_score(scored.iter().map(|(_, p, won)| (*p, *won))),
            scored: scored.len(),
        })
    }

    async fn prepare(
        &self,
        ctx: &RequestContext,
        query: &ForecastQuery,
        as_of: DateTime<Utc>,
    ) -> Result<(Vec<Deal>, std::sync::Arc<LearnedModel>), AppError> {
        self.ensure_revisions_kept(ctx, "as_of", query.as_of)
            .await?;
        let pipeline = self.pipeline(ctx, &query.pipeline).await?;
        let definition = pipeline.compiled.definition();
        let model = self
            .model_at(&ctx.tenant, &query.pipeline, &pipeline, query.as_of)
            .await?;
        let scope = HistoryScope {
            tenant: &ctx.tenant,
            pipeline: &query.pipeline,
            as_of: to_micros(as_of),
            present: query.as_of.is_none(),
        };
        let mut open = analytics::leads_at_in(
            &self.store,
            &scope,
            &stage_keys(definition, &[StageKind::Open]),
            Some(query.currency.as_str()),
        )
        .await?;
        // The simulation draws its random numbers deal by deal, so the same seed gives the same
        // answer only if the deals come in the same order, whatever order the database chose.
        open.sort_unstable_by(|a, b| a.lead_id.cmp(&b.lead_id));
        let deals = open_deals(definition, &model, open, scope.as_of);
        Ok((deals, model))
    }

    /// The periods of the query, the deals open at `as_of` and the model that scored them, and
    /// per period what was won before `as_of` and the simulated outcome. Reading what was won so
    /// far waits on the database while the open deals are read and simulated.
    async fn project(
        &self,
        ctx: &RequestContext,
        query: &ForecastQuery,
        as_of: DateTime<Utc>,
    ) -> Result<Projection, AppError> {
        let periods = periods(query.period, as_of, query.horizon);
        let simulated = async {
            let (deals, model) = self.prepare(ctx, query, as_of).await?;
            let outcomes = simulate_off_runtime(&deals, &model, as_of, &periods, query).await?;
            Ok::<_, AppError>((deals, model, outcomes))
        };
        let so_far = (to_micros(periods[0].start), to_micros(as_of) + 1);
        let (simulated, won_before) = tokio::join!(simulated, self.wins(ctx, query, so_far, None));
        let (deals, model, outcomes) = simulated?;
        let mut reports: Vec<PeriodReport> = periods
            .iter()
            .map(|p| PeriodReport {
                range: Some(*p),
                ..Default::default()
            })
            .collect();
        for (time, units, nanos) in won_before? {
            if let Some(i) = period_index(&periods, from_micros(time)) {
                reports[i].closed_won += units as f64 + nanos as f64 / 1e9;
                reports[i].pipeline.add(units, nanos);
            }
        }
        for (report, outcome) in reports.iter_mut().zip(outcomes) {
            report.expected = outcome.expected;
            report.p10 = report.closed_won + outcome.p10;
            report.p50 = report.closed_won + outcome.p50;
            report.p90 = report.closed_won + outcome.p90;
            report.commit = report.closed_won;
            report.best_case = report.closed_won;
        }
        for deal in &deals {
            let Some(i) = period_index(&periods, close_estimate(&model, deal, as_of)) else {
                continue;
            };
            let report = &mut reports[i];
            report.pipeline.add(deal.lead.units, deal.lead.nanos);
            if deal.probability >= BEST_CASE_PROBABILITY {
                report.best_case += deal.amount;
            }
            if deal.probability >= COMMIT_PROBABILITY {
                report.commit += deal.amount;
            }
        }
        Ok(Projection {
            periods,
            deals,
            model,
            reports,
        })
    }

    /// Wins in the query's currency in [start, end) (µs), each at the amount it was won at; with
    /// `created_by`, only of leads created by then.
    async fn wins(
        &self,
        ctx: &RequestContext,
        query: &ForecastQuery,
        (start, end): (i64, i64),
        created_by: Option<i64>,
    ) -> Result<Vec<(i64, i64, i32)>, AppError> {
        let pipeline = self.pipeline(ctx, &query.pipeline).await?;
        let won_stages = stage_keys(pipeline.compiled.definition(), &[StageKind::Won]);
        Ok(analytics::wins_between(
            self.store.reader(),
            &ctx.tenant,
            &query.pipeline,
            &won_stages,
            query.currency.as_str(),
            start,
            end,
            created_by,
        )
        .await?)
    }
}

/// What [`ForecastService::project`] gives the forecast and the backtest.
struct Projection {
    periods: Vec<PeriodRange>,
    deals: Vec<Deal>,
    model: std::sync::Arc<LearnedModel>,
    reports: Vec<PeriodReport>,
}

/// The Monte Carlo over `deals`: the most CPU of any call, so off the runtime's workers, where
/// other calls would wait behind it; it spreads its simulations over the machine's cores.
async fn simulate_off_runtime(
    deals: &[Deal],
    model: &std::sync::Arc<LearnedModel>,
    as_of: DateTime<Utc>,
    periods: &[PeriodRange],
    query: &ForecastQuery,
) -> Result<Vec<PeriodOutcome>, AppError> {
    let simulated: Vec<OpenDeal> = deals
        .iter()
        .map(|d| OpenDeal {
            amount: d.amount,
            win_probability: d.probability,
            stage: d.stage,
            days_in_stage: d.days_in_stage,
        })
        .collect();
    let model = model.clone();
    let periods = periods.to_vec();
    let (simulations, seed) = (query.simulations, query.seed);
    tokio::task::spawn_blocking(move || {
        simulate(
            &simulated,
            &model.close_times,
            as_of,
            &periods,
            simulations,
            seed,
        )
    })
    .await
    .map_err(|e| AppError::Internal(format!("the forecast simulation failed: {e}")))
}

/// When a deal is expected to close: as_of plus the median remaining time of its stage.
fn close_estimate(model: &LearnedModel, deal: &Deal, as_of: DateTime<Utc>) -> DateTime<Utc> {
    let days = model
        .close_times
        .median_remaining(deal.stage, deal.days_in_stage);
    as_of + chrono::Duration::seconds((days * 86_400.0) as i64)
}
