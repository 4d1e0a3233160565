//! Open leads grouped as a report scores them, kept as rows.
//!
//! GetPipelineMetrics reads a pipeline's open leads grouped by stage, currency, amount band,
//! source, owner and labels, with their count, summed amounts and close-date slippage. Grouping
//! them in SQL reads one row per open lead, so the report grew with the open leads.
//! `open_lead_groups` holds those groups, and triggers on `leads` keep them in step with every
//! insert, update and delete in the writing statement's own transaction: every write path,
//! imports, deletes and a replica of the previous version during a rolling update included,
//! without a write path that can forget it.
//!
//! A group is keyed by `group_key`, the group's values length-prefixed into one string (on
//! PostgreSQL its SHA-256, since a B-tree key there is limited to about 2.7 kB and labels alone
//! may be longer). Amounts and slippage are summed in two parts (÷ and mod `SPLIT`), so no sum
//! can leave the 64-bit integers for any number of leads. Groups of every stage are kept; a
//! group whose leads all left it keeps a row with zero counts, which readers skip.
//!
//! On PostgreSQL an insert statement adds its rows' groups in one upsert sorted by key, and an
//! update adds to its old and new groups in key order, so writers of the same groups lock them
//! in one order. The migration creates the triggers and then fills the table from the leads in
//! one transaction (on both backends), whose lock on `leads` keeps every write out until both
//! are done.

use leadpipe_domain::forecast::band_case_sql;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Amounts and pushes are summed as value ÷ `SPLIT` and value mod `SPLIT`.
pub const SPLIT: i64 = 1_000_000_000;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The values that make a group, which `group_key` encodes.
const GROUP_COLUMNS: &str = "stage, amount_currency, band, source, owner, labels";
/// What each lead adds to its group (see [`sums_of`]).
const SUM_COLUMNS: [&str; 8] = [
    "leads",
    "units_high",
    "units_low",
    "nanos",
    "pushed",
    "push_measured",
    "push_high",
    "push_low",
];

/// The group key of the lead row `row` ("NEW", "OLD" or a table alias) on `backend`.
fn key_of(row: &str, backend: DbBackend) -> String {
    let band = band_case_sql(&format!("{row}.amount_units"));
    let text = format!(
        "(length({row}.stage) || ':' || {row}.stage || length({row}.amount_currency) || ':' \
         || {row}.amount_currency || ({band}) || ':' || length({row}.source) || ':' \
         || {row}.source || length({row}.owner) || ':' || {row}.owner || {row}.labels)"
    );
    match backend {
        DbBackend::Postgres => format!("sha256(convert_to({text}, 'UTF8'))"),
        _ => text,
    }
}

/// What one lead row `row` adds to its group's sums, times `sign`, in `SUM_COLUMNS` order.
fn sums_of(row: &str, sign: &str) -> [String; 8] {
    let measured = format!(
        "{row}.close_date_push_count > 0 AND {row}.expected_close_time IS NOT NULL \
         AND {row}.first_expected_close_time IS NOT NULL"
    );
    let push = format!("({row}.expected_close_time - {row}.first_expected_close_time)");
    [
        sign.to_string(),
        format!("{sign} * ({row}.amount_units / {SPLIT})"),
        format!("{sign} * ({row}.amount_units % {SPLIT})"),
        format!("{sign} * {row}.amount_nanos"),
        format!("{sign} * (CASE WHEN {row}.close_date_push_count > 0 THEN 1 ELSE 0 END)"),
        format!("{sign} * (CASE WHEN {measured} THEN 1 ELSE 0 END)"),
        format!("{sign} * (CASE WHEN {measured} THEN {push} / {SPLIT} ELSE 0 END)"),
        format!("{sign} * (CASE WHEN {measured} THEN {push} % {SPLIT} ELSE 0 END)"),
    ]
}

fn on_conflict() -> String {
    let sets: Vec<String> = SUM_COLUMNS
        .iter()
        .map(|c| format!("{c} = open_lead_groups.{c} + excluded.{c}"))
        .collect();
    format!(
        "ON CONFLICT (tenant_id, pipeline_id, group_key) DO UPDATE SET {}",
        sets.join(", ")
    )
}

fn insert_head() -> String {
    format!(
        "INSERT INTO open_lead_groups (tenant_id, pipeline_id, group_key, {GROUP_COLUMNS}, {})",
        SUM_COLUMNS.join(", ")
    )
}

/// The upsert that adds the lead row `row` to its group, times `sign` (1 or -1).
fn add_row(row: &str, sign: &str, backend: DbBackend) -> String {
    let band = band_case_sql(&format!("{row}.amount_units"));
    format!(
        "{} VALUES ({row}.tenant_id, {row}.pipeline_id, {}, {row}.stage, {row}.amount_currency, \
         {band}, {row}.source, {row}.owner, {row}.labels, {}) {};",
        insert_head(),
        key_of(row, backend),
        sums_of(row, sign).join(", "),
        on_conflict()
    )
}

/// Whether an update changed anything a group holds of the lead.
fn changed() -> String {
    [
        "tenant_id",
        "pipeline_id",
        "stage",
        "amount_currency",
        "amount_units",
        "amount_nanos",
        "source",
        "owner",
        "labels",
        "close_date_push_count",
        "expected_close_time",
        "first_expected_close_time",
    ]
    .map(|c| format!("OLD.{c} IS DISTINCT FROM NEW.{c}"))
    .join(" OR ")
}

fn sqlite_triggers() -> String {
    let changed = changed().replace("IS DISTINCT FROM", "IS NOT");
    format!(
        "CREATE TRIGGER leads_open_groups_insert AFTER INSERT ON leads BEGIN {} END;
         CREATE TRIGGER leads_open_groups_delete AFTER DELETE ON leads BEGIN {} END;
         CREATE TRIGGER leads_open_groups_update AFTER UPDATE ON leads WHEN {changed}
         BEGIN {} {} END;",
        add_row("NEW", "1", DbBackend::Sqlite),
        add_row("OLD", "-1", DbBackend::Sqlite),
        add_row("OLD", "-1", DbBackend::Sqlite),
        add_row("NEW", "1", DbBackend::Sqlite),
    )
}

/// The upsert that adds every lead row of `from` (a table named `alias`) to its group, one
/// statement whose rows come sorted by key. (`WHERE true` keeps SQLite from reading the upsert's
/// `ON` as a join's.)
fn add_grouped(from: &str, alias: &str, backend: DbBackend) -> String {
    let band = band_case_sql(&format!("{alias}.amount_units"));
    let sums: Vec<String> = sums_of(alias, "1")
        .iter()
        .map(|s| format!("SUM({s})"))
        .collect();
    format!(
        "{head} SELECT {alias}.tenant_id, {alias}.pipeline_id, {key}, {alias}.stage,
                {alias}.amount_currency, {band}, {alias}.source, {alias}.owner, {alias}.labels,
                {sums}
         FROM {from}
         WHERE true
         GROUP BY {alias}.tenant_id, {alias}.pipeline_id, {alias}.stage, {alias}.amount_currency,
                  {band}, {alias}.source, {alias}.owner, {alias}.labels
         ORDER BY 1, 2, 3
         {conflict}",
        head = insert_head(),
        key = key_of(alias, backend),
        sums = sums.join(", "),
        conflict = on_conflict(),
    )
}

fn postgres_triggers() -> String {
    let pg = DbBackend::Postgres;
    format!(
        "CREATE FUNCTION leads_open_groups_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           {inserted};
           RETURN NULL;
         END $$;
         CREATE FUNCTION leads_open_groups_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           {delete}
           RETURN NULL;
         END $$;
         CREATE FUNCTION leads_open_groups_updated() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF (OLD.tenant_id, OLD.pipeline_id, {old_key}) <= (NEW.tenant_id, NEW.pipeline_id, {new_key}) THEN
             {delete}
             {insert}
           ELSE
             {insert}
             {delete}
           END IF;
           RETURN NULL;
         END $$;
         CREATE TRIGGER leads_open_groups_insert AFTER INSERT ON leads
           REFERENCING NEW TABLE AS added FOR EACH STATEMENT
           EXECUTE FUNCTION leads_open_groups_inserted();
         CREATE TRIGGER leads_open_groups_delete AFTER DELETE ON leads
           FOR EACH ROW EXECUTE FUNCTION leads_open_groups_deleted();
         CREATE TRIGGER leads_open_groups_update AFTER UPDATE ON leads
           FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION leads_open_groups_updated();",
        inserted = add_grouped("added", "added", pg),
        delete = add_row("OLD", "-1", pg),
        insert = add_row("NEW", "1", pg),
        old_key = key_of("OLD", pg),
        new_key = key_of("NEW", pg),
        changed = changed(),
    )
}

/// Fills the table from the leads as they stand.
fn backfill(backend: DbBackend) -> String {
    add_grouped("leads l", "l", backend)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// The table, its triggers and its rows land together or not at all, on SQLite too.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = db.get_database_backend();
        let sums: Vec<String> = SUM_COLUMNS
            .iter()
            .map(|c| format!("{c} BIGINT NOT NULL DEFAULT 0"))
            .collect();
        // On SQLite the key holds the row (`WITHOUT ROWID`): one B-tree for a trigger to update.
        let (key_type, rowid) = match backend {
            DbBackend::Postgres => ("BYTEA", ""),
            _ => ("TEXT", " WITHOUT ROWID"),
        };
        db.execute_unprepared(&format!(
            "CREATE TABLE open_lead_groups (
                 tenant_id TEXT NOT NULL, pipeline_id TEXT NOT NULL, group_key {key_type} NOT NULL,
                 stage TEXT NOT NULL, amount_currency TEXT NOT NULL, band BIGINT NOT NULL,
                 source TEXT NOT NULL, owner TEXT NOT NULL, labels TEXT NOT NULL, {},
                 PRIMARY KEY (tenant_id, pipeline_id, group_key)
             ){rowid}",
            sums.join(", ")
        ))
        .await?;
        let triggers = match backend {
            DbBackend::Postgres => postgres_triggers(),
            _ => sqlite_triggers(),
        };
        db.execute_unprepared(&triggers).await?;
        db.execute_unprepared(&backfill(backend)).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let drop = match db.get_database_backend() {
            DbBackend::Postgres => {
                "DROP TRIGGER IF EXISTS leads_open_groups_insert ON leads;
                 DROP TRIGGER IF EXISTS leads_open_groups_delete ON leads;
                 DROP TRIGGER IF EXISTS leads_open_groups_update ON leads;
                 DROP FUNCTION IF EXISTS leads_open_groups_inserted();
                 DROP FUNCTION IF EXISTS leads_open_groups_deleted();
                 DROP FUNCTION IF EXISTS leads_open_groups_updated();"
            }
            _ => {
                "DROP TRIGGER IF EXISTS leads_open_groups_insert;
                 DROP TRIGGER IF EXISTS leads_open_groups_delete;
                 DROP TRIGGER IF EXISTS leads_open_groups_update;"
            }
        };
        db.execute_unprepared(drop).await?;
        db.execute_unprepared("DROP TABLE open_lead_groups").await?;
        Ok(())
    }
}
