//! Reconciler tests against a mocked API server (`fixtures::ApiServerVerifier`) and, where the
//! reconcile talks to nodes, a stand-in ha node over real HTTP (`fixtures::NodeMock`).
//! Each test runs one reconcile and asserts the requests it made and the status it wrote.
//! One file per concern the scenarios cover; this one holds the helpers they share.

mod applying;
mod backups;
mod errors;
mod rollout;
mod scaling;
mod snapshots;
mod status;
mod storage;

use std::sync::Arc;

use kube::runtime::controller::Action;

use crate::controller::{Context, reconcile};
use crate::crd::{HaCluster, HaClusterStatus};
use crate::fixtures::{Recorded, Scenario, timeout_after_1s};

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
