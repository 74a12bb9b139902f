//! Rolling updates: the next pod rolled when the others are caught up, a wait while one lags.

use std::time::Duration;

use kube::runtime::controller::Action;

use super::{condition, reconcile_in};
use crate::crd::HaCluster;
use crate::fixtures::{NodeBehaviour, NodeMock, Scenario, World, live_sts, sts_status};
use crate::status::PROGRESSING;

/// Three ready pods at revision r1 while the StatefulSet's update revision is r2.
fn updating() -> World {
    World {
        live_sts: Some(live_sts(3, 3, "r1", "r2", 3)),
        applied_status: Some(sts_status(3, 3, "r1", "r2")),
        ..World::running(3)
    }
}

#[tokio::test]
async fn a_new_revision_is_rolled_to_the_highest_pod_when_the_others_are_caught_up() {
    let node = NodeMock::start(NodeBehaviour::default()).await;
    let c = HaCluster::test()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    let world = updating().with_events(&["RollingUpdate"]);
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(10)));
    let sts = recorded.sts_apply.clone().unwrap();
    assert_eq!(
        sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        2
    );
    let status = recorded.status();
    assert_eq!(status.phase.as_deref(), Some("Updating"));
    let p = condition(&status, PROGRESSING);
    assert_eq!(p.reason, "RollingUpdate");
    assert!(p.message.contains("replacing db-2"), "{}", p.message);
}

#[tokio::test]
async fn a_rolling_update_waits_while_a_node_lags_behind_the_stream() {
    let node = NodeMock::start(NodeBehaviour {
        lag: 50_000,
        ..NodeBehaviour::default()
    })
    .await;
    let c = HaCluster::test()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    let world = updating();
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let sts = recorded.sts_apply.clone().unwrap();
    assert_eq!(
        sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 3,
        "no pod is handed over"
    );
    let p = condition(&recorded.status(), PROGRESSING).clone();
    assert!(p.message.contains("50000 messages behind"), "{}", p.message);
}
