//! GetPipelineMetrics and ListStuckLeads. Rate definitions are documented in forecast.proto.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::model::{features, fit_dwell, money_of, stage_index, stage_keys};
use super::{Amounts, ForecastService, Totals};
use crate::app::{AppError, RequestContext};
use crate::domain::forecast::visits::{
    WindowCounts, WindowSplit, bucket, bucket_value, contributions,
};
use crate::domain::forecast::{KaplanMeier, band_at, band_position};
use crate::domain::ids::PipelineId;
use crate::domain::lead::Lead;
use crate::domain::listing::{decode_page_token, encode_page_token};
use crate::domain::money::CurrencyCode;
use crate::domain::pipeline::{PipelineDefinition, StageKind};
use crate::store::Connection;
use crate::store::analytics::changes::read_snapshot;
use crate::store::analytics::open::{self, OpenGroup};
use crate::store::analytics::{self, FlowRow, HistoryScope, LeadAt, WindowSummary};
use crate::store::{StoreError, leads, to_micros};

const HOURS_PER_DAY: f64 = 24.0;

#[derive(Debug, Clone, Default)]
pub struct StageReport {
    pub stage: String,
    pub open_count: i64,
    pub open_amount: Totals,
    pub weighted_amount: Amounts,
    pub entered: i64,
    pub advanced: i64,
    pub lost: i64,
    pub conversion_rate: f64,
    pub win_rate: f64,
    pub median_hours: Option<f64>,
    pub p90_hours: Option<f64>,
    pub stuck: i64,
    pub learned_win_probability: f64,
}

#[derive(Debug, Clone)]
pub struct MetricsReport {
    pub pipeline: PipelineId,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub as_of: DateTime<Utc>,
    pub stages: Vec<StageReport>,
    pub win_rate: f64,
    pub median_time_to_close_hours: Option<f64>,
    pub average_won_amount: Amounts,
    pub sales_velocity: Amounts,
    pub bottleneck_stage: String,
    pub bottleneck_explanation: String,
    pub open_count: i64,
    pub slippage: Slippage,
}

/// How far the open leads' expected close times have slipped, as of the report's time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Slippage {
    /// Open leads whose expected close time moved later at least once ÷ open leads; 0 without
    /// open leads.
    pub pushed_share: f64,
    /// Over those pushed leads that still have an expected close time: the mean of (expected
    /// close time − first expected close time), in days; None without such leads.
    pub average_push_days: Option<f64>,
}

impl Slippage {
    /// From the groups of open leads that a report reads.
    pub fn of_groups<'a>(groups: impl IntoIterator<Item = &'a OpenGroup>) -> Self {
        let (mut open, mut pushed, mut measured, mut days) = (0i64, 0i64, 0i64, 0.0);
        for group in groups {
            open += group.leads;
            pushed += group.pushed;
            measured += group.push_measured;
            days += group.push_days;
        }
        Slippage {
            pushed_share: if open > 0 {
                pushed as f64 / open as f64
            } else {
                0.0
            },
            average_push_days: (measured > 0).then(|| days / measured as f64),
        }
    }
}

/// The open leads of a report at as_of: grouped as they score alike, with the stuck leads of
/// each stage (in the pipeline's stage order).
struct OpenLeads {
    groups: Vec<OpenGroup>,
    stuck: Vec<i64>,
}

impl OpenLeads {
    /// For the present, from the kept open-lead groups, the stuck ones counted through
    /// `leads_by_stage`.
    async fn read(
        db: &impl Connection,
        scope: &HistoryScope<'_>,
        definition: &PipelineDefinition,
        open_stages: &[String],
        limits: &StuckLimits,
    ) -> Result<Self, AppError> {
        let groups = open::open_groups(db, scope.tenant, scope.pipeline, open_stages).await?;
        let mut stuck = vec![0; definition.stages.len()];
        for ((stage, limit), count) in definition.stages.iter().zip(limits).zip(&mut stuck) {
            if let (StageKind::Open, Some((hours, _))) = (stage.kind, limit) {
                let entered_by = scope.as_of - stuck_after_micros(*hours);
                *count = open::entered_by(
                    db,
                    scope.tenant,
                    scope.pipeline,
                    stage.key.as_str(),
                    entered_by,
                )
                .await?;
            }
        }
        Ok(Self { groups, stuck })
    }

    /// From the leads one by one, as a past as_of reads them: each its own group.
    fn of_each(
        leads: &[LeadAt],
        index: &HashMap<&str, usize>,
        limits: &StuckLimits,
        scope: &HistoryScope<'_>,
    ) -> Self {
        let mut stuck = vec![0; limits.len()];
        let groups = leads
            .iter()
            .map(|lead| {
                if let Some(&i) = index.get(lead.stage.as_str())
                    && limits[i].is_some_and(|(limit, _)| {
                        hours_in_stage(scope.as_of, lead.stage_enter_time) > limit
                    })
                {
                    stuck[i] += 1;
                }
                let measured = lead.close_date_push_count > 0;
                let push = match (lead.expected_close_time, lead.first_expected_close_time) {
                    (Some(expected), Some(first)) if measured => Some(expected - first),
                    _ => None,
                };
                OpenGroup {
                    stage: lead.stage.clone(),
                    currency: lead.currency.clone(),
                    band: band_position(lead.units),
                    source: lead.source.clone(),
                    owner: lead.owner.clone(),
                    labels: lead.labels.clone(),
                    leads: 1,
                    units: lead.units.into(),
                    nanos: i64::from(lead.nanos),
                    pushed: i64::from(measured),
                    push_measured: i64::from(push.is_some()),
                    push_days: push.map_or(0.0, |micros| micros as f64 / 8.64e10),
                }
            })
            .collect();
        Self { groups, stuck }
    }
}

/// Hours in stage at `as_of` of a lead that entered its stage at `entered` (both µs): a lead is
/// stuck when this is more than its stage's limit.
fn hours_in_stage(as_of: i64, entered: i64) -> f64 {
    (as_of - entered) as f64 / 3.6e9
}

/// The shortest time in stage, in µs, that is more than `limit_hours` by [`hours_in_stage`],
/// so that a count by entry time agrees with the stuck rule.
fn stuck_after_micros(limit_hours: f64) -> i64 {
    let exceeds = |micros: i64| hours_in_stage(micros, 0) > limit_hours;
    let mut micros = (limit_hours * 3.6e9).floor() as i64;
    // The estimate is within a few µs of the answer; the steps make it exact.
    for _ in 0..64 {
        if exceeds(micros - 1) {
            micros -= 1;
        } else if !exceeds(micros) {
            micros += 1;
        } else {
            break;
        }
    }
    micros
}

pub struct StuckLeadsQuery {
    pub pipeline: PipelineId,
    pub page_size: u64,
    pub page_token: String,
}

pub struct MetricsQuery {
    pub pipeline: PipelineId,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub as_of: Option<DateTime<Utc>>,
}

pub struct StuckLead {
    pub lead: Lead,
    pub time_in_stage: Duration,
    pub threshold: Duration,
    pub threshold_kind: &'static str,
    pub value_at_risk: f64,
}

/// One page of the stuck-lead ranking.
pub struct StuckLeadsPage {
    pub leads: Vec<StuckLead>,
    pub next_page_token: String,
    /// Stuck leads in the whole ranking, not only on this page.
    pub total_size: u64,
}

/// Per stage: the stuck threshold in hours and what it came from.
pub type StuckLimits = Vec<Option<(f64, &'static str)>>;

fn thresholds(definition: &PipelineDefinition, dwell: &[KaplanMeier]) -> StuckLimits {
    definition
        .stages
        .iter()
        .zip(dwell)
        .map(|(stage, km)| {
            let rotting = (stage.rotting_days > 0)
                .then_some((stage.rotting_days as f64 * HOURS_PER_DAY, "ROTTING_DAYS"));
            let historical = km.quantile(0.9).map(|h| (h.max(1.0), "HISTORICAL_P90"));
            match (rotting, historical) {
                (Some(r), Some(h)) => Some(if h.0 < r.0 { h } else { r }),
                (r, h) => r.or(h),
            }
        })
        .collect()
}

fn weighted_median(groups: &[(i64, i64)], value: impl Fn(i64) -> f64) -> Option<f64> {
    let total: i64 = groups.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let mut sorted = groups.to_vec();
    sorted.sort();
    let mut seen = 0;
    for (v, n) in sorted {
        seen += n;
        if seen * 2 >= total {
            return Some(value(v));
        }
    }
    None
}

impl ForecastService {
    /// Conversion, velocity and time-in-stage figures of the pipeline over a window, computed
    /// from the recorded history as it stood at `as_of`. Reads only.
    pub async fn metrics(
        &self,
        ctx: &RequestContext,
        query: MetricsQuery,
    ) -> Result<MetricsReport, AppError> {
        let as_of = query.as_of.unwrap_or_else(|| self.clock.now());
        let end = query.end.unwrap_or(as_of).min(as_of);
        let start = query.start.unwrap_or(end - Duration::days(365));
        if start >= end {
            return Err(AppError::invalid(
                "start_time",
                "must be before end_time and as_of",
            ));
        }
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
        let (window_start, window_end) = (to_micros(start), to_micros(end));
        // Open leads, aggregates and the leads of the partial days from one snapshot, so that a
        // write committed meanwhile is counted in all of them or in none.
        let snapshot = read_snapshot(self.store.reader()).await?;
        let db = &snapshot;
        let index = stage_index(definition);
        let n = definition.stages.len();
        let mut stages: Vec<StageReport> = definition
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| StageReport {
                stage: s.key.to_string(),
                learned_win_probability: model.stage_probability(i),
                ..Default::default()
            })
            .collect();

        let open_stages = stage_keys(definition, &[StageKind::Open]);
        let window = (window_start, window_end);
        let (summary, dwell, cycle_value, open): (_, _, fn(i64) -> f64, _) = if scope.present {
            let counts = window_counts(db, &scope, definition, window).await?;
            let dwell = sketch_dwell(db, &scope, definition, &index, &counts, window, true).await?;
            let open = OpenLeads::read(
                db,
                &scope,
                definition,
                &open_stages,
                &thresholds(definition, &dwell),
            )
            .await?;
            (summary_of(counts)?, dwell, bucket_value, open)
        } else {
            let won_stages = stage_keys(definition, &[StageKind::Won]);
            let summary =
                analytics::window_summary(db, &scope, &won_stages, window_start, window_end)
                    .await?;
            let dwell = fit_dwell(&summary.dwell, &index, n, 1.0);
            let leads = analytics::leads_at(db, &scope, &open_stages, None).await?;
            let open = OpenLeads::of_each(&leads, &index, &thresholds(definition, &dwell), &scope);
            (summary, dwell, |hours| hours as f64 + 0.5, open)
        };
        snapshot.commit().await.map_err(StoreError::from)?;

        // Flow: entered, advanced, lost, conversion.
        let mut ended = vec![0i64; n];
        for row in &summary.flows {
            let Some(&i) = index.get(row.stage.as_str()) else {
                continue;
            };
            stages[i].entered += row.visits;
            let Some(next) = row
                .next_stage
                .as_deref()
                .and_then(|s| index.get(s).copied())
            else {
                continue;
            };
            ended[i] += row.visits;
            match definition.stages[next].kind {
                StageKind::Lost => stages[i].lost += row.visits,
                StageKind::Won => stages[i].advanced += row.visits,
                StageKind::Open if next > i => stages[i].advanced += row.visits,
                StageKind::Open => {}
            }
        }
        for (i, stage) in stages.iter_mut().enumerate() {
            if ended[i] > 0 {
                stage.conversion_rate = stage.advanced as f64 / ended[i] as f64;
            }
        }

        // Eventual win rate from each stage.
        let mut closed = vec![0i64; n];
        let mut won = vec![0i64; n];
        for &(ref stage, ref final_stage, count) in &summary.outcomes {
            let (Some(&i), Some(&f)) = (index.get(stage.as_str()), index.get(final_stage.as_str()))
            else {
                continue;
            };
            match definition.stages[f].kind {
                StageKind::Won => {
                    closed[i] += count;
                    won[i] += count;
                }
                StageKind::Lost => closed[i] += count,
                StageKind::Open => {}
            }
        }
        for i in 0..n {
            if closed[i] > 0 {
                stages[i].win_rate = won[i] as f64 / closed[i] as f64;
            }
        }

        // Time in stage, Kaplan–Meier with open visits censored.
        for (stage, km) in stages.iter_mut().zip(&dwell) {
            stage.median_hours = km.median();
            stage.p90_hours = km.quantile(0.9);
        }

        // Open leads at as_of: counts, amounts, weighted amounts, stuck.
        let mut open_by_currency: HashMap<String, i64> = HashMap::new();
        for group in &open.groups {
            let Some(&i) = index.get(group.stage.as_str()) else {
                continue;
            };
            let report = &mut stages[i];
            report.open_count += group.leads;
            let Ok(currency) = CurrencyCode::parse(&group.currency) else {
                continue;
            };
            let features = features(
                &group.source,
                &group.owner,
                band_at(group.band),
                &group.labels,
            );
            let p = model.score(i, &features).probability;
            let currency = currency.as_str().to_owned();
            report
                .open_amount
                .entry(currency.clone())
                .or_default()
                .add_sum(group.units, group.nanos.into());
            let amount = group.units as f64 + group.nanos as f64 / 1e9;
            *report.weighted_amount.entry(currency.clone()).or_default() += amount * p;
            *open_by_currency.entry(currency).or_default() += group.leads;
        }
        for (report, stuck) in stages.iter_mut().zip(&open.stuck) {
            report.stuck = *stuck;
        }

        // Pipeline-wide.
        let mut created_closed = 0i64;
        let mut created_won = 0i64;
        for &(ref final_stage, count) in &summary.creations {
            match index
                .get(final_stage.as_str())
                .map(|&i| definition.stages[i].kind)
            {
                Some(StageKind::Won) => {
                    created_closed += count;
                    created_won += count;
                }
                Some(StageKind::Lost) => created_closed += count,
                _ => {}
            }
        }
        let win_rate = if created_closed > 0 {
            created_won as f64 / created_closed as f64
        } else {
            0.0
        };
        let median_cycle_hours = weighted_median(&summary.cycles, cycle_value);
        let mut average_won_amount = Amounts::new();
        for (currency, units, nanos, count) in summary.won_amounts {
            if count > 0 {
                let total = units as f64 + nanos as f64 / 1e9;
                average_won_amount.insert(currency, total / count as f64);
            }
        }
        let mut sales_velocity = Amounts::new();
        if let Some(hours) = median_cycle_hours {
            let days = (hours / HOURS_PER_DAY).max(1.0 / HOURS_PER_DAY);
            for (currency, average) in &average_won_amount {
                let open_count = open_by_currency.get(currency).copied().unwrap_or(0);
                sales_velocity.insert(
                    currency.clone(),
                    open_count as f64 * win_rate * average / days,
                );
            }
        }
        let slippage = Slippage::of_groups(
            open.groups
                .iter()
                .filter(|g| index.contains_key(g.stage.as_str())),
        );
        let (bottleneck_stage, bottleneck_explanation) = bottleneck(definition, &stages, &ended);
        Ok(MetricsReport {
            pipeline: query.pipeline.clone(),
            start,
            end,
            as_of,
            open_count: stages.iter().map(|s| s.open_count).sum(),
            stages,
            win_rate,
            median_time_to_close_hours: median_cycle_hours,
            average_won_amount,
            sales_velocity,
            bottleneck_stage,
            bottleneck_explanation,
            slippage,
        })
    }

    /// Open leads past their stage's threshold, highest value at risk first. Pages are offsets
    /// into that ranking, which is recomputed per call. Page size: see [`crate::app::page_size`].
    /// Reads only.
    pub async fn stuck_leads(
        &self,
        ctx: &RequestContext,
        query: StuckLeadsQuery,
    ) -> Result<StuckLeadsPage, AppError> {
        let (pipeline_id, page_size, page_token) =
            (&query.pipeline, query.page_size, &query.page_token[..]);
        let offset: u64 = if page_token.is_empty() {
            0
        } else {
            decode_page_token(page_token).map_err(|e| AppError::invalid("page_token", e))?
        };
        let page_size = crate::app::page_size(page_size);
        let pipeline = self.pipeline(ctx, pipeline_id).await?;
        let definition = pipeline.compiled.definition();
        let as_of = self.clock.now();
        let scope = HistoryScope {
            tenant: &ctx.tenant,
            pipeline: pipeline_id,
            as_of: to_micros(as_of),
            present: true,
        };
        let snapshot = read_snapshot(self.store.reader()).await?;
        let db = &snapshot;
        let index = stage_index(definition);
        let limits = match self
            .stuck_limits
            .fresh(&ctx.tenant, pipeline_id, pipeline.version)
        {
            Some(limits) => limits,
            None => {
                let since = to_micros(as_of - Duration::days(365));
                let visits = (since, scope.as_of + 1);
                let counts = window_counts(db, &scope, definition, visits).await?;
                // Only open stages have stuck leads, so closed stages' censoring is not read.
                let dwell =
                    sketch_dwell(db, &scope, definition, &index, &counts, visits, false).await?;
                let limits = Arc::new(thresholds(definition, &dwell));
                self.stuck_limits
                    .store(&ctx.tenant, pipeline_id, pipeline.version, limits.clone());
                limits
            }
        };
        // Only the leads past their stage's threshold, each stage's through `leads_by_stage`.
        let mut open = Vec::new();
        for (stage, limit) in definition.stages.iter().zip(limits.iter()) {
            if let (StageKind::Open, Some((hours, _))) = (stage.kind, limit) {
                let entered_by = scope.as_of - stuck_after_micros(*hours);
                open.extend(
                    open::leads_entered_by(
                        db,
                        scope.tenant,
                        scope.pipeline,
                        stage.key.as_str(),
                        entered_by,
                    )
                    .await?,
                );
            }
        }
        let mut stuck: Vec<(f64, &LeadAt, f64, (f64, &'static str))> = open
            .iter()
            .filter_map(|lead| {
                let i = *index.get(lead.stage.as_str())?;
                let hours = hours_in_stage(scope.as_of, lead.stage_enter_time);
                let limit = limits[i].filter(|(limit, _)| hours > *limit)?;
                let value = money_of(lead).map_or(0.0, |m| m.value()) * lead.win_probability;
                Some((value, lead, hours, limit))
            })
            .collect();
        stuck.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| a.1.lead_id.cmp(&b.1.lead_id))
        });
        let total = stuck.len() as u64;
        let page: Vec<_> = stuck
            .iter()
            .skip(offset as usize)
            .take(page_size as usize)
            .collect();
        let ids: Vec<&str> = page
            .iter()
            .map(|(_, lead, ..)| lead.lead_id.as_str())
            .collect();
        let mut full: HashMap<String, Lead> = leads::find_many(db, &ctx.tenant, &ids)
            .await?
            .into_iter()
            .map(|lead| (lead.id.to_string(), lead))
            .collect();
        let mut out = Vec::with_capacity(page.len());
        for (value, lead, hours, (limit, kind)) in page {
            // Deleted since the ranking was read.
            let Some(full) = full.remove(&lead.lead_id) else {
                continue;
            };
            out.push(StuckLead {
                lead: full,
                time_in_stage: Duration::seconds((hours * 3600.0) as i64),
                threshold: Duration::seconds((limit * 3600.0) as i64),
                threshold_kind: kind,
                value_at_risk: *value,
            });
        }
        snapshot.commit().await.map_err(StoreError::from)?;
        let next = offset + page_size;
        let token = if next < total {
            encode_page_token(&next)
        } else {
            String::new()
        };
        Ok(StuckLeadsPage {
            leads: out,
            next_page_token: token,
            total_size: total,
        })
    }
}

/// The window's figures for the present from the stage aggregates: whole days from
/// `stage_stats`, and for the leads with a change on the window's partial first or last day,
/// their exact figures from their history in place of what those days attribute to them
/// (`WindowSplit`). The last day is read whole when no change follows the window's end on it
/// (`WindowSplit::last_day_whole`). The result equals the history replay's, with times in
/// sketch buckets.
async fn window_counts(
    db: &impl Connection,
    scope: &HistoryScope<'_>,
    definition: &PipelineDefinition,
    (start, end): (i64, i64),
) -> Result<WindowCounts, AppError> {
    use crate::store::analytics::visits as store;
    let stages: Vec<String> = definition
        .stages
        .iter()
        .map(|s| s.key.to_string())
        .collect();
    let mut split = WindowSplit::of(start, end);
    // A window that ends now (the default) would otherwise read every lead changed today.
    if let Some((whole, rest)) = split.last_day_whole()
        && !store::any_change_in(db, scope.tenant, scope.pipeline, &stages, rest).await?
    {
        split = whole;
    }
    let mut counts = WindowCounts::default();
    for (key, count) in store::days(db, scope.tenant, scope.pipeline, split.days).await? {
        counts.add_row(&key, count, split.days.0, 1);
    }
    let exact = store::leads_changed_in(
        db,
        scope.tenant,
        scope.pipeline,
        &stages,
        &split.exact_ranges,
    )
    .await?;
    let won = crate::app::visits::won_stages(definition);
    let is_won = |s: &str| won.iter().any(|w| w == s);
    for lead in store::lead_visits(db, scope.tenant, scope.pipeline, &exact)
        .await?
        .values()
    {
        counts.add_days(&contributions(lead, &is_won), split.days, -1);
        counts.add_exact(lead, &is_won, start, end);
    }
    Ok(counts)
}

/// The window's groupings in the replay's shape; cycle times are sketch buckets.
fn summary_of(counts: WindowCounts) -> Result<WindowSummary, AppError> {
    let mut won_amounts = Vec::new();
    for (currency, (units, nanos, n)) in counts.won_amounts {
        if n == 0 {
            continue;
        }
        // As the replay's SUM: a total past int64 is out of range, never clipped.
        let units = i64::try_from(units).map_err(|_| {
            crate::store::StoreError::OutOfRange(format!("won amounts in {currency}"))
        })?;
        won_amounts.push((currency, units, nanos, n));
    }
    Ok(WindowSummary {
        flows: counts
            .flows
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|((stage, next), visits)| FlowRow {
                stage,
                next_stage: (!next.is_empty()).then_some(next),
                visits,
            })
            .collect(),
        outcomes: counts
            .outcomes
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|((stage, last), n)| (stage, last, n))
            .collect(),
        dwell: Vec::new(),
        creations: counts
            .creations
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .collect(),
        cycles: counts.cycles.into_iter().filter(|(_, n)| *n != 0).collect(),
        won_amounts,
    })
}

/// Kaplan–Meier time in stage per stage over the sketch: exited visits from the aggregates,
/// open visits (censored at as_of) grouped by whole hours in SQL, both in sketch buckets. A
/// closed stage's open visits are read only when `closed_too` and the stage has exits in the
/// window (reopened leads): without exits its estimate has no step whatever is censored.
async fn sketch_dwell(
    db: &impl Connection,
    scope: &HistoryScope<'_>,
    definition: &PipelineDefinition,
    index: &HashMap<&str, usize>,
    counts: &WindowCounts,
    (start, end): (i64, i64),
    closed_too: bool,
) -> Result<Vec<KaplanMeier>, AppError> {
    let n = definition.stages.len();
    let mut groups: Vec<HashMap<(i64, bool), u64>> = vec![HashMap::new(); n];
    for ((stage, b), &count) in &counts.exits {
        if let Some(&i) = index.get(stage.as_str())
            && count > 0
        {
            *groups[i].entry((*b, true)).or_default() += count as u64;
        }
    }
    for (i, stage) in definition.stages.iter().enumerate() {
        let read = match stage.kind {
            StageKind::Open => true,
            _ => closed_too && !groups[i].is_empty(),
        };
        if !read {
            continue;
        }
        let open_hours = crate::store::analytics::visits::open_visits(
            db,
            scope.tenant,
            scope.pipeline,
            stage.key.as_str(),
            (start, end),
            scope.as_of,
        )
        .await?;
        for (hours, visits) in open_hours {
            *groups[i].entry((bucket(hours), false)).or_default() += visits as u64;
        }
    }
    Ok(groups
        .into_iter()
        .map(|g| KaplanMeier::fit_counts(g.into_iter().map(|((b, e), c)| (bucket_value(b), e, c))))
        .collect())
}

/// The open stage with the largest expected delay per new lead (share reaching it × median
/// dwell) among stages converting below the pipeline's average.
fn bottleneck(
    definition: &PipelineDefinition,
    stages: &[StageReport],
    ended: &[i64],
) -> (String, String) {
    let open: Vec<usize> = (0..stages.len())
        .filter(|&i| definition.stages[i].kind == StageKind::Open && ended[i] > 0)
        .collect();
    if open.is_empty() {
        return (String::new(), String::new());
    }
    let average = open.iter().map(|&i| stages[i].conversion_rate).sum::<f64>() / open.len() as f64;
    let first_entries = stages.first().map_or(0, |s| s.entered).max(1) as f64;
    let candidate = open
        .iter()
        .filter(|&&i| stages[i].conversion_rate <= average)
        .filter_map(|&i| {
            let median_days = stages[i].median_hours? / HOURS_PER_DAY;
            let reach = (stages[i].entered as f64 / first_entries).min(1.0);
            Some((reach * median_days, i, reach, median_days))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match candidate {
        Some((_, i, reach, days)) => {
            let stage = &stages[i];
            (
                stage.stage.clone(),
                format!(
                    "{}: only {:.0}% of leads advance (stage average {:.0}%), they wait a median {:.1} days there, and {:.0}% of new leads reach it",
                    stage.stage,
                    stage.conversion_rate * 100.0,
                    average * 100.0,
                    days,
                    reach * 100.0
                ),
            )
        }
        None => (String::new(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{OpenLeads, Slippage, stuck_after_micros};
    use crate::domain::ids::{PipelineId, TenantId};
    use crate::store::analytics::{HistoryScope, LeadAt};

    #[test]
    fn the_stuck_cutoff_agrees_with_the_hours_rule() {
        for limit in [1.0, 1.5, 24.0, 100.0 / 3.0, 2_159.999_999_9, 8760.0, 0.1] {
            let cutoff = stuck_after_micros(limit);
            assert!(
                cutoff as f64 / 3.6e9 > limit,
                "{limit}: {cutoff} is not past it"
            );
            assert!(
                (cutoff - 1) as f64 / 3.6e9 <= limit,
                "{limit}: {} is already past it",
                cutoff - 1
            );
        }
    }

    const DAY: i64 = 86_400_000_000;

    #[test]
    fn slippage_is_the_share_pushed_and_their_mean_push() {
        let lead = |pushes, expected, first| LeadAt {
            lead_id: String::new(),
            stage: "qualification".into(),
            stage_enter_time: 0,
            currency: String::new(),
            units: 0,
            nanos: 0,
            source: String::new(),
            owner: String::new(),
            labels: "{}".into(),
            expected_close_time: expected,
            win_probability: 0.0,
            close_date_push_count: pushes,
            first_expected_close_time: first,
        };
        let leads = [
            lead(0, Some(10 * DAY), Some(10 * DAY)),
            lead(1, Some(15 * DAY), Some(10 * DAY)),
            lead(2, Some(12 * DAY), Some(10 * DAY)),
            // Pushed, then its date was cleared: pushed, but no length to measure.
            lead(1, None, Some(3 * DAY)),
        ];
        let (tenant, pipeline) = (TenantId::default_tenant(), PipelineId::default_pipeline());
        let scope = HistoryScope {
            tenant: &tenant,
            pipeline: &pipeline,
            as_of: 0,
            present: false,
        };
        let index = HashMap::from([("qualification", 0)]);
        let slippage = |leads: &[LeadAt]| {
            Slippage::of_groups(&OpenLeads::of_each(leads, &index, &vec![None], &scope).groups)
        };
        let measured = slippage(&leads);
        assert_eq!(measured.pushed_share, 0.75);
        assert_eq!(measured.average_push_days, Some(3.5));
        assert_eq!(slippage(&[]), Slippage::default());
    }
}
