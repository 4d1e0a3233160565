//! Pipeline use cases. A definition is compiled (every criterion expression parsed and checked)
//! before it is stored, so a stored pipeline always compiles.

use std::collections::HashSet;
use std::sync::Arc;

use super::catalog::{CachedPipeline, PipelineCatalog};
use super::visits;
use super::{AppError, Clock, PreconditionViolation, RequestContext};
use crate::domain::ids::{PipelineId, TenantId};
use crate::domain::listing::{decode_page_token, encode_page_token};
use crate::domain::pipeline::{Pipeline, PipelineDefinition};
use crate::domain::policy::CompiledPipeline;
use crate::store::pipelines::{self, RowLock};
use crate::store::{Store, StoreError, leads};

/// A field of a pipeline named in an update mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineField {
    DisplayName,
    Stages,
    AllowSkip,
    AllowBackward,
    AllowReopen,
}

impl PipelineField {
    pub const ALL: [PipelineField; 5] = [
        Self::DisplayName,
        Self::Stages,
        Self::AllowSkip,
        Self::AllowBackward,
        Self::AllowReopen,
    ];

    pub fn parse(path: &str) -> Result<Self, String> {
        Ok(match path {
            "display_name" => Self::DisplayName,
            "stages" => Self::Stages,
            "allow_skip" => Self::AllowSkip,
            "allow_backward" => Self::AllowBackward,
            "allow_reopen" => Self::AllowReopen,
            "id" | "create_time" | "update_time" | "etag" => {
                return Err(format!("{path:?} cannot be updated"));
            }
            other => {
                return Err(format!(
                    "unknown field {other:?}; updatable fields are display_name, stages, allow_skip, allow_backward, allow_reopen"
                ));
            }
        })
    }

    fn apply(self, source: &PipelineDefinition, target: &mut PipelineDefinition) {
        match self {
            Self::DisplayName => target.display_name.clone_from(&source.display_name),
            Self::Stages => target.stages.clone_from(&source.stages),
            Self::AllowSkip => target.rules.allow_skip = source.rules.allow_skip,
            Self::AllowBackward => target.rules.allow_backward = source.rules.allow_backward,
            Self::AllowReopen => target.rules.allow_reopen = source.rules.allow_reopen,
        }
    }
}

pub struct CreatePipeline {
    pub id: PipelineId,
    pub definition: PipelineDefinition,
}

/// Replaces the parts named by `mask` with those of `definition`.
pub struct UpdatePipeline {
    pub id: PipelineId,
    pub definition: PipelineDefinition,
    pub mask: Vec<PipelineField>,
    pub expected_version: Option<i64>,
}

pub struct PipelineListQuery {
    pub page_size: u64,
    pub page_token: String,
}

#[derive(Clone)]
pub struct PipelineService {
    store: Store,
    catalog: Arc<PipelineCatalog>,
    clock: Clock,
}

impl PipelineService {
    pub fn new(store: Store, catalog: Arc<PipelineCatalog>, clock: Clock) -> Self {
        Self {
            store,
            catalog,
            clock,
        }
    }

    /// Creates the pipeline with one write. Refuses a definition that does not compile
    /// (INVALID_ARGUMENT, every finding at once) and a taken id (ALREADY_EXISTS), also for
    /// `default`, which every tenant has from its first use.
    pub async fn create(
        &self,
        ctx: &RequestContext,
        command: CreatePipeline,
    ) -> Result<Pipeline, AppError> {
        let CreatePipeline { id, definition } = command;
        let compiled = compile(definition)?;
        if id == PipelineId::default_pipeline() {
            // Make sure a tenant's own default exists before reporting the conflict.
            self.catalog
                .get(self.store.writer(), &ctx.tenant, &id, RowLock::None)
                .await?;
        }
        let time = self.clock.now();
        let pipeline = Pipeline {
            id,
            definition: compiled.definition().clone(),
            create_time: time,
            update_time: time,
            version: 1,
        };
        match pipelines::insert(self.store.writer(), &ctx.tenant, &pipeline).await {
            Ok(()) => {}
            Err(StoreError::UniqueViolation(_)) => {
                return Err(AppError::AlreadyExists(format!(
                    "pipeline {:?} already exists",
                    pipeline.id.as_str()
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.remember(&ctx.tenant, &pipeline, compiled);
        Ok(pipeline)
    }

    /// Reads the pipeline; `default` is created on its first read.
    pub async fn get(&self, ctx: &RequestContext, id: &PipelineId) -> Result<Pipeline, AppError> {
        if *id == PipelineId::default_pipeline() {
            self.catalog
                .get(self.store.reader(), &ctx.tenant, id, RowLock::None)
                .await?;
        }
        pipelines::find(self.store.reader(), &ctx.tenant, id, RowLock::None)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// One page of the tenant's pipelines in id order, with the token of the next. Page size:
    /// see [`super::page_size`].
    pub async fn list(
        &self,
        ctx: &RequestContext,
        query: PipelineListQuery,
    ) -> Result<(Vec<Pipeline>, String), AppError> {
        let (page_size, page_token) = (query.page_size, &query.page_token[..]);
        let after: String = if page_token.is_empty() {
            // Listing shows the tenant's default pipeline even before its first use.
            self.catalog
                .get(
                    self.store.reader(),
                    &ctx.tenant,
                    &PipelineId::default_pipeline(),
                    RowLock::None,
                )
                .await?;
            String::new()
        } else {
            decode_page_token(page_token).map_err(|e| AppError::invalid("page_token", e))?
        };
        let page_size = super::page_size(page_size);
        let mut rows =
            pipelines::list(self.store.reader(), &ctx.tenant, &after, page_size + 1).await?;
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            encode_page_token(&rows.last().expect("page is not empty").id.to_string())
        } else {
            String::new()
        };
        Ok((rows, next))
    }

    /// Applies the masked fields in one transaction that locks the pipeline's row. With an etag
    /// only that version is changed (ABORTED otherwise). Refuses a result that does not compile,
    /// and the removal of a stage that still holds leads (FAILED_PRECONDITION naming each).
    pub async fn update(
        &self,
        ctx: &RequestContext,
        command: UpdatePipeline,
    ) -> Result<Pipeline, AppError> {
        let UpdatePipeline {
            id,
            definition: source,
            mask,
            expected_version,
        } = command;
        let (id, source) = (&id, &source);
        // Materialises the tenant's default pipeline if this is its first use.
        self.catalog
            .get(self.store.reader(), &ctx.tenant, id, RowLock::None)
            .await?;
        let tx = self.store.begin_write().await?;
        let current = pipelines::find(&tx, &ctx.tenant, id, RowLock::Update)
            .await?
            .ok_or_else(|| not_found(id))?;
        if expected_version.is_some_and(|v| v != current.version) {
            return Err(stale(id));
        }
        let mut definition = current.definition.clone();
        for field in mask {
            field.apply(source, &mut definition);
        }
        let compiled = compile(definition)?;
        let kept: HashSet<&str> = compiled
            .definition()
            .stages
            .iter()
            .map(|s| s.key.as_str())
            .collect();
        let removed: Vec<String> = current
            .definition
            .stages
            .iter()
            .map(|s| s.key.to_string())
            .filter(|key| !kept.contains(key.as_str()))
            .collect();
        let occupied = leads::count_in_stages(&tx, &ctx.tenant, id, &removed).await?;
        if !occupied.is_empty() {
            return Err(AppError::FailedPrecondition {
                message: "stages that still hold leads cannot be removed; move those leads first"
                    .into(),
                violations: occupied
                    .into_iter()
                    .map(|(stage, count)| PreconditionViolation {
                        kind: "STAGE_NOT_EMPTY".into(),
                        subject: stage.clone(),
                        description: format!("{count} lead(s) are in stage {stage:?}"),
                    })
                    .collect(),
            });
        }
        let updated = Pipeline {
            id: id.clone(),
            definition: compiled.definition().clone(),
            create_time: current.create_time,
            update_time: self.clock.now(),
            version: current.version + 1,
        };
        if !pipelines::update_if_version(&tx, &ctx.tenant, &updated, current.version).await? {
            return Err(stale(id));
        }
        if visits::won_stages(&current.definition) != visits::won_stages(compiled.definition()) {
            visits::rebuild(&tx, &ctx.tenant, id, compiled.definition()).await?;
        }
        tx.commit().await?;
        self.remember(&ctx.tenant, &updated, compiled);
        Ok(updated)
    }

    fn remember(&self, tenant: &TenantId, pipeline: &Pipeline, compiled: CompiledPipeline) {
        self.catalog.remember_compiled(
            tenant,
            &pipeline.id,
            CachedPipeline {
                version: pipeline.version,
                compiled: Arc::new(compiled),
            },
        );
    }
}

fn compile(definition: PipelineDefinition) -> Result<CompiledPipeline, AppError> {
    crate::domain::policy::compile(definition).map_err(AppError::InvalidArgument)
}

fn not_found(id: &PipelineId) -> AppError {
    AppError::NotFound {
        resource: "pipeline",
        name: id.to_string(),
    }
}

fn stale(id: &PipelineId) -> AppError {
    AppError::Aborted(format!(
        "pipeline {id} was changed since the given etag was read; read it again and retry"
    ))
}
