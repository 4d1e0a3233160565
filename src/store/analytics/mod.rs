//! Aggregations over stage history for metrics and forecasts. The grouping happens in SQL;
//! only small grouped results, or one row per open lead, come back.
//!
//! Every query starts from the history as it stood at `as_of` (rows with change_time ≤ as_of),
//! with window functions giving each visit its exit and each lead its final stage at that time.
//! A lead's attributes at a past time (amount, owner, source, labels, expected close, slippage)
//! come from its latest revision by then, never from the lead as it is now, so that nothing
//! learned or forecast as of a past time sees what happened after it.
//! SQLite (3.28+) and PostgreSQL run the same SQL.

use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value};

pub mod changes;
pub mod open;
mod summary;
pub mod visits;
pub use summary::{FlowRow, WindowSummary, window_summary};

use super::StoreError;
use crate::domain::ids::{PipelineId, TenantId};

const HISTORY: &str = "WITH h AS (
    SELECT lead_id, sequence, from_stage, to_stage, change_time,
           LEAD(to_stage) OVER w AS next_stage,
           LEAD(change_time) OVER w AS exit_time,
           LAST_VALUE(to_stage) OVER (PARTITION BY lead_id ORDER BY sequence
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS final_stage
    FROM stage_changes
    WHERE tenant_id = ? AND pipeline_id = ? AND change_time <= ?
    WINDOW w AS (PARTITION BY lead_id ORDER BY sequence))";

const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The history of one pipeline as of a point in time.
pub struct HistoryScope<'a> {
    pub tenant: &'a TenantId,
    pub pipeline: &'a PipelineId,
    /// Microseconds since the epoch.
    pub as_of: i64,
    /// `as_of` is the present, so the leads table's own stage and stage entry time are the
    /// state at `as_of`, and queries of open leads can skip replaying the history.
    pub present: bool,
}

impl HistoryScope<'_> {
    fn values(&self) -> Vec<Value> {
        vec![
            self.tenant.as_str().into(),
            self.pipeline.as_str().into(),
            self.as_of.into(),
        ]
    }
}

fn placeholders(n: usize) -> String {
    vec!["?"; n.max(1)].join(", ")
}

fn stage_values(stages: &[String]) -> Vec<Value> {
    if stages.is_empty() {
        // `IN (?)` with a value no stage key can have keeps the SQL valid.
        return vec!["-".into()];
    }
    stages.iter().map(|s| s.as_str().into()).collect()
}

async fn query(
    db: &impl ConnectionTrait,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<QueryResult>, StoreError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => numbered(sql),
        _ => sql.to_owned(),
    };
    Ok(db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?)
}

/// `?` → `$1, $2, …` for PostgreSQL. The SQL here has no `?` inside string literals.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, index: usize) -> Result<T, StoreError> {
    Ok(row.try_get_by_index::<T>(index)?)
}

/// Time in stage of visits that began in [start, end), in whole hours; visits still open at
/// as_of are censored there.
pub struct DwellRow {
    pub stage: String,
    pub hours: i64,
    pub exited: bool,
    pub visits: i64,
}

/// A visit's time in stage in whole hours; an open visit is measured to the `?`, which is as_of.
fn dwell_hours() -> String {
    format!("(COALESCE(exit_time, ?) - change_time) / {MICROS_PER_HOUR}")
}

/// 1 if the visit has ended by as_of, 0 if it is censored there.
const VISIT_ENDED: &str = "CASE WHEN exit_time IS NULL THEN 0 ELSE 1 END";

pub async fn dwell_times(
    db: &impl ConnectionTrait,
    scope: &HistoryScope<'_>,
    start: i64,
    end: i64,
) -> Result<Vec<DwellRow>, StoreError> {
    let sql = format!(
        "{HISTORY} SELECT to_stage, {}, {VISIT_ENDED}, COUNT(*)
         FROM h WHERE change_time >= ? AND change_time < ? GROUP BY 1, 2, 3",
        dwell_hours()
    );
    let mut values = scope.values();
    values.extend([scope.as_of.into(), start.into(), end.into()]);
    query(db, &sql, values)
        .await?
        .iter()
        .map(|r| {
            Ok(DwellRow {
                stage: get(r, 0)?,
                hours: get(r, 1)?,
                exited: get::<i32>(r, 2)? == 1,
                visits: get(r, 3)?,
            })
        })
        .collect()
}

/// Observed transitions (from, to, count) up to as_of.
pub async fn transition_counts(
    db: &impl ConnectionTrait,
    scope: &HistoryScope<'_>,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let sql = "SELECT from_stage, to_stage, COUNT(*) FROM stage_changes
         WHERE tenant_id = ? AND pipeline_id = ? AND change_time <= ? AND from_stage <> ''
         GROUP BY from_stage, to_stage";
    query(db, sql, scope.values())
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
        .collect()
}

/// For leads won by as_of: days from entering each open stage to the first win, grouped.
pub async fn close_time_samples(
    db: &impl ConnectionTrait,
    scope: &HistoryScope<'_>,
    won_stages: &[String],
) -> Result<Vec<(String, i64, i64)>, StoreError> {
    let won = stage_values(won_stages);
    let sql = format!(
        "{HISTORY}, w AS (SELECT lead_id, MIN(change_time) AS won FROM h
                         WHERE to_stage IN ({}) GROUP BY lead_id)
         SELECT h.to_stage, (w.won - h.change_time) / {MICROS_PER_DAY}, COUNT(*)
         FROM h JOIN w ON w.lead_id = h.lead_id
         WHERE h.change_time < w.won AND h.to_stage NOT IN ({})
         GROUP BY 1, 2",
        placeholders(won.len()),
        placeholders(won.len())
    );
    let mut values = scope.values();
    values.extend(won.clone());
    values.extend(won);
    query(db, &sql, values)
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
        .collect()
}

/// A lead as it stood at as_of: its stage and its attributes then.
#[derive(Debug, Clone)]
pub struct LeadAt {
    pub lead_id: String,
    pub stage: String,
    /// When it entered that stage (µs).
    pub stage_enter_time: i64,
    pub currency: String,
    pub units: i64,
    pub nanos: i32,
    pub source: String,
    pub owner: String,
    pub labels: String,
    pub expected_close_time: Option<i64>,
    /// The stored probability of the lead now; 0 for a past as_of, where it is not used.
    pub win_probability: f64,
    /// Times the expected close time had moved later by as_of.
    pub close_date_push_count: i64,
    /// The first expected close time it was given, if it had one by as_of (µs).
    pub first_expected_close_time: Option<i64>,
}

/// Every lead whose stage at as_of is one of `stages`, optionally only in `currency`.
pub async fn leads_at(
    db: &impl ConnectionTrait,
    scope: &HistoryScope<'_>,
    stages: &[String],
    currency: Option<&str>,
) -> Result<Vec<LeadAt>, StoreError> {
    let (sql, values) = leads_at_sql(scope, stages, currency);
    query(db, &sql, values).await?.iter().map(lead_at).collect()
}

/// [`leads_at`] through the store. A present read, on a SQLite file, runs on a blocking thread
/// on a connection of its own (`store::point_reads`), since a forecast or a rescore reads every
/// open lead and the pool would hand each row across threads; on PostgreSQL it converts each
/// row as it arrives. Otherwise, or when the read in place cannot run, through the read pool.
/// Every read sees the latest committed state.
pub async fn leads_at_in(
    store: &crate::store::Store,
    scope: &HistoryScope<'_>,
    stages: &[String],
    currency: Option<&str>,
) -> Result<Vec<LeadAt>, StoreError> {
    if let Some((sql, texts)) = scope
        .present
        .then(|| leads_at_sql_in_place(scope, stages, currency))
        .flatten()
    {
        if let Some(reads) = store.point_reads.clone() {
            let read = tokio::task::spawn_blocking(move || reads.leads_at(&sql, &texts)).await;
            if let Ok(Some(leads)) = read {
                return Ok(leads);
            }
        } else if store.backend() == DbBackend::Postgres {
            return leads_at_streamed(store.reader(), &sql, &texts).await;
        }
    }
    leads_at(store.reader(), scope, stages, currency).await
}

/// [`leads_at`] on PostgreSQL, each row converted as it arrives, while the database is still
/// producing the rows after it, rather than after the last one has come.
async fn leads_at_streamed(
    db: &sea_orm::DatabaseConnection,
    sql: &str,
    texts: &[String],
) -> Result<Vec<LeadAt>, StoreError> {
    use futures::TryStreamExt;
    use sea_orm::sqlx::Row;
    // Built from the constant fragments of `leads_at_sql` and placeholders; every value is bound.
    let mut statement = sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(numbered(sql)));
    for text in texts {
        statement = statement.bind(text.as_str());
    }
    let mut rows = statement.fetch(db.get_postgres_connection_pool());
    let mut leads = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(StoreError::from_sqlx)? {
        let lead = (|| {
            Ok::<_, sea_orm::sqlx::Error>(LeadAt {
                lead_id: row.try_get(0)?,
                stage: row.try_get(1)?,
                stage_enter_time: row.try_get(2)?,
                currency: row.try_get(3)?,
                units: row.try_get(4)?,
                nanos: row.try_get(5)?,
                source: row.try_get(6)?,
                owner: row.try_get(7)?,
                labels: row.try_get(8)?,
                expected_close_time: row.try_get(9)?,
                win_probability: row.try_get(10)?,
                close_date_push_count: row.try_get(11)?,
                first_expected_close_time: row.try_get(12)?,
            })
        })()
        .map_err(StoreError::from_sqlx)?;
        leads.push(lead);
    }
    Ok(leads)
}

/// [`leads_at`]'s statement with its parameters as text, as a read in place binds them; None
/// when a parameter is not text (the form as of a past time).
pub(crate) fn leads_at_sql_in_place(
    scope: &HistoryScope<'_>,
    stages: &[String],
    currency: Option<&str>,
) -> Option<(String, Vec<String>)> {
    let (sql, values) = leads_at_sql(scope, stages, currency);
    let texts = values
        .into_iter()
        .map(|value| match value {
            Value::String(Some(text)) => Some(text),
            _ => None,
        })
        .collect::<Option<_>>()?;
    Some((sql, texts))
}

/// A row of the lead's id, stage, stage entry time and then [`LEAD_AT_COLUMNS`].
fn lead_at(r: &QueryResult) -> Result<LeadAt, StoreError> {
    Ok(LeadAt {
        lead_id: get(r, 0)?,
        stage: get(r, 1)?,
        stage_enter_time: get(r, 2)?,
        currency: get(r, 3)?,
        units: get(r, 4)?,
        nanos: get(r, 5)?,
        source: get(r, 6)?,
        owner: get(r, 7)?,
        labels: get(r, 8)?,
        expected_close_time: get(r, 9)?,
        win_probability: get(r, 10)?,
        close_date_push_count: get(r, 11)?,
        first_expected_close_time: get(r, 12)?,
    })
}

/// The plan the database chooses for `leads_at` (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on
/// PostgreSQL), one line per row, so that tests can check which index answers it.
pub async fn explain_leads_at(
    db: &impl ConnectionTrait,
    scope: &HistoryScope<'_>,
    stages: &[String],
    currency: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let (sql, values) = leads_at_sql(scope, stages, currency);
    let (explain, column) = match db.get_database_backend() {
        DbBackend::Postgres => ("EXPLAIN", 0),
        _ => ("EXPLAIN QUERY PLAN", 3),
    };
    query(db, &format!("{explain} {sql}"), values)
        .await?
        .iter()
        .map(|r| get(r, column))
        .collect()
}

fn leads_at_sql(
    scope: &HistoryScope<'_>,
    stages: &[String],
    currency: Option<&str>,
) -> (String, Vec<Value>) {
    let stage_list = stage_values(stages);
    let currency_clause = if currency.is_some() {
        "AND l.amount_currency = ?"
    } else {
        ""
    };
    let (sql, mut values) = if scope.present {
        // One indexed range of `leads_by_stage` instead of a window over all of the history:
        // every stage change updates the lead row in the same transaction.
        let sql = format!(
            "SELECT l.id, l.stage, l.stage_enter_time, {LEAD_AT_COLUMNS}
             FROM leads l
             WHERE l.tenant_id = ? AND l.pipeline_id = ? AND l.stage IN ({}) {currency_clause}",
            placeholders(stage_list.len())
        );
        let values: Vec<Value> = vec![scope.tenant.as_str().into(), scope.pipeline.as_str().into()];
        (sql, values)
    } else {
        // The stage and its entry time from the stage history, every other attribute from
        // the lead's latest revision by as_of (through `lead_revisions_by_lead_time`).
        let sql = format!(
            "{HISTORY} SELECT h.lead_id, h.to_stage, h.change_time, {REVISION_AT_COLUMNS}
             FROM h JOIN lead_revisions l ON l.tenant_id = ? AND l.lead_id = h.lead_id
              AND l.revision = (SELECT x.revision FROM lead_revisions x
                                WHERE x.tenant_id = ? AND x.lead_id = h.lead_id
                                  AND x.change_time <= ?
                                ORDER BY x.change_time DESC, x.revision DESC LIMIT 1)
             WHERE h.exit_time IS NULL AND h.to_stage IN ({}) {currency_clause}",
            placeholders(stage_list.len())
        );
        let mut values = scope.values();
        values.extend([
            scope.tenant.as_str().into(),
            scope.tenant.as_str().into(),
            scope.as_of.into(),
        ]);
        (sql, values)
    };
    values.extend(stage_list);
    if let Some(currency) = currency {
        values.push(currency.into());
    }
    (sql, values)
}

/// The lead columns of a `LeadAt` after its id, stage and stage entry time.
const LEAD_AT_COLUMNS: &str = "l.amount_currency, l.amount_units, l.amount_nanos, l.source, \
    l.owner, l.labels, l.expected_close_time, l.win_probability, l.close_date_push_count, \
    l.first_expected_close_time";

/// The same columns from a lead revision, which keeps no probability.
const REVISION_AT_COLUMNS: &str = "l.amount_currency, l.amount_units, l.amount_nanos, l.source, \
    l.owner, l.labels, l.expected_close_time, CAST(0 AS DOUBLE PRECISION), \
    l.close_date_push_count, l.first_expected_close_time";

/// Wins (entries into a won stage) in [start, end) of leads in `currency`: (time, units, nanos),
/// with the amount the lead had when it was won. With `created_by`, only leads created by then.
#[allow(clippy::too_many_arguments)]
pub async fn wins_between(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    won_stages: &[String],
    currency: &str,
    start: i64,
    end: i64,
    created_by: Option<i64>,
) -> Result<Vec<(i64, i64, i32)>, StoreError> {
    let won = stage_values(won_stages);
    // Each change carries the amount it left the lead with. A change recorded before it did has
    // NULL there, and only then (COALESCE stops at its first value, on both backends) is the
    // amount looked up in the lead's revision in effect at the change. A backtest, which counts
    // only the leads that existed at its point in time, also probes each win's lead.
    let recorded = |column: &str| {
        format!(
            "COALESCE(h.{column}, (SELECT x.{column} FROM lead_revisions x
                WHERE x.tenant_id = h.tenant_id AND x.lead_id = h.lead_id
                  AND x.change_time <= h.change_time
                ORDER BY x.change_time DESC, x.revision DESC LIMIT 1))"
        )
    };
    let created_by_filter = match created_by {
        Some(_) => {
            " AND EXISTS (SELECT 1 FROM lead_revisions x
                          WHERE x.tenant_id = h.tenant_id AND x.lead_id = h.lead_id
                            AND x.create_time <= ?)"
        }
        None => "",
    };
    let sql = format!(
        "SELECT h.change_time, {}, {}
         FROM stage_changes h
         WHERE h.tenant_id = ? AND h.pipeline_id = ? AND h.to_stage IN ({})
           AND h.change_time >= ? AND h.change_time < ? AND {} = ?{created_by_filter}",
        recorded("amount_units"),
        recorded("amount_nanos"),
        placeholders(won.len()),
        recorded("amount_currency"),
    );
    let mut values: Vec<Value> = vec![tenant.as_str().into(), pipeline.as_str().into()];
    values.extend(won);
    values.extend([start.into(), end.into(), currency.into()]);
    values.extend(created_by.map(Value::from));
    query(db, &sql, values)
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
        .collect()
}

/// Sets the learned probability (and expected value) of each listed lead.
pub async fn set_win_probabilities(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    updates: &[(String, f64, f64)],
) -> Result<(), StoreError> {
    let sql =
        "UPDATE leads SET win_probability = ?, expected_value = ? WHERE tenant_id = ? AND id = ?";
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => numbered(sql),
        _ => sql.to_owned(),
    };
    for (id, probability, expected_value) in updates {
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            sql.clone(),
            [
                (*probability).into(),
                (*expected_value).into(),
                tenant.as_str().into(),
                id.as_str().into(),
            ],
        ))
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            super::numbered("a = ? AND b IN (?, ?)"),
            "a = $1 AND b IN ($2, $3)"
        );
    }
}
