//! Owns the snapshot schedule: parsing `spec.snapshots.schedule` (5-field cron or `@hourly`-style,
//! UTC), deciding whether a tick is due, choosing the node that takes it and describing the result.
//! Must not read a clock or call a node: the caller passes `now` and does the `POST /snapshot`.
//! Invariant: the next tick is computed from the last *attempt*, so ticks missed while the
//! operator was down give one snapshot, not a burst, and a failed attempt waits for the next tick.
//! See `controller` (which calls `node_client::snapshot`) and `status` (SnapshotSucceeded).

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;

use crate::crd::SnapshotStatus;
use crate::node_client::SnapshotTaken;
use crate::observed::{Observed, PodView};

pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Schedule(Cron);

impl Schedule {
    /// Five fields (minute hour day-of-month month day-of-week) or an `@` macro; no seconds.
    pub fn parse(expr: &str) -> Result<Self, String> {
        CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map(Schedule)
            .map_err(|e| format!("invalid snapshot schedule {expr:?}: {e}"))
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Result<Timestamp, String> {
        self.0
            .find_next_occurrence(&t.to_zoned(TimeZone::UTC), false)
            .map(|z| z.timestamp())
            .map_err(|e| format!("no next snapshot time: {e}"))
    }
}

/// Whether a snapshot is due now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tick {
    /// The tick at `scheduled` has passed without an attempt: take one snapshot now.
    Due { scheduled: Timestamp },
    /// Nothing to do until `next`.
    Wait { next: Timestamp },
}

/// `since` counts as the last attempt when there was none (the cluster's creation), so a new
/// cluster waits for its first tick.
pub fn tick(
    schedule: &Schedule,
    last_attempt: Option<Timestamp>,
    since: Timestamp,
    now: Timestamp,
) -> Result<Tick, String> {
    let next = schedule.next_after(last_attempt.unwrap_or(since))?;
    if next <= now {
        Ok(Tick::Due { scheduled: next })
    } else {
        Ok(Tick::Wait { next })
    }
}

/// When the last snapshot was attempted, from the status the operator wrote.
pub fn last_attempt(last: Option<&SnapshotStatus>) -> Option<Timestamp> {
    last.and_then(|s| s.time.parse().ok())
}

/// The ready node with the most applied history (lowest ordinal on a tie), among the first
/// `replicas` pods whose `/status` could be read.
pub fn choose_node(seen: &Observed, replicas: i32) -> Option<&PodView> {
    seen.ready_pods()
        .filter(|p| p.ordinal < replicas && p.ip.is_some())
        .filter_map(|p| match seen.reports.get(&p.name) {
            Some(Ok(r)) if r.ready => Some((p, r.applied_seq.unwrap_or(0))),
            _ => None,
        })
        .fold(None::<(&PodView, u64)>, |best, (p, seq)| match best {
            Some((_, best_seq)) if best_seq >= seq => best,
            _ => Some((p, seq)),
        })
        .map(|(p, _)| p)
}

/// A successful attempt. A node with nothing new since its last snapshot writes none (and
/// answers sequence 0): the stored one, at `previous_seq`, is current.
pub fn succeeded(
    now: Timestamp,
    node: &str,
    taken: &SnapshotTaken,
    previous_seq: Option<i64>,
) -> SnapshotStatus {
    let (sequence, message) = if taken.skipped {
        (
            previous_seq,
            "nothing applied since the last snapshot: the stored one is current".to_string(),
        )
    } else {
        (
            i64::try_from(taken.seq).ok(),
            format!(
                "sequence {}, {} bytes in {} ms",
                taken.seq, taken.bytes, taken.duration_ms
            ),
        )
    };
    SnapshotStatus {
        time: now.to_string(),
        sequence,
        node: Some(node.to_string()),
        result: SUCCEEDED.into(),
        message: Some(message),
    }
}

pub fn failed(now: Timestamp, node: Option<&str>, message: String) -> SnapshotStatus {
    SnapshotStatus {
        time: now.to_string(),
        sequence: None,
        node: node.map(str::to_string),
        result: FAILED.into(),
        message: Some(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_client::NodeReport;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn hourly() -> Schedule {
        Schedule::parse("0 * * * *").unwrap()
    }

    #[test]
    fn a_new_cluster_waits_for_its_first_tick() {
        let t = tick(
            &hourly(),
            None,
            ts("2026-01-01T10:20:00Z"),
            ts("2026-01-01T10:30:00Z"),
        );
        assert_eq!(
            t,
            Ok(Tick::Wait {
                next: ts("2026-01-01T11:00:00Z")
            })
        );
    }

    #[test]
    fn a_tick_that_passed_since_the_last_attempt_is_due() {
        let t = tick(
            &hourly(),
            Some(ts("2026-01-01T10:00:05Z")),
            ts("2025-01-01T00:00:00Z"),
            ts("2026-01-01T11:00:01Z"),
        );
        assert_eq!(
            t,
            Ok(Tick::Due {
                scheduled: ts("2026-01-01T11:00:00Z")
            })
        );
    }

    #[test]
    fn ticks_missed_while_the_operator_was_down_give_one_snapshot_not_a_burst() {
        let s = hourly();
        // Down from 10:00 to 15:30: five ticks missed.
        let now = ts("2026-01-01T15:30:00Z");
        let t = tick(&s, Some(ts("2026-01-01T10:00:00Z")), now, now).unwrap();
        assert!(matches!(t, Tick::Due { .. }));
        // The attempt made now is the new base: the next one is the next tick, not 12:00.
        assert_eq!(
            tick(&s, Some(now), now, now),
            Ok(Tick::Wait {
                next: ts("2026-01-01T16:00:00Z")
            })
        );
    }

    #[test]
    fn the_next_tick_is_strictly_after_the_last_attempt() {
        let s = Schedule::parse("@daily").unwrap();
        let at = ts("2026-03-04T00:00:00Z");
        assert_eq!(
            tick(&s, Some(at), at, ts("2026-03-04T12:00:00Z")),
            Ok(Tick::Wait {
                next: ts("2026-03-05T00:00:00Z")
            })
        );
    }

    #[test]
    fn schedules_are_read_in_utc_with_five_fields() {
        let s = Schedule::parse("30 2 * * 1").unwrap(); // Mondays 02:30 UTC
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z")), // a Thursday
            Ok(ts("2026-01-05T02:30:00Z"))
        );
        assert!(
            Schedule::parse("0 0 * * * *").is_err(),
            "seconds are not allowed"
        );
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("every hour").is_err());
    }

    #[test]
    fn the_last_attempt_is_read_back_from_the_status() {
        let s = failed(ts("2026-01-01T10:00:00Z"), None, "x".into());
        assert_eq!(last_attempt(Some(&s)), Some(ts("2026-01-01T10:00:00Z")));
        assert_eq!(last_attempt(None), None);
    }

    #[test]
    fn the_ready_node_with_the_most_history_takes_the_snapshot() {
        let pod = |i: i32, ready: bool| PodView {
            name: format!("db-{i}"),
            ordinal: i,
            ready,
            ip: Some(format!("10.0.0.{i}")),
            ..PodView::default()
        };
        let mut o = Observed::new(vec![
            pod(0, true),
            pod(1, true),
            pod(2, false),
            pod(3, true),
        ]);
        let report = |seq: u64| {
            Ok(NodeReport {
                ready: true,
                applied_seq: Some(seq),
                ..NodeReport::default()
            })
        };
        o.reports.insert("db-0".into(), report(7));
        o.reports.insert("db-1".into(), report(9));
        o.reports.insert("db-2".into(), report(99)); // not ready
        o.reports.insert("db-3".into(), report(100)); // beyond replicas (departing)
        assert_eq!(choose_node(&o, 3).map(|p| p.name.as_str()), Some("db-1"));
        o.reports.insert("db-1".into(), Err("unreachable".into()));
        assert_eq!(choose_node(&o, 3).map(|p| p.name.as_str()), Some("db-0"));
        o.reports.clear();
        assert_eq!(choose_node(&o, 3), None);
    }

    #[test]
    fn results_say_what_was_stored() {
        let now = ts("2026-01-01T10:00:00Z");
        let s = succeeded(
            now,
            "db-1",
            &SnapshotTaken {
                seq: 42,
                bytes: 4096,
                duration_ms: 12,
                skipped: false,
            },
            Some(7),
        );
        assert_eq!(s.result, SUCCEEDED);
        assert_eq!(s.sequence, Some(42));
        assert_eq!(s.time, "2026-01-01T10:00:00Z");
        assert_eq!(
            s.message.as_deref(),
            Some("sequence 42, 4096 bytes in 12 ms")
        );
        // The node answers sequence 0 when it skips: the stored snapshot's sequence is kept.
        let skipped = succeeded(
            now,
            "db-1",
            &SnapshotTaken {
                seq: 0,
                skipped: true,
                ..SnapshotTaken::default()
            },
            Some(42),
        );
        assert_eq!(skipped.result, SUCCEEDED);
        assert_eq!(skipped.sequence, Some(42));
        assert!(skipped.message.unwrap().contains("nothing applied"));
    }
}
