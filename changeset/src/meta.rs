//! Owns the node's bookkeeping tables inside the user's database (prefix `_ha_`, never captured,
//! never replicated, included in backups and snapshots):
//! - `_ha_meta`: key/value, e.g. `applied_seq`, the last stream sequence the apply loop processed
//!   (`applied_seq:<subject>` for each subject the `ha-sync` extension follows);
//! - `_ha_versions`: per row key, the sequence of the last change to it (tombstone for deletes) —
//!   the "last writer wins by stream sequence" rule — and the columns the winning image lacked
//!   (`lacks`: written under an older schema, see `apply`);
//! - `_ha_txids`: the transactions (change-set identities) already in this database — committed
//!   here or applied — so a message that comes back (our own, or one published again) is not
//!   applied a second time;
//! - `_ha_quarantine`: messages that could not be applied, with the error.
//!
//! Must not decide what to apply: `apply` does, with these primitives.
//! Invariant: every write here happens in the same SQLite transaction as the data it describes.

use std::collections::HashSet;
use std::sync::OnceLock;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{ApplyError, Value};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _ha_meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ha_versions(
    tbl TEXT NOT NULL, pk BLOB NOT NULL, seq INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tbl, pk)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ha_txids(
    txid TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts_ns INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ha_quarantine(
    seq INTEGER PRIMARY KEY, error TEXT NOT NULL, attempts INTEGER NOT NULL,
    payload BLOB, quarantined_at_ns INTEGER NOT NULL);
";

/// Creates the bookkeeping tables if they are missing (and adds columns newer versions need).
pub fn ensure(conn: &Connection) -> Result<(), ApplyError> {
    conn.execute_batch(SCHEMA)?;
    let has_lacks: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('_ha_versions') WHERE name = 'lacks')",
        [],
        |r| r.get(0),
    )?;
    if !has_lacks {
        conn.execute_batch("ALTER TABLE _ha_versions ADD COLUMN lacks TEXT")?;
    }
    Ok(())
}

/// Separates column names in `_ha_versions.lacks` (a character no sane column name holds).
pub const LACKS_SEP: char = '\u{1f}';

/// The identity of a row for versioning: its primary-key values, or its rowid when the table has
/// no declared primary key. Encoded so equal keys give equal bytes on every node.
pub fn row_key(pk_values: Option<&[&Value]>, rowid: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    match pk_values {
        None => {
            out.push(b'R');
            out.extend_from_slice(&rowid.to_be_bytes());
        }
        Some(vals) => {
            for v in vals {
                match v {
                    Value::Null => out.push(b'n'),
                    Value::Integer(i) => {
                        out.push(b'i');
                        out.extend_from_slice(&i.to_be_bytes());
                    }
                    Value::Real(f) => {
                        out.push(b'r');
                        out.extend_from_slice(&f.to_bits().to_be_bytes());
                    }
                    Value::Text(t) => {
                        out.push(b't');
                        out.extend_from_slice(&(t.len() as u32).to_be_bytes());
                        out.extend_from_slice(t.as_bytes());
                    }
                    Value::Blob(b) => {
                        out.push(b'b');
                        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                        out.extend_from_slice(b);
                    }
                }
            }
        }
    }
    out
}

/// The sequence of the last change applied to the row, 0 if none is known.
pub fn version(conn: &Connection, table: &str, key: &[u8]) -> Result<u64, ApplyError> {
    Ok(version_state(conn, table, key)?.0)
}

/// The row's version and whether it is a tombstone; `(0, false)` when unknown.
pub fn version_state(
    conn: &Connection,
    table: &str,
    key: &[u8],
) -> Result<(u64, bool), ApplyError> {
    let v: Option<(i64, bool)> = conn
        .prepare_cached("SELECT seq, deleted FROM _ha_versions WHERE tbl = ?1 AND pk = ?2")?
        .query_row(params![table, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(v.map(|(s, d)| (s.max(0) as u64, d)).unwrap_or((0, false)))
}

pub fn set_version(
    conn: &Connection,
    table: &str,
    key: &[u8],
    seq: u64,
    deleted: bool,
) -> Result<(), ApplyError> {
    set_version_lacking(conn, table, key, seq, deleted, None)
}

/// Records `seq` as the row's live version (with the columns its image lacks) when it is newer
/// than the version the row has, or the row has none: the lookup and the update of
/// `version_state` + `set_version_lacking` in one statement. With `fresh_only`, only when the
/// row has no version at all (an insert must tell a key already written elsewhere). Returns
/// whether it recorded it; when not, nothing changed and the caller looks at the version.
pub fn take_version(
    conn: &Connection,
    table: &str,
    key: &[u8],
    seq: u64,
    lacks: Option<&str>,
    fresh_only: bool,
) -> Result<bool, ApplyError> {
    let sql = if fresh_only {
        "INSERT INTO _ha_versions(tbl, pk, seq, deleted, lacks) VALUES (?1, ?2, ?3, 0, ?4)
         ON CONFLICT(tbl, pk) DO NOTHING"
    } else {
        "INSERT INTO _ha_versions(tbl, pk, seq, deleted, lacks) VALUES (?1, ?2, ?3, 0, ?4)
         ON CONFLICT(tbl, pk) DO UPDATE SET seq = excluded.seq, deleted = 0,
         lacks = excluded.lacks WHERE _ha_versions.seq < excluded.seq"
    };
    let n = conn
        .prepare_cached(sql)?
        .execute(params![table, key, seq as i64, lacks])?;
    Ok(n == 1)
}

/// Records the row's version and the columns its winning image lacked (`None`: it carried
/// every column of the table).
pub fn set_version_lacking(
    conn: &Connection,
    table: &str,
    key: &[u8],
    seq: u64,
    deleted: bool,
    lacks: Option<&str>,
) -> Result<(), ApplyError> {
    conn.prepare_cached(
        "INSERT INTO _ha_versions(tbl, pk, seq, deleted, lacks) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(tbl, pk) DO UPDATE SET seq = excluded.seq, deleted = excluded.deleted,
         lacks = excluded.lacks",
    )?
    .execute(params![table, key, seq as i64, deleted, lacks])?;
    Ok(())
}

/// The columns the winning image of a live row lacked (empty when it carried them all).
pub fn lacks(conn: &Connection, table: &str, key: &[u8]) -> Result<Vec<String>, ApplyError> {
    let v: Option<Option<String>> = conn
        .prepare_cached(
            "SELECT lacks FROM _ha_versions WHERE tbl = ?1 AND pk = ?2 AND deleted = 0",
        )?
        .query_row(params![table, key], |r| r.get(0))
        .optional()?;
    Ok(v.flatten()
        .map(|l| {
            l.split(LACKS_SEP)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

/// A column `column` was added to `table` by DDL at stream sequence `seq`: the live rows whose
/// version is later were written without it (by nodes that had not seen the DDL yet).
pub fn column_added(
    conn: &Connection,
    table: &str,
    column: &str,
    seq: u64,
) -> Result<(), ApplyError> {
    conn.prepare_cached(
        "UPDATE _ha_versions SET lacks = coalesce(lacks || ?4, '') || ?3
         WHERE tbl = ?1 AND seq > ?2 AND deleted = 0",
    )?
    .execute(params![table, seq as i64, column, LACKS_SEP.to_string()])?;
    Ok(())
}

/// The `_ha_meta` key that says table `name` was dropped (value: the stream sequence).
fn dropped_key(name: &str) -> String {
    format!("dropped_table:{name}")
}

/// Table `name` was dropped at `seq` (0 when the sequence is not known yet): its row versions
/// go, and changes for it that were written concurrently are skipped rather than failed.
pub fn table_dropped(conn: &Connection, name: &str, seq: u64) -> Result<(), ApplyError> {
    conn.prepare_cached("DELETE FROM _ha_versions WHERE tbl = ?1")?
        .execute([name])?;
    forget_column_renames(conn, name)?;
    name_unbound(conn, name, seq, None)?;
    set_seq_of(conn, &dropped_key(name), seq)
}

/// The `_ha_meta` key of the sequence of the last table drop or rename recorded.
const NAME_EVENT_SEQ: &str = "name_event_seq";

/// The `_ha_meta` key prefix of what happened to the table called `name`; the zero-padded
/// sequence of each event follows, so the keys of one name sort by it. The name's length comes
/// first, so one name's keys never run into another's.
fn name_event_prefix(name: &str) -> String {
    format!("name_event:{}:{name}:", name.len())
}

/// The table called `name` stopped being called so at `seq`: renamed to `to`, or dropped
/// (`None`). Kept as history: a change written by a node whose view of the names was older
/// than `seq` belongs to what became of that table (see `table_as_seen`), even if a new table
/// takes the name later. With `seq` 0 (not known yet) nothing is recorded.
fn name_unbound(
    conn: &Connection,
    name: &str,
    seq: u64,
    to: Option<&str>,
) -> Result<(), ApplyError> {
    record_unbound(conn, &name_event_prefix(name), seq, to)
}

/// Records under `prefix` that a name was let go at `seq` (renamed to `to`, or dropped), and
/// moves `NAME_EVENT_SEQ` to it. With `seq` 0 (not known yet) nothing is recorded.
fn record_unbound(
    conn: &Connection,
    prefix: &str,
    seq: u64,
    to: Option<&str>,
) -> Result<(), ApplyError> {
    if seq == 0 {
        return Ok(());
    }
    conn.prepare_cached("INSERT OR REPLACE INTO _ha_meta(key, value) VALUES (?1, ?2)")?
        .execute(params![format!("{prefix}{seq:020}"), to])?;
    if seq > seq_of(conn, NAME_EVENT_SEQ)? {
        set_seq_of(conn, NAME_EVENT_SEQ, seq)?;
    }
    Ok(())
}

/// This node's view of table names, for a change set it publishes (`ChangeSet::base`): it has
/// applied every table drop and rename of the stream up to the returned sequence (its applied
/// position, or its own last drop or rename, published only once it had applied everything
/// before it) and none after it. `applied`: its applied position (`applied_seq`), which the
/// caller has read already.
pub fn name_view(conn: &Connection, applied: u64) -> Result<u64, ApplyError> {
    Ok(applied.max(seq_of(conn, NAME_EVENT_SEQ)?))
}

/// The sequence of the last table drop or rename this database recorded (0: none).
pub fn last_name_event(conn: &Connection) -> Result<u64, ApplyError> {
    seq_of(conn, NAME_EVENT_SEQ)
}

/// What became of the table a node called `name` when its view of the names was `base` (see
/// `ChangeSet::base`), by the drops and renames the stream carried after `base` and before
/// `before` (the change set's own sequence: what its own transaction did, its origin saw):
/// `Some(table)` (the name itself when nothing happened to it), or `None` when it was dropped.
pub fn table_as_seen(
    conn: &Connection,
    name: &str,
    base: u64,
    before: u64,
) -> Result<Option<String>, ApplyError> {
    follow(conn, name, base, before, name_event_prefix)
}

/// Follows a name through the history kept under `prefix_of(name)`: from the first event after
/// `base` (a rename moves on to the new name, from that event on; a drop ends it), until no
/// event before `before` is left. `None`: dropped.
fn follow(
    conn: &Connection,
    name: &str,
    base: u64,
    before: u64,
    prefix_of: impl Fn(&str) -> String,
) -> Result<Option<String>, ApplyError> {
    let mut current = name.to_string();
    let mut after = base;
    // Each step moves to a later sequence, so this ends; the bound is a guard only.
    for _ in 0..1024 {
        let prefix = prefix_of(&current);
        let next: Option<(String, Option<String>)> = conn
            .prepare_cached(
                "SELECT key, value FROM _ha_meta WHERE key > ?1 AND key < ?2 ORDER BY key LIMIT 1",
            )?
            .query_row(
                params![format!("{prefix}{after:020}"), format!("{prefix}~")],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((key, to)) = next else {
            break;
        };
        let seq: u64 = key[prefix.len()..].parse().unwrap_or(u64::MAX);
        if seq >= before {
            break;
        }
        match to {
            Some(to) => {
                current = to;
                after = seq;
            }
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// Table `name` exists (again): forget that it was dropped.
pub fn table_created(conn: &Connection, name: &str) -> Result<(), ApplyError> {
    remove(conn, &dropped_key(name))
}

/// Whether table `name` was dropped by replicated DDL (and not created again since).
pub fn was_dropped(conn: &Connection, name: &str) -> Result<bool, ApplyError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM _ha_meta WHERE key = ?1")?
        .query_row([dropped_key(name)], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The `_ha_meta` key that says table `name` was renamed (value: its new name).
fn renamed_table_key(name: &str) -> String {
    format!("renamed_table:{name}")
}

/// The `_ha_meta` key prefix of `table`'s column renames (`…<old column>` → new column).
fn renamed_column_prefix(table: &str) -> String {
    format!("renamed_column:{table}:")
}

/// Table `from` was renamed to `to` by DDL: its rows keep their versions under the new name,
/// its column renames move with it, and changes written concurrently under the old name (by
/// nodes that had not seen the rename) are applied to `to` (see `renamed_to`).
pub fn table_renamed(conn: &Connection, from: &str, to: &str, seq: u64) -> Result<(), ApplyError> {
    name_unbound(conn, from, seq, Some(to))?;
    conn.prepare_cached("UPDATE OR REPLACE _ha_versions SET tbl = ?2 WHERE tbl = ?1")?
        .execute([from, to])?;
    // Column renames (and column history) of an earlier table of the new name are history; this
    // table's follow it.
    forget_column_renames(conn, to)?;
    for (old_prefix, new_prefix) in [
        (renamed_column_prefix(from), renamed_column_prefix(to)),
        (column_events_prefix(from), column_events_prefix(to)),
    ] {
        conn.prepare_cached(
            "UPDATE OR REPLACE _ha_meta SET key = ?2 || substr(key, length(?1) + 1)
             WHERE substr(key, 1, length(?1)) = ?1",
        )?
        .execute([&old_prefix, &new_prefix])?;
    }
    set_text(conn, &renamed_table_key(from), to)?;
    // A table of the new name exists now: it was not dropped, nor renamed away.
    remove(conn, &renamed_table_key(to))?;
    table_created(conn, to)
}

fn forget_column_renames(conn: &Connection, table: &str) -> Result<(), ApplyError> {
    for prefix in [renamed_column_prefix(table), column_events_prefix(table)] {
        conn.prepare_cached("DELETE FROM _ha_meta WHERE substr(key, 1, length(?1)) = ?1")?
            .execute([prefix])?;
    }
    Ok(())
}

/// The table that a change for the missing table `name` belongs to now: follows renames
/// (`a` → `b` → `c`) to a name that is not renamed further; `None` when `name` was not renamed.
pub fn renamed_to(conn: &Connection, name: &str) -> Result<Option<String>, ApplyError> {
    let mut current = name.to_string();
    let mut found = None;
    // Bounded: a chain longer than this is a cycle (`a` → `b` → `a` leaves no marker on `a`).
    for _ in 0..64 {
        match text_of(conn, &renamed_table_key(&current))? {
            Some(n) => {
                current = n;
                found = Some(current.clone());
            }
            None => break,
        }
    }
    Ok(found)
}

/// Column `from` of `table` was renamed to `to`: images written concurrently under the old
/// name are applied to the new one, and row bookkeeping (`lacks`) follows.
pub fn column_renamed(
    conn: &Connection,
    table: &str,
    from: &str,
    to: &str,
    seq: u64,
) -> Result<(), ApplyError> {
    column_unbound(conn, table, from, seq, Some(to))?;
    let prefix = renamed_column_prefix(table);
    // Earlier renames to `from` now lead to `to`.
    conn.prepare_cached(
        "UPDATE _ha_meta SET value = ?3 WHERE substr(key, 1, length(?1)) = ?1 AND value = ?2",
    )?
    .execute([&prefix, from, to])?;
    set_text(conn, &format!("{prefix}{from}"), to)?;
    remove(conn, &format!("{prefix}{to}"))?;
    let sep = LACKS_SEP.to_string();
    conn.prepare_cached(
        "UPDATE _ha_versions
         SET lacks = trim(replace(?4 || lacks || ?4, ?4 || ?2 || ?4, ?4 || ?3 || ?4), ?4)
         WHERE tbl = ?1 AND lacks IS NOT NULL",
    )?
    .execute(params![table, from, to, sep])?;
    Ok(())
}

/// Column `column` of `table` was dropped at `seq` (see `column_as_seen`).
pub fn column_dropped(
    conn: &Connection,
    table: &str,
    column: &str,
    seq: u64,
) -> Result<(), ApplyError> {
    column_unbound(conn, table, column, seq, None)
}

/// The `_ha_meta` key prefix of what happened to column `column` of `table` (lengths first, as
/// for `name_event_prefix`); the zero-padded sequence follows.
fn column_event_prefix(table: &str, column: &str) -> String {
    format!("{}{}:{column}:", column_events_prefix(table), column.len())
}

/// The `_ha_meta` key prefix of every column event of `table`.
fn column_events_prefix(table: &str) -> String {
    format!("column_event:{}:{table}:", table.len())
}

/// Column `column` of `table` stopped being called so at `seq`: renamed to `to`, or dropped.
fn column_unbound(
    conn: &Connection,
    table: &str,
    column: &str,
    seq: u64,
    to: Option<&str>,
) -> Result<(), ApplyError> {
    record_unbound(conn, &column_event_prefix(table, column), seq, to)
}

/// What became of column `column` of `table` (the table as it is called now) for a node whose
/// view of the names was `base`, by the column drops and renames after `base` and before
/// `before` (as `table_as_seen`): `Some(column)`, or `None` when it was dropped. Renames of the
/// table itself carry its column history with them (`table_renamed`).
pub fn column_as_seen(
    conn: &Connection,
    table: &str,
    column: &str,
    base: u64,
    before: u64,
) -> Result<Option<String>, ApplyError> {
    follow(conn, column, base, before, |c| {
        column_event_prefix(table, c)
    })
}

/// The current name of column `column` of `table` if it was renamed, else `None`.
pub fn renamed_column(
    conn: &Connection,
    table: &str,
    column: &str,
) -> Result<Option<String>, ApplyError> {
    text_of(conn, &format!("{}{column}", renamed_column_prefix(table)))
}

/// The `_ha_meta` key of the node's position in its stream.
pub const APPLIED_SEQ: &str = "applied_seq";

/// The `_ha_meta` key under which the `ha-sync` extension keeps its position for `subject`
/// (`applied_seq:<subject>`): it may follow several subjects into one file.
pub fn subject_seq_key(subject: &str) -> String {
    format!("{APPLIED_SEQ}:{subject}")
}

pub fn applied_seq(conn: &Connection) -> Result<u64, ApplyError> {
    seq_of(conn, APPLIED_SEQ)
}

pub fn set_applied_seq(conn: &Connection, seq: u64) -> Result<(), ApplyError> {
    set_seq_of(conn, APPLIED_SEQ, seq)
}

/// Moves the applied sequence forward to `seq` (never back: the writer's own commits move it
/// too, see the node's `publish`).
pub fn advance_applied_seq(conn: &Connection, seq: u64) -> Result<(), ApplyError> {
    conn.prepare_cached(
        "INSERT INTO _ha_meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
    )?
    .execute(params![APPLIED_SEQ, seq as i64])?;
    Ok(())
}

/// The stream sequence stored under `key` in `_ha_meta` (0 when none).
pub fn seq_of(conn: &Connection, key: &str) -> Result<u64, ApplyError> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT value FROM _ha_meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

pub fn set_seq_of(conn: &Connection, key: &str, seq: u64) -> Result<(), ApplyError> {
    set_value(conn, key, seq as i64)
}

/// The text stored under `key` in `_ha_meta`, if any.
pub fn text_of(conn: &Connection, key: &str) -> Result<Option<String>, ApplyError> {
    Ok(conn
        .prepare_cached("SELECT value FROM _ha_meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

/// Stores `value` under `key` in `_ha_meta`.
pub fn set_text(conn: &Connection, key: &str, value: &str) -> Result<(), ApplyError> {
    set_value(conn, key, value)
}

fn set_value(conn: &Connection, key: &str, value: impl rusqlite::ToSql) -> Result<(), ApplyError> {
    conn.prepare_cached(
        "INSERT INTO _ha_meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// Forgets `key` in `_ha_meta`.
pub fn remove(conn: &Connection, key: &str) -> Result<(), ApplyError> {
    conn.prepare_cached("DELETE FROM _ha_meta WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

/// Records that transaction `txid` (stream sequence `seq`, origin time `ts_ns`) is in this
/// database.
pub fn record_tx(conn: &Connection, txid: &str, seq: u64, ts_ns: i64) -> Result<(), ApplyError> {
    conn.prepare_cached("INSERT OR IGNORE INTO _ha_txids(txid, seq, ts_ns) VALUES (?1, ?2, ?3)")?
        .execute(params![txid, seq as i64, ts_ns])?;
    Ok(())
}

/// Records transaction `txid` as in this database unless it already is: true when it was not
/// (one statement for `tx_seen` and `record_tx`; inside the caller's savepoint, so an apply that
/// fails afterwards takes the record back with it).
pub fn claim_tx(conn: &Connection, txid: &str, seq: u64, ts_ns: i64) -> Result<bool, ApplyError> {
    let inserted = conn
        .prepare_cached("INSERT OR IGNORE INTO _ha_txids(txid, seq, ts_ns) VALUES (?1, ?2, ?3)")?
        .execute(params![txid, seq as i64, ts_ns])?;
    Ok(inserted == 1)
}

/// How many identities one statement of `claim_txs` records.
const CLAIM_CHUNK: usize = 32;

/// `claim_tx` for many transactions (identity, stream sequence, origin time), `CLAIM_CHUNK` to a
/// statement: the identities that were not here yet (an identity given twice counts once).
pub fn claim_txs(
    conn: &Connection,
    txs: &[(String, u64, i64)],
) -> Result<HashSet<String>, ApplyError> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let rows: Vec<String> = (0..CLAIM_CHUNK)
            .map(|i| format!("(?{}, ?{}, ?{})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        format!(
            "INSERT OR IGNORE INTO _ha_txids(txid, seq, ts_ns) VALUES {} RETURNING txid",
            rows.join(", ")
        )
    });
    let mut new = HashSet::with_capacity(txs.len());
    let mut chunks = txs.chunks_exact(CLAIM_CHUNK);
    for chunk in &mut chunks {
        let mut stmt = conn.prepare_cached(sql)?;
        for (i, (txid, seq, ts_ns)) in chunk.iter().enumerate() {
            stmt.raw_bind_parameter(3 * i + 1, txid)?;
            stmt.raw_bind_parameter(3 * i + 2, *seq as i64)?;
            stmt.raw_bind_parameter(3 * i + 3, ts_ns)?;
        }
        let mut rows = stmt.raw_query();
        while let Some(r) = rows.next()? {
            new.insert(r.get(0)?);
        }
    }
    for (txid, seq, ts_ns) in chunks.remainder() {
        if claim_tx(conn, txid, *seq, *ts_ns)? {
            new.insert(txid.clone());
        }
    }
    Ok(new)
}

/// Whether transaction `txid` is already in this database.
pub fn tx_seen(conn: &Connection, txid: &str) -> Result<bool, ApplyError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM _ha_txids WHERE txid = ?1")?
        .query_row([txid], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Forgets transactions whose origin time is before `before_ns` (older than anything the
/// stream can still deliver).
pub fn prune_txids(conn: &Connection, before_ns: i64) -> Result<usize, ApplyError> {
    Ok(conn
        .prepare_cached("DELETE FROM _ha_txids WHERE ts_ns < ?1")?
        .execute([before_ns])?)
}

pub fn quarantine(
    conn: &Connection,
    seq: u64,
    error: &str,
    attempts: u32,
    payload: &[u8],
) -> Result<(), ApplyError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    conn.prepare_cached(
        "INSERT OR REPLACE INTO _ha_quarantine(seq, error, attempts, payload, quarantined_at_ns)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![seq as i64, error, attempts, payload, now])?;
    Ok(())
}

pub fn quarantine_count(conn: &Connection) -> Result<u64, ApplyError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM _ha_quarantine", [], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_applied_seq_and_local_marks_round_trip() {
        let c = Connection::open_in_memory().unwrap();
        ensure(&c).unwrap();
        ensure(&c).unwrap();
        let k = row_key(Some(&[&Value::Integer(5), &Value::Text("a".into())]), 0);
        assert_eq!(version(&c, "t", &k).unwrap(), 0);
        set_version(&c, "t", &k, 7, false).unwrap();
        set_version(&c, "t", &k, 9, true).unwrap();
        assert_eq!(version(&c, "t", &k).unwrap(), 9);
        assert_eq!(applied_seq(&c).unwrap(), 0);
        set_applied_seq(&c, 42).unwrap();
        assert_eq!(applied_seq(&c).unwrap(), 42);
        let k = subject_seq_key("ha_replication.ha_db");
        assert_eq!(seq_of(&c, &k).unwrap(), 0);
        set_seq_of(&c, &k, 7).unwrap();
        assert_eq!((seq_of(&c, &k).unwrap(), applied_seq(&c).unwrap()), (7, 42));
        assert!(!tx_seen(&c, "n1/1/5").unwrap());
        record_tx(&c, "n1/1/5", 3, 5).unwrap();
        assert!(tx_seen(&c, "n1/1/5").unwrap());
        assert_eq!(prune_txids(&c, 6).unwrap(), 1);
        assert!(!tx_seen(&c, "n1/1/5").unwrap());
    }

    #[test]
    fn a_version_is_taken_only_when_newer_and_by_an_insert_only_when_there_is_none() {
        let c = Connection::open_in_memory().unwrap();
        ensure(&c).unwrap();
        let k = row_key(None, 1);
        let state = |c: &Connection| version_state(c, "t", &k).unwrap();
        // A key without a version: taken by both forms.
        assert!(take_version(&c, "t", &k, 5, Some("c"), true).unwrap());
        assert_eq!(state(&c), (5, false));
        assert_eq!(lacks(&c, "t", &k).unwrap(), ["c"]);
        // An insert never takes a key that has one, even an older one.
        assert!(!take_version(&c, "t", &k, 9, None, true).unwrap());
        assert_eq!(state(&c), (5, false));
        // An update takes a newer one only, and a tombstone comes back to life.
        assert!(!take_version(&c, "t", &k, 5, None, false).unwrap());
        assert!(!take_version(&c, "t", &k, 4, None, false).unwrap());
        set_version(&c, "t", &k, 6, true).unwrap();
        assert!(take_version(&c, "t", &k, 7, None, false).unwrap());
        assert_eq!(state(&c), (7, false));
        assert!(lacks(&c, "t", &k).unwrap().is_empty());
    }

    #[test]
    fn many_identities_are_claimed_at_once_each_once() {
        let c = Connection::open_in_memory().unwrap();
        ensure(&c).unwrap();
        record_tx(&c, "t3", 3, 3).unwrap();
        record_tx(&c, "t40", 40, 40).unwrap();
        // Two full statements and a remainder; t5 twice in the first, t3 and t40 already here.
        let mut txs: Vec<(String, u64, i64)> =
            (0..70).map(|i| (format!("t{i}"), i, i as i64)).collect();
        txs[10].0 = "t5".into();
        let new = claim_txs(&c, &txs).unwrap();
        let mut want: HashSet<String> = (0..70).map(|i| format!("t{i}")).collect();
        for gone in ["t3", "t40", "t10"] {
            want.remove(gone);
        }
        assert_eq!(new, want);
        for i in 0..70 {
            assert_eq!(tx_seen(&c, &format!("t{i}")).unwrap(), i != 10, "t{i}");
        }
        assert!(
            claim_txs(&c, &txs).unwrap().is_empty(),
            "a second claim finds them all"
        );
    }

    #[test]
    fn renames_there_and_back_keep_one_answer_per_name() {
        let c = Connection::open_in_memory().unwrap();
        ensure(&c).unwrap();
        let k = row_key(None, 1);
        set_version(&c, "a", &k, 5, false).unwrap();
        column_renamed(&c, "a", "v", "w", 0).unwrap();
        table_renamed(&c, "a", "b", 0).unwrap();
        assert_eq!(renamed_to(&c, "a").unwrap().as_deref(), Some("b"));
        assert_eq!(renamed_column(&c, "b", "v").unwrap().as_deref(), Some("w"));
        assert_eq!(version(&c, "b", &k).unwrap(), 5);
        // And back, twice: no key is written twice, the answers follow the last rename.
        for _ in 0..2 {
            column_renamed(&c, "b", "w", "v", 0).unwrap();
            assert_eq!(renamed_column(&c, "b", "v").unwrap(), None);
            assert_eq!(renamed_column(&c, "b", "w").unwrap().as_deref(), Some("v"));
            column_renamed(&c, "b", "v", "w", 0).unwrap();
            assert_eq!(renamed_column(&c, "b", "v").unwrap().as_deref(), Some("w"));
            table_renamed(&c, "b", "a", 0).unwrap();
            assert_eq!(renamed_to(&c, "a").unwrap(), None);
            assert_eq!(renamed_to(&c, "b").unwrap().as_deref(), Some("a"));
            table_renamed(&c, "a", "b", 0).unwrap();
            assert_eq!(renamed_to(&c, "a").unwrap().as_deref(), Some("b"));
            assert_eq!(version(&c, "b", &k).unwrap(), 5);
        }
        table_dropped(&c, "b", 9).unwrap();
        assert_eq!(renamed_column(&c, "b", "v").unwrap(), None);
        // A table renamed onto the name of one that had column renames of its own.
        column_renamed(&c, "x", "v", "w", 0).unwrap();
        column_renamed(&c, "y", "v", "u", 0).unwrap();
        table_renamed(&c, "y", "x", 0).unwrap();
        assert_eq!(renamed_column(&c, "x", "v").unwrap().as_deref(), Some("u"));
    }

    #[test]
    fn a_name_is_resolved_by_the_drops_and_renames_after_the_writers_view() {
        let c = Connection::open_in_memory().unwrap();
        ensure(&c).unwrap();
        // t renamed to t2 at 10, t2 to t3 at 20; a new t dropped at 30; u dropped at 15.
        table_renamed(&c, "t", "t2", 10).unwrap();
        table_renamed(&c, "t2", "t3", 20).unwrap();
        table_dropped(&c, "t", 30).unwrap();
        table_dropped(&c, "u", 15).unwrap();
        // A table whose name contains the separator is another name.
        table_dropped(&c, "t:00000000000000000011", 12).unwrap();
        let seen =
            |name: &str, base: u64, before: u64| table_as_seen(&c, name, base, before).unwrap();
        assert_eq!(seen("t", 9, 100).as_deref(), Some("t3"));
        assert_eq!(seen("t", 9, 15).as_deref(), Some("t2"));
        assert_eq!(
            seen("t", 9, 10).as_deref(),
            Some("t"),
            "its own set's DDL was seen"
        );
        assert_eq!(seen("t", 10, 100), None, "the later t was dropped at 30");
        assert_eq!(seen("t", 30, 100).as_deref(), Some("t"));
        assert_eq!(seen("u", 14, 100), None);
        assert_eq!(seen("u", 15, 100).as_deref(), Some("u"));
        assert_eq!(seen("v", 0, 100).as_deref(), Some("v"));
        assert_eq!(last_name_event(&c).unwrap(), 30);
        assert_eq!(name_view(&c, applied_seq(&c).unwrap()).unwrap(), 30);
        set_applied_seq(&c, 40).unwrap();
        assert_eq!(name_view(&c, applied_seq(&c).unwrap()).unwrap(), 40);
        // Columns: p.a renamed to b at 50 (a new a may follow), p.b dropped at 60, and the
        // table renamed to q at 70 takes its column history along.
        column_renamed(&c, "p", "a", "b", 50).unwrap();
        column_dropped(&c, "p", "b", 60).unwrap();
        table_renamed(&c, "p", "q", 70).unwrap();
        let col = |t: &str, name: &str, base: u64| column_as_seen(&c, t, name, base, 100).unwrap();
        assert_eq!(
            col("q", "a", 49).as_deref(),
            None,
            "renamed to b, then dropped"
        );
        assert_eq!(col("q", "a", 50).as_deref(), Some("a"));
        assert_eq!(col("q", "b", 55), None);
        assert_eq!(col("q", "c", 0).as_deref(), Some("c"));
        assert_eq!(
            col("p", "a", 49).as_deref(),
            Some("a"),
            "p's history moved to q"
        );
        assert_eq!(last_name_event(&c).unwrap(), 70);
    }

    #[test]
    fn keys_distinguish_types_and_boundaries() {
        let a = row_key(Some(&[&Value::Integer(1)]), 0);
        let b = row_key(Some(&[&Value::Text("1".into())]), 0);
        let c = row_key(
            Some(&[&Value::Text("ab".into()), &Value::Text("c".into())]),
            0,
        );
        let d = row_key(
            Some(&[&Value::Text("a".into()), &Value::Text("bc".into())]),
            0,
        );
        assert_ne!(a, b);
        assert_ne!(c, d);
        assert_ne!(row_key(None, 1), row_key(None, 2));
    }
}
