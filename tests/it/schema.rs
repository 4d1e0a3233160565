//! The schema as the migrations leave it: every primary key and index leads with `tenant_id`,
//! so that a deployment can shard by tenant (on Citus, say) without a schema rewrite.

use crate::common;

use common::*;
use sea_orm::{ConnectionTrait, Database, Statement};

on_both_backends!(every_primary_key_and_index_starts_with_the_tenant);

/// (table, index, the index's first column) for every index, primary keys included.
const SQLITE_INDEXES: &str = "SELECT m.name, il.name, ii.name
    FROM sqlite_master m, pragma_index_list(m.name) il, pragma_index_info(il.name) ii
    WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> 'seaql_migrations'
      AND ii.seqno = 0";
const POSTGRES_INDEXES: &str = "SELECT t.relname::text, i.relname::text, a.attname::text
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
    WHERE n.nspname = current_schema() AND t.relname <> 'seaql_migrations'";

async fn every_primary_key_and_index_starts_with_the_tenant(app: TestApp) {
    let db = Database::connect(&app.database_url).await.expect("connect");
    let sql = match app.backend {
        Backend::Sqlite => SQLITE_INDEXES,
        Backend::Postgres => POSTGRES_INDEXES,
    };
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("list indexes");
    let indexes: Vec<(String, String, String)> = rows
        .iter()
        .map(|row| {
            (
                row.try_get_by_index(0).unwrap(),
                row.try_get_by_index(1).unwrap(),
                row.try_get_by_index(2).unwrap(),
            )
        })
        .collect();
    let tables: std::collections::BTreeSet<&str> =
        indexes.iter().map(|(table, _, _)| table.as_str()).collect();
    for table in [
        "leads",
        "lead_labels",
        "pipelines",
        "stage_changes",
        "outbox",
        "idempotency_keys",
        "tenant_sequences",
        "api_keys",
        "lead_revisions",
    ] {
        assert!(tables.contains(table), "{table} has no key: {indexes:?}");
    }
    for name in [
        "stage_changes_by_stage_time",
        "lead_revisions_by_lead_time",
        "lead_revisions_by_pipeline_time",
    ] {
        assert!(
            indexes.iter().any(|(_, index, _)| index == name),
            "{name} is missing: {indexes:?}"
        );
    }
    let offenders: Vec<_> = indexes
        .iter()
        .filter(|(_, _, first)| first != "tenant_id")
        .collect();
    assert!(offenders.is_empty(), "not led by tenant_id: {offenders:?}");
    db.close().await.ok();
}
