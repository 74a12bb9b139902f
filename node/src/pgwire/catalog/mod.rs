//! Owns the answers to the PostgreSQL catalog queries that psql and drivers send (`pg_class`,
//! `pg_attribute`, `pg_index`, `pg_type`, …), computed from SQLite's own schema.
//! Must not write or keep state: every answer is read fresh from the database via `exec`, and
//! queries naming a catalog relation that is not understood fail with 42P01, never garbage.
//! Invariant: an answer has exactly the select list of the query (count, order, names), since
//! psql reads results by position; only the values come from here.
//!
//! How: psql 15's queries (captured from a real PostgreSQL 15 with `log_statement=all`) are
//! recognised by the catalog relations they read and a few marker words, not by their text. The
//! top-level select list is split into items, and each item is matched to a field of the
//! answer by its alias or by the words of its expression (`c2.relname` → `relname`,
//! `pg_catalog.format_type(…)` → `format_type`); items that match nothing are NULL. So the
//! `\d+` variants and other clients' spellings of the same question get sensible answers too.
//! Relation OIDs are a stable hash of the name (`oid_of`), the same on every node.
//!
//! Value filters in the query (`relname = $1`, `relkind = ANY (ARRAY[…])`, `conrelid IN (…)`,
//! `contype`, `typtype`) are honoured with the bound parameters, so a question about one table
//! is answered about that table only (SQLAlchemy's and pandas' `has_table` rely on it).
//! A relname/relkind condition that is not such a comparison fails with 0A000 instead.
//!
//! Files: `recognise` (what a query asks), `filters` (its value filters), `fields` (the
//! answer's columns), `schema` (SQLite's schema, OIDs), `records` (the answer's rows),
//! `pattern` (psql's name patterns).

mod fields;
mod filters;
mod pattern;
mod recognise;
mod records;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use pgwire::api::Type;
use pgwire::error::PgWireError;

use super::error::{to_pg, user_error};
use crate::exec::{Executor, Value};
pub use fields::{columns, param_types_of};
use fields::{fields, resolve};
pub use pattern::psql_pattern_matches;
pub use recognise::{Kind, Query, recognise};
use records::{text, types_records};
use schema::Schema;
pub use schema::column_types;

/// The answer: column names with their types, and rows.
pub struct Answer {
    pub columns: Vec<(String, Type)>,
    pub rows: Vec<Vec<Value>>,
}

/// Who is asking, for the fields that name the database and the user.
pub struct Context<'a> {
    pub database: &'a str,
    pub user: &'a str,
}

/// Answers a catalog query, with the values bound to its `$n` parameters (keys "1", "2", …).
pub async fn answer(
    q: &Query,
    exec: &Executor,
    ctx: &Context<'_>,
    params: &BTreeMap<String, Value>,
) -> Result<Answer, PgWireError> {
    let q = match q {
        Query::Unsupported(rel) => {
            return Err(user_error(
                "42P01",
                format!(
                    "relation \"{rel}\" does not exist: ha answers only the catalog queries of \
                     psql's \\d, \\dt, \\l, \\dn, \\du and common drivers (see docs/postgres.md)"
                ),
            ));
        }
        Query::Unreadable(column) => {
            return Err(user_error(
                "0A000",
                format!(
                    "ha cannot evaluate this catalog query's condition on {column}: compare it \
                     with values (= 'x', IN ('x', 'y'), = ANY (ARRAY['x'])) or a psql pattern \
                     (~ '^(x)$') (see docs/postgres.md)"
                ),
            ));
        }
        Query::Known(k) => k,
    };
    let filter = q.filters.resolve(q.arg.as_ref(), params);
    let records: Vec<Vec<(&'static str, Value)>> = match q.kind {
        Kind::Databases => vec![vec![
            ("name", text(ctx.database)),
            ("datname", text(ctx.database)),
            ("owner", text(ctx.user)),
            ("datdba", text(ctx.user)),
            ("encoding", text("UTF8")),
            ("collate", text("C")),
            ("ctype", text("C")),
            ("locale provider", text("libc")),
            ("oid", Value::Integer(1)),
        ]],
        Kind::Schemas => vec![vec![
            ("name", text("public")),
            ("nspname", text("public")),
            ("owner", text(ctx.user)),
            ("nspowner", text(ctx.user)),
            ("oid", Value::Integer(2200)),
        ]],
        Kind::Roles => {
            let t = Value::Integer(1);
            vec![vec![
                ("memberof", text("{}")),
                ("rolname", text(ctx.user)),
                ("usename", text(ctx.user)),
                ("rolsuper", t.clone()),
                ("usesuper", t.clone()),
                ("rolinherit", t.clone()),
                ("rolcreaterole", t.clone()),
                ("rolcreatedb", t.clone()),
                ("usecreatedb", t.clone()),
                ("rolcanlogin", t.clone()),
                ("rolconnlimit", Value::Integer(-1)),
                ("rolreplication", t.clone()),
                ("rolbypassrls", t),
                ("oid", Value::Integer(10)),
            ]]
        }
        Kind::Types => types_records(&filter),
        Kind::Empty => Vec::new(),
        _ => {
            let schema = Schema::load(exec).await.map_err(to_pg)?;
            schema.records(q, &filter, ctx.user)
        }
    };
    let f = fields(q.kind);
    let map = resolve(&q.items, f);
    let rows = records
        .into_iter()
        .map(|rec| {
            map.iter()
                .map(|k| {
                    k.and_then(|k| f.get(k))
                        .and_then(|(key, _)| rec.iter().find(|(n, _)| n == key))
                        .map(|(_, v)| v.clone())
                        .unwrap_or(Value::Null)
                })
                .collect()
        })
        .collect();
    Ok(Answer {
        columns: columns(q),
        rows,
    })
}
