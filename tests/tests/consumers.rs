//! Each node's durable consumer: one replica in memory (a cursor the node recreates from its
//! database at every start), so it lives on exactly one nats-server. When that server dies the
//! node must recreate its consumer on a live one and keep applying.

use std::time::Duration;

use futures::TryStreamExt;
use ha_tests::cluster::TestCluster;
use ha_tests::{TestNode, eventually};

/// The consumers of the replication stream: (durable name, server holding it, replicas, in memory).
async fn consumers(c: &TestCluster) -> anyhow::Result<Vec<(String, String, usize, bool)>> {
    let js = c.jetstream().await?;
    let stream = js.get_stream("ha_replication").await?;
    let infos: Vec<_> = stream.consumers().try_collect().await?;
    Ok(infos
        .into_iter()
        .map(|i| {
            let leader = i.cluster.and_then(|c| c.leader).unwrap_or_default();
            (
                i.name,
                leader,
                i.config.num_replicas,
                i.config.memory_storage,
            )
        })
        .collect())
}

async fn count(n: &TestNode) -> Option<u64> {
    let r = n.sql("SELECT count(*) FROM t").await.ok()?;
    r["rows"][0][0].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_consumer_lived_on_a_killed_server_recreates_it_and_keeps_applying() {
    let mut c = TestCluster::embedded_routes(&[]).await.unwrap();
    c.node(0)
        .sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    c.assert_converged(&[]).await.unwrap();

    // Every durable is one replica, in memory: no raft group, no disk, no per-ack proposal.
    let all = consumers(&c).await.unwrap();
    assert_eq!(all.len(), 3, "one durable per node: {all:?}");
    for (name, _, replicas, memory) in &all {
        assert_eq!((*replicas, *memory), (1, true), "durable {name}: {all:?}");
    }

    // A node (`follower`) whose consumer is held by another node's server (`host`). When every
    // consumer happens to sit on its own node's server, one is deleted: its node recreates it,
    // placed again by JetStream.
    let (follower, host) = eventually(
        Duration::from_secs(60),
        "a consumer held by another node's server",
        || async {
            let all = consumers(&c).await.ok()?;
            for (name, leader, _, _) in &all {
                let Some(i) = (1..=3).find(|i| name.ends_with(&format!("_n{i}"))) else {
                    continue;
                };
                if let Some(j) = (1..=3).find(|j| *leader == format!("n{j}"))
                    && j != i
                {
                    return Some((i - 1, j - 1));
                }
            }
            let js = c.jetstream().await.ok()?;
            let stream = js.get_stream("ha_replication").await.ok()?;
            let _ = stream.delete_consumer(&all.first()?.0).await;
            None
        },
    )
    .await
    .unwrap();
    let writer = (0..3).find(|k| *k != follower && *k != host).unwrap();
    eprintln!("node {follower}'s consumer is on node {host}'s server; killing node {host}");
    c.kill(host);
    let killed = std::time::Instant::now();

    // The two servers left keep the stream (R3, quorum 2): writes go on, and the follower,
    // whose pull stops with its server, gets them through a consumer it recreated.
    let w = c.node(writer);
    eventually(
        Duration::from_secs(60),
        "a write after the kill",
        || async {
            let r = w
                .sql("INSERT INTO t(v) VALUES ('after the kill')")
                .await
                .ok()?;
            (r["rows"][0][0].as_u64()? == 1).then_some(())
        },
    )
    .await
    .unwrap();
    let want = count(w).await.unwrap();
    let written = killed.elapsed();
    let f = c.node(follower);
    eventually(
        Duration::from_secs(90),
        "the follower applies the write made after its consumer's server died",
        || async { (count(f).await? >= want).then_some(()) },
    )
    .await
    .unwrap();
    eprintln!(
        "after the kill: a write acknowledged in {written:?}, applied by the follower in {:?}",
        killed.elapsed()
    );
    let alive = [format!("n{}", follower + 1), format!("n{}", writer + 1)];
    let all = consumers(&c).await.unwrap();
    let mine = all
        .iter()
        .find(|(name, ..)| name.ends_with(&format!("_n{}", follower + 1)))
        .unwrap_or_else(|| panic!("node {follower}'s durable is gone: {all:?}"));
    assert!(
        alive.contains(&mine.1),
        "node {follower}'s durable is held by a live server: {all:?}"
    );
}
