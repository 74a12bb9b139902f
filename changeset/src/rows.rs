//! Owns writing one winning row image to its table, as the effect it is: an INSERT replaces
//! the row of its key, an UPDATE sets the columns it carries (`UPDATE OR ABORT`, so a
//! constraint declared `ON CONFLICT REPLACE` never deletes rows behind the version table's
//! back); a UNIQUE conflict with rows of other keys is settled here by last writer wins.
//! The SQL text of these statements is built once per table description (`RowSql`), not per row.
//! Must not decide whether the image wins over its own key's version: `apply` does.
//! Invariant: every row deleted here gets a tombstone, so the same rows go on every node.

use rusqlite::Connection;

use crate::conflict::{self, KeyVals};
use crate::row_sql::cached;
use crate::schema::{TableInfo, quote_ident};
use crate::{ApplyError, Change, Operation, meta};

/// `(table, row key)` of the rows the change set being applied has written.
pub(crate) type Written = std::collections::HashSet<(String, Vec<u8>)>;

/// Whether a change at `seq` may overwrite a row whose version is `version`: it is older, or
/// it is this very change set that wrote it (a row changed twice in one transaction).
pub(crate) fn newer(table: &str, key: &[u8], version: u64, seq: u64, written: &Written) -> bool {
    version < seq || (version == seq && written.contains(&(table.to_string(), key.to_vec())))
}

/// How often one row may meet UNIQUE conflicts before the apply gives up (one per index).
const MAX_CONFLICT_ROUNDS: usize = 16;

/// Writes a winning row image; a UNIQUE conflict with rows of other keys is settled by last
/// writer wins: an older row is deleted (tombstone at `seq`), or, when a row there is newer,
/// the incoming row is the one that goes. Returns whether the incoming row stays.
pub(crate) fn write_row(
    conn: &Connection,
    info: &TableInfo,
    seq: u64,
    row: &Change,
    key: &KeyVals,
    written: &mut Written,
    conflicts: &mut u64,
) -> Result<bool, ApplyError> {
    let table = &row.table;
    if row.operation == Operation::Insert && !key.has_null() {
        // Usually no row has the key yet: the INSERT alone will do. When one has (or another
        // constraint stands in the way), the INSERT changed nothing and the way below runs.
        // (A NULL in the key would match a row by `IS` but never conflict with it.)
        match insert_row(conn, info, row) {
            Ok(()) => return Ok(true),
            Err(e) if is_constraint(&e) => {}
            Err(e) => return Err(e),
        }
    }
    for round in 0.. {
        let result = if row.operation == Operation::Insert {
            delete_key(conn, info, key).and_then(|_| insert_row(conn, info, row))
        } else {
            update_row(conn, info, row, key)
        };
        let e = match result {
            Ok(()) => return Ok(true),
            Err(e) if round < MAX_CONFLICT_ROUNDS && conflict::is_unique_violation(&e) => e,
            Err(e) => return Err(e),
        };
        let others = conflict::find(conn, info, row, key)?;
        if others.is_empty() {
            return Err(e);
        }
        for other in others {
            let other_key = other.version_key();
            let version = meta::version(conn, table, &other_key)?;
            *conflicts += 1;
            if newer(table, &other_key, version, seq, written) {
                tracing::warn!(
                    table,
                    seq,
                    kept = %key,
                    deleted = %other,
                    deleted_version = version,
                    "UNIQUE conflict between rows of different keys: the newer row stays, the older is deleted"
                );
                delete_key(conn, info, &other)?;
                meta::set_version(conn, table, &other_key, seq, true)?;
                written.insert((table.clone(), other_key));
            } else {
                tracing::warn!(
                    table,
                    seq,
                    kept = %other,
                    kept_version = version,
                    deleted = %key,
                    "UNIQUE conflict between rows of different keys: the newer row stays, the older (incoming) is deleted"
                );
                delete_key(conn, info, key)?;
                return Ok(false);
            }
        }
    }
    unreachable!("the loop returns")
}

/// The table's written columns a row image does not carry (it was written under an older
/// schema), joined for `_ha_versions.lacks`; `None` when it carries them all.
pub(crate) fn lacking(info: &TableInfo, row: &Change) -> Option<String> {
    let missing: Vec<&str> = info
        .columns
        .iter()
        .filter(|c| c.is_written() && !row.columns.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(missing.join(&meta::LACKS_SEP.to_string()))
    }
}

/// A superseded image still sets the columns the winning image lacked (it was written under
/// an older schema, before a column was added): the same values end on every node whichever
/// of the two a node wrote first.
pub(crate) fn fill_lacking(
    conn: &Connection,
    info: &TableInfo,
    row: &Change,
    key: &KeyVals,
    version_key: &[u8],
) -> Result<(), ApplyError> {
    let lacks = meta::lacks(conn, &row.table, version_key)?;
    if lacks.is_empty() {
        return Ok(());
    }
    let pk = info.pk_columns();
    let cols: Vec<usize> = row
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| lacks.contains(c) && !pk.contains(&c.as_str()))
        .map(|(i, _)| i)
        .collect();
    set_columns(conn, info, &row.table, row, &cols, key).map(|_| ())
}

/// `UPDATE OR ABORT … SET` the columns `cols` (indexes into the image) of the row at `key`;
/// returns how many rows it changed.
fn set_columns(
    conn: &Connection,
    info: &TableInfo,
    table: &str,
    row: &Change,
    cols: &[usize],
    key: &KeyVals,
) -> Result<usize, ApplyError> {
    if cols.is_empty() {
        return Ok(0);
    }
    let names = cols
        .iter()
        .map(|&i| row.columns[i].as_str())
        .chain(key.names());
    let sql = cached(&info.sql.update, names, || {
        let sets: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} = ?{}", quote_ident(&row.columns[i]), n + 1))
            .collect();
        format!(
            "UPDATE OR ABORT main.{} SET {} WHERE {}",
            quote_ident(table),
            sets.join(", "),
            key.condition(cols.len() + 1)
        )
    });
    let mut stmt = conn.prepare_cached(&sql)?;
    for (n, &i) in cols.iter().enumerate() {
        let v = row.new_values.get(i).ok_or_else(|| values_mismatch(row))?;
        stmt.raw_bind_parameter(n + 1, v)?;
    }
    key.bind(&mut stmt, cols.len() + 1)?;
    stmt.raw_execute()
        .map_err(|source| ApplyError::Run { source })
}

fn values_mismatch(row: &Change) -> ApplyError {
    ApplyError::Prepare {
        message: format!(
            "change for {:?}: {} values for {} columns",
            row.table,
            row.new_values.len(),
            row.columns.len()
        ),
    }
}

/// An UPDATE image sets the non-key columns it carries on the row of its key (the others keep
/// their value); when that row is not here, it is inserted.
fn update_row(
    conn: &Connection,
    info: &TableInfo,
    row: &Change,
    key: &KeyVals,
) -> Result<(), ApplyError> {
    let pk = info.pk_columns();
    let cols: Vec<usize> = row
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !pk.contains(&c.as_str()))
        .map(|(i, _)| i)
        .collect();
    let changed = if cols.is_empty() {
        let sql = format!(
            "SELECT count(*) FROM main.{} WHERE {}",
            quote_ident(&row.table),
            key.condition(1)
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        key.bind(&mut stmt, 1)?;
        let mut rows = stmt.raw_query();
        match rows.next()? {
            Some(r) => r.get::<_, i64>(0)? as usize,
            None => 0,
        }
    } else {
        set_columns(conn, info, &row.table, row, &cols, key)?
    };
    if changed == 0 {
        insert_row(conn, info, row)?;
    }
    Ok(())
}

/// `INSERT OR ABORT` of the image (a constraint declared `ON CONFLICT REPLACE` does not delete
/// rows behind the version table's back: the conflict comes back to `write_row`).
fn insert_row(conn: &Connection, info: &TableInfo, row: &Change) -> Result<(), ApplyError> {
    let use_rowid = info.pk_columns().is_empty();
    let sql = cached(
        &info.sql.insert,
        row.columns.iter().map(String::as_str),
        || {
            let mut names: Vec<String> = row.columns.iter().map(|c| quote_ident(c)).collect();
            if use_rowid {
                names.insert(0, "rowid".into());
            }
            let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            format!(
                "INSERT OR ABORT INTO main.{}({}) VALUES ({})",
                quote_ident(&row.table),
                names.join(", "),
                placeholders.join(", "),
            )
        },
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut i = 1;
    if use_rowid {
        stmt.raw_bind_parameter(i, row.new_rowid)?;
        i += 1;
    }
    if row.new_values.len() != row.columns.len() {
        return Err(values_mismatch(row));
    }
    for v in &row.new_values {
        stmt.raw_bind_parameter(i, v)?;
        i += 1;
    }
    stmt.raw_execute()
        .map_err(|source| ApplyError::Run { source })?;
    Ok(())
}

/// Deletes the row at `key` of table `info`.
pub(crate) fn delete_key(
    conn: &Connection,
    info: &TableInfo,
    key: &KeyVals,
) -> Result<(), ApplyError> {
    let sql = cached(&info.sql.delete, key.names(), || {
        format!(
            "DELETE FROM main.{} WHERE {}",
            quote_ident(&info.name),
            key.condition(1)
        )
    });
    let mut stmt = conn.prepare_cached(&sql)?;
    key.bind(&mut stmt, 1)?;
    stmt.raw_execute()
        .map_err(|source| ApplyError::Run { source })?;
    Ok(())
}

fn is_constraint(e: &ApplyError) -> bool {
    matches!(
        e.sqlite().and_then(rusqlite::Error::sqlite_error_code),
        Some(rusqlite::ErrorCode::ConstraintViolation)
    )
}
