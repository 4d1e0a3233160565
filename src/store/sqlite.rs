//! How leadpipe opens SQLite: WAL, the configured durability, and one query plan per statement.

use std::ffi::c_int;

use sea_orm::ConnectOptions;
use sea_orm::sqlx::sqlite::{SqliteConnection, SqliteJournalMode, SqliteSynchronous};

use super::{SqliteSync, StoreConfig};

/// Accepts `sqlite:leadpipe.db` as well as `sqlite://leadpipe.db`, and creates the file if missing.
pub(super) fn normalize_url(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}mode=rwc")
    } else {
        url.to_owned()
    }
}

/// The database file a normalized `url` names; None for an in-memory database, which no other
/// connection can open.
pub(super) fn file_path(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr;
    if url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sea_orm::sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    (!path.as_os_str().is_empty()).then(|| path.to_path_buf())
}

/// The size up to which SQLite keeps a statement journal in memory before it spills it to a
/// temporary file.
///
/// Every call of a shared commit runs in its own savepoint, and SQLite keeps a copy of each page
/// the call changes in the statement journal, so that the call alone can be rolled back. At
/// SQLite's default threshold (64 KiB) a single move already spilled, and every call created,
/// wrote and deleted a temporary file that only a rollback to its savepoint would ever read. The
/// journal only serves that rollback inside the open transaction, so keeping it in memory costs
/// no durability. Only the one writer connection writes, so this bounds the memory at one such
/// journal; a larger one (a long import chunk) still spills to disk.
pub(super) const STATEMENT_JOURNAL_IN_MEMORY: c_int = 8 * 1024 * 1024;

/// Sets [`STATEMENT_JOURNAL_IN_MEMORY`] for the process, once, before its first SQLite
/// connection: SQLite takes process-wide settings only before it initializes. If something
/// opened SQLite earlier, SQLite keeps its default and this says so in the log.
pub(super) fn configure_process() {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    CONFIGURED.call_once(|| {
        // SAFETY: SQLITE_CONFIG_STMTJRNL_SPILL takes one int, as passed. Store::open calls this
        // before it opens a connection, and SQLite refuses (SQLITE_MISUSE) without changing
        // anything once it is initialized.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_config(
                libsqlite3_sys::SQLITE_CONFIG_STMTJRNL_SPILL,
                STATEMENT_JOURNAL_IN_MEMORY,
            )
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            tracing::warn!(
                code = rc,
                "SQLite was initialized before leadpipe opened its store: statement journals \
                 spill to temporary files at SQLite's default size"
            );
        }
    });
}

/// The pool of readers or, with `connections` 1, the single writer.
pub(super) fn options(url: &str, config: &StoreConfig, connections: u32) -> ConnectOptions {
    let synchronous = match config.sqlite_synchronous {
        SqliteSync::Full => SqliteSynchronous::Full,
        SqliteSync::Normal => SqliteSynchronous::Normal,
    };
    // A call that finds the database locked by another process (a `leadpipe import` or `demo`
    // beside the server, a backup) waits as long as it would for a connection, then fails with
    // UNAVAILABLE.
    let busy_timeout = config.acquire_timeout;
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(connections)
        .min_connections(1)
        .acquire_timeout(config.acquire_timeout)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .busy_timeout(busy_timeout)
                .foreign_keys(true)
                .create_if_missing(true)
        })
        .map_sqlx_sqlite_pool_opts(|pool| {
            pool.after_connect(|connection, _| Box::pin(keep_query_plans(connection)))
                .after_release(|connection, _| Box::pin(outside_any_transaction(connection)))
        });
    options
}

/// Whether a connection given back to the pool is outside any transaction; one that is not is
/// closed, and the pool opens a fresh one.
///
/// When a COMMIT fails (an I/O error, a full disk), SQLite may or may not have rolled the
/// transaction back, and sqlx's own count of open transactions stays as it was. The rollback
/// queued on drop then runs against whatever state is left. A connection that still counts a
/// transaction turns every later BEGIN into a SAVEPOINT and every COMMIT into a RELEASE that
/// commits nothing, so that writes would be acknowledged and never stored. Such a connection
/// must never serve again.
async fn outside_any_transaction(
    connection: &mut SqliteConnection,
) -> Result<bool, sea_orm::sqlx::Error> {
    use sea_orm::sqlx::Connection;
    // The common case, a transaction committed or rolled back: nothing to ask the connection.
    if !connection.is_in_transaction() {
        return Ok(true);
    }
    // Runs after the rollback that dropping a transaction queued, and then asks again.
    connection.ping().await?;
    let sqlx_in_transaction = connection.is_in_transaction();
    let mut handle = connection.lock_handle().await?;
    // SAFETY: the lock keeps the open connection to this thread for the call.
    let autocommit =
        unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) };
    let clean = !sqlx_in_transaction && autocommit != 0;
    if !clean {
        tracing::warn!(
            sqlx_in_transaction,
            sqlite_in_transaction = autocommit == 0,
            "closing a database connection left inside a transaction"
        );
    }
    Ok(clean)
}

/// Turns on SQLite's query planner stability guarantee for the connection.
///
/// Without it SQLite marks a prepared statement stale whenever a value is bound to a parameter
/// its plan looked at (`LIMIT ?`, which SeaORM uses for every single-row read, and with STAT4 any
/// indexed comparison), and compiles it again on the next step. sqlx binds every parameter on
/// every run, so the statement cache never helped and every single-row read was parsed again
/// (BENCHMARKS.md, "The query-plan change"). With the guarantee each cached statement keeps the
/// plan it was prepared with.
async fn keep_query_plans(connection: &mut SqliteConnection) -> Result<(), sea_orm::sqlx::Error> {
    let mut handle = connection.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    let mut enabled: c_int = 0;
    // SAFETY: `db` is an open connection that the lock keeps to this thread for the call, and
    // SQLITE_DBCONFIG_ENABLE_QPSG takes an int and a pointer to an int, as passed.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            db,
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as c_int,
            &mut enabled as *mut c_int,
        )
    };
    if rc != libsqlite3_sys::SQLITE_OK || enabled != 1 {
        return Err(sea_orm::sqlx::Error::Configuration(
            format!("SQLite refused the query planner stability guarantee (code {rc})").into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Store;

    async fn qpsg_enabled(connection: &mut SqliteConnection) -> c_int {
        let mut handle = connection.lock_handle().await.expect("lock");
        let mut enabled: c_int = -1;
        // SAFETY: as in `keep_query_plans`; a negative value only reads the setting.
        unsafe {
            libsqlite3_sys::sqlite3_db_config(
                handle.as_raw_handle().as_ptr(),
                libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
                -1 as c_int,
                &mut enabled as *mut c_int,
            )
        };
        enabled
    }

    #[tokio::test]
    async fn statements_stay_within_the_linked_sqlites_variable_limit() {
        let store = Store::connect(&StoreConfig {
            database_url: "sqlite::memory:".into(),
            pool_size: 1,
            sqlite_synchronous: SqliteSync::Full,
            acquire_timeout: Duration::from_secs(5),
        })
        .await
        .expect("open");
        let pool = store.writer().get_sqlite_connection_pool();
        let mut connection = pool.acquire().await.expect("connection");
        let mut handle = connection.lock_handle().await.expect("lock");
        // SAFETY: as in `keep_query_plans`; a negative value only reads the limit.
        let limit = unsafe {
            libsqlite3_sys::sqlite3_limit(
                handle.as_raw_handle().as_ptr(),
                libsqlite3_sys::SQLITE_LIMIT_VARIABLE_NUMBER,
                -1,
            )
        };
        assert!(
            limit as usize >= crate::store::MAX_BIND_PARAMETERS,
            "SQLite allows {limit} variables"
        );
    }

    #[tokio::test]
    async fn every_connection_keeps_its_query_plans() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::open_for_test(&dir, "plans.db").await;
        for pool in [
            store.reader().get_sqlite_connection_pool(),
            store.writer().get_sqlite_connection_pool(),
        ] {
            let mut connection = pool.acquire().await.expect("connection");
            assert_eq!(qpsg_enabled(&mut connection).await, 1);
        }
        store.close().await;
    }
}
