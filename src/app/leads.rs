//! Lead use cases: create, read, list, update, delete, move.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::catalog::{CachedPipeline, PipelineCatalog};
use super::evaluation::CriteriaRunner;
use super::events::EventHub;
use super::forecast::LeadScorer;
use super::visits;
use super::{AppError, Clock, PreconditionViolation, RequestContext};
use crate::domain::filter::Filter;
use crate::domain::forecast::visits::{Aggregates, HistorySummary};
use crate::domain::history::StageChange;
use crate::domain::ids::{LeadId, PipelineId, RequestId, StageKey, TenantId};
use crate::domain::lead::{Lead, LeadField, LeadFields, MAX_LABELS};
use crate::domain::listing::{
    LeadCursor, OrderBy, PageCollector, SortKey, decode_page_token, encode_page_token,
};
use crate::domain::policy::MoveViolation;
use crate::domain::revision::{LeadRevision, RevisionKind};
use crate::store::pipelines::RowLock;
use crate::store::{
    Store, StoreError, WriteTx, history, idempotency, lead_query, leads, revisions, sequences,
};

/// How often a write that lost a race without an etag re-reads and tries again.
const MAX_ATTEMPTS: usize = 5;
pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 1000;

/// An idempotency key and a digest of the request it guards.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub request_id: RequestId,
    pub request_hash: String,
}

impl Idempotency {
    /// The key, with a digest of what the request asks for: a retry with the same key but a
    /// different request is refused instead of answered with the first request's result. The
    /// digest is stored with the key, so its input must stay the same across releases for
    /// retries that span an upgrade.
    pub fn new(request_id: Option<RequestId>, request: impl serde::Serialize) -> Option<Self> {
        let request_id = request_id?;
        let digest = Sha256::digest(serde_json::to_vec(&request).unwrap_or_default());
        Some(Self {
            request_id,
            request_hash: digest.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

#[derive(Clone)]
pub struct NewLead {
    pub fields: LeadFields,
    pub pipeline_id: PipelineId,
}

pub struct CreateLead {
    pub lead: NewLead,
    pub idempotency: Option<Idempotency>,
}

/// Leads read per query when listing the leads as of a past time.
const AS_OF_CHUNK: u64 = 1000;

/// A page from up to `page_size + 1` rows in order: the extra row only says a next page exists.
fn page_of(
    mut rows: Vec<Lead>,
    total_size: u64,
    page_size: u64,
    fingerprint: String,
    order: OrderBy,
) -> LeadPage {
    let next_page_token = if rows.len() as u64 > page_size {
        rows.truncate(page_size as usize);
        let last = rows.last().expect("page is not empty");
        encode_page_token(&LeadCursor {
            query: fingerprint,
            key: SortKey::of(last, order.field),
            last_id: last.id.to_string(),
        })
    } else {
        String::new()
    };
    LeadPage {
        leads: rows,
        next_page_token,
        total_size,
    }
}

/// Replaces the fields named by `mask` with those of `fields`.
pub struct UpdateLead {
    pub id: LeadId,
    pub fields: LeadFields,
    pub mask: Vec<LeadField>,
    pub expected_version: Option<i64>,
}

pub struct DeleteLead {
    pub id: LeadId,
    pub expected_version: Option<i64>,
}

pub struct CheckMove {
    pub id: LeadId,
    pub to: StageKey,
}

/// A page of one lead's history: its stage changes or its revisions.
pub struct LeadPageQuery {
    pub lead_id: LeadId,
    pub page_size: u64,
    pub page_token: String,
}

pub struct GetLead {
    pub id: LeadId,
    /// The lead as it stood then, from its revisions; None for the lead now.
    pub as_of: Option<DateTime<Utc>>,
}

/// A lead as read at a time: its state then, and when it was deleted if it was by then.
pub struct LeadAsOf {
    pub lead: Lead,
    pub delete_time: Option<DateTime<Utc>>,
}

impl From<Lead> for LeadAsOf {
    fn from(lead: Lead) -> Self {
        Self {
            lead,
            delete_time: None,
        }
    }
}

pub struct MoveCommand {
    pub id: LeadId,
    pub to: StageKey,
    pub expected_version: Option<i64>,
    pub idempotency: Option<Idempotency>,
    pub note: String,
}

pub struct LeadListQuery {
    pub filter: Option<Filter>,
    pub filter_text: String,
    pub order: OrderBy,
    pub page_size: u64,
    pub page_token: String,
    /// List the leads as they stood then, from their revisions.
    pub as_of: Option<DateTime<Utc>>,
}

pub struct LeadPage {
    pub leads: Vec<Lead>,
    pub next_page_token: String,
    pub total_size: u64,
}

#[derive(Clone)]
pub struct LeadService {
    store: Store,
    catalog: Arc<PipelineCatalog>,
    events: Arc<EventHub>,
    scorer: LeadScorer,
    criteria: Arc<CriteriaRunner>,
    clock: Clock,
}

impl LeadService {
    pub fn new(
        store: Store,
        catalog: Arc<PipelineCatalog>,
        events: Arc<EventHub>,
        scorer: LeadScorer,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            catalog,
            events,
            scorer,
            criteria: Arc::new(CriteriaRunner::default()),
            clock,
        }
    }

    pub fn events(&self) -> &Arc<EventHub> {
        &self.events
    }

    /// Creates the lead in the first stage of its pipeline, in one transaction with its first
    /// stage change. With a request id, a retry returns the lead the first call created, and a
    /// different request under the same id is refused. Refuses a pipeline that does not exist.
    pub async fn create(
        &self,
        ctx: &RequestContext,
        command: CreateLead,
    ) -> Result<Lead, AppError> {
        let CreateLead {
            lead: new,
            idempotency,
        } = command;
        const METHOD: &str = "CreateLead";
        if let Some(key) = &idempotency
            && let Some(lead) = self.replay(&ctx.tenant, key, METHOD).await?
        {
            return Ok(lead);
        }
        if self.store.writer_is_busy()
            && let Some(lead) = self
                .create_prepared(ctx, &new, idempotency.as_ref())
                .await?
        {
            self.events.committed(&ctx.tenant);
            return Ok(lead);
        }
        let tx = self.store.begin_write().await?;
        let step = self.create_in(&tx, ctx, new, idempotency.as_ref()).await;
        match settle(tx, step).await? {
            Step::Commit(lead) => {
                self.events.committed(&ctx.tenant);
                Ok(lead)
            }
            Step::Replay => {
                let key = idempotency.as_ref().expect("only a keyed call replays");
                self.replay_after_conflict(&ctx.tenant, key, METHOD).await
            }
            Step::Keep(lead) => Ok(lead),
            Step::Retry => Err(AppError::Aborted(
                "the lead could not be created; retry".into(),
            )),
        }
    }

    /// [`Self::create`] while another write holds SQLite's one writer, so that the call does
    /// its reading and checking while it would otherwise wait: the pipeline is read, and the
    /// lead built and checked against its entry criteria, before the writer is taken; the lead
    /// (and the request id with its answer) is then written only if the pipeline is still at
    /// the version read, so that the call holds the writer for one batch of statements. None
    /// when the pipeline is not stored yet (a tenant's default pipeline is created in the
    /// writer on first use), changed meanwhile, or the request id was taken meanwhile: the
    /// caller then creates the lead in the writer, or answers what the earlier call stored.
    async fn create_prepared(
        &self,
        ctx: &RequestContext,
        new: &NewLead,
        idempotency: Option<&Idempotency>,
    ) -> Result<Option<Lead>, AppError> {
        let Some(pipeline) = self
            .catalog
            .get_stored(
                self.store.reader(),
                &ctx.tenant,
                &new.pipeline_id,
                RowLock::None,
            )
            .await?
        else {
            return Ok(None);
        };
        let lead = self.new_lead(ctx, new.clone(), &pipeline).await?;
        let tx = self.store.begin_write_deferred().await?;
        let written = async {
            leads::insert_later_if_pipeline(&tx, &ctx.tenant, &lead, pipeline.version).await?;
            self.store_answer(&tx, &ctx.tenant, idempotency, "CreateLead", &lead)
                .await?;
            self.write_new_lead(&tx, ctx, &lead, &pipeline).await
        }
        .await;
        settle_prepared(tx, written.map(|()| lead)).await
    }

    /// The writes of [`Self::create`], in `tx`.
    async fn create_in(
        &self,
        tx: &WriteTx,
        ctx: &RequestContext,
        new: NewLead,
        idempotency: Option<&Idempotency>,
    ) -> Result<Step<Lead>, AppError> {
        const METHOD: &str = "CreateLead";
        if let Some(key) = idempotency
            && !reserve(tx, &ctx.tenant, key, METHOD, &self.clock).await?
        {
            return Ok(Step::Replay);
        }
        let pipeline = self
            .pipeline_for_new_lead(tx, &ctx.tenant, &new.pipeline_id)
            .await?;
        let lead = self.new_lead(ctx, new, &pipeline).await?;
        leads::insert_later(tx, &ctx.tenant, &lead).await?;
        complete(tx, &ctx.tenant, idempotency, &lead).await?;
        self.write_new_lead(tx, ctx, &lead, &pipeline).await?;
        Ok(Step::Commit(lead))
    }

    /// The new lead in the first stage of `pipeline`, scored; FAILED_PRECONDITION when it does
    /// not meet that stage's entry criteria.
    async fn new_lead(
        &self,
        ctx: &RequestContext,
        new: NewLead,
        pipeline: &CachedPipeline,
    ) -> Result<Lead, AppError> {
        let first = pipeline.compiled.definition().first_stage();
        let time = self.clock.now();
        let mut lead = Lead {
            id: LeadId::generate(),
            fields: new.fields,
            pipeline_id: new.pipeline_id,
            stage: first.key.clone(),
            win_probability: first.probability,
            create_time: time,
            update_time: time,
            stage_enter_time: time,
            close_time: None,
            version: 1,
            external_id: None,
            close_date_push_count: 0,
            first_expected_close_time: None,
        };
        lead.win_probability = self.scorer.probability(&ctx.tenant, pipeline, &lead);
        lead.track_expected_close(None);
        let first = first.key.clone();
        let unmet = self
            .criteria
            .check_entry(&pipeline.compiled, &lead, &first)
            .await?;
        if !unmet.is_empty() {
            return Err(refused(
                &format!(
                    "the lead does not meet the entry criteria of stage {:?}",
                    first.as_str()
                ),
                unmet,
            ));
        }
        Ok(lead)
    }

    /// What a new lead records besides its row: its first stage change, its revision, its event
    /// and its part of the stage aggregates.
    async fn write_new_lead(
        &self,
        tx: &WriteTx,
        ctx: &RequestContext,
        lead: &Lead,
        pipeline: &CachedPipeline,
    ) -> Result<(), AppError> {
        let time = lead.create_time;
        let change = StageChange {
            sequence: 0,
            lead_id: lead.id,
            pipeline_id: lead.pipeline_id.clone(),
            from_stage: None,
            to_stage: lead.stage.clone(),
            change_time: time,
            actor: ctx.actor.clone(),
            note: String::new(),
            imported: false,
        };
        let revision = LeadRevision::of(RevisionKind::Created, None, lead, &ctx.actor, time);
        let after = visits::of_history(lead, std::slice::from_ref(&change));
        visits::replace(
            tx,
            &ctx.tenant,
            &lead.pipeline_id,
            pipeline.compiled.definition(),
            &Default::default(),
            &after,
        )
        .await?;
        record(tx, &ctx.tenant, revision, None, Some(change)).await
    }

    /// Reads only; NOT_FOUND for a lead of another tenant as for one that does not exist.
    pub async fn get(&self, ctx: &RequestContext, id: &LeadId) -> Result<Lead, AppError> {
        leads::read(&self.store, &ctx.tenant, id)
            .await?
            .ok_or_else(|| AppError::lead_not_found(id))
    }

    /// One page in the order asked for, resumable with keyset paging: a page token is refused
    /// for a filter or order other than the one it was issued for. Page size: see
    /// [`super::page_size`].
    pub async fn list(
        &self,
        ctx: &RequestContext,
        query: LeadListQuery,
    ) -> Result<LeadPage, AppError> {
        // A token is honoured only for the same as_of: it names a position in that listing.
        let identity = match query.as_of {
            Some(as_of) => format!("{}\nas_of={}", query.filter_text, as_of.timestamp_micros()),
            None => query.filter_text.clone(),
        };
        let fingerprint = crate::domain::listing::query_fingerprint(&identity, &query.order);
        let after = if query.page_token.is_empty() {
            None
        } else {
            let cursor: LeadCursor = decode_page_token(&query.page_token)
                .map_err(|e| AppError::invalid("page_token", e))?;
            if cursor.query != fingerprint {
                return Err(AppError::invalid(
                    "page_token",
                    "was issued for a different filter or order_by; repeat the first request's filter and order_by",
                ));
            }
            Some((cursor.key, cursor.last_id))
        };
        let page_size = super::page_size(query.page_size);
        if let Some(as_of) = query.as_of {
            let collector = PageCollector::new(query.order, after, page_size as usize + 1);
            let (rows, total_size) = self
                .list_as_of(ctx, query.filter.as_ref(), as_of, collector)
                .await?;
            return Ok(page_of(
                rows,
                total_size,
                page_size,
                fingerprint,
                query.order,
            ));
        }
        let page = lead_query::LeadPage {
            filter: query.filter.as_ref(),
            order: query.order,
            after,
            limit: page_size + 1,
        };
        let reader = self.store.reader();
        let (rows, total_size) = tokio::try_join!(
            lead_query::list(reader, &ctx.tenant, &page),
            lead_query::count(reader, &ctx.tenant, query.filter.as_ref()),
        )?;
        Ok(page_of(
            rows,
            total_size,
            page_size,
            fingerprint,
            query.order,
        ))
    }

    /// The leads as they stood at `as_of` that pass `filter`, offered to `collector`: each
    /// lead's latest revision by then, read a chunk of leads at a time through the
    /// `(tenant_id, lead_id, change_time)` index, so memory stays at one chunk and one page.
    /// Leads deleted by then are left out. OUT_OF_RANGE before the retention watermark.
    async fn list_as_of(
        &self,
        ctx: &RequestContext,
        filter: Option<&Filter>,
        as_of: DateTime<Utc>,
        mut collector: PageCollector,
    ) -> Result<(Vec<Lead>, u64), AppError> {
        let at = self.revisions_kept_at(ctx, as_of).await?;
        let reader = self.store.reader();
        let mut after: Option<String> = None;
        loop {
            let chunk =
                revisions::leads_at(reader, &ctx.tenant, at, after.as_deref(), AS_OF_CHUNK).await?;
            let Some(last) = chunk.last() else {
                return Ok(collector.finish());
            };
            after = Some(last.lead.id.to_string());
            let full = chunk.len() as u64 == AS_OF_CHUNK;
            for revision in chunk {
                if revision.kind != RevisionKind::Deleted
                    && filter.is_none_or(|f| f.matches(&revision.lead))
                {
                    collector.offer(revision.lead);
                }
            }
            if !full {
                return Ok(collector.finish());
            }
        }
    }

    /// `as_of` in microseconds, once it is known to be neither in the future nor before the
    /// revisions retention keeps.
    async fn revisions_kept_at(
        &self,
        ctx: &RequestContext,
        as_of: DateTime<Utc>,
    ) -> Result<i64, AppError> {
        if as_of > self.clock.now() {
            return Err(AppError::invalid("as_of", "must not be in the future"));
        }
        super::revisions_kept_at(self.store.reader(), &ctx.tenant, "as_of", as_of).await
    }

    /// Applies the masked fields in one transaction and rescores the lead. With an etag the
    /// write happens only on that version (ABORTED otherwise); without one, a lost race is
    /// retried on the new version. A change that changes nothing writes nothing and keeps the
    /// etag. Refuses more labels than a lead may carry.
    pub async fn update(
        &self,
        ctx: &RequestContext,
        command: UpdateLead,
    ) -> Result<Lead, AppError> {
        let id = command.id;
        for _ in 0..MAX_ATTEMPTS {
            let tx = self.store.begin_write().await?;
            let step = self.update_in(&tx, ctx, &command).await;
            match settle(tx, step).await? {
                Step::Commit(updated) => {
                    self.events.committed(&ctx.tenant);
                    return Ok(updated);
                }
                Step::Keep(current) => return Ok(current),
                Step::Retry if command.expected_version.is_some() => return Err(stale(&id)),
                Step::Retry | Step::Replay => {}
            }
        }
        Err(contended(&id))
    }

    /// The writes of one attempt of [`Self::update`], in `tx`.
    async fn update_in(
        &self,
        tx: &WriteTx,
        ctx: &RequestContext,
        command: &UpdateLead,
    ) -> Result<Step<Lead>, AppError> {
        let current = self
            .find_expected(tx, &ctx.tenant, &command.id, command.expected_version)
            .await?;
        let mut updated = current.clone();
        for field in &command.mask {
            field.apply(&command.fields, &mut updated.fields);
        }
        if updated.fields.labels.len() > MAX_LABELS {
            return Err(AppError::invalid(
                "lead.labels",
                format!("at most {MAX_LABELS} labels are allowed"),
            ));
        }
        if updated.fields == current.fields {
            return Ok(Step::Keep(current));
        }
        let pipeline = self
            .pipeline_of(tx, &ctx.tenant, &current, RowLock::None)
            .await?;
        updated.win_probability = self.scorer.probability(&ctx.tenant, &pipeline, &updated);
        updated.track_expected_close(current.fields.expected_close_time);
        updated.version += 1;
        updated.update_time = self.clock.now();
        let labels_changed = updated.fields.labels != current.fields.labels;
        if !leads::update_if_version(tx, &ctx.tenant, &current, &updated, labels_changed).await? {
            return Ok(Step::Retry);
        }
        if updated.fields.amount != current.fields.amount {
            // A won lead's amount is what its win is booked at.
            let history = visits::stored_summary(&self.store, tx, &ctx.tenant, &current).await?;
            let delta =
                visits::rebooked(pipeline.compiled.definition(), &history, &current, &updated);
            visits::add(tx, &ctx.tenant, &current.pipeline_id, &delta).await?;
        }
        let revision = LeadRevision::of(
            RevisionKind::Updated,
            Some(&current),
            &updated,
            &ctx.actor,
            updated.update_time,
        );
        record(tx, &ctx.tenant, revision, Some(&current), None).await?;
        Ok(Step::Commit(updated))
    }

    /// Deletes the lead and its stage history in one transaction; with an etag, only that
    /// version. Its revisions are kept, ending with a `deleted` one that holds its last state.
    pub async fn delete(&self, ctx: &RequestContext, command: DeleteLead) -> Result<(), AppError> {
        let id = &command.id;
        for _ in 0..MAX_ATTEMPTS {
            let tx = self.store.begin_write().await?;
            let step = self.delete_in(&tx, ctx, &command).await;
            match settle(tx, step).await? {
                Step::Commit(()) => {
                    self.events.committed(&ctx.tenant);
                    return Ok(());
                }
                Step::Keep(()) => return Ok(()),
                Step::Retry if command.expected_version.is_some() => return Err(stale(id)),
                Step::Retry | Step::Replay => {}
            }
        }
        Err(contended(id))
    }

    /// The writes of one attempt of [`Self::delete`], in `tx`.
    async fn delete_in(
        &self,
        tx: &WriteTx,
        ctx: &RequestContext,
        command: &DeleteLead,
    ) -> Result<Step<()>, AppError> {
        let id = &command.id;
        let current = self
            .find_expected(tx, &ctx.tenant, id, command.expected_version)
            .await?;
        let pipeline = self
            .pipeline_of(tx, &ctx.tenant, &current, RowLock::None)
            .await?;
        let before = visits::stored(tx, &ctx.tenant, &current).await?;
        if !leads::delete(tx, &ctx.tenant, id, Some(current.version)).await? {
            return Ok(Step::Retry);
        }
        // Deleting a lead deletes its history, which the replay then no longer counts.
        visits::replace(
            tx,
            &ctx.tenant,
            &current.pipeline_id,
            pipeline.compiled.definition(),
            &before,
            &Default::default(),
        )
        .await?;
        let revision = LeadRevision::of(
            RevisionKind::Deleted,
            Some(&current),
            &current,
            &ctx.actor,
            self.clock.now(),
        );
        record(tx, &ctx.tenant, revision, Some(&current), None).await?;
        Ok(Step::Commit(()))
    }

    /// Moves the lead to another stage if the pipeline's rules and entry criteria allow it
    /// (FAILED_PRECONDITION with every unmet one otherwise), and records the stage change, in
    /// one transaction. Etag and idempotency as for [`Self::update`] and [`Self::create`].
    pub async fn move_lead(
        &self,
        ctx: &RequestContext,
        command: MoveCommand,
    ) -> Result<Lead, AppError> {
        const METHOD: &str = "MoveLead";
        let tenant = &ctx.tenant;
        if let Some(key) = &command.idempotency
            && let Some(lead) = self.replay(tenant, key, METHOD).await?
        {
            return Ok(lead);
        }
        if self.store.writer_is_busy()
            && let Some(moved) = self.move_prepared(ctx, &command).await?
        {
            self.events.committed(tenant);
            return Ok(moved);
        }
        for _ in 0..MAX_ATTEMPTS {
            let tx = self.store.begin_write().await?;
            let step = self.move_in(&tx, ctx, &command).await;
            match settle(tx, step).await? {
                Step::Commit(moved) => {
                    self.events.committed(tenant);
                    return Ok(moved);
                }
                Step::Replay => {
                    let key = command
                        .idempotency
                        .as_ref()
                        .expect("only a keyed call replays");
                    return self.replay_after_conflict(tenant, key, METHOD).await;
                }
                Step::Retry if command.expected_version.is_some() => {
                    return Err(stale(&command.id));
                }
                Step::Retry | Step::Keep(_) => {}
            }
        }
        Err(contended(&command.id))
    }

    /// [`Self::move_lead`] while another write holds SQLite's one writer, so that the call does
    /// its reading and checking while it would otherwise wait: the lead, its pipeline's version
    /// and its history are read from committed state, and the move checked and built, before
    /// the writer is taken; the lead (and the request id with its answer) is then written only
    /// if it and its pipeline are still at the versions read, so that the call holds the
    /// writer for one batch of statements. None when the lead is not found as committed, is
    /// not at the expected version, changed meanwhile (as when an earlier call of the same
    /// batch moved it), or the request id was taken meanwhile: the caller then moves it in the
    /// writer, which sees what that batch wrote, or answers what the earlier call stored.
    async fn move_prepared(
        &self,
        ctx: &RequestContext,
        command: &MoveCommand,
    ) -> Result<Option<Lead>, AppError> {
        let tenant = &ctx.tenant;
        let Some(read) = leads::read_with_history(&self.store, tenant, &command.id).await? else {
            return Ok(None);
        };
        let current = read.lead;
        if command
            .expected_version
            .is_some_and(|version| version != current.version)
        {
            return Ok(None);
        }
        let Some(version) = read.pipeline_version else {
            return Ok(None);
        };
        let Some(pipeline) = self
            .catalog
            .get_at_version(self.store.reader(), tenant, &current.pipeline_id, version)
            .await?
        else {
            return Ok(None);
        };
        let before = read.summary;
        let prepared = self
            .prepare_move(ctx, command, current, pipeline, before)
            .await?;
        let tx = self.store.begin_write_deferred().await?;
        let written = async {
            leads::update_later_if_versions(
                &tx,
                tenant,
                &prepared.current,
                &prepared.moved,
                prepared.pipeline.version,
            )
            .await?;
            let key = command.idempotency.as_ref();
            self.store_answer(&tx, tenant, key, "MoveLead", &prepared.moved)
                .await?;
            self.write_move(&tx, ctx, prepared).await
        }
        .await;
        settle_prepared(tx, written).await
    }

    /// The writes of one attempt of [`Self::move_lead`], in `tx`.
    async fn move_in(
        &self,
        tx: &WriteTx,
        ctx: &RequestContext,
        command: &MoveCommand,
    ) -> Result<Step<Lead>, AppError> {
        const METHOD: &str = "MoveLead";
        let tenant = &ctx.tenant;
        if let Some(key) = &command.idempotency
            && !reserve(tx, tenant, key, METHOD, &self.clock).await?
        {
            return Ok(Step::Replay);
        }
        let current = self
            .find_expected(tx, tenant, &command.id, command.expected_version)
            .await?;
        let pipeline = self
            .pipeline_of(tx, tenant, &current, RowLock::KeyShare)
            .await?;
        let before = visits::stored_summary(&self.store, tx, tenant, &current).await?;
        let prepared = self
            .prepare_move(ctx, command, current, pipeline, before)
            .await?;
        if !leads::update_if_version(tx, tenant, &prepared.current, &prepared.moved, false).await? {
            return Ok(Step::Retry);
        }
        complete(tx, tenant, command.idempotency.as_ref(), &prepared.moved).await?;
        Ok(Step::Commit(self.write_move(tx, ctx, prepared).await?))
    }

    /// Checks the move of `current` (whose history `before` summarises) against its pipeline's
    /// criteria and builds what it writes. FAILED_PRECONDITION names each unmet criterion.
    async fn prepare_move(
        &self,
        ctx: &RequestContext,
        command: &MoveCommand,
        current: Lead,
        pipeline: CachedPipeline,
        before: HistorySummary,
    ) -> Result<PreparedMove, AppError> {
        let tenant = &ctx.tenant;
        let plan = self
            .criteria
            .check_move(&pipeline.compiled, &current, &command.to)
            .await?
            .map_err(|violations| {
                refused(
                    &format!(
                        "lead {} cannot move from {:?} to {:?}",
                        current.id,
                        current.stage.as_str(),
                        command.to.as_str()
                    ),
                    violations,
                )
            })?;
        let time = self.clock.now();
        let mut moved = current.clone();
        moved.stage = plan.to.clone();
        moved.stage_enter_time = time;
        moved.update_time = time;
        moved.close_time = plan.closes.then_some(time);
        moved.win_probability = self.scorer.probability(tenant, &pipeline, &moved);
        moved.version += 1;
        let change = StageChange {
            sequence: 0,
            lead_id: moved.id,
            pipeline_id: moved.pipeline_id.clone(),
            from_stage: Some(plan.from),
            to_stage: plan.to,
            change_time: time,
            actor: ctx.actor.clone(),
            note: command.note.clone(),
            imported: false,
        };
        let revision = LeadRevision::of(
            RevisionKind::Moved,
            Some(&current),
            &moved,
            &ctx.actor,
            time,
        );
        let aggregates = visits::appended(pipeline.compiled.definition(), &before, &moved, &change);
        Ok(PreparedMove {
            current,
            moved,
            pipeline,
            change,
            revision,
            aggregates,
        })
    }

    /// What a move records besides the lead's row: its part of the stage aggregates, then its
    /// stage change, revision and event under the tenant's next sequence number.
    async fn write_move(
        &self,
        tx: &WriteTx,
        ctx: &RequestContext,
        prepared: PreparedMove,
    ) -> Result<Lead, AppError> {
        visits::add(
            tx,
            &ctx.tenant,
            &prepared.moved.pipeline_id,
            &prepared.aggregates,
        )
        .await?;
        record(
            tx,
            &ctx.tenant,
            prepared.revision,
            Some(&prepared.current),
            Some(prepared.change),
        )
        .await?;
        Ok(prepared.moved)
    }

    /// Stores the request id with the answer of the write it guards, in the write's last
    /// batch, for a write built before it took the writer.
    async fn store_answer(
        &self,
        tx: &WriteTx,
        tenant: &TenantId,
        key: Option<&Idempotency>,
        method: &str,
        lead: &Lead,
    ) -> Result<(), AppError> {
        let Some(key) = key else {
            return Ok(());
        };
        let response =
            serde_json::to_string(lead).map_err(|e| AppError::Internal(e.to_string()))?;
        idempotency::insert_completed_later(
            tx,
            tenant,
            idempotency::StoredKey {
                request_id: &key.request_id,
                method,
                request_hash: &key.request_hash,
                response: &response,
            },
            crate::store::to_micros(self.clock.now()),
        )
        .await?;
        Ok(())
    }

    /// What MoveLead would refuse, without moving. Empty means the move is allowed.
    pub async fn check_move(
        &self,
        ctx: &RequestContext,
        command: CheckMove,
    ) -> Result<Vec<MoveViolation>, AppError> {
        let (id, to) = (&command.id, &command.to);
        let reader = self.store.reader();
        let lead = leads::find(reader, &ctx.tenant, id)
            .await?
            .ok_or_else(|| AppError::lead_not_found(id))?;
        let pipeline = self
            .pipeline_of(reader, &ctx.tenant, &lead, RowLock::None)
            .await?;
        Ok(self
            .criteria
            .check_move(&pipeline.compiled, &lead, to)
            .await?
            .err()
            .unwrap_or_default())
    }

    /// The lead's stage changes, oldest first, with the token of the next page. Page size: see
    /// [`super::page_size`].
    pub async fn list_stage_changes(
        &self,
        ctx: &RequestContext,
        query: LeadPageQuery,
    ) -> Result<(Vec<StageChange>, String), AppError> {
        let (id, page_size, page_token) = (&query.lead_id, query.page_size, &query.page_token[..]);
        let after: i64 = if page_token.is_empty() {
            0
        } else {
            decode_page_token(page_token).map_err(|e| AppError::invalid("page_token", e))?
        };
        let reader = self.store.reader();
        if leads::find(reader, &ctx.tenant, id).await?.is_none() {
            return Err(AppError::lead_not_found(id));
        }
        let page_size = super::page_size(page_size);
        let mut changes =
            history::list_for_lead(reader, &ctx.tenant, id, after, page_size + 1).await?;
        let next = if changes.len() as u64 > page_size {
            changes.truncate(page_size as usize);
            encode_page_token(&changes.last().expect("page is not empty").sequence)
        } else {
            String::new()
        };
        Ok((changes, next))
    }

    /// GetLead: the lead now ([`Self::get`]) or as of a time ([`Self::get_as_of`]).
    pub async fn read(&self, ctx: &RequestContext, query: GetLead) -> Result<LeadAsOf, AppError> {
        match query.as_of {
            None => Ok(self.get(ctx, &query.id).await?.into()),
            Some(as_of) => self.get_as_of(ctx, &query.id, as_of).await,
        }
    }

    /// The lead as it stood at `as_of`: its latest revision up to then, read through the index
    /// on (tenant, lead, change time). NOT_FOUND before the lead existed; a lead deleted by then
    /// in its last state, with the deletion time. OUT_OF_RANGE when retention has removed
    /// revisions of that time, rather than an answer from an incomplete history.
    pub async fn get_as_of(
        &self,
        ctx: &RequestContext,
        id: &LeadId,
        as_of: DateTime<Utc>,
    ) -> Result<LeadAsOf, AppError> {
        let at = self.revisions_kept_at(ctx, as_of).await?;
        let revision = revisions::lead_at(self.store.reader(), &ctx.tenant, id, at)
            .await?
            .ok_or_else(|| AppError::lead_not_found(id))?;
        let delete_time = (revision.kind == RevisionKind::Deleted).then_some(revision.change_time);
        Ok(LeadAsOf {
            lead: revision.lead,
            delete_time,
        })
    }

    /// The lead's revisions, oldest first, with the token of the next page; also those of a
    /// deleted lead. NOT_FOUND for a lead that never existed (or another tenant's). Page size:
    /// see [`super::page_size`].
    pub async fn list_revisions(
        &self,
        ctx: &RequestContext,
        query: LeadPageQuery,
    ) -> Result<(Vec<LeadRevision>, String), AppError> {
        let id = &query.lead_id;
        let after: i64 = if query.page_token.is_empty() {
            0
        } else {
            decode_page_token(&query.page_token).map_err(|e| AppError::invalid("page_token", e))?
        };
        let page_size = super::page_size(query.page_size);
        let reader = self.store.reader();
        let page = revisions::RevisionPage {
            after,
            limit: page_size + 1,
        };
        let mut list = revisions::list(reader, &ctx.tenant, id, page).await?;
        if list.is_empty() && (after == 0 || !revisions::exists(reader, &ctx.tenant, id).await?) {
            return Err(AppError::lead_not_found(id));
        }
        let next = if list.len() as u64 > page_size {
            list.truncate(page_size as usize);
            encode_page_token(&list.last().expect("page is not empty").revision)
        } else {
            String::new()
        };
        Ok((list, next))
    }

    /// Every stage change of `ids` in the caller's tenant, oldest first per lead, in one read:
    /// the history column of an export page. Ids of other tenants' leads match nothing.
    pub async fn stage_changes_of(
        &self,
        ctx: &RequestContext,
        ids: &[LeadId],
    ) -> Result<Vec<StageChange>, AppError> {
        Ok(history::list_for_leads(self.store.reader(), &ctx.tenant, ids).await?)
    }

    /// The pipeline a new lead enters, read (and key-share locked) in the creating transaction,
    /// so that a concurrent update cannot remove the first stage under it.
    async fn pipeline_for_new_lead(
        &self,
        tx: &WriteTx,
        tenant: &TenantId,
        id: &PipelineId,
    ) -> Result<CachedPipeline, AppError> {
        self.catalog
            .get(tx, tenant, id, RowLock::KeyShare)
            .await?
            .ok_or_else(|| {
                AppError::invalid(
                    "lead.pipeline_id",
                    format!("pipeline {:?} does not exist", id.as_str()),
                )
            })
    }

    /// The lead's pipeline. Moves pass `RowLock::KeyShare` so that a concurrent update cannot
    /// remove the target stage between the check and the commit.
    async fn pipeline_of(
        &self,
        db: &impl crate::store::Connection,
        tenant: &TenantId,
        lead: &Lead,
        lock: RowLock,
    ) -> Result<CachedPipeline, AppError> {
        self.catalog
            .get(db, tenant, &lead.pipeline_id, lock)
            .await?
            .ok_or_else(|| {
                AppError::Internal(format!("lead {} refers to a missing pipeline", lead.id))
            })
    }

    async fn find_expected(
        &self,
        tx: &WriteTx,
        tenant: &TenantId,
        id: &LeadId,
        expected_version: Option<i64>,
    ) -> Result<Lead, AppError> {
        let lead = leads::find(tx, tenant, id)
            .await?
            .ok_or_else(|| AppError::lead_not_found(id))?;
        match expected_version {
            Some(version) if version != lead.version => Err(stale(id)),
            _ => Ok(lead),
        }
    }

    /// The stored result of an earlier call with the same key, if there is one.
    async fn replay(
        &self,
        tenant: &TenantId,
        key: &Idempotency,
        method: &str,
    ) -> Result<Option<Lead>, AppError> {
        let Some(stored) = idempotency::find(self.store.reader(), tenant, &key.request_id).await?
        else {
            return Ok(None);
        };
        if stored.method != method || stored.request_hash != key.request_hash {
            return Err(AppError::AlreadyExists(format!(
                "request_id {:?} was already used for a different request",
                key.request_id.as_str()
            )));
        }
        if stored.response.is_empty() {
            return Err(AppError::Aborted(format!(
                "a request with request_id {:?} is still in progress; retry",
                key.request_id.as_str()
            )));
        }
        serde_json::from_str(&stored.response)
            .map(Some)
            .map_err(|e| AppError::Internal(format!("stored response is unreadable: {e}")))
    }

    async fn replay_after_conflict(
        &self,
        tenant: &TenantId,
        key: &Idempotency,
        method: &str,
    ) -> Result<Lead, AppError> {
        self.replay(tenant, key, method).await?.ok_or_else(|| {
            AppError::Aborted(format!(
                "a request with request_id {:?} is still in progress; retry",
                key.request_id.as_str()
            ))
        })
    }
}

/// How one attempt of a write ended, for [`settle`].
enum Step<T> {
    /// Commit, then answer this.
    Commit(T),
    /// Nothing to write: roll back, then answer this.
    Keep(T),
    /// Another write changed the lead first: roll back, then try again on its new version.
    Retry,
    /// The idempotency key is taken: roll back, then answer what the earlier call stored.
    Replay,
}

/// A move checked and built, ready to write.
struct PreparedMove {
    current: Lead,
    moved: Lead,
    pipeline: CachedPipeline,
    change: StageChange,
    revision: LeadRevision,
    /// What the move changes in the stage aggregates.
    aggregates: Aggregates,
}

/// Ends the transaction of a write built before it took the writer: commits it and returns the
/// value, or rolls it back and returns None when another write had changed what it read first
/// (its conditional statement changed no row, or a row it inserts already exists), for the
/// caller to write again in the writer.
async fn settle_prepared<T>(
    tx: WriteTx,
    written: Result<T, AppError>,
) -> Result<Option<T>, AppError> {
    match settle(tx, written.map(Step::Commit)).await {
        Ok(Step::Commit(value)) => Ok(Some(value)),
        Ok(_) | Err(AppError::Aborted(_) | AppError::AlreadyExists(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Ends one attempt's transaction: commits a [`Step::Commit`], rolls back anything else. The
/// rollback returns once the writes the attempt read are settled, so an answer drawn from them
/// never reflects a write that did not commit.
async fn settle<T>(tx: WriteTx, step: Result<Step<T>, AppError>) -> Result<Step<T>, AppError> {
    match step {
        Ok(Step::Commit(value)) => {
            tx.commit().await?;
            Ok(Step::Commit(value))
        }
        other => {
            tx.rollback().await.ok();
            other
        }
    }
}

/// The write's last statement before its commit: takes the tenant's next sequence number and
/// appends the stage change (if any), the revision and the outbox event under it. The revision
/// is numbered with the lead's version after the write (one past it for a deletion, which
/// leaves the version as it was), which every earlier revision of the lead is below, so no
/// read of the revisions is needed. Everything else the write does comes before this, because
/// the tenant's sequence row stays locked from here until the commit.
async fn record(
    tx: &WriteTx,
    tenant: &TenantId,
    mut revision: LeadRevision,
    previous: Option<&Lead>,
    change: Option<StageChange>,
) -> Result<(), AppError> {
    revision.revision = match revision.kind {
        RevisionKind::Deleted => revision.lead.version + 1,
        _ => revision.lead.version,
    };
    sequences::append_sequenced(
        tx,
        tenant,
        sequences::Sequenced {
            change,
            revision,
            previous,
        },
    )
    .await?;
    Ok(())
}

/// Reserves the key in `tx`. False if an earlier (now committed) request holds it.
async fn reserve(
    tx: &WriteTx,
    tenant: &TenantId,
    key: &Idempotency,
    method: &str,
    clock: &Clock,
) -> Result<bool, AppError> {
    match idempotency::reserve(
        tx,
        tenant,
        &key.request_id,
        method,
        &key.request_hash,
        crate::store::to_micros(clock.now()),
    )
    .await
    {
        Ok(()) => Ok(true),
        Err(StoreError::UniqueViolation(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn complete(
    tx: &WriteTx,
    tenant: &TenantId,
    key: Option<&Idempotency>,
    lead: &Lead,
) -> Result<(), AppError> {
    if let Some(key) = key {
        let response =
            serde_json::to_string(lead).map_err(|e| AppError::Internal(e.to_string()))?;
        idempotency::complete(tx, tenant, &key.request_id, &response).await?;
    }
    Ok(())
}

fn refused(message: &str, violations: Vec<MoveViolation>) -> AppError {
    AppError::FailedPrecondition {
        message: message.to_owned(),
        violations: violations
            .into_iter()
            .map(PreconditionViolation::from)
            .collect(),
    }
}

fn stale(id: &LeadId) -> AppError {
    AppError::Aborted(format!(
        "lead {id} was changed since the given etag was read; read it again and retry"
    ))
}

fn contended(id: &LeadId) -> AppError {
    AppError::Aborted(format!("lead {id} is being changed concurrently; retry"))
}
