//! Owns the pool of read connections (`--concurrent-queries` of them) and running read-only
//! batches on it, off the shared async threads: on the blocking pool, or right on the calling
//! thread when that thread is a client's own (see `run_reads_here`).
//! Must not write: a batch that is not entirely read-only is handed back for the writer.
//! Invariant: at most `size` connections exist; a batch of several statements reads one
//! consistent snapshot (one read transaction).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::deadline::{self, Limits};
use super::statement::{self, Described, Stmt, StmtResult};
use super::{DbError, OpenSpec};

/// What a reader made of a batch.
pub(crate) enum ReadOutcome {
    Done(Result<Vec<StmtResult>, DbError>),
    /// The batch writes (or could not be judged here): send it to the writer.
    NeedsWriter,
}

thread_local! {
    /// Set on a client's own thread: its reads run here.
    static HERE: Cell<bool> = const { Cell::new(false) };
}

/// Where a client's running statement can be cancelled from another task (a pg CancelRequest,
/// shutdown): holds the cancel flag of the statement running now, read or write, which the
/// progress handler of whatever connection runs it checks (see `deadline`).
#[derive(Default)]
pub struct CancelSlot(Mutex<Flags>);

#[derive(Default)]
struct Flags {
    /// The flag of the statement running now.
    running: Option<Arc<AtomicBool>>,
    /// The last statement's flag, reused by the next one when nothing else holds it any more.
    spare: Option<Arc<AtomicBool>>,
}

impl CancelSlot {
    /// Cancels the statement running now, if any: it fails with 57014. A statement that starts
    /// later is not affected.
    pub fn interrupt(&self) -> bool {
        let running = self.0.lock().ok().and_then(|h| h.running.clone());
        if let Some(flag) = &running {
            flag.store(true, Ordering::Relaxed);
        }
        running.is_some()
    }

    /// A fresh flag for the statement about to run; the slot cancels it until `finish`.
    pub fn start(&self) -> Arc<AtomicBool> {
        let Ok(mut h) = self.0.lock() else {
            return Arc::default();
        };
        // Only a flag nobody else holds is reused: an `interrupt` that took the last one just
        // before `finish` may still set it, and must not reach this statement.
        let flag = match h.spare.take() {
            Some(mut f) => match Arc::get_mut(&mut f) {
                Some(unshared) => {
                    *unshared.get_mut() = false;
                    f
                }
                None => Arc::default(),
            },
            None => Arc::default(),
        };
        h.running = Some(flag.clone());
        flag
    }

    /// The statement has ended.
    pub fn finish(&self) {
        if let Ok(mut h) = self.0.lock() {
            h.spare = h.running.take();
        }
    }
}

/// Marks the calling thread as one that serves a single client and may block on SQLite (a pg
/// connection's own thread, as a PostgreSQL backend process): reads started from it run on it,
/// saving the two thread hand-offs of the blocking pool per statement.
pub(crate) fn run_reads_here() {
    HERE.set(true);
}

pub(crate) struct ReadPool {
    spec: Arc<OpenSpec>,
    // A std mutex: it is held only to push or pop a connection, never across an await.
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn new(spec: Arc<OpenSpec>, size: usize) -> ReadPool {
        ReadPool {
            spec,
            idle: Arc::new(Mutex::new(Vec::with_capacity(size))),
            permits: Arc::new(Semaphore::new(size)),
        }
    }

    /// Runs `f` with a read connection: on a blocking thread, or here on a client's own thread.
    pub(crate) async fn with_conn<R, F>(&self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        if HERE.get() {
            // Runs before this returns: a borrowed permit, taken without waiting when one is
            // free (the usual case), is enough.
            let _permit = match self.permits.try_acquire() {
                Ok(p) => p,
                Err(_) => self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| DbError::WriterGone)?,
            };
            return with_idle(&self.idle, &self.spec, f);
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DbError::WriterGone)?;
        let idle = self.idle.clone();
        let spec = self.spec.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            with_idle(&idle, &spec, f)
        })
        .await
        .map_err(|e| DbError::Io(std::io::Error::other(e)))?
    }

    /// Runs `batch` here, within `limits`, if every statement in it only reads.
    pub(crate) async fn try_read(
        &self,
        batch: Arc<Vec<Stmt>>,
        limits: Limits,
    ) -> Result<ReadOutcome, DbError> {
        self.with_conn(move |conn| deadline::scope(&limits, || read_batch(conn, &batch)))
            .await
    }

    /// Compiles `sql` on a read connection and says what it would return (within `limits`:
    /// describing may run the statement to its first row).
    pub(crate) async fn describe(&self, sql: String, limits: Limits) -> Result<Described, DbError> {
        self.with_conn(move |conn| deadline::scope(&limits, || statement::describe(conn, &sql)))
            .await?
    }

    /// Copies the database into a new file at `dest` with the online backup API: one read
    /// transaction, so the copy is consistent while writes go on.
    pub(crate) async fn backup(&self, dest: std::path::PathBuf) -> Result<(), DbError> {
        self.with_conn(move |conn| {
            let mut out = Connection::open(&dest)?;
            // A private copy that is read back and deleted: nothing to sync before it is read.
            out.pragma_update(None, "synchronous", "OFF")?;
            let b = rusqlite::backup::Backup::new(conn, &mut out)?;
            b.step(-1)?;
            drop(b);
            out.close().map_err(|(_, e)| DbError::Sqlite(e))
        })
        .await?
    }

    /// Reads the database as an image of its file, in one read transaction: `f` gets the head
    /// (applied sequence and size), then every page in order, then the end, and can stop the
    /// read by returning `false`. `Ok(false)`: nothing was read because the database is not in
    /// WAL mode, where a long read would hold the writer's commits back, or SQLite was built
    /// without `sqlite_dbpage` (the caller copies with `backup` instead).
    pub(crate) async fn read_image(
        &self,
        mut f: impl FnMut(ImagePart<'_>) -> bool + Send + 'static,
    ) -> Result<bool, DbError> {
        self.with_conn(move |conn| {
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Ok(false);
            }
            if conn.prepare_cached(PAGES_SQL).is_err() {
                // Built without SQLITE_ENABLE_DBPAGE_VTAB (outside this repository's
                // `.cargo/config.toml`): the caller copies instead.
                tracing::warn!("this build's SQLite has no sqlite_dbpage; the snapshot copies the database first");
                return Ok(false);
            }
            conn.execute_batch("BEGIN")?;
            let read = read_pages(conn, &mut f);
            let end = conn.execute_batch(if read.is_ok() { "COMMIT" } else { "ROLLBACK" });
            read?;
            end?;
            Ok(true)
        })
        .await?
    }

    /// Closes the idle connections.
    pub(crate) fn close(&self) {
        if let Ok(mut v) = self.idle.lock() {
            v.clear();
        }
    }
}

/// Runs `f` on an idle connection (opening one if none is idle) and puts it back unless `f`
/// left a transaction open.
fn with_idle<R>(
    idle: &Mutex<Vec<Connection>>,
    spec: &OpenSpec,
    f: impl FnOnce(&Connection) -> R,
) -> Result<R, DbError> {
    let conn = match idle.lock().ok().and_then(|mut v| v.pop()) {
        Some(c) => c,
        None => spec.open_reader()?,
    };
    let out = f(&conn);
    if conn.is_autocommit()
        && let Ok(mut v) = idle.lock()
    {
        v.push(conn);
    }
    Ok(out)
}

/// The pages of `main`, in page order, as the file would hold them after a checkpoint.
const PAGES_SQL: &str = "SELECT data FROM sqlite_dbpage('main') ORDER BY pgno";

/// One part of a database image (`read_image`), in order: the head, every page, the end.
pub enum ImagePart<'a> {
    /// The image's applied sequence (`_ha_meta`, 0 without one) and length in bytes.
    Head {
        seq: u64,
        bytes: u64,
    },
    Page(&'a [u8]),
    End,
}

/// Inside `read_image`'s transaction: the head, the pages (`sqlite_dbpage`, in page order, as
/// the file would hold them after a checkpoint), the end.
fn read_pages(conn: &Connection, f: &mut impl FnMut(ImagePart<'_>) -> bool) -> Result<(), DbError> {
    let seq = super::file::read_applied_seq(conn)?;
    let (pages, page_size) = conn.query_row(
        "SELECT page_count, page_size FROM pragma_page_count(), pragma_page_size()",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
    )?;
    let bytes = (pages.max(0) as u64) * (page_size.max(0) as u64);
    if !f(ImagePart::Head { seq, bytes }) {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(PAGES_SQL)?;
    let mut rows = stmt.query([])?;
    let mut read = 0i64;
    while let Some(row) = rows.next()? {
        let data = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
        if data.len() as i64 != page_size {
            return Err(DbError::Unsupported(format!(
                "page {} of the database image is {} bytes, not {page_size}",
                read + 1,
                data.len()
            )));
        }
        read += 1;
        if !f(ImagePart::Page(data)) {
            return Ok(());
        }
    }
    if read != pages {
        return Err(DbError::Unsupported(format!(
            "the database image has {read} pages, not {pages}"
        )));
    }
    f(ImagePart::End);
    Ok(())
}

fn read_batch(conn: &Connection, batch: &[Stmt]) -> ReadOutcome {
    if let [stmt] = batch {
        // One statement: compiled once, to judge it and to run it.
        return match statement::run_if_readonly(conn, stmt) {
            Ok(Some(result)) => ReadOutcome::Done(Ok(vec![result])),
            Ok(None) => ReadOutcome::NeedsWriter,
            Err(e) => ReadOutcome::Done(Err(e)),
        };
    }
    for stmt in batch {
        if statement::refuse_in_batch(&stmt.sql).is_some() {
            return ReadOutcome::NeedsWriter;
        }
        match statement::prepare(conn, &stmt.sql) {
            Ok(ps) if ps.readonly() => {}
            Ok(_) => return ReadOutcome::NeedsWriter,
            // A later statement may need a table an earlier one creates: the writer judges.
            Err(_) => return ReadOutcome::NeedsWriter,
        }
    }
    let result = (|| {
        conn.execute_batch("BEGIN DEFERRED")?;
        let out: Result<Vec<_>, _> = batch
            .iter()
            .enumerate()
            .map(|(index, s)| {
                statement::run(conn, s).map_err(|e| DbError::InStatement {
                    index,
                    source: Box::new(e),
                })
            })
            .collect();
        conn.execute_batch("COMMIT")?;
        out
    })();
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    ReadOutcome::Done(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_interrupt_never_reaches_the_next_statement() {
        let slot = CancelSlot::default();
        let first = slot.start();
        // An interrupt that took the flag just before the statement ended sets it after.
        let late = slot.0.lock().unwrap().running.clone().unwrap();
        slot.finish();
        drop(first);
        let second = slot.start();
        late.store(true, Ordering::Relaxed);
        assert!(!second.load(Ordering::Relaxed));
        assert!(!Arc::ptr_eq(&late, &second));
        drop(late);
        slot.finish();
        // Nothing holds the second flag any more: the third statement gets it back, cleared.
        let before = Arc::as_ptr(&second);
        drop(second);
        let third = slot.start();
        assert_eq!(Arc::as_ptr(&third), before);
        assert!(!third.load(Ordering::Relaxed));
        assert!(slot.interrupt());
        assert!(third.load(Ordering::Relaxed));
        slot.finish();
        assert!(!slot.interrupt(), "nothing runs");
    }
}
