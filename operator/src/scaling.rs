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

use crate::observed::{Observed, server_ordinal};

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
                let mut servers: Vec<&MetaPeer> = m
                    .peers
                    .iter()
                    .filter(|p| server_ordinal(i.cluster, &p.name) == Some(ordinal))
                    .collect();
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
mod tests {
    use super::*;
    use crate::node_client::NodeReport;
    use crate::observed::PodView;

    fn seen(ordinals: &[i32]) -> Observed {
        let mut o = Observed::new(
            ordinals
                .iter()
                .map(|i| PodView {
                    name: format!("db-{i}"),
                    ordinal: *i,
                    ready: true,
                    ..PodView::default()
                })
                .collect(),
        );
        for i in ordinals {
            o.reports.insert(
                format!("db-{i}"),
                Ok(NodeReport {
                    ready: true,
                    caught_up: true,
                    lag: Some(0),
                    ..NodeReport::default()
                }),
            );
        }
        o
    }

    fn meta(ordinals: &[i32]) -> Result<Meta, String> {
        Ok(Meta {
            cluster: Some("db".into()),
            leader: Some("db-0".into()),
            peers: ordinals
                .iter()
                .map(|i| MetaPeer {
                    name: format!("db-{i}"),
                    current: true,
                    offline: false,
                })
                .collect(),
        })
    }

    fn inputs<'a>(
        desired: i32,
        live: Option<i32>,
        seen: &'a Observed,
        meta: Option<&'a Result<Meta, String>>,
    ) -> Inputs<'a> {
        Inputs {
            cluster: "db",
            desired,
            live,
            embedded: true,
            seen,
            meta,
            streams: None,
            departed: &[],
            rolling: false,
        }
    }

    fn stream(name: &str, peers: &[(&str, bool, u64)]) -> StreamState {
        StreamState {
            name: name.into(),
            exists: true,
            leader: Some("db-0".into()),
            current: peers.iter().all(|(_, c, _)| *c),
            peers: peers
                .iter()
                .map(|(n, c, lag)| crate::node_client::StreamPeer {
                    name: n.to_string(),
                    current: *c,
                    offline: false,
                    lag: Some(*lag),
                })
                .collect(),
        }
    }

    #[test]
    fn a_step_waits_until_every_replica_of_the_stream_and_the_bucket_is_current() {
        let o = seen(&[0, 1, 2]);
        let m = meta(&[0, 1, 2]);
        let lagging = Ok(vec![
            stream("ha_replication", &[("db-1", true, 0), ("db-2", false, 40)]),
            stream("OBJ_ha_replication_SNAPSHOTS", &[("db-1", true, 0)]),
        ]);
        let mut i = inputs(2, Some(3), &o, Some(&m));
        i.streams = Some(&lagging);
        let d = decide(&i);
        assert_eq!(d.replicas, 3, "no step while a replica lags");
        let msg = d.message().unwrap_or_default();
        assert!(
            msg.contains("stream ha_replication: replicas db-2 (40 behind) to be current"),
            "{msg}"
        );
        let no_leader = Ok(vec![StreamState {
            leader: None,
            current: false,
            ..stream("OBJ_ha_replication_SNAPSHOTS", &[])
        }]);
        i.streams = Some(&no_leader);
        let msg = decide(&i).message().unwrap_or_default();
        assert!(
            msg.contains("OBJ_ha_replication_SNAPSHOTS to elect a leader"),
            "{msg}"
        );
        let unreadable = Err("db-0: unreachable".to_string());
        i.streams = Some(&unreadable);
        assert_eq!(decide(&i).replicas, 3);
        // Current everywhere, or a bucket not created yet: the step goes.
        let fine = Ok(vec![
            stream("ha_replication", &[("db-1", true, 0), ("db-2", true, 0)]),
            StreamState {
                name: "OBJ_ha_replication_SNAPSHOTS".into(),
                ..StreamState::default()
            },
        ]);
        i.streams = Some(&fine);
        assert_eq!(decide(&i).replicas, 2);
    }

    #[test]
    fn a_new_cluster_starts_every_pod_at_once() {
        let o = seen(&[]);
        let d = decide(&inputs(5, None, &o, None));
        assert_eq!((d.replicas, d.scale), (5, Scale::Steady));
        let d = decide(&inputs(3, Some(0), &o, None));
        assert_eq!((d.replicas, d.scale), (3, Scale::Steady));
    }

    #[test]
    fn scaling_down_removes_one_pod_per_step_from_a_whole_cluster() {
        let o = seen(&[0, 1, 2, 3, 4]);
        let m = meta(&[0, 1, 2, 3, 4]);
        let d = decide(&inputs(3, Some(5), &o, Some(&m)));
        assert_eq!(d.replicas, 4);
        assert_eq!(
            d.message().as_deref(),
            Some("Scaling 5→4→3: removing the pod at ordinal 4")
        );
    }

    #[test]
    fn the_next_step_down_waits_for_the_departed_pod_to_stop_and_its_peer_to_go() {
        // StatefulSet at 4, pod 4 still terminating.
        let o = seen(&[0, 1, 2, 3, 4]);
        let m = meta(&[0, 1, 2, 3, 4]);
        let d = decide(&inputs(3, Some(4), &o, Some(&m)));
        assert_eq!(d.replicas, 4);
        let msg = d.message().unwrap_or_default();
        assert!(msg.starts_with("Scaling 4→3: waiting"), "{msg}");
        assert!(msg.contains("db-4 to stop"), "{msg}");
        // Pod gone, peer still listed: the cleanup's job, and the step waits for it.
        let o = seen(&[0, 1, 2, 3]);
        let departed = vec!["db-4".to_string()];
        let mut i = inputs(3, Some(4), &o, Some(&m));
        i.departed = &departed;
        let d = decide(&i);
        assert_eq!(d.replicas, 4);
        assert!(d.message().unwrap_or_default().contains("db-4's consumer"));
        // A peer listed in the meta group but not known as departed also holds the step.
        let i = inputs(3, Some(4), &o, Some(&m));
        assert!(
            decide(&i)
                .message()
                .unwrap_or_default()
                .contains("db-4 to leave")
        );
        // Peer removed: the next step.
        let m = meta(&[0, 1, 2, 3]);
        let d = decide(&inputs(3, Some(4), &o, Some(&m)));
        assert_eq!(d.replicas, 3);
    }

    #[test]
    fn a_step_waits_for_every_node_to_be_ready_and_caught_up() {
        let mut o = seen(&[0, 1, 2]);
        o.reports.insert(
            "db-1".into(),
            Ok(NodeReport {
                ready: true,
                caught_up: true,
                lag: Some(5000),
                ..NodeReport::default()
            }),
        );
        let m = meta(&[0, 1, 2]);
        let d = decide(&inputs(5, Some(3), &o, Some(&m)));
        assert_eq!(d.replicas, 3);
        assert!(
            d.message()
                .unwrap_or_default()
                .contains("db-1 is 5000 messages behind")
        );
        let o = seen(&[0, 2]);
        let d = decide(&inputs(2, Some(3), &o, Some(&m)));
        assert_eq!(d.replicas, 3);
        assert!(d.message().unwrap_or_default().contains("db-1 to exist"));
    }

    #[test]
    fn a_step_waits_for_a_meta_leader_and_current_members() {
        let o = seen(&[0, 1, 2]);
        let no_leader = Ok(Meta {
            leader: None,
            ..meta(&[0, 1, 2]).unwrap_or_default()
        });
        let d = decide(&inputs(2, Some(3), &o, Some(&no_leader)));
        assert_eq!(d.replicas, 3);
        assert!(d.message().unwrap_or_default().contains("meta leader"));
        let mut lagging = meta(&[0, 1, 2]).unwrap_or_default();
        lagging.peers[2].current = false;
        let d = decide(&inputs(4, Some(3), &o, Some(&Ok(lagging))));
        assert_eq!(d.replicas, 3);
        assert!(
            d.message()
                .unwrap_or_default()
                .contains("db-2 to be current")
        );
        let unreadable = Err("unreachable".to_string());
        assert_eq!(
            decide(&inputs(2, Some(3), &o, Some(&unreadable))).replicas,
            3
        );
        // A new pod that has not joined (removed less than 5 minutes ago) holds the next step.
        let d = decide(&inputs(
            5,
            Some(4),
            &seen(&[0, 1, 2, 3]),
            Some(&meta(&[0, 1, 2])),
        ));
        assert_eq!(d.replicas, 4);
        assert!(d.message().unwrap_or_default().contains("db-3 to join"));
    }

    #[test]
    fn scaling_up_adds_one_pod_per_step() {
        let o = seen(&[0, 1, 2]);
        let m = meta(&[0, 1, 2]);
        let d = decide(&inputs(5, Some(3), &o, Some(&m)));
        assert_eq!(d.replicas, 4);
        assert_eq!(
            d.message().as_deref(),
            Some("Scaling 3→4→5: adding the pod at ordinal 3")
        );
        // The new pod is not ready yet.
        let mut o = seen(&[0, 1, 2, 3]);
        o.pods[3].ready = false;
        let d = decide(&inputs(5, Some(4), &o, Some(&meta(&[0, 1, 2, 3]))));
        assert_eq!(d.replicas, 4);
    }

    #[test]
    fn every_change_between_one_and_seven_goes_one_step_at_a_time_and_never_crosses_one() {
        for from in 1..=7 {
            for to in 1..=7 {
                let mut live = from;
                let mut steps = 0;
                loop {
                    let ordinals: Vec<i32> = (0..live).collect();
                    let o = seen(&ordinals);
                    let m = meta(&ordinals);
                    let d = decide(&inputs(to, Some(live), &o, Some(&m)));
                    assert!((d.replicas - live).abs() <= 1, "{from}→{to}: {d:?}");
                    if let Scale::Refused { reason, .. } = &d.scale {
                        assert!((from == 1) != (to == 1), "{from}→{to} refused: {reason}");
                        assert_eq!(d.replicas, from);
                        break;
                    }
                    if d.replicas == live {
                        assert_eq!(live, to, "{from}→{to} stuck at {live}: {d:?}");
                        break;
                    }
                    live = d.replicas;
                    steps += 1;
                    assert!(live >= 1 && steps <= 7);
                }
                if (from == 1) == (to == 1) {
                    assert_eq!(live, to, "{from}→{to}");
                }
            }
        }
    }

    #[test]
    fn with_external_nats_one_and_more_replicas_are_one_path() {
        let o = seen(&[0, 1, 2]);
        let mut i = inputs(1, Some(3), &o, None);
        i.embedded = false;
        assert_eq!(decide(&i).replicas, 2);
    }

    #[test]
    fn a_rolling_update_holds_the_next_step() {
        let o = seen(&[0, 1, 2]);
        let m = meta(&[0, 1, 2]);
        let mut i = inputs(4, Some(3), &o, Some(&m));
        i.rolling = true;
        assert_eq!(decide(&i).replicas, 3);
    }

    fn peer(name: &str, current: bool, offline: bool) -> MetaPeer {
        MetaPeer {
            name: name.into(),
            current,
            offline,
        }
    }

    #[test]
    fn servers_are_the_pods_by_any_generation_of_their_names() {
        // Pod 2 came back on a new volume as a new generation; the old one was removed.
        let o = seen(&[0, 1, 2]);
        let m = Ok(Meta {
            cluster: Some("db".into()),
            leader: Some("db-0-ga".into()),
            peers: vec![
                peer("db-0-ga", true, false),
                peer("db-1", true, false),
                peer("db-2-gb", true, false),
            ],
        });
        assert_eq!(decide(&inputs(4, Some(3), &o, Some(&m))).replicas, 4);
        // Not yet in the meta group: the step waits for it, by the pod's name.
        let mut without = m.clone();
        if let Ok(w) = without.as_mut() {
            w.peers.pop();
        }
        let d = decide(&inputs(4, Some(3), &o, Some(&without)));
        assert_eq!(d.replicas, 3);
        assert!(d.message().unwrap_or_default().contains("db-2 to join"));
        // An older generation left offline does not hide the new one, nor stand for it.
        let mut both = m.clone();
        if let Ok(b) = both.as_mut() {
            b.peers.insert(2, peer("db-2-ga", false, true));
        }
        assert_eq!(decide(&inputs(4, Some(3), &o, Some(&both))).replicas, 4);
        if let Ok(b) = both.as_mut() {
            b.peers.pop();
        }
        let d = decide(&inputs(4, Some(3), &o, Some(&both)));
        assert!(
            d.message()
                .unwrap_or_default()
                .contains("db-2-ga is offline in the meta group"),
            "{d:?}"
        );
        // Departed: by pod name, once per pod; removed: every generation of it.
        let gone = Ok(Meta {
            cluster: Some("db".into()),
            leader: Some("db-0".into()),
            peers: vec![
                peer("db-0", true, false),
                peer("db-1", true, false),
                peer("db-2-ga", false, true),
                peer("db-2-gb", false, true),
                peer("db-3", false, true),
            ],
        });
        assert_eq!(departed_in_meta("db", 2, Some(&gone)), vec!["db-3", "db-2"]);
        let listed = gone.as_ref().ok();
        assert_eq!(
            crate::members::servers_of("db", "db-2", listed),
            vec!["db-2-ga", "db-2-gb"]
        );
        assert_eq!(
            crate::members::servers_of("db", "db-3", listed),
            vec!["db-3"]
        );
        assert_eq!(
            crate::members::servers_of("db", "db-4", listed),
            vec!["db-4"]
        );
        assert_eq!(crate::members::servers_of("db", "db-4", None), vec!["db-4"]);
        // The next step waits until every generation of a departed pod left.
        let o = seen(&[0, 1]);
        let d = decide(&inputs(3, Some(2), &o, Some(&gone)));
        assert_eq!(d.replicas, 2);
        assert!(
            d.message()
                .unwrap_or_default()
                .contains("db-2-gb to leave the JetStream meta group"),
            "{d:?}"
        );
    }

    #[test]
    fn departed_peers_are_read_from_the_meta_group() {
        let m = meta(&[0, 1, 2, 3, 4]);
        assert_eq!(departed_in_meta("db", 3, Some(&m)), vec!["db-4", "db-3"]);
        assert!(departed_in_meta("db", 5, Some(&m)).is_empty());
        assert!(departed_in_meta("db", 3, None).is_empty());
    }
}
