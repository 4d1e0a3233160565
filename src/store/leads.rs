//! The leads repository: row conversions and conditional writes.

use std::collections::BTreeMap;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, Set,
    Value,
};

use super::entities::{lead, lead_label};
use super::{StoreError, WriteTx, from_micros, to_micros};
use crate::domain::ids::{LeadId, PipelineId, StageKey, TenantId};
use crate::domain::lead::{Bant, Lead, LeadFields};
use crate::domain::money::{CurrencyCode, Money};

pub fn to_model(tenant: &TenantId, lead: &Lead) -> lead::Model {
    let f = &lead.fields;
    let (amount_currency, amount_units, amount_nanos) = money_columns(f.amount.as_ref());
    let (budget_currency, budget_units, budget_nanos) = money_columns(f.bant.budget.as_ref());
    lead::Model {
        tenant_id: tenant.to_string(),
        id: lead.id.to_string(),
        title: f.title.clone(),
        company: f.company.clone(),
        contact_name: f.contact_name.clone(),
        contact_email: f.contact_email.clone(),
        owner: f.owner.clone(),
        source: f.source.clone(),
        pipeline_id: lead.pipeline_id.to_string(),
        stage: lead.stage.to_string(),
        amount_currency,
        amount_units,
        amount_nanos,
        budget_currency,
        budget_units,
        budget_nanos,
        bant_authority: f.bant.authority.clone(),
        bant_need: f.bant.need.clone(),
        bant_timeline: f.bant.timeline.map(to_micros),
        expected_close_time: f.expected_close_time.map(to_micros),
        labels: serde_json::to_string(&f.labels).unwrap_or_else(|_| "{}".into()),
        lost_reason: f.lost_reason.clone(),
        win_probability: lead.win_probability,
        create_time: to_micros(lead.create_time),
        update_time: to_micros(lead.update_time),
        stage_enter_time: to_micros(lead.stage_enter_time),
        close_time: lead.close_time.map(to_micros),
        version: lead.version,
        expected_value: lead.expected_value(),
        external_id: lead.external_id.clone(),
        close_date_push_count: lead.close_date_push_count,
        first_expected_close_time: lead.first_expected_close_time.map(to_micros),
    }
}

pub(crate) fn money_columns(money: Option<&Money>) -> (String, i64, i32) {
    match money {
        Some(m) => (m.currency.as_str().to_owned(), m.units, m.nanos),
        None => (String::new(), 0, 0),
    }
}

fn money_from_columns(currency: &str, units: i64, nanos: i32) -> Result<Option<Money>, StoreError> {
    if currency.is_empty() {
        return Ok(None);
    }
    let currency = CurrencyCode::parse(currency).map_err(StoreError::Corrupt)?;
    Ok(Some(Money {
        currency,
        units,
        nanos,
    }))
}

pub fn from_model(row: lead::Model) -> Result<Lead, StoreError> {
    let corrupt =
        |what: &str, e: String| StoreError::Corrupt(format!("lead {}: {what}: {e}", row.id));
    let labels: BTreeMap<String, String> =
        serde_json::from_str(&row.labels).map_err(|e| corrupt("labels", e.to_string()))?;
    Ok(Lead {
        id: LeadId::parse(&row.id).map_err(|e| corrupt("id", e))?,
        pipeline_id: PipelineId::parse(&row.pipeline_id).map_err(|e| corrupt("pipeline_id", e))?,
        stage: StageKey::parse(&row.stage).map_err(|e| corrupt("stage", e))?,
        fields: LeadFields {
            amount: money_from_columns(&row.amount_currency, row.amount_units, row.amount_nanos)?,
            bant: Bant {
                budget: money_from_columns(
                    &row.budget_currency,
                    row.budget_units,
                    row.budget_nanos,
                )?,
                authority: row.bant_authority,
                need: row.bant_need,
                timeline: row.bant_timeline.map(from_micros),
            },
            title: row.title,
            company: row.company,
            contact_name: row.contact_name,
            contact_email: row.contact_email,
            owner: row.owner,
            source: row.source,
            expected_close_time: row.expected_close_time.map(from_micros),
            labels,
            lost_reason: row.lost_reason,
        },
        win_probability: row.win_probability,
        create_time: from_micros(row.create_time),
        update_time: from_micros(row.update_time),
        stage_enter_time: from_micros(row.stage_enter_time),
        close_time: row.close_time.map(from_micros),
        version: row.version,
        external_id: row.external_id,
        close_date_push_count: row.close_date_push_count,
        first_expected_close_time: row.first_expected_close_time.map(from_micros),
    })
}

pub async fn find(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    id: &LeadId,
) -> Result<Option<Lead>, StoreError> {
    lead::Entity::find_by_id((tenant.to_string(), id.to_string()))
        .one(db)
        .await?
        .map(from_model)
        .transpose()
}

/// The lead as GetLead reads it: the latest committed state, as `find` on the read pool gives.
/// On a SQLite file it is read in place on the calling task (`super::point_reads`), falling
/// back to the read pool when that read cannot run; elsewhere through the read pool.
pub async fn read(
    store: &super::Store,
    tenant: &TenantId,
    id: &LeadId,
) -> Result<Option<Lead>, StoreError> {
    if let Some(row) = store
        .point_reads
        .as_ref()
        .and_then(|reads| reads.find_lead(tenant.as_str(), &id.to_string()))
    {
        return row.map(from_model).transpose();
    }
    find(store.reader(), tenant, id).await
}

/// A lead as committed, with its pipeline's version and its stage history in that pipeline
/// summarised for a move, for a write that decides before it takes the writer.
pub struct LeadWithHistory {
    pub lead: Lead,
    /// None when the pipeline is not stored.
    pub pipeline_version: Option<i64>,
    pub summary: crate::domain::forecast::visits::HistorySummary,
}

/// [`LeadWithHistory`] as last committed. On a SQLite file from one read transaction, in place
/// on the calling task (`super::point_reads`); otherwise, or when that read cannot run, through
/// the read pool, the history read after the lead, so that a history newer than the lead read
/// can only come with a newer version of the lead, which a write conditional on the version
/// read then refuses.
pub async fn read_with_history(
    store: &super::Store,
    tenant: &TenantId,
    id: &LeadId,
) -> Result<Option<LeadWithHistory>, StoreError> {
    if let Some(read) = store
        .point_reads
        .as_ref()
        .and_then(|reads| reads.lead_with_history(tenant.as_str(), &id.to_string()))
    {
        let Some(read) = read else {
            return Ok(None);
        };
        return Ok(Some(LeadWithHistory {
            lead: from_model(read.lead)?,
            pipeline_version: read.pipeline_version,
            summary: read.summary,
        }));
    }
    let reader = store.reader();
    let Some(lead) = find(reader, tenant, id).await? else {
        return Ok(None);
    };
    let pipeline_version = super::pipelines::find_version(
        reader,
        tenant,
        &lead.pipeline_id,
        super::pipelines::RowLock::None,
    )
    .await?;
    let summary = super::analytics::visits::history_summary_after(
        reader,
        tenant,
        &lead.pipeline_id,
        &lead.id.to_string(),
        Default::default(),
        super::analytics::visits::FROM_THE_START,
    )
    .await?;
    Ok(Some(LeadWithHistory {
        lead,
        pipeline_version,
        summary,
    }))
}

/// The lead's history in its pipeline summarised for a change appended to it, as `tx` sees it,
/// for a write that has not itself recorded a change of the lead yet. While `tx` sees the
/// committed state (`WriteTx::sees_committed_state`) the rows are read in place on a SQLite
/// file, instead of each being handed over from the writer's thread (a lead's history grows
/// with every move), up to `point_reads::MAX_HISTORY_IN_PLACE` of them; the rest through `tx`.
pub async fn history_summary_for_write(
    store: &super::Store,
    tx: &WriteTx,
    tenant: &TenantId,
    lead: &Lead,
) -> Result<crate::domain::forecast::visits::HistorySummary, StoreError> {
    use super::analytics::visits::{FROM_THE_START, history_summary_after};
    let id = lead.id.to_string();
    let (summary, after) = match store
        .point_reads
        .as_ref()
        .filter(|_| tx.sees_committed_state())
        .and_then(|reads| reads.history_summary(tenant.as_str(), &id, lead.pipeline_id.as_str()))
    {
        Some(read) => match read.stopped_after {
            None => return Ok(read.summary),
            Some(after) => (read.summary, after),
        },
        None => (Default::default(), FROM_THE_START),
    };
    history_summary_after(tx, tenant, &lead.pipeline_id, &id, summary, after).await
}

/// The tenant's leads among `ids`, in one query; missing ids are left out, order is not kept.
pub async fn find_many(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    ids: &[&str],
) -> Result<Vec<Lead>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    lead::Entity::find()
        .filter(lead::Column::TenantId.eq(tenant.as_str()))
        .filter(lead::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(from_model)
        .collect()
}

/// Inserts a new lead and its labels in `tx`'s last batch of statements
/// (`WriteTx::execute_later`): on SQLite the new lead costs no round trip of its own while the
/// writer is held. Only for a lead nothing can
/// conflict with (a fresh id, no external id), since its failure is the batch's.
pub async fn insert_later(tx: &WriteTx, tenant: &TenantId, lead: &Lead) -> Result<(), StoreError> {
    let row = to_model(tenant, lead).into_active_model();
    tx.execute_later(Box::new(move |first| values_numbered(&[row], first)))
        .await?;
    insert_labels_later(tx, tenant, lead).await
}

/// A new lead's labels, in `tx`'s last batch after its row.
async fn insert_labels_later(
    tx: &WriteTx,
    tenant: &TenantId,
    lead: &Lead,
) -> Result<(), StoreError> {
    if lead.fields.labels.is_empty() {
        return Ok(());
    }
    let labels: Vec<lead_label::ActiveModel> =
        label_rows(tenant, &lead.id, &lead.fields.labels).collect();
    tx.execute_later(Box::new(move |first| values_numbered(&labels, first)))
        .await
}

/// [`insert_later`] for a call that read the lead's pipeline before it took the writer: the
/// lead is inserted only if the pipeline is still at `pipeline_version`, and otherwise the write
/// fails with `StoreError::Superseded`.
pub async fn insert_later_if_pipeline(
    tx: &WriteTx,
    tenant: &TenantId,
    lead: &Lead,
    pipeline_version: i64,
) -> Result<(), StoreError> {
    let row = to_model(tenant, lead).into_active_model();
    let (tenant_id, pipeline) = (tenant.to_string(), lead.pipeline_id.to_string());
    tx.execute_later_or_superseded(Box::new(move |first| {
        use sea_orm::{IdenStatic, Iterable};
        let mut values = Vec::new();
        let mut names = Vec::new();
        let mut placeholders = Vec::new();
        for column in lead::Column::iter() {
            names.push(format!("\"{}\"", column.as_str()));
            values.push(
                row.get(column)
                    .into_value()
                    .expect("every column of the row is set"),
            );
            placeholders.push(format!("${}", first + values.len() - 1));
        }
        let guard = pipeline_at(&tenant_id, &pipeline, pipeline_version, first, &mut values);
        let sql = format!(
            "INSERT INTO \"leads\" ({}) SELECT {} WHERE {guard}",
            names.join(", "),
            placeholders.join(", ")
        );
        (sql, values)
    }))
    .await?;
    insert_labels_later(tx, tenant, lead).await
}

/// Writes `lead` (whose version is already incremented, and whose labels are unchanged) in
/// `tx`'s last batch, for a call that read it as `current` and its pipeline before it took the
/// writer: only if the stored lead is still at `current`'s version and its pipeline at
/// `pipeline_version`.
/// Otherwise the write fails with `StoreError::Superseded`.
pub async fn update_later_if_versions(
    tx: &WriteTx,
    tenant: &TenantId,
    current: &Lead,
    lead: &Lead,
    pipeline_version: i64,
) -> Result<(), StoreError> {
    let assigned = assigned_columns(tenant, current, lead);
    let expected_version = current.version;
    let (tenant_id, id, pipeline) = (
        tenant.to_string(),
        lead.id.to_string(),
        lead.pipeline_id.to_string(),
    );
    tx.execute_later_or_superseded(Box::new(move |first| {
        use sea_orm::IdenStatic;
        let mut values = Vec::new();
        let mut assignments = Vec::new();
        for (column, value) in &assigned {
            values.push(value.clone());
            assignments.push(format!(
                "\"{}\" = ${}",
                column.as_str(),
                first + values.len() - 1
            ));
        }
        let at = first + values.len();
        values.extend([tenant_id.clone().into(), id.into(), expected_version.into()]);
        let guard = pipeline_at(&tenant_id, &pipeline, pipeline_version, first, &mut values);
        let sql = format!(
            "UPDATE \"leads\" SET {} WHERE \"tenant_id\" = ${at} AND \"id\" = ${} \
             AND \"version\" = ${} AND {guard}",
            assignments.join(", "),
            at + 1,
            at + 2
        );
        (sql, values)
    }))
    .await
}

/// The columns an update from `current` (the row as stored at its version) to `lead` assigns,
/// with their new values: each column whose value differs, and always the learned probability
/// and its expected value, which a rescore sets without a new version.
///
/// A column that keeps its value is left out because SQLite rewrites the index entry of every
/// indexed column an UPDATE assigns, even to the value it holds, and each rewrite dirties a
/// page that the commit writes to the WAL.
fn assigned_columns(tenant: &TenantId, current: &Lead, lead: &Lead) -> Vec<(lead::Column, Value)> {
    use sea_orm::Iterable;
    let before = to_model(tenant, current).into_active_model();
    let after = to_model(tenant, lead).into_active_model();
    lead::Column::iter()
        .filter(|column| {
            !matches!(
                column,
                lead::Column::TenantId
                    | lead::Column::Id
                    | lead::Column::CreateTime
                    | lead::Column::ExternalId
            )
        })
        .filter_map(|column| {
            let value = after
                .get(column)
                .into_value()
                .expect("every column of the row is set");
            let always = matches!(
                column,
                lead::Column::WinProbability | lead::Column::ExpectedValue
            );
            (always || before.get(column).into_value().as_ref() != Some(&value))
                .then_some((column, value))
        })
        .collect()
}

/// SQL that holds while the pipeline is at `version`, its parameters appended to `values`,
/// which are numbered from `first`.
fn pipeline_at(
    tenant: &str,
    pipeline: &str,
    version: i64,
    first: usize,
    values: &mut Vec<Value>,
) -> String {
    let at = first + values.len();
    values.extend([tenant.into(), pipeline.into(), version.into()]);
    format!(
        "EXISTS (SELECT 1 FROM \"pipelines\" WHERE \"tenant_id\" = ${at} AND \"id\" = ${} \
         AND \"version\" = ${})",
        at + 1,
        at + 2
    )
}

/// `INSERT INTO … VALUES …` of `rows`, every column set, with `$n` parameters numbered from
/// `first`.
pub(super) fn values_numbered<A: ActiveModelTrait>(
    rows: &[A],
    first: usize,
) -> (String, Vec<Value>) {
    use sea_orm::{EntityName, IdenStatic, Iterable};
    let columns: Vec<_> = <A::Entity as EntityTrait>::Column::iter().collect();
    let mut values = Vec::with_capacity(rows.len() * columns.len());
    let tuples: Vec<String> = rows
        .iter()
        .map(|row| {
            let placeholders: Vec<String> = columns
                .iter()
                .map(|&column| {
                    values.push(
                        row.get(column)
                            .into_value()
                            .expect("every column of the row is set"),
                    );
                    format!("${}", first + values.len() - 1)
                })
                .collect();
            format!("({})", placeholders.join(", "))
        })
        .collect();
    let names: Vec<String> = columns
        .iter()
        .map(|c| format!("\"{}\"", c.as_str()))
        .collect();
    let sql = format!(
        "INSERT INTO \"{}\" ({}) VALUES {}",
        A::Entity::default().table_name(),
        names.join(", "),
        tuples.join(", ")
    );
    (sql, values)
}

/// Writes `lead` (whose version is already incremented) over `current`, if the stored lead is
/// still at `current`'s version. Returns false when another write got there first.
pub async fn update_if_version(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    current: &Lead,
    lead: &Lead,
    labels_changed: bool,
) -> Result<bool, StoreError> {
    let mut update = lead::Entity::update_many();
    for (column, value) in assigned_columns(tenant, current, lead) {
        update = update.col_expr(column, sea_orm::sea_query::Expr::val(value));
    }
    let result = update
        .filter(lead::Column::TenantId.eq(tenant.as_str()))
        .filter(lead::Column::Id.eq(lead.id.to_string()))
        .filter(lead::Column::Version.eq(current.version))
        .exec(db)
        .await?;
    if result.rows_affected == 0 {
        return Ok(false);
    }
    if labels_changed {
        delete_labels(db, tenant, &lead.id).await?;
        insert_labels(db, tenant, &lead.id, &lead.fields.labels).await?;
    }
    Ok(true)
}

/// Deletes a lead, its labels and its history. With `expected_version`, only if it matches.
/// Returns false when nothing was deleted.
pub async fn delete(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    id: &LeadId,
    expected_version: Option<i64>,
) -> Result<bool, StoreError> {
    let mut delete = lead::Entity::delete_many()
        .filter(lead::Column::TenantId.eq(tenant.as_str()))
        .filter(lead::Column::Id.eq(id.to_string()));
    if let Some(version) = expected_version {
        delete = delete.filter(lead::Column::Version.eq(version));
    }
    if delete.exec(db).await?.rows_affected == 0 {
        return Ok(false);
    }
    delete_labels(db, tenant, id).await?;
    super::history::delete_for_lead(db, tenant, id).await?;
    Ok(true)
}

async fn insert_labels(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    id: &LeadId,
    labels: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    if labels.is_empty() {
        return Ok(());
    }
    lead_label::Entity::insert_many(label_rows(tenant, id, labels))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

fn label_rows<'a>(
    tenant: &'a TenantId,
    id: &'a LeadId,
    labels: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = lead_label::ActiveModel> + 'a {
    labels.iter().map(|(key, value)| lead_label::ActiveModel {
        tenant_id: Set(tenant.to_string()),
        lead_id: Set(id.to_string()),
        key: Set(key.clone()),
        value: Set(value.clone()),
    })
}

async fn delete_labels(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    id: &LeadId,
) -> Result<(), StoreError> {
    lead_label::Entity::delete_many()
        .filter(lead_label::Column::TenantId.eq(tenant.as_str()))
        .filter(lead_label::Column::LeadId.eq(id.to_string()))
        .exec(db)
        .await?;
    Ok(())
}

/// How many leads of a pipeline sit in each of `stages`; used to refuse removing occupied stages.
pub async fn count_in_stages(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    stages: &[String],
) -> Result<Vec<(String, i64)>, StoreError> {
    use sea_orm::QuerySelect;
    use sea_orm::sea_query::Func;
    if stages.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, i64)> = lead::Entity::find()
        .select_only()
        .column(lead::Column::Stage)
        .column_as(Expr::from(Func::count(Expr::col(lead::Column::Id))), "n")
        .filter(lead::Column::TenantId.eq(tenant.as_str()))
        .filter(lead::Column::PipelineId.eq(pipeline.as_str()))
        .filter(lead::Column::Stage.is_in(stages.iter().cloned()))
        .group_by(lead::Column::Stage)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows)
}

/// Inserts many leads (and their labels), in as few statements as the databases' limits on bind
/// parameters allow.
pub async fn insert_many(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    leads: &[Lead],
) -> Result<(), StoreError> {
    use sea_orm::Iterable;
    for chunk in leads.chunks(super::rows_per_statement(lead::Column::iter().count())) {
        lead::Entity::insert_many(
            chunk
                .iter()
                .map(|l| to_model(tenant, l).into_active_model()),
        )
        .exec_without_returning(db)
        .await?;
    }
    let labels: Vec<lead_label::ActiveModel> = leads
        .iter()
        .flat_map(|l| {
            l.fields
                .labels
                .iter()
                .map(|(key, value)| lead_label::ActiveModel {
                    tenant_id: Set(tenant.to_string()),
                    lead_id: Set(l.id.to_string()),
                    key: Set(key.clone()),
                    value: Set(value.clone()),
                })
        })
        .collect();
    for chunk in labels.chunks(super::rows_per_statement(
        lead_label::Column::iter().count(),
    )) {
        lead_label::Entity::insert_many(chunk.iter().cloned())
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// The tenant's leads imported with one of `external_ids`, by external id.
pub async fn find_by_external_ids(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    external_ids: &[String],
) -> Result<std::collections::HashMap<String, Lead>, StoreError> {
    if external_ids.is_empty() {
        return Ok(Default::default());
    }
    let mut found = std::collections::HashMap::new();
    for row in lead::Entity::find()
        .filter(lead::Column::TenantId.eq(tenant.as_str()))
        .filter(lead::Column::ExternalId.is_in(external_ids.iter().cloned()))
        .all(db)
        .await?
    {
        let lead = from_model(row)?;
        if let Some(external_id) = lead.external_id.clone() {
            found.insert(external_id, lead);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    use super::{
        assigned_columns, find, history_summary_for_write, insert_later_if_pipeline,
        update_later_if_versions,
    };
    use crate::domain::forecast::visits::{Change, HistorySummary};
    use crate::domain::ids::{LeadId, StageKey, TenantId};
    use crate::domain::lead::Lead;
    use crate::domain::revision::{LeadRevision, RevisionKind};
    use crate::store::WriteTx;
    use crate::store::sequences::{Sequenced, append_sequenced};
    use crate::store::{Store, StoreError};

    async fn migrated(dir: &tempfile::TempDir) -> Store {
        let store = crate::store::open_for_test(dir, "leads.db").await;
        store.migrate().await.expect("migrate");
        store
    }

    fn tenant() -> TenantId {
        TenantId::parse(migration::DEFAULT_TENANT).expect("tenant")
    }

    fn new_lead() -> Lead {
        let mut lead = crate::domain::criteria::testing::lead();
        lead.stage = StageKey::parse("lead_generation").expect("stage");
        lead
    }

    /// A conditional write of the lead, then its revision under the tenant's next sequence, in
    /// one batch, committed when it succeeds and rolled back when it fails.
    async fn write(
        store: &Store,
        lead: &Lead,
        conditional: impl AsyncFnOnce(&crate::store::WriteTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tx = store.begin_write().await?;
        let mut revision = LeadRevision::of(RevisionKind::Created, None, lead, "test", Utc::now());
        revision.revision = lead.version;
        let written = async {
            conditional(&tx).await?;
            append_sequenced(
                &tx,
                &tenant(),
                Sequenced {
                    change: None,
                    revision,
                    previous: None,
                },
            )
            .await
        }
        .await;
        match written {
            Ok(_) => tx.commit().await,
            Err(error) => {
                tx.rollback().await?;
                Err(error)
            }
        }
    }

    async fn last_sequence(store: &Store) -> i64 {
        let row = store
            .reader()
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT last_sequence FROM tenant_sequences WHERE tenant_id = 'default'",
            ))
            .await
            .expect("read")
            .expect("a counter row");
        row.try_get_by_index::<i64>(0).expect("number")
    }

    async fn stored(store: &Store, id: &LeadId) -> Option<Lead> {
        find(store.reader(), &tenant(), id).await.expect("read")
    }

    #[tokio::test]
    async fn a_write_whose_lead_or_pipeline_changed_since_it_was_read_leaves_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = migrated(&dir).await;
        let lead = new_lead();
        write(&store, &lead, async |tx| {
            insert_later_if_pipeline(tx, &tenant(), &lead, 1).await
        })
        .await
        .expect("the pipeline is at version 1");
        assert_eq!(last_sequence(&store).await, 1);

        let other = new_lead();
        let refused = write(&store, &other, async |tx| {
            insert_later_if_pipeline(tx, &tenant(), &other, 2).await
        })
        .await;
        assert!(
            matches!(refused, Err(StoreError::Superseded)),
            "{refused:?}"
        );
        assert!(stored(&store, &other.id).await.is_none());
        assert_eq!(
            last_sequence(&store).await,
            1,
            "the batch's sequence is undone"
        );

        let mut moved = lead.clone();
        moved.stage = StageKey::parse("qualification").expect("stage");
        moved.version = 2;
        for (expected_version, pipeline_version) in [(2, 1), (1, 2)] {
            let mut read = lead.clone();
            read.version = expected_version;
            let refused = write(&store, &moved, async |tx| {
                update_later_if_versions(tx, &tenant(), &read, &moved, pipeline_version).await
            })
            .await;
            assert!(
                matches!(refused, Err(StoreError::Superseded)),
                "{refused:?}"
            );
            let unchanged = stored(&store, &lead.id).await.expect("the lead");
            assert_eq!(
                (unchanged.version, unchanged.stage),
                (1, lead.stage.clone())
            );
            assert_eq!(last_sequence(&store).await, 1);
        }

        write(&store, &moved, async |tx| {
            update_later_if_versions(tx, &tenant(), &lead, &moved, 1).await
        })
        .await
        .expect("the lead and its pipeline are at the versions read");
        let updated = stored(&store, &lead.id).await.expect("the lead");
        assert_eq!((updated.version, updated.stage), (2, moved.stage));
        assert_eq!(last_sequence(&store).await, 2);
        store.close().await;
    }

    #[test]
    fn an_update_assigns_what_changed_and_the_learned_probability() {
        use sea_orm::IdenStatic;
        let lead = new_lead();
        let mut moved = lead.clone();
        moved.stage = StageKey::parse("qualification").expect("stage");
        moved.version += 1;
        let assigned: Vec<&str> = assigned_columns(&tenant(), &lead, &moved)
            .iter()
            .map(|(column, _)| column.as_str())
            .collect();
        assert_eq!(
            assigned,
            ["stage", "win_probability", "expected_value", "version"],
            "a column that keeps its value is not assigned"
        );
    }

    /// Records a change of `lead`'s stage in `tx`.
    async fn record_change(tx: &WriteTx, lead: &Lead, sequence: i64, change: &Change) {
        tx.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO stage_changes (tenant_id, sequence, lead_id, pipeline_id, from_stage,
                 to_stage, change_time, actor, note, imported)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'test', '', false)",
            [
                tenant().as_str().into(),
                sequence.into(),
                lead.id.to_string().into(),
                lead.pipeline_id.as_str().into(),
                change.from_stage.as_str().into(),
                change.to_stage.as_str().into(),
                change.time.into(),
            ],
        ))
        .await
        .expect("insert a stage change");
    }

    #[tokio::test]
    async fn a_write_reads_the_history_earlier_calls_of_its_batch_wrote_and_otherwise_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = migrated(&dir).await;
        let lead = new_lead();
        let step = |from: &str, to: &str, time| Change {
            from_stage: from.into(),
            to_stage: to.into(),
            time,
        };
        let created = step("", "lead_generation", 10);
        let qualified = step("lead_generation", "qualification", 20);

        let first = store.begin_write().await.expect("begin");
        record_change(&first, &lead, 1, &created).await;
        let second = {
            let store = store.clone();
            tokio::spawn(async move { store.begin_write().await })
        };
        // On the test's single-threaded runtime the spawned call waits for the writer now, so
        // it joins the batch the first call's commit ends.
        tokio::task::yield_now().await;
        let first = tokio::spawn(first.commit());
        let second = second.await.expect("task").expect("begin");
        assert!(!second.sees_committed_state());
        let seen = history_summary_for_write(&store, &second, &tenant(), &lead)
            .await
            .expect("read");
        assert_eq!(
            seen,
            HistorySummary::of(std::slice::from_ref(&created)),
            "the first call's change, not committed yet"
        );
        record_change(&second, &lead, 2, &qualified).await;
        second.commit().await.expect("commit");
        first.await.expect("task").expect("commit");

        let third = store.begin_write().await.expect("begin");
        assert!(third.sees_committed_state());
        let in_place = history_summary_for_write(&store, &third, &tenant(), &lead)
            .await
            .expect("read");
        let through_the_writer = crate::store::analytics::visits::history_summary_after(
            &third,
            &tenant(),
            &lead.pipeline_id,
            &lead.id.to_string(),
            HistorySummary::default(),
            crate::store::analytics::visits::FROM_THE_START,
        )
        .await
        .expect("read");
        assert_eq!(in_place, through_the_writer);
        let mut history = vec![created, qualified];
        assert_eq!(in_place, HistorySummary::of(&history));

        // Of a history longer than a runtime thread may read in place, the rest is read through
        // the writer.
        for sequence in 3..=2 + crate::store::point_reads::MAX_HISTORY_IN_PLACE as i64 {
            let (from, to) = if sequence % 2 == 1 {
                ("qualification", "lead_generation")
            } else {
                ("lead_generation", "qualification")
            };
            let next = step(from, to, sequence * 10);
            record_change(&third, &lead, sequence, &next).await;
            history.push(next);
        }
        third.commit().await.expect("commit");
        let fourth = store.begin_write().await.expect("begin");
        assert!(fourth.sees_committed_state());
        let reads = store.point_reads.as_ref().expect("a SQLite file");
        let (id, pipeline) = (lead.id.to_string(), lead.pipeline_id.to_string());
        let read = reads
            .history_summary("default", &id, &pipeline)
            .expect("read in place");
        let max = crate::store::point_reads::MAX_HISTORY_IN_PLACE;
        assert_eq!(read.stopped_after, Some(max as i64));
        assert_eq!(read.summary, HistorySummary::of(&history[..max]));
        assert_eq!(
            history_summary_for_write(&store, &fourth, &tenant(), &lead)
                .await
                .expect("read"),
            HistorySummary::of(&history)
        );
        fourth.rollback().await.expect("roll back");
        store.close().await;
    }

    /// GetForecast's read of every open lead runs in place on a SQLite file, and gives what the
    /// pool's read gives, with and without a currency, for leads with and without each
    /// optional column.
    #[tokio::test]
    async fn open_leads_read_in_place_equal_the_pools_read() {
        use crate::domain::money::Money;
        use crate::store::analytics::{HistoryScope, leads_at, leads_at_in, leads_at_sql_in_place};

        let dir = tempfile::tempdir().expect("temp dir");
        let store = migrated(&dir).await;
        for i in 0..6 {
            let mut lead = new_lead();
            if i % 2 == 0 {
                let currency = if i % 4 == 0 { "EUR" } else { "USD" };
                lead.fields.amount = Some(Money::parse(currency, 1_000 * i, 250).expect("amount"));
                lead.fields.expected_close_time = Some(Utc::now());
                lead.first_expected_close_time = lead.fields.expected_close_time;
                lead.fields.owner = format!("owner-{i}");
                lead.close_date_push_count = i;
            }
            if i == 5 {
                lead.stage = StageKey::parse("qualification").expect("stage");
            }
            lead.win_probability = i as f64 / 10.0;
            write(&store, &lead, async |tx| {
                insert_later_if_pipeline(tx, &tenant(), &lead, 1).await
            })
            .await
            .expect("write");
        }
        let pipeline = new_lead().pipeline_id;
        let scope = HistoryScope {
            tenant: &tenant(),
            pipeline: &pipeline,
            as_of: Utc::now().timestamp_micros(),
            present: true,
        };
        let stages = ["lead_generation".to_owned(), "qualification".to_owned()];
        let reads = store.point_reads.clone().expect("a SQLite file");
        for (currency, expected) in [(None, 6), (Some("EUR"), 2), (Some("GBP"), 0)] {
            let sorted = |mut leads: Vec<crate::store::analytics::LeadAt>| {
                leads.sort_by(|a, b| a.lead_id.cmp(&b.lead_id));
                format!("{leads:?}")
            };
            let (sql, values) =
                leads_at_sql_in_place(&scope, &stages, currency).expect("text parameters");
            let in_place = reads.leads_at(&sql, &values).expect("read in place");
            assert_eq!(in_place.len(), expected, "{currency:?}");
            let through_the_store = leads_at_in(&store, &scope, &stages, currency)
                .await
                .expect("read");
            let pooled = leads_at(store.reader(), &scope, &stages, currency)
                .await
                .expect("read");
            assert_eq!(sorted(in_place), sorted(pooled.clone()), "{currency:?}");
            assert_eq!(sorted(through_the_store), sorted(pooled), "{currency:?}");
        }
        // While every place for a read in place is taken, and once its connections are closed,
        // the read cannot run in place and the pool answers the same.
        let (sql, values) = leads_at_sql_in_place(&scope, &stages, None).expect("text parameters");
        let the_pool_answers = async || {
            assert!(reads.leads_at(&sql, &values).is_none());
            let leads = leads_at_in(&store, &scope, &stages, None)
                .await
                .expect("read");
            assert_eq!(leads.len(), 6);
        };
        let taken: Vec<_> = (0..crate::store::point_reads::MAX_BULK_READS)
            .map(|_| reads.bulk_read().expect("a free place"))
            .collect();
        the_pool_answers().await;
        drop(taken);
        assert!(reads.leads_at(&sql, &values).is_some());
        reads.close();
        the_pool_answers().await;
        store.close().await;
    }
}
