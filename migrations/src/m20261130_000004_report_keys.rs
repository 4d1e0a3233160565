//! Keys shaped for the reports that read them.
//!
//! - `stage_stats` is keyed by what a report groups on (kind, stage, other, k) before the day,
//!   so that summing a window's days reads the rows in group order instead of sorting them; on
//!   SQLite the table is `WITHOUT ROWID`, so the key holds the counts and no second lookup is
//!   needed.
//! - `leads_by_stage` also holds `stage_enter_time`, so that the open visits a report censors
//!   are read from the index alone.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE_STAGE_STATS: &str = "
    CREATE TABLE stage_stats_by_group (
        tenant_id TEXT NOT NULL, pipeline_id TEXT NOT NULL, kind INTEGER NOT NULL,
        stage TEXT NOT NULL, other TEXT NOT NULL, k INTEGER NOT NULL, day INTEGER NOT NULL,
        n INTEGER NOT NULL, units INTEGER NOT NULL, nanos INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, pipeline_id, kind, stage, other, k, day)
    ) WITHOUT ROWID;
    INSERT INTO stage_stats_by_group
        SELECT tenant_id, pipeline_id, kind, stage, other, k, day, n, units, nanos
        FROM stage_stats;
    DROP TABLE stage_stats;
    ALTER TABLE stage_stats_by_group RENAME TO stage_stats;";

const POSTGRES_STAGE_STATS: &str = "
    ALTER TABLE stage_stats DROP CONSTRAINT stage_stats_pkey,
        ADD PRIMARY KEY (tenant_id, pipeline_id, kind, stage, other, k, day);";

const LEADS_BY_STAGE: &str = "
    DROP INDEX leads_by_stage;
    CREATE INDEX leads_by_stage ON leads (tenant_id, pipeline_id, stage, stage_enter_time);";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let stage_stats = match db.get_database_backend() {
            DbBackend::Postgres => POSTGRES_STAGE_STATS,
            _ => SQLITE_STAGE_STATS,
        };
        db.execute_unprepared(stage_stats).await?;
        db.execute_unprepared(LEADS_BY_STAGE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let stage_stats = match db.get_database_backend() {
            DbBackend::Postgres => {
                "ALTER TABLE stage_stats DROP CONSTRAINT stage_stats_pkey,
                     ADD PRIMARY KEY (tenant_id, pipeline_id, day, kind, stage, other, k);"
            }
            _ => {
                "CREATE TABLE stage_stats_by_day (
                     tenant_id TEXT NOT NULL, pipeline_id TEXT NOT NULL, day INTEGER NOT NULL,
                     kind INTEGER NOT NULL, stage TEXT NOT NULL, other TEXT NOT NULL,
                     k INTEGER NOT NULL, n INTEGER NOT NULL, units INTEGER NOT NULL,
                     nanos INTEGER NOT NULL,
                     PRIMARY KEY (tenant_id, pipeline_id, day, kind, stage, other, k));
                 INSERT INTO stage_stats_by_day
                     SELECT tenant_id, pipeline_id, day, kind, stage, other, k, n, units, nanos
                     FROM stage_stats;
                 DROP TABLE stage_stats;
                 ALTER TABLE stage_stats_by_day RENAME TO stage_stats;"
            }
        };
        db.execute_unprepared(stage_stats).await?;
        db.execute_unprepared(
            "DROP INDEX leads_by_stage;
             CREATE INDEX leads_by_stage ON leads (tenant_id, pipeline_id, stage);",
        )
        .await?;
        Ok(())
    }
}
