//! Owns the membership cleanup: removing departed nodes' durable consumers and JetStream peers
//! through a ready node, removing the servers that earlier generations of live pods left in the
//! meta group (a replaced volume), and the Events saying what was removed or what failed.
//! Must not choose which nodes departed (`members`, `observe::departed`).

use super::context::Context;
use super::events::Events;
use crate::node_client::NodeTarget;
use crate::{Error, members};

/// Runs the scale-down cleanup the plan asks for. Returns the departed nodes still to clean
/// (with why) and the error to report after the status is written.
pub(super) async fn clean_departed(
    plan: &members::Plan,
    via: Option<NodeTarget>,
    what: members::Cleanup<'_>,
    ctx: &Context,
    events: &mut Events,
) -> (Vec<(String, String)>, Option<Error>) {
    if plan.clean.is_empty() {
        return (Vec::new(), None);
    }
    let Some(via) = via else {
        let why = "waiting for a ready node to remove its consumer and JetStream peer";
        return (
            plan.clean
                .iter()
                .map(|n| (n.clone(), why.to_string()))
                .collect(),
            None,
        );
    };
    let (results, error) = members::clean(&ctx.nodes, &via, &plan.clean, what).await;
    let mut left = Vec::new();
    let mut cleaned = Vec::new();
    for r in results {
        match r.result {
            Ok(()) => cleaned.push(r.name),
            Err(e) => left.push((r.name, format!("cleanup through {} failed: {e}", via.name))),
        }
    }
    if !cleaned.is_empty() {
        let what = if what.jetstream_peers {
            "durable consumers and JetStream peers"
        } else {
            "durable consumers"
        };
        events.normal(
            "DepartedNodesRemoved",
            "Scale",
            format!("removed the {what} of {}", cleaned.join(", ")),
        );
    }
    if !left.is_empty() {
        let detail: Vec<String> = left.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        events.warning("CleanupFailed", "Scale", detail.join("; "));
    }
    let error = error.map(|source| Error::Node {
        node: via.name.clone(),
        source,
    });
    (left, error)
}

/// Removes the servers earlier generations of live pods left in the meta group (a pod whose
/// volume was replaced is a new server; see `members::stale_generations`): until then they
/// count toward the meta quorum and keep stream replicas on a dead server. A failure is an
/// Event and is tried again at the next reconcile; it never fails this one.
pub(super) async fn clean_stale_generations(
    via: Option<&NodeTarget>,
    what: members::Cleanup<'_>,
    live: i32,
    ctx: &Context,
    events: &mut Events,
) {
    if !what.jetstream_peers {
        return;
    }
    let stale = members::stale_generations(what.cluster, live, what.meta);
    let Some(via) = via else {
        return;
    };
    if stale.is_empty() {
        return;
    }
    match members::remove_stale(&ctx.nodes, via, &stale).await {
        Ok(()) => events.normal(
            "StaleServersRemoved",
            "Scale",
            format!(
                "removed {} from the JetStream meta group: earlier servers of pods whose volumes were replaced",
                stale.join(", ")
            ),
        ),
        Err(e) => events.warning(
            "CleanupFailed",
            "Scale",
            format!(
                "removing the stale servers {} through {} failed: {e}",
                stale.join(", "),
                via.name
            ),
        ),
    }
}
