//! Scaling: one pod at a time, joining the meta group, and removing departed nodes and peers.

use std::time::Duration;

use kube::runtime::controller::Action;

use super::{condition, reconcile_in};
use crate::crd::HaCluster;
use crate::fixtures::{NodeBehaviour, NodeMock, Scenario, World, pod};
use crate::status::PROGRESSING;

#[tokio::test]
async fn scaling_down_removes_departed_nodes_through_a_ready_node_once() {
    let node = NodeMock::start(NodeBehaviour::default()).await;
    let before = ["db-0", "db-1", "db-2", "db-3", "db-4"];
    let c = HaCluster::test()
        .http_port(node.port)
        .running_with_nodes(&before);
    let world = World::running(3).with_events(&["DepartedNodesRemoved"]);
    let (result, recorded, _) = reconcile_in(
        c.clone(),
        Scenario::Apply(c.clone(), Box::new(world.clone())),
    )
    .await;
    result.unwrap();
    assert_eq!(
        node.calls(),
        [
            "DELETE /replications/ha_db_db-4",
            "DELETE /cluster/peers/db-4",
            "DELETE /replications/ha_db_db-3",
            "DELETE /cluster/peers/db-3",
        ]
    );
    let status = recorded.status();
    let names: Vec<_> = status.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["db-0", "db-1", "db-2"],
        "cleaned nodes are no longer listed"
    );
    assert_eq!(status.phase.as_deref(), Some("Running"));

    // The next reconcile starts from that status: nothing left to remove.
    let again = c.with_status(status);
    let world = World {
        events: vec![],
        ..world
    };
    let (result, _, _) = reconcile_in(again.clone(), Scenario::Apply(again, Box::new(world))).await;
    result.unwrap();
    assert_eq!(node.calls().len(), 4, "no second cleanup");
}

#[tokio::test]
async fn departed_nodes_wait_until_their_pods_are_gone() {
    let node = NodeMock::start(NodeBehaviour::default()).await;
    let c = HaCluster::test()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2", "db-3"]);
    // Pod 3 is still there (the StatefulSet is removing it).
    let world = World {
        pods: (0..4).map(|i| pod(i, true, "r1")).collect(),
        ..World::running(3)
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(10)));
    assert!(node.calls().is_empty());
    let status = recorded.status();
    assert_eq!(status.phase.as_deref(), Some("Scaling"));
    assert_eq!(condition(&status, PROGRESSING).reason, "ScalingDown");
    assert_eq!(
        status.nodes[3].message.as_deref(),
        Some("leaving: scaled down")
    );
}

#[tokio::test]
async fn scaling_down_takes_one_pod_at_a_time() {
    let node = NodeMock::start(NodeBehaviour {
        members: (0..5).map(|i| format!("db-{i}")).collect(),
        ..NodeBehaviour::default()
    })
    .await;
    let c = HaCluster::test()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2", "db-3", "db-4"]);
    let world = World {
        step: Some(4),
        ..World::running(5).with_events(&["Scaling"])
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let sts = recorded.sts_apply.clone().unwrap();
    assert_eq!(sts["spec"]["replicas"], 4, "one pod per step");
    let status = recorded.status();
    assert_eq!(status.phase.as_deref(), Some("Scaling"));
    let progressing = condition(&status, PROGRESSING);
    assert_eq!(progressing.reason, "ScalingDown");
    assert!(
        progressing.message.starts_with("Scaling 5→4→3"),
        "{}",
        progressing.message
    );
    assert!(node.calls().is_empty(), "nothing to clean yet");
}

#[tokio::test]
async fn scaling_up_waits_until_the_new_pod_joined_the_meta_group() {
    let node = NodeMock::start(NodeBehaviour::default()).await;
    let c = HaCluster::test()
        .replicas(5)
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2", "db-3"]);
    let world = World {
        step: Some(4),
        ..World::running(4)
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    assert_eq!(recorded.sts_apply.clone().unwrap()["spec"]["replicas"], 4);
    let msg = condition(&recorded.status(), PROGRESSING).message.clone();
    assert!(
        msg.contains("db-3 to join the JetStream meta group"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_departed_peer_the_meta_group_still_lists_is_removed_without_a_status() {
    let node = NodeMock::start(NodeBehaviour {
        members: (0..4).map(|i| format!("db-{i}")).collect(),
        ..NodeBehaviour::default()
    })
    .await;
    // The status was lost (e.g. the HaCluster restored from a backup without it).
    let c = HaCluster::test().http_port(node.port);
    let world = World::running(3).with_events(&["DepartedNodesRemoved"]);
    let (result, _, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    assert_eq!(
        node.calls(),
        [
            "DELETE /replications/ha_db_db-3",
            "DELETE /cluster/peers/db-3"
        ]
    );
}

#[tokio::test]
async fn a_departed_pods_servers_are_removed_by_their_generation_names_and_its_consumer_once() {
    // Pod 3 was two servers in its life (its volume was replaced once); both are still listed.
    let mut members: Vec<String> = (0..3).map(|i| format!("db-{i}-g1")).collect();
    members.extend(["db-3-g1".to_string(), "db-3-g2".to_string()]);
    let node = NodeMock::start(NodeBehaviour {
        members,
        ..NodeBehaviour::default()
    })
    .await;
    let c = HaCluster::test().http_port(node.port);
    let world = World::running(3).with_events(&["DepartedNodesRemoved"]);
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    assert_eq!(
        node.calls(),
        [
            "DELETE /replications/ha_db_db-3",
            "DELETE /cluster/peers/db-3-g1",
            "DELETE /cluster/peers/db-3-g2"
        ]
    );
    // The live pods' servers, by their generation names, count as members: no step is held.
    assert_eq!(recorded.status().phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn a_live_pods_earlier_server_left_offline_by_a_replaced_volume_is_removed() {
    // db-1's volume was replaced: it runs as db-1-g2, and db-1-g1 is offline for good.
    let node = NodeMock::start(NodeBehaviour {
        members: ["db-0-g1", "db-1-g1", "db-1-g2", "db-2-g1"]
            .map(String::from)
            .to_vec(),
        offline: vec!["db-1-g1".into()],
        ..NodeBehaviour::default()
    })
    .await;
    let c = HaCluster::test()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    let world = World::running(3).with_events(&["StaleServersRemoved"]);
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    assert_eq!(node.calls(), ["DELETE /cluster/peers/db-1-g1"]);
    assert_eq!(recorded.status().phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn going_from_one_replica_to_three_with_embedded_nats_is_refused_and_said() {
    let node = NodeMock::start(NodeBehaviour::default()).await;
    let c = HaCluster::test()
        .http_port(node.port)
        .running_with_nodes(&["db-0"]);
    let world = World {
        step: Some(1),
        ..World::running(1).with_events(&["ScaleRefused"])
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let sts = recorded.sts_apply.clone().unwrap();
    assert_eq!(sts["spec"]["replicas"], 1, "the StatefulSet stays at 1");
    let status = recorded.status();
    let p = condition(&status, PROGRESSING);
    assert_eq!(
        (p.status.as_str(), p.reason.as_str()),
        ("False", "ScaleRefused")
    );
    assert!(
        p.message.contains("create a new HaCluster"),
        "{}",
        p.message
    );
}

#[tokio::test]
async fn a_failed_peer_removal_keeps_the_node_listed_and_fails_for_a_retry() {
    let node = NodeMock::start(NodeBehaviour {
        peer_removal: 503,
        ..NodeBehaviour::default()
    })
    .await;
    let c = HaCluster::test()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2", "db-3"]);
    let world = World::running(3).with_events(&["CleanupFailed"]);
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    let err = result.unwrap_err();
    assert_eq!(err.metric_label(), "node_api");
    let status = recorded.status();
    let departed = status.nodes.iter().find(|n| n.name == "db-3").unwrap();
    let msg = departed.message.as_deref().unwrap();
    assert!(
        msg.contains("cleanup through db-0 failed") && msg.contains("no JetStream meta leader"),
        "{msg}"
    );
    assert_eq!(status.phase.as_deref(), Some("Scaling"));
}
