//! Per-tenant sequence numbers for the events of a tenant's writes.
//!
//! The counter row is updated inside the writing transaction and stays locked until commit, so
//! a tenant's changes commit in sequence order: a reader that has seen sequence N can never later
//! find a committed change below N. That is what makes "resume after N" safe without gaps.
//! The price is that one tenant's writes commit one at a time; tenants do not contend. So that
//! the row is held as briefly as it can be, a write takes its number last, just before its
//! commit, with only the rows that carry the number ([`append_sequenced`]).

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, EntityName, EntityTrait, IdenStatic,
    IntoActiveModel, Iterable, Statement, Value,
};

use super::entities::tenant_sequence::{Column, Entity};
use super::entities::{lead_revision, outbox, stage_change};
use super::{StoreError, WriteTx};
use crate::domain::history::{LeadChangeEvent, StageChange};
use crate::domain::ids::TenantId;
use crate::domain::lead::Lead;
use crate::domain::revision::LeadRevision;

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

/// What a write of a lead records under its sequence number: its stage change (creations and
/// moves), its revision (already numbered) and its outbox event.
pub struct Sequenced<'a> {
    pub change: Option<StageChange>,
    pub revision: LeadRevision,
    pub previous: Option<&'a Lead>,
}

/// Takes the tenant's next sequence number and appends the write's stage change, revision and
/// outbox event under it; returns the number. Call it as the write's last statement before
/// `commit`: the counter row stays locked from here to the commit, so everything that does not
/// need the number belongs before it. Every row and the event's JSON are built before the row
/// is taken; on PostgreSQL the number and the three rows are one statement (one round trip
/// while the row is held); on SQLite, which has one writer anyway, five statements and those
/// the write left for later sent as one batch (one round trip to the connection's thread).
pub async fn append_sequenced(
    tx: &WriteTx,
    tenant: &TenantId,
    write: Sequenced<'_>,
) -> Result<i64, StoreError> {
    let Sequenced {
        change,
        revision,
        previous,
    } = write;
    // The number is not known yet: readers of the outbox take it from the row's column.
    let event = LeadChangeEvent::of(&revision, previous, change.clone());
    let payload = serde_json::to_string(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let outbox_row = super::outbox::row(tenant, &event, payload);
    let revision_row = super::revisions::to_model(tenant, &revision);
    let change_row = change
        .as_ref()
        .map(|c| super::history::row(tenant, c, revision.lead.fields.amount.as_ref()));
    if tx.get_database_backend() == DbBackend::Postgres {
        return append_in_one_statement(
            tx,
            tenant,
            change_row.map(IntoActiveModel::into_active_model),
            revision_row.into_active_model(),
            outbox_row.into_active_model(),
        )
        .await;
    }
    append_in_one_round_trip(
        tx,
        tenant,
        change_row.map(IntoActiveModel::into_active_model),
        revision_row.into_active_model(),
        outbox_row.into_active_model(),
    )
    .await
}

/// The upsert that takes the tenant's next number (tenant as `$1`), without a terminator.
fn increment_counter() -> String {
    let (table, tenant, last) = (
        Entity.table_name(),
        Column::TenantId.as_str(),
        Column::LastSequence.as_str(),
    );
    format!(
        "INSERT INTO \"{table}\" (\"{tenant}\", \"{last}\") VALUES ($1, 1) \
         ON CONFLICT (\"{tenant}\") DO UPDATE SET \"{last}\" = \"{table}\".\"{last}\" + 1"
    )
}

/// PostgreSQL: the counter's update and the three inserts as one statement, each insert taking
/// the number from the update's `RETURNING`.
async fn append_in_one_statement(
    tx: &WriteTx,
    tenant: &TenantId,
    change: Option<stage_change::ActiveModel>,
    revision: lead_revision::ActiveModel,
    event: outbox::ActiveModel,
) -> Result<i64, StoreError> {
    let mut values: Vec<Value> = vec![tenant.as_str().into()];
    let mut sql = format!(
        "WITH s AS ({} RETURNING \"{}\")",
        increment_counter(),
        Column::LastSequence.as_str()
    );
    if let Some(change) = change {
        let insert = insert_numbered(&change, stage_change::Column::Sequence, "s", &mut values);
        sql.push_str(&format!(", h AS ({insert})"));
    }
    let insert = insert_numbered(&revision, lead_revision::Column::Sequence, "s", &mut values);
    sql.push_str(&format!(", r AS ({insert}) "));
    sql.push_str(&insert_numbered(
        &event,
        outbox::Column::Sequence,
        "s",
        &mut values,
    ));
    sql.push_str(" RETURNING \"sequence\"");
    let row = tx
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?
        .ok_or_else(|| StoreError::Database("sequence allocation returned no row".into()))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// SQLite: the statements the write left for its last batch (`WriteTx::execute_later`), each
/// that must change a row followed by a read of how many it changed, the counter's upsert, the
/// three inserts, each reading the number back from the counter row, and a final read of the
/// number, as one batch of statements. A statement that changed no row fails the write with
/// `Superseded` once the batch has run; the caller's rollback undoes the rest of it. The driver
/// runs a batch's statements in turn on the connection's thread, numbering `$n` parameters
/// across the batch, and every row of the batch is collected, so every statement has run when
/// it returns.
async fn append_in_one_round_trip(
    tx: &WriteTx,
    tenant: &TenantId,
    change: Option<stage_change::ActiveModel>,
    revision: lead_revision::ActiveModel,
    event: outbox::ActiveModel,
) -> Result<i64, StoreError> {
    let mut values: Vec<Value> = vec![tenant.as_str().into()];
    let (table, tenant_column, last) = (
        Entity.table_name(),
        Column::TenantId.as_str(),
        Column::LastSequence.as_str(),
    );
    let taken = format!("(SELECT \"{last}\" FROM \"{table}\" WHERE \"{tenant_column}\" = $1) AS s");
    let mut sql = String::new();
    let mut must_change = 0;
    for later in tx.take_later() {
        let (statement, later_values) = (later.statement)(values.len() + 1);
        sql.push_str(&statement);
        sql.push_str(";\n");
        values.extend(later_values);
        if later.must_change {
            // The only statements of the batch that return rows are these and the last.
            sql.push_str("SELECT changes();\n");
            must_change += 1;
        }
    }
    sql.push_str(&increment_counter());
    sql.push_str(";\n");
    if let Some(change) = change {
        sql.push_str(&insert_numbered(
            &change,
            stage_change::Column::Sequence,
            &taken,
            &mut values,
        ));
        sql.push_str(";\n");
    }
    sql.push_str(&insert_numbered(
        &revision,
        lead_revision::Column::Sequence,
        &taken,
        &mut values,
    ));
    sql.push_str(";\n");
    sql.push_str(&insert_numbered(
        &event,
        outbox::Column::Sequence,
        &taken,
        &mut values,
    ));
    sql.push_str(&format!(
        ";\nSELECT \"{last}\" FROM \"{table}\" WHERE \"{tenant_column}\" = $1"
    ));
    let (sql, values) = super::write::positional(&sql, &values)?;
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            sql,
            values,
        ))
        .await?;
    if rows.len() != must_change + 1 {
        return Err(StoreError::Database(format!(
            "the write's batch returned {} rows, not {}",
            rows.len(),
            must_change + 1
        )));
    }
    for changed in &rows[..must_change] {
        if changed.try_get_by_index::<i64>(0)? == 0 {
            return Err(StoreError::Superseded);
        }
    }
    let row = rows
        .last()
        .ok_or_else(|| StoreError::Database("sequence allocation returned no row".into()))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// `INSERT INTO table (every column) SELECT …, s.last_sequence, … FROM {source}`: every
/// column's value as a bind parameter appended to `values`, but `numbered`, which takes the
/// allocated number from `source`, a table or subquery named `s`.
fn insert_numbered<A>(
    row: &A,
    numbered: <A::Entity as EntityTrait>::Column,
    source: &str,
    values: &mut Vec<Value>,
) -> String
where
    A: ActiveModelTrait,
{
    let mut columns = Vec::new();
    let mut selected = Vec::new();
    for column in <A::Entity as EntityTrait>::Column::iter() {
        columns.push(format!("\"{}\"", column.as_str()));
        if column.as_str() == numbered.as_str() {
            selected.push(format!("s.\"{}\"", Column::LastSequence.as_str()));
            continue;
        }
        let value = row
            .get(column)
            .into_value()
            .expect("every column of the row is set");
        values.push(value);
        selected.push(format!("${}", values.len()));
    }
    format!(
        "INSERT INTO \"{}\" ({}) SELECT {} FROM {source}",
        A::Entity::default().table_name(),
        columns.join(", "),
        selected.join(", ")
    )
}
