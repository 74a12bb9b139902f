//! Owns interactive transactions (`Session`): BEGIN … COMMIT/ROLLBACK with savepoints, for front
//! ends whose clients keep a connection open (pg). One `Session` per client connection.
//! Must not speak a wire protocol or touch SQLite: reads go to the read pool, writes to the
//! writer through `db::WriterSession`, exactly like `Executor::execute`.
//! Invariant: reads before the first write run on the read pool, each statement on a fresh
//! snapshot (READ COMMITTED-like); from the first write the session holds the writer until it
//! ends, and a dropped session leaves nothing behind (the writer rolls it back).
//! See `db::writer::session::serve_session` for the writer's side and `pgwire` for the caller.

use std::sync::Arc;
use std::time::Duration;

use crate::changeset::{Seq, sql};
use crate::db::{
    DbError, Described, Limits, ReadOutcome, SessionCmd, Stmt, StmtResult, WriterSession,
};

use super::{ExecError, Executor};

/// Transaction-control statements, recognised from their text (PostgreSQL's spellings, which
/// include SQLite's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxControl {
    /// BEGIN / START TRANSACTION, with any isolation or access options (accepted, not needed:
    /// the writer serialises every write transaction).
    Begin,
    /// COMMIT / END.
    Commit,
    /// ROLLBACK / ABORT.
    Rollback,
    Savepoint(String),
    Release(String),
    RollbackTo(String),
}

impl TxControl {
    /// Recognises transaction control; `None` for every other statement. Read with the
    /// workspace's SQL reader, so comments anywhere are skipped and a literal is never a
    /// keyword.
    pub fn parse(sql: &str) -> Option<TxControl> {
        // Most statements are not transaction control: their first word says so, without
        // reading (and allocating) the rest.
        const LEADS: [&str; 8] = [
            "BEGIN",
            "START",
            "COMMIT",
            "END",
            "ROLLBACK",
            "ABORT",
            "SAVEPOINT",
            "RELEASE",
        ];
        let first = sql::tokens(sql).next()?;
        if first.kind != sql::Kind::Word
            || !LEADS.iter().any(|w| first.text.eq_ignore_ascii_case(w))
        {
            return None;
        }
        let mut tokens: Vec<sql::Token<'_>> = sql::tokens(sql).collect();
        while tokens
            .last()
            .is_some_and(|t| t.kind == sql::Kind::Punct && t.text == ";")
        {
            tokens.pop();
        }
        let words: Vec<&str> = tokens.iter().map(|t| t.text).collect();
        // Keywords upper-cased; a literal, quoted name or symbol is never a keyword.
        let upper: Vec<String> = tokens
            .iter()
            .map(|t| match t.kind {
                sql::Kind::Word => t.text.to_ascii_uppercase(),
                _ => String::new(),
            })
            .collect();
        let u: Vec<&str> = upper.iter().map(String::as_str).collect();
        let tx_word = |w: Option<&&str>| matches!(w, None | Some(&"WORK") | Some(&"TRANSACTION"));
        match u.as_slice() {
            ["BEGIN", ..] => match u.get(1) {
                // SQLite's BEGIN DEFERRED/IMMEDIATE/EXCLUSIVE and PostgreSQL's options alike.
                None
                | Some(&"WORK" | &"TRANSACTION" | &"DEFERRED" | &"IMMEDIATE" | &"EXCLUSIVE")
                | Some(&"ISOLATION" | &"READ" | &"NOT" | &"DEFERRABLE") => Some(TxControl::Begin),
                _ => None,
            },
            ["START", "TRANSACTION", ..] => Some(TxControl::Begin),
            ["COMMIT" | "END", rest @ ..] if rest.len() <= 1 && tx_word(rest.first()) => {
                Some(TxControl::Commit)
            }
            ["COMMIT" | "END", "AND", "NO", "CHAIN"] => Some(TxControl::Commit),
            ["ROLLBACK" | "ABORT", rest @ ..] if rest.len() <= 1 && tx_word(rest.first()) => {
                Some(TxControl::Rollback)
            }
            ["ROLLBACK" | "ABORT", "AND", "NO", "CHAIN"] => Some(TxControl::Rollback),
            ["ROLLBACK", ..] => {
                // ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] name
                let mut i = 1;
                if matches!(u.get(i), Some(&"WORK" | &"TRANSACTION")) {
                    i += 1;
                }
                if u.get(i) != Some(&"TO") {
                    return None;
                }
                i += 1;
                if u.get(i) == Some(&"SAVEPOINT") {
                    i += 1;
                }
                (i + 1 == words.len())
                    .then(|| savepoint_name(words[i]).map(TxControl::RollbackTo))
                    .flatten()
            }
            ["SAVEPOINT", _] => savepoint_name(words[1]).map(TxControl::Savepoint),
            ["RELEASE", "SAVEPOINT", _] => savepoint_name(words[2]).map(TxControl::Release),
            ["RELEASE", _] => savepoint_name(words[1]).map(TxControl::Release),
            _ => None,
        }
    }
}

/// A savepoint name as PostgreSQL folds it: unquoted names lower-case, quoted kept.
fn savepoint_name(word: &str) -> Option<String> {
    if let Some(inner) = word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        return (!inner.is_empty()).then(|| inner.replace("\"\"", "\""));
    }
    let ok = word
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
    (ok && !word.is_empty()).then(|| word.to_lowercase())
}

/// Where a session stands, as PostgreSQL's ReadyForQuery reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    /// An error happened inside the transaction; only ROLLBACK (or ROLLBACK TO) helps.
    Failed,
}

/// What a transaction-control statement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOutcome {
    Began,
    /// BEGIN inside a transaction: nothing happens (PostgreSQL warns).
    AlreadyInTransaction,
    Committed,
    /// COMMIT of a failed transaction rolls it back, as in PostgreSQL.
    RolledBack,
    /// COMMIT or ROLLBACK outside a transaction: nothing happens (PostgreSQL warns).
    NoTransaction,
    Savepoint,
    Released,
    RolledBackTo,
}

struct Tx {
    failed: bool,
    /// Opened by a multi-statement query rather than by BEGIN: ends with that query.
    implicit: bool,
    writer: Option<WriterSession>,
    /// Open savepoints, innermost last. Those opened before the session took the writer are
    /// replayed on the writer when it does.
    savepoints: Vec<String>,
}

/// One client's transaction state. Not `Clone`: one per connection.
pub struct Session {
    exec: Executor,
    idle_timeout: Option<Duration>,
    tx: Option<Tx>,
    /// The stream sequence of this session's last published commit (read-your-writes waits
    /// for it).
    last_commit_seq: Option<Seq>,
    /// Read-your-writes (pg `SET ha.min_seq`): every statement first waits, at most the
    /// given time, until the node has applied this sequence.
    min_seq: Option<(Seq, Duration)>,
}

impl Session {
    /// A session outside any transaction. `idle_timeout` bounds how long it may hold the writer
    /// without sending a command.
    pub fn new(exec: Executor, idle_timeout: Option<Duration>) -> Session {
        Session {
            exec,
            idle_timeout,
            tx: None,
            last_commit_seq: None,
            min_seq: None,
        }
    }

    /// From now on every statement waits until the node has applied `min` (at most `wait`);
    /// `None` stops waiting.
    pub fn set_min_seq(&mut self, min: Option<Seq>, wait: Duration) {
        self.min_seq = min.map(|m| (m, wait));
    }

    /// The stream sequence of the last commit of this session that was published, if any.
    pub fn last_commit_seq(&self) -> Option<Seq> {
        self.last_commit_seq
    }

    pub fn status(&self) -> TxStatus {
        match &self.tx {
            None => TxStatus::Idle,
            Some(t) if t.failed => TxStatus::Failed,
            Some(_) => TxStatus::InTransaction,
        }
    }

    /// Whether an explicit (BEGIN) transaction is open.
    pub fn in_explicit_transaction(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| !t.implicit)
    }

    /// Runs one transaction-control statement.
    pub async fn control(&mut self, ctl: TxControl) -> Result<ControlOutcome, ExecError> {
        match ctl {
            TxControl::Begin => match &mut self.tx {
                Some(t) if t.implicit => {
                    t.implicit = false;
                    Ok(ControlOutcome::Began)
                }
                Some(_) => Ok(ControlOutcome::AlreadyInTransaction),
                None => {
                    self.tx = Some(Tx {
                        failed: false,
                        implicit: false,
                        writer: None,
                        savepoints: Vec::new(),
                    });
                    Ok(ControlOutcome::Began)
                }
            },
            TxControl::Commit => self.commit().await,
            TxControl::Rollback => match self.tx.take() {
                None => Ok(ControlOutcome::NoTransaction),
                Some(t) => {
                    end_writer(t.writer).await;
                    Ok(ControlOutcome::RolledBack)
                }
            },
            TxControl::Savepoint(name) => {
                let tx = self.open_tx("SAVEPOINT")?;
                if tx.failed {
                    return Err(ExecError::InFailedTransaction);
                }
                if let Some(w) = &tx.writer {
                    let name = name.clone();
                    if let Err(e) = w.call(|reply| SessionCmd::Savepoint { name, reply }).await {
                        tx.failed = true;
                        return Err(e.into());
                    }
                }
                tx.savepoints.push(name);
                Ok(ControlOutcome::Savepoint)
            }
            TxControl::Release(name) => {
                let tx = self.open_tx("RELEASE SAVEPOINT")?;
                if tx.failed {
                    return Err(ExecError::InFailedTransaction);
                }
                let at = find_savepoint(&tx.savepoints, &name)?;
                if let Some(w) = &tx.writer {
                    let name = name.clone();
                    if let Err(e) = w.call(|reply| SessionCmd::Release { name, reply }).await {
                        tx.failed = true;
                        return Err(e.into());
                    }
                }
                tx.savepoints.truncate(at);
                Ok(ControlOutcome::Released)
            }
            TxControl::RollbackTo(name) => {
                let tx = self.open_tx("ROLLBACK TO SAVEPOINT")?;
                let at = find_savepoint(&tx.savepoints, &name)?;
                if let Some(w) = &tx.writer {
                    let name = name.clone();
                    if let Err(e) = w.call(|reply| SessionCmd::RollbackTo { name, reply }).await {
                        tx.failed = true;
                        return Err(e.into());
                    }
                }
                tx.savepoints.truncate(at + 1);
                tx.failed = false;
                Ok(ControlOutcome::RolledBackTo)
            }
        }
    }

    /// Opens a transaction for the statements of one multi-statement query (PostgreSQL's
    /// implicit transaction block). No-op inside a transaction.
    pub fn begin_implicit(&mut self) {
        if self.tx.is_none() {
            self.tx = Some(Tx {
                failed: false,
                implicit: true,
                writer: None,
                savepoints: Vec::new(),
            });
        }
    }

    /// Ends the implicit transaction, if one is still open: commits it, or rolls it back if a
    /// statement failed.
    pub async fn end_implicit(&mut self) -> Result<(), ExecError> {
        if self.tx.as_ref().is_some_and(|t| t.implicit) {
            match self.commit().await? {
                ControlOutcome::RolledBack => {}
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// Runs one statement within `limits`: on its own (autocommit) outside a transaction,
    /// inside it otherwise.
    pub async fn execute(&mut self, stmt: Stmt, limits: Limits) -> Result<StmtResult, ExecError> {
        if let Some((min, wait)) = self.min_seq {
            // A session that holds the writer keeps the consumer from applying anything: it
            // would wait for what cannot come, so it only looks.
            let holds_writer = self.tx.as_ref().is_some_and(|t| t.writer.is_some());
            let wait = if holds_writer { Duration::ZERO } else { wait };
            if let Err(e) = self.exec.wait_applied(min, wait).await {
                if let Some(t) = &mut self.tx {
                    t.failed = true;
                }
                return Err(e);
            }
        }
        let Some(tx) = &mut self.tx else {
            let executed = self.exec.execute_with(vec![stmt], limits).await?;
            self.last_commit_seq = executed.commit_seq.or(self.last_commit_seq);
            return executed
                .results
                .into_iter()
                .next()
                .ok_or_else(|| ExecError::BadRequest("no result".into()));
        };
        if tx.failed {
            return Err(ExecError::InFailedTransaction);
        }
        let result = run_in_tx(&self.exec, tx, self.idle_timeout, stmt, limits).await;
        if result.is_err() {
            tx.failed = true;
        }
        result
    }

    /// Compiles `sql` and says what it returns; inside a transaction that holds the writer, it
    /// sees the transaction's own tables.
    pub async fn describe(&self, sql: &str) -> Result<Described, ExecError> {
        if let Some(w) = self.tx.as_ref().and_then(|t| t.writer.as_ref()) {
            let sql = sql.to_string();
            return Ok(w.call(|reply| SessionCmd::Describe { sql, reply }).await?);
        }
        self.exec.describe(sql).await
    }

    async fn commit(&mut self) -> Result<ControlOutcome, ExecError> {
        let Some(t) = self.tx.take() else {
            return Ok(ControlOutcome::NoTransaction);
        };
        if t.failed {
            end_writer(t.writer).await;
            return Ok(ControlOutcome::RolledBack);
        }
        match t.writer {
            None => Ok(ControlOutcome::Committed),
            Some(w) => {
                let seq = w.call(|reply| SessionCmd::Commit { reply }).await?;
                self.last_commit_seq = seq.or(self.last_commit_seq);
                Ok(ControlOutcome::Committed)
            }
        }
    }

    fn open_tx(&mut self, what: &str) -> Result<&mut Tx, ExecError> {
        self.tx.as_mut().ok_or_else(|| {
            ExecError::NoTransaction(format!("{what} can only be used in transaction blocks"))
        })
    }
}

fn find_savepoint(stack: &[String], name: &str) -> Result<usize, ExecError> {
    stack
        .iter()
        .rposition(|s| s == name)
        .ok_or_else(|| ExecError::NoSuchSavepoint(name.to_string()))
}

async fn run_in_tx(
    exec: &Executor,
    tx: &mut Tx,
    idle_timeout: Option<Duration>,
    stmt: Stmt,
    limits: Limits,
) -> Result<StmtResult, ExecError> {
    if tx.writer.is_none() {
        // Before the first write: a read runs on the read pool, on a fresh snapshot.
        let batch = Arc::new(vec![stmt]);
        match exec.try_read(batch.clone(), limits.clone()).await? {
            ReadOutcome::Done(r) => {
                let mut out = r.map_err(ExecError::from)?;
                return out
                    .pop()
                    .ok_or_else(|| ExecError::BadRequest("no result".into()));
            }
            ReadOutcome::NeedsWriter => {}
        }
        let w = exec.writer_session(idle_timeout).await?;
        for name in &tx.savepoints {
            let name = name.clone();
            w.call(|reply| SessionCmd::Savepoint { name, reply })
                .await?;
        }
        tx.writer = Some(w);
        let stmt = Arc::try_unwrap(batch)
            .ok()
            .and_then(|mut v| v.pop())
            .ok_or_else(|| ExecError::BadRequest("statement lost".into()))?;
        return run_on_writer(tx, stmt, limits).await;
    }
    run_on_writer(tx, stmt, limits).await
}

async fn run_on_writer(tx: &Tx, stmt: Stmt, limits: Limits) -> Result<StmtResult, ExecError> {
    let w = tx
        .writer
        .as_ref()
        .ok_or(ExecError::Db(DbError::WriterGone))?;
    Ok(w.call(|reply| SessionCmd::Run {
        stmt,
        limits,
        reply,
    })
    .await?)
}

/// Rolls back the writer's part of a transaction. A writer that is already gone (idle timeout)
/// has rolled back by itself.
async fn end_writer(writer: Option<WriterSession>) {
    if let Some(w) = writer
        && let Err(e) = w.call(|reply| SessionCmd::Rollback { reply }).await
    {
        tracing::debug!(error = %e, "ending a session's writer transaction");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_recognised_in_both_dialects() {
        use TxControl::*;
        for (sql, want) in [
            ("BEGIN", Some(Begin)),
            ("begin isolation level serializable", Some(Begin)),
            ("START TRANSACTION READ WRITE", Some(Begin)),
            ("BEGIN IMMEDIATE;", Some(Begin)),
            ("commit", Some(Commit)),
            ("END TRANSACTION", Some(Commit)),
            ("ROLLBACK", Some(Rollback)),
            ("abort", Some(Rollback)),
            ("SAVEPOINT a1", Some(Savepoint("a1".into()))),
            ("release savepoint A1", Some(Release("a1".into()))),
            ("RELEASE \"Q\"", Some(Release("Q".into()))),
            ("ROLLBACK TO SAVEPOINT a1", Some(RollbackTo("a1".into()))),
            ("rollback transaction to a1", Some(RollbackTo("a1".into()))),
            ("SELECT 1", None),
            ("BEGINNING", None),
            ("COMMIT x y", None),
            ("/* x */ BEGIN", Some(Begin)),
            ("-- c\nCOMMIT", Some(Commit)),
            (
                "ROLLBACK /* why */ TO a1 -- end",
                Some(RollbackTo("a1".into())),
            ),
            ("SAVEPOINT a1 ;", Some(Savepoint("a1".into()))),
            ("SELECT 'BEGIN'", None),
            ("'COMMIT'", None),
        ] {
            assert_eq!(TxControl::parse(sql), want, "{sql}");
        }
    }
}
