//! Owns who may hold a connection place before authenticating: at most `max_connections -
//! reserved_connections` clients at once; a newcomer past that closes the one that has been
//! waiting longest, and so does a newcomer that finds every place taken while some are held by
//! clients still authenticating. Silent sockets cannot lock real clients out: they only ever
//! hold the oldest places and lose them first, and `reserved_connections` places stay free for
//! clients that do authenticate.
//! Must not count authenticated connections: the connection limit (`--pg-max-connections`)
//! does that.
//! Invariant: a connection is in the queue from its accept until it authenticates or ends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The unauthenticated connections, oldest first.
pub(crate) struct PreAuth {
    cap: usize,
    queue: Mutex<VecDeque<(u64, CancellationToken)>>,
    next: std::sync::atomic::AtomicU64,
}

/// A connection's place in the queue; dropping it (authenticated or gone) frees the place.
pub(crate) struct Waiting {
    owner: Arc<PreAuth>,
    id: u64,
    /// Cancelled when a newcomer needs the place.
    pub(crate) evicted: CancellationToken,
}

impl PreAuth {
    pub(crate) fn new(cap: usize) -> Arc<PreAuth> {
        Arc::new(PreAuth {
            cap: cap.max(1),
            queue: Mutex::new(VecDeque::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Closes the connection that has waited longest to authenticate, if any.
    pub(crate) fn evict_oldest(&self) -> bool {
        let oldest = self.queue.lock().ok().and_then(|mut q| q.pop_front());
        match oldest {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Queues a new connection (one that holds a place), closing the oldest waiting one if the
    /// queue is full.
    pub(crate) fn admit(self: &Arc<Self>) -> Waiting {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evicted = CancellationToken::new();
        if let Ok(mut q) = self.queue.lock() {
            while q.len() >= self.cap {
                if let Some((_, oldest)) = q.pop_front() {
                    oldest.cancel();
                }
            }
            q.push_back((id, evicted.clone()));
        }
        Waiting {
            owner: self.clone(),
            id,
            evicted,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Ok(mut q) = self.owner.queue.lock() {
            q.retain(|(id, _)| *id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_closes_the_longest_waiting_and_authenticated_ones_leave() {
        let q = PreAuth::new(5);
        let x = q.admit();
        assert!(q.evict_oldest() && x.evicted.is_cancelled());
        assert!(!q.evict_oldest());
        let q = PreAuth::new(2);
        let a = q.admit();
        let b = q.admit();
        let c = q.admit();
        assert!(a.evicted.is_cancelled());
        assert!(!b.evicted.is_cancelled() && !c.evicted.is_cancelled());
        drop(b);
        assert_eq!(q.len(), 1);
        let d = q.admit();
        assert!(!c.evicted.is_cancelled() && !d.evicted.is_cancelled());
    }
}
