//! `ForecastService` requests into app queries. Each conversion checks every field and reports
//! all that are wrong at once.

use super::convert::{finish, optional_time, page_size, pipeline_or_default};
use super::pb;
use crate::app::AppError;
use crate::app::forecast::metrics::{MetricsQuery, StuckLeadsQuery};
use crate::app::forecast::projection::ForecastQuery;
use crate::domain::Violations;
use crate::domain::forecast::PeriodKind;
use crate::domain::ids::{LeadId, PipelineId};
use crate::domain::money::CurrencyCode;

const DEFAULT_SIMULATIONS: i32 = 1000;
const MAX_HORIZON: i32 = 36;

fn pipeline_id(violations: &mut Violations, value: &str) -> Option<PipelineId> {
    pipeline_or_default(violations, "pipeline_id", value)
}

fn period(violations: &mut Violations, value: i32) -> PeriodKind {
    match pb::Period::try_from(value) {
        Ok(pb::Period::Week) => PeriodKind::Week,
        Ok(pb::Period::Quarter) => PeriodKind::Quarter,
        Ok(pb::Period::Month | pb::Period::Unspecified) => PeriodKind::Month,
        Err(_) => {
            violations.push(
                "period",
                "must be PERIOD_WEEK, PERIOD_MONTH or PERIOD_QUARTER",
            );
            PeriodKind::Month
        }
    }
}

fn bounded(
    violations: &mut Violations,
    field: &str,
    value: i32,
    default: i32,
    min: i32,
    max: i32,
) -> usize {
    match value {
        0 => default as usize,
        v if (min..=max).contains(&v) => v as usize,
        _ => {
            violations.push(
                field,
                format!("must be between {min} and {max}, or 0 for {default}"),
            );
            default as usize
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn forecast_query(
    pipeline: &str,
    currency: &str,
    period_value: i32,
    horizon: i32,
    as_of: Option<&prost_types::Timestamp>,
    simulations: i32,
    seed: u64,
) -> Result<ForecastQuery, AppError> {
    let mut violations = Violations::default();
    let pipeline = pipeline_id(&mut violations, pipeline);
    let currency = violations.check("currency_code", CurrencyCode::parse(currency));
    let period = period(&mut violations, period_value);
    let horizon = bounded(
        &mut violations,
        "horizon_periods",
        horizon,
        3,
        1,
        MAX_HORIZON,
    );
    let as_of = optional_time(&mut violations, "as_of", as_of);
    let simulations = bounded(
        &mut violations,
        "simulations",
        simulations,
        DEFAULT_SIMULATIONS,
        100,
        100_000,
    );
    let query = (|| {
        Some(ForecastQuery {
            pipeline: pipeline?,
            currency: currency?,
            period,
            horizon,
            as_of,
            simulations,
            seed: if seed == 0 { 1 } else { seed },
        })
    })();
    finish(violations, query)
}

impl TryFrom<pb::GetPipelineMetricsRequest> for MetricsQuery {
    type Error = AppError;

    fn try_from(request: pb::GetPipelineMetricsRequest) -> Result<Self, AppError> {
        let mut violations = Violations::default();
        let pipeline = pipeline_id(&mut violations, &request.pipeline_id);
        let start = optional_time(&mut violations, "start_time", request.start_time.as_ref());
        let end = optional_time(&mut violations, "end_time", request.end_time.as_ref());
        let as_of = optional_time(&mut violations, "as_of", request.as_of.as_ref());
        let query = pipeline.map(|pipeline| MetricsQuery {
            pipeline,
            start,
            end,
            as_of,
        });
        finish(violations, query)
    }
}

impl TryFrom<pb::ListStuckLeadsRequest> for StuckLeadsQuery {
    type Error = AppError;

    fn try_from(request: pb::ListStuckLeadsRequest) -> Result<Self, AppError> {
        let mut violations = Violations::default();
        let pipeline = pipeline_id(&mut violations, &request.pipeline_id);
        let page_size = page_size(&mut violations, request.page_size);
        let query = pipeline.map(|pipeline| StuckLeadsQuery {
            pipeline,
            page_size,
            page_token: request.page_token,
        });
        finish(violations, query)
    }
}

impl TryFrom<pb::GetForecastRequest> for ForecastQuery {
    type Error = AppError;

    fn try_from(r: pb::GetForecastRequest) -> Result<Self, AppError> {
        forecast_query(
            &r.pipeline_id,
            &r.currency_code,
            r.period,
            r.horizon_periods,
            r.as_of.as_ref(),
            r.simulations,
            r.seed,
        )
    }
}

impl TryFrom<pb::BacktestForecastRequest> for ForecastQuery {
    type Error = AppError;

    /// A backtest looks back from a point in the past, so `as_of` is required.
    fn try_from(r: pb::BacktestForecastRequest) -> Result<Self, AppError> {
        if r.as_of.is_none() {
            return Err(AppError::invalid("as_of", "is required"));
        }
        forecast_query(
            &r.pipeline_id,
            &r.currency_code,
            r.period,
            r.horizon_periods,
            r.as_of.as_ref(),
            r.simulations,
            r.seed,
        )
    }
}

impl TryFrom<pb::ExplainWinProbabilityRequest> for LeadId {
    type Error = AppError;

    fn try_from(request: pb::ExplainWinProbabilityRequest) -> Result<Self, AppError> {
        super::lead_requests::lead_id("id", &request.id)
    }
}
