//! Growing `spec.storage.size`: the claims expanded, or a class that cannot expand reported.

use super::{condition, reconcile_in};
use crate::crd::HaCluster;
use crate::fixtures::{Scenario, World, live_sts, pvc, sts_status};

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

/// Three nodes on 10Gi claims whose StorageClass allows expansion or not.
fn growing(expandable: bool) -> World {
    World {
        secret_exists: true,
        live_sts: Some(live_sts_with_storage("10Gi")),
        applied_status: Some(sts_status(3, 3, "r1", "r1")),
        pvcs: (0..3).map(|i| pvc(i, "10Gi")).collect(),
        expandable,
        ..World::default()
    }
}

#[tokio::test]
async fn a_larger_storage_size_expands_the_claims_and_keeps_the_statefulset_applicable() {
    let mut c = HaCluster::test().running_with_nodes(&["db-0", "db-1", "db-2"]);
    c.spec.storage.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("20Gi".into());
    let world = growing(true).with_events(&["VolumesExpanding"]);
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
    let world = growing(false).with_events(&["VolumeExpansionUnsupported"]);
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
