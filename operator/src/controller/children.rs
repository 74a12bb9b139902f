//! Owns writing the cluster's child objects: server-side apply of each rendered object (field
//! manager `ha-operator`, force), the optional ServiceMonitor, removal of the optional objects
//! the spec no longer asks for, and the rolling-update partition set on the StatefulSet.
//! Must not build objects (`render`) nor choose the partition (`rollout`); the credentials
//! Secret is not applied here (create-once: `secrets`).

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::Context;
use super::{CLUSTER_LABEL, FIELD_MANAGER};
use crate::crd::HaCluster;
use crate::render::Rendered;
use crate::{Error, Result};

/// Server-side apply of every rendered object (the Secret excepted: create-once), and removal
/// of optional objects the spec no longer asks for. Returns the applied StatefulSet.
pub(super) async fn apply_children(
    cluster: &HaCluster,
    ns: &str,
    r: &Rendered,
    ctx: &Context,
) -> Result<StatefulSet> {
    apply_object(ctx, ns, &r.config_map).await?;
    apply_object(ctx, ns, &r.peers_service).await?;
    apply_object(ctx, ns, &r.client_service).await?;
    let sts = apply_object(ctx, ns, &r.stateful_set).await?;
    match &r.pdb {
        Some(pdb) => {
            apply_object(ctx, ns, pdb).await?;
        }
        None => prune::<PodDisruptionBudget>(cluster, ns, ctx).await?,
    }
    match &r.ingress {
        Some(ing) => {
            apply_object(ctx, ns, ing).await?;
        }
        None => prune::<Ingress>(cluster, ns, ctx).await?,
    }
    Ok(sts)
}

async fn apply_object<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = obj
        .meta()
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    ctx.may_write()?;
    api.patch(name, &pp, &Patch::Apply(obj)).await.map_err(|e| {
        let kind = K::kind(&());
        let hint = match &e {
            kube::Error::Api(a) if a.code == 422 && kind == "StatefulSet" => {
                "; the StatefulSet refuses a change of a field it cannot change (its \
                     volumeClaimTemplates, selector or serviceName): see docs/kubernetes.md, \
                     \"Storage\""
                    .to_string()
            }
            _ => String::new(),
        };
        Error::Apply {
            what: format!("{kind} {name}"),
            source: Box::new(e),
            hint,
        }
    })
}

/// Server-side apply of the prometheus-operator ServiceMonitor; the error says what to do.
pub(super) async fn apply_service_monitor(
    ctx: &Context,
    ns: &str,
    sm: &kube::api::DynamicObject,
) -> std::result::Result<(), String> {
    let ar = crate::render::monitoring::service_monitor_resource();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let name = sm.name_any();
    match api.patch(&name, &pp, &Patch::Apply(sm)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(a)) if a.code == 404 => Err(format!(
            "ServiceMonitor {name}: the monitoring.coreos.com/v1 ServiceMonitor kind is not \
             installed; install prometheus-operator (or its CRDs) or set \
             spec.monitoring.serviceMonitor to false"
        )),
        Err(e) => Err(format!("ServiceMonitor {name}: {e}")),
    }
}

/// Deletes objects of kind `K` this cluster controls (label + controller owner reference).
async fn prune<K>(cluster: &HaCluster, ns: &str, ctx: &Context) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}={}", cluster.name_any()));
    let uid = cluster.uid();
    for obj in api.list(&lp).await? {
        let ours = obj
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref());
        if ours {
            let n = obj.name_any();
            tracing::info!(kind = %K::kind(&()), name = %n, "removing an object the spec no longer asks for");
            ctx.may_write()?;
            match api.delete(&n, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// The operator owns the partition: rolling updates go one pod at a time, gated by `rollout`.
pub(super) fn set_partition(sts: &mut StatefulSet, partition: i32) {
    let spec = sts.spec.get_or_insert_with(Default::default);
    let strategy = spec
        .update_strategy
        .get_or_insert_with(StatefulSetUpdateStrategy::default);
    strategy.type_ = Some("RollingUpdate".into());
    strategy
        .rolling_update
        .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
        .partition = Some(partition);
}
