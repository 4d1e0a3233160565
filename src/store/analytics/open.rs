//! A pipeline's open leads at the present, grouped as they score alike: a report reads a few rows
//! per stage from `open_lead_groups`, which triggers on `leads` keep in step with every write of
//! a lead in its transaction (see the migration that creates it), instead of one row per open
//! lead. The lead rows are the present state, since every write keeps a lead's stage, stage
//! entry time and amount in step with its history in one transaction.

use sea_orm::{ConnectionTrait, Value};

use super::{LEAD_AT_COLUMNS, LeadAt, get, lead_at, placeholders, query, stage_values};
use crate::domain::ids::{PipelineId, TenantId};
use crate::store::StoreError;

use migration::OPEN_GROUP_SPLIT as SPLIT;

const MICROS_PER_DAY: f64 = 86_400_000_000.0;

/// Open leads that score alike: the same stage, currency, amount band and attributes.
#[derive(Debug, Clone, Default)]
pub struct OpenGroup {
    pub stage: String,
    /// Empty for leads without an amount.
    pub currency: String,
    /// The position of the amount band (`domain::forecast::band_at`).
    pub band: usize,
    pub source: String,
    pub owner: String,
    /// As stored: a JSON object.
    pub labels: String,
    pub leads: i64,
    /// The summed amounts: whole units, and nanos not carried into units. Exact: no sum of
    /// stored amounts overflows here, however large.
    pub units: i128,
    pub nanos: i64,
    /// Leads whose expected close time moved later at least once.
    pub pushed: i64,
    /// Of those, the leads with both an expected and a first expected close time.
    pub push_measured: i64,
    /// Their summed (expected − first expected close time), in days.
    pub push_days: f64,
}

/// The open leads of `stages` grouped by what scoring reads of them (see [`OpenGroup`]), read
/// from the kept groups: their number, not the open leads', decides the cost.
pub async fn open_groups(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    stages: &[String],
) -> Result<Vec<OpenGroup>, StoreError> {
    let stage_list = stage_values(stages);
    let sql = format!(
        "SELECT stage, amount_currency, band, source, owner, labels, leads, units_high,
                units_low, nanos, pushed, push_measured, push_high, push_low
         FROM open_lead_groups
         WHERE tenant_id = ? AND pipeline_id = ? AND stage IN ({}) AND leads <> 0",
        placeholders(stage_list.len()),
    );
    let mut values: Vec<Value> = vec![tenant.as_str().into(), pipeline.as_str().into()];
    values.extend(stage_list);
    let split = i128::from(SPLIT);
    query(db, &sql, values)
        .await?
        .iter()
        .map(|r| {
            let band: i64 = get(r, 2)?;
            let push_micros =
                i128::from(get::<i64>(r, 12)?) * split + i128::from(get::<i64>(r, 13)?);
            Ok(OpenGroup {
                stage: get(r, 0)?,
                currency: get(r, 1)?,
                band: usize::try_from(band)
                    .map_err(|_| StoreError::Corrupt(format!("amount band {band}")))?,
                source: get(r, 3)?,
                owner: get(r, 4)?,
                labels: get(r, 5)?,
                leads: get(r, 6)?,
                units: i128::from(get::<i64>(r, 7)?) * split + i128::from(get::<i64>(r, 8)?),
                nanos: get(r, 9)?,
                pushed: get(r, 10)?,
                push_measured: get(r, 11)?,
                push_days: push_micros as f64 / MICROS_PER_DAY,
            })
        })
        .collect()
}

/// Open leads of `stage` that entered it at or before `entered_by` (µs), through
/// `leads_by_stage` alone.
pub async fn entered_by(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    stage: &str,
    entered_by: i64,
) -> Result<i64, StoreError> {
    let sql = "SELECT CAST(COUNT(*) AS BIGINT) FROM leads
               WHERE tenant_id = ? AND pipeline_id = ? AND stage = ? AND stage_enter_time <= ?";
    let values: Vec<Value> = vec![
        tenant.as_str().into(),
        pipeline.as_str().into(),
        stage.into(),
        entered_by.into(),
    ];
    let rows = query(db, sql, values).await?;
    rows.first().map_or(Ok(0), |r| get(r, 0))
}

/// The open leads of `stage` that entered it at or before `entered_by` (µs), as they stand
/// now, through `leads_by_stage`.
pub async fn leads_entered_by(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    pipeline: &PipelineId,
    stage: &str,
    entered_by: i64,
) -> Result<Vec<LeadAt>, StoreError> {
    let sql = format!(
        "SELECT l.id, l.stage, l.stage_enter_time, {LEAD_AT_COLUMNS} FROM leads l
         WHERE l.tenant_id = ? AND l.pipeline_id = ? AND l.stage = ? AND l.stage_enter_time <= ?"
    );
    let values: Vec<Value> = vec![
        tenant.as_str().into(),
        pipeline.as_str().into(),
        stage.into(),
        entered_by.into(),
    ];
    query(db, &sql, values).await?.iter().map(lead_at).collect()
}
