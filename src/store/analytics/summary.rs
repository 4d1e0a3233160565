//! Everything GetPipelineMetrics reads from the history, in one statement.
//!
//! Each grouping needs the window functions over all of the pipeline's history (a visit's exit
//! is the lead's next change, its outcome the lead's last). Run as separate queries, they
//! replayed that history six times. Here the window is computed once, materialized, and each
//! grouping is one branch of a `UNION ALL` over it, tagged with its kind.

use sea_orm::ConnectionTrait;

use super::{
    DwellRow, HISTORY, HistoryScope, MICROS_PER_HOUR, VISIT_ENDED, dwell_hours, get, placeholders,
    query, stage_values,
};
use crate::store::StoreError;

/// Visits that began in the window, grouped by stage and the stage that followed.
pub struct FlowRow {
    pub stage: String,
    pub next_stage: Option<String>,
    pub visits: i64,
}

/// The groupings of the visits that began in [start, end) and of the leads created or first won
/// then; stages are as of the scope's `as_of`.
#[derive(Default)]
pub struct WindowSummary {
    pub flows: Vec<FlowRow>,
    /// (stage entered, final stage, distinct leads).
    pub outcomes: Vec<(String, String, i64)>,
    /// Time in stage; visits still open at as_of are censored there.
    pub dwell: Vec<DwellRow>,
    /// Leads created, by final stage: (final stage, leads).
    pub creations: Vec<(String, i64)>,
    /// Creation-to-first-win times of leads first won: (whole hours, leads).
    pub cycles: Vec<(i64, i64)>,
    /// Per currency, leads first won: (currency, summed units, summed nanos, leads).
    pub won_amounts: Vec<(String, i64, i64, i64)>,
}

const FLOW: i64 = 1;
const OUTCOME: i64 = 2;
const DWELL: i64 = 3;
const CREATION: i64 = 4;
const CYCLE: i64 = 5;
const WON_AMOUNT: i64 = 6;

/// Columns of every branch: kind, two texts, three numbers, a count. Explicit casts keep
/// PostgreSQL's UNION type resolution from depending on which branch has the NULLs.
fn sql(won_placeholders: &str) -> String {
    let history = HISTORY.replacen("WITH h AS (", "WITH h AS MATERIALIZED (", 1);
    let in_window = "change_time >= ? AND change_time < ?";
    let none = "CAST(NULL AS TEXT)";
    let no_number = "CAST(NULL AS BIGINT)";
    let dwell_hours = dwell_hours();
    format!(
        "{history},
         c AS MATERIALIZED (
            SELECT lead_id,
                   MIN(CASE WHEN from_stage = '' THEN change_time END) AS created,
                   MIN(CASE WHEN to_stage IN ({won_placeholders}) THEN change_time END) AS won
            FROM h GROUP BY lead_id)
         SELECT CAST({FLOW} AS BIGINT), to_stage, next_stage, {no_number}, {no_number},
                CAST(COUNT(*) AS BIGINT)
           FROM h WHERE {in_window} GROUP BY to_stage, next_stage
         UNION ALL
         SELECT CAST({OUTCOME} AS BIGINT), to_stage, final_stage, {no_number}, {no_number},
                CAST(COUNT(DISTINCT lead_id) AS BIGINT)
           FROM h WHERE {in_window} GROUP BY to_stage, final_stage
         UNION ALL
         SELECT CAST({DWELL} AS BIGINT), to_stage, {none},
                CAST({dwell_hours} AS BIGINT), CAST({VISIT_ENDED} AS BIGINT),
                CAST(COUNT(*) AS BIGINT)
           FROM h WHERE {in_window} GROUP BY 2, 4, 5
         UNION ALL
         SELECT CAST({CREATION} AS BIGINT), final_stage, {none}, {no_number}, {no_number},
                CAST(COUNT(*) AS BIGINT)
           FROM h WHERE from_stage = '' AND {in_window} GROUP BY final_stage
         UNION ALL
         SELECT CAST({CYCLE} AS BIGINT), {none}, {none},
                CAST((won - created) / {MICROS_PER_HOUR} AS BIGINT), {no_number},
                CAST(COUNT(*) AS BIGINT)
           FROM c WHERE won >= ? AND won < ? AND created IS NOT NULL GROUP BY 4
         UNION ALL
         SELECT CAST({WON_AMOUNT} AS BIGINT), l.amount_currency, {none},
                CAST(SUM(l.amount_units) AS BIGINT), CAST(SUM(l.amount_nanos) AS BIGINT),
                CAST(COUNT(*) AS BIGINT)
           FROM c JOIN leads l ON l.tenant_id = ? AND l.id = c.lead_id
          WHERE c.won >= ? AND c.won < ? AND l.amount_currency <> ''
          GROUP BY l.amount_currency"
    )
}

pub async fn window_summary(
    db: &impl ConnectionTrait,
    scope: &HistoryScope<'_>,
    won_stages: &[String],
    start: i64,
    end: i64,
) -> Result<WindowSummary, StoreError> {
    let won = stage_values(won_stages);
    let sql = sql(&placeholders(won.len()));
    // In the order the placeholders appear.
    let mut values = scope.values();
    values.extend(won);
    let window = [start.into(), end.into()];
    values.extend(window.clone()); // flows
    values.extend(window.clone()); // outcomes
    values.push(scope.as_of.into()); // open visits are censored at as_of
    values.extend(window.clone()); // dwell
    values.extend(window.clone()); // creations
    values.extend(window.clone()); // cycles
    values.push(scope.tenant.as_str().into());
    values.extend(window); // won amounts

    let mut summary = WindowSummary::default();
    for row in query(db, &sql, values).await? {
        let count: i64 = get(&row, 5)?;
        match get::<i64>(&row, 0)? {
            FLOW => summary.flows.push(FlowRow {
                stage: get(&row, 1)?,
                next_stage: get(&row, 2)?,
                visits: count,
            }),
            OUTCOME => summary.outcomes.push((get(&row, 1)?, get(&row, 2)?, count)),
            DWELL => summary.dwell.push(DwellRow {
                stage: get(&row, 1)?,
                hours: get(&row, 3)?,
                exited: get::<i64>(&row, 4)? == 1,
                visits: count,
            }),
            CREATION => summary.creations.push((get(&row, 1)?, count)),
            CYCLE => summary.cycles.push((get(&row, 3)?, count)),
            WON_AMOUNT => {
                summary
                    .won_amounts
                    .push((get(&row, 1)?, get(&row, 3)?, get(&row, 4)?, count))
            }
            kind => {
                return Err(StoreError::Corrupt(format!(
                    "window summary row of unknown kind {kind}"
                )));
            }
        }
    }
    Ok(summary)
}
