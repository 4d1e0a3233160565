//! API keys: one row per key, found by its primary key `(tenant_id, id)`. Only a hash of the
//! key is stored; see `crate::app::api_keys` for the format and the checks.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::StoreError;
use super::entities::api_key;
use crate::domain::ids::TenantId;

pub use api_key::Model as ApiKeyRow;

pub async fn insert(db: &impl ConnectionTrait, row: ApiKeyRow) -> Result<(), StoreError> {
    api_key::Entity::insert(api_key::ActiveModel {
        tenant_id: Set(row.tenant_id),
        id: Set(row.id),
        role: Set(row.role),
        secret_hash: Set(row.secret_hash),
        label: Set(row.label),
        create_time: Set(row.create_time),
        revoke_time: Set(row.revoke_time),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The key `(tenant, id)`, revoked or not.
pub async fn find(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<ApiKeyRow>, StoreError> {
    Ok(
        api_key::Entity::find_by_id((tenant.to_string(), id.to_owned()))
            .one(db)
            .await?,
    )
}

/// Every key with this id, in any tenant (for the command line, which accepts a bare id).
pub async fn find_in_any_tenant(
    db: &impl ConnectionTrait,
    id: &str,
) -> Result<Vec<ApiKeyRow>, StoreError> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::Id.eq(id))
        .order_by_asc(api_key::Column::TenantId)
        .all(db)
        .await?)
}

/// Every key, or every key of one tenant, ordered by tenant and creation.
pub async fn list(
    db: &impl ConnectionTrait,
    tenant: Option<&TenantId>,
) -> Result<Vec<ApiKeyRow>, StoreError> {
    let mut select = api_key::Entity::find();
    if let Some(tenant) = tenant {
        select = select.filter(api_key::Column::TenantId.eq(tenant.as_str()));
    }
    Ok(select
        .order_by_asc(api_key::Column::TenantId)
        .order_by_asc(api_key::Column::CreateTime)
        .order_by_asc(api_key::Column::Id)
        .all(db)
        .await?)
}

/// Marks the key revoked at `now_micros`. Returns false if it does not exist or was already
/// revoked (its first revocation time is kept).
pub async fn revoke(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    id: &str,
    now_micros: i64,
) -> Result<bool, StoreError> {
    let result = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokeTime, Expr::value(now_micros))
        .filter(api_key::Column::TenantId.eq(tenant.as_str()))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::RevokeTime.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Whether any key, in any tenant, is not revoked.
pub async fn any_active(db: &impl ConnectionTrait) -> Result<bool, StoreError> {
    let found: Option<String> = api_key::Entity::find()
        .select_only()
        .column(api_key::Column::Id)
        .filter(api_key::Column::RevokeTime.is_null())
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    Ok(found.is_some())
}
