//! Owns the node's applied position as something a request can wait on: the last stream
//! sequence committed to the database (applied, quarantined or skipped as the node's own), on
//! a `tokio::sync::watch`, so that a read asking for "at least sequence N" (read-your-writes)
//! waits for it without polling.
//! Must not read the database: `Executor` feeds it after each apply, quarantine and restore.
//! Invariant: the value is never ahead of what readers can see (it moves after the commit).

use std::time::Duration;

use tokio::sync::watch;

use super::ExecError;
use crate::changeset::Seq;

pub(super) struct Applied {
    seq: watch::Sender<u64>,
    /// A standalone node has no stream: there is no sequence to wait for.
    replicated: bool,
}

impl Applied {
    pub(super) fn new(replicated: bool) -> Applied {
        Applied {
            seq: watch::Sender::new(0),
            replicated,
        }
    }

    /// The database now holds everything up to `seq`: moves forward only.
    pub(super) fn advance(&self, seq: u64) {
        self.seq.send_if_modified(|now| {
            let moved = seq > *now;
            if moved {
                *now = seq;
            }
            moved
        });
    }

    /// The database was replaced (a restored snapshot or backup): its position is `seq`.
    pub(super) fn reset(&self, seq: u64) {
        self.seq.send_replace(seq);
    }

    pub(super) fn current(&self) -> Seq {
        Seq(*self.seq.borrow())
    }

    /// Requests waiting for a sequence right now (each holds one receiver).
    pub(super) fn waiting(&self) -> usize {
        self.seq.receiver_count()
    }

    /// Returns once the node has applied `min` (at once when it has), or fails after `timeout`
    /// with an error naming the sequence reached.
    pub(super) async fn wait_for(&self, min: Seq, timeout: Duration) -> Result<Seq, ExecError> {
        let now = self.current();
        if now >= min {
            return Ok(now);
        }
        if !self.replicated {
            return Err(ExecError::NotReplicating { wanted: min });
        }
        let mut rx = self.seq.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|s| *s >= min.0)).await {
            Ok(Ok(s)) => Ok(Seq(*s)),
            // The sender lives as long as the executor; it is only gone at the very end.
            Ok(Err(_)) => Err(ExecError::Db(crate::db::DbError::WriterGone)),
            Err(_) => Err(ExecError::SeqNotReached {
                wanted: min,
                reached: self.current(),
                waited: timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_the_sequence_is_applied_and_fails_naming_the_one_reached() {
        let a = std::sync::Arc::new(Applied::new(true));
        a.advance(3);
        assert_eq!(a.wait_for(Seq(2), Duration::ZERO).await.unwrap(), Seq(3));
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.wait_for(Seq(5), Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(a.waiting(), 1);
        a.advance(4);
        a.advance(2); // never backwards
        assert_eq!(a.current(), Seq(4));
        a.advance(5);
        assert_eq!(waiter.await.unwrap().unwrap(), Seq(5));
        assert_eq!(a.waiting(), 0);
        let e = a
            .wait_for(Seq(1005), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("up to sequence 5, not yet 1005"),
            "{e}"
        );
        assert_eq!(e.code().as_str(), "seq_not_reached");
    }

    #[tokio::test]
    async fn a_standalone_node_refuses_to_wait() {
        let a = Applied::new(false);
        assert!(a.wait_for(Seq(0), Duration::ZERO).await.is_ok());
        let e = a
            .wait_for(Seq(1), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("does not replicate"), "{e}");
    }
}
