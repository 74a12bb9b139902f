//! Owns running one SQL statement on a connection: compile, bind parameters, step, collect.
//! Must not begin or end transactions; the reader and the writer decide the transaction.
//! Invariant: parameters are bound by name or number exactly as the SQL text declares them
//! (SQLite numbers `$2` before `$1` if `$2` comes first), and a missing one is an error.

use std::collections::BTreeMap;

use rusqlite::{Connection, Statement};

use super::{DbError, Value, authorizer, deadline};
use crate::changeset::sql::leading_keyword;

/// One statement with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    pub sql: String,
    pub params: Params,
}

impl Stmt {
    pub fn new(sql: impl Into<String>) -> Stmt {
        Stmt {
            sql: sql.into(),
            params: Params::None,
        }
    }
}

/// Parameters of one statement.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Params {
    #[default]
    None,
    /// `?`, `?N`, `$N`, `:N`: the N-th value (1-based).
    Positional(Vec<Value>),
    /// Keys without their placeholder prefix (`id` for `:id`, `@id` and `$id`). A key made of
    /// digits only is a position (`{"$1": …}` arrives as `"1"`).
    Named(BTreeMap<String, Value>),
}

/// A result column: its name and, when it comes straight from a table column, the declared type.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub decl_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecSummary {
    pub rows_affected: u64,
    /// The rowid this statement inserted last, 0 when it inserted nothing.
    pub last_insert_id: i64,
}

/// What one statement produced: rows, or a count of changed rows.
#[derive(Debug, Clone, PartialEq)]
pub enum StmtResult {
    Rows(Rows),
    Exec(ExecSummary),
}

/// What compiling a statement tells without running it.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub columns: Vec<Column>,
    /// One entry per SQLite parameter, in SQLite's order (index 1 first): its name as written
    /// (`$1`, `:id`, `?3`), or `None` for a bare `?`.
    pub params: Vec<Option<String>>,
    /// SQLite's own judgement: the statement does not write.
    pub readonly: bool,
    /// For a read-only statement without parameters whose columns are not all table columns:
    /// the first row it returns (so expression columns can be typed). `None` otherwise.
    pub first_row: Option<Vec<Value>>,
}

/// The result columns of a compiled statement, with their declared types.
fn columns_of(ps: &Statement<'_>) -> Vec<Column> {
    ps.columns()
        .map(|c| Column {
            name: c.name().to_string(),
            decl_type: c.decl_type().map(str::to_string),
        })
        .collect()
}

/// Compiles `sql` and reports its columns, parameters and whether it only reads.
pub(crate) fn describe(conn: &Connection, sql: &str) -> Result<Described, DbError> {
    authorizer::untrusted(|| describe_client_sql(conn, sql)).map_err(explain)
}

fn describe_client_sql(conn: &Connection, sql: &str) -> Result<Described, DbError> {
    let mut ps = prepare(conn, sql)?;
    let columns = columns_of(&ps);
    let params = (1..=ps.parameter_count())
        .map(|i| ps.parameter_name(i).map(str::to_string))
        .collect::<Vec<_>>();
    let readonly = ps.readonly();
    let mut first_row = None;
    if readonly
        && params.is_empty()
        && !columns.is_empty()
        && columns.iter().any(|c| c.decl_type.is_none())
    {
        let mut cursor = ps.raw_query();
        if let Some(row) = cursor.next().map_err(|source| DbError::Run { source })? {
            let mut vals = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                vals.push(Value::from_ref(row.get_ref(i)?));
            }
            first_row = Some(vals);
        }
    }
    Ok(Described {
        columns,
        params,
        readonly,
        first_row,
    })
}

/// Whether `sql` certainly writes (DML or DDL by its first keyword), so that reading it on a
/// read connection first would be wasted work.
pub fn starts_with_write(sql: &str) -> bool {
    matches!(
        leading_keyword(sql).as_str(),
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "CREATE" | "DROP" | "ALTER"
    )
}

/// Statements a batch may not contain, with the reason. Batches are transactions already, and
/// ATTACH on a pooled connection would be seen by some requests and not others.
pub(crate) fn refuse_in_batch(sql: &str) -> Option<DbError> {
    match leading_keyword(sql).as_str() {
        kw @ ("BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE") => {
            Some(DbError::Unsupported(format!(
                "{kw} is not allowed here: each request is already one transaction (send an array of statements to group them)"
            )))
        }
        kw @ ("ATTACH" | "DETACH") => Some(DbError::Forbidden(format!(
            "{kw} is not allowed: the node serves one database"
        ))),
        _ => None,
    }
}

/// Compiles client SQL `sql` (through the connection's statement cache, under the authorizer)
/// or says why it cannot.
pub(crate) fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
) -> Result<rusqlite::CachedStatement<'c>, DbError> {
    authorizer::untrusted(|| compile(conn, sql)).map_err(explain)
}

fn compile<'c>(conn: &'c Connection, sql: &str) -> Result<rusqlite::CachedStatement<'c>, DbError> {
    conn.prepare_cached(sql).map_err(|e| match e {
        rusqlite::Error::MultipleStatement => DbError::MultipleStatements,
        rusqlite::Error::Empty => DbError::EmptyStatement,
        rusqlite::Error::SqliteFailure(_, Some(msg)) => DbError::Prepare { message: msg },
        rusqlite::Error::SqlInputError { msg, .. } => DbError::Prepare { message: msg },
        other => DbError::Sqlite(other),
    })
}

/// Turns SQLite's bare "not authorized" and "interrupted" into what was refused or why the job
/// was stopped.
fn explain(e: DbError) -> DbError {
    if let Some(why) = authorizer::take_refusal() {
        return DbError::Forbidden(why);
    }
    match (e.sqlite_code(), deadline::take_stop()) {
        (Some(rusqlite::ErrorCode::OperationInterrupted), Some(stop)) => DbError::Stopped(stop),
        _ => e,
    }
}

/// Memory a value takes in a result set.
fn value_bytes(v: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match v {
            Value::Text(t) => t.len(),
            Value::Blob(b) => b.len(),
            _ => 0,
        }
}

/// Runs one client statement to completion on `conn`, under the authorizer and within the
/// bounds of the job in scope (`deadline::scope`).
pub(crate) fn run(conn: &Connection, stmt: &Stmt) -> Result<StmtResult, DbError> {
    if let Some(e) = refuse_in_batch(&stmt.sql) {
        return Err(e);
    }
    if let Some(stop) = deadline::check_now() {
        return Err(DbError::Stopped(stop));
    }
    authorizer::untrusted(|| run_client_sql(conn, stmt)).map_err(explain)
}

/// Runs one client statement on a read connection if it only reads, compiling it once (the
/// point-SELECT path): `Ok(None)` when it writes or may not run in a batch (the writer judges
/// it), else what `run` would answer.
pub(crate) fn run_if_readonly(
    conn: &Connection,
    stmt: &Stmt,
) -> Result<Option<StmtResult>, DbError> {
    if refuse_in_batch(&stmt.sql).is_some() {
        return Ok(None);
    }
    authorizer::untrusted(|| {
        let mut ps = compile(conn, &stmt.sql)?;
        if !ps.readonly() {
            return Ok(None);
        }
        if let Some(stop) = deadline::check_now() {
            return Err(DbError::Stopped(stop));
        }
        run_compiled(conn, &mut ps, stmt).map(Some)
    })
    .map_err(explain)
}

fn run_client_sql(conn: &Connection, stmt: &Stmt) -> Result<StmtResult, DbError> {
    let mut ps = prepare(conn, &stmt.sql)?;
    run_compiled(conn, &mut ps, stmt)
}

fn run_compiled(
    conn: &Connection,
    ps: &mut Statement<'_>,
    stmt: &Stmt,
) -> Result<StmtResult, DbError> {
    bind(ps, &stmt.params)?;
    let ncols = ps.column_count();
    if ncols > 0 {
        let columns = columns_of(ps);
        let mut rows = Vec::new();
        let mut cursor = ps.raw_query();
        while let Some(row) = cursor.next().map_err(|source| DbError::Run { source })? {
            let mut out = Vec::with_capacity(ncols);
            let mut bytes = 0;
            for i in 0..ncols {
                let v = Value::from_ref(row.get_ref(i)?);
                bytes += value_bytes(&v);
                out.push(v);
            }
            deadline::charge(bytes).map_err(DbError::ResultTooLarge)?;
            rows.push(out);
        }
        Ok(StmtResult::Rows(Rows { columns, rows }))
    } else {
        let before = conn.last_insert_rowid();
        let changed = ps.raw_execute().map_err(|source| DbError::Run { source })?;
        let after = conn.last_insert_rowid();
        let inserted =
            matches!(leading_keyword(&stmt.sql).as_str(), "INSERT" | "REPLACE") || after != before;
        Ok(StmtResult::Exec(ExecSummary {
            rows_affected: changed as u64,
            last_insert_id: if inserted && changed > 0 { after } else { 0 },
        }))
    }
}

/// Binds `params` to the placeholders of `ps`, by name or by number.
fn bind(ps: &mut Statement<'_>, params: &Params) -> Result<(), DbError> {
    let count = ps.parameter_count();
    // The keys of `params` some placeholder took (borrowed: nothing is copied per statement).
    let mut used: Vec<&str> = Vec::new();
    for index in 1..=count {
        let value = value_for(ps.parameter_name(index), index, params, &mut used)?;
        ps.raw_bind_parameter(index, value)?;
    }
    match params {
        Params::Positional(vals) if vals.len() > count => Err(DbError::Params(format!(
            "{} parameter values given but the statement has {count} placeholders",
            vals.len()
        ))),
        Params::Named(map) => {
            let unused: Vec<&str> = map
                .keys()
                .map(String::as_str)
                .filter(|k| !used.contains(k))
                .collect();
            if unused.is_empty() {
                Ok(())
            } else {
                Err(DbError::Params(format!(
                    "parameters without a matching placeholder: {}",
                    unused.join(", ")
                )))
            }
        }
        _ => Ok(()),
    }
}

/// The value in `params` for placeholder `index`, spelled `name` in the SQL (`None`: a bare
/// `?`); records the key it took in `used`.
fn value_for<'p>(
    name: Option<&str>,
    index: usize,
    params: &'p Params,
    used: &mut Vec<&'p str>,
) -> Result<&'p Value, DbError> {
    // What the placeholder asks for: a position or a name.
    let bare = name.map(|n| &n[1..]);
    let (position, key) = match bare {
        None => (Some(index), None),
        Some(b) => match b.parse::<usize>() {
            Ok(p) if p >= 1 => (Some(p), None),
            _ => (None, Some(b)),
        },
    };
    let value = match (params, position, key) {
        (Params::Positional(vals), Some(p), _) => vals.get(p - 1),
        (Params::Named(map), Some(p), _) => {
            // The key is the number as written unless it is spelled oddly (`$01`, `?+1`).
            let found = match bare {
                Some(b) if b.bytes().all(|c| c.is_ascii_digit()) && !b.starts_with('0') => {
                    map.get_key_value(b)
                }
                _ => map.get_key_value(p.to_string().as_str()),
            };
            found.map(|(k, v)| {
                used.push(k.as_str());
                v
            })
        }
        (Params::Named(map), None, Some(k)) => map.get_key_value(k).map(|(k, v)| {
            used.push(k.as_str());
            v
        }),
        (Params::Positional(_), None, Some(k)) => {
            return Err(DbError::Params(format!(
                "placeholder {} is named: pass params as an object",
                name.unwrap_or(k)
            )));
        }
        (Params::None, _, _) => None,
        (_, None, None) => None,
    };
    value.ok_or_else(|| {
        DbError::Params(format!(
            "missing value for parameter {}",
            name.map_or_else(|| format!("?{index}"), str::to_string)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
            .unwrap();
        c
    }

    #[test]
    fn a_read_runs_on_one_compile_and_anything_else_goes_to_the_writer() {
        let c = conn();
        c.execute("INSERT INTO t(id, name) VALUES (1, 'a')", [])
            .unwrap();
        let read = Stmt {
            sql: "SELECT name FROM t WHERE id = $1".into(),
            params: named(&[("1", Value::Integer(1))]),
        };
        let r = run_if_readonly(&c, &read)
            .unwrap()
            .expect("a read runs here");
        assert_eq!(one_row(r), vec![Value::Text("a".into())]);
        // Run again (from the statement cache), with the same answer.
        let r = run_if_readonly(&c, &read)
            .unwrap()
            .expect("a read runs here");
        assert_eq!(one_row(r), vec![Value::Text("a".into())]);
        for writes in ["INSERT INTO t(id) VALUES (2)", "BEGIN", "CREATE TABLE u(a)"] {
            assert!(
                run_if_readonly(&c, &Stmt::new(writes)).unwrap().is_none(),
                "{writes}"
            );
        }
        assert!(matches!(
            run_if_readonly(&c, &Stmt::new("SELECT nope FROM t")),
            Err(DbError::Prepare { .. })
        ));
        assert!(matches!(
            run_if_readonly(&c, &Stmt::new("SELECT name FROM t WHERE id = $1")),
            Err(DbError::Params(_))
        ));
        let count: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1, "nothing was written");
    }

    fn named(pairs: &[(&str, Value)]) -> Params {
        Params::Named(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn one_row(r: StmtResult) -> Vec<Value> {
        match r {
            StmtResult::Rows(mut rows) => rows.rows.remove(0),
            other => panic!("expected rows, got {other:?}"),
        }
    }

    #[test]
    fn describe_reports_columns_params_and_sample_row() {
        let c = conn();
        let d = describe(&c, "SELECT id, name FROM t WHERE id = $1 AND name = :n").unwrap();
        assert_eq!(d.params, vec![Some("$1".into()), Some(":n".into())]);
        assert_eq!(d.columns[0].decl_type.as_deref(), Some("INTEGER"));
        assert!(d.readonly && d.first_row.is_none());
        let d = describe(&c, "SELECT 1 AS one").unwrap();
        assert_eq!(d.first_row, Some(vec![Value::Integer(1)]));
        assert!(!describe(&c, "DELETE FROM t").unwrap().readonly);
    }

    #[test]
    fn dollar_numbers_bind_by_number_not_by_order_of_appearance() {
        let c = conn();
        let s = Stmt {
            sql: "SELECT $2, $1".into(),
            params: Params::Positional(vec![Value::Integer(1), Value::Integer(2)]),
        };
        assert_eq!(
            one_row(run(&c, &s).unwrap()),
            vec![Value::Integer(2), Value::Integer(1)]
        );
        let s = Stmt {
            sql: "SELECT $2, $1".into(),
            params: named(&[("1", Value::Integer(10)), ("2", Value::Integer(20))]),
        };
        assert_eq!(
            one_row(run(&c, &s).unwrap()),
            vec![Value::Integer(20), Value::Integer(10)]
        );
    }

    #[test]
    fn every_named_prefix_binds_by_bare_name() {
        let c = conn();
        for sql in ["SELECT :v", "SELECT @v", "SELECT $v"] {
            let s = Stmt {
                sql: sql.into(),
                params: named(&[("v", Value::Text("x".into()))]),
            };
            assert_eq!(one_row(run(&c, &s).unwrap()), vec![Value::Text("x".into())]);
        }
    }

    #[test]
    fn missing_and_unused_parameters_are_errors() {
        let c = conn();
        let s = Stmt {
            sql: "SELECT :a".into(),
            params: Params::None,
        };
        assert!(matches!(run(&c, &s), Err(DbError::Params(m)) if m.contains(":a")));
        let s = Stmt {
            sql: "SELECT :a".into(),
            params: named(&[("a", Value::Null), ("b", Value::Null)]),
        };
        assert!(matches!(run(&c, &s), Err(DbError::Params(m)) if m.contains('b')));
    }

    #[test]
    fn exec_reports_changes_and_insert_id() {
        let c = conn();
        let r = run(&c, &Stmt::new("INSERT INTO t(id, name) VALUES (7, 'a')")).unwrap();
        assert_eq!(
            r,
            StmtResult::Exec(ExecSummary {
                rows_affected: 1,
                last_insert_id: 7
            })
        );
        let r = run(&c, &Stmt::new("UPDATE t SET name = 'b'")).unwrap();
        assert_eq!(
            r,
            StmtResult::Exec(ExecSummary {
                rows_affected: 1,
                last_insert_id: 0
            })
        );
    }

    #[test]
    fn returning_and_pragmas_answer_with_rows() {
        let c = conn();
        let r = run(
            &c,
            &Stmt::new("INSERT INTO t(name) VALUES ('z') RETURNING id"),
        )
        .unwrap();
        assert_eq!(one_row(r), vec![Value::Integer(1)]);
        assert!(matches!(
            run(&c, &Stmt::new("PRAGMA table_info(t)")).unwrap(),
            StmtResult::Rows(r) if r.rows.len() == 3
        ));
    }

    #[test]
    fn several_statements_or_none_are_refused() {
        let c = conn();
        assert!(matches!(
            run(&c, &Stmt::new("SELECT 1; SELECT 2")),
            Err(DbError::MultipleStatements)
        ));
        assert!(matches!(
            run(&c, &Stmt::new("-- nothing")),
            Err(DbError::EmptyStatement)
        ));
        assert!(matches!(
            run(&c, &Stmt::new("SELEC 1")),
            Err(DbError::Prepare { .. })
        ));
        assert!(matches!(
            run(&c, &Stmt::new("BEGIN")),
            Err(DbError::Unsupported(_))
        ));
    }
}
