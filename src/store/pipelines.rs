//! The pipelines repository. Definitions are stored as JSON: a pipeline is read whole and
//! written whole, and its stages are never queried one by one.

use sea_orm::sea_query::LockType;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::entities::pipeline;
use super::{StoreError, from_micros, to_micros};
use crate::domain::ids::{PipelineId, TenantId};
use crate::domain::pipeline::{Pipeline, PipelineDefinition};

fn from_row(row: pipeline::Model) -> Result<Pipeline, StoreError> {
    let definition: PipelineDefinition = serde_json::from_str(&row.definition)
        .map_err(|e| StoreError::Corrupt(format!("pipeline {}: {e}", row.id)))?;
    Ok(Pipeline {
        id: PipelineId::parse(&row.id).map_err(StoreError::Corrupt)?,
        definition,
        create_time: from_micros(row.create_time),
        update_time: from_micros(row.update_time),
        version: row.version,
    })
}

fn to_active(tenant: &TenantId, pipeline: &Pipeline) -> Result<pipeline::ActiveModel, StoreError> {
    Ok(pipeline::ActiveModel {
        tenant_id: Set(tenant.to_string()),
        id: Set(pipeline.id.to_string()),
        display_name: Set(pipeline.definition.display_name.clone()),
        definition: Set(serde_json::to_string(&pipeline.definition)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?),
        version: Set(pipeline.version),
        create_time: Set(to_micros(pipeline.create_time)),
        update_time: Set(to_micros(pipeline.update_time)),
    })
}

pub async fn find(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    id: &PipelineId,
    lock: RowLock,
) -> Result<Option<Pipeline>, StoreError> {
    locked(
        pipeline::Entity::find_by_id((tenant.to_string(), id.to_string())),
        lock,
    )
    .one(db)
    .await?
    .map(from_row)
    .transpose()
}

/// How a read inside a write transaction locks the pipeline row (PostgreSQL; SQLite serialises
/// writers anyway and ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowLock {
    None,
    /// Writes that put leads into the pipeline's stages: they must not interleave with an update
    /// that removes stages, but may run beside each other.
    KeyShare,
    /// An update of the pipeline itself.
    Update,
}

fn locked<S: QuerySelect>(select: S, lock: RowLock) -> S {
    match lock {
        RowLock::None => select,
        RowLock::KeyShare => select.lock(LockType::KeyShare),
        RowLock::Update => select.lock(LockType::Update),
    }
}

/// Only the version, to revalidate a cached compiled pipeline cheaply.
pub async fn find_version(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    id: &PipelineId,
    lock: RowLock,
) -> Result<Option<i64>, StoreError> {
    let select = pipeline::Entity::find().select_only();
    Ok(locked(select, lock)
        .column(pipeline::Column::Version)
        .filter(pipeline::Column::TenantId.eq(tenant.as_str()))
        .filter(pipeline::Column::Id.eq(id.as_str()))
        .into_tuple::<i64>()
        .one(db)
        .await?)
}

/// Fails with `StoreError::UniqueViolation` if the id is taken.
pub async fn insert(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &Pipeline,
) -> Result<(), StoreError> {
    pipeline::Entity::insert(to_active(tenant, pipeline)?)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Inserts unless a pipeline with that id exists; never fails on the conflict, so it is safe
/// inside a PostgreSQL transaction.
pub async fn insert_if_absent(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &Pipeline,
) -> Result<(), StoreError> {
    use sea_orm::sea_query::OnConflict;
    pipeline::Entity::insert(to_active(tenant, pipeline)?)
        .on_conflict(
            OnConflict::columns([pipeline::Column::TenantId, pipeline::Column::Id])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Writes `pipeline` (version already incremented) if the stored version is `expected_version`.
pub async fn update_if_version(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &Pipeline,
    expected_version: i64,
) -> Result<bool, StoreError> {
    let mut row = to_active(tenant, pipeline)?;
    row.tenant_id = sea_orm::ActiveValue::NotSet;
    row.id = sea_orm::ActiveValue::NotSet;
    row.create_time = sea_orm::ActiveValue::NotSet;
    let result = pipeline::Entity::update_many()
        .set(row)
        .filter(pipeline::Column::TenantId.eq(tenant.as_str()))
        .filter(pipeline::Column::Id.eq(pipeline.id.as_str()))
        .filter(pipeline::Column::Version.eq(expected_version))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Pipelines with an id above `after`, ordered by id.
pub async fn list(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    after: &str,
    limit: u64,
) -> Result<Vec<Pipeline>, StoreError> {
    pipeline::Entity::find()
        .filter(pipeline::Column::TenantId.eq(tenant.as_str()))
        .filter(pipeline::Column::Id.gt(after))
        .order_by_asc(pipeline::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(from_row)
        .collect()
}
