//! Owns the status the operator reports (phase, readyReplicas, the Ready / Progressing / Degraded /
//! SnapshotSucceeded / BackupFailing conditions, per-node sequences and lag, endpoints) as a pure function of
//! what one reconcile observed and decided, and the server-side-apply patch that writes it.
//! Must not do I/O or read a clock: `now` and every observation come in as arguments.
//! Invariant: a condition keeps its lastTransitionTime while its status does not change.
//! See `controller` (the caller), `rollout`, `members`, `snapshots` for the decisions shown here.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use serde_json::json;

use crate::backups;
use crate::crd::{
    Endpoints, HaCluster, HaClusterSpec, HaClusterStatus, NodeStatus, ProgressMark, SnapshotStatus,
};
use crate::observed::{Observed, ordinal_of};
use crate::rollout::{Rollout, RolloutDecision};
use crate::scaling::{Decision, Scale};
use crate::snapshots;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const SNAPSHOT_SUCCEEDED: &str = "SnapshotSucceeded";
pub const STORAGE: &str = "Storage";

/// How long an operation may report the same step before Progressing turns False.
pub const PROGRESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// The `Storage` condition, present while `spec.storage` differs from the StatefulSet's claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageCondition {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl StorageCondition {
    pub fn new(ok: bool, reason: &'static str, message: String) -> Self {
        Self {
            ok,
            reason,
            message,
        }
    }
}

/// The phases, as shown in `kubectl get hac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Creating,
    Running,
    Scaling,
    Updating,
    Degraded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "Creating",
            Phase::Running => "Running",
            Phase::Scaling => "Scaling",
            Phase::Updating => "Updating",
            Phase::Degraded => "Degraded",
            Phase::Failed => "Failed",
        }
    }
}

/// What the snapshot schedule looks like this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// No `spec.snapshots.schedule`.
    None,
    /// The schedule does not parse.
    Invalid(String),
    /// The next tick, when known.
    Next(Option<Timestamp>),
}

/// Everything the status is computed from.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub cluster: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a HaClusterSpec,
    pub previous: Option<&'a HaClusterStatus>,
    /// The StatefulSet as applied (its status gives readyReplicas).
    pub stateful_set: Option<&'a StatefulSet>,
    pub seen: &'a Observed,
    pub rollout: &'a RolloutDecision,
    /// The scale step of this reconcile.
    pub scale: &'a Decision,
    /// What the storage step did, when `spec.storage` differs from the claims.
    pub storage: Option<StorageCondition>,
    /// Departed nodes still to clean, with why they are still listed.
    pub departed: &'a [(String, String)],
    /// Pods beyond `spec.replicas` that still exist.
    pub leaving: &'a [String],
    pub schedule: Schedule,
    /// The last snapshot: this reconcile's, else the previous status's.
    pub last_snapshot: Option<SnapshotStatus>,
    pub endpoints: Option<Endpoints>,
    /// Why the spec cannot be applied, when it cannot.
    pub failure: Option<String>,
    pub now: Timestamp,
}

/// The status to write.
pub fn compute(i: &Inputs<'_>) -> HaClusterStatus {
    let desired = i.spec.replicas;
    let sts_status = i.stateful_set.and_then(|s| s.status.as_ref());
    let ready = sts_status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let existing = sts_status.map(|s| s.replicas).unwrap_or(0);
    let previous_phase = i.previous.and_then(|s| s.phase.as_deref());
    let phase = phase(i, ready, existing, previous_phase);

    let not_ready: Vec<String> = (0..desired)
        .filter(|o| i.seen.pod(*o).is_none_or(|p| !p.ready || p.terminating))
        .map(|o| format!("{}-{o}", i.cluster))
        .collect();
    let ready_line = if not_ready.is_empty() {
        format!("{ready}/{desired} nodes ready")
    } else {
        format!(
            "{ready}/{desired} nodes ready; not ready: {}",
            not_ready.join(", ")
        )
    };

    let previous = i
        .previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let cond = |type_: &str, status: bool, reason: &str, message: String| {
        condition(
            previous,
            type_,
            if status { "True" } else { "False" },
            reason,
            message,
            i.generation,
            i.now,
        )
    };

    let mut conditions = Vec::new();
    conditions.push(
        match (&i.failure, ready >= desired && i.stateful_set.is_some()) {
            (Some(f), _) => cond(READY, false, "InvalidSpec", f.clone()),
            (None, true) => cond(READY, true, "AllNodesReady", ready_line.clone()),
            (None, false) => cond(READY, false, "NodesNotReady", ready_line.clone()),
        },
    );
    let (progressing, reason, message) = progressing(i, phase, existing);
    // A step reported unchanged for PROGRESS_DEADLINE: a bad image, a pod that never gets
    // ready, a node that never catches up. Said, not hidden behind a True condition.
    let last_progress =
        progressing.then(|| match i.previous.and_then(|p| p.last_progress.as_ref()) {
            Some(m) if m.message == message => m.clone(),
            _ => ProgressMark {
                message: message.clone(),
                time: i.now.to_string(),
            },
        });
    let stalled = last_progress
        .as_ref()
        .and_then(|m| m.time.parse::<Timestamp>().ok())
        .and_then(|since| i.now.duration_since(since).try_into().ok())
        .is_some_and(|d: std::time::Duration| d >= PROGRESS_DEADLINE);
    if stalled {
        conditions.push(cond(
            PROGRESSING,
            false,
            "ProgressDeadlineExceeded",
            format!(
                "no progress for {} minutes: {message}",
                PROGRESS_DEADLINE.as_secs() / 60
            ),
        ));
    } else {
        conditions.push(cond(PROGRESSING, progressing, reason, message));
    }
    // Expected downtime is not degradation: the one pod an update replaces, the pods a
    // scale-up is still starting.
    let scaling_down = !i.leaving.is_empty() || !i.departed.is_empty();
    let degraded = match phase {
        Phase::Degraded => true,
        Phase::Updating => not_ready.len() > 1,
        Phase::Scaling => scaling_down && !not_ready.is_empty(),
        _ => false,
    };
    conditions.push(if degraded {
        cond(DEGRADED, true, "NodesNotReady", ready_line)
    } else {
        cond(
            DEGRADED,
            false,
            "AsExpected",
            "no node is unexpectedly down".into(),
        )
    });
    if let Some(c) = snapshot_condition(i) {
        conditions.push(c);
    }
    if let Some(st) = &i.storage {
        conditions.push(cond(STORAGE, st.ok, st.reason, st.message.clone()));
    }
    let backup = backups::summarize(i.spec, i.seen, i.previous.and_then(|p| p.backup.as_ref()));
    if let Some(b) = &backup {
        conditions.push(condition(
            previous,
            backups::BACKUP_FAILING,
            b.failing,
            b.reason,
            b.message.clone(),
            i.generation,
            i.now,
        ));
    }

    HaClusterStatus {
        observed_generation: i.generation,
        phase: Some(phase.as_str().into()),
        ready_replicas: ready,
        replicas: existing,
        ready: Some(format!("{ready}/{desired}")),
        selector: Some(
            crate::render::labels::selector_labels(i.cluster)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        conditions,
        nodes: nodes(i),
        last_progress,
        last_snapshot: i.last_snapshot.clone(),
        backup: backup.and_then(|b| b.status),
        endpoints: i.endpoints.clone(),
    }
}

fn phase(i: &Inputs<'_>, ready: i32, existing: i32, previous: Option<&str>) -> Phase {
    let desired = i.spec.replicas;
    if i.failure.is_some() {
        return Phase::Failed;
    }
    // Still creating: never fully ready yet (a spec that failed before any node ran counts).
    let never_ran = match previous {
        None | Some("Creating") | Some("Pending") => true,
        Some("Failed") => i.previous.is_none_or(|p| p.ready_replicas == 0),
        Some(_) => false,
    };
    if never_ran && ready < desired {
        return Phase::Creating;
    }
    let refused = matches!(i.scale.scale, Scale::Refused { .. });
    if !i.leaving.is_empty()
        || !i.departed.is_empty()
        || (existing != desired && !refused)
        || matches!(i.scale.scale, Scale::Step { .. } | Scale::Waiting { .. })
    {
        return Phase::Scaling;
    }
    if i.rollout.rollout != Rollout::Idle {
        return Phase::Updating;
    }
    if ready < desired {
        return Phase::Degraded;
    }
    Phase::Running
}

fn progressing(i: &Inputs<'_>, phase: Phase, existing: i32) -> (bool, &'static str, String) {
    let desired = i.spec.replicas;
    match phase {
        Phase::Failed => (false, "InvalidSpec", i.failure.clone().unwrap_or_default()),
        Phase::Creating => (true, "Creating", format!("starting {desired} nodes")),
        Phase::Scaling if i.scale.replicas < desired || existing < desired => (
            true,
            "ScalingUp",
            i.scale.message().unwrap_or_else(|| format!(
                "{existing} → {desired} nodes; new nodes restore the latest snapshot, then follow the stream"
            )),
        ),
        Phase::Scaling => {
            let mut parts = Vec::new();
            if let Some(m) = i.scale.message() {
                parts.push(m);
            }
            if !i.leaving.is_empty() {
                parts.push(format!("waiting for {} to stop", i.leaving.join(", ")));
            }
            for (name, why) in i.departed {
                parts.push(format!("{name}: {why}"));
            }
            if parts.is_empty() {
                parts.push(format!("{existing} → {desired} nodes"));
            }
            (true, "ScalingDown", parts.join("; "))
        }
        Phase::Updating => (
            true,
            "RollingUpdate",
            i.rollout.message(desired).unwrap_or_default(),
        ),
        Phase::Running | Phase::Degraded if matches!(i.scale.scale, Scale::Refused { .. }) => (
            false,
            "ScaleRefused",
            i.scale.message().unwrap_or_default(),
        ),
        Phase::Running | Phase::Degraded => (
            false,
            "Stable",
            format!("{desired} nodes at the desired revision"),
        ),
    }
}

fn snapshot_condition(i: &Inputs<'_>) -> Option<Condition> {
    let previous = i
        .previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let next = match &i.schedule {
        Schedule::Next(Some(t)) => format!("; next at {t}"),
        _ => String::new(),
    };
    let (status, reason, message) = match (&i.schedule, &i.last_snapshot) {
        (Schedule::Invalid(e), _) => ("False", "InvalidSchedule", e.clone()),
        (Schedule::None, None) => return None,
        (Schedule::Next(_), None) => (
            "Unknown",
            "NoSnapshotYet",
            format!("no snapshot taken yet{next}"),
        ),
        (_, Some(s)) => {
            let what = format!(
                "{} on {} at {}: {}",
                s.result,
                s.node.as_deref().unwrap_or("no node"),
                s.time,
                s.message.as_deref().unwrap_or("")
            );
            if s.result == snapshots::SUCCEEDED {
                ("True", "SnapshotTaken", format!("{what}{next}"))
            } else {
                ("False", "SnapshotFailed", format!("{what}{next}"))
            }
        }
    };
    Some(condition(
        previous,
        SNAPSHOT_SUCCEEDED,
        status,
        reason,
        message,
        i.generation,
        i.now,
    ))
}

/// One condition; its lastTransitionTime is the previous one's when the status is unchanged.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

fn nodes(i: &Inputs<'_>) -> Vec<NodeStatus> {
    let desired = i.spec.replicas;
    let mut out: Vec<(i32, NodeStatus)> = Vec::new();
    for p in &i.seen.pods {
        let report = i.seen.reports.get(&p.name);
        let mut n = NodeStatus {
            name: p.name.clone(),
            ready: p.ready && !p.terminating,
            ..NodeStatus::default()
        };
        match report {
            Some(Ok(r)) => {
                n.applied_seq = r.applied_seq.and_then(|s| i64::try_from(s).ok());
                n.lag = r.lag.and_then(|s| i64::try_from(s).ok());
                n.message = r
                    .gap
                    .clone()
                    .or_else(|| (!r.caught_up).then(|| "catching up with the stream".to_string()));
            }
            Some(Err(e)) => n.message = Some(format!("status unavailable: {e}")),
            None => {}
        }
        if p.ordinal >= desired {
            n.message = Some("leaving: scaled down".into());
        } else if p.terminating {
            n.message = Some("terminating".into());
        }
        out.push((p.ordinal, n));
    }
    for o in (0..desired).filter(|o| i.seen.pod(*o).is_none()) {
        out.push((
            o,
            NodeStatus {
                name: format!("{}-{o}", i.cluster),
                message: Some("no pod".into()),
                ..NodeStatus::default()
            },
        ));
    }
    for (name, why) in i.departed {
        if let Some(o) = ordinal_of(i.cluster, name)
            && !out.iter().any(|(_, n)| &n.name == name)
        {
            out.push((
                o,
                NodeStatus {
                    name: name.clone(),
                    message: Some(format!("departed: {why}")),
                    ..NodeStatus::default()
                },
            ));
        }
    }
    out.sort_by_key(|(o, _)| *o);
    out.into_iter().map(|(_, n)| n).collect()
}

/// Where clients connect, from the spec: the client Service `<name>` and the Ingress host.
pub fn endpoints(cluster: &str, namespace: &str, spec: &HaClusterSpec) -> Endpoints {
    let host = format!("{cluster}.{namespace}.svc");
    Endpoints {
        postgres: spec
            .postgres
            .enabled
            .then(|| format!("{host}:{}", spec.postgres.port)),
        http: Some(format!("http://{host}:{}", spec.http.port)),
        ingress: spec.http.ingress.as_ref().map(|ing| {
            let scheme = if ing.tls_secret.is_some() {
                "https"
            } else {
                "http"
            };
            let path = ing.path.as_deref().unwrap_or("/");
            format!("{scheme}://{}{path}", ing.host)
        }),
    }
}

/// The server-side-apply body for the status subresource.
pub fn patch(status: &HaClusterStatus) -> serde_json::Value {
    json!({
        "apiVersion": HaCluster::api_version(&()),
        "kind": HaCluster::kind(&()),
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_client::NodeReport;
    use crate::observed::PodView;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sts(replicas: i32, ready: i32) -> StatefulSet {
        StatefulSet {
            status: Some(StatefulSetStatus {
                replicas,
                ready_replicas: Some(ready),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        }
    }

    fn seen(ready: &[bool]) -> Observed {
        let mut o = Observed::new(
            ready
                .iter()
                .enumerate()
                .map(|(i, r)| PodView {
                    name: format!("db-{i}"),
                    ordinal: i as i32,
                    ready: *r,
                    ..PodView::default()
                })
                .collect(),
        );
        for (i, _) in ready.iter().enumerate() {
            o.reports.insert(
                format!("db-{i}"),
                Ok(NodeReport {
                    ready: true,
                    applied_seq: Some(40),
                    lag: Some(2),
                    caught_up: true,
                    ..NodeReport::default()
                }),
            );
        }
        o
    }

    struct Case {
        spec: HaClusterSpec,
        previous: Option<HaClusterStatus>,
        sts: Option<StatefulSet>,
        seen: Observed,
        rollout: RolloutDecision,
        scale: Decision,
        departed: Vec<(String, String)>,
        leaving: Vec<String>,
        schedule: Schedule,
        last_snapshot: Option<SnapshotStatus>,
        failure: Option<String>,
        now: Timestamp,
    }

    impl Case {
        fn running(n: i32) -> Case {
            Case {
                spec: HaClusterSpec {
                    replicas: n,
                    ..HaClusterSpec::default()
                },
                previous: Some(HaClusterStatus {
                    phase: Some("Running".into()),
                    ..HaClusterStatus::default()
                }),
                sts: Some(sts(n, n)),
                seen: seen(&vec![true; n as usize]),
                rollout: RolloutDecision {
                    partition: n,
                    rollout: Rollout::Idle,
                    updated: n,
                },
                scale: Decision {
                    replicas: n,
                    scale: Scale::Steady,
                },
                departed: Vec::new(),
                leaving: Vec::new(),
                schedule: Schedule::None,
                last_snapshot: None,
                failure: None,
                now: ts("2026-01-01T10:00:00Z"),
            }
        }

        fn compute(&self) -> HaClusterStatus {
            compute(&Inputs {
                cluster: "db",
                generation: Some(4),
                spec: &self.spec,
                previous: self.previous.as_ref(),
                stateful_set: self.sts.as_ref(),
                seen: &self.seen,
                rollout: &self.rollout,
                scale: &self.scale,
                storage: None,
                departed: &self.departed,
                leaving: &self.leaving,
                schedule: self.schedule.clone(),
                last_snapshot: self.last_snapshot.clone(),
                endpoints: None,
                failure: self.failure.clone(),
                now: self.now,
            })
        }
    }

    fn cond<'a>(s: &'a HaClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_healthy_cluster_is_running_ready_and_not_progressing() {
        let s = Case::running(3).compute();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.ready_replicas, 3);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.ready.as_deref(), Some("3/3"));
        assert_eq!(
            s.selector.as_deref(),
            Some(
                "app.kubernetes.io/instance=db,app.kubernetes.io/name=ha,ha.sqlite.dev/cluster=db"
            )
        );
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, READY).message, "3/3 nodes ready");
        assert_eq!(cond(&s, PROGRESSING).status, "False");
        assert_eq!(cond(&s, DEGRADED).status, "False");
        assert!(
            s.conditions.iter().all(|c| c.type_ != SNAPSHOT_SUCCEEDED),
            "no schedule, no snapshot condition"
        );
        assert_eq!(s.nodes.len(), 3);
        assert_eq!(s.nodes[1].applied_seq, Some(40));
        assert_eq!(s.nodes[1].lag, Some(2));
    }

    #[test]
    fn a_new_cluster_is_creating_until_every_node_is_ready() {
        let mut c = Case::running(3);
        c.previous = None;
        c.sts = Some(sts(3, 1));
        c.seen = seen(&[true, false, false]);
        let s = c.compute();
        assert_eq!(s.phase.as_deref(), Some("Creating"));
        assert_eq!(cond(&s, PROGRESSING).reason, "Creating");
        assert_eq!(cond(&s, READY).reason, "NodesNotReady");
        assert_eq!(
            cond(&s, READY).message,
            "1/3 nodes ready; not ready: db-1, db-2"
        );
        assert_eq!(cond(&s, DEGRADED).status, "False");
    }

    #[test]
    fn a_running_cluster_that_loses_a_node_is_degraded() {
        let mut c = Case::running(3);
        c.sts = Some(sts(3, 2));
        c.seen = seen(&[true, false, true]);
        c.seen
            .reports
            .insert("db-1".into(), Err("unreachable: connection refused".into()));
        let s = c.compute();
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
        assert_eq!(cond(&s, DEGRADED).status, "True");
        assert_eq!(cond(&s, READY).status, "False");
        assert_eq!(
            s.nodes[1].message.as_deref(),
            Some("status unavailable: unreachable: connection refused")
        );
        assert!(!s.nodes[1].ready);
    }

    #[test]
    fn last_transition_time_is_kept_while_a_condition_keeps_its_status() {
        let mut c = Case::running(3);
        let first = c.compute();
        c.previous = Some(first.clone());
        c.now = ts("2026-01-01T11:00:00Z");
        let second = c.compute();
        assert_eq!(
            cond(&second, READY).last_transition_time,
            cond(&first, READY).last_transition_time
        );
        // A change of status moves it.
        c.previous = Some(second);
        c.sts = Some(sts(3, 2));
        c.seen = seen(&[true, true, false]);
        let third = c.compute();
        assert_eq!(cond(&third, READY).status, "False");
        assert_eq!(
            cond(&third, READY).last_transition_time,
            Time(ts("2026-01-01T11:00:00Z"))
        );
    }

    #[test]
    fn scaling_down_lists_leaving_and_departed_nodes_until_they_are_cleaned() {
        let mut c = Case::running(3);
        c.sts = Some(sts(3, 3));
        c.departed = vec![(
            "db-4".into(),
            "removing its consumer failed: HTTP 503".into(),
        )];
        let s = c.compute();
        assert_eq!(s.phase.as_deref(), Some("Scaling"));
        assert_eq!(cond(&s, PROGRESSING).reason, "ScalingDown");
        assert!(cond(&s, PROGRESSING).message.contains("db-4: removing"));
        let names: Vec<_> = s.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["db-0", "db-1", "db-2", "db-4"]);
        assert!(
            s.nodes[3]
                .message
                .as_deref()
                .unwrap()
                .starts_with("departed:")
        );

        let mut c = Case::running(3);
        c.sts = Some(sts(4, 4));
        c.seen = seen(&[true, true, true, true]);
        c.leaving = vec!["db-3".into()];
        let s = c.compute();
        assert_eq!(s.phase.as_deref(), Some("Scaling"));
        assert_eq!(s.nodes[3].message.as_deref(), Some("leaving: scaled down"));
    }

    #[test]
    fn scaling_up_is_progressing_not_degraded() {
        let mut c = Case::running(5);
        c.sts = Some(sts(4, 3));
        c.seen = seen(&[true, true, true, false]);
        let s = c.compute();
        assert_eq!(s.phase.as_deref(), Some("Scaling"));
        assert_eq!(cond(&s, PROGRESSING).reason, "ScalingUp");
        assert_eq!(cond(&s, DEGRADED).status, "False");
        assert_eq!(s.nodes[4].message.as_deref(), Some("no pod"));
    }

    #[test]
    fn a_rolling_update_is_updating_and_says_what_it_waits_for() {
        let mut c = Case::running(3);
        c.sts = Some(sts(3, 2));
        c.rollout = RolloutDecision {
            partition: 2,
            rollout: Rollout::Waiting {
                next: "db-1".into(),
                reason: "db-2 is not ready".into(),
            },
            updated: 1,
        };
        let s = c.compute();
        assert_eq!(s.phase.as_deref(), Some("Updating"));
        let p = cond(&s, PROGRESSING);
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", "RollingUpdate")
        );
        assert!(p.message.contains("db-2 is not ready"), "{}", p.message);
        assert_eq!(
            cond(&s, DEGRADED).status,
            "False",
            "one node down is the update"
        );
    }

    #[test]
    fn a_cluster_whose_first_spec_failed_is_creating_once_fixed() {
        let mut c = Case::running(3);
        c.previous = Some(HaClusterStatus {
            phase: Some("Failed".into()),
            ..HaClusterStatus::default()
        });
        c.sts = Some(sts(3, 0));
        c.seen = seen(&[false, false, false]);
        assert_eq!(c.compute().phase.as_deref(), Some("Creating"));
        // One that ran before and then got a bad spec is not creating again.
        c.previous = Some(HaClusterStatus {
            phase: Some("Failed".into()),
            ready_replicas: 3,
            ..HaClusterStatus::default()
        });
        assert_eq!(c.compute().phase.as_deref(), Some("Degraded"));
    }

    #[test]
    fn an_invalid_spec_fails_with_its_reason() {
        let mut c = Case::running(3);
        c.failure = Some("invalid HaCluster: replicas must be at least 1".into());
        let s = c.compute();
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(cond(&s, READY).reason, "InvalidSpec");
        assert_eq!(cond(&s, PROGRESSING).reason, "InvalidSpec");
    }

    #[test]
    fn the_snapshot_condition_follows_the_last_attempt() {
        let mut c = Case::running(3);
        c.schedule = Schedule::Next(Some(ts("2026-01-01T11:00:00Z")));
        let s = c.compute();
        let sc = cond(&s, SNAPSHOT_SUCCEEDED);
        assert_eq!(
            (sc.status.as_str(), sc.reason.as_str()),
            ("Unknown", "NoSnapshotYet")
        );
        assert!(sc.message.contains("next at 2026-01-01T11:00:00Z"));

        c.last_snapshot = Some(snapshots::failed(
            ts("2026-01-01T10:00:00Z"),
            None,
            "no ready node".into(),
        ));
        let s = c.compute();
        let sc = cond(&s, SNAPSHOT_SUCCEEDED);
        assert_eq!(
            (sc.status.as_str(), sc.reason.as_str()),
            ("False", "SnapshotFailed")
        );
        assert!(sc.message.contains("no ready node"));
        assert_eq!(s.last_snapshot.as_ref().unwrap().result, "Failed");

        c.schedule = Schedule::Invalid("invalid snapshot schedule".into());
        let s = c.compute();
        assert_eq!(cond(&s, SNAPSHOT_SUCCEEDED).reason, "InvalidSchedule");
    }

    #[test]
    fn endpoints_name_the_client_service_and_the_ingress() {
        let mut spec = HaClusterSpec::default();
        spec.postgres.enabled = true;
        spec.postgres.port = 5432;
        spec.http.port = 8080;
        spec.http.ingress = Some(crate::crd::IngressSpec {
            host: "db.example.com".into(),
            tls_secret: Some("tls".into()),
            ..Default::default()
        });
        let e = endpoints("db", "prod", &spec);
        assert_eq!(e.postgres.as_deref(), Some("db.prod.svc:5432"));
        assert_eq!(e.http.as_deref(), Some("http://db.prod.svc:8080"));
        assert_eq!(e.ingress.as_deref(), Some("https://db.example.com/"));
    }

    #[test]
    fn the_patch_is_an_apply_of_the_status_only() {
        let p = patch(&HaClusterStatus::default());
        assert_eq!(p["apiVersion"], "ha.sqlite.dev/v1alpha1");
        assert_eq!(p["kind"], "HaCluster");
        assert!(p.get("spec").is_none());
    }

    #[test]
    fn an_update_without_progress_for_ten_minutes_stops_progressing_with_a_reason() {
        let mut c = Case::running(3);
        c.rollout = RolloutDecision {
            partition: 2,
            rollout: Rollout::Replacing { pod: "db-2".into() },
            updated: 0,
        };
        c.seen = seen(&[true, true, false]);
        let first = c.compute();
        assert_eq!(cond(&first, PROGRESSING).status, "True");
        let mark = first.last_progress.clone().expect("a progress mark");
        // Same step nine minutes later: still progressing.
        c.previous = Some(first);
        c.now = ts("2026-01-01T10:09:00Z");
        let later = c.compute();
        assert_eq!(cond(&later, PROGRESSING).status, "True");
        assert_eq!(later.last_progress.as_ref(), Some(&mark));
        // Ten minutes: False, with the reason and the step it is stuck on.
        c.previous = Some(later);
        c.now = ts("2026-01-01T10:10:00Z");
        let stuck = c.compute();
        let p = cond(&stuck, PROGRESSING);
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", "ProgressDeadlineExceeded")
        );
        assert!(p.message.contains("replacing db-2"), "{}", p.message);
        // The next step is progress again.
        c.previous = Some(stuck);
        c.rollout.rollout = Rollout::Replacing { pod: "db-1".into() };
        c.rollout.updated = 1;
        assert_eq!(cond(&c.compute(), PROGRESSING).status, "True");
    }
}
