//! A reconcile's writes: the first one, the credentials Secret (existing, raced, from an older
//! operator), the old finalizer, a pruned disruption budget and the nodes' API token.

use std::time::Duration;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::runtime::controller::Action;

use super::{APPLY, condition, reconcile_in};
use crate::crd::HaCluster;
use crate::fixtures::{NodeBehaviour, NodeMock, Scenario, World, live_sts, sts_status};
use crate::status::{PROGRESSING, READY};

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
async fn deleting_a_cluster_with_the_old_finalizer_only_lets_go_of_it() {
    let c = HaCluster::test().finalized().deleting();
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Cleanup(c)).await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(recorded.requests.len(), 1);
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
        token: Some("s3cret\n"),
        ..World::running(1)
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
