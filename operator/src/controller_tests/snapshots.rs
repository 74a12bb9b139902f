//! The snapshot tick: due, not due, and due without a ready node.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;

use super::{condition, reconcile_in};
use crate::controller::{Context, reconcile};
use crate::crd::HaCluster;
use crate::fixtures::{
    NodeBehaviour, NodeMock, Scenario, World, live_sts, pod, sts_status, timeout_after_1s,
};
use crate::status::SNAPSHOT_SUCCEEDED;

#[tokio::test]
async fn a_due_snapshot_tick_takes_one_snapshot_on_a_ready_node() {
    let node = NodeMock::start(NodeBehaviour::default()).await;
    let mut c = HaCluster::test()
        .http_port(node.port)
        .schedule("* * * * *")
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    // The last attempt was at 11:59:00; the 12:00:00 tick has passed (now is 12:00:30).
    if let Some(s) = c.status.as_mut() {
        s.last_snapshot = Some(crate::snapshots::failed(
            "2026-01-01T11:59:00Z".parse().unwrap(),
            None,
            "no ready node to take the snapshot".into(),
        ));
    }
    let world = World::running(3).with_events(&["SnapshotTaken"]);
    let (ctx, verifier) = Context::test();
    let server = verifier.run(Scenario::Apply(c.clone(), Box::new(world)));
    let result = reconcile(Arc::new(c), ctx.clone()).await;
    // The attempt is remembered until its status write shows up in the watch cache, so a
    // reconcile of the stale object in between takes no second snapshot for this tick.
    assert_eq!(
        ctx.remembered_attempt("default/db"),
        Some(crate::fixtures::now())
    );
    let metrics = ctx.metrics.clone();
    drop(ctx);
    let recorded = timeout_after_1s(server).await;
    // Requeued for the next tick (12:01:00), 30 s away, plus a second of slack.
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(31)));
    assert_eq!(node.calls(), ["POST /snapshot"]);
    let status = recorded.status();
    let last = status.last_snapshot.clone().unwrap();
    assert_eq!(last.result, "Succeeded");
    assert_eq!(last.sequence, Some(42));
    assert_eq!(last.node.as_deref(), Some("db-0"));
    assert_eq!(last.time, "2026-01-01T12:00:30Z");
    let sc = condition(&status, SNAPSHOT_SUCCEEDED);
    assert_eq!(
        (sc.status.as_str(), sc.reason.as_str()),
        ("True", "SnapshotTaken")
    );
    assert!(
        sc.message.contains("next at 2026-01-01T12:01:00Z"),
        "{}",
        sc.message
    );
    assert!(
        metrics
            .encode()
            .contains("ha_operator_snapshots_total{result=\"succeeded\"} 1")
    );
}

#[tokio::test]
async fn a_snapshot_tick_that_is_not_due_waits_and_says_when() {
    let node = NodeMock::start(NodeBehaviour::default()).await;
    let c = HaCluster::test()
        .http_port(node.port)
        .schedule("0 * * * *")
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    let world = World::running(3);
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(60)));
    assert!(node.calls().is_empty());
    let sc = condition(&recorded.status(), SNAPSHOT_SUCCEEDED).clone();
    assert_eq!(
        (sc.status.as_str(), sc.reason.as_str()),
        ("Unknown", "NoSnapshotYet")
    );
    assert!(
        sc.message.contains("next at 2026-01-01T13:00:00Z"),
        "{}",
        sc.message
    );
}

#[tokio::test]
async fn a_due_tick_without_a_ready_node_records_a_failed_attempt() {
    let c = HaCluster::test()
        .schedule("* * * * *")
        .running_with_nodes(&["db-0"])
        .replicas(1);
    let mut c = c;
    if let Some(s) = c.status.as_mut() {
        s.last_snapshot = Some(crate::snapshots::succeeded(
            "2026-01-01T11:59:00Z".parse().unwrap(),
            "db-0",
            &crate::node_client::SnapshotTaken::default(),
            None,
        ));
    }
    let world = World {
        secret_exists: true,
        live_sts: Some(live_sts(1, 0, "r1", "r1", 1)),
        applied_status: Some(sts_status(1, 0, "r1", "r1")),
        pods: vec![pod(0, false, "r1")],
        events: vec!["SnapshotFailed"],
        ..World::default()
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let status = recorded.status();
    let last = status.last_snapshot.clone().unwrap();
    assert_eq!(last.result, "Failed");
    assert_eq!(
        last.time, "2026-01-01T12:00:30Z",
        "the attempt is the new base"
    );
    assert_eq!(condition(&status, SNAPSHOT_SUCCEEDED).status, "False");
    assert_eq!(status.phase.as_deref(), Some("Degraded"));
}
