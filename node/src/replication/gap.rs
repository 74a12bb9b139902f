//! Owns the judgement "has the stream lost something this node still needs?", at consumer
//! start and while it runs (a node paused or partitioned while `--replication-max-age` purged
//! history ahead of it).
//! Must not do I/O or recover anything: the consumer asks NATS, hands the answers here, and
//! restarts itself (which restores the latest snapshot) when the verdict is a gap.
//! Invariant: `covered` only grows and only ever names a stream position up to which every
//! message of this node's subject is applied; a gap is declared exactly when the stream's first
//! sequence is past `max(applied, covered) + 1` and nothing is still on its way to the node.
//! See `consumer` for where the answers come from and docs/operations.md for recovery.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the consumer learnt about its durable at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableState {
    /// Messages of our subject not delivered yet.
    pub num_pending: u64,
    /// Messages delivered to us but not acknowledged yet (still in our buffers).
    pub num_ack_pending: u64,
}

/// What to do after a periodic look at the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing lost, nothing learnt.
    Fine,
    /// Everything of ours up to this stream sequence is applied (the rest were other subjects').
    Covered(u64),
    /// The stream no longer holds what the node needs next.
    Gap,
}

/// Remembers, for the life of the process, how far the node is known to be complete.
#[derive(Debug, Default)]
pub struct GapWatch {
    /// Every message of our subject up to here is applied, even if `applied_seq` is lower
    /// (a stream shared with other databases moves on without us).
    covered: AtomicU64,
}

impl GapWatch {
    /// The stream position up to which nothing of ours is missing.
    pub fn position(&self, applied: u64) -> u64 {
        applied.max(self.covered.load(Ordering::Acquire))
    }

    pub fn learn(&self, covered: u64) {
        self.covered.fetch_max(covered, Ordering::AcqRel);
    }

    /// Whether a stream starting at `first` has dropped something the node still needs.
    pub fn is_gap(&self, applied: u64, first: u64) -> bool {
        first > self.position(applied) + 1
    }

    /// A message at `seq` arrived while the node expected `position + 1`: the messages in
    /// between were not ours, or were purged before they reached us. `first` is the stream's
    /// first sequence asked *after* the message arrived (a purge only moves it forward, so a
    /// first at or before the expected one proves nothing in between was purged).
    pub fn jump_is_gap(&self, applied: u64, seq: u64, first: u64) -> bool {
        seq > self.position(applied) + 1 && self.is_gap(applied, first)
    }

    /// The periodic look: `first`/`last` of the stream asked before `durable`, and `first_after`
    /// asked after it (so a purge between the two answers cannot be mistaken for "not ours").
    pub fn judge(
        &self,
        applied: u64,
        first: u64,
        last: u64,
        durable: DurableState,
        first_after: u64,
    ) -> Verdict {
        let in_flight = durable.num_ack_pending > 0;
        if self.is_gap(applied, first.max(first_after)) {
            // Delivered but unapplied messages may be exactly the ones purged meanwhile: the
            // message path judges those. Nothing in flight: the next message can only come
            // from the stream's (new) start.
            return if in_flight {
                Verdict::Fine
            } else {
                Verdict::Gap
            };
        }
        if last > self.position(applied) && durable.num_pending == 0 && !in_flight {
            // Every message of ours up to `last` was delivered and acknowledged (= applied),
            // and none was purged before delivery (`first_after` is still within reach).
            return Verdict::Covered(last);
        }
        Verdict::Fine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: DurableState = DurableState {
        num_pending: 0,
        num_ack_pending: 0,
    };

    #[test]
    fn a_stream_starting_right_after_the_applied_sequence_is_no_gap() {
        let w = GapWatch::default();
        assert!(!w.is_gap(10, 11));
        assert!(!w.is_gap(10, 5));
        assert!(w.is_gap(10, 12));
        assert!(!w.is_gap(0, 1));
        assert!(w.is_gap(0, 2));
    }

    #[test]
    fn purged_history_with_nothing_in_flight_is_a_gap() {
        let w = GapWatch::default();
        assert_eq!(w.judge(10, 40, 50, IDLE, 40), Verdict::Gap);
        // Purged between the two stream answers: still a gap.
        assert_eq!(w.judge(10, 11, 50, IDLE, 40), Verdict::Gap);
    }

    #[test]
    fn messages_on_their_way_defer_the_verdict_to_the_message_path() {
        let w = GapWatch::default();
        let busy = DurableState {
            num_pending: 0,
            num_ack_pending: 3,
        };
        assert_eq!(w.judge(10, 40, 50, busy, 40), Verdict::Fine);
    }

    #[test]
    fn a_shared_stream_moving_on_without_us_is_learnt_and_is_no_gap_later() {
        let w = GapWatch::default();
        // Applied 10; the stream holds 11..=50 of other databases only.
        assert_eq!(w.judge(10, 11, 50, IDLE, 11), Verdict::Covered(50));
        w.learn(50);
        assert_eq!(w.position(10), 50);
        // Those messages age out: not a gap for us.
        assert!(!w.is_gap(10, 51));
        assert_eq!(w.judge(10, 51, 50, IDLE, 51), Verdict::Fine);
        // A message of ours at 60 after others' 51..59 were purged: only a gap past 51.
        assert!(!w.jump_is_gap(10, 60, 51));
        assert!(w.jump_is_gap(10, 60, 55));
    }

    #[test]
    fn undelivered_messages_of_ours_are_never_learnt_as_covered() {
        let w = GapWatch::default();
        let pending = DurableState {
            num_pending: 2,
            num_ack_pending: 0,
        };
        assert_eq!(w.judge(10, 11, 50, pending, 11), Verdict::Fine);
    }

    #[test]
    fn a_jump_is_a_gap_only_when_the_stream_no_longer_reaches_back() {
        let w = GapWatch::default();
        assert!(
            !w.jump_is_gap(10, 11, 40),
            "the next message is never a jump"
        );
        assert!(!w.jump_is_gap(10, 20, 11), "others' messages in between");
        assert!(w.jump_is_gap(10, 20, 15));
    }
}
