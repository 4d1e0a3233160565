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

use tokio::sync::OnceCell;

use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, Statement,
    Value,
};

use super::StoreError;
use super::group::{self, GroupCommit, Member};

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
    inner: Inner,
    health: Arc<WriteHealth>,
    /// Statements left for the write's last batch ([`WriteTx::execute_later`]).
    later: Mutex<Vec<Later>>,
}

/// A statement left for the write's last batch.
pub(super) struct Later {
    pub statement: Numbered,
    /// The statement must change a row, or the write is [`StoreError::Superseded`].
    pub must_change: bool,
}

/// A statement whose only outcome is success or failure, built with its `$n` parameters
/// numbered from the one given, so that it can join a batch of statements.
pub type Numbered = Box<dyn FnOnce(usize) -> (String, Vec<Value>) + Send>;

enum Inner {
    Own(DatabaseTransaction),
    /// A call's hold on the shared writer, taken at once or with the first statement.
    Grouped {
        group: Arc<GroupCommit>,
        member: OnceCell<Member>,
    },
}

impl WriteTx {
    pub(super) fn new(tx: DatabaseTransaction, health: Arc<WriteHealth>) -> Self {
        Self {
            inner: Inner::Own(tx),
            health,
            later: Mutex::default(),
        }
    }

    pub(super) fn grouped(
        group: &Arc<GroupCommit>,
        member: Member,
        health: Arc<WriteHealth>,
    ) -> Self {
        Self {
            inner: Inner::Grouped {
                group: group.clone(),
                member: OnceCell::new_with(Some(member)),
            },
            health,
            later: Mutex::default(),
        }
    }

    /// A write that takes the shared writer with its first statement.
    pub(super) fn deferred(group: &Arc<GroupCommit>, health: Arc<WriteHealth>) -> Self {
        Self {
            inner: Inner::Grouped {
                group: group.clone(),
                member: OnceCell::new(),
            },
            health,
            later: Mutex::default(),
        }
    }

    /// Commits. `Ok` means the transaction is durable under the configured synchronous
    /// setting; any error means it is not to be acknowledged.
    pub async fn commit(self) -> Result<(), StoreError> {
        for later in self.take_later() {
            self.execute_numbered(later).await?;
        }
        let Self { inner, health, .. } = self;
        let result = match inner {
            Inner::Own(tx) => tx.commit().await.map_err(StoreError::from),
            Inner::Grouped { member, .. } => match member.into_inner() {
                Some(member) => member.released().await,
                // It sent nothing, so there is nothing to commit.
                None => Ok(()),
            },
        };
        if let Err(error) = &result {
            health.record_error(error);
        }
        result
    }

    /// Rolls back. On SQLite, when this call may have read writes of other calls that are not
    /// yet committed, returns only once they have committed or failed, so that whatever the
    /// caller answers from what it read is settled.
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.inner {
            Inner::Own(tx) => tx.rollback().await.map_err(StoreError::from),
            Inner::Grouped { member, .. } => {
                if let Some(member) = member.into_inner() {
                    member.rolled_back().await;
                }
                Ok(())
            }
        }
    }

    /// Runs `statement` with the write's last batch of statements on SQLite's writer (see
    /// [`Self::take_later`]), which saves it a round trip to the connection's thread while the
    /// writer is held; at once on PostgreSQL, where each call has a connection of its own.
    /// Whatever is left at `commit` runs there, before it.
    pub async fn execute_later(&self, statement: Numbered) -> Result<(), StoreError> {
        self.leave_for_later(Later {
            statement,
            must_change: false,
        })
        .await
    }

    /// [`Self::execute_later`] for a statement that must change at least one row: an update or
    /// insert conditional on what the call read before it took the writer (a lead's version, a
    /// pipeline's version). When it changes none, the write fails with
    /// [`StoreError::Superseded`], and the caller rolls it back.
    pub async fn execute_later_or_superseded(&self, statement: Numbered) -> Result<(), StoreError> {
        self.leave_for_later(Later {
            statement,
            must_change: true,
        })
        .await
    }

    async fn leave_for_later(&self, later: Later) -> Result<(), StoreError> {
        match &self.inner {
            Inner::Own(_) => self.execute_numbered(later).await,
            Inner::Grouped { .. } => {
                self.later
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(later);
                Ok(())
            }
        }
    }

    /// The statements left by [`Self::execute_later`], for a batch that runs them.
    pub(super) fn take_later(&self) -> Vec<Later> {
        std::mem::take(
            &mut *self
                .later
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    async fn execute_numbered(&self, later: Later) -> Result<(), StoreError> {
        let (sql, values) = (later.statement)(1);
        let backend = self.get_database_backend();
        let (sql, values) = match backend {
            DbBackend::Sqlite => positional(&sql, &values)?,
            _ => (sql, values),
        };
        let result = self
            .execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        if later.must_change && result.rows_affected() == 0 {
            return Err(StoreError::Superseded);
        }
        Ok(())
    }

    /// Takes what would open the call's savepoint and never sends it.
    #[cfg(test)]
    pub(super) fn lose_savepoint_opening(&self) {
        if let Inner::Grouped { member, .. } = &self.inner
            && let Some(member) = member.get()
        {
            member.prefix();
        }
    }

    /// Whether this call shares its batch with calls before it.
    #[cfg(test)]
    pub(super) fn follows_others(&self) -> bool {
        matches!(&self.inner, Inner::Grouped { member, .. }
            if member.get().is_some_and(Member::follows_others))
    }

    /// Whether what this write reads of rows it has not written equals the committed state: it
    /// holds SQLite's writer, so nothing else commits, and no call before it in the open batch
    /// has written.
    pub(super) fn sees_committed_state(&self) -> bool {
        matches!(&self.inner, Inner::Grouped { member, .. }
            if member.get().is_some_and(|member| !member.follows_others()))
    }

    /// The transaction to run a statement in. In a batch, a `query` carries what opens the
    /// call's savepoint; any other statement that would be the call's first is preceded by it.
    async fn prepared(&self, query: Option<&mut Statement>) -> Result<&DatabaseTransaction, DbErr> {
        let member = match &self.inner {
            Inner::Own(tx) => return Ok(tx),
            Inner::Grouped { group, member } => member.get_or_try_init(|| group.begin()).await?,
        };
        let prefix = member.prefix();
        if !prefix.is_empty() {
            match query {
                Some(query) => query.sql.insert_str(0, &prefix),
                None => {
                    self.noted(member.transaction().execute_unprepared(&prefix).await)?;
                }
            }
        }
        Ok(member.transaction())
    }

    fn noted<T>(&self, result: Result<T, DbErr>) -> Result<T, DbErr> {
        if let Err(error) = &result {
            let error = StoreError::classify(error);
            self.health.record_error(&error);
            if let Inner::Grouped { member, .. } = &self.inner
                && let Some(member) = member.get()
                && (group::ends_transaction(&error) || Member::savepoint_failed(&error))
            {
                member.poison(&error);
            }
        }
        result
    }
}

/// `sql` with its `$n` parameters turned into anonymous `?` ones, and the values in the order
/// they now bind, a value repeated where its parameter is: how the statements left for later
/// go to SQLite. SQLite finds a numbered parameter's name by walking a list of every parameter
/// of the statement, and the driver asks for each parameter's name as it binds, so binding grew
/// with the square of a statement's parameters; anonymous parameters bind in order. Quoted
/// strings and identifiers are copied unchanged.
pub(super) fn positional(sql: &str, values: &[Value]) -> Result<(String, Vec<Value>), StoreError> {
    let malformed = |what: &str| StoreError::Database(format!("the statement {what}"));
    // Every byte looked at is ASCII, so each cut falls between two characters.
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut bound = Vec::with_capacity(values.len());
    let (mut copied, mut at) = (0, 0);
    let mut quote: Option<u8> = None;
    while at < bytes.len() {
        let byte = bytes[at];
        match (quote, byte) {
            (Some(open), _) if byte == open => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(byte),
            (None, b'?') => return Err(malformed("mixes anonymous and numbered parameters")),
            (None, b'$') => {
                let digits = bytes[at + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let number = &sql[at + 1..at + 1 + digits];
                let value = number
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|index| values.get(index))
                    .ok_or_else(|| malformed(&format!("names a parameter ${number} it lacks")))?;
                out.push_str(&sql[copied..at]);
                out.push('?');
                bound.push(value.clone());
                at += 1 + digits;
                copied = at;
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    if quote.is_some() {
        return Err(malformed("ends inside quotes"));
    }
    out.push_str(&sql[copied..]);
    Ok((out, bound))
}

#[async_trait::async_trait]
impl ConnectionTrait for WriteTx {
    fn get_database_backend(&self) -> DbBackend {
        match &self.inner {
            Inner::Own(tx) => tx.get_database_backend(),
            Inner::Grouped { .. } => DbBackend::Sqlite,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let tx = self.prepared(None).await?;
        self.noted(tx.execute_raw(stmt).await)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let tx = self.prepared(None).await?;
        self.noted(tx.execute_unprepared(sql).await)
    }

    async fn query_one_raw(&self, mut stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let tx = self.prepared(Some(&mut stmt)).await?;
        self.noted(tx.query_one_raw(stmt).await)
    }

    async fn query_all_raw(&self, mut stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let tx = self.prepared(Some(&mut stmt)).await?;
        self.noted(tx.query_all_raw(stmt).await)
    }

    fn support_returning(&self) -> bool {
        match &self.inner {
            Inner::Own(tx) => tx.support_returning(),
            Inner::Grouped { group, .. } => group.supports_returning(),
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::Value;

    use super::positional;

    #[test]
    fn numbered_parameters_become_anonymous_ones_bound_in_their_order() {
        let values: Vec<Value> = vec!["t".into(), 7i64.into(), "x".into()];
        let (sql, bound) = positional(
            "INSERT INTO \"a$1\" VALUES ($2, '$3', $3); SELECT n FROM s WHERE t = $1",
            &values,
        )
        .expect("rewritten");
        assert_eq!(
            sql,
            "INSERT INTO \"a$1\" VALUES (?, '$3', ?); SELECT n FROM s WHERE t = ?"
        );
        assert_eq!(bound, vec![7i64.into(), "x".into(), "t".into()]);
    }

    #[test]
    fn a_parameter_without_a_value_or_a_mix_of_styles_is_refused() {
        let values: Vec<Value> = vec![1i64.into()];
        assert!(positional("SELECT $2", &values).is_err());
        assert!(positional("SELECT $0", &values).is_err());
        assert!(positional("SELECT $", &values).is_err());
        assert!(positional("SELECT $1, ?", &values).is_err());
        assert!(positional("SELECT '$1", &values).is_err());
    }
}
