//! ForecastService's reports into its response messages. Estimates are doubles; a value whose
//! units do not fit Money's int64 is OUT_OF_RANGE rather than clipped, because a wrong number
//! reported as right is worse than an error.

use prost_types::Duration as ProtoDuration;

use super::convert::datetime_to_timestamp;
use super::pb;
use crate::app::AppError;
use crate::app::forecast::metrics::{MetricsReport, StageReport, StuckLead, StuckLeadsPage};
use crate::app::forecast::projection::{BacktestReport, ForecastReport, PeriodReport};
use crate::app::forecast::{Amounts, Explanation, Totals};
use crate::domain::money::Total;

impl TryFrom<MetricsReport> for pb::PipelineMetrics {
    type Error = AppError;

    fn try_from(report: MetricsReport) -> Result<Self, AppError> {
        Ok(pb::PipelineMetrics {
            pipeline_id: report.pipeline.to_string(),
            start_time: Some(datetime_to_timestamp(report.start)),
            end_time: Some(datetime_to_timestamp(report.end)),
            as_of: Some(datetime_to_timestamp(report.as_of)),
            stages: report
                .stages
                .iter()
                .map(stage_metrics)
                .collect::<Result<_, _>>()?,
            win_rate: report.win_rate,
            median_time_to_close: hours(report.median_time_to_close_hours),
            average_won_amount: amounts(&report.average_won_amount)?,
            sales_velocity: amounts(&report.sales_velocity)?,
            bottleneck_stage: report.bottleneck_stage,
            bottleneck_explanation: report.bottleneck_explanation,
            open_count: report.open_count,
        })
    }
}

impl TryFrom<StuckLeadsPage> for pb::ListStuckLeadsResponse {
    type Error = AppError;

    fn try_from(page: StuckLeadsPage) -> Result<Self, AppError> {
        Ok(pb::ListStuckLeadsResponse {
            stuck_leads: page
                .leads
                .iter()
                .map(stuck_lead)
                .collect::<Result<_, _>>()?,
            next_page_token: page.next_page_token,
            total_size: i32::try_from(page.total_size).unwrap_or(i32::MAX),
        })
    }
}

impl From<Explanation> for pb::WinProbabilityExplanation {
    fn from(explanation: Explanation) -> Self {
        let stage = pb::WinProbabilityFactor {
            feature: "stage".into(),
            value: explanation.lead.stage.to_string(),
            log_odds: explanation.stage_log_odds(),
            support: explanation.stage_support as i64,
        };
        let factors = explanation
            .factors
            .iter()
            .map(|f| pb::WinProbabilityFactor {
                feature: f.feature.clone(),
                value: f.value.clone(),
                log_odds: f.log_odds,
                support: f.support as i64,
            });
        pb::WinProbabilityExplanation {
            lead_id: explanation.lead.id.to_string(),
            win_probability: explanation.win_probability,
            stage_probability: explanation.stage_probability,
            configured_probability: explanation.configured_probability,
            factors: std::iter::once(stage).chain(factors).collect(),
            training_size: explanation.training_size as i64,
        }
    }
}

impl TryFrom<ForecastReport> for pb::Forecast {
    type Error = AppError;

    fn try_from(report: ForecastReport) -> Result<Self, AppError> {
        let currency = report.currency.as_str();
        Ok(pb::Forecast {
            pipeline_id: report.pipeline.to_string(),
            as_of: Some(datetime_to_timestamp(report.as_of)),
            periods: report
                .periods
                .iter()
                .map(|p| period_forecast(currency, p))
                .collect::<Result<_, _>>()?,
            currency_code: currency.to_owned(),
            open_leads: report.open_leads as i64,
            simulations: report.simulations as i32,
        })
    }
}

impl TryFrom<BacktestReport> for pb::Backtest {
    type Error = AppError;

    fn try_from(report: BacktestReport) -> Result<Self, AppError> {
        let currency = report.currency.as_str();
        Ok(pb::Backtest {
            pipeline_id: report.pipeline.to_string(),
            as_of: Some(datetime_to_timestamp(report.as_of)),
            periods: report
                .periods
                .iter()
                .map(|p| backtest_period(currency, p))
                .collect::<Result<_, _>>()?,
            currency_code: currency.to_owned(),
            brier_score: report.brier.unwrap_or(0.0),
            naive_brier_score: report.naive_brier.unwrap_or(0.0),
            scored_leads: report.scored as i64,
        })
    }
}

fn stage_metrics(stage: &StageReport) -> Result<pb::StageMetrics, AppError> {
    Ok(pb::StageMetrics {
        stage: stage.stage.clone(),
        open_count: stage.open_count,
        open_amount: totals(&stage.open_amount)?,
        weighted_amount: amounts(&stage.weighted_amount)?,
        entered_count: stage.entered,
        advanced_count: stage.advanced,
        lost_count: stage.lost,
        conversion_rate: stage.conversion_rate,
        win_rate: stage.win_rate,
        median_time_in_stage: hours(stage.median_hours),
        p90_time_in_stage: hours(stage.p90_hours),
        stuck_count: stage.stuck,
        learned_win_probability: stage.learned_win_probability,
    })
}

fn stuck_lead(stuck: &StuckLead) -> Result<pb::StuckLead, AppError> {
    let currency = stuck
        .lead
        .fields
        .amount
        .as_ref()
        .map(|m| m.currency.as_str())
        .unwrap_or_default();
    Ok(pb::StuckLead {
        lead: Some((&stuck.lead).into()),
        time_in_stage: Some(seconds(stuck.time_in_stage.num_seconds())),
        threshold: Some(seconds(stuck.threshold.num_seconds())),
        threshold_kind: stuck.threshold_kind.to_owned(),
        value_at_risk: Some(money(currency, stuck.value_at_risk)?),
    })
}

fn period_forecast(currency: &str, report: &PeriodReport) -> Result<pb::PeriodForecast, AppError> {
    Ok(pb::PeriodForecast {
        start_time: report.range.map(|r| datetime_to_timestamp(r.start)),
        end_time: report.range.map(|r| datetime_to_timestamp(r.end)),
        closed_won_amount: Some(money(currency, report.closed_won)?),
        expected_amount: Some(money(currency, report.expected)?),
        p10_amount: Some(money(currency, report.p10)?),
        p50_amount: Some(money(currency, report.p50)?),
        p90_amount: Some(money(currency, report.p90)?),
        commit_amount: Some(money(currency, report.commit)?),
        best_case_amount: Some(money(currency, report.best_case)?),
        pipeline_amount: Some(total(currency, &report.pipeline)?),
    })
}

fn backtest_period(currency: &str, p: &PeriodReport) -> Result<pb::BacktestPeriod, AppError> {
    Ok(pb::BacktestPeriod {
        start_time: p.range.map(|r| datetime_to_timestamp(r.start)),
        end_time: p.range.map(|r| datetime_to_timestamp(r.end)),
        actual_amount: Some(money(currency, p.actual)?),
        predicted_amount: Some(money(currency, p.p50)?),
        p10_amount: Some(money(currency, p.p10)?),
        p90_amount: Some(money(currency, p.p90)?),
        absolute_error: p.absolute_error(),
        percentage_error: p.percentage_error(),
        actual_within_p10_p90: p.actual_within_p10_p90(),
        naive_predicted_amount: Some(money(currency, p.naive)?),
        naive_absolute_error: p.naive_absolute_error(),
        naive_percentage_error: p.naive_percentage_error(),
    })
}

/// An estimate as Money, or OUT_OF_RANGE when its units do not fit the API's int64: casting
/// would clip it to the largest int64 and report a wrong number as if it were right.
fn money(currency: &str, value: f64) -> Result<pb::Money, AppError> {
    let value = if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    };
    // 2^63, the first double past i64::MAX.
    if value >= i64::MAX as f64 {
        return Err(too_large(currency));
    }
    let units = value.trunc();
    let mut nanos = ((value - units) * 1e9).round() as i32;
    let mut units = units as i64;
    if nanos >= 1_000_000_000 {
        units += 1;
        nanos -= 1_000_000_000;
    }
    Ok(pb::Money {
        currency_code: currency.to_owned(),
        units,
        nanos,
    })
}

/// An exact total as Money, or OUT_OF_RANGE when its units do not fit the API's int64.
fn total(currency: &str, total: &Total) -> Result<pb::Money, AppError> {
    let (units, nanos) = total.parts().ok_or_else(|| too_large(currency))?;
    Ok(pb::Money {
        currency_code: currency.to_owned(),
        units,
        nanos,
    })
}

fn too_large(currency: &str) -> AppError {
    AppError::OutOfRange {
        message: format!(
            "an amount in {currency} adds up to more than {} units, the most that Money.units \
             (int64) can hold; narrow the request (another pipeline, or a filter on the leads \
             behind it) or split the amounts across pipelines",
            i64::MAX
        ),
        oldest_available: None,
    }
}

fn amounts(values: &Amounts) -> Result<Vec<pb::Money>, AppError> {
    values.iter().map(|(c, v)| money(c, *v)).collect()
}

fn totals(values: &Totals) -> Result<Vec<pb::Money>, AppError> {
    values.iter().map(|(c, t)| total(c, t)).collect()
}

fn hours(value: Option<f64>) -> Option<ProtoDuration> {
    value.map(|h| seconds((h * 3600.0) as i64))
}

fn seconds(seconds: i64) -> ProtoDuration {
    ProtoDuration { seconds, nanos: 0 }
}
