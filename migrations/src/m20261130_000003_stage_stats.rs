//! Stage visits as data: per (tenant, pipeline, day) aggregates of the visits that began that
//! day, the leads created and the leads first won, which GetPipelineMetrics and ListStuckLeads
//! read instead of replaying the history (`leadpipe_domain::forecast::visits` defines every
//! row). Every write of a lead keeps them up to date in its transaction; this migration fills
//! them from the history recorded before it, one page of leads at a time.

use std::collections::HashMap;

use leadpipe_domain::forecast::visits::{Aggregates, Change, LeadVisits, contributions};
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};

const BACKFILL_BATCH: u64 = 1000;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StageStats {
    Table,
    TenantId,
    PipelineId,
    Day,
    Kind,
    Stage,
    Other,
    K,
    N,
    Units,
    Nanos,
}

#[derive(DeriveIden)]
enum Leads {
    TenantId,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(StageStats::Table)
                    .col(ColumnDef::new(StageStats::TenantId).text().not_null())
                    .col(ColumnDef::new(StageStats::PipelineId).text().not_null())
                    .col(ColumnDef::new(StageStats::Day).big_integer().not_null())
                    .col(ColumnDef::new(StageStats::Kind).big_integer().not_null())
                    .col(ColumnDef::new(StageStats::Stage).text().not_null())
                    .col(ColumnDef::new(StageStats::Other).text().not_null())
                    .col(ColumnDef::new(StageStats::K).big_integer().not_null())
                    .col(ColumnDef::new(StageStats::N).big_integer().not_null())
                    .col(ColumnDef::new(StageStats::Units).big_integer().not_null())
                    .col(ColumnDef::new(StageStats::Nanos).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(StageStats::TenantId)
                            .col(StageStats::PipelineId)
                            .col(StageStats::Day)
                            .col(StageStats::Kind)
                            .col(StageStats::Stage)
                            .col(StageStats::Other)
                            .col(StageStats::K),
                    )
                    .to_owned(),
            )
            .await?;
        backfill(manager.get_connection()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StageStats::Table).to_owned())
            .await
    }
}

/// The won stage keys of every pipeline, by (tenant, pipeline).
async fn won_stages(
    db: &impl ConnectionTrait,
) -> Result<HashMap<(String, String), Vec<String>>, DbErr> {
    let rows = db
        .query_all(
            &Query::select()
                .columns(["tenant_id", "id", "definition"].map(Alias::new))
                .from(Alias::new("pipelines"))
                .to_owned(),
        )
        .await?;
    let mut out = HashMap::new();
    for row in rows {
        let definition: String = row.try_get("", "definition")?;
        let definition: serde_json::Value = serde_json::from_str(&definition)
            .map_err(|e| DbErr::Custom(format!("pipeline definition: {e}")))?;
        let won = definition["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                s["kind"]
                    .as_str()
                    .is_some_and(|k| k.eq_ignore_ascii_case("won"))
            })
            .filter_map(|s| s["key"].as_str().map(str::to_owned))
            .collect();
        out.insert((row.try_get("", "tenant_id")?, row.try_get("", "id")?), won);
    }
    Ok(out)
}

async fn backfill(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    let won = won_stages(db).await?;
    let mut after: Option<(String, String)> = None;
    loop {
        let mut select = Query::select();
        select
            .columns(
                [
                    "tenant_id",
                    "id",
                    "pipeline_id",
                    "amount_currency",
                    "amount_units",
                    "amount_nanos",
                ]
                .map(Alias::new),
            )
            .from(Alias::new("leads"))
            .order_by(Leads::TenantId, Order::Asc)
            .order_by(Leads::Id, Order::Asc)
            .limit(BACKFILL_BATCH);
        if let Some((tenant, id)) = &after {
            select.cond_where(
                Cond::any()
                    .add(Expr::col(Leads::TenantId).gt(tenant.as_str()))
                    .add(
                        Cond::all()
                            .add(Expr::col(Leads::TenantId).eq(tenant.as_str()))
                            .add(Expr::col(Leads::Id).gt(id.as_str())),
                    ),
            );
        }
        let rows = db.query_all(&select).await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = Some((
            last.try_get::<String>("", "tenant_id")?,
            last.try_get::<String>("", "id")?,
        ));
        let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
        for row in &rows {
            by_tenant
                .entry(row.try_get("", "tenant_id")?)
                .or_default()
                .push(row.try_get("", "id")?);
        }
        let mut changes: HashMap<(String, String), Vec<(String, Change)>> = HashMap::new();
        for (tenant, ids) in &by_tenant {
            let history = db
                .query_all(
                    &Query::select()
                        .columns(
                            [
                                "lead_id",
                                "pipeline_id",
                                "from_stage",
                                "to_stage",
                                "change_time",
                            ]
                            .map(Alias::new),
                        )
                        .from(Alias::new("stage_changes"))
                        .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant.as_str()))
                        .and_where(Expr::col(Alias::new("lead_id")).is_in(ids.iter().cloned()))
                        .order_by(Alias::new("sequence"), Order::Asc)
                        .to_owned(),
                )
                .await?;
            for row in history {
                changes
                    .entry((tenant.clone(), row.try_get("", "lead_id")?))
                    .or_default()
                    .push((
                        row.try_get("", "pipeline_id")?,
                        Change {
                            from_stage: row.try_get("", "from_stage")?,
                            to_stage: row.try_get("", "to_stage")?,
                            time: row.try_get("", "change_time")?,
                        },
                    ));
            }
        }
        let mut sums: HashMap<(String, String), Aggregates> = HashMap::new();
        for row in &rows {
            let tenant: String = row.try_get("", "tenant_id")?;
            let id: String = row.try_get("", "id")?;
            let pipeline: String = row.try_get("", "pipeline_id")?;
            let history = changes.remove(&(tenant.clone(), id)).unwrap_or_default();
            let lead = LeadVisits {
                changes: history
                    .into_iter()
                    .filter(|(p, _)| *p == pipeline)
                    .map(|(_, c)| c)
                    .collect(),
                currency: row.try_get("", "amount_currency")?,
                units: row.try_get("", "amount_units")?,
                nanos: row.try_get("", "amount_nanos")?,
            };
            let key = (tenant, pipeline);
            let won_stages = won.get(&key).cloned().unwrap_or_default();
            let is_won = |s: &str| won_stages.iter().any(|w| w == s);
            let total = sums.entry(key).or_default();
            for (k, c) in contributions(&lead, &is_won) {
                let e = total.entry(k).or_default();
                e.n += c.n;
                e.units += c.units;
                e.nanos += c.nanos;
            }
        }
        for ((tenant, pipeline), rows) in sums {
            let rows: Vec<_> = rows.into_iter().collect();
            upsert(db, &tenant, &pipeline, &rows).await?;
        }
    }
}

/// Adds each row's counts to the stored ones, creating the rows that are missing. The same
/// statement as the store's.
pub async fn upsert(
    db: &impl ConnectionTrait,
    tenant: &str,
    pipeline: &str,
    rows: &[(
        leadpipe_domain::forecast::visits::Key,
        leadpipe_domain::forecast::visits::Count,
    )],
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    for chunk in rows.chunks(UPSERT_ROWS) {
        let (sql, values) = upsert_statement(tenant, pipeline, chunk, 1);
        db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(())
}

/// The most rows one upsert statement adds, which keeps it within every SQLite build's limit
/// on parameters.
pub const UPSERT_ROWS: usize = 50;

/// The upsert of `rows` (at most [`UPSERT_ROWS`]), its parameters numbered `$first` on, so that
/// it can join a batch of statements whose parameters come before.
pub fn upsert_statement(
    tenant: &str,
    pipeline: &str,
    rows: &[(
        leadpipe_domain::forecast::visits::Key,
        leadpipe_domain::forecast::visits::Count,
    )],
    first: usize,
) -> (String, Vec<sea_orm_migration::sea_orm::Value>) {
    let mut sql = String::from(
        "INSERT INTO stage_stats (tenant_id, pipeline_id, day, kind, stage, other, k, n, units, \
         nanos) VALUES ",
    );
    let mut values: Vec<sea_orm_migration::sea_orm::Value> = Vec::with_capacity(rows.len() * 10);
    for (i, (key, count)) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for j in 0..10 {
            if j > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", first + values.len() + j));
        }
        sql.push(')');
        values.extend([
            tenant.into(),
            pipeline.into(),
            key.day.into(),
            (key.kind as i64).into(),
            key.stage.as_str().into(),
            key.other.as_str().into(),
            key.k.into(),
            count.n.into(),
            count.units.into(),
            count.nanos.into(),
        ]);
    }
    sql.push_str(
        " ON CONFLICT (tenant_id, pipeline_id, day, kind, stage, other, k) DO UPDATE SET \
         n = stage_stats.n + excluded.n, units = stage_stats.units + excluded.units, \
         nanos = stage_stats.nanos + excluded.nanos",
    );
    (sql, values)
}
