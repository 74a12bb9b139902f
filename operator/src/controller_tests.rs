//! Reconciler tests against a mocked API server (`fixtures::ApiServerVerifier`) and, where the
//! reconcile talks to nodes, a stand-in ha node over real HTTP (`fixtures::NodeMock`).
//! Each test runs one reconcile and asserts the requests it made and the status it wrote.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::runtime::controller::Action;

use crate::backups::BACKUP_FAILING;
use crate::controller::{Context, backoff, error_policy, reconcile};
use crate::crd::{HaCluster, HaClusterStatus};
use crate::fixtures::{
    NodeBehaviour, NodeMock, Recorded, Scenario, World, live_sts, pod, pvc, sts_status,
    timeout_after_1s,
};
use crate::status::{DEGRADED, PROGRESSING, READY, SNAPSHOT_SUCCEEDED};

const APPLY: &str = "?&force=true&fieldManager=ha-operator";

/// Runs one reconcile of `cluster` in `scenario`; returns its result and what the API saw.
async fn reconcile_in(
    cluster: HaCluster,
    scenario: Scenario,
) -> (
    crate::Result<Action>,
    Recorded,
    Arc<crate::metrics::Metrics>,
) {
    let (ctx, verifier) = Context::test();
    let metrics = ctx.metrics.clone();
    let server = verifier.run(scenario);
    let result = reconcile(Arc::new(cluster), ctx).await;
    let recorded = timeout_after_1s(server).await;
    (result, recorded, metrics)
}

fn condition<'a>(
    s: &'a HaClusterStatus,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} condition in {s:?}"))
}

#[tokio::test]
async fn a_finalizer_an_older_operator_added_is_removed_then_the_cluster_reconciled() {
    let c = HaCluster::test().finalized();
    let world = World {
        legacy_finalizer: true,
        events: vec!["CredentialsGenerated", "Created"],
        ..World::default()
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    assert!(
        recorded.requests[0].starts_with("PATCH"),
        "{:?}",
        recorded.requests
    );
}

#[tokio::test]
async fn a_first_reconcile_creates_the_secret_applies_every_object_and_reports_creating() {
    let c = HaCluster::test().with_ingress();
    let world = World {
        applied_status: Some(sts_status(0, 0, "r1", "r1")),
        events: vec!["CredentialsGenerated", "Created"],
        ..World::default()
    };
    let (result, recorded, _) =
        reconcile_in(c.clone(), Scenario::Apply(c.clone(), Box::new(world))).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(10)));

    // Every child is applied server-side, with one field manager, forced: the objects of the
    // render contract by name, the PDB and Ingress by whatever name the render gives them.
    let r = crate::fixtures::RENDER(
        &c,
        "default",
        &crate::render::Credentials::generate().unwrap(),
    )
    .unwrap();
    let pdb = r.pdb.unwrap().metadata.name.unwrap();
    let ingress = r.ingress.unwrap().metadata.name.unwrap();
    for url in [
        "/api/v1/namespaces/default/configmaps/db-config".to_string(),
        "/api/v1/namespaces/default/services/db-peers".to_string(),
        "/api/v1/namespaces/default/services/db".to_string(),
        "/apis/apps/v1/namespaces/default/statefulsets/db".to_string(),
        format!("/apis/policy/v1/namespaces/default/poddisruptionbudgets/{pdb}"),
        format!("/apis/networking.k8s.io/v1/namespaces/default/ingresses/{ingress}"),
    ] {
        let expected = format!("PATCH {url}{APPLY}");
        assert!(
            recorded.requests.contains(&expected),
            "{expected} missing from {:#?}",
            recorded.requests
        );
    }
    assert!(recorded.requests.contains(
        &"POST /api/v1/namespaces/default/secrets?&fieldManager=ha-operator".to_string()
    ));
    // A new StatefulSet holds every pod (partition = replicas) until an update needs rolling.
    let sts = recorded.sts_apply.clone().unwrap();
    assert_eq!(
        sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        3
    );
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "RollingUpdate");

    let status = recorded.status();
    assert_eq!(status.phase.as_deref(), Some("Creating"));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.ready_replicas, 0);
    assert_eq!(condition(&status, READY).status, "False");
    assert_eq!(condition(&status, PROGRESSING).reason, "Creating");
    let endpoints = status.endpoints.unwrap();
    assert_eq!(endpoints.postgres.as_deref(), Some("db.default.svc:5432"));
    assert_eq!(endpoints.ingress.as_deref(), Some("http://db.example.com/"));
    let patch = recorded.status_patch.unwrap();
    assert_eq!(patch["apiVersion"], "ha.sqlite.dev/v1alpha1");
    assert_eq!(patch["kind"], "HaCluster");
}

#[tokio::test]
async fn an_existing_secret_is_never_created_or_overwritten() {
    let c = HaCluster::test();
    let world = World {
        secret_exists: true,
        live_sts: Some(live_sts(3, 0, "r1", "r1", 3)),
        applied_status: Some(sts_status(3, 0, "r1", "r1")),
        ..World::default()
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let writes: Vec<_> = recorded
        .requests
        .iter()
        .filter(|r| r.contains("/secrets") && !r.starts_with("GET"))
        .collect();
    assert!(writes.is_empty(), "secret writes: {writes:?}");
}

#[tokio::test]
async fn a_secret_created_meanwhile_is_read_back_not_overwritten() {
    let c = HaCluster::test();
    let world = World {
        secret_race: true,
        applied_status: Some(sts_status(0, 0, "r1", "r1")),
        events: vec!["Created"],
        ..World::default()
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let secret_calls: Vec<_> = recorded
        .requests
        .iter()
        .filter(|r| r.contains("/secrets"))
        .collect();
    assert_eq!(secret_calls.len(), 3, "read, create (409), read back");
}

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
async fn failing_backups_are_reported_in_status_a_condition_and_an_event() {
    let node = NodeMock::start(NodeBehaviour {
        backup: serde_json::json!({
            "url": "s3://backups/db", "uploader": true,
            "last_upload_time": "2026-01-01T11:00:00Z", "last_snapshot_seq": 30,
            "archived_seq": 41, "archive_lag_seconds": 0.5,
            "last_error": "PUT s3://backups/db: 403 AccessDenied", "failing": true
        }),
        ..NodeBehaviour::default()
    })
    .await;
    let c = HaCluster::test()
        .with_backup()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    let world = World::running(3).with_events(&["BackupFailing"]);
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let status = recorded.status();
    let b = status.backup.clone().expect("status.backup");
    assert_eq!(b.last_upload_time.as_deref(), Some("2026-01-01T11:00:00Z"));
    assert_eq!((b.last_snapshot_seq, b.archived_seq), (Some(30), Some(41)));
    assert!(
        b.last_error
            .as_deref()
            .unwrap()
            .contains("403 AccessDenied"),
        "{b:?}"
    );
    let failing = condition(&status, BACKUP_FAILING);
    assert_eq!(failing.status, "True");
    assert!(failing.message.contains("db-0: PUT"), "{failing:?}");
    // Backups failing is not the cluster failing.
    assert_eq!(status.phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn backups_that_work_again_are_said_once() {
    let node = NodeMock::start(NodeBehaviour {
        backup: serde_json::json!({
            "url": "s3://backups/db", "uploader": true,
            "last_upload_time": "2026-01-01T11:59:00Z", "last_snapshot_seq": 42,
            "archived_seq": 42, "archive_lag_seconds": 0.1, "last_error": null, "failing": false
        }),
        ..NodeBehaviour::default()
    })
    .await;
    let mut c = HaCluster::test()
        .with_backup()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    if let Some(s) = c.status.as_mut() {
        s.conditions.push(crate::status::condition(
            &[],
            BACKUP_FAILING,
            "True",
            "BackupFailing",
            "db-0: 403".into(),
            Some(1),
            crate::fixtures::now(),
        ));
    }
    let world = World::running(3).with_events(&["BackupRecovered"]);
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let status = recorded.status();
    assert_eq!(condition(&status, BACKUP_FAILING).status, "False");
    assert_eq!(status.backup.unwrap().last_snapshot_seq, Some(42));
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

#[tokio::test]
async fn an_invalid_spec_is_reported_as_failed_counted_and_retried_with_back_off() {
    let c = HaCluster::test().replicas(0);
    let (ctx, verifier) = Context::test();
    let server = verifier.run(Scenario::InvalidSpec(c.clone()));
    let cluster = Arc::new(c);
    let err = reconcile(cluster.clone(), ctx.clone()).await.unwrap_err();
    assert_eq!(err.metric_label(), "invalid_spec");
    assert_eq!(
        error_policy(cluster.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(cluster, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(ctx.metrics.failure_count("invalid_spec"), 2);
    drop(ctx);
    let recorded = timeout_after_1s(server).await;
    let status = recorded.status();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let ready = condition(&status, READY);
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("replicas must be between 1 and 99"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn an_api_server_error_fails_the_reconcile_and_is_counted_by_its_label() {
    let c = HaCluster::test();
    let (ctx, verifier) = Context::test();
    let server = verifier.run(Scenario::ApiServerError(c.clone()));
    let cluster = Arc::new(c);
    let err = reconcile(cluster.clone(), ctx.clone()).await.unwrap_err();
    assert_eq!(err.metric_label(), "kube");
    error_policy(cluster, &err, ctx.clone());
    assert_eq!(ctx.metrics.failure_count("kube"), 1);
    assert!(
        ctx.metrics
            .encode()
            .contains("ha_operator_reconciliations_total 1")
    );
    drop(ctx);
    let recorded = timeout_after_1s(server).await;
    let ready = condition(&recorded.status(), READY).clone();
    assert_eq!(ready.reason, "ApiError");
    assert!(ready.message.contains("InternalError"), "{}", ready.message);
}

#[test]
fn the_error_back_off_doubles_up_to_five_minutes() {
    let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
}

#[tokio::test]
async fn deleting_a_cluster_with_the_old_finalizer_only_lets_go_of_it() {
    let c = HaCluster::test().finalized().deleting();
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Cleanup(c)).await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(recorded.requests.len(), 1);
}

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
    let world = World {
        secret_exists: true,
        live_sts: Some(live_sts(3, 3, "r1", "r1", 3)),
        applied_status: Some(sts_status(3, 3, "r1", "r1")),
        pods: vec![
            pod(0, true, "r1"),
            pod(1, true, "r1"),
            pod(2, true, "r1"),
            pod(3, true, "r1"),
        ],
        ..World::default()
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
        secret_exists: true,
        live_sts: Some(live_sts(5, 5, "r1", "r1", 5)),
        applied_status: Some(sts_status(5, 5, "r1", "r1")),
        pods: (0..5).map(|i| pod(i, true, "r1")).collect(),
        events: vec!["Scaling"],
        step: Some(4),
        ..World::default()
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
        secret_exists: true,
        live_sts: Some(live_sts(4, 4, "r1", "r1", 4)),
        applied_status: Some(sts_status(4, 4, "r1", "r1")),
        pods: (0..4).map(|i| pod(i, true, "r1")).collect(),
        step: Some(4),
        ..World::default()
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
        secret_exists: true,
        live_sts: Some(live_sts(1, 1, "r1", "r1", 1)),
        applied_status: Some(sts_status(1, 1, "r1", "r1")),
        pods: vec![pod(0, true, "r1")],
        events: vec!["ScaleRefused"],
        step: Some(1),
        ..World::default()
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

#[tokio::test]
async fn a_new_revision_is_rolled_to_the_highest_pod_when_the_others_are_caught_up() {
    let node = NodeMock::start(NodeBehaviour::default()).await;
    let c = HaCluster::test()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    let world = World {
        secret_exists: true,
        live_sts: Some(live_sts(3, 3, "r1", "r2", 3)),
        applied_status: Some(sts_status(3, 3, "r1", "r2")),
        pods: vec![pod(0, true, "r1"), pod(1, true, "r1"), pod(2, true, "r1")],
        events: vec!["RollingUpdate"],
        ..World::default()
    };
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
    let world = World {
        secret_exists: true,
        live_sts: Some(live_sts(3, 3, "r1", "r2", 3)),
        applied_status: Some(sts_status(3, 3, "r1", "r2")),
        pods: vec![pod(0, true, "r1"), pod(1, true, "r1"), pod(2, true, "r1")],
        ..World::default()
    };
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

#[tokio::test]
async fn a_disabled_disruption_budget_that_the_cluster_owns_is_removed() {
    let c = HaCluster::test().without_pdb();
    let mut stale = PodDisruptionBudget::default();
    stale.metadata.name = Some("db".into());
    stale.metadata.owner_references = c.controller_owner_ref(&()).map(|o| vec![o]);
    let world = World {
        secret_exists: true,
        live_sts: Some(live_sts(3, 0, "r1", "r1", 3)),
        applied_status: Some(sts_status(3, 0, "r1", "r1")),
        stale_pdb: Some(stale),
        ..World::default()
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    assert!(
        recorded.requests.contains(
            &"DELETE /apis/policy/v1/namespaces/default/poddisruptionbudgets/db?".to_string()
        ),
        "{:#?}",
        recorded.requests
    );
}

#[tokio::test]
async fn the_nodes_api_token_is_read_from_its_secret_and_sent_as_a_bearer_token() {
    let node = NodeMock::start(NodeBehaviour::default()).await;
    let mut c = HaCluster::test()
        .replicas(1)
        .http_port(node.port)
        .running_with_nodes(&["db-0"]);
    c.spec.http.token_secret = Some("api-token".into());
    let world = World {
        secret_exists: true,
        token: Some("s3cret\n"),
        live_sts: Some(live_sts(1, 1, "r1", "r1", 1)),
        applied_status: Some(sts_status(1, 1, "r1", "r1")),
        pods: vec![pod(0, true, "r1")],
        ..World::default()
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    assert_eq!(
        node.calls(),
        ["GET /status Bearer s3cret"],
        "trimmed, as a bearer token"
    );
    assert_eq!(recorded.status().nodes[0].applied_seq, Some(42));
}

#[tokio::test]
async fn a_missing_crd_fails_fast_with_an_install_hint() {
    let (client, verifier) = crate::fixtures::ApiServerVerifier::new();
    let server = tokio::spawn(async move {
        verifier
            .expect(
                http::Method::GET,
                "/apis/ha.sqlite.dev/v1alpha1/haclusters?&limit=1",
            )
            .await
            .not_found();
    });
    let err = crate::controller::check_crd(&client, None)
        .await
        .unwrap_err();
    timeout_after_1s(server).await;
    assert!(
        err.contains("ha-operator crd | kubectl apply -f -"),
        "{err}"
    );
}

#[tokio::test]
async fn an_installed_crd_passes_the_start_up_check_in_one_namespace() {
    let (client, verifier) = crate::fixtures::ApiServerVerifier::new();
    let server = tokio::spawn(async move {
        verifier
            .expect(
                http::Method::GET,
                "/apis/ha.sqlite.dev/v1alpha1/namespaces/prod/haclusters?&limit=1",
            )
            .await
            .respond_json(
                http::StatusCode::OK,
                serde_json::json!({"apiVersion": "ha.sqlite.dev/v1alpha1", "kind": "HaClusterList",
                                   "metadata": {}, "items": []}),
            );
    });
    crate::controller::check_crd(&client, Some("prod"))
        .await
        .unwrap();
    timeout_after_1s(server).await;
}

#[tokio::test]
async fn a_statefulset_the_api_server_refuses_is_reported_in_status_and_events() {
    let c = HaCluster::test().running_with_nodes(&["db-0", "db-1", "db-2"]);
    let world = World {
        secret_exists: true,
        live_sts: Some(live_sts(3, 3, "r1", "r1", 3)),
        sts_error: Some(422),
        events: vec!["ApplyRejected"],
        ..World::default()
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    let err = result.unwrap_err();
    assert_eq!(err.metric_label(), "kube");
    let status = recorded.status();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let ready = condition(&status, READY);
    assert_eq!(ready.reason, "ApplyRejected");
    assert!(
        ready.message.contains("StatefulSet db") && ready.message.contains("volumeClaimTemplates"),
        "{}",
        ready.message
    );
    assert_eq!(condition(&status, PROGRESSING).reason, "ApplyRejected");
    let names: Vec<_> = status.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["db-0", "db-1", "db-2"],
        "the last nodes seen are kept"
    );
}

#[tokio::test]
async fn a_missing_token_secret_is_reported_in_status_and_events() {
    let mut c = HaCluster::test();
    c.spec.http.token_secret = Some("api-token".into());
    let world = World {
        secret_exists: true,
        token_missing: true,
        events: vec!["SecretUnusable"],
        ..World::default()
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    assert_eq!(result.unwrap_err().metric_label(), "secret");
    let ready = condition(&recorded.status(), READY).clone();
    assert_eq!(ready.reason, "SecretUnusable");
    assert!(
        ready.message.contains("api-token") && ready.message.contains("not found"),
        "{}",
        ready.message
    );
}

/// The live StatefulSet with the claim template a `size` volume renders.
fn live_sts_with_storage(size: &str) -> k8s_openapi::api::apps::v1::StatefulSet {
    let mut old = HaCluster::test();
    old.spec.storage.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity(size.into());
    let creds = crate::credentials::from_secret(&crate::fixtures::credentials_secret()).unwrap();
    let rendered = crate::render::render(&old, "default", &creds).unwrap();
    let mut sts = live_sts(3, 3, "r1", "r1", 3);
    sts.spec.as_mut().unwrap().volume_claim_templates = rendered
        .stateful_set
        .spec
        .and_then(|s| s.volume_claim_templates);
    sts
}

#[tokio::test]
async fn a_larger_storage_size_expands_the_claims_and_keeps_the_statefulset_applicable() {
    let mut c = HaCluster::test().running_with_nodes(&["db-0", "db-1", "db-2"]);
    c.spec.storage.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("20Gi".into());
    let world = World {
        secret_exists: true,
        live_sts: Some(live_sts_with_storage("10Gi")),
        applied_status: Some(sts_status(3, 3, "r1", "r1")),
        pvcs: (0..3).map(|i| pvc(i, "10Gi")).collect(),
        expandable: true,
        events: vec!["VolumesExpanding"],
        ..World::default()
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let sts = recorded.sts_apply.clone().unwrap();
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "10Gi",
        "the StatefulSet is applied with the claim template it has"
    );
    let storage = condition(&recorded.status(), "Storage").clone();
    assert_eq!(
        (storage.status.as_str(), storage.reason.as_str()),
        ("False", "Expanding")
    );
    assert!(
        storage.message.contains("data-db-0, data-db-1, data-db-2"),
        "{}",
        storage.message
    );
}

#[tokio::test]
async fn a_class_that_cannot_expand_is_reported_with_what_to_do() {
    let mut c = HaCluster::test().running_with_nodes(&["db-0", "db-1", "db-2"]);
    c.spec.storage.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("20Gi".into());
    let world = World {
        secret_exists: true,
        live_sts: Some(live_sts_with_storage("10Gi")),
        applied_status: Some(sts_status(3, 3, "r1", "r1")),
        pvcs: (0..3).map(|i| pvc(i, "10Gi")).collect(),
        expandable: false,
        events: vec!["VolumeExpansionUnsupported"],
        ..World::default()
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let storage = condition(&recorded.status(), "Storage").clone();
    assert_eq!(storage.reason, "VolumeExpansionUnsupported");
    assert!(
        storage
            .message
            .contains("set spec.storage.size back to 10Gi"),
        "{}",
        storage.message
    );
}

#[tokio::test]
async fn a_secret_from_an_older_operator_gets_only_the_keys_it_lacks() {
    let c = HaCluster::test().running_with_nodes(&["db-0", "db-1", "db-2"]);
    let world = World {
        old_secret: true,
        live_sts: Some(live_sts(3, 3, "r1", "r1", 3)),
        applied_status: Some(sts_status(3, 3, "r1", "r1")),
        events: vec!["CredentialsAdded"],
        ..World::default()
    };
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let sts = recorded.sts_apply.clone().unwrap().to_string();
    assert!(sts.contains("http-token") && sts.contains("nats-cluster-password"));
}

#[tokio::test]
async fn a_replica_that_loses_its_lease_mid_reconcile_stops_before_its_next_write_and_says_so() {
    // A scale-down 3 → 2 is under way: the StatefulSet step, the departed node's cleanup and the
    // status are all writes a replica that no longer leads must not make.
    let node = NodeMock::start(NodeBehaviour::default()).await;
    let c = HaCluster::test()
        .replicas(2)
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    let (lease, leading) = tokio::sync::watch::channel(true);
    let (ctx, verifier) = Context::test_leading(leading);
    let server = verifier.run(Scenario::LeaseLost(c.clone(), lease));
    let cluster = Arc::new(c);
    let err = reconcile(cluster.clone(), ctx.clone()).await.unwrap_err();
    assert_eq!(err.metric_label(), "lease_lost");
    assert!(err.to_string().contains("lost its leader lease"), "{err}");
    error_policy(cluster, &err, ctx.clone());
    assert_eq!(ctx.metrics.failure_count("lease_lost"), 1);
    drop(ctx);
    // The scenario fails on any request after the ConfigMap apply but the Event.
    let recorded = timeout_after_1s(server).await;
    assert!(
        recorded.status_patch.is_none(),
        "no status after the lease is lost"
    );
    assert!(
        !recorded
            .requests
            .iter()
            .any(|r| r.contains("statefulsets/db?")),
        "{:#?}",
        recorded.requests
    );
    assert!(
        recorded
            .requests
            .last()
            .is_some_and(|r| r.contains("/events")),
        "{:#?}",
        recorded.requests
    );
    assert!(node.calls().is_empty(), "{:?}", node.calls());
}
