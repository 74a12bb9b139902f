//! Test support that every crate's tests share, kept in one place so that a fix reaches all of
//! them: waiting for a condition with a deadline (`poll`), picking a free port (`free_port`) and
//! finding the pinned nats-server (`nats_server_bin`).
//! It depends on nothing of ha, so the node's own tests, the cross-process tests (`ha-tests`) and
//! the pod simulation (`ha-e2e`) can all use it.

pub mod poll;

pub use poll::{eventually, eventually_blocking, eventually_every, until};

/// A TCP port free on 127.0.0.1 right now (for servers that cannot be told to pick one), and
/// never one this process was given before: the OS may hand a port it just released out again,
/// and two servers of one test (or two tests of one binary) told the same port collide.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    // Held while picking: a released port is not handed out again before it is recorded.
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The pinned nats-server: `$HA_NATS_SERVER_BIN`, else `.tools/bin/nats-server` of this
/// repository (installed by scripts/install-deps.sh).
pub fn nats_server_bin() -> std::path::PathBuf {
    std::env::var_os("HA_NATS_SERVER_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/nats-server")
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_free_port_can_be_bound() {
        let p = super::free_port();
        assert_ne!(p, 0);
        std::net::TcpListener::bind(("127.0.0.1", p)).expect("the port is free");
    }

    #[test]
    fn a_port_is_given_once() {
        // 1,000 draws from the ~28,000 ephemeral ports: without the record, a repeat is near certain.
        let ports: Vec<u16> = (0..1000).map(|_| super::free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len());
    }
}
