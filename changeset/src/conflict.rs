//! Owns finding the rows that stand in the way of a replicated row by a constraint other than
//! its key: UNIQUE columns (and UNIQUE … ON CONFLICT REPLACE, which apply never lets SQLite
//! resolve by itself), so that `apply` can settle the conflict by last writer wins.
//! Must not decide who wins or delete anything: `apply` does, with the versions in `meta`.
//! Invariant: it names only rows with a *different* key whose UNIQUE columns hold the values
//! the incoming image carries, compared with the index's own collation.

use rusqlite::Connection;

use crate::schema::{TableInfo, quote_ident};
use crate::{ApplyError, Change, Value, meta};

/// How one row is found: its primary-key values, or its rowid when the table has none.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyVals {
    Rowid(i64),
    Pk(Vec<(String, Value)>),
}

impl KeyVals {
    /// The `_ha_versions` key of this row.
    pub fn version_key(&self) -> Vec<u8> {
        match self {
            KeyVals::Rowid(r) => meta::row_key(None, *r),
            KeyVals::Pk(vals) => {
                let v: Vec<&Value> = vals.iter().map(|(_, v)| v).collect();
                meta::row_key(Some(&v), 0)
            }
        }
    }

    /// `cond` over the key, with parameters numbered from `first`.
    pub fn condition(&self, first: usize) -> String {
        match self {
            KeyVals::Rowid(_) => format!("rowid = ?{first}"),
            KeyVals::Pk(vals) => vals
                .iter()
                .enumerate()
                .map(|(i, (n, _))| format!("{} IS ?{}", quote_ident(n), first + i))
                .collect::<Vec<_>>()
                .join(" AND "),
        }
    }

    /// The key's column names (none for a rowid), as `condition` names them.
    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        let vals: &[(String, Value)] = match self {
            KeyVals::Rowid(_) => &[],
            KeyVals::Pk(vals) => vals,
        };
        vals.iter().map(|(n, _)| n.as_str())
    }

    /// Whether a value of the key is NULL (such a key matches by `IS`, never by a constraint).
    pub fn has_null(&self) -> bool {
        matches!(self, KeyVals::Pk(vals) if vals.iter().any(|(_, v)| matches!(v, Value::Null)))
    }

    /// Binds the key's values from parameter `first` on.
    pub fn bind(&self, stmt: &mut rusqlite::Statement<'_>, first: usize) -> Result<(), ApplyError> {
        match self {
            KeyVals::Rowid(r) => stmt.raw_bind_parameter(first, r)?,
            KeyVals::Pk(vals) => {
                for (i, (_, v)) in vals.iter().enumerate() {
                    stmt.raw_bind_parameter(first + i, v)?;
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for KeyVals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyVals::Rowid(r) => write!(f, "rowid={r}"),
            KeyVals::Pk(vals) => {
                let parts: Vec<String> = vals.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
                write!(f, "{}", parts.join(","))
            }
        }
    }
}

/// Whether `e` is a UNIQUE (or PRIMARY KEY) constraint failure.
pub fn is_unique_violation(e: &ApplyError) -> bool {
    matches!(
        e.sqlite(),
        Some(rusqlite::Error::SqliteFailure(f, _))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// One UNIQUE index of a table that `find` can search: plain columns, not partial.
struct UniqueIndex {
    /// (column, collation) in index order.
    columns: Vec<(String, String)>,
}

fn unique_indexes(conn: &Connection, table: &str) -> Result<Vec<UniqueIndex>, ApplyError> {
    let names: Vec<String> = conn
        .prepare_cached(
            "SELECT name FROM pragma_index_list(?1, 'main') \
             WHERE \"unique\" = 1 AND origin <> 'pk' AND partial = 0",
        )?
        .query_map([table], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    'index: for name in names {
        let mut columns = Vec::new();
        let mut stmt = conn.prepare_cached(
            "SELECT cid, name, coll FROM pragma_index_xinfo(?1, 'main') WHERE key = 1 ORDER BY seqno",
        )?;
        let rows: Vec<(i64, Option<String>, String)> = stmt
            .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (cid, col, coll) in rows {
            match col {
                Some(col) if cid >= 0 => columns.push((col, coll)),
                // An expression index: the values it compares are not in the image.
                _ => continue 'index,
            }
        }
        out.push(UniqueIndex { columns });
    }
    Ok(out)
}

/// The rows other than `own` that hold, in some UNIQUE index of the table, the values of the
/// new image of `row`.
pub fn find(
    conn: &Connection,
    info: &TableInfo,
    row: &Change,
    own: &KeyVals,
) -> Result<Vec<KeyVals>, ApplyError> {
    let pk: Vec<String> = info.pk_columns().into_iter().map(str::to_string).collect();
    let mut select: Vec<String> = pk.iter().map(|c| quote_ident(c)).collect();
    if pk.is_empty() {
        select.push("rowid".into());
    }
    let mut out: Vec<KeyVals> = Vec::new();
    for idx in unique_indexes(conn, &info.name)? {
        let mut conds = Vec::new();
        let mut vals = Vec::new();
        for (i, (col, coll)) in idx.columns.iter().enumerate() {
            let Some(v) = row
                .columns
                .iter()
                .position(|c| c == col)
                .and_then(|p| row.new_values.get(p))
            else {
                conds.clear();
                break;
            };
            if *v == Value::Null {
                // NULLs never conflict in a UNIQUE index.
                conds.clear();
                break;
            }
            conds.push(format!(
                "{} = ?{} COLLATE {}",
                quote_ident(col),
                i + 1,
                quote_ident(coll)
            ));
            vals.push(v);
        }
        if conds.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT {} FROM main.{} WHERE {}",
            select.join(", "),
            quote_ident(&info.name),
            conds.join(" AND ")
        );
        let mut stmt = conn.prepare(&sql)?;
        for (i, v) in vals.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, *v)?;
        }
        let mut rows = stmt.raw_query();
        while let Some(r) = rows.next()? {
            let k = if pk.is_empty() {
                KeyVals::Rowid(r.get(0)?)
            } else {
                let mut vals = Vec::with_capacity(pk.len());
                for (i, n) in pk.iter().enumerate() {
                    vals.push((n.clone(), Value::from_ref(r.get_ref(i)?)));
                }
                KeyVals::Pk(vals)
            };
            if k != *own && !out.contains(&k) {
                out.push(k);
            }
        }
    }
    Ok(out)
}
