//! GetLead's read on SQLite, run on the calling task.
//!
//! sqlx runs every SQLite statement on a thread of its own per connection: a read is sent to
//! that thread and its rows sent back, and the pooled connection is returned by a task spawned
//! when it drops. For a read of one row by primary key, which SQLite answers from its page cache
//! in microseconds, those two thread hand-offs, the spawned task and the row's decoding by name
//! cost several times the read itself (BENCHMARKS.md, "The read path"). Here the read runs
//! in place, on connections of its own with the statement prepared once.
//!
//! It never waits: the connections have no busy timeout, and any error (the database locked by
//! another process, an I/O error) gives up the connection and answers None, so that the caller
//! reads through the pool as before, where waiting and errors are handled as for every other
//! read. Both see the latest committed state (WAL), so the answer is the same either way.

use std::ffi::{CStr, CString, c_int};
use std::ptr::{NonNull, null_mut};
use std::sync::Mutex;

use libsqlite3_sys as ffi;

use super::entities::lead;

/// The columns of `leads`, in the order of `lead::Model`'s fields.
const LEAD_COLUMNS: &[&str] = &[
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

/// Idle connections kept for reuse; more are opened while more reads run at once, and those
/// beyond this are closed when their read ends.
const MAX_IDLE: usize = 16;

/// Reads of one lead by primary key on connections of their own.
pub(super) struct PointReads {
    path: CString,
    idle: Mutex<Vec<ReadConnection>>,
    closed: std::sync::atomic::AtomicBool,
}

impl PointReads {
    /// For the database file at `path`; None for an in-memory database, which other
    /// connections cannot open.
    pub(super) fn new(path: &std::path::Path) -> Option<Self> {
        let text = path.to_str()?;
        if text.is_empty() || text.starts_with(":memory:") {
            return None;
        }
        Some(Self {
            path: CString::new(text).ok()?,
            idle: Mutex::default(),
            closed: Default::default(),
        })
    }

    /// The lead's row, Some(None) when there is none, or None when the read could not run here.
    pub(super) fn find_lead(&self, tenant: &str, id: &str) -> Option<Option<lead::Model>> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let popped = self.idle().pop();
        let mut connection = match popped {
            Some(connection) => connection,
            None => ReadConnection::open(&self.path)?,
        };
        // On an error the connection is dropped (closed) rather than reused.
        let row = connection.find_lead(tenant, id)?;
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE && !self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            idle.push(connection);
        }
        Some(row)
    }

    /// Closes the idle connections; later reads go through the pool.
    pub(super) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.idle().clear();
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<ReadConnection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct ReadConnection {
    db: NonNull<ffi::sqlite3>,
    find_lead: NonNull<ffi::sqlite3_stmt>,
}

// SAFETY: the connection is opened in SQLite's multi-thread mode and used by one thread at a
// time: it is either in the idle list (behind its mutex) or owned by the one read using it.
unsafe impl Send for ReadConnection {}

impl ReadConnection {
    fn open(path: &CStr) -> Option<Self> {
        let mut db = null_mut();
        // SAFETY: `path` is NUL-terminated and `db` receives the handle, which must be closed
        // even when opening fails.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                path.as_ptr(),
                &mut db,
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_NOMUTEX,
                std::ptr::null(),
            )
        };
        let db = NonNull::new(db)?;
        if rc != ffi::SQLITE_OK {
            // SAFETY: a handle from sqlite3_open_v2, closed once.
            unsafe { ffi::sqlite3_close(db.as_ptr()) };
            return None;
        }
        let sql = format!(
            "SELECT {} FROM leads WHERE tenant_id = ?1 AND id = ?2",
            LEAD_COLUMNS.join(", ")
        );
        let mut statement = null_mut();
        // SAFETY: `db` is open; the SQL's length is given, so it need not be NUL-terminated.
        let rc = unsafe {
            // This connection only reads; a write through it would be a bug, refused here.
            let pragma = c"PRAGMA query_only = 1";
            let pragma_rc =
                ffi::sqlite3_exec(db.as_ptr(), pragma.as_ptr(), None, null_mut(), null_mut());
            if pragma_rc == ffi::SQLITE_OK {
                ffi::sqlite3_prepare_v3(
                    db.as_ptr(),
                    sql.as_ptr().cast(),
                    sql.len() as c_int,
                    ffi::SQLITE_PREPARE_PERSISTENT,
                    &mut statement,
                    null_mut(),
                )
            } else {
                pragma_rc
            }
        };
        match NonNull::new(statement) {
            Some(find_lead) if rc == ffi::SQLITE_OK => Some(Self { db, find_lead }),
            _ => {
                // SAFETY: as above; a statement prepared despite an error is finalized first.
                unsafe {
                    ffi::sqlite3_finalize(statement);
                    ffi::sqlite3_close(db.as_ptr());
                }
                None
            }
        }
    }

    fn find_lead(&mut self, tenant: &str, id: &str) -> Option<Option<lead::Model>> {
        let statement = self.find_lead.as_ptr();
        // SAFETY: the statement belongs to this connection, which this thread alone uses. The
        // bound texts are borrowed (SQLITE_STATIC) and stay alive until the statement is reset
        // below, before this function returns.
        unsafe {
            let bound = ffi::sqlite3_bind_text(
                statement,
                1,
                tenant.as_ptr().cast(),
                tenant.len() as c_int,
                ffi::SQLITE_STATIC(),
            ) == ffi::SQLITE_OK
                && ffi::sqlite3_bind_text(
                    statement,
                    2,
                    id.as_ptr().cast(),
                    id.len() as c_int,
                    ffi::SQLITE_STATIC(),
                ) == ffi::SQLITE_OK;
            let result = if bound {
                match ffi::sqlite3_step(statement) {
                    ffi::SQLITE_ROW => Row(statement).lead().map(Some),
                    ffi::SQLITE_DONE => Some(None),
                    _ => None,
                }
            } else {
                None
            };
            let reset = ffi::sqlite3_reset(statement) == ffi::SQLITE_OK;
            ffi::sqlite3_clear_bindings(statement);
            if reset { result } else { None }
        }
    }
}

impl Drop for ReadConnection {
    fn drop(&mut self) {
        // SAFETY: the statement and the handle are this connection's, finalized and closed once.
        unsafe {
            ffi::sqlite3_finalize(self.find_lead.as_ptr());
            ffi::sqlite3_close(self.db.as_ptr());
        }
    }
}

/// The current row of a stepped statement.
struct Row(*mut ffi::sqlite3_stmt);

impl Row {
    /// The row as the entity SeaORM would have read; None when a column does not hold the type
    /// the entity declares (the pool's read then reports it as it always has).
    fn lead(&self) -> Option<lead::Model> {
        let mut index = 0;
        let mut next = || {
            index += 1;
            index - 1
        };
        Some(lead::Model {
            tenant_id: self.text(next())?,
            id: self.text(next())?,
            title: self.text(next())?,
            company: self.text(next())?,
            contact_name: self.text(next())?,
            contact_email: self.text(next())?,
            owner: self.text(next())?,
            source: self.text(next())?,
            pipeline_id: self.text(next())?,
            stage: self.text(next())?,
            amount_currency: self.text(next())?,
            amount_units: self.int(next())?,
            amount_nanos: i32::try_from(self.int(next())?).ok()?,
            budget_currency: self.text(next())?,
            budget_units: self.int(next())?,
            budget_nanos: i32::try_from(self.int(next())?).ok()?,
            bant_authority: self.text(next())?,
            bant_need: self.text(next())?,
            bant_timeline: self.optional(next(), Self::int)?,
            expected_close_time: self.optional(next(), Self::int)?,
            labels: self.text(next())?,
            lost_reason: self.text(next())?,
            win_probability: self.real(next())?,
            expected_value: self.real(next())?,
            create_time: self.int(next())?,
            update_time: self.int(next())?,
            stage_enter_time: self.int(next())?,
            close_time: self.optional(next(), Self::int)?,
            version: self.int(next())?,
            external_id: self.optional(next(), Self::text)?,
            close_date_push_count: self.int(next())?,
            first_expected_close_time: self.optional(next(), Self::int)?,
        })
    }

    fn kind(&self, column: c_int) -> c_int {
        // SAFETY: the statement has a current row with this many columns (LEAD_COLUMNS).
        unsafe { ffi::sqlite3_column_type(self.0, column) }
    }

    fn text(&self, column: c_int) -> Option<String> {
        if self.kind(column) != ffi::SQLITE_TEXT {
            return None;
        }
        // SAFETY: as in `kind`; the pointer stays valid until the next step or reset, and the
        // length is read after the text, as SQLite documents.
        unsafe {
            let text = ffi::sqlite3_column_text(self.0, column);
            let len = ffi::sqlite3_column_bytes(self.0, column);
            if text.is_null() {
                return Some(String::new());
            }
            let bytes = std::slice::from_raw_parts(text, usize::try_from(len).ok()?);
            String::from_utf8(bytes.to_vec()).ok()
        }
    }

    fn int(&self, column: c_int) -> Option<i64> {
        if self.kind(column) != ffi::SQLITE_INTEGER {
            return None;
        }
        // SAFETY: as in `kind`.
        Some(unsafe { ffi::sqlite3_column_int64(self.0, column) })
    }

    fn real(&self, column: c_int) -> Option<f64> {
        match self.kind(column) {
            // SAFETY: as in `kind`.
            ffi::SQLITE_FLOAT | ffi::SQLITE_INTEGER => {
                Some(unsafe { ffi::sqlite3_column_double(self.0, column) })
            }
            _ => None,
        }
    }

    /// None when the column's value is of the wrong type; Some(None) when it is NULL.
    fn optional<T>(
        &self,
        column: c_int,
        read: impl Fn(&Self, c_int) -> Option<T>,
    ) -> Option<Option<T>> {
        if self.kind(column) == ffi::SQLITE_NULL {
            return Some(None);
        }
        read(self, column).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{IdenStatic, Iterable};

    use super::*;

    #[test]
    fn the_columns_are_the_entitys_in_order() {
        let entity: Vec<String> = lead::Column::iter()
            .map(|column| column.as_str().to_owned())
            .collect();
        assert_eq!(entity, LEAD_COLUMNS);
    }
}
