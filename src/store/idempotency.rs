//! Idempotency keys: a request_id is reserved in the same transaction as the write it guards,
//! so concurrent retries serialise on the key's primary key and only one write ever happens.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};

use super::entities::idempotency_key;
use super::{StoreError, WriteTx};
use crate::domain::ids::{RequestId, TenantId};

#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub method: String,
    pub request_hash: String,
    /// Empty if the reserving transaction has not committed yet (only visible to itself).
    pub response: String,
}

pub async fn find(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    request_id: &RequestId,
) -> Result<Option<StoredResponse>, StoreError> {
    Ok(
        idempotency_key::Entity::find_by_id((tenant.to_string(), request_id.as_str().to_owned()))
            .one(db)
            .await?
            .map(|row| StoredResponse {
                method: row.method,
                request_hash: row.request_hash,
                response: row.response,
            }),
    )
}

/// Reserves the key; fails with `StoreError::UniqueViolation` if it is taken.
pub async fn reserve(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    request_id: &RequestId,
    method: &str,
    request_hash: &str,
    now_micros: i64,
) -> Result<(), StoreError> {
    idempotency_key::Entity::insert(idempotency_key::ActiveModel {
        tenant_id: Set(tenant.to_string()),
        request_id: Set(request_id.as_str().to_owned()),
        method: Set(method.to_owned()),
        request_hash: Set(request_hash.to_owned()),
        response: Set(String::new()),
        create_time: Set(now_micros),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Stores the key with the response of the write it guards, in `tx`'s last batch: for a write
/// that knows its response before it takes the writer. The write fails with
/// `StoreError::UniqueViolation` if the key is taken.
pub async fn insert_completed_later(
    tx: &WriteTx,
    tenant: &TenantId,
    key: StoredKey<'_>,
    now_micros: i64,
) -> Result<(), StoreError> {
    let row = idempotency_key::Model {
        tenant_id: tenant.to_string(),
        request_id: key.request_id.as_str().to_owned(),
        method: key.method.to_owned(),
        request_hash: key.request_hash.to_owned(),
        response: key.response.to_owned(),
        create_time: now_micros,
    }
    .into_active_model();
    tx.execute_later(Box::new(move |first| {
        super::leads::values_numbered(&[row], first)
    }))
    .await
}

/// A key with what it answers.
pub struct StoredKey<'a> {
    pub request_id: &'a RequestId,
    pub method: &'a str,
    pub request_hash: &'a str,
    pub response: &'a str,
}

pub async fn complete(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    request_id: &RequestId,
    response: &str,
) -> Result<(), StoreError> {
    idempotency_key::Entity::update_many()
        .col_expr(
            idempotency_key::Column::Response,
            sea_orm::sea_query::Expr::value(response.to_owned()),
        )
        .filter(idempotency_key::Column::TenantId.eq(tenant.as_str()))
        .filter(idempotency_key::Column::RequestId.eq(request_id.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

/// Forgets keys older than `before_micros`. Returns how many were removed.
pub async fn prune(db: &impl ConnectionTrait, before_micros: i64) -> Result<u64, StoreError> {
    Ok(idempotency_key::Entity::delete_many()
        .filter(idempotency_key::Column::CreateTime.lt(before_micros))
        .exec(db)
        .await?
        .rows_affected)
}
