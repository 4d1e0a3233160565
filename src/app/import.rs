//! Bulk import of leads with their history, in batches: one transaction and a handful of
//! multi-row statements per batch, so that a million leads load in minutes. Rows of leads
//! imported before are, when the row asks for it, applied to the stored lead as revisions, one
//! transaction per lead.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};

use super::catalog::PipelineCatalog;
use super::events::EventHub;
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
use crate::domain::money::Money;
use crate::domain::pipeline::PipelineDefinition;
use crate::domain::policy::CompiledPipeline;
use crate::domain::reimport::{RowStages, RowState, Stored, UpdatePlan, plan_update};
use crate::domain::revision::{LeadRevision, amount_at};
use crate::store::pipelines::RowLock;
use crate::store::{Connection, Store, WriteTx, history, leads, revisions, sequences};

/// How often the update of one lead re-reads it and tries again after losing a race with
/// another write of it.
const MAX_UPDATE_ATTEMPTS: usize = 5;
/// Clock skew tolerated in a row's modification time, as for its history.
const FUTURE_TOLERANCE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Leads per transaction: large enough to amortise round-trips, small enough to stay within
/// both backends' bind-parameter limits.
pub const BATCH_SIZE: usize = 250;

/// Most leads per transaction on SQLite, where a transaction holds the database's one writer.
pub const SQLITE_CHUNK: usize = 50;

/// How long one import transaction may hold SQLite's writer: about one commit's time, so that
/// the interactive calls queued behind a chunk wait about as long as behind one more commit.
/// Chunks shrink or grow, up to [`SQLITE_CHUNK`], towards it. PostgreSQL writes a whole batch in
/// one transaction, which holds no lock that interactive writes wait for.
pub const SQLITE_CHUNK_BUDGET: Duration = Duration::from_millis(4);

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
    /// Whether a lead imported before with this external id is brought up to date with the row
    /// (as revisions) rather than left as it is.
    pub update_existing: bool,
}

pub struct ParsedLead {
    pub fields: LeadFields,
    pub pipeline_id: PipelineId,
    /// Oldest first; empty means created now in the pipeline's first stage.
    pub history: Vec<ImportedChange>,
    /// Earlier changes of the fields, oldest first; `fields` are the fields as created.
    pub revisions: Vec<ImportedRevision>,
    /// When the source last changed the lead, if it says: the time of an update's field change.
    pub modified: Option<DateTime<Utc>>,
    /// The history is not the source's but made up from the lead's stage and its times (a CSV
    /// file without a history): an update reads only the current stage from it.
    pub history_derived: bool,
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
    /// Rows whose lead was imported before and that left it as it is.
    pub already_imported: i64,
    /// Rows that brought a lead imported before up to date.
    pub updated: i64,
    /// Of those already imported, the ones whose stored lead differs from the row: rows that
    /// did not ask for updates.
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
    /// With updates asked for: the row as the source has the lead now, and the pipeline.
    pub update: Option<(RowState, Arc<CompiledPipeline>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImportOutcome {
    Imported,
    AlreadyImported,
    /// Imported before, and the stored lead no longer matches this row.
    Differs,
    /// Imported before, and brought up to date with this row.
    Updated,
    /// Refused: the field (empty for the whole lead) and why.
    Failed(String, String),
}

#[derive(Clone)]
pub struct ImportService {
    store: Store,
    catalog: Arc<PipelineCatalog>,
    events: Arc<EventHub>,
    clock: Clock,
}

impl ImportService {
    pub fn new(
        store: Store,
        catalog: Arc<PipelineCatalog>,
        events: Arc<EventHub>,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            catalog,
            events,
            clock,
        }
    }

    /// Imports every row of `rows`, in batches of one transaction each, then retrains the model
    /// of each pipeline that received leads and rescores its open leads. A lead whose external
    /// id was imported before is skipped, so a repeated import adds nothing; a bad lead is
    /// refused and reported while the others go in. A row that asks for updates brings the lead
    /// imported before up to date instead (see [`Self::update_one`]). Fails as a whole only when
    /// the stream or the database does, keeping the batches and updates already committed.
    pub async fn import_and_rescore<E: From<AppError>>(
        &self,
        forecasts: &ForecastService,
        ctx: &RequestContext,
        rows: impl Stream<Item = Result<ImportRow, E>> + Unpin,
    ) -> Result<ImportSummary, E> {
        let (summary, pipelines) = self.import_rows(ctx, rows, Mode::Write).await?;
        let large = summary.imported as u64 >= STATISTICS_REFRESH_AT[0];
        if large {
            // For the rescore's retraining, which reads all of the pipeline's history.
            self.store
                .refresh_statistics()
                .await
                .map_err(AppError::from)?;
        }
        if summary.imported > 0 || summary.updated > 0 {
            for pipeline in pipelines {
                forecasts.rescore(ctx, &pipeline).await?;
            }
        }
        if large {
            // After the rescore, which rewrites the open leads' rows: vacuumed before it, their
            // pages, those the reports' index-only scans read, would lose their all-visible mark.
            self.store
                .settle_after_import()
                .await
                .map_err(AppError::from)?;
        }
        Ok(summary)
    }

    /// Checks every row as [`Self::import_and_rescore`] would, and writes nothing: `imported`
    /// and `updated` count the rows that would be imported and update a lead.
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
            Mode::Check => {
                let (mut outcomes, _, stale) = self.check(ctx, items).await?;
                for (item, id) in stale {
                    outcomes.push((item.index, self.update_one(ctx, &item, id, mode).await?));
                }
                outcomes.sort_by_key(|(index, _)| *index);
                outcomes
            }
        };
        for (index, outcome) in outcomes {
            match outcome {
                ImportOutcome::Imported => summary.imported += 1,
                ImportOutcome::AlreadyImported => summary.already_imported += 1,
                ImportOutcome::Differs => {
                    summary.already_imported += 1;
                    summary.differing += 1;
                }
                ImportOutcome::Updated => summary.updated += 1,
                ImportOutcome::Failed(field, reason) => summary.refuse(ImportError {
                    index,
                    external_id: externals.get(&index).cloned().unwrap_or_default(),
                    field,
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
        if let Some(modified) = parsed.modified
            && modified > now + FUTURE_TOLERANCE
        {
            return Ok(Err(refuse("lead.update_time", "is in the future".into())));
        }
        let timed = !parsed.history.is_empty();
        let row_stages = match parsed.history.last() {
            _ if !row.update_existing => RowStages::Unknown,
            None => RowStages::Unknown,
            Some(last) if parsed.history_derived => RowStages::Current {
                stage: last.to_stage.clone(),
                since: (parsed.history.len() > 1).then_some(last.change_time),
            },
            Some(_) => RowStages::History(parsed.history.clone()),
        };
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
        let update = row.update_existing.then(|| {
            let state = RowState {
                stages: row_stages,
                revisions: parsed.revisions,
                fields: lead.fields.clone(),
                modified: parsed.modified,
            };
            (state, pipeline.clone())
        });
        let history = history
            .into_iter()
            .map(|change| imported_change(change, id, &pipeline_id, &ctx.actor))
            .collect();
        Ok(Ok(ImportItem {
            index,
            lead,
            history,
            revisions,
            timed,
            update,
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

    /// Sorts a batch into the leads imported before (with whether the stored lead still
    /// matches), the fresh ones, which it returns to be written, and the rows that differ from
    /// the lead imported before and ask for it to be updated, with its id.
    #[allow(clippy::type_complexity)]
    async fn check(
        &self,
        ctx: &RequestContext,
        items: Vec<ImportItem>,
    ) -> Result<
        (
            Vec<(i64, ImportOutcome)>,
            Vec<ImportItem>,
            Vec<(ImportItem, LeadId)>,
        ),
        AppError,
    > {
        let external_ids: Vec<String> = items
            .iter()
            .filter_map(|i| i.lead.external_id.clone())
            .collect();
        let existing =
            leads::find_by_external_ids(self.store.reader(), &ctx.tenant, &external_ids).await?;
        let mut seen = HashSet::new();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut fresh = Vec::with_capacity(items.len());
        let mut stale = Vec::new();
        for item in items {
            let external_id = item.lead.external_id.clone().unwrap_or_default();
            if let Some(stored) = existing.get(&external_id) {
                if same_lead(stored, &item.lead, item.timed) {
                    outcomes.push((item.index, ImportOutcome::AlreadyImported));
                } else if item.update.is_some() {
                    stale.push((item, stored.id));
                } else {
                    outcomes.push((item.index, ImportOutcome::Differs));
                }
            } else if !seen.insert(external_id) {
                outcomes.push((item.index, ImportOutcome::AlreadyImported));
            } else {
                outcomes.push((item.index, ImportOutcome::Imported));
                fresh.push(item);
            }
        }
        Ok((outcomes, fresh, stale))
    }

    /// Imports a batch, then updates the leads of the rows that ask for it; the outcome of each
    /// item, in order. The batch's fresh leads are written [`ImportService::chunk`] at a time,
    /// each chunk its own transaction: on SQLite a chunk holds the one writer, and interactive
    /// calls queued behind it wait for one chunk, not a batch.
    pub async fn import(
        &self,
        ctx: &RequestContext,
        items: Vec<ImportItem>,
    ) -> Result<Vec<(i64, ImportOutcome)>, AppError> {
        let (checked, mut fresh, stale) = self.check(ctx, items).await?;
        let mut outcomes: Vec<(i64, ImportOutcome)> = checked
            .into_iter()
            .filter(|(_, outcome)| *outcome != ImportOutcome::Imported)
            .collect();
        self.number(&ctx.tenant, &mut fresh).await?;
        let mut chunks = Chunks::new(self.store.has_one_writer());
        let mut rest = &fresh[..];
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(chunks.size.min(rest.len()));
            rest = after;
            let written = self.write(&ctx.tenant, chunk).await;
            if let Ok(held) = written {
                chunks.took(chunk.len(), held);
            }
            match written {
                Ok(_) => outcomes.extend(chunk.iter().map(|i| (i.index, ImportOutcome::Imported))),
                // A concurrent import took one of the external ids: fall back to one lead per
                // transaction so that only that lead is skipped.
                Err(AppError::AlreadyExists(_)) => {
                    for item in chunk {
                        let outcome =
                            match self.write(&ctx.tenant, std::slice::from_ref(item)).await {
                                Ok(_) => ImportOutcome::Imported,
                                Err(AppError::AlreadyExists(_)) => ImportOutcome::AlreadyImported,
                                Err(e) => return Err(e),
                            };
                        outcomes.push((item.index, outcome));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        for (item, id) in stale {
            let outcome = self.update_one(ctx, &item, id, Mode::Write).await?;
            outcomes.push((item.index, outcome));
        }
        outcomes.sort_by_key(|(index, _)| *index);
        Ok(outcomes)
    }

    /// Brings the lead `id`, imported before, up to date with `item`'s row, in one transaction:
    /// the stage changes its history adds after the stored one (marked imported, with the
    /// source's actor) and its field changes dated after the lead's last revision, each a
    /// revision at its time, then one `updated` revision with the row's fields if they still
    /// differ, at the row's modification time or now; every step with its outbox event, so
    /// streams see them. The lead is written at most once, and either every step of the row is
    /// committed or none. A row whose history or earlier field changes disagree with what is
    /// stored is refused (`Failed`) and nothing is written: stored history is never rewritten.
    /// Entry criteria and movement rules are not checked, as for imported history. In
    /// [`Mode::Check`] plans the same way from the reader and writes nothing.
    async fn update_one(
        &self,
        ctx: &RequestContext,
        item: &ImportItem,
        id: LeadId,
        mode: Mode,
    ) -> Result<ImportOutcome, AppError> {
        if mode == Mode::Check {
            let planned = self.plan(self.store.reader(), ctx, item, &id).await?;
            return Ok(match planned {
                Planned::Plan(_, plan) if plan.steps.is_empty() => ImportOutcome::AlreadyImported,
                Planned::Plan(..) => ImportOutcome::Updated,
                Planned::Refused(outcome) => outcome,
            });
        }
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let tx = self.store.begin_write().await?;
            let step = self.update_in(&tx, ctx, item, &id).await;
            match step {
                Ok(Some(ImportOutcome::Updated)) => {
                    tx.commit().await?;
                    self.events.committed(&ctx.tenant);
                    return Ok(ImportOutcome::Updated);
                }
                Ok(Some(outcome)) => {
                    tx.rollback().await.ok();
                    return Ok(outcome);
                }
                Ok(None) => {
                    tx.rollback().await.ok();
                }
                Err(e) => {
                    tx.rollback().await.ok();
                    return Err(e);
                }
            }
        }
        Err(AppError::Aborted(format!(
            "lead {id} is being changed concurrently; import the row again"
        )))
    }

    /// The writes of one attempt of [`Self::update_one`], in `tx`; None when another write of
    /// the lead won the race.
    async fn update_in(
        &self,
        tx: &WriteTx,
        ctx: &RequestContext,
        item: &ImportItem,
        id: &LeadId,
    ) -> Result<Option<ImportOutcome>, AppError> {
        let tenant = &ctx.tenant;
        let (stored, plan) = match self.plan(tx, ctx, item, id).await? {
            Planned::Plan(stored, plan) => (stored, plan),
            Planned::Refused(outcome) => return Ok(Some(outcome)),
        };
        if plan.steps.is_empty() {
            return Ok(Some(ImportOutcome::AlreadyImported));
        }
        let labels_changed = plan.lead.fields.labels != stored.fields.labels;
        if !leads::update_if_version(tx, tenant, &stored, &plan.lead, labels_changed).await? {
            return Ok(None);
        }
        // The stage aggregates follow the added stage changes and the amount the row leaves.
        let before = visits::stored(tx, tenant, &stored).await?;
        let mut after = before.clone();
        visits::set_amount(&mut after, &plan.lead);
        let mut added = Vec::new();
        for step in plan.steps {
            let change = step
                .change
                .map(|change| imported_change(change, *id, &plan.lead.pipeline_id, &ctx.actor));
            if let Some(change) = &change {
                after.changes.push(visits::change(change));
            }
            added.push((change, step.revision, step.previous));
        }
        if let Some((_, pipeline)) = &item.update {
            visits::replace(
                tx,
                tenant,
                &plan.lead.pipeline_id,
                pipeline.definition(),
                &before,
                &after,
            )
            .await?;
        }
        for (change, revision, previous) in added {
            // Numbered as it is appended, so the tenant's sequence row is held from the first
            // step to the commit, as for an interactive write.
            sequences::append_sequenced(
                tx,
                tenant,
                sequences::Sequenced {
                    change,
                    revision,
                    previous: Some(&previous),
                },
            )
            .await?;
        }
        Ok(Some(ImportOutcome::Updated))
    }

    /// Reads the stored lead, its history and revisions through `db` and plans its update.
    async fn plan(
        &self,
        db: &impl Connection,
        ctx: &RequestContext,
        item: &ImportItem,
        id: &LeadId,
    ) -> Result<Planned, AppError> {
        let failed = |field: &str, reason: String| {
            Planned::Refused(ImportOutcome::Failed(field.into(), reason))
        };
        let Some((row, pipeline)) = &item.update else {
            return Ok(Planned::Refused(ImportOutcome::Differs));
        };
        let Some(stored) = leads::find(db, &ctx.tenant, id).await? else {
            return Ok(failed(
                "external_id",
                "its lead was deleted while the import ran".into(),
            ));
        };
        if stored.pipeline_id != item.lead.pipeline_id {
            return Ok(failed(
                "lead.pipeline_id",
                format!(
                    "the lead imported before is in pipeline {:?}: an update does not move a \
                     lead to another pipeline",
                    stored.pipeline_id.as_str()
                ),
            ));
        }
        let all = i64::MAX as u64;
        let history = history::list_for_lead(db, &ctx.tenant, id, 0, all).await?;
        let page = revisions::RevisionPage {
            after: 0,
            limit: all,
        };
        let kept = revisions::list(db, &ctx.tenant, id, page).await?;
        let view = Stored {
            lead: &stored,
            history: &history,
            revisions: &kept,
        };
        let now = self.clock.now();
        Ok(
            match plan_update(pipeline.definition(), &view, row, &ctx.actor, now) {
                Ok(plan) => Planned::Plan(Box::new(stored), Box::new(plan)),
                Err((field, reason)) => failed(&field, reason),
            },
        )
    }

    /// Numbers the imported history of `items` with sequence numbers reserved for it.
    async fn number(&self, tenant: &TenantId, items: &mut [ImportItem]) -> Result<(), AppError> {
        let changes: i64 = items.iter().map(|i| i.history.len() as i64).sum();
        if changes == 0 {
            return Ok(());
        }
        let first = self.reserve_sequences(tenant, changes).await?;
        for (sequence, change) in (first..).zip(items.iter_mut().flat_map(|i| i.history.iter_mut()))
        {
            change.sequence = sequence;
        }
        Ok(())
    }

    /// Writes already numbered leads in one transaction: all of them or none. Returns how long
    /// its statements held the writer (on SQLite, the commit is shared with the calls queued
    /// meanwhile and does not hold it).
    async fn write(&self, tenant: &TenantId, items: &[ImportItem]) -> Result<Duration, AppError> {
        if items.is_empty() {
            return Ok(Duration::ZERO);
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
        let started = Instant::now();
        let result = write_in(&tx, tenant, items, &won).await;
        let held = started.elapsed();
        match result {
            Ok(()) => {
                tx.commit().await?;
                Ok(held)
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

/// A lead's update, planned; or the row's outcome without one.
enum Planned {
    Plan(Box<Lead>, Box<UpdatePlan>),
    Refused(ImportOutcome),
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
    let all: Vec<(&StageChange, Option<&Money>)> = items
        .iter()
        .flat_map(|i| {
            i.history
                .iter()
                .map(|c| (c, amount_at(&i.revisions, c.change_time)))
        })
        .collect();
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

/// An imported stage change as stored: marked imported, it keeps who made the change in the
/// source system (the importing caller when the source names no one); the lead's revisions
/// record the importing caller.
fn imported_change(
    change: ImportedChange,
    lead: LeadId,
    pipeline: &PipelineId,
    caller: &str,
) -> StageChange {
    StageChange {
        sequence: 0,
        lead_id: lead,
        pipeline_id: pipeline.clone(),
        from_stage: change.from_stage,
        to_stage: change.to_stage,
        change_time: change.change_time,
        actor: if change.actor.is_empty() {
            caller.to_owned()
        } else {
            change.actor
        },
        note: change.note,
        imported: true,
    }
}

/// The size of the next import transaction. On SQLite it follows [`SQLITE_CHUNK_BUDGET`]: the
/// next chunk is sized from the time the last one took per lead.
struct Chunks {
    size: usize,
    budgeted: bool,
}

impl Chunks {
    fn new(one_writer: bool) -> Self {
        Self {
            size: if one_writer { SQLITE_CHUNK } else { BATCH_SIZE },
            budgeted: one_writer,
        }
    }

    fn took(&mut self, leads: usize, elapsed: Duration) {
        if !self.budgeted || leads == 0 {
            return;
        }
        let per_lead = elapsed.as_secs_f64() / leads as f64;
        let fits = if per_lead > 0.0 {
            (SQLITE_CHUNK_BUDGET.as_secs_f64() / per_lead) as usize
        } else {
            SQLITE_CHUNK
        };
        // At most doubling per chunk, so one fast chunk does not undo the budget.
        self.size = fits.clamp(1, SQLITE_CHUNK).min(self.size * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_chunks_follow_the_budget_and_postgres_batches_do_not() {
        let mut chunks = Chunks::new(true);
        assert_eq!(chunks.size, SQLITE_CHUNK);
        // Ten times the budget for 50 leads: the next chunk fits the budget.
        chunks.took(50, SQLITE_CHUNK_BUDGET * 10);
        assert_eq!(chunks.size, 5);
        // Fast chunks grow back, at most doubling each time, never past the cap.
        chunks.took(5, Duration::from_micros(1));
        assert_eq!(chunks.size, 10);
        for _ in 0..10 {
            chunks.took(chunks.size, Duration::from_micros(1));
        }
        assert_eq!(chunks.size, SQLITE_CHUNK);
        // A lead slower than the whole budget still gets written, one per chunk.
        chunks.took(1, SQLITE_CHUNK_BUDGET * 3);
        assert_eq!(chunks.size, 1);

        let mut batches = Chunks::new(false);
        batches.took(BATCH_SIZE, Duration::from_secs(10));
        assert_eq!(batches.size, BATCH_SIZE);
    }
}
