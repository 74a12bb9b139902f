//! Owns applying one replicated transaction to the local database, with last-writer-wins per
//! row by stream sequence (see `meta` for the version table).
//! Must not begin or commit: the writer runs this inside its transaction (capture off,
//! foreign keys deferred) and records `applied_seq` in the same transaction.
//! Invariant: applying the same message twice, or an older change after a newer one, changes
//! nothing — so every node converges whatever order it saw concurrent writers in.

use rusqlite::Connection;

use super::capture::RowOp;
use super::meta;
use super::schema::{TableCache, TableInfo, quote_ident};
use super::{DbError, Value};

/// A full row image of one change, as carried by a change set.
#[derive(Debug, Clone, PartialEq)]
pub struct RowImage {
    pub table: String,
    pub op: RowOp,
    /// The written (non-generated) columns the values are aligned with.
    pub columns: Vec<String>,
    pub old_values: Vec<Value>,
    pub new_values: Vec<Value>,
    pub old_rowid: i64,
    pub new_rowid: i64,
}

/// One step of a replicated transaction, in origin order.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyStep {
    Row(RowImage),
    /// DDL (or other SQL) text with its arguments.
    Sql {
        command: String,
        args: Vec<Value>,
    },
}

/// What applying one message did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub applied: u64,
    /// Changes older than what the row already has (a later writer won).
    pub superseded: u64,
}

/// Applies `steps` as the change set of stream sequence `seq`.
pub fn apply(
    conn: &Connection,
    tables: &mut TableCache,
    seq: u64,
    steps: &[ApplyStep],
) -> Result<ApplyStats, DbError> {
    let mut stats = ApplyStats::default();
    for step in steps {
        match step {
            ApplyStep::Sql { command, args } => {
                let mut stmt = conn.prepare(command).map_err(|e| DbError::Prepare {
                    message: format!("replicated statement {command:?}: {e}"),
                })?;
                for (i, a) in args.iter().enumerate() {
                    stmt.raw_bind_parameter(i + 1, a)?;
                }
                stmt.raw_execute()
                    .map_err(|source| DbError::Run { source })?;
                drop(stmt);
                tables.invalidate();
                stats.applied += 1;
            }
            ApplyStep::Row(row) => {
                let Some(info) = tables.get(conn, "main", &row.table)? else {
                    return Err(DbError::Prepare {
                        message: format!("replicated change for missing table {:?}", row.table),
                    });
                };
                if apply_row(conn, &info, seq, row)? {
                    stats.applied += 1;
                } else {
                    stats.superseded += 1;
                }
            }
        }
    }
    Ok(stats)
}

/// The row key of an image (`old` or `new` side).
fn key_of(info: &TableInfo, row: &RowImage, new: bool) -> Result<Vec<u8>, DbError> {
    let (values, rowid) = if new {
        (&row.new_values, row.new_rowid)
    } else {
        (&row.old_values, row.old_rowid)
    };
    let pk = info.pk_columns();
    if pk.is_empty() {
        return Ok(meta::row_key(None, rowid));
    }
    let mut vals = Vec::with_capacity(pk.len());
    for name in pk {
        let i = row
            .columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| DbError::Prepare {
                message: format!(
                    "change for {:?} lacks primary-key column {name:?}",
                    row.table
                ),
            })?;
        vals.push(values.get(i).ok_or_else(|| DbError::Prepare {
            message: format!("change for {:?} has fewer values than columns", row.table),
        })?);
    }
    Ok(meta::row_key(Some(&vals), rowid))
}

/// Applies one row change if it is newer than the row's version. Returns whether it did.
fn apply_row(
    conn: &Connection,
    info: &TableInfo,
    seq: u64,
    row: &RowImage,
) -> Result<bool, DbError> {
    let table = &row.table;
    match row.op {
        RowOp::Insert | RowOp::Update => {
            let new_key = key_of(info, row, true)?;
            let mut did = false;
            if row.op == RowOp::Update {
                let old_key = key_of(info, row, false)?;
                if old_key != new_key && meta::version(conn, table, &old_key)? < seq {
                    delete_row(conn, info, row, false)?;
                    meta::set_version(conn, table, &old_key, seq, true)?;
                    did = true;
                }
            }
            if meta::version(conn, table, &new_key)? < seq {
                upsert_row(conn, info, row)?;
                meta::set_version(conn, table, &new_key, seq, false)?;
                did = true;
            }
            Ok(did)
        }
        RowOp::Delete => {
            let key = key_of(info, row, false)?;
            if meta::version(conn, table, &key)? >= seq {
                return Ok(false);
            }
            delete_row(conn, info, row, false)?;
            meta::set_version(conn, table, &key, seq, true)?;
            Ok(true)
        }
    }
}

fn upsert_row(conn: &Connection, info: &TableInfo, row: &RowImage) -> Result<(), DbError> {
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
        return Err(DbError::Prepare {
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
        .map_err(|source| DbError::Run { source })?;
    Ok(())
}

fn delete_row(
    conn: &Connection,
    info: &TableInfo,
    row: &RowImage,
    new: bool,
) -> Result<(), DbError> {
    let pk = info.pk_columns();
    let (values, rowid) = if new {
        (&row.new_values, row.new_rowid)
    } else {
        (&row.old_values, row.old_rowid)
    };
    if pk.is_empty() {
        conn.prepare_cached(&format!(
            "DELETE FROM main.{} WHERE rowid = ?1",
            quote_ident(&row.table)
        ))?
        .execute([rowid])
        .map_err(|source| DbError::Run { source })?;
        return Ok(());
    }
    let mut conds = Vec::new();
    let mut binds = Vec::new();
    for (n, name) in pk.iter().enumerate() {
        let i = row
            .columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| DbError::Prepare {
                message: format!(
                    "change for {:?} lacks primary-key column {name:?}",
                    row.table
                ),
            })?;
        conds.push(format!("{} IS ?{}", quote_ident(name), n + 1));
        binds.push(values.get(i).cloned().unwrap_or(Value::Null));
    }
    let sql = format!(
        "DELETE FROM main.{} WHERE {}",
        quote_ident(&row.table),
        conds.join(" AND ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    for (i, b) in binds.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, b)?;
    }
    stmt.raw_execute()
        .map_err(|source| DbError::Run { source })?;
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

    fn ins(table: &str, cols: &[&str], vals: Vec<Value>, rowid: i64) -> ApplyStep {
        ApplyStep::Row(RowImage {
            table: table.into(),
            op: RowOp::Insert,
            columns: cols.iter().map(|s| s.to_string()).collect(),
            old_values: vec![],
            new_values: vals,
            old_rowid: rowid,
            new_rowid: rowid,
        })
    }

    fn upd(id: i64, old: &str, new: &str) -> ApplyStep {
        ApplyStep::Row(RowImage {
            table: "t".into(),
            op: RowOp::Update,
            columns: vec!["id".into(), "v".into()],
            old_values: vec![Value::Integer(id), Value::Text(old.into())],
            new_values: vec![Value::Integer(id), Value::Text(new.into())],
            old_rowid: id,
            new_rowid: id,
        })
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
            apply(
                &c,
                &mut cache,
                1,
                &[ins(
                    "t",
                    &["id", "v"],
                    vec![Value::Integer(1), Value::Text("x".into())],
                    1,
                )],
            )
            .unwrap();
            for seq in order {
                let step = if seq == 10 {
                    upd(1, "x", "ten")
                } else {
                    upd(1, "x", "eleven")
                };
                apply(&c, &mut cache, seq, &[step]).unwrap();
            }
            assert_eq!(
                get(&c, "SELECT v FROM t"),
                vec!["eleven"],
                "order {order:?}"
            );
        }
    }

    #[test]
    fn duplicates_are_no_ops_and_deletes_leave_tombstones() {
        let (c, mut cache) = db();
        let i = ins(
            "t",
            &["id", "v"],
            vec![Value::Integer(1), Value::Text("a".into())],
            1,
        );
        apply(&c, &mut cache, 5, std::slice::from_ref(&i)).unwrap();
        let s = apply(&c, &mut cache, 5, std::slice::from_ref(&i)).unwrap();
        assert_eq!(s.superseded, 1);
        let del = ApplyStep::Row(RowImage {
            table: "t".into(),
            op: RowOp::Delete,
            columns: vec!["id".into(), "v".into()],
            old_values: vec![Value::Integer(1), Value::Text("a".into())],
            new_values: vec![],
            old_rowid: 1,
            new_rowid: 1,
        });
        apply(&c, &mut cache, 7, &[del]).unwrap();
        // An older insert of the deleted key does not resurrect it.
        apply(&c, &mut cache, 6, &[i]).unwrap();
        assert!(get(&c, "SELECT v FROM t").is_empty());
    }

    #[test]
    fn without_rowid_keyless_and_odd_names_apply() {
        let (c, mut cache) = db();
        c.execute_batch("CREATE TABLE \"select\"(\"from\" TEXT PRIMARY KEY, \"a b\" TEXT)")
            .unwrap();
        apply(
            &c,
            &mut cache,
            1,
            &[
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
            ],
        )
        .unwrap();
        assert_eq!(get(&c, "SELECT v FROM w"), vec!["w"]);
        assert_eq!(get(&c, "SELECT rowid || v FROM n"), vec!["42n1"]);
        assert_eq!(get(&c, "SELECT \"a b\" FROM \"select\""), vec!["s"]);
    }

    #[test]
    fn ddl_steps_run_and_missing_tables_are_errors() {
        let (c, mut cache) = db();
        apply(
            &c,
            &mut cache,
            1,
            &[
                ApplyStep::Sql {
                    command: "CREATE TABLE IF NOT EXISTS z(id INTEGER PRIMARY KEY)".into(),
                    args: vec![],
                },
                ins("z", &["id"], vec![Value::Integer(3)], 3),
            ],
        )
        .unwrap();
        assert_eq!(get(&c, "SELECT CAST(id AS TEXT) FROM z"), vec!["3"]);
        assert!(
            apply(
                &c,
                &mut cache,
                2,
                &[ins("nope", &["id"], vec![Value::Integer(1)], 1)]
            )
            .is_err()
        );
    }
}
