//! Compiled pipelines, cached by version. A pipeline's criteria are compiled once per version
//! (when it is saved, or when this replica first sees that version), not on every move.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{AppError, Clock};
use crate::domain::ids::{PipelineId, TenantId};
use crate::domain::pipeline::Pipeline;
use crate::domain::policy::{CompiledPipeline, default_pipeline};
use crate::store::Connection;
use crate::store::pipelines::{self, RowLock};

#[derive(Clone)]
pub struct CachedPipeline {
    pub version: i64,
    pub compiled: Arc<CompiledPipeline>,
}

pub struct PipelineCatalog {
    cache: Mutex<HashMap<(TenantId, PipelineId), CachedPipeline>>,
    /// Stamps the default pipeline when a tenant first uses it.
    clock: Clock,
}

impl PipelineCatalog {
    pub fn new(clock: Clock) -> Self {
        Self {
            cache: Mutex::default(),
            clock,
        }
    }

    /// The pipeline's current compiled policy, read through `db` (so inside a transaction it
    /// sees the transaction's view). `None` if the pipeline does not exist.
    pub async fn get(
        &self,
        db: &impl Connection,
        tenant: &TenantId,
        id: &PipelineId,
        lock: RowLock,
    ) -> Result<Option<CachedPipeline>, AppError> {
        match self.get_stored(db, tenant, id, lock).await? {
            Some(cached) => Ok(Some(cached)),
            None => self.materialize_default(db, tenant, id).await,
        }
    }

    /// [`Self::get`] without creating a tenant's default pipeline, so that it never writes:
    /// None when the pipeline is not stored.
    pub async fn get_stored(
        &self,
        db: &impl Connection,
        tenant: &TenantId,
        id: &PipelineId,
        lock: RowLock,
    ) -> Result<Option<CachedPipeline>, AppError> {
        let key = (tenant.clone(), id.clone());
        let Some(version) = pipelines::find_version(db, tenant, id, lock).await? else {
            return Ok(None);
        };
        if let Some(cached) = self
            .lock()
            .get(&key)
            .filter(|c| c.version == version)
            .cloned()
        {
            return Ok(Some(cached));
        }
        match pipelines::find(db, tenant, id, RowLock::None).await? {
            Some(pipeline) => Ok(Some(self.remember(tenant, &pipeline)?)),
            None => Ok(None),
        }
    }

    /// The pipeline at `version`, which the caller read: from the cache when it holds that
    /// version, else read through `db`. None when the pipeline is not stored or is no longer at
    /// that version.
    pub async fn get_at_version(
        &self,
        db: &impl Connection,
        tenant: &TenantId,
        id: &PipelineId,
        version: i64,
    ) -> Result<Option<CachedPipeline>, AppError> {
        let key = (tenant.clone(), id.clone());
        if let Some(cached) = self.lock().get(&key).filter(|c| c.version == version) {
            return Ok(Some(cached.clone()));
        }
        match pipelines::find(db, tenant, id, RowLock::None).await? {
            Some(pipeline) if pipeline.version == version => {
                Ok(Some(self.remember(tenant, &pipeline)?))
            }
            _ => Ok(None),
        }
    }

    /// Caches a pipeline that was just read or written.
    pub fn remember(
        &self,
        tenant: &TenantId,
        pipeline: &Pipeline,
    ) -> Result<CachedPipeline, AppError> {
        let compiled = crate::domain::policy::compile_stored(pipeline.definition.clone()).map_err(
            |violations| {
                AppError::Internal(format!(
                    "stored pipeline {} does not compile: {violations:?}",
                    pipeline.id
                ))
            },
        )?;
        let cached = CachedPipeline {
            version: pipeline.version,
            compiled: Arc::new(compiled),
        };
        self.lock()
            .insert((tenant.clone(), pipeline.id.clone()), cached.clone());
        Ok(cached)
    }

    pub fn remember_compiled(&self, tenant: &TenantId, id: &PipelineId, cached: CachedPipeline) {
        self.lock().insert((tenant.clone(), id.clone()), cached);
    }

    /// Every tenant has a `default` pipeline; tenants other than the seeded one get theirs on
    /// first use.
    async fn materialize_default(
        &self,
        db: &impl Connection,
        tenant: &TenantId,
        id: &PipelineId,
    ) -> Result<Option<CachedPipeline>, AppError> {
        if *id != PipelineId::default_pipeline() {
            return Ok(None);
        }
        let time = self.clock.now();
        let pipeline = Pipeline {
            id: id.clone(),
            definition: default_pipeline(),
            create_time: time,
            update_time: time,
            version: 1,
        };
        pipelines::insert_if_absent(db, tenant, &pipeline).await?;
        match pipelines::find(db, tenant, id, RowLock::None).await? {
            Some(stored) => Ok(Some(self.remember(tenant, &stored)?)),
            None => Ok(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, PipelineId), CachedPipeline>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::pipeline::PipelineDefinition;
    use crate::domain::policy::default_pipeline;

    /// The migration seeds the default pipeline from a JSON file; it must stay the domain's
    /// definition. `LEADPIPE_BLESS=1 cargo test seeded_default` rewrites the file.
    #[test]
    fn seeded_default_pipeline_matches_the_domain_definition() {
        let expected = default_pipeline();
        if std::env::var_os("LEADPIPE_BLESS").is_some() {
            let json = serde_json::to_string_pretty(&expected).expect("serialise");
            std::fs::write(
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations/src/default_pipeline.json"
                ),
                json + "\n",
            )
            .expect("write seed");
            return;
        }
        let seeded: PipelineDefinition =
            serde_json::from_str(migration::DEFAULT_PIPELINE_JSON).expect("seed parses");
        assert_eq!(seeded, expected);
    }
}
