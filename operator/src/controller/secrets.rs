//! Owns the reconcile's first step: the credentials Secret (created once, missing keys added,
//! never a key replaced), the render of every object with those credentials, and the bearer
//! token for the nodes' HTTP API.
//! Must not draw or parse credentials itself (`credentials`, `render::Credentials`), nor apply
//! the other objects (`children`).

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use super::FIELD_MANAGER;
use super::context::Context;
use super::events::Events;
use crate::crd::HaCluster;
use crate::render::{Credentials, Rendered};
use crate::{Error, Result, credentials};

/// Reads the credentials Secret (or draws new credentials), renders, and creates the Secret
/// when it was absent. A Secret created meanwhile by someone else wins (409 → read it back).
/// A Secret from an older operator gets the keys it lacks added, never one it has replaced.
pub(super) async fn credentials_and_render(
    cluster: &HaCluster,
    ns: &str,
    ctx: &Context,
    events: &mut Events,
) -> Result<(Rendered, Credentials)> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret_name = crate::render::names::credentials_secret(&cluster.name_any());
    let fresh = Credentials::generate().map_err(|e| Error::Secret {
        secret: secret_name.clone(),
        message: e.to_string(),
    })?;
    if let Some(existing) = secrets.get_opt(&secret_name).await? {
        let (creds, added) = credentials::read(&existing, &fresh)?;
        let rendered = (ctx.render)(cluster, ns, &creds)?;
        if !added.is_empty() {
            let data: serde_json::Map<String, serde_json::Value> = added
                .iter()
                .filter_map(|k| {
                    let v = rendered.secret.data.as_ref()?.get(*k)?;
                    Some((k.to_string(), serde_json::to_value(v).ok()?))
                })
                .collect();
            // The resourceVersion makes the patch fail (409, retried) if the Secret changed
            // since it was read: a key added meanwhile is never replaced.
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": existing.metadata.resource_version},
                "data": data,
            });
            ctx.may_write()?;
            secrets
                .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            events.normal(
                "CredentialsAdded",
                "Update",
                format!("added {} to Secret {secret_name}", added.join(", ")),
            );
        }
        return Ok((rendered, creds));
    }
    let rendered = (ctx.render)(cluster, ns, &fresh)?;
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    ctx.may_write()?;
    match secrets.create(&pp, &rendered.secret).await {
        Ok(_) => {
            events.normal(
                "CredentialsGenerated",
                "Create",
                format!("generated credentials in Secret {secret_name}"),
            );
            Ok((rendered, fresh))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = secrets.get(&secret_name).await?;
            let creds = credentials::from_secret(&existing)?;
            Ok(((ctx.render)(cluster, ns, &creds)?, creds))
        }
        Err(e) => Err(e.into()),
    }
}

/// The bearer token for the nodes' HTTP API: `spec.http.tokenSecret`'s `token`, else the
/// generated one, `None` with `http.disableToken`.
pub(super) async fn node_token(
    cluster: &HaCluster,
    ns: &str,
    creds: &Credentials,
    ctx: &Context,
) -> Result<Option<String>> {
    let Some(name) = &cluster.spec.http.token_secret else {
        return Ok((!cluster.spec.http.disable_token).then(|| creds.http_token.clone()));
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let missing = |message: &str| Error::Secret {
        secret: name.clone(),
        message: message.into(),
    };
    let secret = secrets
        .get_opt(name)
        .await?
        .ok_or_else(|| missing("not found (spec.http.tokenSecret)"))?;
    let bytes = secret
        .data
        .and_then(|d| d.get("token").map(|b| b.0.clone()))
        .ok_or_else(|| missing("has no key \"token\""))?;
    let token = String::from_utf8(bytes).map_err(|_| missing("key \"token\" is not UTF-8"))?;
    Ok(Some(token.trim().to_string()))
}
