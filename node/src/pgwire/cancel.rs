//! Owns query cancellation (a CancelRequest sent on a new connection, as psql does on Ctrl-C):
//! the registry from each session's (pid, secret key) to the slot through which its running read
//! can be interrupted.
//! Must not guess: an unknown key or a wrong secret cancels nothing, and says nothing.
//! Invariant: a session is in the registry from the end of its authentication to its end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;

use crate::exec::CancelSlot;

type Key = (i32, Bytes);

/// Sessions that can be cancelled, by backend key.
#[derive(Default)]
pub struct Registry(Mutex<HashMap<Key, Arc<CancelSlot>>>);

impl Registry {
    /// Adds a session; it leaves the registry when the returned guard drops.
    pub fn register(
        self: &Arc<Self>,
        pid: i32,
        secret: &SecretKey,
        slot: Arc<CancelSlot>,
    ) -> Registered {
        let key = (pid, secret.to_bytes());
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.clone(), slot);
        }
        Registered {
            registry: self.clone(),
            key,
        }
    }

    /// Interrupts every session's running read (on shutdown).
    pub fn interrupt_all(&self) {
        if let Ok(m) = self.0.lock() {
            for slot in m.values() {
                slot.interrupt();
            }
        }
    }

    fn find(&self, pid: i32, secret: &SecretKey) -> Option<Arc<CancelSlot>> {
        let m = self.0.lock().ok()?;
        m.get(&(pid, secret.to_bytes())).cloned()
    }
}

/// A session's place in the registry.
pub struct Registered {
    registry: Arc<Registry>,
    key: Key,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut m) = self.registry.0.lock() {
            m.remove(&self.key);
        }
    }
}

/// pgwire's hook for CancelRequest messages.
pub struct Canceller(pub Arc<Registry>);

#[async_trait]
impl CancelHandler for Canceller {
    async fn on_cancel_request(&self, request: CancelRequest) {
        match self.0.find(request.pid, &request.secret_key) {
            Some(slot) => {
                let running = slot.interrupt();
                tracing::info!(pid = request.pid, running, "pg cancel request");
            }
            None => tracing::debug!(pid = request.pid, "pg cancel request for no session"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_key_finds_a_session_and_only_while_it_lives() {
        let r = Arc::new(Registry::default());
        let slot = Arc::new(CancelSlot::default());
        let guard = r.register(7, &SecretKey::I32(1234), slot);
        assert!(r.find(7, &SecretKey::I32(1234)).is_some());
        // The same 4 bytes, as a protocol 3.2 client sends them.
        assert!(
            r.find(7, &SecretKey::Bytes(Bytes::from_static(&[0, 0, 4, 210])))
                .is_some()
        );
        assert!(r.find(7, &SecretKey::I32(1235)).is_none());
        assert!(r.find(8, &SecretKey::I32(1234)).is_none());
        drop(guard);
        assert!(r.find(7, &SecretKey::I32(1234)).is_none());
    }
}
