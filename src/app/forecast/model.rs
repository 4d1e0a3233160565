//! The learned model of one pipeline: the absorbing stage chain, the attribute adjustment and
//! the close-time samples, all learned from history up to a point in time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::AppError;
use crate::domain::forecast::paths::close_times_from_chain;
use crate::domain::forecast::{
    AttributeModel, ChainModel, CloseTimes, KaplanMeier, LeadFeatures, Scored, TransitionCounts,
    amount_band, fit_chain,
};
use crate::domain::ids::{PipelineId, TenantId};
use crate::domain::money::{CurrencyCode, Money};
use crate::domain::pipeline::{PipelineDefinition, StageKind};
use crate::store::Connection;
use crate::store::analytics::{self, DwellRow, HistoryScope, LeadAt};

/// Pseudo-observations pulling each stage's transitions towards the configured probabilities.
pub const PRIOR_STRENGTH: f64 = 10.0;
/// Below this many closed leads a pipeline keeps its configured probabilities.
pub const MIN_CLOSED_LEADS: usize = 30;
/// Close-time samples kept per (stage, day) group, to bound memory on large histories.
const MAX_SAMPLES_PER_GROUP: i64 = 200;
/// Simulated winning paths per stage for the time-to-win distribution.
const WINS_PER_STAGE: usize = 2000;
/// Fixed, so that the same history always gives the same model.
const PATH_SEED: u64 = 0x1ead_91fe;
/// How long a model trained "now" is reused.
pub const MODEL_TTL: Duration = Duration::from_secs(300);

pub struct LearnedModel {
    pub chain: ChainModel,
    pub attributes: AttributeModel,
    pub close_times: CloseTimes,
    /// Closed leads the model learned from.
    pub closed_leads: usize,
    /// Whether there was enough history to use the learned numbers at all.
    pub learned: bool,
    configured: Vec<f64>,
}

impl LearnedModel {
    /// P(win) of a lead in `stage` with `features`, and the factors behind it.
    pub fn score(&self, stage: usize, features: &LeadFeatures) -> Scored {
        let base = self.stage_probability(stage);
        if !self.learned {
            return Scored {
                probability: base,
                factors: Vec::new(),
            };
        }
        self.attributes.adjust(base, features)
    }

    pub fn stage_probability(&self, stage: usize) -> f64 {
        if self.learned {
            self.chain.win_probability[stage]
        } else {
            self.configured[stage]
        }
    }
}

pub fn stage_index(definition: &PipelineDefinition) -> HashMap<&str, usize> {
    definition
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.as_str(), i))
        .collect()
}

pub fn stage_keys(definition: &PipelineDefinition, kinds: &[StageKind]) -> Vec<String> {
    definition
        .stages
        .iter()
        .filter(|s| kinds.contains(&s.kind))
        .map(|s| s.key.to_string())
        .collect()
}

pub fn features_of(lead: &LeadAt) -> LeadFeatures {
    features(
        &lead.source,
        &lead.owner,
        amount_band(money_of(lead).as_ref()),
        &lead.labels,
    )
}

/// A lead's features from its stored attributes; `labels` is the stored JSON object.
pub fn features(source: &str, owner: &str, band: &str, labels: &str) -> LeadFeatures {
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_str(labels).unwrap_or_default();
    LeadFeatures {
        source: source.to_owned(),
        owner: owner.to_owned(),
        amount_band: band.to_owned(),
        labels: labels.into_iter().collect(),
    }
}

pub fn money_of(lead: &LeadAt) -> Option<Money> {
    let currency = CurrencyCode::parse(&lead.currency).ok()?;
    Some(Money {
        currency,
        units: lead.units,
        nanos: lead.nanos,
    })
}

/// Learns the model from the history of one pipeline up to `scope.as_of`.
pub async fn train(
    db: &impl Connection,
    scope: &HistoryScope<'_>,
    definition: &PipelineDefinition,
) -> Result<LearnedModel, AppError> {
    let index = stage_index(definition);
    let mut counts = TransitionCounts::new(definition.stages.len());
    for (from, to, n) in analytics::transition_counts(db, scope).await? {
        if let (Some(&f), Some(&t)) = (index.get(from.as_str()), index.get(to.as_str())) {
            counts.add(f, t, n as f64);
        }
    }
    let chain = fit_chain(definition, &counts, PRIOR_STRENGTH);

    let closed_stages = stage_keys(definition, &[StageKind::Won, StageKind::Lost]);
    let closed = analytics::leads_at(db, scope, &closed_stages, None).await?;
    let won_kind = |stage: &str| {
        index
            .get(stage)
            .is_some_and(|&i| definition.stages[i].kind == StageKind::Won)
    };
    let attributes =
        AttributeModel::train(closed.iter().map(|l| (features_of(l), won_kind(&l.stage))));

    let close_times = if closed.len() >= MIN_CLOSED_LEADS {
        let every_visit = (i64::MIN, scope.as_of + 1);
        let dwell = dwell_estimates(
            db,
            scope,
            &index,
            definition.stages.len(),
            every_visit,
            24.0,
        )
        .await?;
        let won: Vec<bool> = definition
            .stages
            .iter()
            .map(|s| s.kind == StageKind::Won)
            .collect();
        let lost: Vec<bool> = definition
            .stages
            .iter()
            .map(|s| s.kind == StageKind::Lost)
            .collect();
        close_times_from_chain(&chain, &dwell, &won, &lost, WINS_PER_STAGE, PATH_SEED)
    } else {
        observed_close_times(db, scope, definition, &index).await?
    };
    Ok(LearnedModel {
        chain,
        attributes,
        close_times,
        closed_leads: closed.len(),
        learned: closed.len() >= MIN_CLOSED_LEADS,
        configured: definition.stages.iter().map(|s| s.probability).collect(),
    })
}

/// Kaplan–Meier time in stage per stage index, over the visits that began in [start, end), in
/// units of `hours_per_unit` hours (1 for hours, 24 for days).
pub async fn dwell_estimates(
    db: &impl Connection,
    scope: &HistoryScope<'_>,
    index: &HashMap<&str, usize>,
    stages: usize,
    (start, end): (i64, i64),
    hours_per_unit: f64,
) -> Result<Vec<KaplanMeier>, AppError> {
    let rows = analytics::dwell_times(db, scope, start, end).await?;
    Ok(fit_dwell(&rows, index, stages, hours_per_unit))
}

/// Kaplan–Meier time in stage per stage index, from grouped visits.
pub fn fit_dwell(
    rows: &[DwellRow],
    index: &HashMap<&str, usize>,
    stages: usize,
    hours_per_unit: f64,
) -> Vec<KaplanMeier> {
    let mut observations: Vec<Vec<(f64, bool)>> = vec![Vec::new(); stages];
    for row in rows {
        if let Some(&i) = index.get(row.stage.as_str()) {
            // The middle of the hour the SQL grouped by.
            let duration = (row.hours as f64 + 0.5) / hours_per_unit;
            observations[i].extend(std::iter::repeat_n(
                (duration, row.exited),
                row.visits as usize,
            ));
        }
    }
    observations.into_iter().map(KaplanMeier::fit).collect()
}

/// With little history, the observed times of won leads are all there is to go on.
async fn observed_close_times(
    db: &impl Connection,
    scope: &HistoryScope<'_>,
    definition: &PipelineDefinition,
    index: &HashMap<&str, usize>,
) -> Result<CloseTimes, AppError> {
    let won_stages = stage_keys(definition, &[StageKind::Won]);
    let mut close_times = CloseTimes::new(definition.stages.len());
    for (stage, days, n) in analytics::close_time_samples(db, scope, &won_stages).await? {
        if let Some(&i) = index.get(stage.as_str()) {
            for _ in 0..n.min(MAX_SAMPLES_PER_GROUP) {
                // The middle of the day bucket the SQL grouped by.
                close_times.add(i, days as f64 + 0.5);
            }
        }
    }
    Ok(close_times)
}

/// Models trained "now", per pipeline, reused for `MODEL_TTL`.
pub type ModelCache = PipelineCache<LearnedModel>;

/// What was derived from a pipeline's history "now", per pipeline, with when and for which
/// pipeline version: a new version (new stages or settings) makes an entry stale at once.
pub struct PipelineCache<T> {
    ttl: Duration,
    entries: Mutex<HashMap<(TenantId, PipelineId), CacheEntry<T>>>,
}

/// When it was derived, for which pipeline version, and the value.
type CacheEntry<T> = (Instant, i64, Arc<T>);

impl<T> PipelineCache<T> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The cached value if it is younger than the TTL and was derived for pipeline `version`.
    pub fn fresh(&self, tenant: &TenantId, pipeline: &PipelineId, version: i64) -> Option<Arc<T>> {
        self.get(tenant, pipeline, version)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, value)| value)
    }

    /// The cached value for `version`, however old: good enough for scoring a single write.
    pub fn latest(&self, tenant: &TenantId, pipeline: &PipelineId, version: i64) -> Option<Arc<T>> {
        self.get(tenant, pipeline, version).map(|(_, value)| value)
    }

    fn get(
        &self,
        tenant: &TenantId,
        pipeline: &PipelineId,
        version: i64,
    ) -> Option<(Instant, Arc<T>)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&(tenant.clone(), pipeline.clone()))
            .filter(|(_, v, _)| *v == version)
            .map(|(at, _, value)| (*at, value.clone()))
    }

    pub fn store(&self, tenant: &TenantId, pipeline: &PipelineId, version: i64, value: Arc<T>) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (tenant.clone(), pipeline.clone()),
                (Instant::now(), version, value),
            );
    }
}
