//! What a reconcile reports of a running cluster: ready nodes with their sequences and lag, and
//! an unreachable node in its status rather than as an error.

use std::time::Duration;

use kube::runtime::controller::Action;

use super::{condition, reconcile_in};
use crate::crd::HaCluster;
use crate::fixtures::{NodeBehaviour, NodeMock, Scenario, World};
use crate::status::{DEGRADED, PROGRESSING, READY};

#[tokio::test]
async fn a_running_cluster_reports_ready_nodes_with_their_sequences_and_lag() {
    let node = NodeMock::start(NodeBehaviour {
        applied_seq: 40,
        lag: 2,
        ..NodeBehaviour::default()
    })
    .await;
    let c = HaCluster::test()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    let world = World::running(3);
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(60)));
    let status = recorded.status();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.ready_replicas, 3);
    assert_eq!(condition(&status, READY).status, "True");
    assert_eq!(condition(&status, PROGRESSING).status, "False");
    assert_eq!(condition(&status, DEGRADED).status, "False");
    assert_eq!(status.nodes.len(), 3);
    for n in &status.nodes {
        assert!(n.ready);
        assert_eq!((n.applied_seq, n.lag), (Some(40), Some(2)), "{n:?}");
        assert_eq!(n.message, None);
    }
    assert!(node.calls().is_empty(), "only /status was read");
}

#[tokio::test]
async fn an_unreachable_node_is_reported_in_its_status_not_as_an_error() {
    // Nothing listens on this port: the nodes' /status cannot be read.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = HaCluster::test()
        .replicas(1)
        .http_port(closed)
        .running_with_nodes(&["db-0"]);
    let world = World::running(1);
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let status = recorded.status();
    let msg = status.nodes[0].message.clone().unwrap();
    assert!(msg.starts_with("status unavailable: unreachable"), "{msg}");
    assert_eq!(status.nodes[0].applied_seq, None);
}
