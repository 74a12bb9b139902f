//! Owns the scale decision: the StatefulSet replica count the operator applies while
//! `spec.replicas` differs from the live one — one pod at a time, each step only once the cluster
//! is whole again (every node ready and caught up, the JetStream meta group led, every member
//! current, the departed peer removed).
//! Must not do I/O; `controller` feeds it the live StatefulSet, the pods, the nodes' `/status` and
//! the meta group (`GET /cluster/peers`).
//! Invariant: a step never takes more than one server out of (or adds more than one to) the
//! JetStream cluster, and never crosses between 1 and more replicas with embedded NATS (a
//! standalone nats-server's stream is not adopted by a clustered one).
//! See docs/kubernetes.md ("Scaling") for why, `members` for the departed-node cleanup.

use crate::crd::{CROSSING_REFUSED, HaCluster};
pub use crate::node_client::{Meta, MetaPeer, StreamState};
use std::collections::BTreeSet;

use crate::observed::{Observed, server_ordinal, servers_at};

/// What the scale decision looks at.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub cluster: &'a str,
    /// `spec.replicas`.
    pub desired: i32,
    /// The live StatefulSet's `spec.replicas` (`None`: not created yet).
    pub live: Option<i32>,
    /// The pods' nats-servers form one JetStream cluster (embedded NATS).
    pub embedded: bool,
    pub seen: &'a Observed,
    /// The meta group, or why it could not be read (`None` when not asked: not clustered).
    pub meta: Option<&'a Result<Meta, String>>,
    /// The replica state of the stream and the snapshot bucket (`GET /cluster/streams`), or why
    /// it could not be read (`None` when not asked: not clustered).
    pub streams: Option<&'a Result<Vec<StreamState>, String>>,
    /// Departed nodes whose consumer and peer are still to be removed.
    pub departed: &'a [String],
    /// A rolling update is in progress (scaling waits for it).
    pub rolling: bool,
}

/// Where scaling stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scale {
    /// The StatefulSet has the desired replicas (or is being created with them).
    Steady,
    /// Stepping towards `desired`; `to` is what this reconcile applies.
    Step { from: i32, to: i32, desired: i32 },
    /// The next step waits: the cluster is not whole yet.
    Waiting {
        at: i32,
        desired: i32,
        reason: String,
    },
    /// The change is refused (the StatefulSet stays at `at`).
    Refused {
        at: i32,
        desired: i32,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The StatefulSet replicas to apply.
    pub replicas: i32,
    pub scale: Scale,
}

/// `a→b→c…`: every StatefulSet size from `from` to `to`, one at a time.
pub fn path(from: i32, to: i32) -> String {
    let steps: Vec<String> = if from <= to {
        (from..=to).map(|n| n.to_string()).collect()
    } else {
        (to..=from).rev().map(|n| n.to_string()).collect()
    };
    steps.join("→")
}

impl Decision {
    /// A line for the Progressing condition and Events, `None` when steady.
    pub fn message(&self) -> Option<String> {
        match &self.scale {
            Scale::Steady => None,
            Scale::Step { from, to, desired } => Some(format!(
                "Scaling {}: {} {}",
                path(*from, *desired),
                if to > from { "adding" } else { "removing" },
                if to > from {
                    format!("the pod at ordinal {from}")
                } else {
                    format!("the pod at ordinal {to}")
                }
            )),
            Scale::Waiting {
                at,
                desired,
                reason,
            } => Some(format!(
                "Scaling {}: waiting: {reason}",
                path(*at, *desired)
            )),
            Scale::Refused {
                at,
                desired,
                reason,
            } => Some(format!("scaling {at}→{desired} refused: {reason}")),
        }
    }
}

/// The StatefulSet replicas for this reconcile.
pub fn decide(i: &Inputs<'_>) -> Decision {
    // A new cluster (or a StatefulSet someone scaled to 0) starts every pod at once: the
    // nats-servers need each other to elect a leader, and there is no running group to protect.
    let live = match i.live {
        Some(n) if n > 0 => n,
        _ => {
            return Decision {
                replicas: i.desired,
                scale: Scale::Steady,
            };
        }
    };
    if live == i.desired {
        return Decision {
            replicas: live,
            scale: Scale::Steady,
        };
    }
    if i.embedded && (live == 1) != (i.desired == 1) {
        return Decision {
            replicas: live,
            scale: Scale::Refused {
                at: live,
                desired: i.desired,
                reason: CROSSING_REFUSED.into(),
            },
        };
    }
    let blockers = blockers(i, live);
    if !blockers.is_empty() {
        return Decision {
            replicas: live,
            scale: Scale::Waiting {
                at: live,
                desired: i.desired,
                reason: blockers.join("; "),
            },
        };
    }
    let to = if i.desired > live { live + 1 } else { live - 1 };
    Decision {
        replicas: to,
        scale: Scale::Step {
            from: live,
            to,
            desired: i.desired,
        },
    }
}

/// Why the cluster of `live` pods is not whole (empty: the next step may go).
fn blockers(i: &Inputs<'_>, live: i32) -> Vec<String> {
    let mut out = Vec::new();
    if i.rolling {
        out.push("a rolling update is in progress".to_string());
    }
    for p in i.seen.pods.iter().filter(|p| p.ordinal >= live) {
        out.push(format!("{} to stop", p.name));
    }
    for d in i.departed {
        out.push(format!("{d}'s consumer and JetStream peer to be removed"));
    }
    for ordinal in 0..live {
        match i.seen.pod(ordinal) {
            None => out.push(format!("{}-{ordinal} to exist", i.cluster)),
            Some(p) => {
                if let Err(why) = i.seen.caught_up(p) {
                    out.push(why);
                }
            }
        }
    }
    match i.meta {
        None => {}
        Some(Err(e)) => out.push(format!("the JetStream meta group: {e}")),
        Some(Ok(m)) => {
            if m.leader.as_deref().is_none_or(str::is_empty) {
                out.push("a JetStream meta leader".into());
            }
            for ordinal in 0..live {
                let name = format!("{}-{ordinal}", i.cluster);
                // The pod's server, by any generation of its name; an online one is the pod's.
                let mut servers: Vec<&MetaPeer> = servers_at(m, i.cluster, ordinal).collect();
                servers.sort_by_key(|p| (!p.offline, p.current));
                match servers.last() {
                    None => out.push(format!(
                        "{name} to join the JetStream meta group (a server name removed less \
                         than 5 minutes ago is let back in only then)"
                    )),
                    Some(p) if p.offline => {
                        out.push(format!("{} is offline in the meta group", p.name))
                    }
                    Some(p) if !p.current => {
                        out.push(format!("{} to be current in the meta group", p.name))
                    }
                    Some(_) => {}
                }
            }
            for p in &m.peers {
                if let Some(o) = server_ordinal(i.cluster, &p.name)
                    && o >= live
                    && !i.departed.contains(&format!("{}-{o}", i.cluster))
                {
                    out.push(format!("{} to leave the JetStream meta group", p.name));
                }
            }
        }
    }
    match i.streams {
        None => {}
        Some(Err(e)) => out.push(format!("the streams' replica state: {e}")),
        Some(Ok(streams)) => out.extend(streams.iter().flat_map(stream_blockers)),
    }
    out
}

/// Why one stream's replicas are not all current (a step could take the last good copy).
fn stream_blockers(s: &StreamState) -> Vec<String> {
    if !s.exists || s.current {
        return Vec::new();
    }
    if s.leader.as_deref().is_none_or(str::is_empty) {
        return vec![format!("stream {} to elect a leader", s.name)];
    }
    let lagging: Vec<String> = s
        .peers
        .iter()
        .filter(|p| p.offline || !p.current)
        .map(|p| {
            if p.offline {
                format!("{} (offline)", p.name)
            } else {
                format!("{} ({} behind)", p.name, p.lag.unwrap_or(0))
            }
        })
        .collect();
    if lagging.is_empty() {
        vec![format!("stream {} to be current", s.name)]
    } else {
        vec![format!(
            "stream {}: replicas {} to be current",
            s.name,
            lagging.join(", ")
        )]
    }
}

/// The cluster as a StatefulSet of `replicas` pods runs it (the step being taken): routes to
/// those pods, and no more stream replicas than servers.
pub fn at_step(cluster: &HaCluster, replicas: i32) -> HaCluster {
    let mut c = cluster.clone();
    c.spec.replicas = replicas;
    if let Some(n) = c.spec.replication.stream_replicas.as_mut() {
        *n = (*n).min(replicas);
    }
    c
}

/// Departed nodes (pod names, highest ordinal first) whose servers the meta group still lists
/// (ordinal at or beyond `live`, any generation): cleaned up even when the status that listed
/// them was lost.
pub fn departed_in_meta(
    cluster: &str,
    live: i32,
    meta: Option<&Result<Meta, String>>,
) -> Vec<String> {
    let Some(Ok(m)) = meta else {
        return Vec::new();
    };
    let ordinals: BTreeSet<i32> = m
        .peers
        .iter()
        .filter_map(|p| server_ordinal(cluster, &p.name))
        .filter(|o| *o >= live)
        .collect();
    ordinals
        .into_iter()
        .rev()
        .map(|o| format!("{cluster}-{o}"))
        .collect()
}

#[cfg(test)]
mod tests;
