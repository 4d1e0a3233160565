//! GetPipelineChanges: what changed in the open pipeline between two times, read from the lead
//! revisions. The bucketing and the identity it keeps are in `crate::domain::changes`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ForecastService;
use super::model::stage_keys;
use crate::app::{AppError, RequestContext};
use crate::domain::changes::{
    Bucket, Changes, LeadWindow, Nanos, Selection, Snapshot, Tally, classify, to_nanos,
};
use crate::domain::ids::PipelineId;
use crate::domain::listing::{decode_page_token, encode_page_token};
use crate::domain::money::CurrencyCode;
use crate::domain::pipeline::{PipelineDefinition, StageKind};
use crate::store::analytics::changes::{
    self as store, ChangeScope, ChangedLead, RevisionState, read_snapshot,
};
use crate::store::to_micros;

/// Leads read and classified per statement: bounds the memory of one report, whatever the
/// window, while its time grows with the leads changed in it.
const CHUNK: u64 = 1000;

pub struct ChangesQuery {
    pub pipeline: PipelineId,
    pub start: DateTime<Utc>,
    /// None means now (or, with a page token, the end the first page was read at).
    pub end: Option<DateTime<Utc>>,
    pub currency: CurrencyCode,
    pub owner: Option<String>,
    pub bucket: Option<Bucket>,
    pub page_size: u64,
    pub page_token: String,
}

/// A lead of the requested bucket, with its state at both ends.
pub struct LeadChange {
    pub lead_id: String,
    pub amount: Nanos,
    pub before: Option<RevisionState>,
    pub after: RevisionState,
}

pub struct ChangesReport {
    pub pipeline: PipelineId,
    pub currency: CurrencyCode,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub changes: Changes,
    pub leads: Vec<LeadChange>,
    pub next_page_token: String,
}

/// Where the next page resumes, and the request it belongs to.
#[derive(Serialize, Deserialize)]
struct ChangesCursor {
    query: String,
    /// The end of the window of the first page, in µs, so that later pages read the same one.
    end: i64,
    after: String,
}

fn fingerprint(query: &ChangesQuery) -> String {
    format!(
        "{}|{}|{}|{:?}|{:?}",
        query.pipeline,
        to_micros(query.start),
        query.currency.as_str(),
        query.owner,
        query.bucket
    )
}

fn snapshot(definition: &PipelineDefinition, state: &RevisionState) -> Snapshot {
    let stage = definition
        .stages
        .iter()
        .position(|s| s.key.as_str() == state.stage)
        .map(|i| (i, definition.stages[i].kind));
    Snapshot {
        stage,
        currency: state.currency.clone(),
        amount: to_nanos(state.units, state.nanos),
        owner: state.owner.clone(),
        expected_close_time: state.expected_close_time,
        deleted: state.deleted,
    }
}

impl ForecastService {
    /// The open pipeline at `start` and at `end`, and the buckets of every lead changed in
    /// between, read in one snapshot so that they reconcile exactly; with a bucket, a page of
    /// its leads by id. Reads only. Its cost grows with the leads changed in the window, read
    /// `CHUNK` at a time; page size: see [`crate::app::page_size`].
    pub async fn pipeline_changes(
        &self,
        ctx: &RequestContext,
        query: ChangesQuery,
    ) -> Result<ChangesReport, AppError> {
        let query_key = fingerprint(&query);
        let cursor: Option<ChangesCursor> = if query.page_token.is_empty() {
            None
        } else {
            let cursor: ChangesCursor = decode_page_token(&query.page_token)
                .map_err(|e| AppError::invalid("page_token", e))?;
            let same_end = query.end.is_none_or(|end| to_micros(end) == cursor.end);
            if cursor.query != query_key || !same_end {
                return Err(AppError::invalid(
                    "page_token",
                    "belongs to a request with other fields",
                ));
            }
            Some(cursor)
        };
        let current = self.clock.now();
        let end = match (&cursor, query.end) {
            (Some(c), _) => crate::store::from_micros(c.end),
            (None, Some(end)) => end,
            (None, None) => current,
        };
        if end > current {
            return Err(AppError::invalid("end_time", "must not be in the future"));
        }
        if query.start >= end {
            return Err(AppError::invalid("start_time", "must be before end_time"));
        }
        let page_size = crate::app::page_size(query.page_size) as usize;
        let pipeline = self.pipeline(ctx, &query.pipeline).await?;
        let definition = pipeline.compiled.definition();
        let open_stages = stage_keys(definition, &[StageKind::Open]);
        let scope = ChangeScope {
            tenant: &ctx.tenant,
            pipeline: &query.pipeline,
            open_stages: &open_stages,
            currency: query.currency.as_str(),
            owner: query.owner.as_deref(),
        };
        let selection = Selection {
            currency: query.currency.as_str().to_owned(),
            owner: query.owner.clone(),
        };
        let window = (to_micros(query.start), to_micros(end));

        let tx = read_snapshot(self.store.reader()).await?;
        // Before the retention watermark a lead's state at the start may be gone, and the
        // report would quietly misplace it.
        crate::app::revisions_kept_at(&tx, &ctx.tenant, "start_time", query.start).await?;
        let tally = |(count, amount)| Tally { count, amount };
        let mut changes = Changes::new(
            tally(store::open_total(&tx, &scope, window.0).await?),
            tally(store::open_total(&tx, &scope, window.1).await?),
        );
        let resume_after = cursor.map(|c| c.after).unwrap_or_default();
        let mut leads = Vec::new();
        let mut more = false;
        let mut after = String::new();
        loop {
            let chunk = store::changed_leads(&tx, &scope, window, &after, CHUNK).await?;
            for lead in &chunk {
                let classified = classify(&selection, &lead_window(definition, lead));
                changes.add(&classified);
                let Some(bucket) = query.bucket else { continue };
                let Some(&(_, amount)) = classified.iter().find(|(b, _)| *b == bucket) else {
                    continue;
                };
                if lead.lead_id <= resume_after {
                    continue;
                }
                if leads.len() == page_size {
                    more = true;
                } else {
                    leads.push(LeadChange {
                        lead_id: lead.lead_id.clone(),
                        amount,
                        before: lead.start.clone(),
                        after: lead.end.clone(),
                    });
                }
            }
            match chunk.last() {
                Some(last) if chunk.len() as u64 == CHUNK => after = last.lead_id.clone(),
                _ => break,
            }
        }
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        if changes.reconciled_end() != changes.end {
            tracing::error!(
                pipeline = %query.pipeline,
                "pipeline changes do not reconcile: the revisions of a lead are out of order"
            );
        }
        let next_page_token = match leads.last() {
            Some(last) if more => encode_page_token(&ChangesCursor {
                query: query_key,
                end: window.1,
                after: last.lead_id.clone(),
            }),
            _ => String::new(),
        };
        Ok(ChangesReport {
            pipeline: query.pipeline,
            currency: query.currency,
            start: query.start,
            end,
            changes,
            leads,
            next_page_token,
        })
    }
}

fn lead_window(definition: &PipelineDefinition, lead: &ChangedLead) -> LeadWindow {
    LeadWindow {
        start: lead.start.as_ref().map(|s| snapshot(definition, s)),
        end: snapshot(definition, &lead.end),
        open_inside: lead.open_inside,
    }
}
