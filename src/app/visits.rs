//! Keeps the stage aggregates (`store::analytics::visits`) in step with each write of a lead:
//! what the lead's history added before the write is taken away and what it adds after is
//! added, in the write's transaction. A move or a new amount needs only a summary of the
//! history (`HistorySummary`), built as its rows are read, and then upserts the rows that
//! change.

use crate::app::AppError;
use crate::domain::forecast::visits::{
    self as domain, Aggregates, Change, HistorySummary, LeadVisits, contributions, difference,
};
use crate::domain::history::StageChange;
use crate::domain::ids::{PipelineId, TenantId};
use crate::domain::lead::Lead;
use crate::domain::pipeline::{PipelineDefinition, StageKind};
use crate::store::analytics::visits as store;
use crate::store::{Connection, Store, WriteTx};

/// The won stages of a pipeline, which decide a lead's first win.
pub fn won_stages(definition: &PipelineDefinition) -> Vec<String> {
    definition
        .stages
        .iter()
        .filter(|s| s.kind == StageKind::Won)
        .map(|s| s.key.to_string())
        .collect()
}

/// Whether a stage is won in `definition`.
fn won_in(definition: &PipelineDefinition) -> impl Fn(&str) -> bool {
    let won = won_stages(definition);
    move |stage| won.iter().any(|w| w == stage)
}

/// The lead's stored history in its pipeline, booked at `lead`'s amount.
pub async fn stored(
    db: &impl Connection,
    tenant: &TenantId,
    lead: &Lead,
) -> Result<LeadVisits, AppError> {
    let mut found = LeadVisits {
        changes: store::lead_history(db, tenant, &lead.pipeline_id, &lead.id.to_string()).await?,
        ..LeadVisits::default()
    };
    set_amount(&mut found, lead);
    Ok(found)
}

/// The lead's stored history in its pipeline as `tx` sees it, summarised for a change appended
/// to it.
pub async fn stored_summary(
    store: &Store,
    tx: &WriteTx,
    tenant: &TenantId,
    lead: &Lead,
) -> Result<HistorySummary, AppError> {
    Ok(crate::store::leads::history_summary_for_write(store, tx, tenant, lead).await?)
}

/// What `change`, appended to the history `before` summarises, changes in the pipeline's
/// aggregates; `lead` gives the amount a win is booked at.
pub fn appended(
    definition: &PipelineDefinition,
    before: &HistorySummary,
    lead: &Lead,
    change: &StageChange,
) -> Aggregates {
    let is_won = won_in(definition);
    domain::appended(before, &amount_of(lead), &self::change(change), &is_won)
}

/// What booking the win of a lead whose history `summary` summarises at `after`'s amount instead
/// of `before`'s changes in the pipeline's aggregates.
pub fn rebooked(
    definition: &PipelineDefinition,
    summary: &HistorySummary,
    before: &Lead,
    after: &Lead,
) -> Aggregates {
    let is_won = won_in(definition);
    domain::rebooked(summary, &amount_of(before), &amount_of(after), &is_won)
}

/// Adds `delta` to the pipeline's aggregates in the write's last batch.
pub async fn add(
    tx: &WriteTx,
    tenant: &TenantId,
    pipeline: &PipelineId,
    delta: &Aggregates,
) -> Result<(), AppError> {
    store::add_later(tx, tenant, pipeline, delta).await?;
    Ok(())
}

fn amount_of(lead: &Lead) -> LeadVisits {
    let mut visits = LeadVisits::default();
    set_amount(&mut visits, lead);
    visits
}

/// The visits of a history that is not stored yet (a new or imported lead).
pub fn of_history(lead: &Lead, history: &[StageChange]) -> LeadVisits {
    let mut visits = LeadVisits {
        changes: history.iter().map(change).collect(),
        ..LeadVisits::default()
    };
    set_amount(&mut visits, lead);
    visits
}

pub fn change(change: &StageChange) -> Change {
    Change {
        from_stage: change
            .from_stage
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        to_stage: change.to_stage.to_string(),
        time: crate::store::to_micros(change.change_time),
    }
}

pub fn set_amount(visits: &mut LeadVisits, lead: &Lead) {
    match &lead.fields.amount {
        Some(money) => {
            visits.currency = money.currency.as_str().to_owned();
            visits.units = money.units;
            visits.nanos = money.nanos;
        }
        None => {
            visits.currency = String::new();
            visits.units = 0;
            visits.nanos = 0;
        }
    }
}

/// Replaces what `before` added to the pipeline's aggregates by what `after` adds.
pub async fn replace(
    tx: &WriteTx,
    tenant: &TenantId,
    pipeline: &PipelineId,
    definition: &PipelineDefinition,
    before: &LeadVisits,
    after: &LeadVisits,
) -> Result<(), AppError> {
    let is_won = won_in(definition);
    let delta = difference(
        &contributions(before, &is_won),
        &contributions(after, &is_won),
    );
    store::add_later(tx, tenant, pipeline, &delta).await?;
    Ok(())
}

/// Recounts the pipeline's aggregates from its leads' histories under `definition`: a lead's
/// first win, its cycle time and its won amount depend on which stages are won, so a pipeline
/// update that changes them recounts, in its own transaction, which holds the pipeline's row
/// so that no write of its leads runs meanwhile. Time grows with the pipeline's leads.
pub async fn rebuild(
    db: &impl Connection,
    tenant: &TenantId,
    pipeline: &PipelineId,
    definition: &PipelineDefinition,
) -> Result<(), AppError> {
    const LEADS_PER_READ: u64 = 1000;
    store::clear(db, tenant, pipeline).await?;
    let is_won = won_in(definition);
    let mut after = String::new();
    loop {
        let ids = store::lead_ids(db, tenant, pipeline, &after, LEADS_PER_READ).await?;
        let Some(last) = ids.last() else {
            return Ok(());
        };
        after = last.clone();
        let mut total = Aggregates::new();
        for lead in store::lead_visits(db, tenant, pipeline, &ids)
            .await?
            .values()
        {
            for (key, count) in contributions(lead, &is_won) {
                let sum = total.entry(key).or_default();
                sum.n += count.n;
                sum.units += count.units;
                sum.nanos += count.nanos;
            }
        }
        store::add(db, tenant, pipeline, &total).await?;
    }
}
