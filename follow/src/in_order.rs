//! Owns putting received messages in the order they may be applied: each is decoded, parts of a
//! split change set are reassembled (the whole set takes the place of its last part), and
//! everything is held by stream sequence until no incomplete split set comes before it.
//! Invariant: nothing at or after the first part of a split change set still incomplete is
//! released, or the follower's position would move past that part and a restart would never see
//! it again — until the part timeout says its origin gave up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ha_changeset::{ChangeSet, Reassembler, Seq};

/// A received message, ready for its turn.
#[derive(Debug)]
pub enum Received {
    /// A whole change set and the payload it came in (empty when assembled from parts).
    Change(Box<ChangeSet>, Vec<u8>),
    /// A message that is not a change set: why, and its payload.
    Undecodable(String, Vec<u8>),
}

/// Received messages in stream order, with the split change sets still being put together.
pub struct InOrder {
    parts: Reassembler,
    held: BTreeMap<Seq, Received>,
    /// Since when an incomplete split set has waited without progress.
    pending_since: Option<Instant>,
    /// Whether a split set became whole since the last `ready`.
    completed: bool,
    part_timeout: Duration,
}

impl InOrder {
    /// `part_timeout`: how long the parts of a split change set may wait for the rest.
    pub fn new(part_timeout: Duration) -> InOrder {
        InOrder {
            parts: Reassembler::default(),
            held: BTreeMap::new(),
            pending_since: None,
            completed: false,
            part_timeout,
        }
    }

    /// Takes the message at `seq`.
    pub fn receive(&mut self, seq: Seq, payload: &[u8]) {
        match ha_changeset::decode(payload) {
            // Not a change set at all: nothing to retry; its follower decides what it costs.
            Err(e) => {
                self.held
                    .insert(seq, Received::Undecodable(e.to_string(), payload.to_vec()));
            }
            Ok(cs) if cs.part.is_some() => match self.parts.push(seq, cs) {
                Ok(Some(done)) => {
                    self.completed = true;
                    self.held.insert(
                        done.last_seq,
                        Received::Change(Box::new(done.changeset), Vec::new()),
                    );
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(%seq, error = %e, "ignoring a change-set part"),
            },
            Ok(cs) => {
                self.held
                    .insert(seq, Received::Change(Box::new(cs), payload.to_vec()));
            }
        }
    }

    /// Whether `seq` is held already (received again before it was applied).
    pub fn holds(&self, seq: Seq) -> bool {
        self.held.contains_key(&seq)
    }

    /// Messages held, not released yet.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes, in order, everything that may be applied now. The part timeout counts from the
    /// oldest wait without progress: a completed set restarts it for those still incomplete.
    pub fn ready(&mut self) -> Vec<(Seq, Received)> {
        if self.parts.pending() == 0 {
            self.pending_since = None;
        } else if std::mem::take(&mut self.completed) {
            self.pending_since = Some(Instant::now());
        } else {
            self.pending_since.get_or_insert_with(Instant::now);
        }
        self.take_before(self.parts.oldest_pending_seq())
    }

    /// What came before the first incomplete split set, without touching the part clock (a
    /// follower that stops on a hole keeps what is whole).
    pub fn whole(&mut self) -> Vec<(Seq, Received)> {
        self.take_before(self.parts.oldest_pending_seq())
    }

    /// Time the follower spent applying does not count against the parts still waiting (they
    /// keep coming while the database is busy: that is not their origin giving up).
    pub fn not_counting(&mut self, busy: Duration) {
        if let Some(t) = &mut self.pending_since {
            *t += busy;
        }
    }

    /// When the parts of an incomplete split set have waited longer than the part timeout:
    /// drops them and releases everything held. `None` while there is no such wait.
    pub fn expired(&mut self) -> Option<Vec<(Seq, Received)>> {
        let waited_too_long = self
            .pending_since
            .is_some_and(|t| t.elapsed() > self.part_timeout);
        if !waited_too_long {
            return None;
        }
        tracing::warn!(
            parts = self.parts.pending(),
            "dropping the parts of a change set that never completed (its origin gave up)"
        );
        self.parts.clear();
        self.pending_since = None;
        Some(self.take_before(None))
    }

    fn take_before(&mut self, limit: Option<Seq>) -> Vec<(Seq, Received)> {
        let later = match limit {
            Some(limit) => self.held.split_off(&limit),
            None => BTreeMap::new(),
        };
        std::mem::replace(&mut self.held, later)
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_changeset::{Change, Operation, Value, encode, split};

    fn set(node: &str, rows: usize, ts: i64) -> ChangeSet {
        let mut cs = ChangeSet::new(node, 1, "t.db");
        cs.timestamp_ns = ts;
        for i in 0..rows {
            let mut c = Change::new(Operation::Insert, "t");
            c.columns = vec!["id".into(), "v".into()];
            c.new_rowid = i as i64 + 1;
            c.old_rowid = c.new_rowid;
            c.new_values = vec![Value::Integer(i as i64 + 1), Value::Text("x".repeat(60))];
            cs.changes.push(c);
        }
        cs
    }

    fn seqs(items: &[(Seq, Received)]) -> Vec<u64> {
        items.iter().map(|(s, _)| s.0).collect()
    }

    #[test]
    fn nothing_after_an_incomplete_split_set_is_released_before_it_completes() {
        let a = split(&set("a", 300, 1), 24 * 1024).unwrap();
        let b = split(&set("b", 300, 2), 24 * 1024).unwrap();
        assert_eq!((a.len(), b.len()), (3, 3), "the test wants 3 parts each");
        let plain = encode(&set("c", 1, 3)).unwrap();
        // 1 plain, then A and B interleaved with a plain message between, A completing first.
        let msgs = [
            (1, plain.clone()),
            (2, a[0].clone()),
            (3, b[0].clone()),
            (4, a[1].clone()),
            (5, plain.clone()),
            (6, a[2].clone()),
            (7, b[1].clone()),
            (8, b[2].clone()),
            (9, plain),
        ];
        let mut o = InOrder::new(Duration::from_secs(60));
        let released: Vec<Vec<u64>> = msgs
            .into_iter()
            .map(|(seq, payload)| {
                o.receive(Seq(seq), &payload);
                seqs(&o.ready())
            })
            .collect();
        // A is whole at 6, but B began at 3: releasing A (or 5) then would put the position
        // past B's first part, which a restart would never read again.
        let none: Vec<u64> = Vec::new();
        assert_eq!(
            released,
            [
                vec![1],
                none.clone(),
                none.clone(),
                none.clone(),
                none.clone(),
                none.clone(),
                none,
                vec![5, 6, 8],
                vec![9]
            ]
        );
    }

    #[test]
    fn an_abandoned_split_set_releases_what_waited_behind_it_after_the_timeout() {
        let a = split(&set("a", 300, 1), 24 * 1024).unwrap();
        let mut o = InOrder::new(Duration::from_millis(1));
        o.receive(Seq(1), &a[0]);
        o.receive(Seq(2), b"garbage");
        o.receive(Seq(3), &encode(&set("c", 1, 3)).unwrap());
        assert!(o.ready().is_empty());
        assert!(o.holds(Seq(2)) && o.held() == 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        let released = loop {
            if let Some(r) = o.expired() {
                break r;
            }
            assert!(Instant::now() < deadline, "the parts never expired");
            std::thread::yield_now();
        };
        assert_eq!(seqs(&released), [2, 3]);
        assert!(matches!(released[0].1, Received::Undecodable(..)));
        assert!(o.expired().is_none());
        assert!(o.ready().is_empty());
    }
}
