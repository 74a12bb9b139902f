//! Owns acting on a storage change: expanding the volume claims (when their StorageClass allows
//! it) or saying why not, as the `Storage` condition and Events.
//! Must not decide what changed nor which claims to expand (`crate::storage`), nor touch the
//! StatefulSet's claim templates (they cannot change).

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::CLUSTER_LABEL;
use super::context::Context;
use super::events::Events;
use crate::crd::HaCluster;
use crate::{Result, status, storage};

/// Acts on a storage change: expands the claims (their StorageClass allowing it) or says why
/// not. Returns the `Storage` condition's (status, reason, message), `None` when nothing changed.
pub(super) async fn storage_step(
    cluster: &HaCluster,
    ns: &str,
    change: &storage::Change,
    ctx: &Context,
    events: &mut Events,
) -> Result<Option<status::StorageCondition>> {
    let (from, to) = match change {
        storage::Change::None => return Ok(None),
        storage::Change::Grow { from, to } => (from, to),
        refused => {
            let (reason, message) = storage::refusal(refused).unwrap_or_default();
            events.warning(reason, "Storage", message.clone());
            return Ok(Some(status::StorageCondition::new(false, reason, message)));
        }
    };
    let name = cluster.name_any();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let prefix = format!(
        "{}-{}-",
        crate::render::names::VOLUME_DATA,
        crate::render::names::stateful_set(&name)
    );
    let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}"));
    let claims: Vec<PersistentVolumeClaim> = pvcs
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|c| {
            c.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    let pending = storage::to_expand(&claims, to);
    if pending.is_empty() {
        return Ok(Some(status::StorageCondition::new(
            true,
            "VolumesExpanded",
            format!(
                "every volume requests {to}; the StatefulSet's claim template keeps {from} (it \
                 cannot change), so a pod added later starts with {from} and is expanded next"
            ),
        )));
    }
    let class = pending
        .iter()
        .find_map(|c| c.spec.as_ref().and_then(|s| s.storage_class_name.clone()));
    if let Some(class) = &class {
        let classes: Api<StorageClass> = Api::all(ctx.client.clone());
        let expandable = classes
            .get_opt(class)
            .await?
            .and_then(|c| c.allow_volume_expansion)
            .unwrap_or(false);
        if !expandable {
            let message = format!(
                "StorageClass {class} does not allow volume expansion (allowVolumeExpansion): \
                 set spec.storage.size back to {from}, or have the class allow expansion"
            );
            events.warning("VolumeExpansionUnsupported", "Storage", message.clone());
            return Ok(Some(status::StorageCondition::new(
                false,
                "VolumeExpansionUnsupported",
                message,
            )));
        }
    }
    let body = serde_json::json!({"spec": {"resources": {"requests": {"storage": to}}}});
    let mut names = Vec::new();
    for c in pending {
        let n = c.name_any();
        ctx.may_write()?;
        pvcs.patch(&n, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
        names.push(n);
    }
    let message = format!("expanding {} from {from} to {to}", names.join(", "));
    events.normal("VolumesExpanding", "Storage", message.clone());
    Ok(Some(status::StorageCondition::new(
        false,
        "Expanding",
        message,
    )))
}
