//! Owns splitting a change set that is larger than the NATS max payload into parts, and putting
//! the parts back together on the receiving side.
//! Must not apply anything or decide acks: it only says when a transaction is whole.
//! Invariant: a transaction is handed on only with all its parts, in part order, each part once;
//! `oldest_pending_seq` is where a restarted consumer must resume so no part is lost.
//! See `codec` for the `txid`/`part`/`parts` fields.
//!
//! Every part is a complete, valid message on its own (a Go reader applies each part as a
//! separate transaction: compatible, but not atomic). Parts of one transaction are usually
//! consecutive in the stream, but other nodes' messages may fall between them; the reassembler
//! keys partial transactions by `txid` and so tolerates that.

use std::collections::HashMap;

use super::codec::{self, CodecError};
use super::{ChangeSet, Part, Seq};

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(
        "change {index} of the transaction ({table}) is {size} bytes, larger than the NATS max payload of {max} bytes on its own"
    )]
    ChangeTooLarge {
        index: usize,
        table: String,
        size: usize,
        max: usize,
    },
    #[error("transaction {txid}: part {got} of {count} arrived, expected part {expected}")]
    OutOfOrder {
        txid: String,
        got: u32,
        expected: u32,
        count: u32,
    },
    #[error("transaction {txid}: part {got} arrived but parts 1..{got} were never seen")]
    MissingStart { txid: String, got: u32 },
    #[error("transaction {txid}: parts disagree ({reason})")]
    Inconsistent { txid: String, reason: String },
    #[error("too many unfinished split transactions ({0}); the oldest was dropped")]
    TooManyPending(usize),
}

/// Encodes `cs` into messages of at most `max_bytes` each. A change set that fits is one message
/// without part fields, byte-identical to `codec::encode`. Otherwise each message carries
/// `txid` (`ChangeSet::txid`), `part` (1-based) and `parts`.
pub fn split(cs: &ChangeSet, max_bytes: usize) -> Result<Vec<Vec<u8>>, SplitError> {
    let encoded: Vec<Vec<u8>> = cs
        .changes
        .iter()
        .map(codec::encode_change)
        .collect::<Result<_, _>>()?;
    let whole = codec::assemble(cs, None, &encoded);
    if whole.len() <= max_bytes {
        return Ok(vec![whole]);
    }
    // Size of the envelope with the widest part numbers the split can produce.
    let txid = cs.txid();
    let widest = Part {
        txid: txid.clone(),
        index: u32::MAX,
        count: u32::MAX,
    };
    let overhead = codec::envelope_len(cs, Some(&widest));
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    let mut size = overhead;
    for (i, c) in encoded.iter().enumerate() {
        let needed = c.len() + usize::from(i > start);
        if overhead + c.len() > max_bytes {
            return Err(SplitError::ChangeTooLarge {
                index: i,
                table: cs.changes[i].table.clone(),
                size: c.len(),
                max: max_bytes,
            });
        }
        if size + needed > max_bytes {
            groups.push(start..i);
            start = i;
            size = overhead + c.len();
        } else {
            size += needed;
        }
    }
    groups.push(start..encoded.len());
    let count = u32::try_from(groups.len()).map_err(|_| SplitError::ChangeTooLarge {
        index: 0,
        table: String::new(),
        size: whole.len(),
        max: max_bytes,
    })?;
    Ok(groups
        .into_iter()
        .zip(1..)
        .map(|(range, index)| {
            let part = Part {
                txid: txid.clone(),
                index,
                count,
            };
            codec::assemble(cs, Some(&part), &encoded[range])
        })
        .collect())
}

/// A whole transaction, and the stream sequences of its first and last message.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    pub changeset: ChangeSet,
    pub first_seq: Seq,
    pub last_seq: Seq,
}

struct Partial {
    first_seq: Seq,
    received: u32,
    set: ChangeSet,
}

/// Collects the parts of split transactions until each is whole.
pub struct Reassembler {
    pending: HashMap<String, Partial>,
    max_pending: usize,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(64)
    }
}

impl Reassembler {
    /// `max_pending` bounds how many split transactions may be unfinished at once.
    pub fn new(max_pending: usize) -> Reassembler {
        Reassembler {
            pending: HashMap::new(),
            max_pending: max_pending.max(1),
        }
    }

    /// Feeds the message at stream sequence `seq`. Returns the whole transaction when `cs` is
    /// unsplit or its last missing part; `None` while parts are missing or for a duplicate part.
    /// An error drops that transaction's partial state (the caller reports/quarantines it).
    /// The caller filters out sequences it has already applied before calling this: a part of a
    /// transaction that is already whole would otherwise look like one without its beginning.
    pub fn push(&mut self, seq: Seq, cs: ChangeSet) -> Result<Option<Assembled>, SplitError> {
        let Some(part) = cs.part.clone() else {
            return Ok(Some(Assembled {
                changeset: cs,
                first_seq: seq,
                last_seq: seq,
            }));
        };
        let txid = part.txid.clone();
        if let Some(p) = self.pending.get_mut(&txid) {
            if part.index <= p.received {
                return Ok(None); // redelivered part
            }
            let expected = p.received + 1;
            let count = p.set.part.as_ref().map_or(0, |x| x.count);
            let same_origin = p.set.node == cs.node
                && p.set.process_id == cs.process_id
                && p.set.filename == cs.filename;
            if part.count != count || !same_origin {
                self.pending.remove(&txid);
                return Err(SplitError::Inconsistent {
                    txid,
                    reason: "part count or origin changed".into(),
                });
            }
            if part.index != expected {
                self.pending.remove(&txid);
                return Err(SplitError::OutOfOrder {
                    txid,
                    got: part.index,
                    expected,
                    count,
                });
            }
            p.received = part.index;
            p.set.changes.extend(cs.changes);
            if p.received < count {
                return Ok(None);
            }
            let Some(mut done) = self.pending.remove(&txid) else {
                return Ok(None);
            };
            done.set.part = None;
            done.set.timestamp_ns = cs.timestamp_ns;
            return Ok(Some(Assembled {
                changeset: done.set,
                first_seq: done.first_seq,
                last_seq: seq,
            }));
        }
        if part.index != 1 {
            return Err(SplitError::MissingStart {
                txid,
                got: part.index,
            });
        }
        if part.count == 1 {
            let mut whole = cs;
            whole.part = None;
            return Ok(Some(Assembled {
                changeset: whole,
                first_seq: seq,
                last_seq: seq,
            }));
        }
        let mut evicted = None;
        if self.pending.len() >= self.max_pending
            && let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.first_seq)
                .map(|(k, _)| k.clone())
        {
            self.pending.remove(&oldest);
            evicted = Some(SplitError::TooManyPending(self.max_pending));
        }
        self.pending.insert(
            txid,
            Partial {
                first_seq: seq,
                received: 1,
                set: cs,
            },
        );
        match evicted {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// The first stream sequence of the oldest unfinished transaction: a consumer that restarts
    /// must resume here (not after its last applied sequence) to see those parts again.
    pub fn oldest_pending_seq(&self) -> Option<Seq> {
        self.pending.values().map(|p| p.first_seq).min()
    }

    /// How many split transactions are waiting for parts.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Forgets every partial transaction (after a resync).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Change, Operation, Value, decode, encode};

    fn big(node: &str, rows: usize, ts: i64) -> ChangeSet {
        let mut cs = ChangeSet::new(node, 42, "ha.db");
        cs.timestamp_ns = ts;
        cs.changes.push(Change::sql(
            "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)",
        ));
        for i in 0..rows {
            let mut c = Change::new(Operation::Insert, "t");
            c.columns = vec!["id".into(), "v".into()];
            c.new_rowid = i as i64 + 1;
            c.old_rowid = c.new_rowid;
            c.new_values = vec![Value::Integer(i as i64 + 1), Value::Text("x".repeat(80))];
            cs.changes.push(c);
        }
        cs
    }

    fn reassemble(parts: &[Vec<u8>]) -> ChangeSet {
        let mut r = Reassembler::default();
        let mut out = None;
        for (i, p) in parts.iter().enumerate() {
            let got = r.push(Seq(i as u64 + 1), decode(p).unwrap()).unwrap();
            if i + 1 < parts.len() {
                assert!(got.is_none(), "whole before the last part");
                assert_eq!(r.oldest_pending_seq(), Some(Seq(1)));
            } else {
                let a = got.expect("whole after the last part");
                assert_eq!((a.first_seq, a.last_seq), (Seq(1), Seq(parts.len() as u64)));
                out = Some(a.changeset);
            }
        }
        assert_eq!(r.pending(), 0);
        out.unwrap()
    }

    #[test]
    fn a_change_set_that_fits_is_one_plain_message() {
        let cs = big("a", 3, 1);
        let parts = split(&cs, 1 << 20).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0], encode(&cs).unwrap());
        assert!(decode(&parts[0]).unwrap().part.is_none());
    }

    #[test]
    fn a_large_change_set_splits_within_the_limit_and_reassembles_exactly() {
        let cs = big("a", 2_000, 7);
        let max = 16 * 1024;
        let parts = split(&cs, max).unwrap();
        assert!(parts.len() > 10, "{} parts", parts.len());
        for p in &parts {
            assert!(p.len() <= max, "part of {} bytes", p.len());
            let d = decode(p).unwrap();
            let part = d.part.unwrap();
            assert_eq!(part.count as usize, parts.len());
            assert_eq!(part.txid, "a/42/7");
        }
        let mut back = reassemble(&parts);
        back.format = None;
        assert_eq!(back, cs);
    }

    #[test]
    fn a_50k_row_transaction_splits_under_1_mib_and_comes_back_whole() {
        let cs = big("a", 50_000, 9);
        let max = 1 << 20;
        let parts = split(&cs, max).unwrap();
        assert!(parts.len() >= 5, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.len() <= max));
        let mut back = reassemble(&parts);
        back.format = None;
        assert_eq!(back.changes.len(), 50_001);
        assert_eq!(back, cs);
    }

    #[test]
    fn a_limit_just_above_one_change_gives_one_change_per_part() {
        let cs = big("a", 5, 7);
        let widest = Part {
            txid: cs.txid(),
            index: u32::MAX,
            count: u32::MAX,
        };
        let one = codec::encode_change(&cs.changes[1]).unwrap().len();
        let max = codec::envelope_len(&cs, Some(&widest)) + one;
        let parts = split(&cs, max).unwrap();
        assert_eq!(parts.len(), 6);
        assert!(parts.iter().all(|p| p.len() <= max));
    }

    #[test]
    fn a_single_change_over_the_limit_is_a_clear_error() {
        let cs = big("a", 3, 7);
        let err = split(&cs, 300).unwrap_err();
        assert!(matches!(err, SplitError::ChangeTooLarge { .. }), "{err}");
    }

    #[test]
    fn interleaved_messages_and_duplicate_parts_are_handled() {
        let a = split(&big("a", 300, 1), 8 * 1024).unwrap();
        let b = split(&big("b", 300, 2), 8 * 1024).unwrap();
        assert!(a.len() >= 3 && b.len() >= 3);
        let mut r = Reassembler::default();
        let mut seq = 0;
        let mut next = || {
            seq += 1;
            Seq(seq)
        };
        let mut whole = Vec::new();
        for i in 0..a.len().max(b.len()) {
            for msgs in [&a, &b] {
                if let Some(m) = msgs.get(i) {
                    let s = next();
                    if let Some(done) = r.push(s, decode(m).unwrap()).unwrap() {
                        whole.push(done);
                    }
                    // A redelivered part (not the last: the caller filters sequences it has
                    // already applied) changes nothing.
                    if i + 1 < msgs.len() {
                        assert!(r.push(s, decode(m).unwrap()).unwrap().is_none());
                    }
                }
            }
            let plain = encode(&big("c", 1, 3)).unwrap();
            let done = r.push(next(), decode(&plain).unwrap()).unwrap().unwrap();
            assert_eq!(done.changeset.node, "c");
        }
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].changeset.changes.len(), 301);
        assert_eq!(whole[1].changeset.changes.len(), 301);
        assert_eq!(r.pending(), 0);
        assert_eq!(r.oldest_pending_seq(), None);
    }

    #[test]
    fn a_part_without_its_beginning_or_out_of_order_is_an_error() {
        let parts = split(&big("a", 300, 1), 8 * 1024).unwrap();
        let mut r = Reassembler::default();
        assert!(matches!(
            r.push(Seq(1), decode(&parts[1]).unwrap()),
            Err(SplitError::MissingStart { got: 2, .. })
        ));
        assert!(
            r.push(Seq(2), decode(&parts[0]).unwrap())
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            r.push(Seq(3), decode(&parts[2]).unwrap()),
            Err(SplitError::OutOfOrder {
                got: 3,
                expected: 2,
                ..
            })
        ));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn too_many_unfinished_transactions_evicts_the_oldest() {
        let mut r = Reassembler::new(2);
        for (i, node) in ["a", "b", "c"].iter().enumerate() {
            let parts = split(&big(node, 300, i as i64), 8 * 1024).unwrap();
            let res = r.push(Seq(i as u64 + 10), decode(&parts[0]).unwrap());
            assert_eq!(res.is_err(), i == 2);
        }
        assert_eq!(r.pending(), 2);
        assert_eq!(r.oldest_pending_seq(), Some(Seq(11)));
    }
}
