//! Owns the rolling-update decision: the StatefulSet `updateStrategy.rollingUpdate.partition` the
//! operator applies so pods are replaced one at a time, only while the others are caught up.
//! Must not do I/O; `controller` feeds it the live StatefulSet and what the nodes reported.
//! Invariant: the partition never rises above an updated pod while an update is in progress (a
//! pod deleted below the partition would come back at the old revision).
//! See `observed::Observed::caught_up` for "caught up", docs/kubernetes.md ("Updates") for why.

use crate::observed::Observed;

/// What the live StatefulSet says about revisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revisions {
    pub current: Option<String>,
    pub update: Option<String>,
    /// The partition the StatefulSet has now (`None`: no StatefulSet or no partition yet).
    pub partition: Option<i32>,
}

/// Where a rolling update stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// No update pending: every pod is held at its revision.
    Idle,
    /// The StatefulSet is replacing this pod now.
    Replacing { pod: String },
    /// The next pod waits for the others.
    Waiting { next: String, reason: String },
    /// No node is ready, so there is no availability to protect: the StatefulSet may go on.
    Unguarded,
    /// Every pod runs the new revision; the StatefulSet has yet to record it as current.
    Completing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutDecision {
    /// The partition to apply.
    pub partition: i32,
    pub rollout: Rollout,
    /// Pods (below `replicas`) that run the update revision.
    pub updated: i32,
}

impl RolloutDecision {
    /// A line for the Progressing condition, `None` when idle.
    pub fn message(&self, replicas: i32) -> Option<String> {
        let done = format!("{}/{replicas} nodes updated", self.updated);
        match &self.rollout {
            Rollout::Idle => None,
            Rollout::Replacing { pod } => Some(format!("rolling update: replacing {pod} ({done})")),
            Rollout::Waiting { next, reason } => Some(format!(
                "rolling update: {next} waits until the others are ready and caught up: {reason} ({done})"
            )),
            Rollout::Unguarded => Some(format!(
                "rolling update: no node is ready, so pods are replaced without waiting ({done})"
            )),
            Rollout::Completing => Some(format!("rolling update: finishing ({done})")),
        }
    }
}

/// The partition for a StatefulSet of `replicas` pods named `<cluster>-<i>`.
pub fn decide(cluster: &str, replicas: i32, live: &Revisions, seen: &Observed) -> RolloutDecision {
    let hold = RolloutDecision {
        partition: replicas,
        rollout: Rollout::Idle,
        updated: 0,
    };
    let (Some(current), Some(update)) = (&live.current, &live.update) else {
        return hold;
    };
    let in_set = |ordinal: i32| ordinal < replicas;
    let is_updated = |rev: &Option<String>| rev.as_deref() == Some(update.as_str());
    let updated = seen
        .pods
        .iter()
        .filter(|p| in_set(p.ordinal) && is_updated(&p.revision))
        .count() as i32;
    if current == update {
        return RolloutDecision { updated, ..hold };
    }
    let live_partition = live.partition.unwrap_or(replicas);
    let outdated: Vec<_> = seen
        .pods
        .iter()
        .filter(|p| in_set(p.ordinal) && !is_updated(&p.revision))
        .collect();
    let Some(highest) = outdated.last() else {
        // Partition 0: a pod recreated now gets the new revision, and the StatefulSet can mark
        // the update revision current.
        return RolloutDecision {
            partition: 0,
            rollout: Rollout::Completing,
            updated,
        };
    };
    if let Some(p) = outdated.iter().find(|p| p.ordinal >= live_partition) {
        return RolloutDecision {
            partition: live_partition,
            rollout: Rollout::Replacing {
                pod: p.name.clone(),
            },
            updated,
        };
    }
    let others_ready = seen
        .pods
        .iter()
        .any(|p| in_set(p.ordinal) && p.ordinal != highest.ordinal && p.ready && !p.terminating);
    if !others_ready && replicas > 1 {
        return RolloutDecision {
            partition: 0,
            rollout: Rollout::Unguarded,
            updated,
        };
    }
    let mut blockers = Vec::new();
    for ordinal in (0..replicas).filter(|o| *o != highest.ordinal) {
        match seen.pod(ordinal) {
            None => blockers.push(format!("{cluster}-{ordinal} is missing")),
            Some(p) => {
                if let Err(why) = seen.caught_up(p) {
                    blockers.push(why);
                }
            }
        }
    }
    if blockers.is_empty() {
        RolloutDecision {
            partition: highest.ordinal,
            rollout: Rollout::Replacing {
                pod: highest.name.clone(),
            },
            updated,
        }
    } else {
        RolloutDecision {
            partition: live_partition,
            rollout: Rollout::Waiting {
                next: highest.name.clone(),
                reason: blockers.join("; "),
            },
            updated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_client::NodeReport;
    use crate::observed::PodView;

    fn pod(i: i32, rev: &str, ready: bool) -> PodView {
        PodView {
            name: format!("db-{i}"),
            ordinal: i,
            ready,
            revision: Some(rev.into()),
            ..PodView::default()
        }
    }

    fn seen(pods: Vec<PodView>, lag: u64) -> Observed {
        let mut o = Observed::new(pods);
        for p in &o.pods.clone() {
            o.reports.insert(
                p.name.clone(),
                Ok(NodeReport {
                    ready: p.ready,
                    caught_up: true,
                    lag: Some(lag),
                    ..NodeReport::default()
                }),
            );
        }
        o
    }

    fn revs(current: &str, update: &str, partition: Option<i32>) -> Revisions {
        Revisions {
            current: Some(current.into()),
            update: Some(update.into()),
            partition,
        }
    }

    #[test]
    fn without_a_pending_update_every_pod_is_held() {
        let o = seen(vec![pod(0, "a", true), pod(1, "a", true)], 0);
        let d = decide("db", 2, &revs("a", "a", Some(0)), &o);
        assert_eq!(d.partition, 2);
        assert_eq!(d.rollout, Rollout::Idle);
        assert_eq!(d.message(2), None);
        // A StatefulSet not created yet is held too.
        let d = decide("db", 3, &Revisions::default(), &Observed::default());
        assert_eq!((d.partition, d.rollout), (3, Rollout::Idle));
    }

    #[test]
    fn a_new_revision_replaces_the_highest_pod_first_when_all_are_caught_up() {
        let o = seen(
            vec![pod(0, "a", true), pod(1, "a", true), pod(2, "a", true)],
            0,
        );
        let d = decide("db", 3, &revs("a", "b", Some(3)), &o);
        assert_eq!(d.partition, 2);
        assert_eq!(d.rollout, Rollout::Replacing { pod: "db-2".into() });
        assert_eq!(d.updated, 0);
    }

    #[test]
    fn the_next_pod_waits_while_the_replaced_one_is_not_ready() {
        let o = seen(
            vec![pod(0, "a", true), pod(1, "a", true), pod(2, "b", false)],
            0,
        );
        let d = decide("db", 3, &revs("a", "b", Some(2)), &o);
        assert_eq!(d.partition, 2, "the partition does not move");
        match &d.rollout {
            Rollout::Waiting { next, reason } => {
                assert_eq!(next, "db-1");
                assert!(reason.contains("db-2 is not ready"), "{reason}");
            }
            other => panic!("expected Waiting, got {other:?}"),
        }
        assert!(d.message(3).unwrap().contains("1/3 nodes updated"));
    }

    #[test]
    fn the_next_pod_waits_while_another_node_lags_behind_the_stream() {
        let o = seen(
            vec![pod(0, "a", true), pod(1, "a", true), pod(2, "b", true)],
            5000,
        );
        let d = decide("db", 3, &revs("a", "b", Some(2)), &o);
        assert_eq!(d.partition, 2);
        assert!(
            matches!(&d.rollout, Rollout::Waiting { reason, .. } if reason.contains("messages behind"))
        );
    }

    #[test]
    fn an_unreadable_node_status_holds_the_update() {
        let mut o = seen(
            vec![pod(0, "a", true), pod(1, "a", true), pod(2, "b", true)],
            0,
        );
        o.reports
            .insert("db-0".into(), Err("unreachable: connection refused".into()));
        let d = decide("db", 3, &revs("a", "b", Some(2)), &o);
        assert!(
            matches!(&d.rollout, Rollout::Waiting { reason, .. } if reason.contains("db-0: unreachable"))
        );
    }

    #[test]
    fn once_the_replaced_pod_is_caught_up_the_partition_moves_down_by_one() {
        let o = seen(
            vec![pod(0, "a", true), pod(1, "a", true), pod(2, "b", true)],
            0,
        );
        let d = decide("db", 3, &revs("a", "b", Some(2)), &o);
        assert_eq!(d.partition, 1);
        assert_eq!(d.updated, 1);
    }

    #[test]
    fn a_broken_pod_being_replaced_does_not_block_its_own_replacement() {
        // db-2 crashes on the old revision; the fix must still reach it.
        let o = seen(
            vec![pod(0, "a", true), pod(1, "a", true), pod(2, "a", false)],
            0,
        );
        let d = decide("db", 3, &revs("a", "b", Some(3)), &o);
        assert_eq!(d.partition, 2);
    }

    #[test]
    fn a_pod_the_statefulset_is_replacing_keeps_the_partition() {
        // Partition 1 was applied; db-1 still runs "a" while the StatefulSet replaces it.
        let o = seen(
            vec![pod(0, "a", true), pod(1, "a", false), pod(2, "b", true)],
            0,
        );
        let d = decide("db", 3, &revs("a", "b", Some(1)), &o);
        assert_eq!(d.partition, 1);
        assert_eq!(d.rollout, Rollout::Replacing { pod: "db-1".into() });
    }

    #[test]
    fn when_every_pod_is_updated_the_partition_drops_to_zero_until_the_revision_is_current() {
        let o = seen(vec![pod(0, "b", true), pod(1, "b", true)], 0);
        let d = decide("db", 2, &revs("a", "b", Some(1)), &o);
        assert_eq!((d.partition, d.rollout), (0, Rollout::Completing));
    }

    #[test]
    fn a_missing_pod_holds_the_update() {
        let o = seen(vec![pod(0, "a", true), pod(2, "a", true)], 0);
        let d = decide("db", 3, &revs("a", "b", Some(3)), &o);
        assert!(
            matches!(&d.rollout, Rollout::Waiting { reason, .. } if reason.contains("db-1 is missing"))
        );
        assert_eq!(d.partition, 3);
    }

    #[test]
    fn with_no_node_ready_there_is_nothing_to_protect() {
        let o = seen(
            vec![pod(0, "a", false), pod(1, "a", false), pod(2, "a", false)],
            0,
        );
        let d = decide("db", 3, &revs("a", "b", Some(3)), &o);
        assert_eq!((d.partition, d.rollout), (0, Rollout::Unguarded));
    }

    #[test]
    fn a_single_node_cluster_is_replaced_without_waiting_for_others() {
        let o = seen(vec![pod(0, "a", true)], 0);
        let d = decide("db", 1, &revs("a", "b", Some(1)), &o);
        assert_eq!(d.partition, 0);
        assert_eq!(d.rollout, Rollout::Replacing { pod: "db-0".into() });
    }

    #[test]
    fn pods_beyond_the_desired_replicas_are_ignored() {
        // Scaling 3 → 2 while an update is pending: db-2 is going away.
        let o = seen(
            vec![pod(0, "a", true), pod(1, "a", true), pod(2, "a", false)],
            0,
        );
        let d = decide("db", 2, &revs("a", "b", Some(2)), &o);
        assert_eq!(d.partition, 1);
    }
}
