//! Bulk import of leads with their history, in batches: one transaction and a handful of
//! multi-row statements per batch, so that a million leads load in minutes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{Stream, StreamExt};

use super::catalog::PipelineCatalog;
use super::forecast::ForecastService;
use super::visits;
use super::{AppError, Clock, RequestContext};
use crate::domain::FieldViolation;
use crate::domain::forecast::visits::{Aggregates, contributions};
use crate::domain::history::StageChange;
use crate::domain::ids::{LeadId, PipelineId, TenantId};
use crate::domain::import::{
    ImportedChange, ImportedRevision, check_history, check_revisions, replay, validate_external_id,
};
use crate::domain::lead::{Lead, LeadFields};
use crate::domain::pipeline::PipelineDefinition;
use crate::domain::policy::CompiledPipeline;
use crate::domain::revision::LeadRevision;
use crate::store::pipelines::RowLock;
use crate::store::{Store, WriteTx, history, leads, revisions, sequences};

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

/// Refused leads listed in an import's summary; the count covers them all.
const MAX_REPORTED_ERRORS: usize = 1000;

/// One lead to import, as its source sent it: read, but not yet checked against its pipeline.
pub struct ImportRow {
    pub external_id: String,
    /// The lead, or the first of its fields that could not be read.
    pub parsed: Result<ParsedLead, FieldViolation>,
}

pub struct ParsedLead {
    pub fields: LeadFields,
    pub pipeline_id: PipelineId,
    /// Oldest first; empty means created now in the pipeline's first stage.
    pub history: Vec<ImportedChange>,
    /// Earlier changes of the fields, oldest first; `fields` are the fields as created.
    pub revisions: Vec<ImportedRevision>,
}

/// A refused lead: its position in the import, and the first reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportError {
    pub index: i64,
    pub external_id: String,
    /// Empty when the reason concerns the whole lead.
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportSummary {
    pub received: i64,
    pub imported: i64,
    pub already_imported: i64,
    /// Of those already imported, the ones whose stored lead differs from the row.
    pub differing: i64,
    pub failed: i64,
    /// The first refusals, in order.
    pub errors: Vec<ImportError>,
}

impl ImportSummary {
    fn refuse(&mut self, error: ImportError) {
        self.failed += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(error);
        }
    }
}

/// A validated lead ready to import; `history` sequences are assigned on insert.
pub struct ImportItem {
    pub index: i64,
    pub lead: Lead,
    pub history: Vec<StageChange>,
    /// The lead after each change of its history, numbered from 1.
    pub revisions: Vec<LeadRevision>,
    /// Whether the source gave the lead's history; without one it is created now, and its
    /// times say nothing about the source.
    pub timed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImportOutcome {
    Imported,
    AlreadyImported,
    /// Imported before, and the stored lead no longer matches this row.
    Differs,
    Failed(String),
}

#[derive(Clone)]
pub struct ImportService {
    store: Store,
    catalog: Arc<PipelineCatalog>,
    clock: Clock,
}

impl ImportService {
    pub fn new(store: Store, catalog: Arc<PipelineCatalog>, clock: Clock) -> Self {
        Self {
            store,
            catalog,
            clock,
        }
    }

    /// Imports every row of `rows`, in batches of one transaction each, then retrains the model
    /// of each pipeline that received leads and rescores its open leads. A lead whose external
    /// id was imported before is skipped, so a repeated import adds nothing; a bad lead is
    /// refused and reported while the others go in. Fails as a whole only when the stream or
    /// the database does, keeping the batches already committed.
    pub async fn import_and_rescore<E: From<AppError>>(
        &self,
        forecasts: &ForecastService,
        ctx: &RequestContext,
        rows: impl Stream<Item = Result<ImportRow, E>> + Unpin,
    ) -> Result<ImportSummary, E> {
        let (summary, pipelines) = self.import_rows(ctx, rows, Mode::Write).await?;
        self.finished(summary.imported as u64).await?;
        if summary.imported > 0 {
            for pipeline in pipelines {
                forecasts.rescore(ctx, &pipeline).await?;
            }
        }
        Ok(summary)
    }

    /// Checks every row as [`Self::import_and_rescore`] would, and writes nothing: `imported`
    /// counts the rows that would be imported.
    pub async fn dry_run<E: From<AppError>>(
        &self,
        ctx: &RequestContext,
        rows: impl Stream<Item = Result<ImportRow, E>> + Unpin,
    ) -> Result<ImportSummary, E> {
        Ok(self.import_rows(ctx, rows, Mode::Check).await?.0)
    }

    async fn import_rows<E: From<AppError>>(
        &self,
        ctx: &RequestContext,
        mut rows: impl Stream<Item = Result<ImportRow, E>> + Unpin,
        mode: Mode,
    ) -> Result<(ImportSummary, Vec<PipelineId>), E> {
        let mut summary = ImportSummary::default();
        let mut pipelines: HashMap<PipelineId, Option<Arc<CompiledPipeline>>> = HashMap::new();
        let mut batch = Vec::with_capacity(BATCH_SIZE);
        let mut index = 0i64;
        while let Some(row) = rows.next().await.transpose()? {
            summary.received += 1;
            match self.prepare(ctx, &mut pipelines, index, row).await? {
                Ok(item) => batch.push(item),
                Err(error) => summary.refuse(error),
            }
            if batch.len() == BATCH_SIZE {
                self.flush(ctx, &mut batch, &mut summary, mode).await?;
            }
            index += 1;
        }
        self.flush(ctx, &mut batch, &mut summary, mode).await?;
        let touched = pipelines
            .into_iter()
            .filter_map(|(id, compiled)| compiled.map(|_| id))
            .collect();
        Ok((summary, touched))
    }

    async fn flush(
        &self,
        ctx: &RequestContext,
        batch: &mut Vec<ImportItem>,
        summary: &mut ImportSummary,
        mode: Mode,
    ) -> Result<(), AppError> {
        if batch.is_empty() {
            return Ok(());
        }
        let externals: HashMap<i64, String> = batch
            .iter()
            .map(|i| (i.index, i.lead.external_id.clone().unwrap_or_default()))
            .collect();
        let imported_before = summary.imported as u64;
        let items = std::mem::take(batch);
        let outcomes = match mode {
            Mode::Write => self.import(ctx, items).await?,
            Mode::Check => self.check(ctx, items).await?.0,
        };
        for (index, outcome) in outcomes {
            match outcome {
                ImportOutcome::Imported => summary.imported += 1,
                ImportOutcome::AlreadyImported => summary.already_imported += 1,
                ImportOutcome::Differs => {
                    summary.already_imported += 1;
                    summary.differing += 1;
                }
                ImportOutcome::Failed(reason) => summary.refuse(ImportError {
                    index,
                    external_id: externals.get(&index).cloned().unwrap_or_default(),
                    field: String::new(),
                    reason,
                }),
            }
        }
        match mode {
            Mode::Write => self.grew(imported_before, summary.imported as u64).await,
            Mode::Check => Ok(()),
        }
    }

    /// Checks a row against its pipeline and builds the lead and its stage changes. The outer
    /// error fails the whole import; the inner one refuses just this lead.
    async fn prepare(
        &self,
        ctx: &RequestContext,
        pipelines: &mut HashMap<PipelineId, Option<Arc<CompiledPipeline>>>,
        index: i64,
        row: ImportRow,
    ) -> Result<Result<ImportItem, ImportError>, AppError> {
        let refuse = |field: &str, reason: String| ImportError {
            index,
            external_id: row.external_id.clone(),
            field: field.to_owned(),
            reason,
        };
        if let Err(reason) = validate_external_id(&row.external_id) {
            return Ok(Err(refuse("external_id", reason)));
        }
        let parsed = match row.parsed {
            Ok(parsed) => parsed,
            Err(violation) => return Ok(Err(refuse(&violation.field, violation.description))),
        };
        let pipeline_id = parsed.pipeline_id;
        if !pipelines.contains_key(&pipeline_id) {
            let compiled = self.pipeline(ctx, &pipeline_id).await?;
            pipelines.insert(pipeline_id.clone(), compiled);
        }
        let Some(Some(pipeline)) = pipelines.get(&pipeline_id) else {
            return Ok(Err(refuse(
                "lead.pipeline_id",
                format!("pipeline {:?} does not exist", pipeline_id.as_str()),
            )));
        };
        let definition = pipeline.definition();
        let now = self.clock.now();
        let timed = !parsed.history.is_empty();
        let history = if parsed.history.is_empty() {
            vec![ImportedChange {
                from_stage: None,
                to_stage: definition.first_stage().key.clone(),
                change_time: now,
                actor: String::new(),
                note: String::new(),
            }]
        } else {
            parsed.history
        };
        let timeline = match check_history(definition, &history, now) {
            Ok(timeline) => timeline,
            Err((field, reason)) => return Ok(Err(refuse(&field, reason))),
        };
        if let Err((field, reason)) = check_revisions(&parsed.revisions, timeline.create_time, now)
        {
            return Ok(Err(refuse(&field, reason)));
        }
        let id = LeadId::generate();
        let first_stage = definition.stage(&history[0].to_stage);
        let created = Lead {
            id,
            fields: parsed.fields,
            pipeline_id: pipeline_id.clone(),
            stage: history[0].to_stage.clone(),
            win_probability: first_stage.map_or(timeline.probability, |s| s.probability),
            create_time: timeline.create_time,
            update_time: timeline.create_time,
            stage_enter_time: timeline.create_time,
            close_time: first_stage
                .is_some_and(|s| s.kind.is_closed())
                .then_some(timeline.create_time),
            version: 1,
            external_id: Some(row.external_id.trim().to_owned()),
            close_date_push_count: 0,
            first_expected_close_time: None,
        };
        let (lead, revisions) =
            match replay(definition, created, &history, &parsed.revisions, &ctx.actor) {
                Ok(replayed) => replayed,
                Err((field, reason)) => return Ok(Err(refuse(&field, reason))),
            };
        let history = history
            .into_iter()
            .map(|change| StageChange {
                sequence: 0,
                lead_id: id,
                pipeline_id: pipeline_id.clone(),
                from_stage: change.from_stage,
                to_stage: change.to_stage,
                change_time: change.change_time,
                // Marked imported, the entry keeps who made the change in the source system;
                // the lead's revisions record the importing caller.
                actor: if change.actor.is_empty() {
                    ctx.actor.clone()
                } else {
                    change.actor
                },
                note: change.note,
                imported: true,
            })
            .collect();
        Ok(Ok(ImportItem {
            index,
            lead,
            history,
            revisions,
            timed,
        }))
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

    /// Sorts a batch into the leads imported before (with whether the stored lead still
    /// matches) and the fresh ones, which it returns to be written.
    async fn check(
        &self,
        ctx: &RequestContext,
        items: Vec<ImportItem>,
    ) -> Result<(Vec<(i64, ImportOutcome)>, Vec<ImportItem>), AppError> {
        let external_ids: Vec<String> = items
            .iter()
            .filter_map(|i| i.lead.external_id.clone())
            .collect();
        let existing =
            leads::find_by_external_ids(self.store.reader(), &ctx.tenant, &external_ids).await?;
        let mut seen = HashSet::new();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut fresh = Vec::with_capacity(items.len());
        for item in items {
            let external_id = item.lead.external_id.clone().unwrap_or_default();
            if let Some(stored) = existing.get(&external_id) {
                let outcome = if same_lead(stored, &item.lead, item.timed) {
                    ImportOutcome::AlreadyImported
                } else {
                    ImportOutcome::Differs
                };
                outcomes.push((item.index, outcome));
            } else if !seen.insert(external_id) {
                outcomes.push((item.index, ImportOutcome::AlreadyImported));
            } else {
                outcomes.push((item.index, ImportOutcome::Imported));
                fresh.push(item);
            }
        }
        Ok((outcomes, fresh))
    }

    /// Imports a batch; the outcome of each item, in order.
    pub async fn import(
        &self,
        ctx: &RequestContext,
        items: Vec<ImportItem>,
    ) -> Result<Vec<(i64, ImportOutcome)>, AppError> {
        let (checked, mut fresh) = self.check(ctx, items).await?;
        let mut outcomes: Vec<(i64, ImportOutcome)> = checked
            .into_iter()
            .filter(|(_, outcome)| *outcome != ImportOutcome::Imported)
            .collect();
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
        let changes: i64 = items.iter().map(|i| i.history.len() as i64).sum();
        let first = self.reserve_sequences(tenant, changes).await?;
        for (sequence, change) in (first..).zip(items.iter_mut().flat_map(|i| i.history.iter_mut()))
        {
            change.sequence = sequence;
        }
        let mut won = HashMap::new();
        for item in items.iter() {
            let id = &item.lead.pipeline_id;
            if !won.contains_key(id) {
                let pipeline = self
                    .catalog
                    .get(self.store.reader(), tenant, id, RowLock::None)
                    .await?
                    .ok_or_else(|| AppError::Internal(format!("pipeline {id} is missing")))?;
                won.insert(id.clone(), pipeline.compiled.definition().clone());
            }
        }
        let tx = self.store.begin_write().await?;
        let result = write_in(&tx, tenant, items, &won).await;
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

    /// Reserves `count` sequence numbers for imported stage changes, in a transaction of its
    /// own, and returns the first. The tenant's counter row stays locked only for this short
    /// transaction, not for the batch's inserts, so the tenant's interactive writes do not wait
    /// for whole import batches. Imported history is never streamed, so it needs unique,
    /// increasing numbers but not the commit order that streamed events need; a batch that then
    /// fails leaves a gap, which streams already expect where history was imported.
    async fn reserve_sequences(&self, tenant: &TenantId, count: i64) -> Result<i64, AppError> {
        let tx = self.store.begin_write().await?;
        match sequences::allocate(&tx, tenant, count).await {
            Ok(last) => {
                tx.commit().await?;
                Ok(last - count + 1)
            }
            Err(e) => {
                tx.rollback().await.ok();
                Err(e.into())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Write,
    /// Check and count, write nothing.
    Check,
}

/// Whether a stored lead is what importing `row` would give: the same fields, pipeline and
/// stage, and the same times when the row gives them.
fn same_lead(stored: &Lead, row: &Lead, timed: bool) -> bool {
    stored.fields == row.fields
        && stored.pipeline_id == row.pipeline_id
        && stored.stage == row.stage
        && (!timed
            || (stored.create_time == row.create_time
                && stored.stage_enter_time == row.stage_enter_time
                && stored.close_time == row.close_time))
}

async fn write_in(
    tx: &WriteTx,
    tenant: &TenantId,
    items: &[ImportItem],
    definitions: &HashMap<PipelineId, PipelineDefinition>,
) -> Result<(), AppError> {
    let batch: Vec<Lead> = items.iter().map(|i| i.lead.clone()).collect();
    leads::insert_many(tx, tenant, &batch).await?;
    let all: Vec<StageChange> = items.iter().flat_map(|i| i.history.clone()).collect();
    history::insert_imported(tx, tenant, &all).await?;
    let all: Vec<LeadRevision> = items.iter().flat_map(|i| i.revisions.clone()).collect();
    revisions::insert_many(tx, tenant, &all).await?;
    // One upsert of the summed aggregates per pipeline for the whole batch.
    let mut deltas: HashMap<&PipelineId, Aggregates> = Default::default();
    for item in items {
        let pipeline = &item.lead.pipeline_id;
        let definition = definitions
            .get(pipeline)
            .ok_or_else(|| AppError::Internal(format!("pipeline {pipeline} is missing")))?;
        let won = visits::won_stages(definition);
        let is_won = |s: &str| won.iter().any(|w| w == s);
        let lead = visits::of_history(&item.lead, &item.history);
        let total = deltas.entry(pipeline).or_default();
        for (key, count) in contributions(&lead, &is_won) {
            let e = total.entry(key).or_default();
            e.n += count.n;
            e.units += count.units;
            e.nanos += count.nanos;
        }
    }
    for (pipeline, delta) in deltas {
        crate::store::analytics::visits::add(tx, tenant, pipeline, &delta).await?;
    }
    Ok(())
}
