//! The lead revisions GetPipelineChanges reads: the open pipeline at a time, and, lead by lead,
//! the state at both ends of a window of the leads that changed inside it.
//!
//! A lead's state at a time is its latest revision with `change_time` ≤ that time (ties broken
//! by revision number). Leads with no revision inside the window are the same at both ends, so
//! only the open totals count them; the others come back in pages ordered by lead id.

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend,
    IsolationLevel, QueryResult, TransactionTrait, Value,
};

use super::{get, placeholders, query, stage_values};
use crate::domain::ids::{PipelineId, TenantId};
use crate::store::StoreError;

/// The memory each sort or hash of a report's statements may use on PostgreSQL (its
/// `work_mem`, for the report's transaction only). The reports group tens of thousands of rows
/// into a few hundred groups; with the server's default (4 MB) the planner, which cannot know
/// how few groups there are, sorts them on disk instead of hashing them in memory.
pub const REPORT_WORK_MEM: &str = "32MB";

/// One read snapshot for every statement of a report, so that a write committed between two of
/// them cannot make the totals and the leads disagree. SQLite (WAL) gives a deferred
/// transaction a snapshot at its first read; PostgreSQL needs REPEATABLE READ for one, and
/// gets [`REPORT_WORK_MEM`] for it.
pub async fn read_snapshot(db: &DatabaseConnection) -> Result<DatabaseTransaction, StoreError> {
    Ok(match db.get_database_backend() {
        DbBackend::Postgres => {
            let tx = db
                .begin_with_config(
                    Some(IsolationLevel::RepeatableRead),
                    Some(AccessMode::ReadOnly),
                )
                .await?;
            tx.execute_unprepared(&format!("SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
                .await?;
            tx
        }
        _ => db.begin().await?,
    })
}

/// Who a report is about.
pub struct ChangeScope<'a> {
    pub tenant: &'a TenantId,
    pub pipeline: &'a PipelineId,
    /// The pipeline's open stages.
    pub open_stages: &'a [String],
    pub currency: &'a str,
    pub owner: Option<&'a str>,
}

impl ChangeScope<'_> {
    /// `currency`, `owner`: the selection's conditions on revision alias `r`.
    fn selection(&self, r: &str) -> (String, Vec<Value>) {
        let mut sql = format!(
            "NOT {r}.deleted AND {r}.stage IN ({}) AND ({r}.amount_currency = ? OR {r}.amount_currency = '')",
            placeholders(self.open_stages.len().max(1))
        );
        let mut values = stage_values(self.open_stages);
        values.push(self.currency.into());
        if let Some(owner) = self.owner {
            sql.push_str(&format!(" AND {r}.owner = ?"));
            values.push(owner.into());
        }
        (sql, values)
    }
}

/// The open pipeline at `at` (µs): leads, and their amount as (⌊units / 10⁹⌋, units mod 10⁹,
/// nanos) sums, so that no sum can overflow a BIGINT however many leads there are.
pub async fn open_total(
    db: &impl ConnectionTrait,
    scope: &ChangeScope<'_>,
    at: i64,
) -> Result<(i64, i128), StoreError> {
    let (selection, selection_values) = scope.selection("r");
    let sql = format!(
        "SELECT CAST(COUNT(*) AS BIGINT),
                CAST(COALESCE(SUM(r.amount_units / 1000000000), 0) AS BIGINT),
                CAST(COALESCE(SUM(r.amount_units % 1000000000), 0) AS BIGINT),
                CAST(COALESCE(SUM(r.amount_nanos), 0) AS BIGINT)
         FROM (SELECT x.*, ROW_NUMBER() OVER (PARTITION BY x.lead_id
                          ORDER BY x.change_time DESC, x.revision DESC) AS latest
               FROM lead_revisions x
               WHERE x.tenant_id = ? AND x.pipeline_id = ? AND x.change_time <= ?) r
         WHERE r.latest = 1 AND {selection}"
    );
    let mut values: Vec<Value> = vec![
        scope.tenant.as_str().into(),
        scope.pipeline.as_str().into(),
        at.into(),
    ];
    values.extend(selection_values);
    let rows = query(db, &sql, values).await?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::Corrupt("an aggregate returned no row".into()))?;
    let (count, high, low, nanos): (i64, i64, i64, i64) =
        (get(row, 0)?, get(row, 1)?, get(row, 2)?, get(row, 3)?);
    const BILLION: i128 = 1_000_000_000;
    let amount = (i128::from(high) * BILLION + i128::from(low)) * BILLION + i128::from(nanos);
    Ok((count, amount))
}

/// A lead's state at one end of the window.
#[derive(Debug, Clone)]
pub struct RevisionState {
    pub stage: String,
    pub owner: String,
    pub currency: String,
    pub units: i64,
    pub nanos: i32,
    pub expected_close_time: Option<i64>,
    pub deleted: bool,
}

/// A lead with a revision inside the window.
#[derive(Debug, Clone)]
pub struct ChangedLead {
    pub lead_id: String,
    /// None when the lead had no revision by the start.
    pub start: Option<RevisionState>,
    pub end: RevisionState,
    /// Whether a revision inside the window left it open (in the scope's selection).
    pub open_inside: bool,
}

const STATE_COLUMNS: [&str; 7] = [
    "stage",
    "owner",
    "amount_currency",
    "amount_units",
    "amount_nanos",
    "expected_close_time",
    "deleted",
];

fn state_columns(alias: &str) -> String {
    STATE_COLUMNS
        .iter()
        .map(|c| match *c {
            "deleted" => format!("CAST(CASE WHEN {alias}.deleted THEN 1 ELSE 0 END AS BIGINT)"),
            c => format!("{alias}.{c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn state(row: &QueryResult, first: usize) -> Result<RevisionState, StoreError> {
    Ok(RevisionState {
        stage: get(row, first)?,
        owner: get(row, first + 1)?,
        currency: get(row, first + 2)?,
        units: get(row, first + 3)?,
        nanos: get(row, first + 4)?,
        expected_close_time: get(row, first + 5)?,
        deleted: get::<i64>(row, first + 6)? == 1,
    })
}

/// The revision number of a lead's state at the `?` time, through `lead_revisions_by_lead_time`.
fn latest_revision_at(lead: &str) -> String {
    format!(
        "(SELECT x.revision FROM lead_revisions x
          WHERE x.tenant_id = ? AND x.lead_id = {lead} AND x.change_time <= ?
          ORDER BY x.change_time DESC, x.revision DESC LIMIT 1)"
    )
}

/// Up to `limit` leads with a revision in (start, end] and an id after `after`, by id, with
/// their state at both ends.
pub async fn changed_leads(
    db: &impl ConnectionTrait,
    scope: &ChangeScope<'_>,
    (start, end): (i64, i64),
    after: &str,
    limit: u64,
) -> Result<Vec<ChangedLead>, StoreError> {
    let (selection, selection_values) = scope.selection("x");
    let sql = format!(
        "WITH c AS (
            SELECT DISTINCT lead_id FROM lead_revisions
            WHERE tenant_id = ? AND pipeline_id = ? AND change_time > ? AND change_time <= ?
              AND lead_id > ?
            ORDER BY lead_id LIMIT ?),
         k AS (
            SELECT c.lead_id, {start_rev} AS start_rev, {end_rev} AS end_rev,
                   CASE WHEN EXISTS (SELECT 1 FROM lead_revisions x
                        WHERE x.tenant_id = ? AND x.lead_id = c.lead_id
                          AND x.change_time > ? AND x.change_time <= ? AND {selection})
                   THEN 1 ELSE 0 END AS open_inside
            FROM c)
         SELECT k.lead_id, CAST(k.open_inside AS BIGINT),
                CAST(CASE WHEN s.revision IS NULL THEN 0 ELSE 1 END AS BIGINT),
                {s_columns}, {e_columns}
         FROM k
         LEFT JOIN lead_revisions s
                ON s.tenant_id = ? AND s.lead_id = k.lead_id AND s.revision = k.start_rev
         JOIN lead_revisions e
                ON e.tenant_id = ? AND e.lead_id = k.lead_id AND e.revision = k.end_rev
         ORDER BY k.lead_id",
        start_rev = latest_revision_at("c.lead_id"),
        end_rev = latest_revision_at("c.lead_id"),
        s_columns = state_columns("s"),
        e_columns = state_columns("e"),
    );
    let tenant: Value = scope.tenant.as_str().into();
    let mut values: Vec<Value> = vec![
        tenant.clone(),
        scope.pipeline.as_str().into(),
        start.into(),
        end.into(),
        after.into(),
        (limit as i64).into(),
        tenant.clone(),
        start.into(),
        tenant.clone(),
        end.into(),
        tenant.clone(),
        start.into(),
        end.into(),
    ];
    values.extend(selection_values);
    values.extend([tenant.clone(), tenant]);
    query(db, &sql, values)
        .await?
        .iter()
        .map(|row| {
            let has_start = get::<i64>(row, 2)? == 1;
            Ok(ChangedLead {
                lead_id: get(row, 0)?,
                open_inside: get::<i64>(row, 1)? == 1,
                start: if has_start {
                    Some(state(row, 3)?)
                } else {
                    None
                },
                end: state(row, 3 + STATE_COLUMNS.len())?,
            })
        })
        .collect()
}
