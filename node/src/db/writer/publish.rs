//! Owns what the writer does for replication around a statement and at commit: recording DDL
//! text at its place among the captured rows (`after_statement`), and publishing the
//! transaction's change set, then stamping the sequence it got on every row it names (`publish`).
//! Must not commit or roll back: `conn::WriteConn::finish_transaction` does, after `publish`.
//! Invariant: nothing is committed that is not in the log; a change set with DDL is published
//! only right after everything this node has applied (`publish_ordered`).

use rusqlite::Connection;

use crate::changeset::apply;
use crate::changeset::meta;
use crate::changeset::schema::{TableCache, quote_ident};
use crate::changeset::{Change, ChangeSet, Operation, Seq, ddl, sql};
use crate::db::apply_mode::ApplyModeCache;
use crate::db::capture::{Capture, Captured};
use crate::db::sink::{ChangeSink, PublishAfterError, ReplicationHooks};
use crate::db::{DbError, Value};
use crate::interceptor::Publish;

fn is_create_virtual_table(sql: &str) -> bool {
    matches!(
        ddl::classify(sql),
        Ok(Some(d)) if d.verb == ddl::Verb::Create && d.object == ddl::ObjectKind::VirtualTable
    )
}

/// What the write connection keeps for replication.
pub(super) struct Replicating {
    pub(super) capture: Capture,
    pub(super) tables: TableCache,
    pub(super) hooks: ReplicationHooks,
    /// Whether the schema has triggers and foreign keys are on, for applying (see `apply_mode`).
    pub(super) apply_mode: ApplyModeCache,
    /// When applied transactions' identities (`_ha_txids`) are forgotten.
    pub(super) pruning: ha_follow::group::TxidPruning,
    /// Open savepoints of an interactive session with the capture position at each, so that
    /// ROLLBACK TO also drops what was captured after it.
    pub(super) savepoints: Vec<(String, usize)>,
}

impl Replicating {
    /// After a successful statement: record its DDL text at the right place.
    pub(super) fn after_statement(
        &mut self,
        conn: &Connection,
        sql: &str,
        mark: usize,
    ) -> Result<(), DbError> {
        let keyword = sql::leading_keyword(sql);
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

    pub(super) fn take_changes(&mut self) -> Vec<Change> {
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
    pub(super) fn publish(
        &mut self,
        conn: &Connection,
        changes: Vec<Change>,
    ) -> Result<Published, DbError> {
        let origin = &self.hooks.origin;
        let mut cs = ChangeSet::new(
            origin.node.clone(),
            origin.process_id,
            origin.filename.clone(),
        );
        cs.format = Some(crate::changeset::FORMAT_VERSION);
        cs.timestamp_ns = now_ns();
        cs.changes = changes;
        // Read once: the names' view, the DDL ordering and the own-commit move all start here.
        let applied = meta::applied_seq(conn)?;
        // Which tables its names mean: receivers follow drops and renames after this.
        cs.base = Some(meta::name_view(conn, applied)?);
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
                    caught_up: false,
                });
            }
        }
        let seq = publish_ordered(applied, self.hooks.sink.as_ref(), &cs)?;
        // Published right after everything this node has applied: the commit moves the applied
        // position to it, so that its return from the stream costs nothing (a read of
        // `X-Ha-Min-Seq` = this sequence needs no wait, and the consumer skips it).
        let caught_up = applied + 1 == seq.0;
        if caught_up {
            meta::set_applied_seq(conn, seq.0)?;
        }
        // The rows now carry this sequence as their version, and the message is marked ours so
        // that its return from the stream is not applied again (its DDL in particular).
        for c in &cs.changes {
            if c.operation == Operation::Sql {
                if let Ok(Some(d)) = ddl::classify(&c.command) {
                    apply::ddl_done(conn, &d, seq.0)?;
                    self.tables.invalidate();
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
            caught_up,
        })
    }
}

/// Publishes `cs`; a change set with DDL only if this node has applied everything the stream
/// holds before it (JetStream's expected last subject sequence), so that schema changes are
/// totally ordered with the data. A lost race is `DbError::Conflict`: nothing is committed,
/// and the client may retry once the node has applied what came first.
fn publish_ordered(applied: u64, sink: &dyn ChangeSink, cs: &ChangeSet) -> Result<Seq, DbError> {
    if !cs.changes.iter().any(|c| c.operation == Operation::Sql) {
        return sink.publish(cs).map_err(|e| DbError::Publish(e.0));
    }
    let after = Seq(applied);
    sink.publish_after(cs, after).map_err(|e| match e {
        PublishAfterError::Race(m) => DbError::Conflict(format!(
            "a schema change must follow everything before it in the replication log, and this node had not applied it all yet ({m}); nothing was committed — retry"
        )),
        PublishAfterError::Other(e) => DbError::Publish(e.0),
    })
}

/// What publishing a transaction did.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// The stream sequence of the message; `None` when nothing was published.
    pub(super) seq: Option<Seq>,
    /// Captured changes the interceptor kept on this node.
    pub(super) kept_local: usize,
    /// The commit also moves the applied position to `seq` (it came right after it).
    pub(super) caught_up: bool,
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
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = conn.prepare(&format!(
        "SELECT rowid, {list} FROM main.{}",
        quote_ident(table)
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
            c.new_values.push(Value::from_ref(row.get_ref(i + 1)?));
        }
        out.push(c);
    }
    Ok(out)
}

pub(super) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
