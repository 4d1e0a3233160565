//! Persistence: SeaORM entities and repositories. The gRPC layer never touches these directly;
//! the application services in `crate::app` compose them into transactions.

pub mod analytics;
pub mod api_keys;
pub mod entities;
pub mod gauges;
pub mod history;
pub mod idempotency;
pub mod lead_query;
pub mod leads;
pub mod outbox;
pub mod pipelines;
pub mod sequences;
mod sqlite;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    RuntimeErr, SqlErr, TransactionTrait,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("a row with the same key already exists: {0}")]
    UniqueViolation(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(String),
}

impl From<DbErr> for StoreError {
    fn from(error: DbErr) -> Self {
        if let Some(SqlErr::UniqueConstraintViolation(detail)) = error.sql_err() {
            return StoreError::UniqueViolation(detail);
        }
        match &error {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
                StoreError::Unavailable(error.to_string())
            }
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))
                if is_connection_error(e) =>
            {
                StoreError::Unavailable(error.to_string())
            }
            _ => StoreError::Database(error.to_string()),
        }
    }
}

fn is_connection_error(error: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error;
    match error {
        Error::Io(_) | Error::Tls(_) | Error::PoolTimedOut | Error::PoolClosed => true,
        Error::WorkerCrashed => true,
        Error::Database(db) => db.code().is_some_and(|code| is_unavailable_sqlstate(&code)),
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs that mean "the server or the connection went away", not "the query is
/// wrong": class 08 (connection exception) and 57P01..57P03 (admin shutdown, crash shutdown,
/// cannot connect now). Retrying later can succeed, so they are UNAVAILABLE.
fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// SQLite's durability setting. `Full` survives power loss; `Normal` survives a crashed or
/// killed process but may lose the last commits on power loss, and is about twice as fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSync {
    Full,
    Normal,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub database_url: String,
    /// Connections for reads (and, on PostgreSQL, writes).
    pub pool_size: u32,
    pub sqlite_synchronous: SqliteSync,
    pub acquire_timeout: Duration,
}

/// The database handle. On SQLite, writes go through a single connection (SQLite allows one
/// writer at a time; queueing in the pool is cheaper than retrying on SQLITE_BUSY), and reads
/// use a pool that WAL mode lets run beside the writer. On PostgreSQL both are one pool.
#[derive(Clone)]
pub struct Store {
    reader: DatabaseConnection,
    writer: DatabaseConnection,
}

impl Store {
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        Self::open(config, false).await
    }

    /// Like `connect`, but opens no connection yet: pools connect on first use, so this succeeds
    /// while the database is down. Only a malformed URL fails.
    pub async fn connect_lazy(config: &StoreConfig) -> Result<Self, StoreError> {
        Self::open(config, true).await
    }

    async fn open(config: &StoreConfig, lazy: bool) -> Result<Self, StoreError> {
        let url = sqlite::normalize_url(&config.database_url);
        if url.starts_with("sqlite:") {
            let mut reader = sqlite::options(&url, config, config.pool_size);
            let mut writer = sqlite::options(&url, config, 1);
            reader.connect_lazy(lazy);
            writer.connect_lazy(lazy);
            let reader = Database::connect(reader).await?;
            let writer = Database::connect(writer).await?;
            Ok(Self { reader, writer })
        } else {
            let mut options = ConnectOptions::new(url);
            options
                .connect_lazy(lazy)
                .max_connections(config.pool_size)
                .min_connections(1)
                .acquire_timeout(config.acquire_timeout)
                .connect_timeout(config.acquire_timeout)
                .sqlx_logging(false);
            let pool = Database::connect(options).await?;
            Ok(Self {
                reader: pool.clone(),
                writer: pool,
            })
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        use migration::MigratorTrait;
        migration::Migrator::up(&self.writer, None).await?;
        Ok(())
    }

    pub fn backend(&self) -> DbBackend {
        self.writer.get_database_backend()
    }

    pub fn reader(&self) -> &DatabaseConnection {
        &self.reader
    }

    pub fn writer(&self) -> &DatabaseConnection {
        &self.writer
    }

    /// Refreshes the planner statistics of the tables a bulk import grows. PostgreSQL keeps a
    /// prepared statement's generic plan, and a plan made while a table was empty (a seq scan)
    /// stays until the table is analysed; autovacuum does that only about once a minute, which
    /// left an import of 50k leads spending most of its time in full scans of `leads`. ANALYZE
    /// invalidates those plans. SQLite's planner has no such cache, so this is a no-op there.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        if self.backend() == DbBackend::Postgres {
            use sea_orm::ConnectionTrait;
            self.writer
                .execute_unprepared("ANALYZE leads, lead_labels, stage_changes")
                .await?;
        }
        Ok(())
    }

    pub async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        Ok(self.writer.begin().await?)
    }

    /// The connection pools' use: one shared pool on PostgreSQL, the read pool and the single
    /// writer connection on SQLite.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        fn stats<DB: sea_orm::sqlx::Database>(
            name: &'static str,
            pool: &sea_orm::sqlx::Pool<DB>,
        ) -> PoolStats {
            PoolStats {
                name,
                open: pool.size(),
                idle: pool.num_idle() as u32,
                max: pool.options().get_max_connections(),
            }
        }
        match self.backend() {
            DbBackend::Postgres => {
                vec![stats("shared", self.writer.get_postgres_connection_pool())]
            }
            _ => vec![
                stats("read", self.reader.get_sqlite_connection_pool()),
                stats("write", self.writer.get_sqlite_connection_pool()),
            ],
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.reader.ping().await?;
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.reader.close().await;
        let _ = self.writer.close().await;
    }
}

/// One connection pool's use, for the metrics endpoint.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    /// `shared` (PostgreSQL), `read` or `write` (SQLite).
    pub name: &'static str,
    /// Connections open, idle or in use.
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

pub fn to_micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

pub fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}
