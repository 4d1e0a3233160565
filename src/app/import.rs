//! Bulk import of leads with their history, in batches: one transaction and a handful of
//! multi-row statements per batch, so that a million leads load in minutes.

use std::collections::HashSet;
use std::sync::Arc;

use super::catalog::PipelineCatalog;
use super::{AppError, RequestContext};
use crate::domain::history::StageChange;
use crate::domain::ids::{PipelineId, TenantId};
use crate::domain::lead::Lead;
use crate::domain::policy::CompiledPipeline;
use crate::store::pipelines::RowLock;
use crate::store::{Store, WriteTx, history, leads, sequences};

/// Leads per transaction: large enough to amortise round-trips, small enough to stay within
/// both backends' bind-parameter limits.
pub const BATCH_SIZE: usize = 250;

/// Imported-lead counts, within one import, at which the planner statistics are refreshed:
/// each a multiple of the last, so a million leads cost ten ANALYZE runs.
const STATISTICS_REFRESH_AT: [u64; 10] = [
    1 << 10,
    1 << 12,
    1 << 14,
    1 << 16,
    1 << 17,
    1 << 18,
    1 << 19,
    1 << 20,
    1 << 21,
    1 << 22,
];

/// A validated lead ready to import; `history` sequences are assigned on insert.
pub struct ImportItem {
    pub index: i64,
    pub lead: Lead,
    pub history: Vec<StageChange>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImportOutcome {
    Imported,
    AlreadyImported,
    Failed(String),
}

#[derive(Clone)]
pub struct ImportService {
    store: Store,
    catalog: Arc<PipelineCatalog>,
}

impl ImportService {
    pub fn new(store: Store, catalog: Arc<PipelineCatalog>) -> Self {
        Self { store, catalog }
    }

    /// The pipeline imported leads of `id` are checked against.
    pub async fn pipeline(
        &self,
        ctx: &RequestContext,
        id: &PipelineId,
    ) -> Result<Option<Arc<CompiledPipeline>>, AppError> {
        Ok(self
            .catalog
            .get(self.store.reader(), &ctx.tenant, id, RowLock::None)
            .await?
            .map(|cached| cached.compiled))
    }

    /// Called after each batch with the number of leads this import had written before and
    /// after it: refreshes the planner statistics when the import has grown the tables enough
    /// for old plans to go stale (see `Store::refresh_statistics`).
    pub async fn grew(&self, before: u64, after: u64) -> Result<(), AppError> {
        if STATISTICS_REFRESH_AT
            .iter()
            .any(|&mark| before < mark && mark <= after)
        {
            self.store.refresh_statistics().await?;
        }
        Ok(())
    }

    /// At the end of an import that wrote leads: statistics for the queries that follow
    /// (retraining the model reads all of the pipeline's history).
    pub async fn finished(&self, imported: u64) -> Result<(), AppError> {
        if imported >= STATISTICS_REFRESH_AT[0] {
            self.store.refresh_statistics().await?;
        }
        Ok(())
    }

    /// Imports a batch; the outcome of each item, in order.
    pub async fn import(
        &self,
        ctx: &RequestContext,
        items: Vec<ImportItem>,
    ) -> Result<Vec<(i64, ImportOutcome)>, AppError> {
        let external_ids: Vec<String> = items
            .iter()
            .filter_map(|i| i.lead.external_id.clone())
            .collect();
        let existing =
            leads::existing_external_ids(self.store.reader(), &ctx.tenant, &external_ids).await?;
        let mut seen = HashSet::new();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut fresh = Vec::with_capacity(items.len());
        for item in items {
            let external_id = item.lead.external_id.clone().unwrap_or_default();
            if existing.contains(&external_id) || !seen.insert(external_id) {
                outcomes.push((item.index, ImportOutcome::AlreadyImported));
            } else {
                fresh.push(item);
            }
        }
        match self.write(&ctx.tenant, &mut fresh).await {
            Ok(()) => outcomes.extend(fresh.iter().map(|i| (i.index, ImportOutcome::Imported))),
            // A concurrent import took one of the external ids: fall back to one lead per
            // transaction so that only that lead is skipped.
            Err(AppError::AlreadyExists(_)) => {
                for item in fresh {
                    let index = item.index;
                    let mut single = vec![item];
                    let outcome = match self.write(&ctx.tenant, &mut single).await {
                        Ok(()) => ImportOutcome::Imported,
                        Err(AppError::AlreadyExists(_)) => ImportOutcome::AlreadyImported,
                        Err(e) => return Err(e),
                    };
                    outcomes.push((index, outcome));
                }
            }
            Err(e) => return Err(e),
        }
        outcomes.sort_by_key(|(index, _)| *index);
        Ok(outcomes)
    }

    async fn write(&self, tenant: &TenantId, items: &mut [ImportItem]) -> Result<(), AppError> {
        if items.is_empty() {
            return Ok(());
        }
        let tx = self.store.begin_write().await?;
        let result = write_in(&tx, tenant, items).await;
        match result {
            Ok(()) => {
                tx.commit().await?;
                Ok(())
            }
            Err(e) => {
                tx.rollback().await.ok();
                Err(e)
            }
        }
    }
}

async fn write_in(
    tx: &WriteTx,
    tenant: &TenantId,
    items: &mut [ImportItem],
) -> Result<(), AppError> {
    let changes: i64 = items.iter().map(|i| i.history.len() as i64).sum();
    let last = sequences::allocate(tx, tenant, changes).await?;
    let first = last - changes + 1;
    for (sequence, change) in (first..).zip(items.iter_mut().flat_map(|i| i.history.iter_mut())) {
        change.sequence = sequence;
    }
    let batch: Vec<Lead> = items.iter().map(|i| i.lead.clone()).collect();
    leads::insert_many(tx, tenant, &batch).await?;
    let all: Vec<StageChange> = items.iter().flat_map(|i| i.history.clone()).collect();
    history::insert_imported(tx, tenant, &all).await?;
    Ok(())
}
