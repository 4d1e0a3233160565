//! The outbox: one event per write of a lead, written with the write; read by the streams and
//! pruned by retention.

use sea_orm::sea_query::{Expr, ExprTrait, Func, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{outbox, tenant_sequence};
use super::{StoreError, to_micros};
use crate::domain::history::LeadChangeEvent;
use crate::domain::ids::TenantId;

/// The outbox row of a write's event, with its JSON `payload`; written by
/// [`super::sequences::append_sequenced`] under the write's sequence number.
pub(super) fn row(tenant: &TenantId, event: &LeadChangeEvent, payload: String) -> outbox::Model {
    outbox::Model {
        tenant_id: tenant.to_string(),
        sequence: event.sequence,
        lead_id: event.lead.id.to_string(),
        pipeline_id: event.lead.pipeline_id.to_string(),
        to_stage: event.lead.stage.to_string(),
        owner: event.lead.fields.owner.clone(),
        change_time: to_micros(event.change_time()),
        payload,
    }
}

/// Up to `limit` events with a sequence above `after`, in sequence order.
pub async fn read_after(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    after: i64,
    limit: u64,
) -> Result<Vec<LeadChangeEvent>, StoreError> {
    outbox::Entity::find()
        .select_only()
        .column(outbox::Column::Sequence)
        .column(outbox::Column::Payload)
        .filter(outbox::Column::TenantId.eq(tenant.as_str()))
        .filter(outbox::Column::Sequence.gt(after))
        .order_by_asc(outbox::Column::Sequence)
        .limit(limit)
        .into_tuple::<(i64, String)>()
        .all(db)
        .await?
        .iter()
        .map(|(sequence, payload)| {
            let mut event: LeadChangeEvent = serde_json::from_str(payload)
                .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?;
            // The payload is encoded before the write takes its number: the row's column is
            // the event's sequence and its stage change's.
            event.sequence = *sequence;
            if let Some(change) = event.change.as_mut() {
                change.sequence = *sequence;
            }
            Ok(event)
        })
        .collect()
}

/// The last committed sequence of the tenant; 0 before its first change.
pub async fn last_sequence(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
) -> Result<i64, StoreError> {
    Ok(tenant_sequence::Entity::find()
        .select_only()
        .column(tenant_sequence::Column::LastSequence)
        .filter(tenant_sequence::Column::TenantId.eq(tenant.as_str()))
        .into_tuple::<i64>()
        .one(db)
        .await?
        .unwrap_or(0))
}

/// Events up to this sequence were removed by retention; 0 if none.
pub async fn pruned_through(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
) -> Result<i64, StoreError> {
    Ok(tenant_sequence::Entity::find()
        .select_only()
        .column(tenant_sequence::Column::PrunedThrough)
        .filter(tenant_sequence::Column::TenantId.eq(tenant.as_str()))
        .into_tuple::<i64>()
        .one(db)
        .await?
        .unwrap_or(0))
}

pub async fn tenants(db: &impl ConnectionTrait) -> Result<Vec<TenantId>, StoreError> {
    let ids: Vec<String> = tenant_sequence::Entity::find()
        .select_only()
        .column(tenant_sequence::Column::TenantId)
        .into_tuple()
        .all(db)
        .await?;
    ids.iter()
        .map(|id| TenantId::parse(id).map_err(StoreError::Corrupt))
        .collect()
}

/// Deletes the tenant's events committed before `cutoff_micros`. Deletes by sequence, so the
/// retained events always form one contiguous range even if replicas' clocks disagree.
pub async fn prune(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    cutoff_micros: i64,
) -> Result<u64, StoreError> {
    let newest_expired = Query::select()
        .expr(Func::max(Expr::col(outbox::Column::Sequence)))
        .from(outbox::Entity)
        .and_where(Expr::col(outbox::Column::TenantId).eq(tenant.as_str()))
        .and_where(Expr::col(outbox::Column::ChangeTime).lt(cutoff_micros))
        .to_owned();
    let Some(row) = db.query_one(&newest_expired).await? else {
        return Ok(0);
    };
    let Some(upto) = row.try_get_by_index::<Option<i64>>(0)? else {
        return Ok(0);
    };
    // Raise the watermark first: a subscriber that sees the rows gone must also see why.
    tenant_sequence::Entity::update_many()
        .col_expr(tenant_sequence::Column::PrunedThrough, Expr::val(upto))
        .filter(tenant_sequence::Column::TenantId.eq(tenant.as_str()))
        .filter(tenant_sequence::Column::PrunedThrough.lt(upto))
        .exec(db)
        .await?;
    Ok(outbox::Entity::delete_many()
        .filter(outbox::Column::TenantId.eq(tenant.as_str()))
        .filter(outbox::Column::Sequence.lte(upto))
        .exec(db)
        .await?
        .rows_affected)
}
