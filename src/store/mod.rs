//! Persistence: SeaORM entities and repositories. The gRPC layer never touches these directly;
//! the application services in `crate::app` compose them into transactions.

pub mod analytics;
pub mod api_keys;
pub mod entities;
pub mod gauges;
mod group;
pub mod history;
pub mod idempotency;
pub mod lead_query;
pub mod leads;
pub mod outbox;
pub mod pipelines;
mod point_reads;
pub mod revisions;
pub mod sequences;
mod sqlite;
mod write;

pub use write::{WriteHealth, WriteTx};

/// What the store's functions read and write through: the reader pool, the writer, or a
/// `WriteTx`. The layers above name this rather than the ORM's trait.
pub trait Connection: sea_orm::ConnectionTrait {}

impl<T: sea_orm::ConnectionTrait> Connection for T {}

use std::time::Duration;

use chrono::{DateTime, Utc};
use std::sync::Arc;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
    SqlErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is busy; a retry later can succeed.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The storage under the database failed (an I/O error, a file-size limit): writes cannot
    /// commit until it recovers.
    #[error("the database's storage failed: {0}")]
    StorageFailure(String),
    /// The disk (or the database's quota) is full.
    #[error("the database's storage is full: {0}")]
    StorageFull(String),
    #[error("a row with the same key already exists: {0}")]
    UniqueViolation(String),
    /// An aggregate (a sum of amounts) does not fit a 64-bit integer.
    #[error("a total is out of the 64-bit range: {0}")]
    OutOfRange(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(String),
    /// A write conditional on what its call read before taking the writer found that another
    /// write had changed it first (`WriteTx::execute_later_or_superseded`).
    #[error("another write changed the rows this write read")]
    Superseded,
}

/// The tables an import adds rows to, whose planner statistics it refreshes as it grows them.
pub const IMPORT_GROWN_TABLES: [&str; 6] = [
    "leads",
    "lead_labels",
    "stage_changes",
    "lead_revisions",
    "stage_stats",
    "open_lead_groups",
];

impl StoreError {
    /// Whether the error says that writes cannot commit, whatever they write.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            StoreError::StorageFailure(_) | StoreError::StorageFull(_)
        )
    }

    /// An error of a statement run through sqlx directly rather than through SeaORM.
    pub(crate) fn from_sqlx(error: sea_orm::sqlx::Error) -> Self {
        let text = error.to_string();
        classify_sqlx(&error, text)
    }

    fn classify(error: &DbErr) -> Self {
        if let Some(SqlErr::UniqueConstraintViolation(detail)) = error.sql_err() {
            return StoreError::UniqueViolation(detail);
        }
        let text = error.to_string();
        match error {
            DbErr::ConnectionAcquire(_) => StoreError::Unavailable(text),
            DbErr::Conn(RuntimeErr::SqlxError(e))
            | DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e)) => classify_sqlx(e, text),
            DbErr::Conn(_) => StoreError::Unavailable(text),
            _ => StoreError::Database(text),
        }
    }
}

impl From<DbErr> for StoreError {
    fn from(error: DbErr) -> Self {
        StoreError::classify(&error)
    }
}

fn classify_sqlx(error: &sea_orm::sqlx::Error, text: String) -> StoreError {
    use sea_orm::sqlx::Error;
    use sea_orm::sqlx::error::DatabaseError;
    match error {
        Error::Io(_) | Error::Tls(_) | Error::PoolTimedOut | Error::PoolClosed => {
            StoreError::Unavailable(text)
        }
        Error::WorkerCrashed => StoreError::StorageFailure(text),
        Error::Database(db) => {
            if let Some(sqlite) = db.try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>() {
                let code = sqlite
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .unwrap_or(0);
                classify_sqlite(code, text)
            } else {
                classify_sqlstate(db.code().as_deref().unwrap_or(""), text)
            }
        }
        _ => StoreError::Database(text),
    }
}

/// SQLite's primary result codes (the low byte of an extended code) that are not about the
/// statement: <https://www.sqlite.org/rescode.html>.
fn classify_sqlite(extended_code: i32, text: String) -> StoreError {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    const READONLY: i32 = 8;
    const IOERR: i32 = 10;
    const CORRUPT: i32 = 11;
    const FULL: i32 = 13;
    const CANTOPEN: i32 = 14;
    const PROTOCOL: i32 = 15;
    const NOTADB: i32 = 26;
    const ERROR: i32 = 1;
    match extended_code & 0xff {
        // The one runtime error of SQLite's `sum()`; its text is the only way to tell it apart.
        ERROR if text.contains("integer overflow") => StoreError::OutOfRange(text),
        BUSY | LOCKED => StoreError::Unavailable(text),
        FULL => StoreError::StorageFull(text),
        READONLY | IOERR | CANTOPEN | PROTOCOL => StoreError::StorageFailure(text),
        CORRUPT | NOTADB => StoreError::Corrupt(text),
        _ => StoreError::Database(text),
    }
}

/// PostgreSQL SQLSTATEs that are not about the statement:
/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>.
/// - class 08 (connection exception) and 57P01..57P03 (admin shutdown, crash shutdown, cannot
///   connect now): the server or the connection went away;
/// - 57014 (query canceled, as by `statement_timeout`), class 40 (serialization failure,
///   deadlock): the transaction did not commit, and a retry can;
/// - 22003 (numeric value out of range): a sum that does not fit its 64-bit column;
/// - 53100 (disk full), the rest of class 53 (out of memory, too many connections), and
///   class 58 (I/O error, system error): the server cannot do any write now.
fn classify_sqlstate(code: &str, text: String) -> StoreError {
    match code {
        "53100" => StoreError::StorageFull(text),
        "22003" => StoreError::OutOfRange(text),
        _ if code.starts_with("58") => StoreError::StorageFailure(text),
        _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("40") => {
            StoreError::Unavailable(text)
        }
        "57P01" | "57P02" | "57P03" | "57014" => StoreError::Unavailable(text),
        _ => StoreError::Database(text),
    }
}

/// SQLite's durability setting. `Full` survives power loss; `Normal` survives a crashed or
/// killed process but may lose the last commits on power loss; it commits faster because it does
/// not wait for `fsync` on every commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    write_health: Arc<WriteHealth>,
    /// SQLite's writer queue; PostgreSQL runs one transaction per call.
    group: Option<Arc<group::GroupCommit>>,
    /// On a SQLite file, reads of one lead that run on the calling task (`point_reads`).
    point_reads: Option<Arc<point_reads::PointReads>>,
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
            sqlite::configure_process();
            let mut reader = sqlite::options(&url, config, config.pool_size);
            let mut writer = sqlite::options(&url, config, 1);
            reader.connect_lazy(lazy);
            writer.connect_lazy(lazy);
            let reader = Database::connect(reader).await?;
            let writer = Database::connect(writer).await?;
            let write_health = Arc::<WriteHealth>::default();
            let group = group::GroupCommit::start(
                writer.clone(),
                write_health.clone(),
                config.acquire_timeout,
            );
            let point_reads =
                sqlite::file_path(&url).map(|path| Arc::new(point_reads::PointReads::new(&path)));
            Ok(Self {
                reader,
                writer,
                write_health,
                group: Some(group),
                point_reads,
            })
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
                write_health: Arc::default(),
                group: None,
                point_reads: None,
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

    /// Whether every write transaction of the database waits for one writer (SQLite), rather
    /// than only for the rows it locks (PostgreSQL).
    pub fn has_one_writer(&self) -> bool {
        self.backend() == DbBackend::Sqlite
    }

    /// Whether writes share one writer (SQLite) and another write holds it now, so that a
    /// write beginning now would wait for it.
    pub fn writer_is_busy(&self) -> bool {
        self.group.as_ref().is_some_and(|group| group.is_held())
    }

    pub fn reader(&self) -> &DatabaseConnection {
        &self.reader
    }

    pub fn writer(&self) -> &DatabaseConnection {
        &self.writer
    }

    /// Refreshes the planner statistics of the tables a bulk import grows
    /// ([`IMPORT_GROWN_TABLES`]). PostgreSQL keeps a
    /// prepared statement's generic plan, and a plan made while a table was empty (a seq scan)
    /// stays until the table is analysed; autovacuum does that only about once a minute, which
    /// left an import of 50k leads spending most of its time in full scans of `leads`. ANALYZE
    /// invalidates those plans. SQLite's planner has no such cache, so this is a no-op there.
    /// A table missing here keeps the estimates of an empty table: GetForecast's wins, planned
    /// from the revisions of an unanalysed `lead_revisions`, scanned every revision of the tenant.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        if self.backend() == DbBackend::Postgres {
            self.writer
                .execute_unprepared(&format!("ANALYZE {}", IMPORT_GROWN_TABLES.join(", ")))
                .await?;
        }
        Ok(())
    }

    /// [`Store::refresh_statistics`], and on PostgreSQL a VACUUM of the same tables, for the end
    /// of a bulk import. Until a table is vacuumed its new pages are not marked all-visible, so
    /// a report's index-only scans (the open leads through `leads_by_stage`) still visit every
    /// row in the heap, and the row versions the import's updates replaced stay in the way;
    /// autovacuum gets to a freshly grown table only minutes later. VACUUM takes no lock that
    /// blocks reads or writes, and skips the pages already all-visible.
    pub async fn settle_after_import(&self) -> Result<(), StoreError> {
        if self.backend() == DbBackend::Postgres {
            self.writer
                .execute_unprepared(&format!(
                    "VACUUM (ANALYZE) {}",
                    IMPORT_GROWN_TABLES.join(", ")
                ))
                .await?;
        }
        Ok(())
    }

    /// [`Store::begin_write`] for a write that builds its statements before it sends any: on
    /// SQLite with shared commits it takes the writer with its first statement, not before, so
    /// that other calls' statements run while this one builds its own. Elsewhere the same as
    /// `begin_write`.
    pub async fn begin_write_deferred(&self) -> Result<WriteTx, StoreError> {
        match &self.group {
            Some(group) => Ok(WriteTx::deferred(group, self.write_health.clone())),
            None => self.begin_write().await,
        }
    }

    /// Starts a write transaction. On SQLite it is a savepoint in the writer's batch
    /// transaction (`store::group`), which takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// that a transaction never fails halfway when another process holds the lock: it waits up
    /// to the busy timeout, then fails with `Unavailable` before doing anything.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        if let Some(group) = &self.group {
            let member = group.begin().await?;
            return Ok(WriteTx::grouped(group, member, self.write_health.clone()));
        }
        let options = TransactionOptions {
            sqlite_transaction_mode: (self.backend() == DbBackend::Sqlite)
                .then_some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        match self.writer.begin_with_options(options).await {
            Ok(tx) => Ok(WriteTx::new(tx, self.write_health.clone())),
            Err(error) => {
                let error = StoreError::from(error);
                self.write_health.record_error(&error);
                Err(error)
            }
        }
    }

    /// The store's record of writes that failed in storage.
    pub fn write_health(&self) -> &WriteHealth {
        &self.write_health
    }

    /// Commits a transaction that writes to the database file (or, on PostgreSQL, the WAL), to
    /// learn whether writes can commit again. Changes no data: SQLite rewrites its header's
    /// `user_version` with the value it has, PostgreSQL commits a transaction with an id.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let tx = self.begin_write().await?;
        match self.backend() {
            DbBackend::Postgres => {
                tx.execute_unprepared("SELECT pg_current_xact_id()").await?;
            }
            _ => {
                let version = tx
                    .query_one_raw(sea_orm::Statement::from_string(
                        DbBackend::Sqlite,
                        "PRAGMA user_version",
                    ))
                    .await?
                    .map(|row| row.try_get_by_index::<i64>(0))
                    .transpose()?
                    .unwrap_or(0);
                tx.execute_unprepared(&format!("PRAGMA user_version = {version}"))
                    .await?;
            }
        }
        tx.commit().await
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

    /// Commits the writes in flight, then closes the connections.
    pub async fn close(self) {
        if let Some(reads) = &self.point_reads {
            reads.close();
        }
        if let Some(group) = &self.group {
            group.close().await;
        }
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

/// The most bind parameters one statement carries. SQLite refuses more than 32,766 by default
/// (`SQLITE_MAX_VARIABLE_NUMBER`), PostgreSQL more than 65,535; multi-row statements are cut to
/// stay below both.
pub(crate) const MAX_BIND_PARAMETERS: usize = 32_766;

/// How many rows of `columns` columns one multi-row statement may hold.
pub(crate) fn rows_per_statement(columns: usize) -> usize {
    (MAX_BIND_PARAMETERS / columns.max(1)).max(1)
}

pub fn to_micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

pub fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// A store on a fresh SQLite file in `dir`, for the store's own tests.
#[cfg(test)]
pub(crate) async fn open_for_test(dir: &tempfile::TempDir, file: &str) -> Store {
    Store::connect(&StoreConfig {
        database_url: format!("sqlite://{}", dir.path().join(file).display()),
        pool_size: 2,
        sqlite_synchronous: SqliteSync::Full,
        acquire_timeout: std::time::Duration::from_secs(5),
    })
    .await
    .expect("open")
}
