//! Cheap reads for the metrics endpoint: each is an index-only or primary-key lookup.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::StoreError;
use super::entities::{lead, outbox};
use crate::domain::ids::TenantId;

/// Leads per tenant, pipeline and stage. Served by the `leads_by_stage` index.
pub async fn leads_per_stage(
    db: &impl ConnectionTrait,
) -> Result<Vec<(String, String, String, i64)>, StoreError> {
    Ok(lead::Entity::find()
        .select_only()
        .column(lead::Column::TenantId)
        .column(lead::Column::PipelineId)
        .column(lead::Column::Stage)
        .expr(Expr::col(lead::Column::Id).count())
        .group_by(lead::Column::TenantId)
        .group_by(lead::Column::PipelineId)
        .group_by(lead::Column::Stage)
        .into_tuple()
        .all(db)
        .await?)
}

/// The newest event in the tenant's outbox; 0 if it has none. Imported history takes sequence
/// numbers without writing events, so this, not the tenant's last sequence, is what a tailer
/// can reach.
pub async fn newest_event(db: &impl ConnectionTrait, tenant: &TenantId) -> Result<i64, StoreError> {
    Ok(outbox::Entity::find()
        .select_only()
        .column(outbox::Column::Sequence)
        .filter(outbox::Column::TenantId.eq(tenant.as_str()))
        .order_by_desc(outbox::Column::Sequence)
        .limit(1)
        .into_tuple::<i64>()
        .one(db)
        .await?
        .unwrap_or(0))
}

/// When the first event above `after` happened (microseconds since the epoch), if there is one.
pub async fn first_event_time_after(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    after: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(outbox::Entity::find()
        .select_only()
        .column(outbox::Column::ChangeTime)
        .filter(outbox::Column::TenantId.eq(tenant.as_str()))
        .filter(outbox::Column::Sequence.gt(after))
        .order_by_asc(outbox::Column::Sequence)
        .limit(1)
        .into_tuple::<i64>()
        .one(db)
        .await?)
}
