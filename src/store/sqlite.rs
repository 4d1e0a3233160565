//! How leadpipe opens SQLite: WAL, the configured durability, and one query plan per statement.

use std::ffi::c_int;
use std::time::Duration;

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

pub(super) fn options(url: &str, config: &StoreConfig, connections: u32) -> ConnectOptions {
    let synchronous = match config.sqlite_synchronous {
        SqliteSync::Full => SqliteSynchronous::Full,
        SqliteSync::Normal => SqliteSynchronous::Normal,
    };
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(connections)
        .min_connections(1)
        .acquire_timeout(config.acquire_timeout)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                .create_if_missing(true)
        })
        .map_sqlx_sqlite_pool_opts(|pool| {
            pool.after_connect(|connection, _| Box::pin(keep_query_plans(connection)))
        });
    options
}

/// Turns on SQLite's query planner stability guarantee for the connection.
///
/// Without it SQLite marks a prepared statement stale whenever a value is bound to a parameter
/// its plan looked at (`LIMIT ?`, which SeaORM uses for every single-row read, and with STAT4 any
/// indexed comparison), and compiles it again on the next step. sqlx binds every parameter on
/// every run, so the statement cache never helped: re-parsing took a third of the server's CPU
/// under GetLead. With the guarantee each cached statement keeps the plan it was prepared with.
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
    async fn every_connection_keeps_its_query_plans() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::connect(&StoreConfig {
            database_url: format!("sqlite://{}", dir.path().join("plans.db").display()),
            pool_size: 2,
            sqlite_synchronous: SqliteSync::Full,
            acquire_timeout: Duration::from_secs(5),
        })
        .await
        .expect("open");
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
