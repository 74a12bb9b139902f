//! The PostgreSQL front end driven by the real tools users run: psql, pgbench (simple,
//! extended, prepared), psycopg 3 (with pipeline mode) and asyncpg (binary results).
//! Needs psql/pgbench in PATH and the Python venv of `scripts/install-deps.sh` in
//! `<repo>/.tools` (or `HA_TEST_PYTHON`).

mod common;

use std::process::Command;

use common::{TestNode, python};

async fn run(cmd: Command) -> String {
    common::run_command(cmd, false).await
}

fn psql(node: &TestNode, args: &[&str]) -> Command {
    let mut c = Command::new("psql");
    c.arg(node.conn_str())
        .arg("-X")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .args(args);
    c
}

#[tokio::test]
async fn psql_runs_queries_and_multi_statement_commands() {
    let node = TestNode::start().await;
    let out = run(psql(
        &node,
        &[
            "-At",
            "-c",
            "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'ann'), (2, NULL); SELECT count(*) FROM users",
            "-c",
            "SELECT id, coalesce(name, 'null!') FROM users ORDER BY id",
            "-c",
            "SHOW server_version",
        ],
    ))
    .await;
    // psql 15 prints the result of every statement of a -c string, as with PostgreSQL.
    assert_eq!(out, "CREATE TABLE\nINSERT 0 2\n2\n1|ann\n2|null!\n15.0\n");
    // A failing statement in a -c string rolls back the whole string (one implicit transaction).
    let mut bad = psql(
        &node,
        &[
            "-c",
            "INSERT INTO users VALUES (3, 'c'); INSERT INTO users VALUES (1, 'dup')",
        ],
    );
    bad.env("PGCONNECT_TIMEOUT", "10");
    let out = tokio::task::spawn_blocking(move || bad.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNIQUE constraint failed"));
    let out = run(psql(&node, &["-At", "-c", "SELECT count(*) FROM users"])).await;
    assert_eq!(out, "2\n");
}

#[tokio::test]
async fn pgbench_runs_custom_scripts_in_every_protocol_mode() {
    let node = TestNode::start().await;
    run(psql(
        &node,
        &[
            "-c",
            "CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER); INSERT INTO kv VALUES (1, 0)",
        ],
    ))
    .await;
    let script = node.dir.path().join("bench.sql");
    std::fs::write(
        &script,
        "\\set k random(1, 1)\nSELECT v FROM kv WHERE k = :k;\nINSERT INTO kv(v) VALUES (:k);\n",
    )
    .unwrap();
    for mode in ["simple", "extended", "prepared"] {
        let mut c = Command::new("pgbench");
        c.args(["-n", "-f"])
            .arg(&script)
            .args([
                "-t",
                "20",
                "-c",
                "2",
                "-M",
                mode,
                "-h",
                "127.0.0.1",
                "-U",
                "ha",
            ])
            .arg("-p")
            .arg(node.pg.port().to_string())
            .arg("ha")
            .env("PGPASSWORD", "ha");
        let out = run(c).await;
        assert!(
            out.contains("number of transactions actually processed: 40/40"),
            "{mode}: {out}"
        );
    }
    let out = run(psql(&node, &["-At", "-c", "SELECT count(*) FROM kv"])).await;
    assert_eq!(out, "121\n", "every INSERT of every mode ran (1 + 3 × 40)");
}

#[tokio::test]
async fn psycopg3_works_including_pipeline_mode() {
    let node = TestNode::start().await;
    let script = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    with conn.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (%s, %s, %s)", (1, "a", 1.5))
        cur.executemany("INSERT INTO t VALUES (%s, %s, %s)", [(2, "b", None), (3, "c", 2.0)])
    conn.commit()
    with conn.pipeline():
        for i in range(10, 20):
            conn.execute("INSERT INTO t(id, name) VALUES (%s, %s)", (i, f"p{i}"))
    conn.commit()
    rows = conn.execute("SELECT id, name, score FROM t WHERE id <= %s ORDER BY id", (3,)).fetchall()
    assert rows == [(1, "a", 1.5), (2, "b", None), (3, "c", 2.0)], rows
    n = conn.execute("SELECT count(*) FROM t").fetchone()[0]
    assert n == 13, n
    try:
        conn.execute("INSERT INTO t VALUES (1, 'dup', 0)")
        raise SystemExit("no error")
    except psycopg.errors.UniqueViolation:
        conn.rollback()
    # The pid psycopg got in BackendKeyData is the one the session reports.
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert pid == conn.info.backend_pid and pid != 0, (pid, conn.info.backend_pid)
    print("ok", n)
"#;
    let mut c = Command::new(python());
    c.arg("-c").arg(script).arg(node.conn_str());
    assert_eq!(run(c).await.trim(), "ok 13");
}

#[tokio::test]
async fn asyncpg_works_with_binary_results() {
    let node = TestNode::start().await;
    let script = r#"
import sys, asyncio, asyncpg
async def main():
    conn = await asyncpg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="ha", password="ha", database="ha")
    await conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, ok BOOLEAN, data BLOB)")
    await conn.execute("INSERT INTO t VALUES ($1, $2, $3, $4, $5)", 1, "a", 1.5, True, b"\x00\xff")
    await conn.executemany("INSERT INTO t(id, name) VALUES ($1, $2)", [(2, "b"), (3, "c")])
    row = await conn.fetchrow("SELECT id, name, score, ok, data FROM t WHERE id = $1", 1)
    assert tuple(row) == (1, "a", 1.5, True, b"\x00\xff"), tuple(row)
    async with conn.transaction():
        await conn.execute("INSERT INTO t(id, name) VALUES ($1, $2)", 4, "d")
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO t(id, name) VALUES ($1, $2)", 5, "e")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    n = await conn.fetchval("SELECT count(*) FROM t")
    nulls = await conn.fetchval("SELECT count(*) FROM t WHERE score IS NULL")
    await conn.close()
    print("ok", n, nulls)
asyncio.run(main())
"#;
    let mut c = Command::new(python());
    c.arg("-c").arg(script).arg(node.pg.port().to_string());
    assert_eq!(run(c).await.trim(), "ok 4 3");
}
