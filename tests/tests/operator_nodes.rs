//! The operator's node client against real `ha` binaries on a real nats-server: what the
//! controller reads from `/status`, the scheduled `POST /snapshot`, and the scale-down cleanup
//! that removes a departed node's durable consumer through a node that stays.
//! Nothing sleeps to synchronise; every wait polls with a deadline.

use std::time::Duration;

use ha_operator::members;
use ha_operator::node_client::{NodeClient, NodeTarget, Removal};
use ha_tests::cluster::TestCluster;
use ha_tests::{TestNode, eventually};

fn target(name: &str, n: &TestNode) -> NodeTarget {
    NodeTarget {
        name: name.into(),
        base_url: format!("http://{}", n.http),
        token: n.token.clone(),
    }
}

#[tokio::test]
async fn the_operator_reads_a_real_nodes_status_and_its_scheduled_snapshot() {
    let c = TestCluster::external(1, &[]).await.unwrap();
    let n = c.node(0);
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    n.sql("INSERT INTO t VALUES (1, 'a')").await.unwrap();
    let client = NodeClient::default();
    let node = target("n1", n);

    // The controller's view of the node: ready, caught up, and the sequence it applied.
    let report = eventually(
        Duration::from_secs(30),
        "the node to apply its writes",
        || {
            let client = client.clone();
            let node = node.clone();
            async move {
                let r = client.status(&node).await.ok()?;
                (r.applied_seq >= Some(2)).then_some(r)
            }
        },
    )
    .await
    .unwrap();
    assert!(report.ready && report.caught_up, "{report:?}");
    assert_eq!(report.lag, Some(0));
    assert!(report.gap.is_none());

    let taken = client.snapshot(&node).await.unwrap();
    assert!(!taken.skipped);
    assert_eq!(Some(taken.seq), report.applied_seq);
    assert!(taken.bytes > 0);
    // A tick with nothing new is answered as a skip, which the status shows as current.
    let again = client.snapshot(&node).await.unwrap();
    assert!(again.skipped, "{again:?}");
}

#[tokio::test]
async fn scale_down_cleanup_removes_a_departed_nodes_durable_consumer_once() {
    let mut c = TestCluster::external(2, &[]).await.unwrap();
    // The operator computes the departed node's durable name as the node does.
    let durable = members::durable_name(ha_tests::cluster::DB_FILE, "n2");
    let consumer_url = c.node(0).url(&format!("/replications/{durable}"));
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(&consumer_url).send().await.unwrap().status(),
        200,
        "n2 has a durable consumer while it runs"
    );
    // n2 departs (its pod is gone), n1 stays and is ready.
    c.stop(1).await.unwrap();
    let client = NodeClient::default();
    let via = target("n1", c.node(0));

    // External NATS: the nodes are no JetStream peers, so only the consumer is removed.
    let what = members::Cleanup {
        cluster: "n",
        db_file: ha_tests::cluster::DB_FILE,
        jetstream_peers: false,
        meta: None,
    };
    let (cleaned, error) = members::clean(&client, &via, &["n2".to_string()], what).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(cleaned.len(), 1);
    assert_eq!(cleaned[0].result, Ok(()));
    assert_eq!(http.get(&consumer_url).send().await.unwrap().status(), 404);

    // A repeated cleanup (a status write that did not land) finds nothing to remove.
    assert_eq!(
        client.remove_consumer(&via, &durable).await.unwrap(),
        Removal::AlreadyGone
    );
    // The node that stays still serves.
    c.node(0)
        .sql("CREATE TABLE after_cleanup(id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
}

/// The scale decision reads the meta group through `NodeClient::peers`: a real cluster of three
/// embedded servers parses into a led group of three current members, which lets a step go.
#[tokio::test]
async fn the_operator_reads_the_meta_group_of_real_embedded_servers() {
    let c = TestCluster::embedded_routes(&[]).await.unwrap();
    let client = NodeClient::default();
    let via = target("n1", c.node(0));
    let meta = eventually(
        Duration::from_secs(30),
        "a led meta group of 3 current members",
        || {
            let (client, via) = (client.clone(), via.clone());
            async move {
                let m = client.peers(&via).await.ok()?;
                let current = m.peers.iter().filter(|p| p.current && !p.offline).count();
                (m.leader.is_some() && current == 3).then_some(m)
            }
        },
    )
    .await
    .unwrap();
    let names: Vec<&str> = meta.peers.iter().map(|p| p.name.as_str()).collect();
    for n in ["n1", "n2", "n3"] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert!(meta.cluster.is_some());
}
