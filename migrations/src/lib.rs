//! leadpipe's schema migrations. Every primary key and index starts with `tenant_id`, so a
//! deployment can later shard by tenant (for example on Citus) without a schema rewrite.
//! Timestamps are BIGINT microseconds since the Unix epoch: portable across SQLite and
//! PostgreSQL, exact for keyset pagination, and cheap for interval arithmetic in SQL.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_schema;
mod m20261126_000002_api_keys;
mod m20261126_000003_wins_by_time;
mod m20261130_000001_lead_revisions;
mod m20261130_000002_versions_cover_revisions;
mod m20261130_000003_stage_stats;
mod m20261130_000004_report_keys;
mod m20261130_000005_report_statistics;
mod m20261130_000006_change_amounts;
mod m20261202_000001_open_lead_groups;

/// The upsert that adds to the stage aggregates, shared with the store's write path.
pub use m20261130_000003_stage_stats::{
    UPSERT_ROWS as STAGE_STATS_UPSERT_ROWS, upsert as upsert_stage_stats,
    upsert_statement as stage_stats_upsert_statement,
};

/// Open leads' amounts and pushes are summed in two parts, ÷ and mod this.
pub use m20261202_000001_open_lead_groups::SPLIT as OPEN_GROUP_SPLIT;

/// The tenant that exists out of the box.
pub const DEFAULT_TENANT: &str = "default";

/// The default pipeline's definition as stored JSON; the service checks in a test that it
/// matches its own `default_pipeline()`.
pub const DEFAULT_PIPELINE_JSON: &str = include_str!("default_pipeline.json");

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_schema::Migration),
            Box::new(m20261126_000002_api_keys::Migration),
            Box::new(m20261126_000003_wins_by_time::Migration),
            Box::new(m20261130_000001_lead_revisions::Migration),
            Box::new(m20261130_000002_versions_cover_revisions::Migration),
            Box::new(m20261130_000003_stage_stats::Migration),
            Box::new(m20261130_000004_report_keys::Migration),
            Box::new(m20261130_000005_report_statistics::Migration),
            Box::new(m20261130_000006_change_amounts::Migration),
            Box::new(m20261202_000001_open_lead_groups::Migration),
        ]
    }
}
