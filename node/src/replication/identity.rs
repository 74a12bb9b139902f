//! Owns the check "is the stream behind this node the one it applied?": a stream deleted and
//! recreated starts again at sequence 1, and a log that lost acknowledged messages (lazy fsync
//! and a power cut) ends before the node's position; in both cases sequence numbers no longer
//! name the messages the node applied, and trusting them would skip new messages silently.
//! The identity is the stream's creation time, recorded in `_ha_meta` (`stream_created`) with
//! the data and stamped on every snapshot.
//! Must not consume anything (nor know the consumer): `consumer` calls `check` before it
//! creates its durable and `watch` on its periodic stream look; recovery restores a snapshot
//! taken from *this* stream.
//! Invariant: a node whose data does not come from the stream it sees never consumes it: it is
//! recovered from a consistent snapshot, or it says why in `/status` and `/readyz` and waits.
//! See docs/replication.md "Durability" and docs/operations.md.

use std::sync::atomic::Ordering;

use async_nats::jetstream::stream;

use super::status::ReplStatus;
use crate::db::{Params, Stmt, StmtResult, Value};
use crate::exec::{ExecError, Executor};
use crate::metrics::Metrics;
use crate::snapshot::Snapshots;

/// Why the consumer must not consume the stream (yet).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Not the stream the data came from, and no snapshot of it to recover from.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] ExecError),
}

/// What `check` works with: the consumer's parts, without the consumer.
pub struct Node<'a> {
    pub exec: &'a Executor,
    pub status: &'a ReplStatus,
    pub metrics: &'a Metrics,
    pub snapshots: Option<&'a Snapshots>,
}

/// The `_ha_meta` key of the identity of the stream the data was applied from.
pub const KEY: &str = "stream_created";

/// What the node sees of the stream now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The stream's creation time, as nanoseconds since the epoch (decimal).
    pub created: String,
    pub last: u64,
}

impl Observed {
    pub fn of(info: &stream::Info) -> Observed {
        Observed {
            created: info.created.unix_timestamp_nanos().to_string(),
            last: info.state.last_sequence,
        }
    }
}

/// The judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The stream the data came from; `record` when its identity is not stored yet.
    Same { record: bool },
    /// Another stream than the one the node applied (deleted and created again).
    Recreated { stored: String },
    /// The stream ends before the node's position: messages it acknowledged are gone.
    Truncated,
}

/// `stored`: the identity in `_ha_meta`; `applied`: the node's position.
pub fn judge(stored: Option<&str>, applied: u64, now: &Observed) -> Verdict {
    if applied == 0 {
        // Nothing applied: whatever stream this is, the node starts from it.
        return Verdict::Same {
            record: stored != Some(now.created.as_str()),
        };
    }
    match stored {
        Some(s) if s != now.created => Verdict::Recreated { stored: s.into() },
        _ if now.last < applied => Verdict::Truncated,
        s => Verdict::Same {
            record: s.is_none(),
        },
    }
}

/// The reason shown in `/status` and `/readyz` while the node refuses the stream.
pub fn reason(v: &Verdict, applied: u64, now: &Observed) -> Option<String> {
    let what = match v {
        Verdict::Same { .. } => return None,
        Verdict::Recreated { stored } => format!(
            "the replication stream was recreated (created at {} ns, this node's data comes from the stream created at {stored} ns)",
            now.created
        ),
        Verdict::Truncated => format!(
            "the replication stream ends at sequence {} but this node applied up to {applied}: acknowledged messages were lost by NATS",
            now.last
        ),
    };
    Some(format!(
        "{what}; no snapshot taken from this stream can replace the data, so the node does not consume it \
         (restore a backup or a snapshot, see docs/operations.md)"
    ))
}

/// The identity stored in the database, if any.
async fn stored(c: &Node<'_>) -> Result<Option<String>, IdentityError> {
    let r = c
        .exec
        .execute(vec![Stmt {
            sql: "SELECT value FROM _ha_meta WHERE key = ?1".into(),
            params: Params::Positional(vec![Value::Text(KEY.into())]),
        }])
        .await?;
    Ok(match r.results.into_iter().next() {
        Some(StmtResult::Rows(rows)) => rows.rows.into_iter().next().and_then(|r| match &r[..] {
            [Value::Text(s)] => Some(s.clone()),
            [Value::Integer(i)] => Some(i.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

/// Records `created` as the identity of the stream the data comes from.
async fn record(c: &Node<'_>, created: &str) -> Result<(), IdentityError> {
    c.exec.set_meta(KEY, Some(created)).await?;
    Ok(())
}

/// Before the consumer starts: judges the stream, records a new identity, and recovers from a
/// snapshot consistent with the stream when it is not the one the data came from. Returns
/// the applied sequence to start after; an error (the node refuses the stream) otherwise.
pub async fn check(c: &Node<'_>, info: &stream::Info, applied: u64) -> Result<u64, IdentityError> {
    let now = Observed::of(info);
    let stored = stored(c).await?;
    let verdict = judge(stored.as_deref(), applied, &now);
    if let Verdict::Same { record: r } = verdict {
        if r {
            record(c, &now.created).await?;
        }
        set_known(c, Some(now.created.clone()));
        c.status.set_identity(None);
        return Ok(applied);
    }
    // In doubt: no snapshot may be stamped with an identity until it is settled.
    set_known(c, None);
    let msg = reason(&verdict, applied, &now).unwrap_or_default();
    tracing::error!(applied, stream_last = now.last, "{msg}");
    if c.status.identity().is_none() {
        c.status.identity_problems.fetch_add(1, Ordering::Relaxed);
    }
    c.status.set_identity(Some(msg.clone()));
    if let Some(snaps) = c.snapshots {
        match snaps
            .recover_consistent(c.exec, &now.created, now.last)
            .await
        {
            Ok(Some((f, refused))) => {
                record(c, &now.created).await?;
                let to = c.exec.applied_seq().await?.0;
                c.status.applied_seq.store(to, Ordering::Release);
                c.status.recoveries.fetch_add(1, Ordering::Relaxed);
                c.metrics.snapshot_recoveries.inc();
                if let Ok(mut g) = c.status.last_recovery.lock() {
                    *g = Some(serde_json::json!({
                        "at": time::OffsetDateTime::now_utc()
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default(),
                        "snapshot": f.name,
                        "from_seq": applied,
                        "to_seq": to,
                        "stream_last_seq": now.last,
                        "bytes": f.bytes,
                        "refused": refused,
                        "detected": match verdict {
                            Verdict::Recreated { .. } => "stream recreated",
                            _ => "stream ends before the applied sequence",
                        },
                    }));
                }
                tracing::warn!(snapshot = %f.name, from = applied, to, "recovered from a snapshot of the current stream; resuming after it");
                set_known(c, Some(now.created));
                c.status.set_identity(None);
                return Ok(to);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "recovery from a snapshot failed"),
        }
    }
    Err(IdentityError::Refused(msg))
}

/// While consuming (the periodic stream look): a stream whose creation time changed under
/// the consumer, or that now ends before the applied sequence (its server came back without
/// what it had acknowledged), is not the stream the data came from; stop, and let `check`
/// judge it at the restart.
pub fn watch(status: &ReplStatus, info: &stream::Info) -> Result<(), IdentityError> {
    let now = Observed::of(info);
    let applied = status.applied();
    match status.stream_created() {
        Some(known) if known != now.created => Err(IdentityError::Refused(format!(
            "the replication stream changed under the consumer (created at {} ns, was {known} ns)",
            now.created
        ))),
        _ if now.last < applied => Err(IdentityError::Refused(format!(
            "the replication stream now ends at sequence {} before the applied sequence {applied}",
            now.last
        ))),
        _ => Ok(()),
    }
}

fn set_known(c: &Node<'_>, created: Option<String>) {
    c.status.set_stream_created(created.clone());
    if let Some(s) = c.snapshots {
        s.set_stream_identity(created);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(created: &str, last: u64) -> Observed {
        Observed {
            created: created.into(),
            last,
        }
    }

    #[test]
    fn the_same_stream_is_fine_and_recorded_once() {
        assert_eq!(
            judge(None, 10, &at("1", 20)),
            Verdict::Same { record: true }
        );
        assert_eq!(
            judge(Some("1"), 10, &at("1", 10)),
            Verdict::Same { record: false }
        );
    }

    #[test]
    fn a_node_without_data_takes_any_stream() {
        assert_eq!(
            judge(Some("1"), 0, &at("2", 0)),
            Verdict::Same { record: true }
        );
    }

    #[test]
    fn a_recreated_stream_is_not_the_one_the_data_came_from() {
        let v = judge(Some("1"), 10, &at("2", 50));
        assert_eq!(v, Verdict::Recreated { stored: "1".into() });
        assert!(reason(&v, 10, &at("2", 50)).unwrap().contains("recreated"));
    }

    #[test]
    fn a_stream_ending_before_the_position_lost_acknowledged_messages() {
        let v = judge(Some("1"), 10, &at("1", 7));
        assert_eq!(v, Verdict::Truncated);
        // Also without a recorded identity (data from before it was recorded).
        assert_eq!(judge(None, 10, &at("1", 7)), Verdict::Truncated);
        let r = reason(&v, 10, &at("1", 7)).unwrap();
        assert!(
            r.contains("ends at sequence 7") && r.contains("up to 10"),
            "{r}"
        );
    }
}
