//! Owns applying one replicated transaction to the local database, with last-writer-wins per
//! row by stream sequence (see `meta` for the version table).
//! Must not begin or commit: the caller (the node's writer, the `ha-sync` extension) runs this
//! inside its transaction (capture off, triggers off, foreign keys not enforced) and records the
//! applied sequence in the same transaction.
//! Invariant: applying the same message twice, or an older change after a newer one, changes
//! nothing — so every node converges whatever order it saw concurrent writers in.

use rusqlite::Connection;

use crate::conflict::KeyVals;
use crate::meta;
use crate::rows::{Written, delete_key, fill_lacking, lacking, newer, write_row};
use crate::schema::{TableCache, TableInfo};
use crate::{ApplyError, Change, ChangeSet, Operation, Value, codec, ddl};

/// What applying one message did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub applied: u64,
    /// Changes older than what the row already has (a later writer won).
    pub superseded: u64,
    /// Inserts that met a live row of another transaction with the same key (typically an
    /// auto-assigned rowid picked on two nodes at once): the later insert wins.
    pub collisions: u64,
    /// Rows of different keys that collided on a UNIQUE constraint: the newer stayed, the older
    /// was deleted (with a tombstone), the same way on every node.
    pub constraint_conflicts: u64,
    /// Changes for a table that replicated DDL ordered before them dropped: skipped.
    pub dropped_table: u64,
    /// Operations this node does not know (the original's `CUSTOM`), skipped with a warning.
    pub skipped: u64,
    /// 1 when the interceptor's `before` skipped the whole change set.
    pub script_skipped: u64,
    /// 1 when the apply failed and the interceptor's `after` ignored the error.
    pub script_rescued: u64,
    /// 1 when the change set was already in this database (the node's own commit coming
    /// back, or a message delivered again): nothing was done.
    pub already_here: u64,
}

impl ApplyStats {
    /// The stats of a change set found already in this database.
    pub fn already_here() -> ApplyStats {
        ApplyStats {
            already_here: 1,
            ..ApplyStats::default()
        }
    }
}

/// Applies the changes of `cs` as the change set of stream sequence `seq`.
///
/// The changes are the *effects* of the origin's statements: the caller turns triggers off and
/// foreign keys unenforced while it applies (the origin already captured what its triggers and
/// cascades wrote), and each row image is written as what it is — an INSERT replaces the row
/// of its key, an UPDATE sets the columns it carries.
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
    // (With one change there is no later one to look a row up in `written`.)
    let many = cs.changes.len() > 1;
    for change in &cs.changes {
        match &change.operation {
            Operation::Sql => {
                run_ddl(conn, tables, seq, change)?;
                stats.applied += 1;
            }
            Operation::Insert | Operation::Update | Operation::Delete => {
                let routed;
                let change = match as_seen(conn, tables, cs.base, seq, change)? {
                    Seen::Same => change,
                    Seen::Now(c) => {
                        routed = *c;
                        &routed
                    }
                    Seen::Dropped => {
                        stats.dropped_table += 1;
                        continue;
                    }
                };
                let renamed;
                let (info, change) = match tables.get(conn, "main", &change.table)? {
                    Some(info) => (info, change),
                    // Written concurrently with a RENAME TABLE that the stream put first: the
                    // rows belong to the table under its new name.
                    None => match renamed_table(conn, tables, change)? {
                        Some((info, c)) => {
                            renamed = c;
                            (info, &renamed)
                        }
                        None if meta::was_dropped(conn, &change.table)? => {
                            // Written concurrently with a DROP TABLE that the stream put first.
                            stats.dropped_table += 1;
                            continue;
                        }
                        None => {
                            return Err(ApplyError::Prepare {
                                message: format!(
                                    "replicated change for missing table {:?}",
                                    change.table
                                ),
                            });
                        }
                    },
                };
                let with_names;
                let change = match renamed_columns(conn, &info, change)? {
                    Some(c) => {
                        with_names = c;
                        &with_names
                    }
                    None => change,
                };
                let fixed;
                let change = match known_columns(&info, change, cs.is_legacy()) {
                    Some(c) => {
                        fixed = c;
                        &fixed
                    }
                    None => change,
                };
                let o = apply_row(conn, &info, seq, change, many, &mut written, &mut stats)?;
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

/// Runs a replicated DDL statement and keeps the bookkeeping it implies: the columns an
/// `ALTER TABLE … ADD COLUMN` adds are marked missing from the rows written after it (by nodes
/// that had not seen it yet), a dropped table's versions go and its later changes are skipped.
fn run_ddl(
    conn: &Connection,
    tables: &mut TableCache,
    seq: u64,
    change: &Change,
) -> Result<(), ApplyError> {
    let head = ddl::classify(&change.command)
        .ok()
        .flatten()
        .filter(|d| !d.is_local_only());
    let before = match &head {
        Some(d) if d.verb == ddl::Verb::Alter => Some(written_columns(conn, &d.name)?),
        _ => None,
    };
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
    // (Read again lazily, after the bookkeeping below has run: the name events included.)
    tables.invalidate();
    if let Some(d) = head {
        ddl_done(conn, &d, seq)?;
        if let Some(before) = before {
            for c in written_columns(conn, &d.name)? {
                if !before.contains(&c) {
                    meta::column_added(conn, &d.name, &c, seq)?;
                }
            }
        }
    }
    Ok(())
}

/// The bookkeeping of a DDL statement that ran at `seq` (applied, or committed by this node):
/// tables dropped and created.
pub fn ddl_done(conn: &Connection, d: &ddl::Ddl, seq: u64) -> Result<(), ApplyError> {
    if !matches!(
        d.object,
        ddl::ObjectKind::Table | ddl::ObjectKind::VirtualTable
    ) {
        return Ok(());
    }
    match (&d.verb, &d.rename) {
        (ddl::Verb::Drop, _) => meta::table_dropped(conn, &d.name, seq),
        (ddl::Verb::Create, _) => meta::table_created(conn, &d.name),
        (ddl::Verb::Alter, Some(ddl::Rename::Table { to })) => {
            meta::table_renamed(conn, &d.name, to, seq)
        }
        (ddl::Verb::Alter, Some(ddl::Rename::Column { from, to })) => {
            meta::column_renamed(conn, &d.name, from, to, seq)
        }
        (ddl::Verb::Alter, Some(ddl::Rename::DropColumn { column })) => {
            meta::column_dropped(conn, &d.name, column, seq)
        }
        (ddl::Verb::Alter, None) => Ok(()),
    }
}

/// Where a change belongs, by its origin's view of the table names (`ChangeSet::base`).
enum Seen {
    /// Its table (or, when that is gone, where `renamed_table` finds it).
    Same,
    /// The change readdressed to what became of the table its origin wrote.
    Now(Box<Change>),
    /// The table its origin wrote was dropped after the origin wrote it.
    Dropped,
}

/// Where `change` (of the change set at `seq`, written with the view `base`) belongs: the table
/// its origin called so may have been dropped or renamed by DDL the stream put before it, and
/// its name taken by a new table since; the origin's own row followed the old table (it applied
/// that DDL after its commit), so every node sends the change there too.
fn as_seen(
    conn: &Connection,
    tables: &mut TableCache,
    base: Option<u64>,
    seq: u64,
    change: &Change,
) -> Result<Seen, ApplyError> {
    let Some(base) = base else {
        return Ok(Seen::Same);
    };
    if tables.last_name_event(conn)? <= base {
        return Ok(Seen::Same);
    }
    let Some(table) = meta::table_as_seen(conn, &change.table, base, seq)? else {
        return Ok(Seen::Dropped);
    };
    let mut now = (table != change.table).then(|| {
        let mut c = change.clone();
        c.table = table.clone();
        c
    });
    // Its columns likewise: renamed since (a new column may have the old name now), or dropped
    // (the origin's value went with the column).
    let mut moved = Vec::new();
    for (i, column) in change.columns.iter().enumerate() {
        match meta::column_as_seen(conn, &table, column, base, seq)? {
            Some(c) if c == *column => {}
            other => moved.push((i, other)),
        }
    }
    if !moved.is_empty() {
        let c = now.get_or_insert_with(|| change.clone());
        for (i, to) in moved.into_iter().rev() {
            match to {
                Some(name) => {
                    for pk in c.pk_columns.iter_mut().filter(|p| **p == c.columns[i]) {
                        *pk = name.clone();
                    }
                    c.columns[i] = name;
                }
                None => {
                    c.columns.remove(i);
                    for values in [&mut c.old_values, &mut c.new_values] {
                        if i < values.len() {
                            values.remove(i);
                        }
                    }
                }
            }
        }
    }
    Ok(now.map_or(Seen::Same, |c| Seen::Now(Box::new(c))))
}

/// For a change of a table that is gone: the table it was renamed to and the change addressed
/// to it; `None` when it was not renamed (or its new name is gone too).
fn renamed_table(
    conn: &Connection,
    tables: &mut TableCache,
    change: &Change,
) -> Result<Option<(std::sync::Arc<TableInfo>, Change)>, ApplyError> {
    let Some(to) = meta::renamed_to(conn, &change.table)? else {
        return Ok(None);
    };
    let Some(info) = tables.get(conn, "main", &to)? else {
        return Ok(None);
    };
    let mut c = change.clone();
    c.table = to;
    Ok(Some((info, c)))
}

/// The change with the columns it names by an old name (a RENAME COLUMN the stream put before
/// it, unseen by its origin) named as the table names them now; `None` when all are current.
fn renamed_columns(
    conn: &Connection,
    info: &TableInfo,
    change: &Change,
) -> Result<Option<Change>, ApplyError> {
    let known = |name: &str| info.columns.iter().any(|c| c.name == name);
    if change.columns.iter().all(|n| known(n)) {
        return Ok(None);
    }
    let mut c = change.clone();
    let mut any = false;
    for name in &mut c.columns {
        if known(name) {
            continue;
        }
        if let Some(to) = meta::renamed_column(conn, &change.table, name)?
            && known(&to)
        {
            *name = to;
            any = true;
        }
    }
    Ok(any.then_some(c))
}

/// The written (not generated, not hidden) columns of `table`, empty when it does not exist.
fn written_columns(conn: &Connection, table: &str) -> Result<Vec<String>, ApplyError> {
    Ok(TableInfo::read(conn, "main", table)?
        .map(|i| {
            i.columns
                .iter()
                .filter(|c| c.is_written())
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default())
}

/// The change without the columns the local table no longer has (dropped by DDL the stream put
/// before it), with the original's base64 BLOBs decoded; `None` when it needs neither.
fn known_columns(info: &TableInfo, change: &Change, legacy: bool) -> Option<Change> {
    let known = |name: &String| {
        info.columns
            .iter()
            .any(|c| &c.name == name && c.is_written())
    };
    let all_known = change.columns.iter().all(known);
    if all_known && !legacy {
        return None;
    }
    let mut c = if legacy {
        legacy_blobs(info, change)
    } else {
        change.clone()
    };
    if !all_known {
        let keep: Vec<bool> = change.columns.iter().map(known).collect();
        let pick = |v: &[Value]| -> Vec<Value> {
            if v.is_empty() {
                return Vec::new();
            }
            v.iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(v, _)| v.clone())
                .collect()
        };
        c.old_values = pick(&c.old_values);
        c.new_values = pick(&c.new_values);
        c.columns = change
            .columns
            .iter()
            .filter(|n| known(n))
            .cloned()
            .collect();
    }
    Some(c)
}

/// Applies `cs` (stream sequence `seq`) once: a change set whose transaction is already in this
/// database (our own commit coming back, or a message published again, by `_ha_txids`) changes
/// nothing; otherwise its identity is recorded and it is applied. The caller runs this in a
/// savepoint (a failed apply takes the identity back) and records its position.
pub fn apply_once(
    conn: &Connection,
    tables: &mut TableCache,
    seq: u64,
    cs: &ChangeSet,
) -> Result<ApplyStats, ApplyError> {
    if !meta::claim_tx(conn, &cs.txid(), seq, cs.timestamp_ns)? {
        return Ok(ApplyStats::already_here());
    }
    apply(conn, tables, seq, cs)
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

/// How the row of a change's old or new image is found: the local table's primary-key values
/// (from the image), or its rowid when the table has no declared key.
fn key_of(info: &TableInfo, change: &Change, new: bool) -> Result<KeyVals, ApplyError> {
    let pk = info.pk_columns();
    if pk.is_empty() {
        return Ok(KeyVals::Rowid(if new {
            change.new_rowid
        } else {
            change.old_rowid
        }));
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
        out.push((name.to_string(), value.clone()));
    }
    Ok(KeyVals::Pk(out))
}

/// The row key of a change's old or new image, by the local table's primary key (rowid when
/// it has none).
pub fn row_key(info: &TableInfo, change: &Change, new: bool) -> Result<Vec<u8>, ApplyError> {
    Ok(key_of(info, change, new)?.version_key())
}

/// What one row change did.
struct RowOutcome {
    applied: bool,
    collision: bool,
}

/// Applies one row change if it is newer than the row's version. `many`: the change set has
/// more changes, which may write this row again (see `written`).
fn apply_row(
    conn: &Connection,
    info: &TableInfo,
    seq: u64,
    row: &Change,
    many: bool,
    written: &mut Written,
    stats: &mut ApplyStats,
) -> Result<RowOutcome, ApplyError> {
    let table = &row.table;
    let mut out = RowOutcome {
        applied: false,
        collision: false,
    };
    match row.operation {
        Operation::Insert | Operation::Update => {
            let new = key_of(info, row, true)?;
            let new_key = new.version_key();
            if row.operation == Operation::Update {
                let old = key_of(info, row, false)?;
                let old_key = old.version_key();
                if old_key != new_key
                    && newer(
                        table,
                        &old_key,
                        meta::version(conn, table, &old_key)?,
                        seq,
                        written,
                    )
                {
                    delete_key(conn, info, &old)?;
                    meta::set_version(conn, table, &old_key, seq, true)?;
                    written.insert((table.clone(), old_key));
                    out.applied = true;
                }
            }
            // Usually the image is newer than its row's version (an insert of a key no one
            // wrote, an update of an older row): the version is taken in the statement that
            // finds it so, and the row written after it. An insert takes only a key without a
            // version, so that one written elsewhere is still seen (and counted) below.
            let lacks = lacking(info, row);
            let insert = row.operation == Operation::Insert;
            let taken = meta::take_version(conn, table, &new_key, seq, lacks.as_deref(), insert)?;
            if !taken {
                let (version, deleted) = meta::version_state(conn, table, &new_key)?;
                if insert && version > 0 && version != seq && !deleted {
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
                if !newer(table, &new_key, version, seq, written) {
                    if !deleted {
                        fill_lacking(conn, info, row, &new, &new_key)?;
                    }
                    return Ok(out);
                }
            }
            let live = write_row(
                conn,
                info,
                seq,
                row,
                &new,
                written,
                &mut stats.constraint_conflicts,
            )?;
            if !live {
                meta::set_version(conn, table, &new_key, seq, true)?;
            } else if !taken {
                meta::set_version_lacking(conn, table, &new_key, seq, false, lacks.as_deref())?;
            }
            if many {
                written.insert((table.clone(), new_key));
            }
            out.applied = true;
        }
        _ => {
            let old = key_of(info, row, false)?;
            let key = old.version_key();
            if newer(table, &key, meta::version(conn, table, &key)?, seq, written) {
                delete_key(conn, info, &old)?;
                meta::set_version(conn, table, &key, seq, true)?;
                written.insert((table.clone(), key));
                out.applied = true;
            }
        }
    }
    Ok(out)
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
    fn an_insert_of_a_key_already_here_replaces_its_row_null_keys_included() {
        let (c, mut cache) = db();
        c.execute_batch("CREATE TABLE k(name TEXT PRIMARY KEY, v TEXT)")
            .unwrap();
        let row =
            |name: Value, v: &str| ins("k", &["name", "v"], vec![name, Value::Text(v.into())], 0);
        // A rowid table's TEXT key may be NULL: found by `IS`, never a constraint conflict.
        for (seq, name, v) in [
            (5, Value::Null, "a"),
            (6, Value::Null, "b"),
            (7, Value::Text("x".into()), "c"),
            (8, Value::Text("x".into()), "d"),
        ] {
            let s = apply(&c, &mut cache, seq, &set(vec![row(name, v)])).unwrap();
            assert_eq!(s.collisions, u64::from(seq % 2 == 0), "seq {seq}");
        }
        assert_eq!(
            get(&c, "SELECT coalesce(name, '-') || v FROM k ORDER BY name"),
            ["-b", "xd"]
        );
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
            ApplyStats::already_here()
        );
        assert_eq!(get(&c, "SELECT v FROM t"), vec!["a"]);
    }

    #[test]
    fn a_failed_apply_in_its_savepoint_leaves_no_identity_behind() {
        let (c, mut cache) = db();
        let cs = set(vec![ins("later", &["id"], vec![Value::Integer(1)], 1)]);
        c.execute_batch("SAVEPOINT item").unwrap();
        assert!(
            apply_once(&c, &mut cache, 1, &cs).is_err(),
            "no such table yet"
        );
        c.execute_batch("ROLLBACK TO item; RELEASE item").unwrap();
        assert!(!meta::tx_seen(&c, &cs.txid()).unwrap());
        // Retried once the table exists, it applies (it was not taken for a duplicate).
        c.execute_batch("CREATE TABLE later(id INTEGER PRIMARY KEY)")
            .unwrap();
        cache.invalidate();
        assert_eq!(apply_once(&c, &mut cache, 1, &cs).unwrap().applied, 1);
        assert!(meta::tx_seen(&c, &cs.txid()).unwrap());
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

    fn user(id: i64, email: &str) -> Change {
        ins(
            "u",
            &["id", "email"],
            vec![Value::Integer(id), Value::Text(email.into())],
            id,
        )
    }

    #[test]
    fn a_unique_conflict_keeps_the_newer_row_whatever_the_order() {
        for replace in [false, true] {
            for order in [[10u64, 11], [11, 10]] {
                let (c, mut cache) = db();
                let clause = if replace { " ON CONFLICT REPLACE" } else { "" };
                c.execute_batch(&format!(
                    "CREATE TABLE u(id INTEGER PRIMARY KEY, email TEXT UNIQUE{clause})"
                ))
                .unwrap();
                let mut total = 0;
                for seq in order {
                    let row = if seq == 10 {
                        user(1, "e")
                    } else {
                        user(2, "e")
                    };
                    total += apply(&c, &mut cache, seq, &set(vec![row]))
                        .unwrap()
                        .constraint_conflicts;
                }
                assert_eq!(
                    get(&c, "SELECT id || email FROM u"),
                    vec!["2e"],
                    "order {order:?}, replace {replace}"
                );
                assert_eq!(total, 1);
                // The loser's key is a tombstone: its older insert does not come back.
                apply(&c, &mut cache, 10, &set(vec![user(1, "e")])).unwrap();
                assert_eq!(get(&c, "SELECT id || email FROM u"), vec!["2e"]);
            }
        }
    }

    #[test]
    fn an_update_sets_only_its_columns_and_a_column_added_later_converges() {
        // A: ALTER ADD c at 10 with c = 5, then B's update of v (written without c) at 11.
        // B: its own update (version 11) first, then A's ALTER and update at 10.
        let upd_v = |v: &str| {
            let mut u = upd(1, "x", v);
            u.columns = vec!["id".into(), "v".into()];
            u
        };
        let alter = || {
            let mut u = Change::new(Operation::Update, "t");
            u.columns = vec!["id".into(), "v".into(), "c".into()];
            u.old_values = vec![Value::Integer(1), Value::Text("x".into()), Value::Null];
            u.new_values = vec![
                Value::Integer(1),
                Value::Text("x".into()),
                Value::Integer(5),
            ];
            u.old_rowid = 1;
            u.new_rowid = 1;
            set(vec![Change::sql("ALTER TABLE t ADD COLUMN c"), u])
        };
        let start = |c: &Connection, cache: &mut TableCache| {
            let first = ins(
                "t",
                &["id", "v"],
                vec![Value::Integer(1), Value::Text("x".into())],
                1,
            );
            apply(c, cache, 1, &set(vec![first])).unwrap();
        };
        let (a, mut ca) = db();
        start(&a, &mut ca);
        apply(&a, &mut ca, 10, &alter()).unwrap();
        apply(&a, &mut ca, 11, &set(vec![upd_v("b")])).unwrap();
        let (b, mut cb) = db();
        start(&b, &mut cb);
        apply(&b, &mut cb, 11, &set(vec![upd_v("b")])).unwrap();
        apply(&b, &mut cb, 10, &alter()).unwrap();
        let q = "SELECT v || '/' || c FROM t";
        assert_eq!(get(&a, q), vec!["b/5"]);
        assert_eq!(get(&b, q), get(&a, q));
    }

    #[test]
    fn changes_for_a_table_dropped_before_them_are_skipped() {
        let (c, mut cache) = db();
        let drop = set(vec![Change::sql("DROP TABLE IF EXISTS t")]);
        apply(&c, &mut cache, 5, &drop).unwrap();
        let late = set(vec![ins(
            "t",
            &["id", "v"],
            vec![Value::Integer(1), Value::Text("x".into())],
            1,
        )]);
        assert_eq!(apply(&c, &mut cache, 6, &late).unwrap().dropped_table, 1);
        // Created again: its changes apply again.
        let create = set(vec![Change::sql(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v)",
        )]);
        apply(&c, &mut cache, 7, &create).unwrap();
        assert_eq!(apply(&c, &mut cache, 8, &late).unwrap().applied, 1);
    }

    #[test]
    fn columns_the_table_no_longer_has_are_ignored() {
        let (c, mut cache) = db();
        let row = ins(
            "t",
            &["id", "v", "gone"],
            vec![
                Value::Integer(1),
                Value::Text("x".into()),
                Value::Integer(3),
            ],
            1,
        );
        apply(&c, &mut cache, 1, &set(vec![row])).unwrap();
        assert_eq!(get(&c, "SELECT v FROM t"), vec!["x"]);
    }
}
