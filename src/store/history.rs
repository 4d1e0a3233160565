//! Stage history.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entities::stage_change;
use super::leads::money_columns;
use super::{StoreError, from_micros, to_micros};
use crate::domain::history::StageChange;
use crate::domain::ids::{LeadId, PipelineId, StageKey, TenantId};
use crate::domain::money::Money;

/// The stage history row of a change that left the lead with `amount`; a write appends it with
/// its revision and outbox event under its sequence number
/// ([`super::sequences::append_sequenced`]).
pub(super) fn row(
    tenant: &TenantId,
    change: &StageChange,
    amount: Option<&Money>,
) -> stage_change::Model {
    let (amount_currency, amount_units, amount_nanos) = money_columns(amount);
    stage_change::Model {
        tenant_id: tenant.to_string(),
        sequence: change.sequence,
        lead_id: change.lead_id.to_string(),
        pipeline_id: change.pipeline_id.to_string(),
        from_stage: change
            .from_stage
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        to_stage: change.to_stage.to_string(),
        change_time: to_micros(change.change_time),
        actor: change.actor.clone(),
        note: change.note.clone(),
        imported: change.imported,
        amount_currency: Some(amount_currency),
        amount_units: Some(amount_units),
        amount_nanos: Some(amount_nanos),
    }
}

/// Appends imported history, each change with the amount it left the lead with. Imports are
/// not streamed, so no outbox rows are written; their sequences show up as gaps in the outbox,
/// which subscribers skip.
pub async fn insert_imported(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    changes: &[(&StageChange, Option<&Money>)],
) -> Result<(), StoreError> {
    use sea_orm::Iterable;
    let rows = super::rows_per_statement(stage_change::Column::iter().count());
    for chunk in changes.chunks(rows) {
        stage_change::Entity::insert_many(chunk.iter().map(|(change, amount)| {
            let mut row = row(tenant, change, *amount);
            row.imported = true;
            row.into_active_model()
        }))
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}

/// A lead's changes with a sequence above `after`, oldest first.
pub async fn list_for_lead(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    lead: &LeadId,
    after: i64,
    limit: u64,
) -> Result<Vec<StageChange>, StoreError> {
    stage_change::Entity::find()
        .filter(stage_change::Column::TenantId.eq(tenant.as_str()))
        .filter(stage_change::Column::LeadId.eq(lead.to_string()))
        .filter(stage_change::Column::Sequence.gt(after))
        .order_by_asc(stage_change::Column::Sequence)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(from_row)
        .collect()
}

/// The changes of several leads (one page of an export), oldest first.
pub async fn list_for_leads(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    leads: &[LeadId],
) -> Result<Vec<StageChange>, StoreError> {
    if leads.is_empty() {
        return Ok(Vec::new());
    }
    stage_change::Entity::find()
        .filter(stage_change::Column::TenantId.eq(tenant.as_str()))
        .filter(stage_change::Column::LeadId.is_in(leads.iter().map(|id| id.to_string())))
        .order_by_asc(stage_change::Column::Sequence)
        .all(db)
        .await?
        .into_iter()
        .map(from_row)
        .collect()
}

pub async fn delete_for_lead(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    lead: &LeadId,
) -> Result<(), StoreError> {
    stage_change::Entity::delete_many()
        .filter(stage_change::Column::TenantId.eq(tenant.as_str()))
        .filter(stage_change::Column::LeadId.eq(lead.to_string()))
        .exec(db)
        .await?;
    Ok(())
}

fn from_row(row: stage_change::Model) -> Result<StageChange, StoreError> {
    let corrupt = |e: String| StoreError::Corrupt(format!("stage change {}: {e}", row.sequence));
    Ok(StageChange {
        sequence: row.sequence,
        lead_id: LeadId::parse(&row.lead_id).map_err(corrupt)?,
        pipeline_id: PipelineId::parse(&row.pipeline_id).map_err(corrupt)?,
        from_stage: if row.from_stage.is_empty() {
            None
        } else {
            Some(StageKey::parse(&row.from_stage).map_err(corrupt)?)
        },
        to_stage: StageKey::parse(&row.to_stage).map_err(corrupt)?,
        change_time: from_micros(row.change_time),
        actor: row.actor,
        note: row.note,
        imported: row.imported,
    })
}
