//! Owns change capture on the write connection: SQLite's preupdate hook records every row
//! change of the `main` schema (triggers and FK cascades included) into a buffer the writer
//! drains at commit.
//! Must not publish or encode anything: the writer turns the buffer into a change set.
//! Invariant: changes of a failed statement or a rolled-back savepoint are cut off with
//! `truncate(mark)`; tables named `_ha_*` / `sqlite_*`, the temp schema and attached databases
//! are never captured; capture is off while replicated changes are applied.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::hooks::{
    Action, PreUpdateCase, PreUpdateNewValueAccessor, PreUpdateOldValueAccessor,
};

use super::{DbError, Value};
use crate::changeset::schema::TableCache;
use crate::changeset::{Change, Operation};

/// What a row change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    Insert,
    Update,
    Delete,
}

/// One row change as the hook saw it: values in table storage order (generated columns
/// included; `schema::TableInfo` says which to keep).
#[derive(Debug, Clone, PartialEq)]
pub struct RawChange {
    pub table: String,
    pub op: RowOp,
    pub old_rowid: i64,
    pub new_rowid: i64,
    pub old_values: Vec<Value>,
    pub new_values: Vec<Value>,
}

/// A captured step of a transaction, in execution order.
#[derive(Debug, Clone, PartialEq)]
pub enum Captured {
    /// As the hook saw it; `resolve_pending` turns it into a `Change` at the statement's end.
    Row(RawChange),
    /// DDL text, already made idempotent by the caller.
    Ddl(String),
    /// A change ready for the change set.
    Change(Change),
}

/// The capture buffer of the write connection. Cheap to clone; all clones share one buffer.
#[derive(Clone, Default)]
pub struct Capture {
    // A std mutex: only the writer thread (inside the hook or between statements) touches it.
    buf: Arc<Mutex<Vec<Captured>>>,
    enabled: Arc<AtomicBool>,
}

/// Tables whose changes never leave the node.
pub fn is_local_table(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("_ha_") || lower.starts_with("sqlite_")
}

impl Capture {
    /// Installs the preupdate hook on `conn`; capture starts enabled.
    pub fn install(conn: &mut Connection) -> Result<Capture, DbError> {
        let capture = Capture {
            buf: Arc::default(),
            enabled: Arc::new(AtomicBool::new(true)),
        };
        capture.hook(conn)?;
        Ok(capture)
    }

    /// Stops capturing while the writer applies replicated change sets: off, and the hook
    /// removed, so that SQLite builds no pre-update context for each row written (7 % of the
    /// writer's time per applied change set). If the hook cannot be removed, capture stays off.
    pub fn pause(&self, conn: &mut Connection) {
        self.set_enabled(false);
        if let Err(e) = self.unhook(conn) {
            tracing::debug!(error = %e, "could not remove the capture hook; capture stays off");
        }
    }

    /// Captures again after `pause`: the hook back (a second try if SQLite refuses the first),
    /// then on. An error means local writes would commit uncaptured: the caller must not go on.
    pub fn resume(&self, conn: &mut Connection) -> Result<(), DbError> {
        if let Err(first) = self.hook(conn) {
            tracing::warn!(error = %first, "could not put the capture hook back; trying again");
            self.hook(conn)?;
        }
        self.set_enabled(true);
        Ok(())
    }

    /// Installs the preupdate hook on `conn` (again, after `unhook`).
    fn hook(&self, conn: &mut Connection) -> Result<(), DbError> {
        let hook = self.clone();
        conn.preupdate_hook(Some(
            move |action: Action, db: &str, table: &str, case: &PreUpdateCase| {
                hook.record(action, db, table, case)
            },
        ))?;
        Ok(())
    }

    /// Removes the preupdate hook from `conn` (see `pause`).
    fn unhook(&self, conn: &mut Connection) -> Result<(), DbError> {
        conn.preupdate_hook(None::<fn(Action, &str, &str, &PreUpdateCase)>)?;
        Ok(())
    }

    fn record(&self, _action: Action, db: &str, table: &str, case: &PreUpdateCase) {
        if !self.enabled.load(Ordering::Relaxed) || db != "main" || is_local_table(table) {
            return;
        }
        let change = match case {
            PreUpdateCase::Insert(new) => RawChange {
                table: table.to_string(),
                op: RowOp::Insert,
                old_rowid: new.get_new_row_id(),
                new_rowid: new.get_new_row_id(),
                old_values: Vec::new(),
                new_values: new_image(new),
            },
            PreUpdateCase::Delete(old) => RawChange {
                table: table.to_string(),
                op: RowOp::Delete,
                old_rowid: old.get_old_row_id(),
                new_rowid: old.get_old_row_id(),
                old_values: old_image(old),
                new_values: Vec::new(),
            },
            PreUpdateCase::Update {
                old_value_accessor: old,
                new_value_accessor: new,
            } => RawChange {
                table: table.to_string(),
                op: RowOp::Update,
                old_rowid: old.get_old_row_id(),
                new_rowid: new.get_new_row_id(),
                old_values: old_image(old),
                new_values: new_image(new),
            },
            PreUpdateCase::Unknown => return,
        };
        if let Ok(mut b) = self.buf.lock() {
            b.push(Captured::Row(change));
        }
    }

    /// Appends DDL text at its place among the row changes.
    pub fn push_ddl(&self, sql: String) {
        if self.enabled.load(Ordering::Relaxed)
            && let Ok(mut b) = self.buf.lock()
        {
            b.push(Captured::Ddl(sql));
        }
    }

    /// Appends a change built by the writer (rows of CREATE TABLE … AS SELECT, which the
    /// preupdate hook does not see).
    pub fn push_change(&self, change: Change) {
        if self.enabled.load(Ordering::Relaxed)
            && let Ok(mut b) = self.buf.lock()
        {
            b.push(Captured::Change(change));
        }
    }

    /// Puts DDL text at position `at` (before the rows a CREATE TABLE … AS SELECT inserted).
    pub fn insert_ddl(&self, at: usize, sql: String) {
        if self.enabled.load(Ordering::Relaxed)
            && let Ok(mut b) = self.buf.lock()
        {
            let at = at.min(b.len());
            b.insert(at, Captured::Ddl(sql));
        }
    }

    /// Describes the raw rows captured so far with their table's columns. Called at the end of
    /// every successful statement, when the schema they were written under is still current.
    pub fn resolve_pending(
        &self,
        conn: &Connection,
        tables: &mut TableCache,
    ) -> Result<(), DbError> {
        let Ok(mut b) = self.buf.lock() else {
            return Ok(());
        };
        for item in b.iter_mut() {
            if let Captured::Row(raw) = item {
                let change = resolve(conn, tables, raw)?;
                *item = Captured::Change(change);
            }
        }
        Ok(())
    }

    /// Whether anything was captured since the last `take`.
    pub fn is_empty(&self) -> bool {
        self.buf.lock().map(|b| b.is_empty()).unwrap_or(true)
    }

    /// The current end of the buffer, to cut back to if what follows fails.
    pub fn mark(&self) -> usize {
        self.buf.lock().map(|b| b.len()).unwrap_or(0)
    }

    pub fn truncate(&self, mark: usize) {
        if let Ok(mut b) = self.buf.lock() {
            b.truncate(mark);
        }
    }

    /// Everything captured since the last `take`.
    pub fn take(&self) -> Vec<Captured> {
        self.buf
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }

    /// Turns capture off (while applying replicated changes) or back on.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }
}

/// The row as it was before the change (a value SQLite cannot give is NULL).
fn old_image(old: &PreUpdateOldValueAccessor) -> Vec<Value> {
    (0..old.get_column_count())
        .map(|i| {
            old.get_old_column_value(i)
                .map(Value::from_ref)
                .unwrap_or(Value::Null)
        })
        .collect()
}

/// The row as it will be after the change.
fn new_image(new: &PreUpdateNewValueAccessor) -> Vec<Value> {
    (0..new.get_column_count())
        .map(|i| {
            new.get_new_column_value(i)
                .map(Value::from_ref)
                .unwrap_or(Value::Null)
        })
        .collect()
}

/// A raw hook record as a change-set `Change`: written columns only (generated and hidden ones
/// are computed on every node), names, primary key.
fn resolve(conn: &Connection, tables: &mut TableCache, raw: &RawChange) -> Result<Change, DbError> {
    let info = tables.get(conn, "main", &raw.table)?.ok_or_else(|| {
        DbError::Unsupported(format!(
            "captured a change of unknown table {:?}",
            raw.table
        ))
    })?;
    let n = info.columns.len();
    for vals in [&raw.old_values, &raw.new_values] {
        if !vals.is_empty() && vals.len() != n {
            return Err(DbError::Unsupported(format!(
                "table {:?} changed shape while a statement wrote to it ({} values, {n} columns)",
                raw.table,
                vals.len()
            )));
        }
    }
    let keep: Vec<usize> = (0..n).filter(|&i| info.columns[i].is_written()).collect();
    let pick = |vals: &Vec<Value>| -> Vec<Value> {
        if vals.is_empty() {
            Vec::new()
        } else {
            keep.iter().map(|&i| vals[i].clone()).collect()
        }
    };
    let operation = match raw.op {
        RowOp::Insert => Operation::Insert,
        RowOp::Update => Operation::Update,
        RowOp::Delete => Operation::Delete,
    };
    let mut c = Change::new(operation, raw.table.clone());
    c.columns = keep.iter().map(|&i| info.columns[i].name.clone()).collect();
    c.pk_columns = info.pk_columns().into_iter().map(str::to_string).collect();
    c.old_rowid = raw.old_rowid;
    c.new_rowid = raw.new_rowid;
    c.old_values = pick(&raw.old_values);
    c.new_values = pick(&raw.new_values);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(c: &Capture) -> Vec<RawChange> {
        c.take()
            .into_iter()
            .filter_map(|x| match x {
                Captured::Row(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn captures_inserts_updates_deletes_with_full_images() {
        let mut conn = Connection::open_in_memory().unwrap();
        let cap = Capture::install(&mut conn).unwrap();
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO t VALUES (1, 'a');
             UPDATE t SET v = 'b' WHERE id = 1;
             DELETE FROM t WHERE id = 1;",
        )
        .unwrap();
        let r = rows(&cap);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].op, RowOp::Insert);
        assert_eq!(
            r[0].new_values,
            vec![Value::Integer(1), Value::Text("a".into())]
        );
        assert_eq!(r[1].op, RowOp::Update);
        assert_eq!(r[1].old_values[1], Value::Text("a".into()));
        assert_eq!(r[1].new_values[1], Value::Text("b".into()));
        assert_eq!(r[2].op, RowOp::Delete);
        assert_eq!(r[2].old_rowid, 1);
    }

    #[test]
    fn local_temp_and_disabled_changes_are_not_captured() {
        let mut conn = Connection::open_in_memory().unwrap();
        let cap = Capture::install(&mut conn).unwrap();
        conn.execute_batch(
            "CREATE TABLE _ha_x(a); INSERT INTO _ha_x VALUES (1);
             CREATE TEMP TABLE tmp(a); INSERT INTO tmp VALUES (1);
             CREATE TABLE t(a);",
        )
        .unwrap();
        cap.set_enabled(false);
        conn.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        cap.set_enabled(true);
        assert!(rows(&cap).is_empty());
    }

    #[test]
    fn unhooked_changes_are_not_seen_and_hooked_again_they_are() {
        let mut conn = Connection::open_in_memory().unwrap();
        let cap = Capture::install(&mut conn).unwrap();
        conn.execute_batch("CREATE TABLE t(a)").unwrap();
        cap.unhook(&mut conn).unwrap();
        conn.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        assert!(rows(&cap).is_empty());
        cap.hook(&mut conn).unwrap();
        conn.execute_batch("INSERT INTO t VALUES (2)").unwrap();
        let seen = rows(&cap);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].new_values, vec![Value::Integer(2)]);
    }

    #[test]
    fn triggers_cascades_and_generated_columns_are_seen() {
        let mut conn = Connection::open_in_memory().unwrap();
        let cap = Capture::install(&mut conn).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE p(id INTEGER PRIMARY KEY);
             CREATE TABLE c(id INTEGER PRIMARY KEY, p INTEGER REFERENCES p(id) ON DELETE CASCADE,
                            g INTEGER GENERATED ALWAYS AS (id * 10) VIRTUAL,
                            s INTEGER GENERATED ALWAYS AS (id * 100) STORED);
             CREATE TABLE log(msg TEXT);
             CREATE TRIGGER tr AFTER INSERT ON c BEGIN INSERT INTO log VALUES ('c' || new.id); END;
             INSERT INTO p VALUES (1);
             INSERT INTO c(id, p) VALUES (5, 1);",
        )
        .unwrap();
        let r = rows(&cap);
        let tables: Vec<&str> = r.iter().map(|c| c.table.as_str()).collect();
        assert_eq!(tables, vec!["p", "c", "log"]);
        // One value per table_xinfo column, generated ones included.
        assert_eq!(r[1].new_values.len(), 4, "{:?}", r[1].new_values);
        conn.execute_batch("DELETE FROM p").unwrap();
        let r = rows(&cap);
        let ops: Vec<(&str, RowOp)> = r.iter().map(|c| (c.table.as_str(), c.op)).collect();
        assert_eq!(ops, vec![("p", RowOp::Delete), ("c", RowOp::Delete)]);
    }

    #[test]
    fn resolved_changes_skip_generated_columns_and_name_the_key() {
        let mut conn = Connection::open_in_memory().unwrap();
        let cap = Capture::install(&mut conn).unwrap();
        conn.execute_batch(
            "CREATE TABLE g(a TEXT, id INTEGER, s INTEGER GENERATED ALWAYS AS (id * 2) STORED,
                            v INTEGER GENERATED ALWAYS AS (id * 3) VIRTUAL, PRIMARY KEY (id));
             INSERT INTO g(a, id) VALUES ('x', 4);",
        )
        .unwrap();
        let mut tables = TableCache::default();
        cap.resolve_pending(&conn, &mut tables).unwrap();
        let all = cap.take();
        let Captured::Change(c) = &all[0] else {
            panic!("{all:?}")
        };
        assert_eq!(c.columns, vec!["a", "id"]);
        assert_eq!(
            c.new_values,
            vec![Value::Text("x".into()), Value::Integer(4)]
        );
        assert_eq!(c.pk_columns, vec!["id"]);
    }

    #[test]
    fn mark_and_truncate_drop_a_failed_part() {
        let mut conn = Connection::open_in_memory().unwrap();
        let cap = Capture::install(&mut conn).unwrap();
        conn.execute_batch("CREATE TABLE t(a)").unwrap();
        conn.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        let m = cap.mark();
        conn.execute_batch("INSERT INTO t VALUES (2)").unwrap();
        cap.truncate(m);
        assert_eq!(rows(&cap).len(), 1);
    }
}
