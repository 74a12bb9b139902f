//! The PostgreSQL front end driven by tokio-postgres (simple, prepared, binary), plus raw
//! sockets for hostile input: values, tags, SQLSTATEs, transactions, authentication. Sessions
//! (limits, threads, cancellation, shutdown) are in pg_sessions.rs.

mod common;

use std::time::Duration;

use common::{TestNode, code};
use ha_testkit::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::SimpleQueryMessage;

async fn setup(c: &tokio_postgres::Client) {
    c.batch_execute(
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, ok BOOLEAN, \
         data BLOB, amount NUMERIC, created TIMESTAMP, CHECK (score IS NULL OR score >= 0));
         CREATE TABLE orders(id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id));",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn simple_queries_answer_with_tags_values_and_real_nulls() {
    let node = TestNode::start().await;
    let c = node.client().await;
    setup(&c).await;
    let msgs = c
        .simple_query(
            "INSERT INTO users(id, name) VALUES (1, 'a'), (2, 'b'); \
             UPDATE users SET score = 2.5 WHERE id = 2; SELECT id, name, score FROM users ORDER BY id; \
             DELETE FROM users WHERE id = 1",
        )
        .await
        .unwrap();
    let tags: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(tags, vec![2, 1, 2, 1]);
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rows[0].get(2), None, "NULL is a real NULL");
    assert_eq!(rows[1].get(2), Some("2.5"));
}

#[tokio::test]
async fn prepared_statements_run_at_execute_every_time_with_binary_results() {
    let node = TestNode::start().await;
    let c = node.client().await;
    setup(&c).await;
    let ins = c
        .prepare("INSERT INTO users(id, name, score, ok, data, created) VALUES ($1, $2, $3, $4, $5, '2024-01-02 03:04:05')")
        .await
        .unwrap();
    assert_eq!(ins.params()[0], tokio_postgres::types::Type::INT8);
    assert_eq!(ins.params()[1], tokio_postgres::types::Type::TEXT);
    for (id, name) in [(1i64, "ann"), (2, "bob")] {
        let n = c
            .execute(&ins, &[&id, &name, &1.5f64, &true, &vec![0u8, 255]])
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    // The same prepared statement, no parameters, executed twice: two rows, not one.
    let fixed = c
        .prepare("INSERT INTO orders(user_id) VALUES (1)")
        .await
        .unwrap();
    c.execute(&fixed, &[]).await.unwrap();
    c.execute(&fixed, &[]).await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    let row = c
        .query_one(
            "SELECT id, name, score, ok, data, amount FROM users WHERE id = $1",
            &[&2i64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(row.get::<_, String>(1), "bob");
    assert_eq!(row.get::<_, f64>(2), 1.5);
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, Vec<u8>>(4), vec![0, 255]);
    assert_eq!(
        row.columns()[5].type_(),
        &tokio_postgres::types::Type::NUMERIC
    );
    let created = c
        .query_one("SELECT created FROM users WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(
        created.columns()[0].type_(),
        &tokio_postgres::types::Type::TIMESTAMP
    );
    // Parameters compared with a timestamp column are typed as timestamps.
    let st = c
        .prepare("SELECT id FROM users WHERE created = $1")
        .await
        .unwrap();
    assert_eq!(st.params()[0], tokio_postgres::types::Type::TIMESTAMP);

    // `?` and `:name` placeholders bind by position too.
    let r = c
        .query_one(
            "SELECT name FROM users WHERE id = ? AND name = :n",
            &[&1i64, &"ann"],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "ann");
    // Out-of-order `$2, $1` binds by number.
    let r = c
        .query_one("SELECT $2, $1", &[&"one", &"two"])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "two");
}

#[tokio::test]
async fn errors_carry_postgres_sqlstates_and_sqlite_messages() {
    let node = TestNode::start().await;
    let c = node.client().await;
    setup(&c).await;
    c.execute("INSERT INTO users(id, name) VALUES (1, 'a')", &[])
        .await
        .unwrap();
    let cases = [
        (
            "INSERT INTO users(id, name) VALUES (1, 'b')",
            "23505",
            "UNIQUE constraint failed",
        ),
        ("INSERT INTO users(id) VALUES (5)", "23502", "NOT NULL"),
        (
            "INSERT INTO users(id, name, score) VALUES (6, 'x', -1)",
            "23514",
            "CHECK",
        ),
        (
            "INSERT INTO orders(user_id) VALUES (99)",
            "23503",
            "FOREIGN KEY",
        ),
        ("SELECT * FROM nope", "42P01", "no such table"),
        ("SELEC 1", "42601", "syntax error"),
    ];
    for (sql, want, msg) in cases {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&e), want, "{sql}");
        let db = e.as_db_error().unwrap();
        assert!(db.message().contains(msg), "{sql}: {}", db.message());
        // The extended protocol reports the same.
        let e = c.execute(sql, &[]).await.unwrap_err();
        assert_eq!(code(&e), want, "{sql} (extended)");
    }
    // The connection still works after all that.
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i64>(0),
        1
    );
}

#[tokio::test]
async fn transactions_commit_roll_back_fail_and_recover_like_postgres() {
    let node = TestNode::start().await;
    let c = node.client().await;
    let other = node.client().await;
    setup(&c).await;
    c.batch_execute(
        "BEGIN ISOLATION LEVEL SERIALIZABLE; INSERT INTO users(id, name) VALUES (1, 'a')",
    )
    .await
    .unwrap();
    // Not visible elsewhere before COMMIT.
    let n: i64 = other
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    c.batch_execute("SAVEPOINT s1; INSERT INTO users(id, name) VALUES (2, 'b')")
        .await
        .unwrap();
    // An error puts the transaction in the failed state…
    let e = c
        .batch_execute("INSERT INTO users(id, name) VALUES (1, 'dup')")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505");
    let e = c.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(code(&e), "25P02");
    // …until ROLLBACK TO a savepoint, which undoes what came after it.
    c.batch_execute("ROLLBACK TO SAVEPOINT s1").await.unwrap();
    c.batch_execute("INSERT INTO users(id, name) VALUES (3, 'c'); COMMIT")
        .await
        .unwrap();
    let ids: Vec<i64> = other
        .query("SELECT id FROM users ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 3]);

    // A failed transaction's COMMIT rolls back.
    c.batch_execute("BEGIN; INSERT INTO users(id, name) VALUES (4, 'd')")
        .await
        .unwrap();
    let _ = c.batch_execute("SELECT * FROM nope").await.unwrap_err();
    let msgs = c.simple_query("COMMIT").await.unwrap();
    assert!(matches!(
        msgs.last(),
        Some(SimpleQueryMessage::CommandComplete(_))
    ));
    let n: i64 = other
        .query_one("SELECT count(*) FROM users WHERE id = 4", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // tokio-postgres' own transaction API (BEGIN/COMMIT through the extended protocol).
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO users(id, name) VALUES ($1, $2)",
        &[&10i64, &"t"],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let n: i64 = other
        .query_one("SELECT count(*) FROM users WHERE id = 10", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn transaction_control_behind_comments_is_still_transaction_control() {
    let node = TestNode::start().await;
    let (c, other) = (node.client().await, node.client().await);
    setup(&c).await;
    for sql in [
        "/* x */ BEGIN",
        "INSERT INTO users(id, name) VALUES (1, 'a')",
        "/* keep a */ SAVEPOINT s1",
        "INSERT INTO users(id, name) VALUES (2, 'b')",
        "-- undo b\nROLLBACK TO /* the savepoint */ s1",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
    let count = "SELECT count(*) FROM users";
    let n: i64 = other.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "not visible before COMMIT");
    c.batch_execute("-- c\nCOMMIT").await.unwrap();
    let n: i64 = other.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "row 1 committed, row 2 rolled back");
}

#[tokio::test]
async fn a_client_gone_mid_transaction_leaves_nothing_and_frees_the_writer() {
    let node = TestNode::start().await;
    let c = node.client().await;
    setup(&c).await;
    c.batch_execute("BEGIN; INSERT INTO users(id, name) VALUES (1, 'ghost')")
        .await
        .unwrap();
    drop(c);
    let other = node.client().await;
    // The writer is released (this write would wait forever otherwise) and nothing remains.
    eventually(
        Duration::from_secs(10),
        "the released writer to take a write",
        || async {
            other
                .execute("INSERT INTO users(id, name) VALUES (2, 'real')", &[])
                .await
                .ok()
        },
    )
    .await
    .unwrap();
    let names: Vec<String> = other
        .query("SELECT name FROM users", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, vec!["real"]);
}

#[tokio::test]
async fn an_idle_transaction_holding_the_writer_is_rolled_back() {
    let node = TestNode::start_with(|c| {
        c.pg.idle_in_transaction_timeout = Some(Duration::from_millis(300))
    })
    .await;
    let c = node.client().await;
    setup(&c).await;
    c.batch_execute("BEGIN; INSERT INTO users(id, name) VALUES (1, 'idle')")
        .await
        .unwrap();
    let other = node.client().await;
    // Another writer gets through once the idle session is rolled back.
    other
        .execute("INSERT INTO users(id, name) VALUES (2, 'w')", &[])
        .await
        .unwrap();
    let e = c
        .batch_execute("INSERT INTO users(id, name) VALUES (3, 'late')")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25P03");
    c.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = other
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn wrong_password_and_wrong_user_get_28p01() {
    let node = TestNode::start().await;
    for conn in [
        format!(
            "host=127.0.0.1 port={} user=ha password=nope dbname=ha",
            node.pg.port()
        ),
        format!(
            "host=127.0.0.1 port={} user=eve password=ha dbname=ha",
            node.pg.port()
        ),
    ] {
        let e = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .err()
            .unwrap();
        assert_eq!(code(&e), "28P01", "{conn}");
    }
}

#[tokio::test]
async fn md5_and_cleartext_auth_work_for_old_clients() {
    for method in [
        ha::pgwire::AuthMethod::Md5,
        ha::pgwire::AuthMethod::Password,
    ] {
        let node = TestNode::start_with(|c| c.pg.auth = method).await;
        let c = node.client().await;
        assert_eq!(
            c.query_one("SELECT 7", &[]).await.unwrap().get::<_, i64>(0),
            7
        );
    }
}

#[tokio::test]
async fn garbage_and_truncated_messages_end_only_that_connection() {
    let node = TestNode::start().await;
    let good = node.client().await;
    // Random bytes instead of a startup packet.
    let mut s = tokio::net::TcpStream::connect(node.pg).await.unwrap();
    let mut x: u64 = 0x1234_5678_9abc_def0;
    let junk: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let _ = s.write_all(&junk).await;
    let mut buf = vec![0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    // A startup packet that announces more bytes than it sends, then hangs up.
    let mut s = tokio::net::TcpStream::connect(node.pg).await.unwrap();
    s.write_all(&[0, 0, 0, 200, 0, 3, 0, 0, b'u'])
        .await
        .unwrap();
    drop(s);
    // A huge length.
    let mut s = tokio::net::TcpStream::connect(node.pg).await.unwrap();
    s.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0])
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    // The established client and new ones are served.
    assert_eq!(
        good.query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    let fresh = node.client().await;
    assert_eq!(
        fresh
            .query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        2
    );
}

#[tokio::test]
async fn http_and_pg_give_the_same_values() {
    let node = TestNode::start().await;
    let c = node.client().await;
    setup(&c).await;
    let sql = "SELECT 9007199254740993 AS big, 1.25 AS r, 'héllo' AS t, NULL AS n";
    let row = c.query_one(sql, &[]).await.unwrap();
    let http: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/", node.http))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = http.to_string();
    assert!(text.contains("9007199254740993"), "{text}");
    assert_eq!(row.get::<_, i64>(0), 9_007_199_254_740_993);
    assert_eq!(row.get::<_, f64>(1), 1.25);
    assert_eq!(row.get::<_, String>(2), "héllo");
    assert_eq!(row.get::<_, Option<String>>(3), None);
    assert!(text.contains("héllo") && text.contains("1.25"), "{text}");
}
