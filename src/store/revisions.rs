//! Lead revisions: every write of a lead appends the lead as it was after it, in the write's
//! transaction. Revisions outlive the lead: a deleted lead's history stays readable.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entities::{lead_revision, tenant_sequence};
use super::leads::money_columns;
use super::{StoreError, from_micros, to_micros};
use crate::domain::ids::{LeadId, StageKey, TenantId};
use crate::domain::lead::Lead;
use crate::domain::revision::{LeadRevision, RevisionKind};

/// One page of a lead's revisions: those numbered above `after`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct RevisionPage {
    pub after: i64,
    pub limit: u64,
}

pub(super) fn to_model(tenant: &TenantId, revision: &LeadRevision) -> lead_revision::Model {
    let lead = &revision.lead;
    let (amount_currency, amount_units, amount_nanos) = money_columns(lead.fields.amount.as_ref());
    lead_revision::Model {
        tenant_id: tenant.to_string(),
        lead_id: lead.id.to_string(),
        revision: revision.revision,
        change_time: to_micros(revision.change_time),
        kind: revision.kind.as_str().to_owned(),
        actor: revision.actor.clone(),
        sequence: revision.sequence,
        changed_fields: revision.changed_fields.join(","),
        from_stage: revision.from_stage.as_ref().map(ToString::to_string),
        to_stage: revision.to_stage.as_ref().map(ToString::to_string),
        pipeline_id: lead.pipeline_id.to_string(),
        stage: lead.stage.to_string(),
        owner: lead.fields.owner.clone(),
        source: lead.fields.source.clone(),
        amount_currency,
        amount_units,
        amount_nanos,
        expected_close_time: lead.fields.expected_close_time.map(to_micros),
        close_time: lead.close_time.map(to_micros),
        create_time: to_micros(lead.create_time),
        labels: serde_json::to_string(&lead.fields.labels).unwrap_or_else(|_| "{}".into()),
        close_date_push_count: lead.close_date_push_count,
        first_expected_close_time: lead.first_expected_close_time.map(to_micros),
        deleted: revision.kind == RevisionKind::Deleted,
        lead: serde_json::to_string(lead).unwrap_or_default(),
    }
}

fn from_model(row: lead_revision::Model) -> Result<LeadRevision, StoreError> {
    let corrupt = |e: String| {
        StoreError::Corrupt(format!(
            "revision {} of lead {}: {e}",
            row.revision, row.lead_id
        ))
    };
    let stage = |s: Option<String>| {
        s.filter(|s| !s.is_empty())
            .map(|s| StageKey::parse(&s))
            .transpose()
    };
    Ok(LeadRevision {
        revision: row.revision,
        kind: RevisionKind::parse(&row.kind).map_err(corrupt)?,
        lead: serde_json::from_str::<Lead>(&row.lead).map_err(|e| corrupt(e.to_string()))?,
        changed_fields: row
            .changed_fields
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        actor: row.actor,
        change_time: from_micros(row.change_time),
        sequence: row.sequence,
        from_stage: stage(row.from_stage).map_err(corrupt)?,
        to_stage: stage(row.to_stage).map_err(corrupt)?,
    })
}

/// Appends the revisions of new leads (an import), already numbered, in as few statements as
/// the bind-parameter limits allow.
pub async fn insert_many(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    revisions: &[LeadRevision],
) -> Result<(), StoreError> {
    use sea_orm::Iterable;
    let rows = super::rows_per_statement(lead_revision::Column::iter().count());
    for chunk in revisions.chunks(rows) {
        lead_revision::Entity::insert_many(
            chunk
                .iter()
                .map(|r| to_model(tenant, r).into_active_model()),
        )
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}

/// The lead's revisions numbered above `page.after`, oldest first.
pub async fn list(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    lead_id: &LeadId,
    page: RevisionPage,
) -> Result<Vec<LeadRevision>, StoreError> {
    lead_revision::Entity::find()
        .filter(lead_revision::Column::TenantId.eq(tenant.as_str()))
        .filter(lead_revision::Column::LeadId.eq(lead_id.to_string()))
        .filter(lead_revision::Column::Revision.gt(page.after))
        .order_by_asc(lead_revision::Column::Revision)
        .limit(page.limit)
        .all(db)
        .await?
        .into_iter()
        .map(from_model)
        .collect()
}

/// Whether the lead has any revision (it exists, or existed and was deleted).
pub async fn exists(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    lead_id: &LeadId,
) -> Result<bool, StoreError> {
    Ok(lead_revision::Entity::find()
        .select_only()
        .column(lead_revision::Column::Revision)
        .filter(lead_revision::Column::TenantId.eq(tenant.as_str()))
        .filter(lead_revision::Column::LeadId.eq(lead_id.to_string()))
        .limit(1)
        .into_tuple::<i64>()
        .one(db)
        .await?
        .is_some())
}

/// The lead's latest revision with a change time at or before `as_of_micros`, read through
/// `lead_revisions_by_lead_time`; None if the lead did not exist yet.
pub async fn lead_at(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    lead_id: &LeadId,
    as_of_micros: i64,
) -> Result<Option<LeadRevision>, StoreError> {
    lead_revision::Entity::find()
        .filter(lead_revision::Column::TenantId.eq(tenant.as_str()))
        .filter(lead_revision::Column::LeadId.eq(lead_id.to_string()))
        .filter(lead_revision::Column::ChangeTime.lte(as_of_micros))
        .order_by_desc(lead_revision::Column::ChangeTime)
        .order_by_desc(lead_revision::Column::Revision)
        .limit(1)
        .one(db)
        .await?
        .map(from_model)
        .transpose()
}

/// The latest revision at or before `as_of_micros` of each of the tenant's leads whose id sorts
/// after `after_lead`, in id order, at most `limit` leads: the tenant's leads as they stood
/// then, a chunk at a time. Deleted leads come as their `deleted` revision. Each lead's revision
/// is found through `lead_revisions_by_lead_time`.
pub async fn leads_at(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    as_of_micros: i64,
    after_lead: Option<&str>,
    limit: u64,
) -> Result<Vec<LeadRevision>, StoreError> {
    use sea_orm::{DbBackend, Statement};
    let sql = "SELECT * FROM lead_revisions AS r
        WHERE r.tenant_id = $1 AND r.lead_id > $2 AND r.change_time <= $3
          AND NOT EXISTS (
            SELECT 1 FROM lead_revisions AS later
            WHERE later.tenant_id = r.tenant_id AND later.lead_id = r.lead_id
              AND later.change_time <= $3
              AND (later.change_time > r.change_time
                   OR (later.change_time = r.change_time AND later.revision > r.revision)))
        ORDER BY r.lead_id
        LIMIT $4";
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => sql.to_owned(),
        _ => sql
            .replace("$1", "?1")
            .replace("$2", "?2")
            .replace("$3", "?3")
            .replace("$4", "?4"),
    };
    lead_revision::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            backend,
            sql,
            [
                tenant.as_str().into(),
                after_lead.unwrap_or("").into(),
                as_of_micros.into(),
                (limit as i64).into(),
            ],
        ))
        .all(db)
        .await?
        .into_iter()
        .map(from_model)
        .collect()
}

/// Revisions with a change time before this (µs) were removed by retention; 0 if none.
pub async fn pruned_before(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
) -> Result<i64, StoreError> {
    Ok(tenant_sequence::Entity::find()
        .select_only()
        .column(tenant_sequence::Column::RevisionsPrunedBefore)
        .filter(tenant_sequence::Column::TenantId.eq(tenant.as_str()))
        .into_tuple::<i64>()
        .one(db)
        .await?
        .unwrap_or(0))
}

/// Removes the tenant's revisions that were superseded before `cutoff_micros`, keeping for each
/// lead its latest revision before the cutoff: the lead as it stood then, so that a read as of
/// any time from the cutoff on still has its answer. Records the cutoff first as the tenant's
/// watermark, below which reads as of a time fail instead of answering from a thinned history.
pub async fn prune(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    cutoff_micros: i64,
) -> Result<u64, StoreError> {
    use sea_orm::{DbBackend, Statement};
    tenant_sequence::Entity::update_many()
        .col_expr(
            tenant_sequence::Column::RevisionsPrunedBefore,
            Expr::val(cutoff_micros),
        )
        .filter(tenant_sequence::Column::TenantId.eq(tenant.as_str()))
        .filter(tenant_sequence::Column::RevisionsPrunedBefore.lt(cutoff_micros))
        .exec(db)
        .await?;
    let backend = db.get_database_backend();
    let sql = "DELETE FROM lead_revisions WHERE tenant_id = $1 AND change_time < $2 AND EXISTS (
            SELECT 1 FROM lead_revisions AS later
            WHERE later.tenant_id = lead_revisions.tenant_id
              AND later.lead_id = lead_revisions.lead_id
              AND later.revision > lead_revisions.revision
              AND later.change_time < $2)";
    let sql = match backend {
        DbBackend::Postgres => sql.to_owned(),
        _ => sql.replace("$1", "?1").replace("$2", "?2"),
    };
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [tenant.as_str().into(), cutoff_micros.into()],
        ))
        .await?;
    Ok(result.rows_affected())
}
