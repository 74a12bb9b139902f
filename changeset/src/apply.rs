//! Owns applying one replicated transaction to the local database, with last-writer-wins per
//! row by stream sequence (see `meta` for the version table).
//! Must not begin or commit: the caller (the node's writer, the `ha-sync` extension) runs this
//! inside its transaction (capture off, foreign keys deferred) and records the applied sequence
//! in the same transaction.
//! Invariant: applying the same message twice, or an older change after a newer one, changes
//! nothing — so every node converges whatever order it saw concurrent writers in.

use rusqlite::Connection;

use crate::meta;
use crate::schema::{TableCache, TableInfo, quote_ident};
use crate::{ApplyError, Change, ChangeSet, Operation, Value, codec};

/// What applying one message did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub applied: u64,
    /// Changes older than what the row already has (a later writer won).
    pub superseded: u64,
    /// Inserts that met a live row of another transaction with the same key (typically an
    /// auto-assigned rowid picked on two nodes at once): the later insert wins.
    pub collisions: u64,
    /// Operations this node does not know (the original's `CUSTOM`), skipped with a warning.
    pub skipped: u64,
    /// 1 when the interceptor's `before` skipped the whole change set.
    pub script_skipped: u64,
    /// 1 when the apply failed and the interceptor's `after` ignored the error.
    pub script_rescued: u64,
}

/// Applies the changes of `cs` as the change set of stream sequence `seq`.
pub fn apply(
    conn: &Connection,
    tables: &mut TableCache,
    seq: u64,
    cs: &ChangeSet,
) -> Result<ApplyStats, ApplyError> {
    let mut stats = ApplyStats::default();
    // Rows this change set already wrote: a later change of the same row in the same set (a
    // transaction, or a group commit, that changed it twice) carries the same sequence and must
    // still apply, while a second delivery of the whole set must not.
    let mut written = Written::default();
    for change in &cs.changes {
        match &change.operation {
            Operation::Sql => {
                let mut stmt = conn
                    .prepare(&change.command)
                    .map_err(|e| ApplyError::Prepare {
                        message: format!("replicated statement {:?}: {e}", change.command),
                    })?;
                for (i, a) in change.args.iter().enumerate() {
                    stmt.raw_bind_parameter(i + 1, a)?;
                }
                stmt.raw_execute()
                    .map_err(|source| ApplyError::Run { source })?;
                drop(stmt);
                tables.invalidate();
                stats.applied += 1;
            }
            Operation::Insert | Operation::Update | Operation::Delete => {
                let Some(info) = tables.get(conn, "main", &change.table)? else {
                    return Err(ApplyError::Prepare {
                        message: format!("replicated change for missing table {:?}", change.table),
                    });
                };
                let fixed;
                let change = if cs.is_legacy() {
                    fixed = legacy_blobs(&info, change);
                    &fixed
                } else {
                    change
                };
                let o = apply_row(conn, &info, seq, change, &mut written)?;
                if o.applied {
                    stats.applied += 1;
                } else {
                    stats.superseded += 1;
                }
                stats.collisions += u64::from(o.collision);
            }
            Operation::Custom | Operation::Other(_) => {
                tracing::warn!(
                    seq,
                    operation = change.operation.as_str(),
                    "skipping unknown operation"
                );
                stats.skipped += 1;
            }
        }
    }
    Ok(stats)
}

/// Applies `cs` (stream sequence `seq`) once: a change set whose transaction is already in this
/// database (our own commit coming back, or a message published again, by `_ha_txids`) changes
/// nothing; otherwise it is applied and its identity recorded. The caller records its position.
pub fn apply_once(
    conn: &Connection,
    tables: &mut TableCache,
    seq: u64,
    cs: &ChangeSet,
) -> Result<ApplyStats, ApplyError> {
    let txid = cs.txid();
    if meta::tx_seen(conn, &txid)? {
        return Ok(ApplyStats::default());
    }
    let stats = apply(conn, tables, seq, cs)?;
    meta::record_tx(conn, &txid, seq, cs.timestamp_ns)?;
    Ok(stats)
}

/// The Go original sends BLOBs of columns declared exactly `BLOB` as base64 text.
fn legacy_blobs(info: &TableInfo, change: &Change) -> Change {
    let mut c = change.clone();
    for (i, name) in change.columns.iter().enumerate() {
        let is_blob = info
            .columns
            .iter()
            .any(|col| &col.name == name && col.decl_type == "BLOB");
        if !is_blob {
            continue;
        }
        for vals in [&mut c.old_values, &mut c.new_values] {
            if let Some(Value::Text(t)) = vals.get(i)
                && let Some(bytes) = codec::legacy_blob(t)
            {
                vals[i] = Value::Blob(bytes);
            }
        }
    }
    c
}

/// The primary-key columns of the local table and the change's values for them (old or new
/// image); `None` when the table has no declared key (rows are then known by rowid).
fn pk_values<'c>(
    info: &'c TableInfo,
    change: &'c Change,
    new: bool,
) -> Result<Option<Vec<(&'c str, &'c Value)>>, ApplyError> {
    let pk = info.pk_columns();
    if pk.is_empty() {
        return Ok(None);
    }
    let values = if new {
        &change.new_values
    } else {
        &change.old_values
    };
    let mut out = Vec::with_capacity(pk.len());
    for name in pk {
        let value = change
            .columns
            .iter()
            .position(|c| c == name)
            .and_then(|i| values.get(i))
            .ok_or_else(|| ApplyError::Prepare {
                message: format!(
                    "change for {:?} lacks a value for primary-key column {name:?}",
                    change.table
                ),
            })?;
        out.push((name, value));
    }
    Ok(Some(out))
}

/// The row key of a change's old or new image, by the local table's primary key (rowid when
/// it has none).
pub fn row_key(info: &TableInfo, change: &Change, new: bool) -> Result<Vec<u8>, ApplyError> {
    let rowid = if new {
        change.new_rowid
    } else {
        change.old_rowid
    };
    Ok(match pk_values(info, change, new)? {
        None => meta::row_key(None, rowid),
        Some(pk) => {
            let vals: Vec<&Value> = pk.iter().map(|(_, v)| *v).collect();
            meta::row_key(Some(&vals), rowid)
        }
    })
}

/// `(table, row key)` of the rows the change set being applied has written.
type Written = std::collections::HashSet<(String, Vec<u8>)>;

/// Whether a change at `seq` may overwrite a row whose version is `version`: it is older, or
/// it is this very change set that wrote it (a row changed twice in one transaction).
fn newer(table: &str, key: &[u8], version: u64, seq: u64, written: &Written) -> bool {
    version < seq || (version == seq && written.contains(&(table.to_string(), key.to_vec())))
}

/// What one row change did.
struct RowOutcome {
    applied: bool,
    collision: bool,
}

/// Applies one row change if it is newer than the row's version.
fn apply_row(
    conn: &Connection,
    info: &TableInfo,
    seq: u64,
    row: &Change,
    written: &mut Written,
) -> Result<RowOutcome, ApplyError> {
    let table = &row.table;
    let mut out = RowOutcome {
        applied: false,
        collision: false,
    };
    match row.operation {
        Operation::Insert | Operation::Update => {
            let new_key = row_key(info, row, true)?;
            if row.operation == Operation::Update {
                let old_key = row_key(info, row, false)?;
                let v = meta::version(conn, table, &old_key)?;
                if old_key != new_key && newer(table, &old_key, v, seq, written) {
                    delete_row(conn, info, row, false)?;
                    meta::set_version(conn, table, &old_key, seq, true)?;
                    written.insert((table.clone(), old_key));
                    out.applied = true;
                }
            }
            let (version, deleted) = meta::version_state(conn, table, &new_key)?;
            if row.operation == Operation::Insert && version > 0 && version != seq && !deleted {
                // Two transactions inserted the same key (typically an auto-assigned rowid
                // picked on two nodes at once): the later one wins, the other row is gone.
                tracing::warn!(
                    table,
                    seq,
                    other = version,
                    "two inserts of the same key; the later one wins"
                );
                out.collision = true;
            }
            if newer(table, &new_key, version, seq, written) {
                upsert_row(conn, info, row)?;
                meta::set_version(conn, table, &new_key, seq, false)?;
                written.insert((table.clone(), new_key));
                out.applied = true;
            }
        }
        _ => {
            let key = row_key(info, row, false)?;
            if newer(table, &key, meta::version(conn, table, &key)?, seq, written) {
                delete_row(conn, info, row, false)?;
                meta::set_version(conn, table, &key, seq, true)?;
                written.insert((table.clone(), key));
                out.applied = true;
            }
        }
    }
    Ok(out)
}

fn upsert_row(conn: &Connection, info: &TableInfo, row: &Change) -> Result<(), ApplyError> {
    let pk = info.pk_columns();
    let cols: Vec<String> = row.columns.iter().map(|c| quote_ident(c)).collect();
    let mut names = cols.clone();
    let mut conflict = pk.iter().map(|c| quote_ident(c)).collect::<Vec<_>>();
    let use_rowid = pk.is_empty();
    if use_rowid {
        names.insert(0, "rowid".into());
        conflict = vec!["rowid".into()];
    }
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
    let updates: Vec<String> = cols
        .iter()
        .filter(|c| !conflict.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let action = if updates.is_empty() {
        "NOTHING".to_string()
    } else {
        format!("UPDATE SET {}", updates.join(", "))
    };
    let sql = format!(
        "INSERT INTO main.{}({}) VALUES ({}) ON CONFLICT({}) DO {action}",
        quote_ident(&row.table),
        names.join(", "),
        placeholders.join(", "),
        conflict.join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut i = 1;
    if use_rowid {
        stmt.raw_bind_parameter(i, row.new_rowid)?;
        i += 1;
    }
    if row.new_values.len() != row.columns.len() {
        return Err(ApplyError::Prepare {
            message: format!(
                "change for {:?}: {} values for {} columns",
                row.table,
                row.new_values.len(),
                row.columns.len()
            ),
        });
    }
    for v in &row.new_values {
        stmt.raw_bind_parameter(i, v)?;
        i += 1;
    }
    stmt.raw_execute()
        .map_err(|source| ApplyError::Run { source })?;
    Ok(())
}

fn delete_row(
    conn: &Connection,
    info: &TableInfo,
    row: &Change,
    new: bool,
) -> Result<(), ApplyError> {
    let table = quote_ident(&row.table);
    let Some(pk) = pk_values(info, row, new)? else {
        let rowid = if new { row.new_rowid } else { row.old_rowid };
        conn.prepare_cached(&format!("DELETE FROM main.{table} WHERE rowid = ?1"))?
            .execute([rowid])
            .map_err(|source| ApplyError::Run { source })?;
        return Ok(());
    };
    let conds: Vec<String> = pk
        .iter()
        .enumerate()
        .map(|(n, (name, _))| format!("{} IS ?{}", quote_ident(name), n + 1))
        .collect();
    let sql = format!("DELETE FROM main.{table} WHERE {}", conds.join(" AND "));
    let mut stmt = conn.prepare_cached(&sql)?;
    for (i, (_, v)) in pk.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, *v)?;
    }
    stmt.raw_execute()
        .map_err(|source| ApplyError::Run { source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (Connection, TableCache) {
        let c = Connection::open_in_memory().unwrap();
        meta::ensure(&c).unwrap();
        c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE w(a TEXT, b INTEGER, v TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID;
             CREATE TABLE n(v TEXT);",
        )
        .unwrap();
        (c, TableCache::default())
    }

    fn set(changes: Vec<Change>) -> ChangeSet {
        let mut cs = ChangeSet::new("n1", 1, "ha.db");
        cs.format = Some(crate::FORMAT_VERSION);
        cs.changes = changes;
        cs
    }

    fn ins(table: &str, cols: &[&str], vals: Vec<Value>, rowid: i64) -> Change {
        let mut c = Change::new(Operation::Insert, table);
        c.columns = cols.iter().map(|s| s.to_string()).collect();
        c.new_values = vals;
        c.old_rowid = rowid;
        c.new_rowid = rowid;
        c
    }

    fn upd(id: i64, old: &str, new: &str) -> Change {
        let mut c = Change::new(Operation::Update, "t");
        c.columns = vec!["id".into(), "v".into()];
        c.old_values = vec![Value::Integer(id), Value::Text(old.into())];
        c.new_values = vec![Value::Integer(id), Value::Text(new.into())];
        c.old_rowid = id;
        c.new_rowid = id;
        c
    }

    fn get(c: &Connection, sql: &str) -> Vec<String> {
        let mut s = c.prepare(sql).unwrap();
        s.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn later_sequence_wins_whatever_the_arrival_order() {
        for order in [[10u64, 11], [11, 10]] {
            let (c, mut cache) = db();
            let first = ins(
                "t",
                &["id", "v"],
                vec![Value::Integer(1), Value::Text("x".into())],
                1,
            );
            apply(&c, &mut cache, 1, &set(vec![first])).unwrap();
            for seq in order {
                let step = if seq == 10 {
                    upd(1, "x", "ten")
                } else {
                    upd(1, "x", "eleven")
                };
                apply(&c, &mut cache, seq, &set(vec![step])).unwrap();
            }
            assert_eq!(
                get(&c, "SELECT v FROM t"),
                vec!["eleven"],
                "order {order:?}"
            );
        }
    }

    #[test]
    fn a_row_written_twice_in_one_set_ends_in_its_last_state() {
        let (c, mut cache) = db();
        let row = |v: &str| {
            ins(
                "t",
                &["id", "v"],
                vec![Value::Integer(1), Value::Text(v.into())],
                1,
            )
        };
        let s = set(vec![row("a"), row("b")]);
        apply(&c, &mut cache, 3, &s).unwrap();
        assert_eq!(get(&c, "SELECT v FROM t"), vec!["b"]);
        // The same set delivered again changes nothing.
        let again = apply(&c, &mut cache, 3, &s).unwrap();
        assert_eq!(again.superseded, 2);
    }

    #[test]
    fn duplicates_are_no_ops_and_deletes_leave_tombstones() {
        let (c, mut cache) = db();
        let i = set(vec![ins(
            "t",
            &["id", "v"],
            vec![Value::Integer(1), Value::Text("a".into())],
            1,
        )]);
        apply(&c, &mut cache, 5, &i).unwrap();
        let s = apply(&c, &mut cache, 5, &i).unwrap();
        assert_eq!(s.superseded, 1);
        let mut del = Change::new(Operation::Delete, "t");
        del.columns = vec!["id".into(), "v".into()];
        del.old_values = vec![Value::Integer(1), Value::Text("a".into())];
        del.old_rowid = 1;
        del.new_rowid = 1;
        apply(&c, &mut cache, 7, &set(vec![del])).unwrap();
        // An older insert of the deleted key does not resurrect it.
        apply(&c, &mut cache, 6, &i).unwrap();
        assert!(get(&c, "SELECT v FROM t").is_empty());
    }

    #[test]
    fn without_rowid_keyless_and_odd_names_apply() {
        let (c, mut cache) = db();
        c.execute_batch("CREATE TABLE \"select\"(\"from\" TEXT PRIMARY KEY, \"a b\" TEXT)")
            .unwrap();
        let cs = set(vec![
            ins(
                "w",
                &["a", "b", "v"],
                vec![
                    Value::Text("k".into()),
                    Value::Integer(2),
                    Value::Text("w".into()),
                ],
                0,
            ),
            ins("n", &["v"], vec![Value::Text("n1".into())], 42),
            ins(
                "select",
                &["from", "a b"],
                vec![Value::Text("f".into()), Value::Text("s".into())],
                1,
            ),
        ]);
        apply(&c, &mut cache, 1, &cs).unwrap();
        assert_eq!(get(&c, "SELECT v FROM w"), vec!["w"]);
        assert_eq!(get(&c, "SELECT rowid || v FROM n"), vec!["42n1"]);
        assert_eq!(get(&c, "SELECT \"a b\" FROM \"select\""), vec!["s"]);
    }

    #[test]
    fn ddl_steps_run_and_missing_tables_are_errors() {
        let (c, mut cache) = db();
        let cs = set(vec![
            Change::sql("CREATE TABLE IF NOT EXISTS z(id INTEGER PRIMARY KEY)"),
            ins("z", &["id"], vec![Value::Integer(3)], 3),
        ]);
        apply(&c, &mut cache, 1, &cs).unwrap();
        assert_eq!(get(&c, "SELECT CAST(id AS TEXT) FROM z"), vec!["3"]);
        let bad = set(vec![ins("nope", &["id"], vec![Value::Integer(1)], 1)]);
        assert!(apply(&c, &mut cache, 2, &bad).is_err());
    }

    #[test]
    fn apply_once_skips_a_transaction_already_here() {
        let (c, mut cache) = db();
        let row = |v: &str| {
            ins(
                "t",
                &["id", "v"],
                vec![Value::Integer(1), Value::Text(v.into())],
                1,
            )
        };
        let first = set(vec![row("a")]);
        assert_eq!(apply_once(&c, &mut cache, 1, &first).unwrap().applied, 1);
        // The same transaction published again later (a new sequence) is not applied again.
        let mut again = set(vec![row("a")]);
        again.changes.push(row("b"));
        assert_eq!(
            apply_once(&c, &mut cache, 9, &again).unwrap(),
            ApplyStats::default()
        );
        assert_eq!(get(&c, "SELECT v FROM t"), vec!["a"]);
    }

    #[test]
    fn legacy_messages_decode_base64_in_blob_columns() {
        let (c, mut cache) = db();
        c.execute_batch("CREATE TABLE b(id INTEGER PRIMARY KEY, data BLOB, txt TEXT)")
            .unwrap();
        let mut cs = set(vec![ins(
            "b",
            &["id", "data", "txt"],
            vec![
                Value::Integer(1),
                Value::Text("AAH/".into()),
                Value::Text("AAH/".into()),
            ],
            1,
        )]);
        cs.format = None;
        apply(&c, &mut cache, 1, &cs).unwrap();
        assert_eq!(
            get(&c, "SELECT typeof(data) || hex(data) || txt FROM b"),
            vec!["blob0001FFAAH/"]
        );
    }
}
