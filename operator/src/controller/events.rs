//! Owns the Events of one reconcile: collected while it runs, published after its status is
//! written (best effort), and `note_changes`, the Events for what a reconcile changed.
//! Must not write anything but Events, nor decide anything: the notes restate decisions made
//! by `scaling` and `rollout`.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Resource;
use kube::runtime::events::{Event, EventType};

use super::context::Context;
use crate::crd::HaCluster;
use crate::rollout::{Revisions, Rollout, RolloutDecision};
use crate::scaling;

/// Events of one reconcile, published after its status is written.
#[derive(Default)]
pub(super) struct Events(Vec<Event>);

impl Events {
    pub(super) fn normal(&mut self, reason: &str, action: &str, note: String) {
        self.push(EventType::Normal, reason, action, note);
    }
    pub(super) fn warning(&mut self, reason: &str, action: &str, note: String) {
        self.push(EventType::Warning, reason, action, note);
    }
    fn push(&mut self, type_: EventType, reason: &str, action: &str, note: String) {
        self.0.push(Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        });
    }
    /// Best effort: an Event that cannot be written is logged, never a failed reconcile.
    pub(super) async fn publish(self, ctx: &Context, cluster: &HaCluster) {
        let oref = cluster.object_ref(&());
        for e in self.0 {
            if let Err(err) = ctx.recorder.publish(&e, &oref).await {
                tracing::warn!(reason = %e.reason, error = %err, "publishing an Event failed");
            }
        }
    }
}

/// Events for what this reconcile changed: first creation, a scale step (or its refusal), a
/// pod handed to the update.
pub(super) fn note_changes(
    cluster: &HaCluster,
    live: Option<&StatefulSet>,
    revisions: &Revisions,
    rollout: &RolloutDecision,
    scale: &scaling::Decision,
    events: &mut Events,
) {
    let replicas = cluster.spec.replicas;
    let first = cluster
        .status
        .as_ref()
        .is_none_or(|s| s.observed_generation.is_none());
    if live.is_none() && first {
        events.normal(
            "Created",
            "Create",
            format!("created the cluster's objects for {replicas} nodes"),
        );
    }
    match &scale.scale {
        scaling::Scale::Step { .. } => {
            events.normal("Scaling", "Scale", scale.message().unwrap_or_default())
        }
        scaling::Scale::Refused { .. } => {
            events.warning("ScaleRefused", "Scale", scale.message().unwrap_or_default())
        }
        _ => {}
    }
    if let Rollout::Replacing { pod } = &rollout.rollout
        && revisions.partition.is_some_and(|p| rollout.partition < p)
    {
        events.normal(
            "RollingUpdate",
            "Update",
            format!(
                "replacing {pod} ({}/{} nodes updated)",
                rollout.updated, scale.replicas
            ),
        );
    }
}
