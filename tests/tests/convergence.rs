//! Convergence whatever SQL users run (issue 13): every node ends with the same rows and
//! schema after triggers, VACUUM, UNIQUE and FOREIGN KEY races, DDL racing DML, a split change
//! set behind a busy writer and transient errors — checked with `ha check` (GET /checksum).
//! Races are made deterministic with a pg transaction that holds one node's writer: that node
//! commits without having applied what another node committed meanwhile.

use std::time::Duration;

use ha_tests::cluster::{TestCluster, user_tables};
use ha_tests::converge::{
    cluster_counter, converged, hold_writer, rows_everywhere, wait_write_queue,
};
use serde_json::{Value as Json, json};

#[tokio::test]
async fn triggers_do_not_fire_again_when_changes_are_applied() {
    let c = TestCluster::external(2, &[]).await.unwrap();
    let a = c.node(0);
    for sql in [
        "CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT, price INTEGER)",
        "CREATE TABLE log(id INTEGER PRIMARY KEY, what TEXT)",
        "CREATE TRIGGER bi BEFORE INSERT ON item BEGIN INSERT INTO log(what) VALUES ('bi ' || NEW.id); END",
        "CREATE TRIGGER au AFTER UPDATE OF price ON item BEGIN INSERT INTO log(what) VALUES ('price ' || NEW.id); END",
        "INSERT INTO item VALUES (1, 'x', 10)",
        "UPDATE item SET name = 'y' WHERE id = 1",
    ] {
        a.sql(sql).await.unwrap();
    }
    converged(&c).await.unwrap();
    for rows in rows_everywhere(&c, "SELECT what FROM log ORDER BY id")
        .await
        .unwrap()
    {
        assert_eq!(rows, vec![json!(["bi 1"])]);
    }
    // Local statements still run the triggers, on any node.
    c.node(1)
        .sql("UPDATE item SET price = 11 WHERE id = 1")
        .await
        .unwrap();
    converged(&c).await.unwrap();
    for rows in rows_everywhere(&c, "SELECT what FROM log ORDER BY id")
        .await
        .unwrap()
    {
        assert_eq!(rows, vec![json!(["bi 1"]), json!(["price 1"])]);
    }
}

#[tokio::test]
async fn vacuum_is_refused_while_a_table_is_known_by_rowid() {
    let c = TestCluster::external(2, &[]).await.unwrap();
    let a = c.node(0);
    a.sql("CREATE TABLE vac(v TEXT)").await.unwrap();
    a.sql("INSERT INTO vac VALUES ('a'), ('b'), ('c'), ('d'), ('e')")
        .await
        .unwrap();
    a.sql("DELETE FROM vac WHERE v IN ('a', 'b')")
        .await
        .unwrap();
    let (status, body) = a.post(&json!({"sql": "VACUUM"})).await.unwrap();
    assert_eq!(status, 400, "{body}");
    let msg = body.to_string();
    assert!(msg.contains("rowid") && msg.contains("vac"), "{msg}");
    // Changes after the refused VACUUM still reach the same rows everywhere.
    a.sql("UPDATE vac SET v = 'C' WHERE v = 'c'").await.unwrap();
    converged(&c).await.unwrap();
    for rows in rows_everywhere(&c, "SELECT v FROM vac ORDER BY v")
        .await
        .unwrap()
    {
        assert_eq!(rows, vec![json!(["C"]), json!(["d"]), json!(["e"])]);
    }
    // Without such a table, VACUUM runs.
    a.sql("DROP TABLE vac").await.unwrap();
    a.sql("CREATE TABLE k(id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    let (status, body) = a.post(&json!({"sql": "VACUUM"})).await.unwrap();
    assert_eq!(status, 200, "{body}");
}

/// Inserts `mine` on node 1 while its writer is held, `theirs` on node 0 meanwhile, then
/// commits node 1's: node 1's change is later in the stream, written without seeing node 0's.
async fn race(c: &TestCluster, mine: &[&str], theirs: &[&str]) {
    let b = hold_writer(c.node(1), mine[0]).await.unwrap();
    for sql in &mine[1..] {
        b.batch_execute(sql).await.unwrap();
    }
    for sql in theirs {
        c.node(0).sql(sql).await.unwrap();
    }
    b.batch_execute("COMMIT").await.unwrap();
}

async fn unique_race(column: &str) {
    let c = TestCluster::external(2, &[]).await.unwrap();
    c.node(0)
        .sql(&format!(
            "CREATE TABLE u(id INTEGER PRIMARY KEY, email TEXT {column})"
        ))
        .await
        .unwrap();
    converged(&c).await.unwrap();
    race(
        &c,
        &["INSERT INTO u VALUES (2, 'e@x')"],
        &["INSERT INTO u VALUES (1, 'e@x')"],
    )
    .await;
    converged(&c).await.unwrap();
    // The later row in the stream stays (node 1's), on every node.
    for rows in rows_everywhere(&c, "SELECT id, email FROM u")
        .await
        .unwrap()
    {
        assert_eq!(rows, vec![json!([2, "e@x"])]);
    }
    assert!(
        cluster_counter(&c, "constraint_conflicts").await.unwrap() >= 1,
        "the conflict is counted"
    );
    // The loser's key stays deleted; both nodes go on writing the table.
    c.node(0)
        .sql("INSERT INTO u VALUES (3, 'f@x')")
        .await
        .unwrap();
    converged(&c).await.unwrap();
}

#[tokio::test]
async fn a_unique_non_key_column_written_on_two_nodes_keeps_the_newer_row() {
    unique_race("UNIQUE").await;
}

#[tokio::test]
async fn unique_on_conflict_replace_written_on_two_nodes_keeps_the_newer_row() {
    unique_race("UNIQUE ON CONFLICT REPLACE").await;
}

#[tokio::test]
async fn a_child_inserted_while_its_parent_is_deleted_elsewhere_ends_the_same_everywhere() {
    let c = TestCluster::external_dsn(2, "_fk=true", &[]).await.unwrap();
    let a = c.node(0);
    a.sql("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    a.sql("CREATE TABLE child(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id))")
        .await
        .unwrap();
    a.sql("INSERT INTO parent VALUES (1)").await.unwrap();
    converged(&c).await.unwrap();
    race(
        &c,
        &["INSERT INTO child VALUES (10, 1)"],
        &["DELETE FROM parent WHERE id = 1"],
    )
    .await;
    converged(&c).await.unwrap();
    // The rule: replicated rows are applied as they are, foreign keys are not enforced on
    // apply, so the child stays (an orphan) on every node, and nothing is quarantined.
    for rows in rows_everywhere(
        &c,
        "SELECT (SELECT count(*) FROM parent), (SELECT group_concat(id) FROM child)",
    )
    .await
    .unwrap()
    {
        assert_eq!(rows, vec![json!([0, "10"])]);
    }
}

#[tokio::test]
async fn a_column_added_while_another_node_updates_the_row_converges() {
    let c = TestCluster::external(2, &[]).await.unwrap();
    let a = c.node(0);
    a.sql("CREATE TABLE p(id INTEGER PRIMARY KEY, a TEXT)")
        .await
        .unwrap();
    a.sql("INSERT INTO p VALUES (1, 'x')").await.unwrap();
    converged(&c).await.unwrap();
    let b = hold_writer(c.node(1), "UPDATE p SET a = 'y' WHERE id = 1")
        .await
        .unwrap();
    let (status, body) = a
        .post(&json!([
            {"sql": "ALTER TABLE p ADD COLUMN c INTEGER"},
            {"sql": "UPDATE p SET c = 5 WHERE id = 1"}
        ]))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    b.batch_execute("COMMIT").await.unwrap();
    converged(&c).await.unwrap();
    for rows in rows_everywhere(&c, "SELECT a, c FROM p").await.unwrap() {
        assert_eq!(rows, vec![json!(["y", 5])]);
    }
}

#[tokio::test]
async fn create_table_on_two_nodes_ends_with_one_schema_and_the_loser_gets_40001() {
    let c = TestCluster::external(2, &[]).await.unwrap();
    c.node(0)
        .sql("CREATE TABLE seed(id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    converged(&c).await.unwrap();
    // Node 1's CREATE is in an open transaction; node 0's commits first.
    let held = hold_writer(c.node(1), "CREATE TABLE t(a TEXT, b TEXT)")
        .await
        .unwrap();
    c.node(0).sql("CREATE TABLE t(x INTEGER)").await.unwrap();
    let err = held
        .batch_execute("COMMIT")
        .await
        .expect_err("the later CREATE TABLE must not commit");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE),
        "{err:?}"
    );
    converged(&c).await.unwrap();
    for rows in rows_everywhere(&c, "SELECT group_concat(name) FROM pragma_table_info('t')")
        .await
        .unwrap()
    {
        assert_eq!(rows, vec![json!(["x"])]);
    }
    // Over HTTP a batch with DDL that meets the log ahead of its node runs again once the node
    // has caught up: DDL right after the node's own writes just works...
    let a = c.node(0);
    for i in 0..20 {
        a.sql(&format!("INSERT INTO seed VALUES ({i})"))
            .await
            .unwrap();
        a.sql(&format!("ALTER TABLE t ADD COLUMN c{i} INTEGER"))
            .await
            .unwrap();
    }
    // ...and the loser of a real race gets what a serial order gives: the table exists.
    let held = hold_writer(c.node(1), "INSERT INTO seed VALUES (100)")
        .await
        .unwrap();
    let url = c.node(1).url("/");
    let create = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(url)
            .json(&json!({"sql": "CREATE TABLE u(a TEXT)"}))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    });
    wait_write_queue(c.node(1), 1).await.unwrap();
    a.sql("CREATE TABLE u(y INTEGER)").await.unwrap();
    held.batch_execute("COMMIT").await.unwrap();
    let (status, body) = create.await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("already exists"), "{body}");
    converged(&c).await.unwrap();
}

#[tokio::test]
async fn a_transaction_writing_a_table_dropped_meanwhile_keeps_its_other_rows() {
    let c = TestCluster::external(2, &[]).await.unwrap();
    let a = c.node(0);
    a.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    a.sql("CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    converged(&c).await.unwrap();
    race(
        &c,
        &[
            "INSERT INTO t VALUES (1, 'b')",
            "INSERT INTO u VALUES (1, 'b')",
        ],
        &["DROP TABLE t"],
    )
    .await;
    converged(&c).await.unwrap();
    for n in c.nodes() {
        assert_eq!(user_tables(n).await.unwrap(), vec!["u".to_string()]);
    }
    for rows in rows_everywhere(&c, "SELECT id, v FROM u").await.unwrap() {
        assert_eq!(rows, vec![json!([1, "b"])]);
    }
}

#[tokio::test]
async fn a_column_renamed_while_another_node_updates_it_keeps_the_update() {
    let c = TestCluster::external(2, &[]).await.unwrap();
    let a = c.node(0);
    a.sql("CREATE TABLE p(id INTEGER PRIMARY KEY, a TEXT, n INTEGER)")
        .await
        .unwrap();
    a.sql("INSERT INTO p VALUES (1, 'x', 0)").await.unwrap();
    converged(&c).await.unwrap();
    // Node 1 updates `a` and inserts a row without having seen the rename: its images say `a`.
    race(
        &c,
        &[
            "UPDATE p SET a = 'y', n = 1 WHERE id = 1",
            "INSERT INTO p VALUES (2, 'z', 2)",
        ],
        &["ALTER TABLE p RENAME COLUMN a TO b"],
    )
    .await;
    converged(&c).await.unwrap();
    for rows in rows_everywhere(&c, "SELECT id, b, n FROM p ORDER BY id")
        .await
        .unwrap()
    {
        assert_eq!(rows, vec![json!([1, "y", 1]), json!([2, "z", 2])]);
    }
}

#[tokio::test]
async fn a_table_renamed_while_another_node_writes_it_keeps_the_writes_and_their_order() {
    let c = TestCluster::external(2, &[]).await.unwrap();
    let a = c.node(0);
    a.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    a.sql("INSERT INTO t VALUES (1, 'old')").await.unwrap();
    converged(&c).await.unwrap();
    race(
        &c,
        &[
            "INSERT INTO t VALUES (2, 'b')",
            "UPDATE t SET v = 'b' WHERE id = 1",
        ],
        &["ALTER TABLE t RENAME TO t2"],
    )
    .await;
    converged(&c).await.unwrap();
    // The renamed table goes on replicating, its rows' versions with it.
    a.sql("UPDATE t2 SET v = 'newest' WHERE id = 1")
        .await
        .unwrap();
    converged(&c).await.unwrap();
    for n in c.nodes() {
        assert_eq!(user_tables(n).await.unwrap(), vec!["t2".to_string()]);
    }
    for rows in rows_everywhere(&c, "SELECT id, v FROM t2 ORDER BY id")
        .await
        .unwrap()
    {
        assert_eq!(rows, vec![json!([1, "newest"]), json!([2, "b"])]);
    }
}

/// Node 1 writes `t` (and `u`) without having seen node 0 run `theirs`, which lets the name `t`
/// go and then creates a new `t` with one row of its own: node 1's rows followed the old table
/// when node 1 applied `theirs`, so on every node `query` gives `expected` and the new `t` holds
/// only its own row (node 1's rows used to land in the new `t` on node 0 only).
async fn name_taken_again(theirs: &str, query: &str, expected: Json) {
    let c = TestCluster::external(2, &[]).await.unwrap();
    let a = c.node(0);
    for sql in [
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t VALUES (1, 'old')",
    ] {
        a.sql(sql).await.unwrap();
    }
    converged(&c).await.unwrap();
    race(
        &c,
        &[
            "INSERT INTO t VALUES (2, 'b')",
            "UPDATE t SET v = 'b' WHERE id = 1",
            "INSERT INTO u VALUES (1, 'b')",
        ],
        &[
            theirs,
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
            "INSERT INTO t VALUES (7, 'new')",
        ],
    )
    .await;
    converged(&c).await.unwrap();
    for (sql, want) in [
        (query, expected),
        ("SELECT id, v FROM t ORDER BY id", json!([[7, "new"]])),
        ("SELECT id, v FROM u", json!([[1, "b"]])),
    ] {
        for rows in rows_everywhere(&c, sql).await.unwrap() {
            assert_eq!(Json::from(rows), want, "{sql}");
        }
    }
}

#[tokio::test]
async fn a_write_to_a_table_renamed_and_whose_name_was_taken_again_follows_the_old_table() {
    name_taken_again(
        "ALTER TABLE t RENAME TO t2",
        "SELECT id, v FROM t2 ORDER BY id",
        json!([[1, "b"], [2, "b"]]),
    )
    .await;
}

#[tokio::test]
async fn a_write_to_a_table_dropped_and_created_again_meanwhile_goes_with_the_dropped_table() {
    name_taken_again(
        "DROP TABLE t",
        "SELECT count(*) FROM sqlite_schema WHERE name = 't2'",
        json!([[0]]),
    )
    .await;
}

/// Node 1 updates column `a` without having seen node 0 rename `a` to `b` and add a new `a`, or
/// drop `c` and add a new `c`: node 1's values followed the old columns (to `b`, and away with
/// `c`), so on every node `b` has them and the new columns are empty.
#[tokio::test]
async fn an_update_of_columns_renamed_or_dropped_and_added_again_follows_the_old_columns() {
    let c = TestCluster::external(2, &[]).await.unwrap();
    let a = c.node(0);
    a.sql("CREATE TABLE p(id INTEGER PRIMARY KEY, a TEXT, c TEXT, n INTEGER)")
        .await
        .unwrap();
    a.sql("INSERT INTO p VALUES (1, 'x', 'x', 0)")
        .await
        .unwrap();
    converged(&c).await.unwrap();
    race(
        &c,
        &["UPDATE p SET a = 'y', c = 'y', n = 1 WHERE id = 1"],
        &[
            "ALTER TABLE p RENAME COLUMN a TO b",
            "ALTER TABLE p ADD COLUMN a TEXT",
            "ALTER TABLE p DROP COLUMN c",
            "ALTER TABLE p ADD COLUMN c TEXT",
        ],
    )
    .await;
    converged(&c).await.unwrap();
    for rows in rows_everywhere(&c, "SELECT id, a, b, c, n FROM p")
        .await
        .unwrap()
    {
        assert_eq!(rows, vec![json!([1, null, "y", null, 1])]);
    }
}

/// A small deterministic generator (splitmix64): the same seed gives the same operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT)",
    "CREATE TABLE tags(name TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID",
    "CREATE TABLE parent(id INTEGER PRIMARY KEY, v TEXT)",
    "CREATE TABLE child_c(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id) ON DELETE CASCADE, v TEXT)",
    "CREATE TABLE child_n(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id), v TEXT)",
    "CREATE TABLE rep(id INTEGER PRIMARY KEY, code TEXT UNIQUE ON CONFLICT REPLACE, v INTEGER)",
    "CREATE TABLE notes(body TEXT)",
    "CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT)",
    "CREATE TRIGGER users_ai AFTER INSERT ON users BEGIN INSERT INTO audit(what) VALUES ('new ' || NEW.id); END",
];

/// One random statement of the mix (the caller may group several into a transaction).
fn random_statement(r: &mut Rng, client: u64, step: u64) -> String {
    let id = r.below(60) + 1;
    let email = format!("e{}@x", r.below(25));
    let v = r.below(1000);
    match r.below(100) {
        0..=11 => format!("INSERT INTO users(id, email, name) VALUES ({id}, '{email}', 'n{v}')"),
        12..=19 => format!(
            "INSERT INTO users(id, email, name) VALUES ({id}, '{email}', 'u{v}') \
             ON CONFLICT(id) DO UPDATE SET name = excluded.name"
        ),
        20..=27 => format!("UPDATE users SET name = 'x{v}' WHERE id = {id}"),
        28..=32 => format!("DELETE FROM users WHERE id = {id}"),
        33..=40 => format!(
            "INSERT OR REPLACE INTO rep(id, code, v) VALUES ({id}, 'c{}', {v})",
            r.below(20)
        ),
        41..=47 => format!(
            "INSERT INTO tags(name, n) VALUES ('t{}', {v}) ON CONFLICT(name) DO UPDATE SET n = excluded.n",
            r.below(30)
        ),
        48..=50 => format!("DELETE FROM tags WHERE name = 't{}'", r.below(30)),
        51..=56 => format!(
            "INSERT OR REPLACE INTO parent(id, v) VALUES ({}, 'p{v}')",
            r.below(15) + 1
        ),
        57..=59 => format!("DELETE FROM parent WHERE id = {}", r.below(15) + 1),
        60..=65 => format!(
            "INSERT OR REPLACE INTO child_c(id, pid, v) VALUES ({id}, {}, 'c{v}')",
            r.below(15) + 1
        ),
        66..=70 => format!(
            "INSERT OR REPLACE INTO child_n(id, pid, v) VALUES ({id}, {}, 'n{v}')",
            r.below(15) + 1
        ),
        71..=78 => format!("INSERT INTO notes(body) VALUES ('b{v}')"),
        79..=82 => format!("DELETE FROM notes WHERE rowid = {}", r.below(40) + 1),
        83..=86 => format!(
            "UPDATE notes SET body = 'u{v}' WHERE rowid = {}",
            r.below(40) + 1
        ),
        87..=89 => format!("UPDATE users SET email = '{email}' WHERE id = {id}"),
        // DDL, sometimes refused (409) when another node's change came first.
        90 => format!("ALTER TABLE users ADD COLUMN c{client}_{step} INTEGER DEFAULT {v}"),
        91 => format!(
            "CREATE INDEX IF NOT EXISTS notes_{} ON notes(body)",
            r.below(3)
        ),
        92 => format!(
            "CREATE TABLE IF NOT EXISTS tmp{}(id INTEGER PRIMARY KEY, v)",
            r.below(3)
        ),
        93 => format!("DROP TABLE IF EXISTS tmp{}", r.below(3)),
        94 => {
            // Renames there and back, columns added and dropped, racing the writes below (by name
            // `tmp<k>` and `v`).
            let k = r.below(3);
            match r.below(6) {
                0 => format!("ALTER TABLE tmp{k} RENAME TO tmpr{k}"),
                1 => format!("ALTER TABLE tmpr{k} RENAME TO tmp{k}"),
                2 => format!("ALTER TABLE tmp{k} RENAME COLUMN v TO w"),
                3 => format!("ALTER TABLE tmp{k} RENAME COLUMN w TO v"),
                // A column's name taken again after a rename, and a column dropped.
                4 => format!("ALTER TABLE tmp{k} ADD COLUMN v"),
                _ => format!("ALTER TABLE tmp{k} DROP COLUMN w"),
            }
        }
        95..=96 => format!(
            "INSERT OR REPLACE INTO tmp{}(id, v) VALUES ({id}, {v})",
            r.below(3)
        ),
        97 => format!(
            "CREATE TRIGGER IF NOT EXISTS tag_log{} AFTER UPDATE OF n ON tags BEGIN \
             INSERT INTO audit(what) VALUES ('tag ' || NEW.name); END",
            r.below(2)
        ),
        _ => format!("UPDATE rep SET v = {v} WHERE code = 'c{}'", r.below(20)),
    }
}

/// What the clients of the randomized test did.
#[derive(Default)]
struct Tally {
    ok: u64,
    refused: std::collections::BTreeMap<u16, u64>,
    /// Transactions without DDL refused as serialization failures (only DDL may lose the race
    /// for the stream position).
    plain_conflicts: u64,
}

/// One client: random statements and transactions against the node whose URL is `urls[node]`
/// (it changes when the node restarts), until `stop`.
async fn client(
    seed: u64,
    id: u64,
    node: usize,
    urls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Tally {
    let mut r = Rng(seed ^ (id.wrapping_mul(0x1000_0000_01B3)));
    let http = reqwest::Client::new();
    let mut tally = Tally::default();
    let mut step = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        step += 1;
        let n = if r.below(5) == 0 { r.below(4) + 2 } else { 1 };
        let stmts: Vec<serde_json::Value> = (0..n)
            .map(|_| json!({"sql": random_statement(&mut r, id, step)}))
            .collect();
        let body = if n == 1 {
            stmts[0].clone()
        } else {
            json!(stmts)
        };
        let url = urls.lock().unwrap()[node].clone();
        match http.post(&url).json(&body).send().await {
            Ok(resp) if resp.status().is_success() => tally.ok += 1,
            Ok(resp) => {
                let s = resp.status().as_u16();
                let answer = resp.text().await.unwrap_or_default();
                assert!(s < 500 || s == 503, "HTTP {s} for {body}: {answer}");
                *tally.refused.entry(s).or_default() += 1;
                let text = body.to_string();
                if answer.contains("serialization_failure")
                    && !["ALTER ", "CREATE ", "DROP "]
                        .iter()
                        .any(|k| text.contains(k))
                {
                    tally.plain_conflicts += 1;
                }
            }
            // The node is restarting.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    tally
}

/// 3 nodes, 2 clients on each running a seeded random mix of DML, transactions and DDL over
/// tables with UNIQUE, ON CONFLICT REPLACE, foreign keys with and without CASCADE, triggers,
/// rowid and WITHOUT ROWID tables; one node restarts halfway. At the end every node's
/// checksums are equal. `HA_SEED` replays a run, `HA_CONVERGE_SECS` (default 30) sets how
/// long the clients write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_concurrent_writes_on_every_node_converge() {
    let seed: u64 = std::env::var("HA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let secs: u64 = std::env::var("HA_CONVERGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    eprintln!("randomized convergence: HA_SEED={seed} HA_CONVERGE_SECS={secs}");
    let mut c = TestCluster::external_dsn(3, "_fk=true", &[]).await.unwrap();
    for sql in SCHEMA {
        c.node(0).sql(sql).await.unwrap();
    }
    converged(&c).await.unwrap();
    let urls = std::sync::Arc::new(std::sync::Mutex::new(
        c.nodes().iter().map(|n| n.url("/")).collect::<Vec<_>>(),
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..6u64 {
        clients.push(tokio::spawn(client(
            seed,
            id,
            (id % 3) as usize,
            urls.clone(),
            stop.clone(),
        )));
    }
    let run = std::time::Duration::from_secs(secs);
    tokio::time::sleep(run / 3).await;
    // A node restart while the others keep writing.
    c.stop(2).await.unwrap();
    tokio::time::sleep(run / 6).await;
    c.restart(2, &[]).await.unwrap();
    urls.lock().unwrap()[2] = c.node(2).url("/");
    tokio::time::sleep(run / 2).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = Tally::default();
    for t in clients {
        let t = t.await.unwrap();
        total.ok += t.ok;
        total.plain_conflicts += t.plain_conflicts;
        for (s, n) in t.refused {
            *total.refused.entry(s).or_default() += n;
        }
    }
    let result = converged(&c).await;
    let conflicts = cluster_counter(&c, "constraint_conflicts").await.unwrap();
    let collisions = cluster_counter(&c, "key_collisions").await.unwrap();
    eprintln!(
        "randomized convergence: HA_SEED={seed}: {} transactions committed, refused by status {:?} \
         ({} serialization failures without DDL), {conflicts} UNIQUE conflicts and {collisions} key collisions \
         resolved (summed over nodes)",
        total.ok, total.refused, total.plain_conflicts
    );
    result.unwrap();
    assert!(total.ok > 0, "the clients committed nothing");
    // Only a schema change can lose the race for the stream position; the transactions it
    // would have shared a group commit with are not refused with it.
    assert_eq!(
        total.plain_conflicts, 0,
        "serialization failures of transactions without DDL"
    );
}

/// SQLite's write lock on node 1's file, taken by another process's connection for longer than
/// the old retry budget: the node keeps retrying (busy is transient), quarantines nothing, and
/// applies the change once the lock is gone.
#[tokio::test]
async fn a_change_that_meets_a_locked_database_is_retried_until_it_applies() {
    let c = TestCluster::external_dsn(2, "_busy_timeout=100", &[])
        .await
        .unwrap();
    c.node(0)
        .sql("CREATE TABLE t(id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    converged(&c).await.unwrap();
    let file = ha_tests::cluster::member_dir(&c.members[1]).join(ha_tests::cluster::DB_FILE);
    let lock = rusqlite::Connection::open(&file).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    c.node(0).sql("INSERT INTO t VALUES (1)").await.unwrap();
    // The fault: the lock stays longer than 5 attempts with back-off used to take (~5 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    converged(&c).await.unwrap();
    let retries = ha_tests::converge::repl_counter(c.node(1), "apply_retries")
        .await
        .unwrap();
    eprintln!("apply retries while locked: {retries}");
    assert!(retries > 0, "the lock did not hold the apply back");
    for rows in rows_everywhere(&c, "SELECT id FROM t").await.unwrap() {
        assert_eq!(rows, vec![json!([1])]);
    }
}

/// A split change set whose first part arrived together with a message the busy writer could
/// not apply yet (a pg transaction held it longer than the part timeout): its other parts come
/// later and it is applied, not dropped.
#[tokio::test]
async fn a_split_change_set_is_not_dropped_while_the_writer_is_busy() {
    use ha_changeset::{Change, ChangeSet, FORMAT_VERSION, Operation, Value, split};
    // Part timeout: twice the replication timeout, 4 s.
    let c = TestCluster::external(2, &["--replication-timeout", "2s"])
        .await
        .unwrap();
    let a = c.node(0);
    a.sql("CREATE TABLE big(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    a.sql("CREATE TABLE small(id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    converged(&c).await.unwrap();
    let b = c.node(1);
    // Session 1 holds node 1's writer: node 0's next change (Y) waits for it.
    let s1 = hold_writer(b, "INSERT INTO small VALUES (100)")
        .await
        .unwrap();
    a.sql("INSERT INTO small VALUES (1)").await.unwrap();
    wait_write_queue(b, 1).await.unwrap();
    // Session 2 queues for the writer behind Y's apply.
    let s2 = ha_tests::converge::pg(b).await.unwrap();
    s2.batch_execute("BEGIN").await.unwrap();
    let (holding_tx, holding) = tokio::sync::oneshot::channel();
    let s2 = tokio::spawn(async move {
        s2.batch_execute("INSERT INTO small VALUES (101)")
            .await
            .unwrap();
        let _ = holding_tx.send(());
        s2
    });
    wait_write_queue(b, 2).await.unwrap();
    // X, then the first part of a split change set, both delivered to node 1 meanwhile.
    a.sql("INSERT INTO small VALUES (2)").await.unwrap();
    let mut cs = ChangeSet::new("zz", 7, "t.db");
    cs.format = Some(FORMAT_VERSION);
    cs.timestamp_ns = 1;
    for i in 1..=300i64 {
        let mut ch = Change::new(Operation::Insert, "big");
        ch.columns = vec!["id".into(), "v".into()];
        ch.new_values = vec![Value::Integer(i), Value::Text("x".repeat(60))];
        ch.old_rowid = i;
        ch.new_rowid = i;
        cs.changes.push(ch);
    }
    let parts = split(&cs, 24 * 1024).unwrap();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let js = c.jetstream().await.unwrap();
    let subject = "ha_replication.t_db";
    let first = js
        .publish(subject, parts[0].clone().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let stream = js.get_stream("ha_replication").await.unwrap();
    ha_tests::eventually(
        Duration::from_secs(20),
        "node 1 to receive the first part",
        || {
            let stream = stream.clone();
            async move {
                let info = stream.consumer_info("t_db_n2").await.ok()?;
                (info.delivered.stream_sequence >= first).then_some(())
            }
        },
    )
    .await
    .unwrap();
    // Y applies, session 2 takes the writer; X and the first part wait behind it.
    s1.batch_execute("COMMIT").await.unwrap();
    holding.await.unwrap();
    // The origin sends the other parts soon (node 0, whose writer is free, completes the set
    // well within the part timeout)...
    tokio::time::sleep(Duration::from_secs(1)).await;
    for p in &parts[1..] {
        js.publish(subject, p.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // ...while node 1's writer stays busy longer than the part timeout (the fault).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s2 = s2.await.unwrap();
    s2.batch_execute("COMMIT").await.unwrap();
    converged(&c).await.unwrap();
    for rows in rows_everywhere(&c, "SELECT count(*) FROM big")
        .await
        .unwrap()
    {
        assert_eq!(rows, vec![json!([300])]);
    }
}
