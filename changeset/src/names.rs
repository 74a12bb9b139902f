//! Owns the names ha uses on NATS (reference §2.1) and the `--replication-policy` values (§2.5).
//! Must stay pure: no NATS client types here; the consumer maps `DeliverPolicy` onto async-nats.
//! Invariant: every name is byte-for-byte what the Go original computes for the same input, so
//! Go nodes and ha nodes share subjects and durables.
//! See the node's `replication` module and the `ha-sync` extension for their users, and the
//! reference §2.1/§2.5 for the source.

use std::fmt;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// The default stream name (`--replication-stream`).
pub const DEFAULT_STREAM: &str = "ha_replication";

pub use ha_names::{durable_name, normalize_identifier};

/// The subject a database's change sets are published on: `<stream>.<normalize(file name)>`,
/// or just `<stream>` when the normalised name is empty.
pub fn subject(stream: &str, db_file_name: &str) -> String {
    let id = normalize_identifier(db_file_name);
    if id.is_empty() {
        stream.to_string()
    } else {
        format!("{stream}.{id}")
    }
}

/// The subjects the stream is created with (§2.4): `<stream>` and `<stream>.>`.
pub fn stream_subjects(stream: &str) -> Vec<String> {
    vec![stream.to_string(), format!("{stream}.>")]
}

/// The object-store bucket holding snapshots: `<stream>_SNAPSHOTS`.
pub fn snapshot_bucket(stream: &str) -> String {
    format!("{stream}_SNAPSHOTS")
}

/// Where a newly created durable consumer starts (`--replication-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverPolicy {
    /// `all` or empty: from the first message in the stream.
    All,
    /// `last`: from the last message.
    Last,
    /// `new`: only messages published after the consumer is created.
    New,
    /// `by_start_sequence=N`: from stream sequence N (N >= 1).
    ByStartSequence(u64),
    /// `by_start_time=YYYY-MM-DD HH:MM:SS` (UTC): from the first message at or after that time.
    ByStartTime(OffsetDateTime),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid deliver policy: {0}")]
pub struct InvalidDeliverPolicy(pub String);

impl DeliverPolicy {
    /// Parses a `--replication-policy` value exactly as the original accepts it; anything else
    /// is `invalid deliver policy: <value>`.
    pub fn parse(value: &str) -> Result<DeliverPolicy, InvalidDeliverPolicy> {
        let invalid = || InvalidDeliverPolicy(value.to_string());
        match value {
            "" | "all" => return Ok(DeliverPolicy::All),
            "last" => return Ok(DeliverPolicy::Last),
            "new" => return Ok(DeliverPolicy::New),
            _ => {}
        }
        if let Some(n) = value.strip_prefix("by_start_sequence=") {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let seq: u64 = n.parse().map_err(|_| invalid())?;
            if seq == 0 {
                return Err(invalid());
            }
            return Ok(DeliverPolicy::ByStartSequence(seq));
        }
        if let Some(t) = value.strip_prefix("by_start_time=") {
            return parse_utc(t)
                .map(DeliverPolicy::ByStartTime)
                .ok_or_else(invalid);
        }
        Err(invalid())
    }
}

impl fmt::Display for DeliverPolicy {
    /// The flag value that parses back to this policy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliverPolicy::All => f.write_str("all"),
            DeliverPolicy::Last => f.write_str("last"),
            DeliverPolicy::New => f.write_str("new"),
            DeliverPolicy::ByStartSequence(n) => write!(f, "by_start_sequence={n}"),
            DeliverPolicy::ByStartTime(t) => write!(
                f,
                "by_start_time={:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
        }
    }
}

/// Go layout `2006-01-02 15:04:05` in UTC: fixed widths, zero padded, nothing else.
fn parse_utc(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let day = u8::try_from(num(8..10)?).ok()?;
    let hour = u8::try_from(num(11..13)?).ok()?;
    let minute = u8::try_from(num(14..16)?).ok()?;
    let second = u8::try_from(num(17..19)?).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms(hour, minute, second).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_normalised_as_the_original_does() {
        assert_eq!(normalize_identifier("ha.db"), "ha_db");
        assert_eq!(normalize_identifier("mydatabase.db"), "mydatabase_db");
        assert_eq!(normalize_identifier("ha.db_node1"), "ha_db_node1");
        assert_eq!(normalize_identifier("a b\tc*d>e/f.g"), "a_b_c_d_e_f_g");
        assert_eq!(normalize_identifier("__.x.__"), "x");
        assert_eq!(normalize_identifier("..."), "");
        assert_eq!(normalize_identifier(""), "");
        // Longer than 32: the LAST 32 bytes; no re-trim after the cut (as Go).
        let long = "a_very_long_database_name_for_testing.db_node-number-1";
        let n = normalize_identifier(long);
        assert_eq!(n.len(), 32);
        assert!(long.replace('.', "_").ends_with(&n));
        assert_eq!(normalize_identifier(&format!("x{}", "_".repeat(40))), "x");
        assert_eq!(
            normalize_identifier(&format!("{}_b", "a".repeat(40))).len(),
            32
        );
        // A cut inside a multi-byte character moves forward to the next character.
        let n = normalize_identifier(&format!("{}é{}", "a".repeat(10), "b".repeat(31)));
        assert_eq!(n, "b".repeat(31));
    }

    #[test]
    fn subjects_durables_and_buckets_match_the_reference_examples() {
        assert_eq!(subject(DEFAULT_STREAM, "ha.db"), "ha_replication.ha_db");
        assert_eq!(
            subject(DEFAULT_STREAM, "mydatabase.db"),
            "ha_replication.mydatabase_db"
        );
        assert_eq!(subject("s", ""), "s");
        assert_eq!(subject("s", "./"), "s");
        assert_eq!(durable_name("ha.db", "node1"), "ha_db_node1");
        assert_eq!(snapshot_bucket(DEFAULT_STREAM), "ha_replication_SNAPSHOTS");
        assert_eq!(stream_subjects("s"), vec!["s", "s.>"]);
    }

    #[test]
    fn every_documented_policy_parses() {
        assert_eq!(DeliverPolicy::parse("").unwrap(), DeliverPolicy::All);
        assert_eq!(DeliverPolicy::parse("all").unwrap(), DeliverPolicy::All);
        assert_eq!(DeliverPolicy::parse("last").unwrap(), DeliverPolicy::Last);
        assert_eq!(DeliverPolicy::parse("new").unwrap(), DeliverPolicy::New);
        assert_eq!(
            DeliverPolicy::parse("by_start_sequence=42").unwrap(),
            DeliverPolicy::ByStartSequence(42)
        );
        let t = DeliverPolicy::parse("by_start_time=2024-02-29 23:59:58").unwrap();
        let DeliverPolicy::ByStartTime(at) = t else {
            panic!("{t:?}")
        };
        assert_eq!(at.unix_timestamp(), 1_709_251_198);
        assert_eq!(at.offset(), time::UtcOffset::UTC);
        for v in [
            "all",
            "last",
            "new",
            "by_start_sequence=7",
            "by_start_time=2024-01-02 03:04:05",
        ] {
            assert_eq!(DeliverPolicy::parse(v).unwrap().to_string(), v);
        }
    }

    #[test]
    fn anything_else_is_an_invalid_deliver_policy_error() {
        for v in [
            "ALL",
            " all",
            "first",
            "by_start_sequence=",
            "by_start_sequence=0",
            "by_start_sequence=-1",
            "by_start_sequence=12abc",
            "by_start_sequence=99999999999999999999999",
            "by_start_time=",
            "by_start_time=2024-1-02 03:04:05",
            "by_start_time=2024-02-30 00:00:00",
            "by_start_time=2024-01-02T03:04:05",
            "by_start_time=2024-01-02 24:00:00",
            "by_start_time=2024-01-02 03:04:05Z",
            "by_start_time=２０２４-01-02 03:04:05",
        ] {
            let err = DeliverPolicy::parse(v).unwrap_err();
            assert_eq!(err.to_string(), format!("invalid deliver policy: {v}"));
        }
    }
}
