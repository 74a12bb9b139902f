//! Owns what the replication code needs to know about a table: its columns in storage order,
//! declared types, primary key, generated/hidden columns, and whether it has a rowid.
//! Must not cache across DDL by itself: `TableCache::invalidate` is called after every DDL.
//! Invariant: `columns` is in `pragma_table_xinfo` order, which is the order of the values the
//! preupdate hook reports.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;

use crate::ApplyError;

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    pub decl_type: String,
    /// 1-based position in the primary key, 0 when not part of it.
    pub pk: usize,
    /// `pragma_table_xinfo.hidden`: 0 normal, 1 hidden (virtual tables), 2 virtual generated,
    /// 3 stored generated.
    pub hidden: i64,
}

impl ColumnInfo {
    /// Generated and hidden columns are computed by SQLite, never written.
    pub fn is_written(&self) -> bool {
        self.hidden == 0
    }

    /// Whether a base64 string in a change set means bytes for this column (the original's
    /// rule: the declared type is exactly `BLOB`), widened to any declared type with BLOB
    /// affinity as SQLite defines it (contains "BLOB", or no type at all is not enough).
    pub fn is_blob(&self) -> bool {
        self.decl_type.to_ascii_uppercase().contains("BLOB")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    pub without_rowid: bool,
    /// The text of the apply's row statements for this table, built once.
    pub(crate) sql: crate::row_sql::RowSql,
}

impl TableInfo {
    /// Names of the primary-key columns in key order; empty when the table has none (rowid).
    pub fn pk_columns(&self) -> Vec<&str> {
        let mut pk: Vec<&ColumnInfo> = self.columns.iter().filter(|c| c.pk > 0).collect();
        pk.sort_by_key(|c| c.pk);
        pk.into_iter().map(|c| c.name.as_str()).collect()
    }

    pub fn read(
        conn: &Connection,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableInfo>, ApplyError> {
        let mut stmt = conn.prepare_cached(
            "SELECT name, type, pk, hidden FROM pragma_table_xinfo(?1, ?2) ORDER BY cid",
        )?;
        let columns: Vec<ColumnInfo> = stmt
            .query_map([table, schema], |r| {
                Ok(ColumnInfo {
                    name: r.get(0)?,
                    decl_type: r.get(1)?,
                    pk: r.get::<_, i64>(2)?.max(0) as usize,
                    hidden: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        if columns.is_empty() {
            return Ok(None);
        }
        let without_rowid = conn
            .prepare(&format!(
                "SELECT rowid FROM {}.{} LIMIT 0",
                quote_ident(schema),
                quote_ident(table)
            ))
            .is_err();
        Ok(Some(TableInfo {
            schema: schema.to_string(),
            name: table.to_string(),
            columns,
            without_rowid,
            sql: Default::default(),
        }))
    }
}

/// Table descriptions by (schema, table), valid until the next DDL.
#[derive(Debug, Default)]
pub struct TableCache {
    tables: HashMap<(String, String), Arc<TableInfo>>,
    /// Whether `main` has a virtual table (read once per schema).
    has_virtual: Option<bool>,
    /// `meta::last_name_event` (read once per schema).
    last_name_event: Option<u64>,
}

impl TableCache {
    pub fn get(
        &mut self,
        conn: &Connection,
        schema: &str,
        table: &str,
    ) -> Result<Option<Arc<TableInfo>>, ApplyError> {
        let key = (schema.to_string(), table.to_string());
        if let Some(t) = self.tables.get(&key) {
            return Ok(Some(t.clone()));
        }
        let Some(info) = TableInfo::read(conn, schema, table)? else {
            return Ok(None);
        };
        let info = Arc::new(info);
        self.tables.insert(key, info.clone());
        Ok(Some(info))
    }

    pub fn invalidate(&mut self) {
        self.tables.clear();
        self.has_virtual = None;
        self.last_name_event = None;
    }

    /// The sequence of the last table drop or rename recorded (`meta::last_name_event`).
    pub fn last_name_event(&mut self, conn: &Connection) -> Result<u64, ApplyError> {
        if let Some(v) = self.last_name_event {
            return Ok(v);
        }
        let v = crate::meta::last_name_event(conn)?;
        self.last_name_event = Some(v);
        Ok(v)
    }

    /// Whether the `main` schema holds a virtual table (FTS5, R*Tree, vec0, …).
    pub fn has_virtual_tables(&mut self, conn: &Connection) -> Result<bool, ApplyError> {
        if let Some(v) = self.has_virtual {
            return Ok(v);
        }
        let v = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM main.sqlite_schema \
                 WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%')",
            )?
            .query_row([], |r| r.get::<_, bool>(0))?;
        self.has_virtual = Some(v);
        Ok(v)
    }
}

/// `"name"` with inner quotes doubled: safe for any identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_keys_generated_columns_and_rowid_absence() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE a(x TEXT, id INTEGER, g INTEGER GENERATED ALWAYS AS (id * 2) STORED, PRIMARY KEY (id, x));
             CREATE TABLE \"we\"\"ird\"(k BLOB PRIMARY KEY, v) WITHOUT ROWID;
             CREATE TABLE n(v);",
        )
        .unwrap();
        let a = TableInfo::read(&c, "main", "a").unwrap().unwrap();
        assert_eq!(a.pk_columns(), vec!["id", "x"]);
        assert!(!a.without_rowid);
        assert!(!a.columns[2].is_written());
        let w = TableInfo::read(&c, "main", "we\"ird").unwrap().unwrap();
        assert!(w.without_rowid);
        assert!(w.columns[0].is_blob());
        let n = TableInfo::read(&c, "main", "n").unwrap().unwrap();
        assert!(n.pk_columns().is_empty());
        assert!(TableInfo::read(&c, "main", "missing").unwrap().is_none());
    }
}
