//! Owns SQLite's schema as the catalog sees it: tables, views, indexes, columns and foreign keys,
//! read in one batch, and the stable OIDs of relation names.

use std::collections::BTreeMap;

use crate::exec::{ExecError, Executor, Params, Rows, Stmt, StmtResult, Value};

/// A stable OID for a relation name: FNV-1a, above PostgreSQL's reserved range.
pub fn oid_of(name: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    16384 + (h % 2_000_000_000) as u32
}

/// The column name shown for an index key that is an expression.
pub(super) const EXPRESSION: &str = "<expression>";

/// ha's and SQLite's own tables: never shown.
pub(super) fn internal(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.starts_with("sqlite_") || l.starts_with("_ha_")
}

#[derive(Debug, Clone)]
pub(super) struct Object {
    pub(super) kind: char,
    pub(super) name: String,
    pub(super) table: String,
}

#[derive(Debug, Clone)]
pub(super) struct ColumnDef {
    pub(super) name: String,
    pub(super) decl: String,
    pub(super) notnull: bool,
    pub(super) default: Option<String>,
    pub(super) pk: i64,
    pub(super) hidden: i64,
}

#[derive(Debug, Clone)]
pub(super) struct IndexDef {
    /// The name shown (`{table}_pkey` for the primary key).
    pub(super) name: String,
    pub(super) table: String,
    pub(super) unique: bool,
    /// 'c' created, 'u' UNIQUE constraint, 'pk' primary key.
    pub(super) origin: String,
    pub(super) columns: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) struct ForeignKey {
    pub(super) table: String,
    pub(super) id: i64,
    pub(super) target: String,
    pub(super) from: Vec<String>,
    pub(super) to: Vec<String>,
}

/// SQLite's schema, read in one transaction.
pub(super) struct Schema {
    pub(super) objects: Vec<Object>,
    pub(super) columns: BTreeMap<String, Vec<ColumnDef>>,
    pub(super) indexes: Vec<IndexDef>,
    pub(super) fks: Vec<ForeignKey>,
}

pub(super) const SCHEMA_SQL: [&str; 5] = [
    "SELECT type, name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'view', 'index') ORDER BY name",
    "SELECT m.name, p.name, p.type, p.\"notnull\", p.dflt_value, p.pk, p.hidden \
     FROM sqlite_schema m, pragma_table_xinfo(m.name) p WHERE m.type IN ('table', 'view') ORDER BY m.name, p.cid",
    "SELECT m.name, il.name, il.\"unique\", il.origin FROM sqlite_schema m, pragma_index_list(m.name) il \
     WHERE m.type = 'table' ORDER BY m.name, il.seq",
    "SELECT il.name, ii.name FROM sqlite_schema m, pragma_index_list(m.name) il, pragma_index_info(il.name) ii \
     WHERE m.type = 'table' ORDER BY il.name, ii.seqno",
    "SELECT m.name, f.id, f.\"table\", f.\"from\", f.\"to\" FROM sqlite_schema m, pragma_foreign_key_list(m.name) f \
     WHERE m.type = 'table' ORDER BY m.name, f.id, f.seq",
];

pub(super) fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::Text(t)) => t.clone(),
        Some(Value::Integer(i)) => i.to_string(),
        _ => String::new(),
    }
}

pub(super) fn n(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Integer(i)) => *i,
        _ => 0,
    }
}

impl Schema {
    pub(super) async fn load(exec: &Executor) -> Result<Schema, ExecError> {
        let batch = SCHEMA_SQL.iter().map(|q| Stmt::new(*q)).collect();
        let mut results = exec.execute(batch).await?.results.into_iter();
        let mut next = || match results.next() {
            Some(StmtResult::Rows(r)) => Ok(r),
            _ => Err(ExecError::BadRequest(
                "catalog query returned no rows".into(),
            )),
        };
        let (objs, cols, idx, idx_cols, fks) = (next()?, next()?, next()?, next()?, next()?);
        let objects = objs
            .rows
            .iter()
            .filter(|r| !internal(&s(r.get(1))))
            .map(|r| Object {
                kind: match s(r.first()).as_str() {
                    "view" => 'v',
                    "index" => 'i',
                    _ => 'r',
                },
                name: s(r.get(1)),
                table: s(r.get(2)),
            })
            .collect();
        let mut columns: BTreeMap<String, Vec<ColumnDef>> = BTreeMap::new();
        for r in &cols.rows {
            columns.entry(s(r.first())).or_default().push(ColumnDef {
                name: s(r.get(1)),
                decl: s(r.get(2)),
                notnull: n(r.get(3)) != 0,
                default: match r.get(4) {
                    Some(Value::Null) | None => None,
                    v => Some(s(v)),
                },
                pk: n(r.get(5)),
                hidden: n(r.get(6)),
            });
        }
        let mut idx_columns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &idx_cols.rows {
            let c = match r.get(1) {
                Some(Value::Text(t)) => t.clone(),
                _ => EXPRESSION.into(),
            };
            idx_columns.entry(s(r.first())).or_default().push(c);
        }
        let mut indexes = Vec::new();
        for r in &idx.rows {
            let table = s(r.first());
            let name = s(r.get(1));
            let origin = s(r.get(3));
            indexes.push(IndexDef {
                name: if origin == "pk" {
                    format!("{table}_pkey")
                } else {
                    name.clone()
                },
                columns: idx_columns.get(&name).cloned().unwrap_or_default(),
                table,
                unique: n(r.get(2)) != 0,
                origin,
            });
        }
        // A rowid primary key (INTEGER PRIMARY KEY) has no index of its own: show it as one.
        for (table, cols) in &columns {
            let mut pk: Vec<&ColumnDef> = cols.iter().filter(|c| c.pk > 0).collect();
            pk.sort_by_key(|c| c.pk);
            let has_pk_index = indexes
                .iter()
                .any(|i| &i.table == table && i.origin == "pk");
            if !pk.is_empty() && !has_pk_index {
                indexes.push(IndexDef {
                    name: format!("{table}_pkey"),
                    table: table.clone(),
                    unique: true,
                    origin: "pk".into(),
                    columns: pk.iter().map(|c| c.name.clone()).collect(),
                });
            }
        }
        indexes.retain(|i| !internal(&i.table));
        let mut fk_list: Vec<ForeignKey> = Vec::new();
        for r in &fks.rows {
            let (table, id) = (s(r.first()), n(r.get(1)));
            match fk_list.last_mut() {
                Some(f) if f.table == table && f.id == id => {
                    f.from.push(s(r.get(3)));
                    f.to.push(s(r.get(4)));
                }
                _ => fk_list.push(ForeignKey {
                    table,
                    id,
                    target: s(r.get(2)),
                    from: vec![s(r.get(3))],
                    to: vec![s(r.get(4))],
                }),
            }
        }
        Ok(Schema {
            objects,
            columns,
            indexes,
            fks: fk_list,
        })
    }

    pub(super) fn by_oid(&self, oid: Option<&str>) -> Option<&Object> {
        let oid: u32 = oid?.parse().ok()?;
        self.objects.iter().find(|o| oid_of(&o.name) == oid)
    }

    /// The primary key columns of a table (any case of its name), in key order.
    pub(super) fn primary_key_of(&self, table: &str) -> Vec<String> {
        self.indexes
            .iter()
            .find(|i| i.origin == "pk" && i.table.eq_ignore_ascii_case(table))
            .map(|i| i.columns.clone())
            .unwrap_or_default()
    }

    pub(super) fn fks_of(&self, table: &str) -> Vec<&ForeignKey> {
        self.fks.iter().filter(|f| f.table == table).collect()
    }

    pub(super) fn referencing(&self, table: &str) -> Vec<&ForeignKey> {
        self.fks
            .iter()
            .filter(|f| f.target.eq_ignore_ascii_case(table))
            .collect()
    }
}

/// What `format_type` prints for a declared SQLite type: PostgreSQL's name for the common
/// aliases (`varchar(80)` → `character varying(80)`, `int` → `integer`, the names SQLAlchemy
/// and other tools know), else the declaration as written in lower case (SQLite keeps it
/// verbatim), or `any` when there is none.
pub(super) fn type_name(decl: &str) -> String {
    let d = decl.trim().to_ascii_lowercase();
    if d.is_empty() {
        return "any".into();
    }
    let (base, args) = match d.find('(') {
        Some(i) => (d[..i].trim(), &d[i..]),
        None => (d.as_str(), ""),
    };
    let canonical = match base {
        "int" | "int4" => "integer",
        "int8" => "bigint",
        "int2" => "smallint",
        "varchar" => "character varying",
        "char" => "character",
        "float8" | "double" => "double precision",
        "float4" => "real",
        "bool" => "boolean",
        "blob" => "bytea",
        "decimal" => "numeric",
        "datetime" => "timestamp",
        "timestamptz" => "timestamp with time zone",
        _ => return d,
    };
    format!("{canonical}{args}")
}

/// Declared column types of every table and view: table (lower case) → its columns (lower
/// case) with declared types, in table order. For parameter-type inference.
pub async fn column_types(
    exec: &Executor,
) -> Result<std::collections::HashMap<String, Vec<(String, String)>>, ExecError> {
    let rows = read(
        exec,
        "SELECT lower(m.name), lower(p.name), p.type FROM sqlite_schema m, pragma_table_info(m.name) p \
         WHERE m.type IN ('table', 'view') ORDER BY m.name, p.cid",
    )
    .await?;
    let mut out: std::collections::HashMap<String, Vec<(String, String)>> =
        std::collections::HashMap::new();
    for r in rows.rows {
        if let [Value::Text(t), Value::Text(c), Value::Text(ty)] = r.as_slice() {
            out.entry(t.clone())
                .or_default()
                .push((c.clone(), ty.clone()));
        }
    }
    Ok(out)
}

async fn read(exec: &Executor, sql: &str) -> Result<Rows, ExecError> {
    match exec
        .execute(vec![Stmt {
            sql: sql.into(),
            params: Params::None,
        }])
        .await?
        .results
        .pop()
    {
        Some(StmtResult::Rows(r)) => Ok(r),
        _ => Err(ExecError::BadRequest(
            "catalog query returned no rows".into(),
        )),
    }
}
