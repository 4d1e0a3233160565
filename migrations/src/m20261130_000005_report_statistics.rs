//! Planner statistics for the aggregates a report sums.
//!
//! A window's sum of `stage_stats` groups its rows by (kind, stage, other, k). PostgreSQL
//! estimates the groups of several columns as the product of each column's distinct values, far
//! more than the few hundred there are, and then sorts the rows instead of hashing them.
//! Statistics on the columns together give it the real number. SQLite reads the rows in key
//! order and needs none.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(
                "CREATE STATISTICS IF NOT EXISTS stage_stats_groups (ndistinct)
                     ON kind, stage, other, k FROM stage_stats;
                 ANALYZE stage_stats;",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("DROP STATISTICS IF EXISTS stage_stats_groups;")
                .await?;
        }
        Ok(())
    }
}
