//! Owns the consistency checksum of a database: a SHA-256 per user table (its columns, then its
//! rows in key order) and one over the schema, with the applied stream sequence they belong to.
//! Two nodes at the same applied sequence must give the same answer; `ha check` compares them.
//! Must not write: it runs in one read transaction on a read connection, so writes go on.
//! Invariant: the bytes hashed depend only on the SQL values (type-tagged, integers exact,
//! reals by their bits), never on rowids of tables that have a primary key or on page layout.

use std::collections::BTreeMap;

use ring::digest::{Context, SHA256};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::Serialize;

use super::DbError;
use crate::changeset::meta;
use crate::changeset::schema::quote_ident;

/// One table's checksum.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableSum {
    pub rows: u64,
    pub sha256: String,
}

/// The checksum of a whole database at `applied_seq`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Checksum {
    pub applied_seq: u64,
    /// Over every user object's type, name, table and SQL text (tables, indexes, triggers,
    /// views), in name order.
    pub schema_sha256: String,
    pub tables: BTreeMap<String, TableSum>,
}

/// Computes the checksum in one read transaction (so the applied sequence and the rows agree).
pub fn compute(conn: &Connection) -> Result<Checksum, DbError> {
    conn.execute_batch("BEGIN")?;
    let out = compute_in_tx(conn);
    let _ = conn.execute_batch("COMMIT");
    out
}

fn is_user(name: &str) -> bool {
    !name.starts_with("sqlite_") && !name.starts_with("_ha_")
}

fn compute_in_tx(conn: &Connection) -> Result<Checksum, DbError> {
    let applied_seq = meta::applied_seq(conn).unwrap_or(0);
    let mut schema = Context::new(&SHA256);
    let mut tables = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT type, name, tbl_name, coalesce(sql, '') FROM main.sqlite_schema ORDER BY type, name",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (kind, name, tbl, sql): (String, String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            if !is_user(&name) || !is_user(&tbl) {
                continue;
            }
            for part in [&kind, &name, &tbl, &sql] {
                field(&mut schema, part.as_bytes());
            }
            if kind == "table" && !sql.starts_with("CREATE VIRTUAL TABLE") {
                tables.push(name);
            }
        }
    }
    let mut sums = BTreeMap::new();
    for t in tables {
        sums.insert(t.clone(), table_sum(conn, &t)?);
    }
    Ok(Checksum {
        applied_seq,
        schema_sha256: hex(schema.finish().as_ref()),
        tables: sums,
    })
}

fn table_sum(conn: &Connection, table: &str) -> Result<TableSum, DbError> {
    let mut h = Context::new(&SHA256);
    // Columns (name, type, key position), then rows ordered by the key: by the primary key
    // when there is one (rowids of such tables are local), else by rowid (their identity).
    let mut cols = Vec::new();
    let mut pk: Vec<(i64, String)> = Vec::new();
    {
        let mut stmt =
            conn.prepare("SELECT name, type, pk FROM pragma_table_info(?1, 'main') ORDER BY cid")?;
        let mut rows = stmt.query([table])?;
        while let Some(r) = rows.next()? {
            let (name, ty, k): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            field(&mut h, name.as_bytes());
            field(&mut h, ty.as_bytes());
            field(&mut h, &k.to_be_bytes());
            if k > 0 {
                pk.push((k, name.clone()));
            }
            cols.push(name);
        }
    }
    pk.sort();
    let order = if pk.is_empty() {
        "rowid".to_string()
    } else {
        pk.iter()
            .map(|(_, n)| quote_ident(n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let select = if pk.is_empty() { "rowid, *" } else { "*" };
    let mut stmt = conn.prepare(&format!(
        "SELECT {select} FROM main.{} ORDER BY {order}",
        quote_ident(table)
    ))?;
    let n = stmt.column_count();
    let mut rows = stmt.query([])?;
    let mut count = 0u64;
    while let Some(r) = rows.next()? {
        count += 1;
        h.update(b"R");
        for i in 0..n {
            value(&mut h, r.get_ref(i)?);
        }
    }
    Ok(TableSum {
        rows: count,
        sha256: hex(h.finish().as_ref()),
    })
}

/// A length-prefixed byte string (so that boundaries cannot shift between fields).
fn field(h: &mut Context, b: &[u8]) {
    h.update(&(b.len() as u64).to_be_bytes());
    h.update(b);
}

fn value(h: &mut Context, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => h.update(b"n"),
        ValueRef::Integer(i) => {
            h.update(b"i");
            h.update(&i.to_be_bytes());
        }
        ValueRef::Real(f) => {
            h.update(b"r");
            h.update(&f.to_bits().to_be_bytes());
        }
        ValueRef::Text(t) => {
            h.update(b"t");
            field(h, t);
        }
        ValueRef::Blob(b) => {
            h.update(b"b");
            field(h, b);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(rows: &str) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(&format!(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v); CREATE TABLE _ha_meta(key, value); {rows}"
        ))
        .unwrap();
        c
    }

    #[test]
    fn equal_content_equal_sums_whatever_the_insert_order() {
        let a = compute(&db("INSERT INTO t VALUES (1, 'a'), (2, 2.5);")).unwrap();
        let b = compute(&db(
            "INSERT INTO t VALUES (2, 2.5); INSERT INTO t VALUES (1, 'a');",
        ))
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.tables["t"].rows, 2);
        assert!(!a.tables.contains_key("_ha_meta"));
        let c = compute(&db("INSERT INTO t VALUES (1, 'a'), (2, '2.5');")).unwrap();
        assert_ne!(
            a.tables["t"], c.tables["t"],
            "a type change is a difference"
        );
    }
}
