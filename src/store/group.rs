//! Group commit on SQLite: the writes of concurrent calls share one transaction and one fsync.
//!
//! SQLite has one writer, and with `synchronous=full` every commit waits for the disk; one
//! commit per call caps writes at the disk's flush rate. Here the writer connection holds a
//! *batch* transaction open. A call takes the writer (a FIFO lock), runs its statements inside a
//! `SAVEPOINT` of that batch, releases the savepoint and the writer, and then waits for the batch
//! to commit. One committer task commits the batch: once woken, it queues for the writer behind
//! the calls already waiting, so every call that was waiting when the batch began to fill joins
//! it, and calls that arrive during the commit's fsync form the next batch.
//!
//! The writer is held for as long as a call's statements take, and each statement sent to the
//! connection is a round trip to its thread, so the savepoint costs no round trip of its own:
//! it is opened in front of the call's first query, and ended ([`Owed`]) in front of the next
//! call's first query, or by the committer before `COMMIT`.
//!
//! - A call that fails rolls back to its savepoint only; the other calls of the batch are
//!   unaffected.
//! - A call is answered only once the commit that holds it has returned, so no write is
//!   acknowledged before it is durable under the configured `synchronous` setting.
//! - When the commit fails, or a statement fails in a way after which SQLite may have rolled
//!   the whole transaction back (a full disk, an I/O error), the batch is *poisoned*: it is rolled
//!   back and every call in it fails, none acknowledged.
//! - A call reads the changes of the calls before it in the same batch. They commit together or
//!   not at all, so what a committed call read is always committed with it.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, RuntimeErr, TransactionTrait,
};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, mpsc, watch};

use super::{StoreError, WriteHealth};

type Outcome = Option<Result<(), StoreError>>;

/// The name of a call's savepoint. Consecutive calls take turns between two names, so that
/// what one call owes can never be settled on the next call's savepoint: were a call's opening
/// statement ever lost, the statement meant for it would fail ("no such savepoint") and fail
/// the batch, rather than roll back a call that finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Savepoint {
    Even,
    Odd,
}

impl Savepoint {
    fn name(self) -> &'static str {
        match self {
            Savepoint::Even => "leadpipe_call_even",
            Savepoint::Odd => "leadpipe_call_odd",
        }
    }

    fn next(self) -> Self {
        match self {
            Savepoint::Even => Savepoint::Odd,
            Savepoint::Odd => Savepoint::Even,
        }
    }
}

/// What the writer still owes the savepoint of the call that held it last, settled by whoever
/// sends the writer its next statement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Owed {
    #[default]
    Nothing,
    /// The call finished: its savepoint is released into the batch.
    Release(Savepoint),
    /// The call failed or was dropped: its savepoint is rolled back, then released.
    RollBack(Savepoint),
}

impl Owed {
    /// The statements that settle what is owed.
    fn settle(self) -> String {
        match self {
            Owed::Nothing => String::new(),
            Owed::Release(savepoint) => format!("RELEASE {};\n", savepoint.name()),
            Owed::RollBack(savepoint) => {
                let name = savepoint.name();
                format!("ROLLBACK TO {name};\nRELEASE {name};\n")
            }
        }
    }
}

/// The writer's state: the open batch, if any.
pub(super) struct Batch {
    tx: Option<DatabaseTransaction>,
    /// Calls whose savepoint was released into the open batch.
    members: usize,
    outcome: watch::Sender<Outcome>,
    /// Why the open batch cannot commit.
    poisoned: Mutex<Option<StoreError>>,
    owed: Mutex<Owed>,
    /// The savepoint name of the next call to take the writer.
    next_savepoint: Savepoint,
}

impl Batch {
    fn new() -> Self {
        Self {
            tx: None,
            members: 0,
            outcome: watch::channel(None).0,
            poisoned: Mutex::new(None),
            owed: Mutex::default(),
            next_savepoint: Savepoint::Even,
        }
    }

    fn owe(&self, owed: Owed) {
        *self
            .owed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = owed;
    }

    fn take_owed(&self) -> Owed {
        std::mem::take(
            &mut *self
                .owed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub(super) fn poison(&self, error: &StoreError) {
        let mut poisoned = self
            .poisoned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if poisoned.is_none() {
            *poisoned = Some(error.clone());
        }
    }

    fn take_poison(&mut self) -> Option<StoreError> {
        self.poisoned
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn is_poisoned(&mut self) -> bool {
        self.poisoned
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}

pub(super) struct GroupCommit {
    writer: DatabaseConnection,
    batch: Arc<AsyncMutex<Batch>>,
    health: Arc<WriteHealth>,
    wake: mpsc::UnboundedSender<()>,
    acquire_timeout: Duration,
    committer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: std::sync::atomic::AtomicBool,
}

/// A call's hold on the writer, from its savepoint's start to its release.
pub(super) struct Member {
    group: Arc<GroupCommit>,
    batch: Option<OwnedMutexGuard<Batch>>,
    /// Whether calls before this one in the batch had written: then what this call read may
    /// not be committed yet.
    follows_others: bool,
    savepoint: Savepoint,
    /// Whether the call's savepoint was opened: with its first statement, not before.
    opened: std::sync::atomic::AtomicBool,
}

impl GroupCommit {
    /// Starts the committer task on the current runtime.
    pub(super) fn start(
        writer: DatabaseConnection,
        health: Arc<WriteHealth>,
        acquire_timeout: Duration,
    ) -> Arc<Self> {
        let (wake, woken) = mpsc::unbounded_channel();
        let group = Arc::new(Self {
            writer,
            batch: Arc::new(AsyncMutex::new(Batch::new())),
            health,
            wake,
            acquire_timeout,
            committer: Mutex::new(None),
            closed: Default::default(),
        });
        let handle = tokio::spawn(commit_batches(Arc::downgrade(&group), woken));
        *group.committer.lock().expect("fresh mutex") = Some(handle);
        group
    }

    /// Takes the writer for one call, beginning a batch if none is open. The call's savepoint
    /// opens with its first statement ([`Member::prefix`]).
    ///
    /// Its errors are the driver's, so that a statement that takes the writer on the way
    /// (`WriteTx` begun deferred) can return them; waiting too long for the writer and a closed
    /// store are connection errors, which the store reports as `Unavailable`.
    pub(super) async fn begin(self: &Arc<Self>) -> Result<Member, DbErr> {
        let unavailable = |why: &str| DbErr::Conn(RuntimeErr::Internal(why.to_owned()));
        let mut batch =
            match tokio::time::timeout(self.acquire_timeout, self.batch.clone().lock_owned()).await
            {
                Ok(batch) => batch,
                Err(_) => return Err(unavailable("timed out waiting for the database writer")),
            };
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(unavailable("the database is closed"));
        }
        if batch.is_poisoned() {
            self.end_batch(&mut batch).await;
        }
        if batch.tx.is_none() {
            let options = sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            };
            match self.writer.begin_with_options(options).await {
                Ok(tx) => batch.tx = Some(tx),
                Err(error) => {
                    self.health.record_error(&StoreError::classify(&error));
                    return Err(error);
                }
            }
        }
        let follows_others = batch.members > 0;
        let savepoint = batch.next_savepoint;
        batch.next_savepoint = savepoint.next();
        Ok(Member {
            group: self.clone(),
            batch: Some(batch),
            follows_others,
            savepoint,
            opened: Default::default(),
        })
    }

    /// Whether a call or the committer holds the writer now.
    pub(super) fn is_held(&self) -> bool {
        self.batch.try_lock().is_err()
    }

    pub(super) fn supports_returning(&self) -> bool {
        self.writer.support_returning()
    }

    fn wake(&self) {
        let _ = self.wake.send(());
    }

    /// Commits the open batch (or rolls it back when poisoned) and answers its calls.
    async fn end_batch(&self, batch: &mut Batch) {
        let Some(tx) = batch.tx.take() else {
            return;
        };
        let owed = batch.take_owed();
        let mut poison = batch.take_poison();
        if poison.is_none() && matches!(owed, Owed::RollBack(_)) {
            // A `COMMIT` releases the last savepoint, but would keep a failed call's writes.
            if let Err(error) = tx.execute_unprepared(&owed.settle()).await {
                poison = Some(StoreError::from(error));
            }
        }
        let result = match poison {
            Some(error) => {
                tx.rollback().await.ok();
                Err(shared_failure(error))
            }
            None => tx.commit().await.map_err(StoreError::from),
        };
        if let Err(error) = &result {
            self.health.record_error(error);
            if batch.members > 0 {
                tracing::warn!(%error, calls = batch.members, "a batch of writes failed to commit");
            }
        }
        batch.members = 0;
        std::mem::replace(&mut batch.outcome, watch::channel(None).0).send_replace(Some(result));
    }

    /// Commits what is open and stops the committer. Waits for a commit in progress; later
    /// calls fail with `Unavailable`.
    pub(super) async fn close(&self) {
        let mut batch = self.batch.clone().lock_owned().await;
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.end_batch(&mut batch).await;
        let handle = self
            .committer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // It can only be waiting for a wake-up or for the writer this holds.
            handle.abort();
            let _ = handle.await;
        }
    }
}

impl Member {
    pub(super) fn follows_others(&self) -> bool {
        self.follows_others
    }

    /// The batch's transaction, which the call's statements run in.
    pub(super) fn transaction(&self) -> &DatabaseTransaction {
        self.held()
            .tx
            .as_ref()
            .expect("a batch is open while a call holds the writer")
    }

    /// What to send in front of the call's next statement: on its first, what the writer owes
    /// the previous call's savepoint and the opening of this call's. Only a query may carry it:
    /// SQLite counts a statement's changed rows from the last row change made before it, so a
    /// savepoint statement in front of an `UPDATE` would add the previous call's count to the
    /// `UPDATE`'s.
    pub(super) fn prefix(&self) -> String {
        use std::sync::atomic::Ordering;
        if self.opened.swap(true, Ordering::AcqRel) {
            return String::new();
        }
        format!(
            "{}SAVEPOINT {};\n",
            self.held().take_owed().settle(),
            self.savepoint.name()
        )
    }

    /// Whether an error of a statement sent with a [`Self::prefix`] leaves the batch in a state
    /// that cannot be told: the savepoint statements themselves failed.
    pub(super) fn savepoint_failed(error: &StoreError) -> bool {
        matches!(error, StoreError::Database(text) if text.contains("no such savepoint"))
    }

    fn held(&self) -> &Batch {
        self.batch
            .as_ref()
            .expect("the writer is held until released")
    }

    /// What the call leaves the writer owing when it lets go of it.
    fn leave(&self, owed: Owed) {
        if self.opened.load(std::sync::atomic::Ordering::Acquire) {
            self.held().owe(owed);
        }
    }

    pub(super) fn poison(&self, error: &StoreError) {
        if let Some(batch) = &self.batch {
            batch.poison(error);
        }
    }

    /// The call's savepoint was released into the batch: waits for the batch's commit.
    pub(super) async fn released(mut self) -> Result<(), StoreError> {
        self.leave(Owed::Release(self.savepoint));
        let mut batch = self
            .batch
            .take()
            .expect("the writer is held until released");
        batch.members += 1;
        let outcome = batch.outcome.subscribe();
        drop(batch);
        self.group.wake();
        wait(outcome).await
    }

    /// The call's savepoint was rolled back. If it may have read writes of earlier calls in the
    /// batch, waits for the batch to end, so that its answer never reflects a write that later
    /// fails to commit.
    pub(super) async fn rolled_back(mut self) {
        self.leave(Owed::RollBack(self.savepoint));
        let batch = self
            .batch
            .take()
            .expect("the writer is held until released");
        let outcome = self.follows_others.then(|| batch.outcome.subscribe());
        drop(batch);
        self.group.wake();
        if let Some(outcome) = outcome {
            let _ = wait(outcome).await;
        }
    }
}

impl Drop for Member {
    /// A call dropped without committing or rolling back (an error returned early, a cancelled
    /// request): its savepoint's rollback is owed, and is sent ahead of anything the next holder
    /// of the writer runs. The committer ends the batch, so that a batch left open by such calls
    /// alone does not keep the database locked.
    fn drop(&mut self) {
        if self.batch.is_some() {
            self.leave(Owed::RollBack(self.savepoint));
            self.batch = None;
            self.group.wake();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        if let Some(handle) = self
            .committer
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            handle.abort();
        }
    }
}

async fn wait(mut outcome: watch::Receiver<Outcome>) -> Result<(), StoreError> {
    match outcome.wait_for(Option::is_some).await {
        Ok(result) => result.clone().expect("waited for an outcome"),
        Err(_) => Err(StoreError::Unavailable(
            "the database writer stopped before the write committed".into(),
        )),
    }
}

/// The error the calls of a failed batch get: the storage failure itself, or for any other
/// cause, UNAVAILABLE, since their own writes were sound and a retry can commit.
fn shared_failure(error: StoreError) -> StoreError {
    if error.is_storage_failure() || matches!(error, StoreError::Unavailable(_)) {
        error
    } else {
        StoreError::Unavailable(format!(
            "a write committed together with this one failed: {error}"
        ))
    }
}

/// Whether a statement's error may have ended the whole transaction: SQLite may roll it back
/// on a full disk, an I/O error, a busy database or lack of memory, and then later savepoints
/// would run outside it.
pub(super) fn ends_transaction(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::StorageFailure(_)
            | StoreError::StorageFull(_)
            | StoreError::Unavailable(_)
            | StoreError::Corrupt(_)
    ) || matches!(error, StoreError::Database(text) if text.contains("out of memory"))
}

/// The committer: each wake-up, queues for the writer behind the calls already waiting, then
/// commits what they wrote.
async fn commit_batches(group: Weak<GroupCommit>, mut woken: mpsc::UnboundedReceiver<()>) {
    while woken.recv().await.is_some() {
        while woken.try_recv().is_ok() {}
        let Some(group) = group.upgrade() else {
            return;
        };
        let mut batch = group.batch.clone().lock_owned().await;
        group.end_batch(&mut batch).await;
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    use crate::store::{Store, StoreError, WriteTx};

    async fn open(dir: &tempfile::TempDir) -> Store {
        let store = crate::store::open_for_test(dir, "group.db").await;
        store
            .writer()
            .execute_unprepared(
                "CREATE TABLE parent (id INTEGER PRIMARY KEY);
                 CREATE TABLE item (name TEXT PRIMARY KEY, body BLOB,
                     parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
            )
            .await
            .expect("schema");
        store
    }

    async fn insert(tx: &WriteTx, name: &str) -> Result<(), StoreError> {
        tx.execute_unprepared(&format!("INSERT INTO item (name) VALUES ('{name}')"))
            .await?;
        Ok(())
    }

    /// The one number `sql` reads.
    async fn number(db: &impl ConnectionTrait, sql: &str) -> i64 {
        db.query_one_raw(Statement::from_string(DbBackend::Sqlite, sql))
            .await
            .expect("read")
            .expect("a row")
            .try_get_by_index::<i64>(0)
            .expect("a number")
    }

    async fn names(store: &Store) -> Vec<String> {
        store
            .reader()
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT name FROM item ORDER BY name",
            ))
            .await
            .expect("read")
            .iter()
            .map(|row| row.try_get_by_index::<String>(0).expect("name"))
            .collect()
    }

    /// Starts `begin_write` on another task and lets it run until it waits for the writer,
    /// which the caller holds: it is then next in line, ahead of the committer.
    async fn queued(store: &Store) -> tokio::task::JoinHandle<Result<WriteTx, StoreError>> {
        let store = store.clone();
        let waiting = tokio::spawn(async move { store.begin_write().await });
        // On the test's single-threaded runtime the spawned task runs at the first yield, up to
        // its wait for the writer.
        tokio::task::yield_now().await;
        waiting
    }

    /// A second call that waited while `first`, which has written, went on to commit, and so
    /// joins its batch; and `first`'s commit, which returns once the batch commits.
    async fn joined_to_the_commit_of(
        store: &Store,
        first: WriteTx,
    ) -> (tokio::task::JoinHandle<Result<(), StoreError>>, WriteTx) {
        let second = queued(store).await;
        let first = tokio::spawn(first.commit());
        let second = second.await.expect("task").expect("begin");
        (first, second)
    }

    #[tokio::test]
    async fn calls_waiting_together_commit_in_one_batch_and_a_failed_call_only_loses_its_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir).await;
        let first = store.begin_write().await.expect("begin");
        insert(&first, "a").await.expect("insert a");
        let second = queued(&store).await;
        let third = queued(&store).await;
        let first = tokio::spawn(first.commit());

        let second = second.await.expect("task").expect("begin");
        assert!(
            second.follows_others(),
            "the second call joins the first one's batch"
        );
        insert(&second, "b").await.expect("insert b");
        assert!(
            insert(&second, "a").await.is_err(),
            "the first call's row is visible to the second"
        );
        // It read the first call's row: its rollback returns once that row is committed.
        let second = tokio::spawn(second.rollback());

        let third = third.await.expect("task").expect("begin");
        insert(&third, "c").await.expect("insert c");
        third.commit().await.expect("commit c");
        first.await.expect("task").expect("commit a");
        second.await.expect("task").expect("roll back b");
        assert_eq!(names(&store).await, ["a", "c"]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_dropped_call_is_rolled_back_before_the_next_call_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir).await;
        let first = store.begin_write().await.expect("begin");
        insert(&first, "a").await.expect("insert a");
        let second = queued(&store).await;
        drop(first);

        let second = second.await.expect("task").expect("begin");
        // Its first statement is a query, which carries the rollback the dropped call left.
        let seen = second
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT name FROM item",
            ))
            .await
            .expect("read");
        assert!(seen.is_empty(), "the dropped call's row is gone");
        insert(&second, "b").await.expect("insert b");
        second.commit().await.expect("commit b");
        assert_eq!(names(&store).await, ["b"]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_call_dropped_last_in_its_batch_is_rolled_back_before_the_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir).await;
        let first = store.begin_write().await.expect("begin");
        insert(&first, "a").await.expect("insert a");
        let (first, second) = joined_to_the_commit_of(&store, first).await;
        insert(&second, "b").await.expect("insert b");
        drop(second);
        first.await.expect("task").expect("commit a");
        assert_eq!(names(&store).await, ["a"]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_lost_savepoint_opening_fails_the_batch_rather_than_undo_a_finished_call() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir).await;
        let first = store.begin_write().await.expect("begin");
        insert(&first, "a").await.expect("insert a");
        let lost = queued(&store).await;
        let next = queued(&store).await;
        // The committer queues behind both.
        let first = tokio::spawn(first.commit());

        let lost = lost.await.expect("task").expect("begin");
        lost.lose_savepoint_opening();
        drop(lost);
        let next = next.await.expect("task").expect("begin");
        // What the lost call owes names its own savepoint, which does not exist; the finished
        // call's has the other name and is not touched.
        let read = next
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT name FROM item",
            ))
            .await;
        assert!(read.is_err(), "the owed rollback fails: {read:?}");
        drop(next);
        let first = first.await.expect("task");
        assert!(
            first.is_err(),
            "a call whose batch could not be settled is not acknowledged: {first:?}"
        );
        assert!(names(&store).await.is_empty());

        let after = store.begin_write().await.expect("begin after the failure");
        insert(&after, "d").await.expect("insert d");
        after.commit().await.expect("commit d");
        assert_eq!(names(&store).await, ["d"]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_calls_first_update_counts_only_its_own_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir).await;
        let first = store.begin_write().await.expect("begin");
        first
            .execute_unprepared("INSERT INTO item (name) VALUES ('a'), ('b')")
            .await
            .expect("insert");
        let (first, second) = joined_to_the_commit_of(&store, first).await;
        // SQLite reports the last row change made before a statement that changes none, as
        // the savepoint statements are: they must not add the first call's rows to this count.
        let updated = second
            .execute_unprepared("UPDATE item SET body = x'00' WHERE name = 'none'")
            .await
            .expect("update");
        assert_eq!(updated.rows_affected(), 0);
        second.commit().await.expect("commit");
        first.await.expect("task").expect("commit a and b");
        store.close().await;
    }

    #[tokio::test]
    async fn a_failed_batch_commit_fails_every_call_in_it_and_the_next_batch_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir).await;
        let first = store.begin_write().await.expect("begin");
        insert(&first, "a").await.expect("insert a");
        let (first, second) = joined_to_the_commit_of(&store, first).await;
        // Checked only when the batch commits: the whole batch fails there.
        second
            .execute_unprepared("INSERT INTO item (name, parent) VALUES ('orphan', 7)")
            .await
            .expect("deferred");
        let second = second.commit().await;
        let first = first.await.expect("task");
        assert!(
            first.is_err(),
            "the first call is not acknowledged: {first:?}"
        );
        assert!(
            second.is_err(),
            "the second call is not acknowledged: {second:?}"
        );
        assert!(
            names(&store).await.is_empty(),
            "nothing of the batch is stored"
        );

        let next = store.begin_write().await.expect("begin after the failure");
        insert(&next, "d").await.expect("insert d");
        next.commit().await.expect("commit d");
        assert_eq!(names(&store).await, ["d"]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_storage_failure_in_one_call_fails_the_calls_of_its_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir).await;
        let first = store.begin_write().await.expect("begin");
        insert(&first, "a").await.expect("insert a");
        let pages = number(&first, "PRAGMA page_count").await;
        // The database may not grow: a call that needs a new page fails with SQLITE_FULL.
        first
            .execute_unprepared(&format!("PRAGMA max_page_count = {pages}"))
            .await
            .expect("limit");
        let (first, second) = joined_to_the_commit_of(&store, first).await;
        let full = second
            .execute_unprepared("INSERT INTO item (name, body) VALUES ('big', zeroblob(1000000))")
            .await;
        assert!(full.is_err(), "the database is full");
        drop(second);
        let first = first.await.expect("task");
        assert!(
            matches!(first, Err(StoreError::StorageFull(_))),
            "a call whose batch failed in storage is not acknowledged: {first:?}"
        );
        assert!(names(&store).await.is_empty());
        assert!(store.write_health().since_last_failure().is_some());

        store
            .writer()
            .execute_unprepared("PRAGMA max_page_count = 1073741823")
            .await
            .expect("lift the limit");
        let next = store.begin_write().await.expect("begin after the failure");
        insert(&next, "d").await.expect("insert d");
        next.commit().await.expect("commit d");
        assert_eq!(names(&store).await, ["d"]);
        store.close().await;
    }

    /// SQLite's temporary files open in this process (statement journals, spilled sorts).
    fn open_temporary_files() -> Vec<String> {
        std::fs::read_dir("/proc/self/fd")
            .expect("the process's open files")
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target.contains("etilqs_"))
            .collect()
    }

    #[tokio::test]
    async fn a_calls_savepoint_journal_stays_in_memory_and_still_rolls_the_call_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir).await;
        let rows = 200;
        store
            .writer()
            .execute_unprepared(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
                 INSERT INTO item (name, body) SELECT printf('row%03d', i), zeroblob(3000) FROM n"
            ))
            .await
            .expect("rows");
        // Every row's page changes inside the call's savepoint: far more than the 64 KiB at
        // which SQLite would otherwise spill the savepoint's journal to a temporary file.
        let tx = store.begin_write().await.expect("begin");
        tx.execute_unprepared("UPDATE item SET body = randomblob(3000)")
            .await
            .expect("update");
        assert_eq!(open_temporary_files(), Vec::<String>::new());
        tx.rollback().await.expect("rollback");
        let unchanged = number(
            store.reader(),
            "SELECT COUNT(*) FROM item WHERE body = zeroblob(3000)",
        )
        .await;
        assert_eq!(unchanged, rows);
        store.close().await;
    }
}
