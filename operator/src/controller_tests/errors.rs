//! Failures and how they are said: an invalid spec, API server errors and refusals, a missing
//! CRD or token Secret, the error back-off and a lost leader lease.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;

use super::{condition, reconcile_in};
use crate::controller::{Context, backoff, error_policy, reconcile};
use crate::crd::HaCluster;
use crate::fixtures::{NodeBehaviour, NodeMock, Scenario, World, live_sts, timeout_after_1s};
use crate::status::{PROGRESSING, READY};

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
