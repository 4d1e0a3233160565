//! Per-tenant sequence numbers for stage changes.
//!
//! The counter row is updated inside the writing transaction and stays locked until commit, so
//! a tenant's changes commit in sequence order: a reader that has seen sequence N can never later
//! find a committed change below N. That is what makes "resume after N" safe without gaps.
//! The price is that one tenant's writes commit one at a time; tenants do not contend.

use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};

use super::entities::tenant_sequence::{Column, Entity};
use super::{StoreError, WriteTx};
use crate::domain::ids::TenantId;

/// Reserves `count` consecutive sequence numbers and returns the last one.
pub async fn allocate(tx: &WriteTx, tenant: &TenantId, count: i64) -> Result<i64, StoreError> {
    let statement = Query::insert()
        .into_table(Entity)
        .columns([Column::TenantId, Column::LastSequence])
        .values_panic([tenant.as_str().into(), count.into()])
        .on_conflict(
            OnConflict::column(Column::TenantId)
                .value(
                    Column::LastSequence,
                    Expr::col((Entity, Column::LastSequence)).add(count),
                )
                .to_owned(),
        )
        .returning_col(Column::LastSequence)
        .to_owned();
    let row = tx
        .query_one(&statement)
        .await?
        .ok_or_else(|| StoreError::Database("sequence allocation returned no row".into()))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}
