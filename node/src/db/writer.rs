//! Owns the single write connection and runs every write on its own thread, in arrival order.
//! Must not block async workers: callers send a job over a bounded channel and await a oneshot.
//! Invariant: jobs waiting together are committed together (group commit), each inside its own
//! SAVEPOINT, so one failing job never undoes or fails another. An interactive session (pg
//! BEGIN…COMMIT) takes the writer whole: the open group commits first, then only that session's
//! commands run until it commits, rolls back, idles too long or goes away. Both paths commit
//! through `finish_transaction`, the one place where a transaction becomes durable.
//! With replication, every statement's row changes are captured (see `capture`), and the commit
//! publishes them through the `ChangeSink` before SQLite commits: nothing is committed that is
//! not in the log. Replicated change sets are applied here too, in stream order (`apply`).
//! See `exec::Executor` and `exec::Session` for the callers.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::apply::{self, ApplyStats};
use super::apply_mode::ApplyMode;
use super::capture::{Capture, Captured};
use super::deadline::{self, Limits};
use super::dsn::TxLock;
use super::intercepted::{self, SAVEPOINT};
use super::meta;
use super::schema::TableCache;
use super::sink::{PublishAfterError, ReplicationHooks};
use super::statement::{self, Described, Stmt, StmtResult};
use super::{DbError, OpenSpec};
use crate::changeset::{Change, ChangeSet, Operation, Seq, ddl};
use crate::interceptor::Publish;

/// How many applied change sets between two prunings of `_ha_txids`.
const PRUNE_EVERY: usize = 10_000;
/// How many jobs one SQLite transaction may carry at most.
const MAX_GROUP: usize = 256;
/// How long a batch with DDL that lost the race to the log is tried again (see `write`).
const DDL_RETRY_FOR: Duration = Duration::from_secs(2);
/// How many jobs may wait for the writer before senders wait too.
const QUEUE_DEPTH: usize = 4096;

#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub tx_lock: TxLock,
    /// Checkpoint the WAL into the main file when the writer stops.
    pub checkpoint_on_close: bool,
    /// Capture and publish every transaction (None: a standalone node).
    pub replication: Option<ReplicationHooks>,
}

type Reply<T> = oneshot::Sender<Result<T, DbError>>;
/// One replicated change set (at stream sequence `Seq`) and where its outcome goes.
type ApplyItem = (Seq, Arc<ChangeSet>, Reply<ApplyStats>);
/// A batch waiting in a group, with where its answer goes.
type Pending = (Arc<Vec<Stmt>>, Limits, Reply<Vec<StmtResult>>);
/// A batch of a group that ran in its savepoint, waiting for the group's commit.
type Ran = (
    Arc<Vec<Stmt>>,
    Limits,
    Reply<Vec<StmtResult>>,
    Vec<StmtResult>,
);

enum Job {
    Batch {
        stmts: Arc<Vec<Stmt>>,
        /// The client's bounds (time, cancel, result size), enforced while the job runs.
        limits: Limits,
        reply: Reply<Vec<StmtResult>>,
    },
    /// An interactive session takes the writer (see `serve_session`).
    Session(SessionStart),
    /// Apply replicated change sets, in this order, in one transaction if they all apply.
    Apply(Vec<ApplyItem>),
    /// Give up on a message that cannot be applied: record it and move past it.
    Quarantine {
        seq: Seq,
        error: String,
        attempts: u32,
        payload: Vec<u8>,
        reply: Reply<()>,
    },
    /// Replace the whole database with the SQLite file at `from` (snapshot recovery), with the
    /// online backup API into the write connection: readers see the new content once it is
    /// complete, never a mix.
    Restore { from: PathBuf, reply: Reply<()> },
    /// Finish what is queued, then stop.
    Shutdown,
}

struct SessionStart {
    cmds: std_mpsc::Receiver<SessionCmd>,
    /// Answered once the session's transaction is open on the writer.
    ready: Reply<()>,
    idle_timeout: Option<Duration>,
    /// Set by the writer when it rolled the session back because it idled too long.
    timed_out: Arc<AtomicBool>,
}

/// What a session that holds the writer asks of it.
pub(crate) enum SessionCmd {
    Run {
        stmt: Stmt,
        limits: Limits,
        reply: Reply<StmtResult>,
    },
    /// Compile `sql` inside the session's transaction (it may see tables the session created).
    Describe {
        sql: String,
        reply: Reply<Described>,
    },
    /// Transaction-control SQL built by `exec::Session` from validated names (SAVEPOINT,
    /// RELEASE, ROLLBACK TO); never user text.
    Control {
        sql: String,
        reply: Reply<()>,
    },
    Commit {
        reply: Reply<()>,
    },
    Rollback {
        reply: Reply<()>,
    },
}

/// A session's hold on the writer: commands go to the writer thread, which serves nobody else
/// until the session ends. Dropping it rolls the session's transaction back.
pub(crate) struct WriterSession {
    cmds: std_mpsc::Sender<SessionCmd>,
    timed_out: Arc<AtomicBool>,
}

impl WriterSession {
    /// Sends `make(reply)` to the writer and waits for the answer.
    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> SessionCmd,
    ) -> Result<T, DbError> {
        let (reply, rx) = oneshot::channel();
        self.cmds.send(make(reply)).map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())?
    }

    fn gone(&self) -> DbError {
        if self.timed_out.load(Ordering::Acquire) {
            DbError::SessionTimedOut
        } else {
            DbError::WriterGone
        }
    }
}

/// The cheap handle through which everything reaches the writer thread.
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Job>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    /// Opens the write connection on a new thread and starts serving jobs.
    pub(crate) fn spawn(spec: &OpenSpec, config: WriterConfig) -> Result<WriterHandle, DbError> {
        let mut conn = spec.open_writer()?;
        let repl = match config.replication.clone() {
            Some(hooks) => {
                meta::ensure(&conn)?;
                Some(Replicating {
                    capture: Capture::install(&mut conn)?,
                    tables: TableCache::default(),
                    hooks,
                    applied_since_prune: 0,
                    savepoints: Vec::new(),
                })
            }
            None => None,
        };
        let w = WriteConn {
            conn,
            tx_lock: config.tx_lock,
            repl,
        };
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let checkpoint = config.checkpoint_on_close;
        let thread = std::thread::Builder::new()
            .name("ha-writer".into())
            .spawn(move || run(w, rx, checkpoint))?;
        Ok(WriterHandle {
            tx,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Runs a batch as one transaction. A batch with DDL that lost the race to the log (this
    /// node had not applied everything yet, typically its own previous commit) committed
    /// nothing: it runs again once the node has caught up, for up to `DDL_RETRY_FOR`.
    pub(crate) async fn write(
        &self,
        stmts: Arc<Vec<Stmt>>,
        limits: Limits,
    ) -> Result<Vec<StmtResult>, DbError> {
        let deadline = std::time::Instant::now() + DDL_RETRY_FOR;
        let mut wait = Duration::from_millis(5);
        loop {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Job::Batch {
                    stmts: stmts.clone(),
                    limits: limits.clone(),
                    reply,
                })
                .await
                .map_err(|_| DbError::WriterGone)?;
            match rx.await.map_err(|_| DbError::WriterGone)? {
                Err(e)
                    if matches!(e.root(), DbError::Conflict(_))
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// Waits for the writer, then opens a transaction that only the returned session uses.
    pub(crate) async fn session(
        &self,
        idle_timeout: Option<Duration>,
    ) -> Result<WriterSession, DbError> {
        let (cmd_tx, cmds) = std_mpsc::channel();
        let (ready, rx) = oneshot::channel();
        let timed_out = Arc::new(AtomicBool::new(false));
        let start = SessionStart {
            cmds,
            ready,
            idle_timeout,
            timed_out: timed_out.clone(),
        };
        self.tx
            .send(Job::Session(start))
            .await
            .map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)??;
        Ok(WriterSession {
            cmds: cmd_tx,
            timed_out,
        })
    }

    /// Applies replicated change sets in order, in one transaction (each in a savepoint); the
    /// first that fails stops the rest. One outcome per change set, once committed.
    pub(crate) async fn apply(
        &self,
        items: Vec<(Seq, Arc<ChangeSet>)>,
    ) -> Vec<Result<ApplyStats, DbError>> {
        let mut jobs = Vec::with_capacity(items.len());
        let mut answers = Vec::with_capacity(items.len());
        for (seq, cs) in items {
            let (reply, rx) = oneshot::channel();
            jobs.push((seq, cs, reply));
            answers.push(rx);
        }
        if self.tx.send(Job::Apply(jobs)).await.is_err() {
            return answers.iter().map(|_| Err(DbError::WriterGone)).collect();
        }
        let mut out = Vec::with_capacity(answers.len());
        for rx in answers {
            out.push(rx.await.unwrap_or(Err(DbError::WriterGone)));
        }
        out
    }

    /// Records a message that cannot be applied and moves the applied sequence past it.
    pub(crate) async fn quarantine(
        &self,
        seq: Seq,
        error: String,
        attempts: u32,
        payload: Vec<u8>,
    ) -> Result<(), DbError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Quarantine {
                seq,
                error,
                attempts,
                payload,
                reply,
            })
            .await
            .map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Replaces the database's content with the SQLite file at `from` (see `Job::Restore`).
    pub(crate) async fn restore_from(&self, from: PathBuf) -> Result<(), DbError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Restore { from, reply })
            .await
            .map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Jobs waiting for the writer right now.
    pub(crate) fn queue_len(&self) -> usize {
        QUEUE_DEPTH - self.tx.capacity()
    }

    /// Stops taking jobs, finishes the queued ones, checkpoints and closes the connection.
    pub(crate) async fn close(&self) {
        // The thread closes its end on Shutdown, drains what was queued before, and exits.
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        let _ = self.tx.send(Job::Shutdown).await;
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// The write connection and, with replication, what captures and publishes its changes.
struct WriteConn {
    conn: Connection,
    tx_lock: TxLock,
    repl: Option<Replicating>,
}

struct Replicating {
    capture: Capture,
    tables: TableCache,
    hooks: ReplicationHooks,
    /// Change sets applied since `_ha_txids` was last pruned.
    applied_since_prune: usize,
    /// Open savepoints of an interactive session with the capture position at each, so that
    /// ROLLBACK TO also drops what was captured after it.
    savepoints: Vec<(String, usize)>,
}

impl WriteConn {
    fn begin(&mut self) -> Result<(), DbError> {
        self.conn.execute_batch(self.tx_lock.begin_sql())?;
        Ok(())
    }

    /// Runs one statement; with replication, captures its changes (and its DDL text), or drops
    /// them if it fails.
    fn run(&mut self, stmt: &Stmt) -> Result<StmtResult, DbError> {
        let Some(r) = &mut self.repl else {
            return statement::run(&self.conn, stmt);
        };
        let mark = r.capture.mark();
        let result = statement::run(&self.conn, stmt).and_then(|res| {
            flush_virtual_tables(&self.conn, &mut r.tables)?;
            r.capture.resolve_pending(&self.conn, &mut r.tables)?;
            Ok(res)
        });
        match result {
            Ok(res) => {
                if let Err(e) = r.after_statement(&self.conn, &stmt.sql, mark) {
                    r.capture.truncate(mark);
                    return Err(e);
                }
                Ok(res)
            }
            Err(e) => {
                r.capture.truncate(mark);
                Err(e)
            }
        }
    }

    /// Session savepoint statements (built by `exec::Session` from validated names).
    fn control(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn
            .execute_batch(sql)
            .map_err(|source| DbError::Run { source })?;
        if let Some(r) = &mut self.repl {
            let words: Vec<&str> = sql.split_whitespace().collect();
            let name = words.last().map(|w| w.to_string()).unwrap_or_default();
            match statement::leading_keyword(sql).as_str() {
                "SAVEPOINT" => r.savepoints.push((name, r.capture.mark())),
                "RELEASE" => {
                    if let Some(i) = r
                        .savepoints
                        .iter()
                        .rposition(|(n, _)| n.eq_ignore_ascii_case(&name))
                    {
                        r.savepoints.truncate(i);
                    }
                }
                "ROLLBACK" => {
                    // ROLLBACK TO keeps the savepoint open.
                    if let Some(i) = r
                        .savepoints
                        .iter()
                        .rposition(|(n, _)| n.eq_ignore_ascii_case(&name))
                    {
                        let mark = r.savepoints[i].1;
                        r.savepoints.truncate(i + 1);
                        r.capture.truncate(mark);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Makes the open transaction durable, or rolls it back and says why. THE commit path: group
    /// commit and interactive sessions both end here. With replication the captured change set
    /// is published first and only an acknowledged one commits; the sequence it got becomes
    /// the version of every row it wrote.
    fn finish_transaction(&mut self) -> Result<Option<Seq>, DbError> {
        let mut published = Published::default();
        if let Some(r) = &mut self.repl {
            r.savepoints.clear();
            let changes = r.take_changes();
            if !changes.is_empty() {
                match r.publish(&self.conn, changes) {
                    Ok(p) => published = p,
                    Err(e) => {
                        rollback(&self.conn);
                        return Err(e);
                    }
                }
            }
        }
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => {
                if let Some(i) = self
                    .repl
                    .as_ref()
                    .and_then(|r| r.hooks.interceptor.as_ref())
                    && published.kept_local > 0
                {
                    let c = i.counters();
                    c.unpublished_changes.inc_by(published.kept_local as u64);
                    if published.seq.is_none() {
                        c.unpublished_sets.inc();
                    }
                }
                Ok(published.seq)
            }
            Err(e) => {
                // If it was published, the consumer applies it from the log later: the log
                // stays the truth.
                rollback(&self.conn);
                Err(e.into())
            }
        }
    }

    fn rollback(&mut self) {
        rollback(&self.conn);
        if let Some(r) = &mut self.repl {
            r.capture.take();
            r.savepoints.clear();
        }
    }
}

/// Makes virtual tables write what they hold in memory to their shadow tables now, inside the
/// statement, so that the hook captures it. FTS5 keeps new terms in memory until the commit
/// (xSync), which would be after the change set is published; opening a savepoint makes it
/// flush (xSavepoint). Costs nothing on a schema without virtual tables.
fn flush_virtual_tables(conn: &Connection, tables: &mut TableCache) -> Result<(), DbError> {
    if conn.is_autocommit() || !tables.has_virtual_tables(conn)? {
        return Ok(());
    }
    conn.execute_batch("SAVEPOINT _ha_flush; RELEASE _ha_flush")?;
    Ok(())
}

fn is_create_virtual_table(sql: &str) -> bool {
    matches!(
        ddl::classify(sql),
        Ok(Some(d)) if d.verb == ddl::Verb::Create && d.object == ddl::ObjectKind::VirtualTable
    )
}

impl Replicating {
    /// After a successful statement: record its DDL text at the right place.
    fn after_statement(
        &mut self,
        conn: &Connection,
        sql: &str,
        mark: usize,
    ) -> Result<(), DbError> {
        let keyword = statement::leading_keyword(sql);
        if !matches!(keyword.as_str(), "CREATE" | "DROP" | "ALTER") {
            return Ok(());
        }
        self.tables.invalidate();
        if !self.hooks.ddl_sync {
            return Ok(());
        }
        match ddl::plan(sql) {
            Ok(ddl::Plan::Replicate(text)) => {
                if is_create_virtual_table(sql) {
                    // The module's xCreate wrote its shadow tables' first rows: every node's own
                    // CREATE writes them again, so only the statement travels (before any row).
                    self.capture.truncate(mark);
                }
                self.capture.push_ddl(text.into_owned())
            }
            Ok(ddl::Plan::CreateTableAsSelect { name, .. }) => {
                let created: Option<String> = conn
                    .query_row(
                        "SELECT sql FROM main.sqlite_schema WHERE type = 'table' AND name = ?1",
                        [&name],
                        |r| r.get(0),
                    )
                    .ok();
                let Some(created) = created else {
                    return Err(DbError::Unsupported(format!(
                        "cannot find the schema of table {name:?} created by CREATE TABLE … AS SELECT"
                    )));
                };
                let text = ddl::idempotent_schema_sql(&created)
                    .map(|t| t.into_owned())
                    .unwrap_or(created);
                self.capture.insert_ddl(mark, text);
                // SQLite fills the new table without calling the preupdate hook: send its rows.
                for change in table_rows(conn, &mut self.tables, &name)? {
                    self.capture.push_change(change);
                }
            }
            Ok(ddl::Plan::LocalOnly) | Ok(ddl::Plan::NotDdl) => {}
            Err(e) => {
                return Err(DbError::Unsupported(format!(
                    "cannot replicate this DDL: {e}"
                )));
            }
        }
        Ok(())
    }

    fn take_changes(&mut self) -> Vec<Change> {
        self.capture
            .take()
            .into_iter()
            .filter_map(|c| match c {
                Captured::Change(c) => Some(c),
                Captured::Ddl(sql) => Some(Change::sql(sql)),
                // Every statement resolves its rows before it returns.
                Captured::Row(_) => None,
            })
            .collect()
    }

    /// Publishes the transaction's changes (what the interceptor's `publish` hook leaves of
    /// them) and records the sequence as the version of every row the published set names, and
    /// its identity. What the hook kept local gets no version and no message: it stays this
    /// node's, and the bookkeeping follows exactly what the other nodes will apply.
    fn publish(&mut self, conn: &Connection, changes: Vec<Change>) -> Result<Published, DbError> {
        let origin = &self.hooks.origin;
        let mut cs = ChangeSet::new(
            origin.node.clone(),
            origin.process_id,
            origin.filename.clone(),
        );
        cs.format = Some(crate::changeset::FORMAT_VERSION);
        cs.timestamp_ns = now_ns();
        cs.changes = changes;
        let mut kept_local = 0;
        if let Some(i) = &self.hooks.interceptor {
            let captured = cs.changes.len();
            match i.publish(&cs, &self.hooks.subject)? {
                Publish::AsCaptured => {}
                Publish::Send(edited) => cs = edited,
                Publish::Nothing => cs.changes.clear(),
            }
            kept_local = captured.saturating_sub(cs.changes.len());
            if cs.changes.is_empty() {
                return Ok(Published {
                    seq: None,
                    kept_local: captured,
                });
            }
        }
        let seq = publish_ordered(conn, self.hooks.sink.as_ref(), &cs)?;
        // The rows now carry this sequence as their version, and the message is marked ours so
        // that its return from the stream is not applied again (its DDL in particular).
        for c in &cs.changes {
            if c.operation == Operation::Sql {
                if let Ok(Some(d)) = ddl::classify(&c.command) {
                    apply::ddl_done(conn, &d, seq.0)?;
                }
                continue;
            }
            if !matches!(
                c.operation,
                Operation::Insert | Operation::Update | Operation::Delete
            ) {
                continue;
            }
            let Some(info) = self.tables.get(conn, "main", &c.table)? else {
                continue; // dropped later in the same transaction
            };
            if c.operation != Operation::Insert {
                let old = apply::row_key(&info, c, false)?;
                meta::set_version(
                    conn,
                    &c.table,
                    &old,
                    seq.0,
                    c.operation == Operation::Delete,
                )?;
            }
            if c.operation != Operation::Delete {
                let new = apply::row_key(&info, c, true)?;
                meta::set_version(conn, &c.table, &new, seq.0, false)?;
            }
        }
        meta::record_tx(conn, &cs.txid(), seq.0, cs.timestamp_ns)?;
        Ok(Published {
            seq: Some(seq),
            kept_local,
        })
    }
}

/// Publishes `cs`; a change set with DDL only if this node has applied everything the stream
/// holds before it (JetStream's expected last subject sequence), so that schema changes are
/// totally ordered with the data. A lost race is `DbError::Conflict`: nothing is committed,
/// and the client may retry once the node has applied what came first.
fn publish_ordered(
    conn: &Connection,
    sink: &dyn super::sink::ChangeSink,
    cs: &ChangeSet,
) -> Result<Seq, DbError> {
    if !cs.changes.iter().any(|c| c.operation == Operation::Sql) {
        return sink.publish(cs).map_err(|e| DbError::Publish(e.0));
    }
    let after = Seq(meta::applied_seq(conn)?);
    sink.publish_after(cs, after).map_err(|e| match e {
        PublishAfterError::Race(m) => DbError::Conflict(format!(
            "a schema change must follow everything before it in the replication log, and this node had not applied it all yet ({m}); nothing was committed — retry"
        )),
        PublishAfterError::Other(e) => DbError::Publish(e.0),
    })
}

/// What publishing a transaction did.
#[derive(Debug, Default)]
struct Published {
    /// The stream sequence of the message; `None` when nothing was published.
    seq: Option<Seq>,
    /// Captured changes the interceptor kept on this node.
    kept_local: usize,
}

/// Every row of `table` as INSERT changes.
fn table_rows(
    conn: &Connection,
    tables: &mut TableCache,
    table: &str,
) -> Result<Vec<Change>, DbError> {
    let Some(info) = tables.get(conn, "main", table)? else {
        return Ok(Vec::new());
    };
    let cols: Vec<&str> = info
        .columns
        .iter()
        .filter(|c| c.is_written())
        .map(|c| c.name.as_str())
        .collect();
    let list = cols
        .iter()
        .map(|c| super::schema::quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = conn.prepare(&format!(
        "SELECT rowid, {list} FROM main.{}",
        super::schema::quote_ident(table)
    ))?;
    let pk: Vec<String> = info.pk_columns().into_iter().map(str::to_string).collect();
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let rowid: i64 = row.get(0)?;
        let mut c = Change::new(Operation::Insert, table);
        c.columns = cols.iter().map(|s| s.to_string()).collect();
        c.pk_columns = pk.clone();
        c.old_rowid = rowid;
        c.new_rowid = rowid;
        for i in 0..cols.len() {
            c.new_values
                .push(super::Value::from_ref(row.get_ref(i + 1)?));
        }
        out.push(c);
    }
    Ok(out)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn run(mut w: WriteConn, mut rx: mpsc::Receiver<Job>, checkpoint_on_close: bool) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut batches = Vec::with_capacity(group.len());
        let mut applies = Vec::new();
        for job in group {
            match job {
                Job::Batch {
                    stmts,
                    limits,
                    reply,
                } => {
                    if !applies.is_empty() {
                        apply_group(&mut w, std::mem::take(&mut applies));
                    }
                    batches.push((stmts, limits, reply))
                }
                Job::Apply(items) => {
                    // Local writes queued before a replicated change commit before it.
                    commit_group(&mut w, std::mem::take(&mut batches));
                    applies.extend(items);
                }
                Job::Quarantine {
                    seq,
                    error,
                    attempts,
                    payload,
                    reply,
                } => {
                    commit_group(&mut w, std::mem::take(&mut batches));
                    apply_group(&mut w, std::mem::take(&mut applies));
                    let _ = reply.send(quarantine(&mut w, seq, &error, attempts, &payload));
                }
                Job::Session(start) => {
                    // The jobs before the session commit first; the ones after it wait for it.
                    commit_group(&mut w, std::mem::take(&mut batches));
                    apply_group(&mut w, std::mem::take(&mut applies));
                    serve_session(&mut w, start);
                }
                Job::Restore { from, reply } => {
                    commit_group(&mut w, std::mem::take(&mut batches));
                    apply_group(&mut w, std::mem::take(&mut applies));
                    let _ = reply.send(restore(&mut w, &from));
                }
                Job::Shutdown => rx.close(),
            }
        }
        commit_group(&mut w, batches);
        apply_group(&mut w, applies);
    }
    if checkpoint_on_close {
        match w
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            }) {
            Ok(0) => tracing::info!("WAL checkpointed"),
            Ok(busy) => tracing::warn!(busy, "WAL checkpoint could not finish"),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
    if let Err((_, e)) = w.conn.close() {
        tracing::warn!(error = %e, "closing the write connection failed");
    }
}

/// Copies the database file at `from` over the live database (one backup, committed at once),
/// then forgets what the writer cached about the old schema.
fn restore(w: &mut WriteConn, from: &std::path::Path) -> Result<(), DbError> {
    let src = Connection::open_with_flags(
        from,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| DbError::Open {
        target: from.display().to_string(),
        source: e,
    })?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut w.conn)?;
        backup.step(-1)?;
    }
    w.conn.flush_prepared_statement_cache();
    if let Some(r) = &mut w.repl {
        r.tables.invalidate();
        meta::ensure(&w.conn)?;
    }
    Ok(())
}

/// Runs the batches in one transaction, each in a savepoint, and answers every caller.
fn commit_group(w: &mut WriteConn, batches: Vec<Pending>) {
    if batches.is_empty() {
        return;
    }
    // VACUUM cannot run inside a transaction; alone in its request it runs on its own.
    let (solo, batches): (Vec<_>, Vec<_>) = batches
        .into_iter()
        .partition(|(s, _, _)| s.len() == 1 && statement::leading_keyword(&s[0].sql) == "VACUUM");
    for (stmts, limits, reply) in solo {
        let refused = match w.repl {
            Some(_) => vacuum_refusal(&w.conn, &stmts[0].sql),
            None => Ok(()),
        };
        let r =
            refused.and_then(|_| deadline::scope(&limits, || statement::run(&w.conn, &stmts[0])));
        let _ = reply.send(r.map(|r| vec![r]));
    }
    let mut pending: Vec<Ran> = Vec::new();
    let mut open = false;
    let mut queue: std::collections::VecDeque<Pending> = batches.into();
    while let Some((stmts, limits, reply)) = queue.pop_front() {
        if !open {
            if let Err(e) = w.begin() {
                let _ = reply.send(Err(e));
                continue;
            }
            open = true;
        }
        match deadline::scope(&limits, || run_in_savepoint(w, &stmts)) {
            Ok(results) => pending.push((stmts, limits, reply, results)),
            Err(e) => {
                if w.conn.is_autocommit() && matches!(e.root(), DbError::Stopped(_)) {
                    // Interrupting a write (its deadline, its client's cancel) makes SQLite
                    // roll back the whole transaction, but only this job is over: the jobs
                    // before it run again, first, in a new transaction.
                    w.rollback();
                    for (s, l, r, _) in pending.drain(..).rev() {
                        queue.push_front((s, l, r));
                    }
                    open = false;
                } else if w.conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (disk full, I/O error, …): the
                    // jobs before this one are lost with it and must be told.
                    w.rollback();
                    let why = e.to_string();
                    for (_, _, r, _) in pending.drain(..) {
                        let _ = r.send(Err(DbError::Aborted(why.clone())));
                    }
                    open = false;
                }
                let _ = reply.send(Err(e));
            }
        }
    }
    if !open {
        return;
    }
    match w.finish_transaction() {
        Ok(_) => {
            for (_, _, r, results) in pending {
                let _ = r.send(Ok(results));
            }
        }
        // The interceptor's publish hook saw the change set of every job in the group and
        // refused it: the refusal may be about one job only. Each job runs again in its own
        // transaction (the group was rolled back), so none fails for another's changes.
        Err(e)
            if matches!(e.root(), DbError::Interceptor(_) | DbError::Conflict(_))
                && pending.len() > 1 =>
        {
            tracing::debug!(
                jobs = pending.len(),
                "publish hook refused a group; committing its jobs one by one"
            );
            for (stmts, l, r, _) in pending {
                commit_group(w, vec![(stmts, l, r)]);
            }
        }
        Err(e) => {
            for (_, _, r, _) in pending {
                let _ = r.send(Err(e.clone_for_group()));
            }
        }
    }
}

/// VACUUM renumbers the rowids of tables without a declared primary key, and rowids are how
/// replication knows those rows on every node: refused while such a table exists (VACUUM INTO
/// writes a copy and changes nothing here).
fn vacuum_refusal(conn: &Connection, sql: &str) -> Result<(), DbError> {
    let into = sql
        .split_whitespace()
        .nth(1)
        .is_some_and(|w| w.eq_ignore_ascii_case("INTO"));
    if into {
        return Ok(());
    }
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM main.sqlite_schema s WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_ha\\_%' ESCAPE '\\' \
             AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' \
             AND NOT EXISTS (SELECT 1 FROM pragma_table_info(s.name) WHERE pk > 0) \
             ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if tables.is_empty() {
        return Ok(());
    }
    Err(DbError::Unsupported(format!(
        "VACUUM is refused on a replicated node: it renumbers the rowids of tables without a PRIMARY KEY ({}), \
         and replication identifies their rows by rowid, so later changes would hit other rows on other nodes; \
         give those tables a PRIMARY KEY, or use VACUUM INTO to write a compacted copy",
        tables.join(", ")
    )))
}

fn run_in_savepoint(w: &mut WriteConn, stmts: &[Stmt]) -> Result<Vec<StmtResult>, DbError> {
    let mark = w.repl.as_ref().map(|r| r.capture.mark());
    w.conn.execute_batch("SAVEPOINT job")?;
    let mut out = Vec::with_capacity(stmts.len());
    let mut failed = None;
    for (i, s) in stmts.iter().enumerate() {
        match w.run(s) {
            Ok(r) => out.push(r),
            Err(e) => {
                failed = Some(at_statement(e, i, stmts.len()));
                break;
            }
        }
    }
    if failed.is_some() {
        if !w.conn.is_autocommit() {
            w.conn.execute_batch("ROLLBACK TO job")?;
        }
        if let (Some(r), Some(m)) = (&w.repl, mark) {
            r.capture.truncate(m);
        }
    }
    if !w.conn.is_autocommit() {
        w.conn.execute_batch("RELEASE job")?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Applies replicated change sets in one transaction, each in a savepoint, in stream order. A
/// failing one stops the group: it and the ones after it are answered with errors (the consumer
/// retries them in order).
fn apply_group(w: &mut WriteConn, jobs: Vec<ApplyItem>) {
    if jobs.is_empty() {
        return;
    }
    let Some(r) = &mut w.repl else {
        for (_, _, reply) in jobs {
            let _ = reply.send(Err(DbError::Unsupported(
                "replication is not configured".into(),
            )));
        }
        return;
    };
    // Replicated rows are the effects of the origin's statements: no triggers, no FK actions.
    let mode = match ApplyMode::enter(&w.conn) {
        Ok(m) => m,
        Err(e) => {
            for (_, _, reply) in jobs {
                let _ = reply.send(Err(DbError::Aborted(e.to_string())));
            }
            return;
        }
    };
    if let Err(e) = w.conn.execute_batch(w.tx_lock.begin_sql()) {
        mode.leave(&w.conn);
        for (_, _, reply) in jobs {
            let _ = reply.send(Err(DbError::Aborted(e.to_string())));
        }
        return;
    }
    r.capture.set_enabled(false);
    let _ = w.conn.execute_batch("PRAGMA defer_foreign_keys = ON");
    let mut done: Vec<(Reply<ApplyStats>, ApplyStats)> = Vec::new();
    let mut jobs = jobs.into_iter();
    let mut failure: Option<String> = None;
    for (seq, cs, reply) in jobs.by_ref() {
        let result = (|| -> Result<ApplyStats, DbError> {
            w.conn.execute_batch(&format!("SAVEPOINT {SAVEPOINT}"))?;
            let res = (|| {
                // Our own commit coming back, or a message published again: already here.
                let txid = cs.txid();
                let stats = if meta::tx_seen(&w.conn, &txid)? {
                    ApplyStats::default()
                } else {
                    let stats = match &r.hooks.interceptor {
                        Some(i) => intercepted::apply(
                            &w.conn,
                            &mut r.tables,
                            i,
                            seq,
                            &cs,
                            &r.hooks.subject,
                        )?,
                        None => apply::apply(&w.conn, &mut r.tables, seq.0, &cs)?,
                    };
                    meta::record_tx(&w.conn, &txid, seq.0, cs.timestamp_ns)?;
                    stats
                };
                meta::set_applied_seq(&w.conn, seq.0)?;
                Ok(stats)
            })();
            if res.is_err() && !w.conn.is_autocommit() {
                w.conn.execute_batch(&format!("ROLLBACK TO {SAVEPOINT}"))?;
            }
            if !w.conn.is_autocommit() {
                w.conn.execute_batch(&format!("RELEASE {SAVEPOINT}"))?;
            }
            res
        })();
        match result {
            Ok(stats) => done.push((reply, stats)),
            Err(e) => {
                r.tables.invalidate();
                failure = Some(format!("message {seq} failed: {e}"));
                let _ = reply.send(Err(e));
                break;
            }
        }
    }
    // Transaction identities older than the stream can deliver are forgotten now and then.
    r.applied_since_prune += done.len();
    if r.applied_since_prune >= PRUNE_EVERY && !w.conn.is_autocommit() {
        r.applied_since_prune = 0;
        let window = r.hooks.dedupe_window.as_nanos().min(i64::MAX as u128) as i64;
        if let Err(e) = meta::prune_txids(&w.conn, now_ns().saturating_sub(window)) {
            tracing::warn!(error = %e, "pruning _ha_txids failed");
        }
    }
    for (_, _, reply) in jobs {
        let _ = reply.send(Err(DbError::Aborted(failure.clone().unwrap_or_default())));
    }
    let committed = if w.conn.is_autocommit() {
        Err(DbError::Aborted(
            "SQLite rolled the apply transaction back".into(),
        ))
    } else {
        w.conn.execute_batch("COMMIT").map_err(|e| {
            rollback(&w.conn);
            DbError::from(e)
        })
    };
    mode.leave(&w.conn);
    r.capture.set_enabled(true);
    r.capture.take();
    if committed.is_ok()
        && let Some(i) = &r.hooks.interceptor
    {
        let c = i.counters();
        for (_, stats) in &done {
            c.skipped.inc_by(stats.script_skipped);
            c.rescued.inc_by(stats.script_rescued);
        }
    }
    for (reply, stats) in done {
        let _ = reply.send(
            committed
                .as_ref()
                .map(|_| stats)
                .map_err(|e| DbError::Aborted(e.to_string())),
        );
    }
}

fn quarantine(
    w: &mut WriteConn,
    seq: Seq,
    error: &str,
    attempts: u32,
    payload: &[u8],
) -> Result<(), DbError> {
    w.conn.execute_batch(w.tx_lock.begin_sql())?;
    let res = meta::quarantine(&w.conn, seq.0, error, attempts, payload)
        .and_then(|_| meta::set_applied_seq(&w.conn, seq.0));
    match res {
        Ok(()) => w.conn.execute_batch("COMMIT").map_err(|e| {
            rollback(&w.conn);
            e.into()
        }),
        Err(e) => {
            rollback(&w.conn);
            Err(e.into())
        }
    }
}

/// Rolls back the open transaction, if SQLite has not already.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(error = %e, "rollback failed");
    }
}

/// Serves one interactive session: BEGIN, then its commands only, until it commits, rolls back,
/// stays idle longer than its timeout or drops its sender (client gone). Whatever way it ends,
/// no transaction stays open when this returns.
fn serve_session(w: &mut WriteConn, start: SessionStart) {
    if let Err(e) = w.begin() {
        let _ = start.ready.send(Err(e));
        return;
    }
    if start.ready.send(Ok(())).is_err() {
        w.rollback();
        return;
    }
    loop {
        let cmd = match start.idle_timeout {
            Some(t) => start.cmds.recv_timeout(t),
            None => start
                .cmds
                .recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
        };
        let cmd = match cmd {
            Ok(cmd) => cmd,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                start.timed_out.store(true, Ordering::Release);
                tracing::warn!(
                    timeout = ?start.idle_timeout,
                    "rolled back a session idle in transaction while holding the writer"
                );
                w.rollback();
                return;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                w.rollback();
                return;
            }
        };
        match cmd {
            SessionCmd::Run {
                stmt,
                limits,
                reply,
            } => {
                let _ = reply.send(deadline::scope(&limits, || w.run(&stmt)));
            }
            SessionCmd::Describe { sql, reply } => {
                let _ = reply.send(statement::describe(&w.conn, &sql));
            }
            SessionCmd::Control { sql, reply } => {
                let _ = reply.send(w.control(&sql));
            }
            SessionCmd::Commit { reply } => {
                let _ = reply.send(if w.conn.is_autocommit() {
                    w.rollback();
                    Err(DbError::Aborted(
                        "SQLite rolled the transaction back".into(),
                    ))
                } else {
                    w.finish_transaction().map(|_| ())
                });
                return;
            }
            SessionCmd::Rollback { reply } => {
                w.rollback();
                let _ = reply.send(Ok(()));
                return;
            }
        }
        if w.conn.is_autocommit() {
            // SQLite rolled the whole transaction back (e.g. disk full): the session is over;
            // its next command finds the channel closed.
            tracing::warn!("SQLite rolled back a session's transaction");
            w.rollback();
            return;
        }
    }
}

/// Says which statement of a multi-statement batch failed.
fn at_statement(e: DbError, index: usize, len: usize) -> DbError {
    if len == 1 {
        return e;
    }
    match e {
        DbError::InStatement { .. } => e,
        other => DbError::InStatement {
            index,
            source: Box::new(other),
        },
    }
}
