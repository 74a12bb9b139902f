//! psql's catalog commands (`\dt`, `\d`, `\d TABLE`, `\l`, `\dn`, `\du`) and the catalog
//! lookups drivers send, answered from SQLite's schema; unknown catalogs fail with 42P01.
//! Needs psql in PATH and, for the psycopg test, the venv of `scripts/install-deps.sh`.

mod common;

use std::process::Command;

use common::{TestNode, code, python};

async fn run(cmd: Command) -> String {
    common::run_command(cmd, true).await
}

/// psql with unaligned output, so rows are `a|b|c` lines.
fn psql(node: &TestNode, command: &str) -> Command {
    let mut c = Command::new("psql");
    c.arg(node.conn_str())
        .args(["-X", "-A", "-v", "ON_ERROR_STOP=1", "-c", command]);
    c
}

async fn with_schema() -> TestNode {
    let node = TestNode::start().await;
    run(psql(
        &node,
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE, score REAL DEFAULT 0); \
         CREATE INDEX users_name ON users(name); \
         CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), body TEXT); \
         CREATE VIEW named AS SELECT name FROM users",
    ))
    .await;
    node
}

#[tokio::test]
async fn psql_dt_lists_the_tables_and_no_internal_ones() {
    let node = with_schema().await;
    let out = run(psql(&node, "\\dt")).await;
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("public|")).collect();
    assert_eq!(
        rows,
        ["public|posts|table|ha", "public|users|table|ha"],
        "{out}"
    );
    assert!(!out.contains("_ha_") && !out.contains("sqlite_"), "{out}");
    // \d lists views too; a pattern narrows the list.
    let out = run(psql(&node, "\\d")).await;
    assert!(out.contains("public|named|view|ha"), "{out}");
    let out = run(psql(&node, "\\dt us*")).await;
    assert!(
        out.contains("public|users|table|ha") && !out.contains("posts"),
        "{out}"
    );
}

#[tokio::test]
async fn psql_d_table_shows_columns_types_not_null_and_indexes() {
    let node = with_schema().await;
    let out = run(psql(&node, "\\d users")).await;
    assert!(out.contains("Table \"public.users\""), "{out}");
    for line in [
        "Column|Type|Collation|Nullable|Default",
        "id|integer||not null|",
        "name|text||not null|",
        "email|text|||",
        "score|real|||0",
        "\"users_pkey\" PRIMARY KEY, btree (id)",
        "\"sqlite_autoindex_users_1\" UNIQUE CONSTRAINT, btree (email)",
        "\"users_name\" btree (name)",
        "TABLE \"posts\" CONSTRAINT \"posts_user_id_fkey\" FOREIGN KEY (user_id) REFERENCES users(id)",
    ] {
        assert!(
            out.lines().any(|l| l.trim() == line),
            "missing {line:?} in\n{out}"
        );
    }
    assert!(!out.contains("Publications"), "{out}");
    let out = run(psql(&node, "\\d posts")).await;
    assert!(
        out.contains("\"posts_user_id_fkey\" FOREIGN KEY (user_id) REFERENCES users(id)"),
        "{out}"
    );
    let out = run(psql(&node, "\\d users_name")).await;
    assert!(out.contains("name|text|yes|name"), "{out}");
    // An unknown name is psql's own message, not an error from us.
    let c = psql(&node, "\\d nope");
    let out = tokio::task::spawn_blocking(move || {
        let mut c = c;
        c.output()
    })
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "Did not find any relation named \"nope\".");
}

#[tokio::test]
async fn psql_l_dn_and_du_succeed() {
    let node = with_schema().await;
    let out = run(psql(&node, "\\l")).await;
    assert!(
        out.lines().any(|l| l.contains("|ha|UTF8|")),
        "one database owned by ha: {out}"
    );
    let out = run(psql(&node, "\\dn")).await;
    assert!(out.lines().any(|l| l == "public|ha"), "{out}");
    let out = run(psql(&node, "\\du")).await;
    assert!(out.lines().any(|l| l.starts_with("ha|Superuser")), "{out}");
}

#[tokio::test]
async fn unknown_catalog_relations_fail_with_42p01_naming_them() {
    let node = with_schema().await;
    let client = node.client().await;
    for sql in [
        "SELECT * FROM pg_catalog.pg_stat_replication",
        "SELECT proname FROM pg_proc",
        "SELECT * FROM information_schema.routines",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "42P01", "{sql}: {e}");
        let rel = sql
            .rsplit(' ')
            .next()
            .unwrap()
            .trim_start_matches("pg_catalog.");
        assert!(
            e.as_db_error().unwrap().message().contains(rel),
            "{sql}: {e}"
        );
        // Extended protocol: refused at Parse, the same way.
        let e = client.prepare(sql).await.unwrap_err();
        assert_eq!(code(&e), "42P01", "{sql}: {e}");
    }
    // The connection is fine afterwards, and functions named pg_* still work.
    let row = client
        .query_one("SELECT pg_catalog.version(), count(*) FROM users", &[])
        .await
        .unwrap();
    assert!(row.get::<_, String>(0).starts_with("PostgreSQL 15"));
}

#[tokio::test]
async fn tokio_postgres_type_lookup_by_oid_gets_the_builtin_type() {
    let node = TestNode::start().await;
    let client = node.client().await;
    // tokio-postgres' own typeinfo query (sent for OIDs it does not know).
    let sql = "SELECT t.typname, t.typtype, t.typelem, r.rngsubtype, t.typbasetype, n.nspname, t.typrelid \
               FROM pg_catalog.pg_type t \
               LEFT OUTER JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid \
               INNER JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid \
               WHERE t.oid = $1";
    let row = client.query_one(sql, &[&20u32]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "int8");
    assert_eq!(row.get::<_, i8>(1), b'b' as i8);
    assert_eq!(row.get::<_, u32>(2), 0);
    assert_eq!(row.get::<_, Option<u32>>(3), None);
    assert_eq!(row.get::<_, String>(5), "pg_catalog");
    assert!(client.query(sql, &[&999_999u32]).await.unwrap().is_empty());
}

#[tokio::test]
async fn psycopg_type_info_fetch_finds_builtin_types() {
    let node = TestNode::start().await;
    let script = r#"
import sys, psycopg
from psycopg.types import TypeInfo
with psycopg.connect(sys.argv[1]) as conn:
    t = TypeInfo.fetch(conn, "int8")
    assert t is not None and t.oid == 20 and t.array_oid == 1016, t
    assert TypeInfo.fetch(conn, "no_such_type") is None
    print("ok", t.name)
"#;
    let mut c = Command::new(python());
    c.arg("-c").arg(script).arg(node.conn_str());
    assert_eq!(run(c).await.trim(), "ok int8");
}
