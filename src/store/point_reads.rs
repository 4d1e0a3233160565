//! GetLead's read on a SQLite file, and what MoveLead reads before it takes the writer, run on
//! the calling task.
//!
//! sqlx runs every SQLite statement on a worker thread of its own per connection: the query is
//! sent to that thread, each row sent back over a channel, and the pooled connection handed back
//! by a task spawned when it drops. For one row by primary key, which SQLite answers from its
//! page cache in microseconds, those hand-offs cost several times the read, and the reply is
//! ready a poll later than it could be (BENCHMARKS.md, section 1). Here the read runs in place,
//! through rusqlite, on a few read-only connections of its own with the statement prepared once.
//!
//! It never waits and never decides an error: the connections have no busy timeout, and any
//! error (a lock held by another process during recovery, an I/O error, a value of the wrong
//! type) drops the connection and answers None, so that the caller reads through the read pool
//! as before, where waiting and errors are handled as for every other read. Both start a read
//! transaction on the latest committed state of the WAL, and a write is acknowledged only after
//! its batch has committed (`super::group`), so either way the read sees every acknowledged
//! write.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{OpenFlags, OptionalExtension, Row};
use sea_orm::{IdenStatic, Iterable};

use super::analytics::LeadAt;
use super::analytics::visits::{FROM_THE_START, LEAD_HISTORY_SQL};
use super::entities::lead;
use crate::domain::forecast::visits::HistorySummary;

/// The most stage changes of one lead read here. A history is read while a runtime thread
/// waits, and a lead's history has no bound; the rest of a longer one is read through the
/// writer, and a move that decides before it takes the writer reads it all through the pool,
/// on threads of their own.
pub(super) const MAX_HISTORY_IN_PLACE: usize = 1_000;

/// Idle connections kept for reuse. A read holds its connection only while it runs on a
/// runtime thread, so no more run at once than the runtime has threads; more are opened when
/// needed, and those beyond this are closed after their read.
const MAX_IDLE: usize = 16;

/// Reads of every open lead ([`PointReads::leads_at`]) running here at once. Each holds a
/// blocking thread and a connection for as long as it steps its rows; beyond this many, a read
/// goes through the read pool, whose size and acquire timeout bound it like any other read.
pub(super) const MAX_BULK_READS: usize = 4;

/// What [`PointReads::lead_with_history`] reads.
pub(super) struct LeadWithHistory {
    pub lead: lead::Model,
    /// None when the pipeline is not stored.
    pub pipeline_version: Option<i64>,
    pub summary: HistorySummary,
}

/// Reads of one lead by primary key on connections of their own.
pub(super) struct PointReads {
    path: PathBuf,
    /// `SELECT <every column of lead::Model, in its field order> FROM leads WHERE <the key>`.
    find_lead: String,
    idle: Mutex<Vec<rusqlite::Connection>>,
    closed: AtomicBool,
    bulk_reads: AtomicUsize,
}

/// One of the [`MAX_BULK_READS`] places, given back when dropped.
pub(super) struct BulkRead<'a>(&'a AtomicUsize);

impl Drop for BulkRead<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PointReads {
    /// For the database file at `path`, which the store has already opened and migrated.
    pub(super) fn new(path: &Path) -> Self {
        let columns: Vec<&str> = lead::Column::iter().map(|c| c.as_str()).collect();
        Self {
            path: path.to_path_buf(),
            find_lead: format!(
                "SELECT {} FROM leads WHERE tenant_id = ?1 AND id = ?2",
                columns.join(", ")
            ),
            idle: Mutex::default(),
            closed: AtomicBool::new(false),
            bulk_reads: AtomicUsize::new(0),
        }
    }

    /// The lead's row, Some(None) when there is none, or None when the read could not run here.
    pub(super) fn find_lead(&self, tenant: &str, id: &str) -> Option<Option<lead::Model>> {
        self.with_connection(|connection| {
            connection
                .prepare_cached(&self.find_lead)?
                .query_row((tenant, id), lead_of)
                .optional()
        })
    }

    /// The lead's row with its pipeline's version and its stage history in that pipeline
    /// summarised for a move, from one read transaction; Some(None) when there is no such lead,
    /// None when the read could not run here or the history is longer than
    /// [`MAX_HISTORY_IN_PLACE`].
    pub(super) fn lead_with_history(
        &self,
        tenant: &str,
        id: &str,
    ) -> Option<Option<LeadWithHistory>> {
        self.with_connection(|connection| {
            let snapshot = connection.unchecked_transaction()?;
            let Some(lead) = snapshot
                .prepare_cached(&self.find_lead)?
                .query_row((tenant, id), lead_of)
                .optional()?
            else {
                return Ok(Some(None));
            };
            let pipeline_version = snapshot
                .prepare_cached("SELECT version FROM pipelines WHERE tenant_id = ?1 AND id = ?2")?
                .query_row((tenant, &lead.pipeline_id), |row| row.get(0))
                .optional()?;
            let SummaryRead {
                summary,
                stopped_after: None,
            } = summary_of_history(&snapshot, tenant, id, &lead.pipeline_id)?
            else {
                return Ok(None);
            };
            snapshot.commit()?;
            Ok(Some(Some(LeadWithHistory {
                lead,
                pipeline_version,
                summary,
            })))
        })
        .flatten()
    }

    /// The lead's history in `pipeline` summarised for a change appended to it, as last
    /// committed, up to [`MAX_HISTORY_IN_PLACE`] changes; None when the read could not run here.
    pub(super) fn history_summary(
        &self,
        tenant: &str,
        id: &str,
        pipeline: &str,
    ) -> Option<SummaryRead> {
        self.with_connection(|connection| summary_of_history(connection, tenant, id, pipeline))
    }

    /// The rows of `sql` (the present form of `analytics::leads_at`, whose parameters are all
    /// text) read in one pass of a statement, without the hand-off of each row across threads
    /// that the pool's read makes; None when the read could not run here. Runs for as long as
    /// the rows take to step, so the caller runs it on a blocking thread. None as well when
    /// [`MAX_BULK_READS`] are running.
    pub(super) fn leads_at(&self, sql: &str, values: &[String]) -> Option<Vec<LeadAt>> {
        let _place = self.bulk_read()?;
        self.with_connection(|connection| {
            let mut statement = connection.prepare_cached(sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
                Ok(LeadAt {
                    lead_id: row.get(0)?,
                    stage: row.get(1)?,
                    stage_enter_time: row.get(2)?,
                    currency: row.get(3)?,
                    units: row.get(4)?,
                    nanos: row.get(5)?,
                    source: row.get(6)?,
                    owner: row.get(7)?,
                    labels: row.get(8)?,
                    expected_close_time: row.get(9)?,
                    win_probability: row.get(10)?,
                    close_date_push_count: row.get(11)?,
                    first_expected_close_time: row.get(12)?,
                })
            })?;
            rows.collect()
        })
    }

    /// A place for a read of every open lead, or None when all are taken.
    pub(super) fn bulk_read(&self) -> Option<BulkRead<'_>> {
        let taken = self.bulk_reads.fetch_add(1, Ordering::AcqRel);
        let place = BulkRead(&self.bulk_reads);
        (taken < MAX_BULK_READS).then_some(place)
    }

    /// Runs `read` on an idle connection or a new one. On an error the connection is dropped
    /// (closed) rather than reused, and the answer is None.
    fn with_connection<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Option<T> {
        if self.closed.load(Ordering::Relaxed) {
            return None;
        }
        let popped = self.idle().pop();
        let connection = match popped {
            Some(connection) => connection,
            None => self.open()?,
        };
        let answer = read(&connection).ok()?;
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE && !self.closed.load(Ordering::Relaxed) {
            idle.push(connection);
        }
        Some(answer)
    }

    /// Closes the idle connections; later reads go through the pool.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.idle().clear();
    }

    fn open(&self) -> Option<rusqlite::Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = rusqlite::Connection::open_with_flags(&self.path, flags).ok()?;
        connection.busy_timeout(Duration::ZERO).ok()?;
        Some(connection)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<rusqlite::Connection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The row as SeaORM would have read it; an error when a column does not hold the type the
/// entity declares (the pool's read then reports it as it always has).
fn lead_of(row: &Row<'_>) -> rusqlite::Result<lead::Model> {
    Ok(lead::Model {
        tenant_id: row.get(0)?,
        id: row.get(1)?,
        title: row.get(2)?,
        company: row.get(3)?,
        contact_name: row.get(4)?,
        contact_email: row.get(5)?,
        owner: row.get(6)?,
        source: row.get(7)?,
        pipeline_id: row.get(8)?,
        stage: row.get(9)?,
        amount_currency: row.get(10)?,
        amount_units: row.get(11)?,
        amount_nanos: row.get(12)?,
        budget_currency: row.get(13)?,
        budget_units: row.get(14)?,
        budget_nanos: row.get(15)?,
        bant_authority: row.get(16)?,
        bant_need: row.get(17)?,
        bant_timeline: row.get(18)?,
        expected_close_time: row.get(19)?,
        labels: row.get(20)?,
        lost_reason: row.get(21)?,
        win_probability: row.get(22)?,
        expected_value: row.get(23)?,
        create_time: row.get(24)?,
        update_time: row.get(25)?,
        stage_enter_time: row.get(26)?,
        close_time: row.get(27)?,
        version: row.get(28)?,
        external_id: row.get(29)?,
        close_date_push_count: row.get(30)?,
        first_expected_close_time: row.get(31)?,
    })
}

/// A lead's history summarised as its rows are stepped, without a copy of each.
pub(super) struct SummaryRead {
    pub summary: HistorySummary,
    /// The sequence number of the last change read, when the read stopped at
    /// [`MAX_HISTORY_IN_PLACE`] changes with more to read.
    pub stopped_after: Option<i64>,
}

fn summary_of_history(
    connection: &rusqlite::Connection,
    tenant: &str,
    id: &str,
    pipeline: &str,
) -> rusqlite::Result<SummaryRead> {
    let mut summary = HistorySummary::default();
    let mut history = connection.prepare_cached(LEAD_HISTORY_SQL)?;
    let mut rows = history.query((tenant, id, pipeline, FROM_THE_START))?;
    let mut read = 0;
    let mut last = FROM_THE_START;
    while let Some(row) = rows.next()? {
        if read == MAX_HISTORY_IN_PLACE {
            return Ok(SummaryRead {
                summary,
                stopped_after: Some(last),
            });
        }
        let text = |i| row.get_ref(i)?.as_str().map_err(rusqlite::Error::from);
        summary.push(text(0)?, text(1)?, row.get(2)?);
        last = row.get(3)?;
        read += 1;
    }
    Ok(SummaryRead {
        summary,
        stopped_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lead_of` reads by position, so the SELECT must list the columns in the field order.
    #[test]
    fn the_select_lists_the_entitys_columns_in_field_order() {
        let reads = PointReads::new(Path::new("unused.db"));
        let expected = [
            "tenant_id",
            "id",
            "title",
            "company",
            "contact_name",
            "contact_email",
            "owner",
            "source",
            "pipeline_id",
            "stage",
            "amount_currency",
            "amount_units",
            "amount_nanos",
            "budget_currency",
            "budget_units",
            "budget_nanos",
            "bant_authority",
            "bant_need",
            "bant_timeline",
            "expected_close_time",
            "labels",
            "lost_reason",
            "win_probability",
            "expected_value",
            "create_time",
            "update_time",
            "stage_enter_time",
            "close_time",
            "version",
            "external_id",
            "close_date_push_count",
            "first_expected_close_time",
        ];
        assert_eq!(
            reads.find_lead,
            format!(
                "SELECT {} FROM leads WHERE tenant_id = ?1 AND id = ?2",
                expected.join(", ")
            )
        );
    }
}
