//! Owns how long a replicated writer waits for more writes before it starts a group.
//! Must not reorder jobs or hold back anything but client batches: a job of any other kind
//! (a replicated apply, a session, a restore) ends the wait at once.
//! Invariant: the wait is bounded by half the previous group's commit (at most `MAX_WAIT`), and
//! there is none unless clients answered by the previous group are expected back. A wait that
//! brings no one back (clients that send one write each, not a loop) makes the next
//! `REST_AFTER_IN_VAIN` groups start without one, so such clients pay for one wait in nine.
//!
//! Why: every write waits for its group's publish. Clients in a closed loop (each sends its next
//! write once answered, as pgbench or a connection pool does) then split into two halves that
//! alternate: while one half's group is published, the other half queues, and the half just
//! answered comes back a moment after the next group started. Each publish serves half the
//! clients. Waiting that moment for the clients just answered lets one publish serve them all
//! (PostgreSQL's `commit_delay`, but only when clients are expected: a lone client never waits).

use std::time::{Duration, Instant};

use tokio::sync::mpsc::Receiver;
use tokio::sync::mpsc::error::TryRecvError;

use super::{Job, MAX_GROUP};

/// The longest the writer waits for the clients it answered.
const MAX_WAIT: Duration = Duration::from_millis(1);
/// How often the queue is looked at while waiting (tokio's timer counts in milliseconds).
const POLL: Duration = Duration::from_micros(20);
/// Groups that start without waiting after a wait in which no job came.
const REST_AFTER_IN_VAIN: u8 = 8;

/// What the writer expects after a group: how many jobs, and for how long to wait for them.
#[derive(Debug, Default)]
pub(super) struct Gather {
    expect: usize,
    wait: Duration,
    /// Groups left that start without waiting (after a wait in vain).
    rest: u8,
}

impl Gather {
    /// After a group that answered `answered` client batches in `took`, with `queued` jobs
    /// already waiting: those clients are expected back beside the queued ones.
    pub(super) fn answered(&mut self, answered: usize, queued: usize, took: Duration) {
        self.expect = (queued + answered).min(MAX_GROUP);
        self.wait = (took / 2).min(MAX_WAIT);
    }

    /// Nothing is expected (a standalone node, or the last group answered no client).
    pub(super) fn reset(&mut self) {
        self.expect = 0;
    }

    /// Adds to `group` the jobs that arrive while it is short of what is expected, until the
    /// wait is over or a job that is not a client batch arrives.
    pub(super) fn fill(&mut self, rx: &mut Receiver<Job>, group: &mut Vec<Job>) {
        if group.len() >= self.expect || !group.iter().all(is_batch) {
            return;
        }
        if self.rest > 0 {
            self.rest -= 1;
            return;
        }
        let (deadline, had) = (Instant::now() + self.wait, group.len());
        while group.len() < self.expect {
            match rx.try_recv() {
                Ok(job) => {
                    let batch = is_batch(&job);
                    group.push(job);
                    if !batch {
                        return;
                    }
                }
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => {
                    if Instant::now() >= deadline {
                        if group.len() == had {
                            self.rest = REST_AFTER_IN_VAIN;
                        }
                        return;
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
    }
}

/// Whether `job` is a client's batch (what a group commits and answers).
pub(super) fn is_batch(job: &Job) -> bool {
    matches!(job, Job::Batch { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_client_is_not_waited_for_and_the_wait_is_bounded() {
        let mut g = Gather::default();
        g.answered(1, 0, Duration::from_millis(4));
        assert_eq!(g.expect, 1);
        assert_eq!(g.wait, MAX_WAIT);
        g.answered(4, 4, Duration::from_micros(600));
        assert_eq!(g.expect, 8);
        assert_eq!(g.wait, Duration::from_micros(300));
        g.answered(MAX_GROUP, MAX_GROUP, Duration::ZERO);
        assert_eq!(g.expect, MAX_GROUP);
        g.reset();
        assert_eq!(g.expect, 0);
    }

    #[test]
    fn a_wait_in_vain_lets_the_next_groups_start_without_one() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(8);
        let mut g = Gather::default();
        g.answered(2, 0, Duration::from_micros(100));
        let mut group = Vec::new();
        g.fill(&mut rx, &mut group);
        assert!(group.is_empty());
        assert_eq!(g.rest, REST_AFTER_IN_VAIN);
        for left in (0..REST_AFTER_IN_VAIN).rev() {
            g.answered(2, 0, Duration::from_micros(100));
            g.fill(&mut rx, &mut group);
            assert_eq!(g.rest, left);
        }
        // Rested: the next group waits again, and one that brings a job back keeps waiting on.
        let (reply, _r) = tokio::sync::oneshot::channel();
        tx.try_send(Job::Batch {
            stmts: std::sync::Arc::new(Vec::new()),
            limits: Default::default(),
            reply,
        })
        .unwrap();
        g.fill(&mut rx, &mut group);
        assert_eq!(group.len(), 1);
        assert_eq!(g.rest, 0);
    }

    #[test]
    fn the_wait_ends_when_the_queue_closes_or_a_job_of_another_kind_arrives() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let mut g = Gather::default();
        g.answered(3, 0, Duration::from_secs(10));
        // Another kind of job: no waiting for the rest.
        let (reply, _r) = tokio::sync::oneshot::channel();
        tx.try_send(Job::SetMeta {
            key: "k".into(),
            value: None,
            reply,
        })
        .unwrap();
        let mut group = Vec::new();
        g.fill(&mut rx, &mut group);
        assert_eq!(group.len(), 1);
        // Closed: the writer is stopping.
        drop(tx);
        let mut group = Vec::new();
        g.fill(&mut rx, &mut group);
        assert!(group.is_empty());
    }
}
