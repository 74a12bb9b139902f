//! The scale decision's tests: one pod per step, what holds a step, refused crossings, server
//! names by generation.

use super::*;
use crate::node_client::NodeReport;

fn seen(ordinals: &[i32]) -> Observed {
    let mut o = Observed::all_ready(ordinals);
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
