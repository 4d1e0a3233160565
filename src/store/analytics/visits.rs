//! The stage aggregates (`stage_stats`): written in the caller's transaction on every write of
//! a lead, read by GetPipelineMetrics and ListStuckLeads for the present. What each row counts
//! is defined in the domain (`forecast::visits`).

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, Value};

use super::{get, placeholders, query, stage_values};
use crate::domain::forecast::visits::{
    Aggregates, Change, Count, HistorySummary, Key, Kind, LeadVisits, MICROS_PER_HOUR,
};
use crate::domain::ids::{PipelineId, TenantId};
use crate::store::{StoreError, WriteTx};

/// Adds `delta` to the pipeline's aggregates: one statement per 50 rows, rows in key order so
/// that concurrent writers on PostgreSQL take their row locks in the same order.
pub async fn add(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    delta: &Aggregates,
) -> Result<(), StoreError> {
    if delta.is_empty() {
        return Ok(());
    }
    migration::upsert_stage_stats(db, tenant.as_str(), pipeline.as_str(), &rows_of(delta)).await?;
    Ok(())
}

fn rows_of(delta: &Aggregates) -> Vec<(Key, Count)> {
    delta.iter().map(|(k, c)| (k.clone(), *c)).collect()
}

/// [`add`], in `tx`'s last batch of statements (`WriteTx::execute_later`) when it fits in one
/// statement, as a write of a lead's few visits does.
pub async fn add_later(
    tx: &WriteTx,
    tenant: &TenantId,
    pipeline: &PipelineId,
    delta: &Aggregates,
) -> Result<(), StoreError> {
    if delta.len() > migration::STAGE_STATS_UPSERT_ROWS {
        return add(tx, tenant, pipeline, delta).await;
    }
    if delta.is_empty() {
        return Ok(());
    }
    let rows = rows_of(delta);
    let (tenant, pipeline) = (tenant.clone(), pipeline.clone());
    tx.execute_later(Box::new(move |first| {
        migration::stage_stats_upsert_statement(tenant.as_str(), pipeline.as_str(), &rows, first)
    }))
    .await
}

/// The aggregate rows of days [first, end), summed over the days. An outcome row is left out
/// unless the lead's previous visit to its stage was before `first` (see `WindowCounts`).
pub async fn days(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    (first, end): (i64, i64),
) -> Result<Vec<(Key, Count)>, StoreError> {
    if first >= end {
        return Ok(Vec::new());
    }
    let sql = "SELECT kind, stage, other, k, CAST(SUM(n) AS BIGINT), CAST(SUM(units) AS BIGINT),
                      CAST(SUM(nanos) AS BIGINT)
               FROM stage_stats
               WHERE tenant_id = ? AND pipeline_id = ? AND day >= ? AND day < ?
                 AND (kind <> ? OR k < ?)
               GROUP BY kind, stage, other, k";
    let values: Vec<Value> = vec![
        tenant.as_str().into(),
        pipeline.as_str().into(),
        first.into(),
        end.into(),
        (Kind::Outcome as i64).into(),
        first.into(),
    ];
    let mut out = Vec::new();
    for row in query(db, sql, values).await? {
        let kind: i64 = get(&row, 0)?;
        let kind = Kind::from_i64(kind)
            .ok_or_else(|| StoreError::Corrupt(format!("stage_stats row of kind {kind}")))?;
        out.push((
            Key {
                day: first,
                kind,
                stage: get(&row, 1)?,
                other: get(&row, 2)?,
                k: get(&row, 3)?,
            },
            Count {
                n: get(&row, 4)?,
                units: get(&row, 5)?,
                nanos: get(&row, 6)?,
            },
        ));
    }
    Ok(out)
}

/// The leads of the pipeline with a change into one of `stages` in any of the ranges [a, b).
pub async fn leads_changed_in(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    stages: &[String],
    ranges: &[(i64, i64)],
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let stage_list = stage_values(stages);
    for &(a, b) in ranges {
        if a >= b {
            continue;
        }
        // Through `stage_changes_by_stage_time`, one range per stage. Without DISTINCT, which
        // would steer SQLite's planner to the index ordered by lead, a scan of the tenant's
        // whole history; the ids are deduplicated below.
        let sql = format!(
            "SELECT lead_id FROM stage_changes
             WHERE tenant_id = ? AND pipeline_id = ? AND to_stage IN ({})
               AND change_time >= ? AND change_time < ?",
            placeholders(stage_list.len())
        );
        let mut values: Vec<Value> = vec![tenant.as_str().into(), pipeline.as_str().into()];
        values.extend(stage_list.clone());
        values.extend([a.into(), b.into()]);
        for row in query(db, &sql, values).await? {
            out.push(get::<String>(&row, 0)?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether the pipeline has a change into one of `stages` in [a, b), through
/// `stage_changes_by_stage_time`.
pub async fn any_change_in(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    stages: &[String],
    (a, b): (i64, i64),
) -> Result<bool, StoreError> {
    if a >= b {
        return Ok(false);
    }
    let stage_list = stage_values(stages);
    let sql = format!(
        "SELECT 1 FROM stage_changes
         WHERE tenant_id = ? AND pipeline_id = ? AND to_stage IN ({})
           AND change_time >= ? AND change_time < ?
         LIMIT 1",
        placeholders(stage_list.len())
    );
    let mut values: Vec<Value> = vec![tenant.as_str().into(), pipeline.as_str().into()];
    values.extend(stage_list);
    values.extend([a.into(), b.into()]);
    Ok(!query(db, &sql, values).await?.is_empty())
}

/// Each listed lead's history in the pipeline and its amount now, by lead id. Leads that no
/// longer exist are left out (deleting a lead deletes its history).
pub async fn lead_visits(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    leads: &[String],
) -> Result<HashMap<String, LeadVisits>, StoreError> {
    let mut out: HashMap<String, LeadVisits> = HashMap::new();
    for chunk in leads.chunks(500) {
        let ids: Vec<Value> = chunk.iter().map(|id| id.as_str().into()).collect();
        let sql = format!(
            "SELECT id, amount_currency, amount_units, amount_nanos FROM leads
             WHERE tenant_id = ? AND id IN ({})",
            placeholders(ids.len())
        );
        let mut values: Vec<Value> = vec![tenant.as_str().into()];
        values.extend(ids.clone());
        for row in query(db, &sql, values).await? {
            out.insert(
                get(&row, 0)?,
                LeadVisits {
                    changes: Vec::new(),
                    currency: get(&row, 1)?,
                    units: get(&row, 2)?,
                    nanos: get(&row, 3)?,
                },
            );
        }
        let sql = format!(
            "SELECT lead_id, from_stage, to_stage, change_time FROM stage_changes
             WHERE tenant_id = ? AND pipeline_id = ? AND lead_id IN ({})
             ORDER BY lead_id, sequence",
            placeholders(ids.len())
        );
        let mut values: Vec<Value> = vec![tenant.as_str().into(), pipeline.as_str().into()];
        values.extend(ids);
        for row in query(db, &sql, values).await? {
            let lead: String = get(&row, 0)?;
            if let Some(visits) = out.get_mut(&lead) {
                visits.changes.push(Change {
                    from_stage: get(&row, 1)?,
                    to_stage: get(&row, 2)?,
                    time: get(&row, 3)?,
                });
            }
        }
    }
    Ok(out)
}

/// One lead's history in a pipeline after a sequence number, oldest first: (from stage, to
/// stage, change time, sequence). Parameters: tenant, lead, pipeline, the sequence after which
/// to read ([`FROM_THE_START`] for all).
pub const LEAD_HISTORY_SQL: &str = "SELECT from_stage, to_stage, change_time, sequence
    FROM stage_changes WHERE tenant_id = ? AND lead_id = ? AND pipeline_id = ? AND sequence > ?
    ORDER BY sequence";

/// The sequence number before every change's.
pub const FROM_THE_START: i64 = i64::MIN;

/// One lead's history in the pipeline, oldest first: one range of `stage_changes_by_lead`.
pub async fn lead_history(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    lead: &str,
) -> Result<Vec<Change>, StoreError> {
    let values: Vec<Value> = vec![
        tenant.as_str().into(),
        lead.into(),
        pipeline.as_str().into(),
        FROM_THE_START.into(),
    ];
    query(db, LEAD_HISTORY_SQL, values)
        .await?
        .iter()
        .map(|row| {
            Ok(Change {
                from_stage: get(row, 0)?,
                to_stage: get(row, 1)?,
                time: get(row, 2)?,
            })
        })
        .collect()
}

/// `summary` of one lead's history up to sequence number `after`, continued with the rest of
/// the history as its rows are read: one range of `stage_changes_by_lead`.
pub async fn history_summary_after(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    lead: &str,
    mut summary: HistorySummary,
    after: i64,
) -> Result<HistorySummary, StoreError> {
    let values: Vec<Value> = vec![
        tenant.as_str().into(),
        lead.into(),
        pipeline.as_str().into(),
        after.into(),
    ];
    for row in query(db, LEAD_HISTORY_SQL, values).await? {
        let (from, to): (String, String) = (get(&row, 0)?, get(&row, 1)?);
        summary.push(&from, &to, get(&row, 2)?);
    }
    Ok(summary)
}

/// The visits still open in `stage` that began in [start, end), which time in stage counts as
/// censored: (whole hours from their entry to `as_of`, visits), read from `leads_by_stage` alone.
pub async fn open_visits(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    stage: &str,
    (start, end): (i64, i64),
    as_of: i64,
) -> Result<Vec<(i64, i64)>, StoreError> {
    // Integer division truncates toward zero on both backends, as Rust's does.
    let sql = "SELECT (? - stage_enter_time) / ?, CAST(COUNT(*) AS BIGINT) FROM leads
               WHERE tenant_id = ? AND pipeline_id = ? AND stage = ?
                 AND stage_enter_time >= ? AND stage_enter_time < ?
               GROUP BY 1";
    let values: Vec<Value> = vec![
        as_of.into(),
        MICROS_PER_HOUR.into(),
        tenant.as_str().into(),
        pipeline.as_str().into(),
        stage.into(),
        start.into(),
        end.into(),
    ];
    query(db, sql, values)
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
        .collect()
}

/// Deletes every aggregate row of the pipeline.
pub async fn clear(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
) -> Result<(), StoreError> {
    let backend = db.get_database_backend();
    let sql = "DELETE FROM stage_stats WHERE tenant_id = ? AND pipeline_id = ?";
    let sql = match backend {
        sea_orm::DbBackend::Postgres => super::numbered(sql),
        _ => sql.to_owned(),
    };
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        backend,
        sql,
        vec![tenant.as_str().into(), pipeline.as_str().into()],
    ))
    .await?;
    Ok(())
}

/// Up to `limit` ids of the pipeline's leads after `after`, in id order.
pub async fn lead_ids(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    after: &str,
    limit: u64,
) -> Result<Vec<String>, StoreError> {
    let sql = "SELECT id FROM leads WHERE tenant_id = ? AND pipeline_id = ? AND id > ?
               ORDER BY id LIMIT ?";
    let values: Vec<Value> = vec![
        tenant.as_str().into(),
        pipeline.as_str().into(),
        after.into(),
        (limit as i64).into(),
    ];
    query(db, sql, values)
        .await?
        .iter()
        .map(|row| get(row, 0))
        .collect()
}
