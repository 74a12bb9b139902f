//! Convergence whatever SQL users run (issue 13): every node ends with the same rows and
//! schema after triggers, VACUUM, UNIQUE and FOREIGN KEY races, DDL racing DML, a split change
//! set behind a busy writer and transient errors — checked with `ha check` (GET /checksum).
//! Races are made deterministic with a pg transaction that holds one node's writer: that node
//! commits without having applied what another node committed meanwhile.

use ha_tests::cluster::{TestCluster, user_tables};
use ha_tests::converge::{
    cluster_counter, converged, hold_writer, rows_everywhere, wait_write_queue,
};
use serde_json::json;

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
async fn create_table_on_two_nodes_ends_with_one_schema_and_the_loser_gets_409() {
    let c = TestCluster::external(2, &[]).await.unwrap();
    c.node(0)
        .sql("CREATE TABLE seed(id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    converged(&c).await.unwrap();
    let held = hold_writer(c.node(1), "INSERT INTO seed VALUES (1)")
        .await
        .unwrap();
    // Node 1's CREATE waits for the writer; node 0's commits first.
    let url = c.node(1).url("/");
    let create = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(url)
            .json(&json!({"sql": "CREATE TABLE t(a TEXT, b TEXT)"}))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    });
    wait_write_queue(c.node(1), 1).await.unwrap();
    c.node(0).sql("CREATE TABLE t(x INTEGER)").await.unwrap();
    held.batch_execute("COMMIT").await.unwrap();
    let (status, body) = create.await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "serialization_failure", "{body}");
    converged(&c).await.unwrap();
    for rows in rows_everywhere(&c, "SELECT group_concat(name) FROM pragma_table_info('t')")
        .await
        .unwrap()
    {
        assert_eq!(rows, vec![json!(["x"])]);
    }
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
