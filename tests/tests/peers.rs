//! JetStream peer removal for scale-down, on a real 3-node cluster of embedded nats-servers:
//! `GET /cluster/peers` lists the meta group, `DELETE /cluster/peers/{name}` removes a server
//! that is gone for good (and its node's durable consumer), refuses this node and live peers,
//! and answers an unknown or already-removed peer with 200. Every wait polls with a deadline.

use std::time::Duration;

use ha_tests::cluster::{TestCluster, status};
use ha_tests::{TestNode, eventually};
use serde_json::{Value as Json, json};

const TOKEN: &str = "peer-admin-token";

async fn call(n: &TestNode, method: reqwest::Method, path: &str, token: bool) -> (u16, Json) {
    let mut req = n.client.request(method, n.url(path));
    if token {
        req = req.bearer_auth(TOKEN);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Json::Null))
}

async fn peers(n: &TestNode) -> Json {
    let (s, j) = call(n, reqwest::Method::GET, "/cluster/peers", true).await;
    assert_eq!(s, 200, "{j}");
    j
}

fn names(j: &Json) -> Vec<String> {
    let mut v: Vec<String> = j["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_departed_server_is_removed_from_the_jetstream_cluster_and_writes_go_on() {
    let mut c = TestCluster::embedded_routes(&["--token", TOKEN])
        .await
        .unwrap();
    let n1 = c.node(0);
    n1.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    n1.sql("INSERT INTO t VALUES (1, 'a')").await.unwrap();
    c.assert_converged(&[("t", "id", json!(1))]).await.unwrap();

    // The meta group as the leader sees it; the route is token-protected.
    let (s, _) = call(n1, reqwest::Method::GET, "/cluster/peers", false).await;
    assert_eq!(s, 401);
    let j = peers(n1).await;
    assert_eq!(names(&j), ["n1", "n2", "n3"], "{j}");
    assert_eq!(j["cluster"], "hatest", "{j}");
    assert_eq!(j["self"], "n1", "{j}");

    // Never this node, never a live peer.
    let (s, j) = call(n1, reqwest::Method::DELETE, "/cluster/peers/n1", true).await;
    assert_eq!(
        (s, j["error"]["code"].as_str()),
        (409, Some("peer_is_self")),
        "{j}"
    );
    let (s, j) = call(n1, reqwest::Method::DELETE, "/cluster/peers/n3", true).await;
    assert_eq!(
        (s, j["error"]["code"].as_str()),
        (409, Some("peer_online")),
        "{j}"
    );

    // n3 goes away for good; once the leader sees it offline, it can be removed.
    c.stop(2).await.unwrap();
    let n1 = c.node(0);
    eventually(Duration::from_secs(30), "n3 to be seen offline", || async {
        let (s, j) = call(n1, reqwest::Method::GET, "/cluster/peers", true).await;
        let offline = j["peers"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == "n3" && p["offline"] == true);
        (s == 200 && offline).then_some(())
    })
    .await
    .unwrap();
    let (s, j) = call(n1, reqwest::Method::DELETE, "/cluster/peers/n3", true).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["removed"], true, "{j}");
    assert_eq!(j["durable"], "t_db_n3", "{j}");
    assert_eq!(j["consumer_deleted"], true, "{j}");

    // The stream no longer counts n3 among its replicas, and the meta group is two servers.
    let js = c.jetstream().await.unwrap();
    let replicas = eventually(Duration::from_secs(30), "n3 to leave the stream", || {
        let js = js.clone();
        async move {
            let mut st = js.get_stream("ha_replication").await.ok()?;
            let info = st.info().await.ok()?;
            let cluster = info.cluster.clone()?;
            let mut all: Vec<String> = cluster.replicas.iter().map(|r| r.name.clone()).collect();
            all.extend(cluster.leader.clone());
            (!all.iter().any(|n| n == "n3")).then_some(all)
        }
    })
    .await
    .unwrap();
    assert!(!replicas.is_empty(), "{replicas:?}");
    let j = eventually(
        Duration::from_secs(30),
        "a two-server meta group",
        || async {
            let j = peers(n1).await;
            (names(&j) == ["n1", "n2"]).then_some(j)
        },
    )
    .await
    .unwrap();
    assert_eq!(j["peers"].as_array().unwrap().len(), 2, "{j}");
    let (_, j) = call(n1, reqwest::Method::GET, "/replications", true).await;
    assert!(!j.to_string().contains("t_db_n3"), "{j}");

    // Writes still work on both remaining nodes, which agree.
    n1.sql("INSERT INTO t VALUES (2, 'b')").await.unwrap();
    c.node(1)
        .sql("INSERT INTO t VALUES (3, 'c')")
        .await
        .unwrap();
    c.assert_converged(&[
        ("t", "id", json!(1)),
        ("t", "id", json!(2)),
        ("t", "id", json!(3)),
    ])
    .await
    .unwrap();

    // Idempotent: again, and an unknown name, are answers, not errors.
    for name in ["n3", "never-was"] {
        let (s, j) = call(
            c.node(1),
            reqwest::Method::DELETE,
            &format!("/cluster/peers/{name}"),
            true,
        )
        .await;
        assert_eq!(s, 200, "{name}: {j}");
        assert_eq!(j["removed"], false, "{j}");
        assert!(
            j["reason"].as_str().unwrap().contains("not a member"),
            "{j}"
        );
        assert_eq!(j["consumer_deleted"], false, "{j}");
    }
    let st = status(c.node(1)).await.unwrap();
    assert_eq!(st["replication"]["gap"], Json::Null, "{st}");

    // A scale back up: the removed server returns under its name with its old store (a
    // StatefulSet keeps the volume). nats-server lets a removed peer back into the meta group
    // only 5 minutes after its removal, but the node must work at once: its consumer (one
    // replica, a cursor) is created, it catches up, and its writes reach the others.
    c.restart(2, &[]).await.unwrap();
    eventually(
        Duration::from_secs(60),
        "a write on the returned n3",
        || async {
            c.node(2)
                .sql("INSERT OR REPLACE INTO t VALUES (4, 'd')")
                .await
                .ok()
        },
    )
    .await
    .unwrap();
    c.assert_converged(&[
        ("t", "id", json!(1)),
        ("t", "id", json!(2)),
        ("t", "id", json!(3)),
        ("t", "id", json!(4)),
    ])
    .await
    .unwrap();
}

/// A node that replicates through an external NATS has no system account to remove peers
/// with: it says so (409), and a node without NATS has no peers at all (404).
#[tokio::test]
async fn without_an_embedded_server_peer_removal_is_refused_clearly() {
    let c = TestCluster::external(1, &[]).await.unwrap();
    let (s, j) = call(
        c.node(0),
        reqwest::Method::DELETE,
        "/cluster/peers/n9",
        false,
    )
    .await;
    assert_eq!(
        (s, j["error"]["code"].as_str()),
        (409, Some("no_system_account")),
        "{j}"
    );
    let (s, j) = call(c.node(0), reqwest::Method::GET, "/cluster/peers", false).await;
    assert_eq!(s, 409, "{j}");
    let solo = TestNode::start(&["file:solo.db"]).await.unwrap();
    let (s, j) = call(&solo, reqwest::Method::GET, "/cluster/peers", false).await;
    assert_eq!(
        (s, j["error"]["code"].as_str()),
        (404, Some("not_replicating")),
        "{j}"
    );
}
