//! Write transactions and the health of the write path.
//!
//! A database can go on answering reads while it refuses to commit: the disk is full, the file
//! has hit a size limit, or the storage returns I/O errors. Such a server must not look
//! healthy, and above all must never acknowledge a write it did not commit. Every write goes
//! through a [`WriteTx`], which notes each storage failure in the store's [`WriteHealth`]; the
//! health supervisor reports NOT_SERVING until writes have stopped failing and a probing commit
//! succeeds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, Statement,
};

use super::StoreError;
use super::group::{self, Member};

/// When a write last failed for a storage reason (an I/O error, a full disk), rather than
/// because of what it wrote. Shared by every clone of the store.
///
/// A successful commit does not clear it: when a disk is nearly full, small writes commit while
/// larger ones fail. The health supervisor clears it once no write has failed for a while and a
/// probing commit succeeds.
#[derive(Debug, Default)]
pub struct WriteHealth {
    last_failure: Mutex<Option<Instant>>,
}

impl WriteHealth {
    /// How long ago a write last failed in storage, if one has since the last `clear`.
    pub fn since_last_failure(&self) -> Option<Duration> {
        self.lock().map(|at| at.elapsed())
    }

    pub fn clear(&self) {
        if self.lock_mut().take().is_some() {
            tracing::info!("writes commit again");
        }
    }

    pub(super) fn record_error(&self, error: &StoreError) {
        if !error.is_storage_failure() {
            return;
        }
        if self.lock_mut().replace(Instant::now()).is_none() {
            tracing::error!(%error, "a write failed in storage; health is NOT_SERVING until writes commit again");
        }
    }

    fn lock(&self) -> Option<Instant> {
        *self.lock_mut()
    }

    fn lock_mut(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // The guarded value is a plain timestamp: a panic elsewhere cannot leave it torn.
        self.last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A write transaction. Dropping it without `commit` rolls it back.
///
/// Unlike SeaORM's transaction it reports storage failures (of any statement and of the
/// commit) to the store's [`WriteHealth`], and its errors are already [`StoreError`]s. On
/// SQLite it is one call's savepoint in a batch that commits together with the calls around it
/// ([`super::group`]); on PostgreSQL a transaction of its own.
pub struct WriteTx {
    tx: DatabaseTransaction,
    health: Arc<WriteHealth>,
    // Declared after `tx`, so that on drop the savepoint's rollback is queued before the
    // writer is handed on.
    member: Option<Member>,
}

impl WriteTx {
    pub(super) fn new(tx: DatabaseTransaction, health: Arc<WriteHealth>) -> Self {
        Self {
            tx,
            health,
            member: None,
        }
    }

    pub(super) fn grouped(
        tx: DatabaseTransaction,
        health: Arc<WriteHealth>,
        member: Member,
    ) -> Self {
        Self {
            tx,
            health,
            member: Some(member),
        }
    }

    /// Commits. `Ok` means the transaction is durable under the configured synchronous
    /// setting; any error means it is not to be acknowledged.
    pub async fn commit(self) -> Result<(), StoreError> {
        let Self { tx, health, member } = self;
        let mut result = tx.commit().await.map_err(StoreError::from);
        if let Some(member) = member {
            match &result {
                Ok(()) => result = member.released().await,
                Err(error) => {
                    member.poison(error);
                    drop(member);
                }
            }
        }
        if let Err(error) = &result {
            health.record_error(error);
        }
        result
    }

    /// Rolls back. On SQLite, when this call may have read writes of other calls that are not
    /// yet committed, returns only once they have committed or failed, so that whatever the
    /// caller answers from what it read is settled.
    pub async fn rollback(self) -> Result<(), StoreError> {
        let Self { tx, member, .. } = self;
        let result = tx.rollback().await.map_err(StoreError::from);
        if let Some(member) = member {
            if let Err(error) = &result {
                member.poison(error);
            }
            member.rolled_back().await;
        }
        result
    }

    /// Whether this call shares its batch with calls before it.
    #[cfg(test)]
    pub(super) fn follows_others(&self) -> bool {
        self.member.as_ref().is_some_and(Member::follows_others)
    }

    fn noted<T>(&self, result: Result<T, DbErr>) -> Result<T, DbErr> {
        if let Err(error) = &result {
            let error = StoreError::classify(error);
            self.health.record_error(&error);
            if let Some(member) = &self.member
                && group::ends_transaction(&error)
            {
                member.poison(&error);
            }
        }
        result
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for WriteTx {
    fn get_database_backend(&self) -> DbBackend {
        self.tx.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.noted(self.tx.execute_raw(stmt).await)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.noted(self.tx.execute_unprepared(sql).await)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.noted(self.tx.query_one_raw(stmt).await)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.noted(self.tx.query_all_raw(stmt).await)
    }

    fn support_returning(&self) -> bool {
        self.tx.support_returning()
    }
}
