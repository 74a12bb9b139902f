//! Owns the answers to the PostgreSQL catalog queries that drivers and psql send
//! (`pg_catalog`, `information_schema`), computed from SQLite's own schema.
//! Must not write or keep state: every answer is read fresh from the database via `exec`.
//! Invariant: a recognised query is answered with the columns (names, order, count) the client
//! expects, since psql reads them by position.

use std::collections::HashMap;

use crate::exec::{ExecError, Executor, Rows, Stmt, StmtResult, Value};

/// A catalog query this front end answers itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {}

/// Recognises a catalog query psql or a driver sends.
pub fn recognise(_sql: &str) -> Option<Query> {
    None
}

/// Answers a recognised catalog query.
pub async fn answer(q: &Query, _exec: &Executor) -> Result<Rows, ExecError> {
    match *q {}
}

/// Declared column types of every table and view: table (lower case) → its columns (lower
/// case) with declared types, in table order. For parameter-type inference.
pub async fn column_types(
    exec: &Executor,
) -> Result<HashMap<String, Vec<(String, String)>>, ExecError> {
    let rows = read(
        exec,
        "SELECT lower(m.name), lower(p.name), p.type FROM sqlite_schema m, pragma_table_info(m.name) p \
         WHERE m.type IN ('table', 'view') ORDER BY m.name, p.cid",
    )
    .await?;
    let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
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
    match exec.execute(vec![Stmt::new(sql)]).await?.pop() {
        Some(StmtResult::Rows(r)) => Ok(r),
        _ => Err(ExecError::BadRequest(
            "catalog query returned no rows".into(),
        )),
    }
}
