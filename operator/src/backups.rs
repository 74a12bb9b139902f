//! Owns what the operator reports about off-cluster backups (`spec.backup`): `status.backup`,
//! the `BackupFailing` condition and the Event of each of its transitions, as pure functions of
//! the nodes' `/status` `backup` objects.
//! Must not do I/O: `controller` gathers the reports (`observed`), `status` places the results.
//! Invariant: only the nodes say whether backups work; without a readable report the previous
//! `status.backup` stays and the condition is `Unknown`, never a guess of `False`.
//! See docs/operations.md for the node side, `crd::BackupSpec` for the settings.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{BackupStatus, HaClusterSpec};
use crate::node_client::BackupReport;
use crate::observed::Observed;

/// The condition type: True while any node says its backups are failing.
pub const BACKUP_FAILING: &str = "BackupFailing";

/// What the nodes said about backups this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// `status.backup` to write.
    pub status: Option<BackupStatus>,
    /// `True`, `False` or `Unknown`.
    pub failing: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// `None` when `spec.backup` is not set (no status, no condition).
pub fn summarize(
    spec: &HaClusterSpec,
    seen: &Observed,
    previous: Option<&BackupStatus>,
) -> Option<Summary> {
    spec.backup.as_ref()?;
    let reports: Vec<(&str, &BackupReport)> = seen
        .reports
        .iter()
        .filter_map(|(name, r)| Some((name.as_str(), r.as_ref().ok()?.backup.as_ref()?)))
        .collect();
    if reports.is_empty() {
        return Some(Summary {
            status: previous.cloned(),
            failing: "Unknown",
            reason: "NotReported",
            message: "no node reports its backups yet (starting, unreachable, or an image without backup support)".into(),
        });
    }
    // The uploader's view is the cluster's; without one (the lease is changing hands), the
    // node that uploaded last.
    let newest = |(_, b): &&(&str, &BackupReport)| upload_time(b);
    let (source, chosen) = reports
        .iter()
        .find(|(_, b)| b.uploader)
        .or_else(|| reports.iter().max_by_key(newest))
        .copied()
        .unwrap_or(reports[0]);
    let failing: Vec<String> = reports
        .iter()
        .filter(|(_, b)| b.failing)
        .map(|(name, b)| {
            let why = b
                .last_error
                .as_deref()
                .unwrap_or("no successful upload for twice the backup interval");
            format!("{name}: {why}")
        })
        .collect();
    let last_error = chosen
        .last_error
        .as_ref()
        .map(|e| format!("{source}: {e}"))
        .or_else(|| failing.first().cloned());
    let status = BackupStatus {
        last_upload_time: chosen.last_upload_time.clone(),
        last_snapshot_seq: chosen.last_snapshot_seq.and_then(|s| i64::try_from(s).ok()),
        archived_seq: reports
            .iter()
            .filter_map(|(_, b)| b.archived_seq)
            .max()
            .and_then(|s| i64::try_from(s).ok()),
        uploader: reports
            .iter()
            .find(|(_, b)| b.uploader)
            .map(|(n, _)| n.to_string()),
        last_error,
    };
    let summary = if failing.is_empty() {
        let upload = match (&status.last_upload_time, status.last_snapshot_seq) {
            (Some(t), Some(s)) => format!("last upload at {t} (sequence {s})"),
            (Some(t), None) => format!("last upload at {t}"),
            _ => "no upload yet".into(),
        };
        let archive = status
            .archived_seq
            .map(|s| format!("; archived to sequence {s}"))
            .unwrap_or_default();
        Summary {
            status: Some(status),
            failing: "False",
            reason: "BackupsSucceeding",
            message: format!("{upload}{archive}"),
        }
    } else {
        Summary {
            status: Some(status),
            failing: "True",
            reason: "BackupFailing",
            message: failing.join("; "),
        }
    };
    Some(summary)
}

fn upload_time(b: &BackupReport) -> Option<Timestamp> {
    b.last_upload_time.as_deref()?.parse().ok()
}

/// An Event worth publishing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The Event for a change of `BackupFailing` between the previous and the new conditions:
/// a Warning when backups start failing, a Normal one when they work again.
pub fn transition(previous: &[Condition], now: &[Condition]) -> Option<Transition> {
    let find = |cs: &[Condition]| cs.iter().find(|c| c.type_ == BACKUP_FAILING).cloned();
    let after = find(now)?;
    let before = find(previous).map(|c| c.status);
    match (before.as_deref(), after.status.as_str()) {
        (Some("True"), "True") | (_, "Unknown") => None,
        (_, "True") => Some(Transition {
            warning: true,
            reason: "BackupFailing",
            note: after.message,
        }),
        (Some("True"), "False") => Some(Transition {
            warning: false,
            reason: "BackupRecovered",
            note: after.message,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_client::NodeReport;
    use crate::observed::PodView;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn spec(backup: bool) -> HaClusterSpec {
        let yaml = if backup {
            "backup: {url: 's3://b/p'}"
        } else {
            "{}"
        };
        serde_yaml::from_str(yaml).unwrap()
    }

    fn seen(reports: &[(&str, Option<BackupReport>)]) -> Observed {
        let mut o = Observed::new(
            reports
                .iter()
                .enumerate()
                .map(|(i, (n, _))| PodView {
                    name: n.to_string(),
                    ordinal: i as i32,
                    ready: true,
                    ..PodView::default()
                })
                .collect(),
        );
        for (n, b) in reports {
            o.reports.insert(
                n.to_string(),
                Ok(NodeReport {
                    ready: true,
                    caught_up: true,
                    backup: b.clone(),
                    ..NodeReport::default()
                }),
            );
        }
        o
    }

    fn report(uploader: bool, at: &str, seq: u64, archived: u64) -> BackupReport {
        BackupReport {
            url: "s3://b/p".into(),
            uploader,
            last_upload_time: Some(at.into()),
            last_snapshot_seq: Some(seq),
            archived_seq: Some(archived),
            last_error: None,
            failing: false,
        }
    }

    #[test]
    fn without_spec_backup_nothing_is_reported() {
        let o = seen(&[("db-0", Some(report(true, "2026-01-01T00:00:00Z", 1, 2)))]);
        assert_eq!(summarize(&spec(false), &o, None), None);
    }

    #[test]
    fn the_uploaders_view_is_the_status_and_the_archive_is_the_furthest() {
        let o = seen(&[
            ("db-0", Some(report(false, "2026-01-01T02:00:00Z", 90, 95))),
            ("db-1", Some(report(true, "2026-01-01T01:00:00Z", 50, 120))),
            ("db-2", None),
        ]);
        let s = summarize(&spec(true), &o, None).unwrap();
        let st = s.status.unwrap();
        assert_eq!(st.uploader.as_deref(), Some("db-1"));
        assert_eq!(st.last_upload_time.as_deref(), Some("2026-01-01T01:00:00Z"));
        assert_eq!(st.last_snapshot_seq, Some(50));
        assert_eq!(st.archived_seq, Some(120));
        assert_eq!(st.last_error, None);
        assert_eq!((s.failing, s.reason), ("False", "BackupsSucceeding"));
        assert!(s.message.contains("sequence 50"), "{}", s.message);
    }

    #[test]
    fn without_an_uploader_the_newest_upload_counts() {
        let o = seen(&[
            ("db-0", Some(report(false, "2026-01-01T01:00:00Z", 50, 60))),
            ("db-1", Some(report(false, "2026-01-01T03:00:00Z", 70, 70))),
        ]);
        let st = summarize(&spec(true), &o, None).unwrap().status.unwrap();
        assert_eq!(st.last_snapshot_seq, Some(70));
        assert_eq!(st.uploader, None);
    }

    #[test]
    fn any_failing_node_makes_the_condition_true_with_its_error() {
        let mut bad = report(true, "2026-01-01T01:00:00Z", 50, 60);
        bad.failing = true;
        bad.last_error = Some("PUT s3://b/p: 403 AccessDenied".into());
        let mut stale = report(false, "2026-01-01T01:00:00Z", 50, 60);
        stale.failing = true;
        let o = seen(&[("db-0", Some(stale)), ("db-1", Some(bad))]);
        let s = summarize(&spec(true), &o, None).unwrap();
        assert_eq!((s.failing, s.reason), ("True", "BackupFailing"));
        assert!(
            s.message.contains("db-1: PUT s3://b/p: 403"),
            "{}",
            s.message
        );
        assert!(
            s.message.contains("db-0: no successful upload"),
            "{}",
            s.message
        );
        assert_eq!(
            s.status.unwrap().last_error.as_deref(),
            Some("db-1: PUT s3://b/p: 403 AccessDenied")
        );
    }

    #[test]
    fn no_report_keeps_the_previous_status_and_says_unknown() {
        let previous = BackupStatus {
            archived_seq: Some(7),
            ..BackupStatus::default()
        };
        let mut o = seen(&[("db-0", None)]);
        o.reports.insert("db-1".into(), Err("unreachable".into()));
        let s = summarize(&spec(true), &o, Some(&previous)).unwrap();
        assert_eq!(s.status, Some(previous));
        assert_eq!((s.failing, s.reason), ("Unknown", "NotReported"));
    }

    fn cond(status: &str, message: &str) -> Condition {
        Condition {
            type_: BACKUP_FAILING.into(),
            status: status.into(),
            reason: "r".into(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn events_on_transitions_only() {
        let t = transition(&[cond("False", "")], &[cond("True", "db-0: 403")]).unwrap();
        assert!(t.warning);
        assert_eq!((t.reason, t.note.as_str()), ("BackupFailing", "db-0: 403"));
        let t = transition(&[], &[cond("True", "x")]).unwrap();
        assert_eq!(t.reason, "BackupFailing");
        let t = transition(&[cond("True", "x")], &[cond("False", "ok")]).unwrap();
        assert!(!t.warning);
        assert_eq!(t.reason, "BackupRecovered");
        assert_eq!(transition(&[cond("True", "x")], &[cond("True", "y")]), None);
        assert_eq!(
            transition(&[cond("False", "x")], &[cond("False", "y")]),
            None
        );
        assert_eq!(transition(&[], &[cond("False", "y")]), None);
        assert_eq!(
            transition(&[cond("True", "x")], &[cond("Unknown", "y")]),
            None
        );
        assert_eq!(transition(&[cond("True", "x")], &[]), None);
    }
}
