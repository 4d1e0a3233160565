//! ForecastService use cases: metrics, stuck leads, learned win probabilities, range forecasts
//! and backtests. The maths is in `crate::domain::forecast`; this module feeds it from the
//! store and keeps lead probabilities in step with the learned model.

pub mod changes;
pub mod metrics;
pub mod model;
pub mod projection;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use self::model::{
    LearnedModel, MODEL_TTL, ModelCache, PipelineCache, features_of, stage_index, stage_keys, train,
};
use super::catalog::{CachedPipeline, PipelineCatalog};
use super::{AppError, Clock, RequestContext};
use crate::domain::forecast::{Factor, LeadFeatures};
use crate::domain::ids::{LeadId, PipelineId, TenantId};
use crate::domain::lead::Lead;
use crate::domain::pipeline::StageKind;
use crate::store::analytics::{self, HistoryScope};
use crate::store::pipelines::RowLock;
use crate::store::{Store, leads, to_micros};

/// Amounts per currency; different currencies are never added together.
pub type Amounts = BTreeMap<String, f64>;
/// Exact sums of amounts per currency, for the numbers that are plain totals.
pub type Totals = BTreeMap<String, crate::domain::money::Total>;

#[derive(Clone)]
pub struct ForecastService {
    store: Store,
    catalog: Arc<PipelineCatalog>,
    models: Arc<ModelCache>,
    /// ListStuckLeads' per-stage thresholds, so that paging through the stuck leads does not
    /// replay the history for every page.
    stuck_limits: Arc<PipelineCache<metrics::StuckLimits>>,
    clock: Clock,
}

pub struct Explanation {
    pub lead: Lead,
    pub win_probability: f64,
    pub stage_probability: f64,
    pub configured_probability: f64,
    pub stage_support: f64,
    pub factors: Vec<Factor>,
    pub training_size: u64,
}

impl Explanation {
    /// The stage's contribution in the same unit as the other factors. Clamped away from 0 and
    /// 1, where the log-odds are infinite and would not survive JSON or most clients' maths.
    pub fn stage_log_odds(&self) -> f64 {
        let p = self.stage_probability.clamp(1e-6, 1.0 - 1e-6);
        (p / (1.0 - p)).ln()
    }
}

impl ForecastService {
    pub fn new(
        store: Store,
        catalog: Arc<PipelineCatalog>,
        models: Arc<ModelCache>,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            catalog,
            models,
            stuck_limits: Arc::new(PipelineCache::new(MODEL_TTL)),
            clock,
        }
    }

    pub(crate) async fn pipeline(
        &self,
        ctx: &RequestContext,
        id: &PipelineId,
    ) -> Result<CachedPipeline, AppError> {
        self.catalog
            .get(self.store.reader(), &ctx.tenant, id, RowLock::None)
            .await?
            .ok_or_else(|| AppError::NotFound {
                resource: "pipeline",
                name: id.to_string(),
            })
    }

    /// OUT_OF_RANGE when `as_of` is before the oldest lead revision that retention keeps
    /// (`super::revisions_kept_at`); nothing to check for the present (None).
    pub(crate) async fn ensure_revisions_kept(
        &self,
        ctx: &RequestContext,
        field: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<(), AppError> {
        if let Some(as_of) = as_of {
            super::revisions_kept_at(self.store.reader(), &ctx.tenant, field, as_of).await?;
        }
        Ok(())
    }

    /// A model trained on history up to `as_of`, or up to now (cached) when it is None.
    /// `as_of` reads every lead as it was then, however close to now it is, so that a model
    /// as of a time never learns from what happened after it.
    pub(crate) async fn model_at(
        &self,
        tenant: &TenantId,
        id: &PipelineId,
        pipeline: &CachedPipeline,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Arc<LearnedModel>, AppError> {
        let is_now = as_of.is_none();
        if is_now && let Some(model) = self.models.fresh(tenant, id, pipeline.version) {
            return Ok(model);
        }
        let scope = HistoryScope {
            tenant,
            pipeline: id,
            as_of: to_micros(as_of.unwrap_or_else(|| self.clock.now())),
            present: is_now,
        };
        let model =
            Arc::new(train(self.store.reader(), &scope, pipeline.compiled.definition()).await?);
        if is_now {
            self.models
                .store(tenant, id, pipeline.version, model.clone());
        }
        Ok(model)
    }

    /// Retrains the pipeline's model on all history and rewrites the win probability (and
    /// expected value) of each open lead that it changes.
    pub async fn rescore(&self, ctx: &RequestContext, id: &PipelineId) -> Result<usize, AppError> {
        let pipeline = self.pipeline(ctx, id).await?;
        let definition = pipeline.compiled.definition();
        let time = self.clock.now();
        let scope = HistoryScope {
            tenant: &ctx.tenant,
            pipeline: id,
            as_of: to_micros(time),
            present: true,
        };
        let model = Arc::new(train(self.store.reader(), &scope, definition).await?);
        self.models
            .store(&ctx.tenant, id, pipeline.version, model.clone());
        let index = stage_index(definition);
        let open = analytics::leads_at_in(
            &self.store,
            &scope,
            &stage_keys(definition, &[StageKind::Open]),
            None,
        )
        .await?;
        let updates: Vec<(String, f64, f64)> = open
            .iter()
            .filter_map(|lead| {
                let stage = *index.get(lead.stage.as_str())?;
                let p = model.score(stage, &features_of(lead)).probability;
                let amount = model::money_of(lead).map_or(0.0, |m| m.value());
                ((p - lead.win_probability).abs() > 1e-9)
                    .then(|| (lead.lead_id.clone(), p, p * amount))
            })
            .collect();
        for chunk in updates.chunks(500) {
            let tx = self.store.begin_write().await?;
            analytics::set_win_probabilities(&tx, &ctx.tenant, chunk).await?;
            tx.commit().await?;
        }
        Ok(updates.len())
    }

    /// Why the lead has its win probability: the stage's learned rate and each factor's
    /// contribution in log-odds. Reads only.
    pub async fn explain(
        &self,
        ctx: &RequestContext,
        id: &LeadId,
    ) -> Result<Explanation, AppError> {
        let lead = leads::find(self.store.reader(), &ctx.tenant, id)
            .await?
            .ok_or_else(|| AppError::lead_not_found(id))?;
        let pipeline = self.pipeline(ctx, &lead.pipeline_id).await?;
        let definition = pipeline.compiled.definition();
        let stage = definition
            .stage_index(&lead.stage)
            .ok_or_else(|| AppError::Internal(format!("lead {id} is in an unknown stage")))?;
        let model = self
            .model_at(&ctx.tenant, &lead.pipeline_id, &pipeline, None)
            .await?;
        let scored = model.score(stage, &LeadFeatures::of(&lead));
        Ok(Explanation {
            win_probability: scored.probability,
            stage_probability: model.stage_probability(stage),
            configured_probability: definition.stages[stage].probability,
            stage_support: model.chain.exits[stage],
            factors: scored.factors,
            training_size: model.closed_leads as u64,
            lead,
        })
    }
}

/// Scores single writes (create, move, update) with the cached model of the lead's pipeline,
/// without ever training on the request path.
#[derive(Clone)]
pub struct LeadScorer {
    models: Arc<ModelCache>,
}

impl LeadScorer {
    pub fn new(models: Arc<ModelCache>) -> Self {
        Self { models }
    }

    /// The lead's win probability in its current stage; the configured one without a model.
    pub fn probability(&self, tenant: &TenantId, pipeline: &CachedPipeline, lead: &Lead) -> f64 {
        let definition = pipeline.compiled.definition();
        let Some(stage) = definition.stage_index(&lead.stage) else {
            return 0.0;
        };
        match self
            .models
            .latest(tenant, &lead.pipeline_id, pipeline.version)
        {
            Some(model) => model.score(stage, &LeadFeatures::of(lead)).probability,
            None => definition.stages[stage].probability,
        }
    }
}
