//! Owns `Executor`, the cheap cloneable handle that front ends call to run SQL.
//! Must not hold SQLite connections itself: it routes batches to the read pool or the writer.
//! Invariant: a batch that writes anything runs entirely on the writer, as one transaction.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::changeset::apply::ApplyStats;
use crate::changeset::{ChangeSet, Seq};
use crate::db::sink::ReplicationHooks;
use crate::db::{
    DbTarget, Described, Executed, Limits, OpenSpec, ReadOutcome, ReadPool, Stmt, WriterConfig,
    WriterHandle, WriterSession,
};

use super::ExecError;
use super::applied::Applied;

#[derive(Debug, Clone)]
pub struct ExecConfig {
    pub target: DbTarget,
    /// Size of the read pool (`--concurrent-queries`).
    pub read_connections: usize,
    /// Capture and publish every write (a replicated node); `None` for a standalone node.
    pub replication: Option<ReplicationHooks>,
    /// Longest a client job may run (`--query-timeout`); clients may only ask for less.
    pub query_timeout: Option<Duration>,
    /// Largest result one job may build (`--max-result-bytes`).
    pub max_result_bytes: Option<usize>,
}

#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    target: DbTarget,
    spec: Arc<OpenSpec>,
    query_timeout: Option<Duration>,
    max_result_bytes: Option<usize>,
    reader: ReadPool,
    writer: WriterHandle,
    /// Set when SQLite reported the database broken (corrupt, disk I/O); `/readyz` reads it.
    unhealthy: AtomicBool,
    /// The applied stream position, which read-your-writes reads wait on.
    applied: Applied,
}

impl Executor {
    /// Opens the database (creating it if needed) and starts the writer thread.
    pub async fn open(config: ExecConfig) -> Result<Executor, ExecError> {
        let spec = Arc::new(OpenSpec::new(config.target.clone()));
        let writer_spec = spec.clone();
        let checkpoint_on_close = !config.target.is_memory();
        let writer_config = WriterConfig {
            tx_lock: config.target.tx_lock,
            checkpoint_on_close,
            replication: config.replication.clone(),
        };
        let writer =
            tokio::task::spawn_blocking(move || WriterHandle::spawn(&writer_spec, writer_config))
                .await
                .map_err(|e| ExecError::Db(crate::db::DbError::Io(std::io::Error::other(e))))??;
        let reader = ReadPool::new(spec.clone(), config.read_connections);
        let replicated = config.replication.is_some();
        let exec = Executor {
            inner: Arc::new(Inner {
                target: config.target,
                spec,
                query_timeout: config.query_timeout,
                max_result_bytes: config.max_result_bytes,
                reader,
                writer,
                unhealthy: AtomicBool::new(false),
                applied: Applied::new(replicated),
            }),
        };
        // Where the database says it is (read once; applies move it from here). A standalone
        // node has no position (and no `_ha_meta`).
        if replicated {
            exec.applied_seq().await?;
        }
        Ok(exec)
    }

    /// The bounds of a client job that asked for `timeout` (only a shorter one than
    /// `--query-timeout` counts) and can be cancelled through `cancel`.
    pub fn limits(&self, timeout: Option<Duration>, cancel: Option<Arc<AtomicBool>>) -> Limits {
        let server = self.inner.query_timeout;
        let timeout = match (timeout.filter(|t| !t.is_zero()), server) {
            (Some(asked), Some(max)) => Some(asked.min(max)),
            (asked, max) => asked.or(max),
        };
        Limits {
            cancel,
            max_result_bytes: self.inner.max_result_bytes,
            ..Limits::default()
        }
        .with_timeout(timeout)
    }

    /// The server's `--query-timeout`.
    pub fn query_timeout(&self) -> Option<Duration> {
        self.inner.query_timeout
    }

    /// Runs `batch` as one transaction with the server's default bounds; the answer carries
    /// the commit's stream sequence when it wrote on a replicated node.
    pub async fn execute(&self, batch: Vec<Stmt>) -> Result<Executed, ExecError> {
        let limits = self.limits(None, None);
        self.execute_with(batch, limits).await
    }

    /// Waits until this node has applied the stream up to `min` (read-your-writes: `min` is a
    /// commit's sequence, from any node), at most `timeout`; answers the position reached.
    /// Fails with `SeqNotReached` naming the position when the time runs out.
    pub async fn wait_applied(&self, min: Seq, timeout: Duration) -> Result<Seq, ExecError> {
        self.inner.applied.wait_for(min, timeout).await
    }

    /// The applied stream position as last committed (cheap: no database read).
    pub fn applied_position(&self) -> Seq {
        self.inner.applied.current()
    }

    /// Requests waiting in `wait_applied` now.
    pub fn waiting_for_seq(&self) -> usize {
        self.inner.applied.waiting()
    }

    /// Runs `batch` as one transaction within `limits`: on a reader if it only reads, else on
    /// the writer. The answer carries the commit's stream sequence when it wrote on a
    /// replicated node (the position a read-your-writes read waits for).
    pub async fn execute_with(
        &self,
        batch: Vec<Stmt>,
        limits: Limits,
    ) -> Result<Executed, ExecError> {
        if batch.is_empty() {
            return Err(ExecError::BadRequest("no statements to run".into()));
        }
        let batch = Arc::new(batch);
        // A batch that starts with a write goes straight to the writer (no reader round trip).
        let result = if crate::db::starts_with_write(&batch[0].sql) {
            self.inner.writer.write(batch, limits).await
        } else {
            match self
                .inner
                .reader
                .try_read(batch.clone(), limits.clone())
                .await
            {
                Ok(ReadOutcome::Done(r)) => r.map(|results| Executed {
                    results,
                    commit_seq: None,
                    applied: false,
                }),
                Ok(ReadOutcome::NeedsWriter) => self.inner.writer.write(batch, limits).await,
                Err(e) => Err(e),
            }
        };
        if let Ok(Executed {
            commit_seq: Some(seq),
            applied: true,
            ..
        }) = &result
        {
            self.inner.applied.advance(seq.0);
        }
        result.map_err(|e| self.observe(e.into()))
    }

    /// Applies a replicated change set in stream order (the consumer's only way in).
    pub async fn apply(
        &self,
        seq: Seq,
        changeset: Arc<ChangeSet>,
    ) -> Result<ApplyStats, ExecError> {
        self.apply_batch(vec![(seq, changeset)])
            .await
            .pop()
            .unwrap_or(Err(ExecError::Db(crate::db::DbError::WriterGone)))
    }

    /// Applies several change sets, in order, in one transaction; the first failure stops the
    /// rest (they are answered with errors and must be sent again).
    pub async fn apply_batch(
        &self,
        items: Vec<(Seq, Arc<ChangeSet>)>,
    ) -> Vec<Result<ApplyStats, ExecError>> {
        let seqs: Vec<Seq> = items.iter().map(|(s, _)| *s).collect();
        let results: Vec<Result<ApplyStats, ExecError>> = self
            .inner
            .writer
            .apply(items)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| self.observe(e.into())))
            .collect();
        // Committed: readers see them now, so waiting reads may go. One move (and one wake-up
        // of the waiting reads) for the batch: what applied is the part before the first error.
        let last = seqs
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(s, _)| s.0)
            .max();
        if let Some(last) = last {
            self.inner.applied.advance(last);
        }
        results
    }

    /// Records a message that cannot be applied and moves past it.
    pub async fn quarantine(
        &self,
        seq: Seq,
        error: String,
        attempts: u32,
        payload: Vec<u8>,
    ) -> Result<(), ExecError> {
        self.inner
            .writer
            .quarantine(seq, error, attempts, payload)
            .await?;
        self.inner.applied.advance(seq.0);
        Ok(())
    }

    /// The last stream sequence applied to this database (0: none), as committed.
    pub async fn applied_seq(&self) -> Result<Seq, ExecError> {
        let n = self
            .inner
            .reader
            .with_conn(|c| crate::changeset::meta::applied_seq(c).map_err(crate::db::DbError::from))
            .await??;
        self.inner.applied.advance(n);
        Ok(Seq(n))
    }

    /// The per-table checksum at the applied sequence, on a read connection (writes go on).
    pub async fn checksum(&self) -> Result<crate::db::checksum::Checksum, ExecError> {
        Ok(self
            .inner
            .reader
            .with_conn(crate::db::checksum::compute)
            .await??)
    }

    /// Messages parked in the quarantine table.
    pub async fn quarantine_count(&self) -> Result<u64, ExecError> {
        Ok(self
            .inner
            .reader
            .with_conn(|c| {
                crate::changeset::meta::quarantine_count(c).map_err(crate::db::DbError::from)
            })
            .await??)
    }

    /// Compiles `sql` on a read connection and says what it returns, without running it (a
    /// read-only statement without parameters may be stepped once to type its expressions).
    pub async fn describe(&self, sql: &str) -> Result<Described, ExecError> {
        self.inner
            .reader
            .describe(sql.to_string(), self.limits(None, None))
            .await
            .map_err(|e| self.observe(e.into()))
    }

    /// For `Session`: runs `batch` on the read pool if it only reads.
    pub(super) async fn try_read(
        &self,
        batch: Arc<Vec<Stmt>>,
        limits: Limits,
    ) -> Result<ReadOutcome, ExecError> {
        match self.inner.reader.try_read(batch, limits).await {
            Ok(ReadOutcome::Done(Err(e))) => Ok(ReadOutcome::Done(Err(self.observe_db(e)))),
            Ok(other) => Ok(other),
            Err(e) => Err(self.observe(e.into())),
        }
    }

    /// For `Session`: takes the writer for one interactive transaction.
    pub(super) async fn writer_session(
        &self,
        idle_timeout: Option<Duration>,
    ) -> Result<WriterSession, ExecError> {
        self.inner
            .writer
            .session(idle_timeout)
            .await
            .map_err(|e| self.observe(e.into()))
    }

    /// Writes a consistent copy of the database to `dest` (a new file).
    pub async fn backup_to(&self, dest: PathBuf) -> Result<(), ExecError> {
        self.inner
            .reader
            .backup(dest)
            .await
            .map_err(|e| self.observe(e.into()))
    }

    /// Reads the database as an image of its file in one read transaction (see
    /// `ImagePart`); `Ok(false)`: not in WAL mode (or no `sqlite_dbpage` in this build), nothing
    /// read (copy with `backup_to`).
    pub async fn read_image(
        &self,
        f: impl FnMut(crate::db::ImagePart<'_>) -> bool + Send + 'static,
    ) -> Result<bool, ExecError> {
        self.inner
            .reader
            .read_image(f)
            .await
            .map_err(|e| self.observe(e.into()))
    }

    /// Sets (`Some`) or removes (`None`) one key of the node's bookkeeping in `_ha_meta` —
    /// the node's own write, which client SQL may not make.
    pub async fn set_meta(&self, key: &str, value: Option<&str>) -> Result<(), ExecError> {
        self.inner
            .writer
            .set_meta(key.to_string(), value.map(str::to_string))
            .await
            .map_err(|e| self.observe(e.into()))
    }

    /// Replaces the whole database with the (verified) SQLite file at `from`, on the writer,
    /// after the writes queued before it; readers see the old or the new content, never a mix.
    pub async fn restore_from(&self, from: PathBuf) -> Result<(), ExecError> {
        self.inner
            .writer
            .restore_from(from)
            .await
            .map_err(|e| self.observe(e.into()))?;
        // The restored file has a position of its own (maybe behind the one before).
        if let Ok(Ok(n)) = self
            .inner
            .reader
            .with_conn(crate::changeset::meta::applied_seq)
            .await
        {
            self.inner.applied.reset(n);
        }
        Ok(())
    }

    /// The database's size in bytes (pages in use times page size).
    pub async fn size_bytes(&self) -> Result<u64, ExecError> {
        let n = self
            .inner
            .reader
            .with_conn(|c| {
                c.query_row(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .await??;
        Ok(n.max(0) as u64)
    }

    pub fn target(&self) -> &DbTarget {
        &self.inner.target
    }

    /// False once SQLite has reported the database corrupt or its storage failing.
    pub fn is_healthy(&self) -> bool {
        !self.inner.unhealthy.load(Ordering::Relaxed)
    }

    /// Write jobs waiting for the writer.
    pub fn write_queue_len(&self) -> usize {
        self.inner.writer.queue_len()
    }

    /// Interrupts every statement running on the database now and stops every later one (the
    /// end of shutdown's time); the node's own closing steps still run.
    pub fn stop_all(&self) {
        self.inner.spec.stop_all();
    }

    /// Finishes queued writes, checkpoints the WAL and closes every connection.
    pub async fn close(&self) {
        // Readers first, so the writer's connection is the last one and removes the WAL file.
        self.inner.reader.close();
        self.inner.writer.close().await;
    }

    fn observe_db(&self, e: crate::db::DbError) -> crate::db::DbError {
        match self.observe(ExecError::Db(e)) {
            ExecError::Db(e) => e,
            other => crate::db::DbError::Unsupported(other.to_string()),
        }
    }

    fn observe(&self, e: ExecError) -> ExecError {
        if e.is_fatal_db() {
            tracing::error!(error = %e, "database reported a fatal error; node is no longer ready");
            self.inner.unhealthy.store(true, Ordering::Relaxed);
        }
        e
    }
}

impl From<rusqlite::Error> for ExecError {
    fn from(e: rusqlite::Error) -> Self {
        ExecError::Db(e.into())
    }
}
