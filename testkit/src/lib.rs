//! Test support that every crate's tests share, kept in one place so that a fix reaches all of
//! them: waiting for a condition with a deadline (`poll`) and picking a free port (`free_port`).
//! It depends on nothing of ha, so the node's own tests, the cross-process tests (`ha-tests`) and
//! the pod simulation (`ha-e2e`) can all use it.

pub mod poll;

pub use poll::{eventually, eventually_blocking, eventually_every, until};

/// A TCP port free on 127.0.0.1 right now (for servers that cannot be told to pick one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_free_port_can_be_bound() {
        let p = super::free_port();
        assert_ne!(p, 0);
        std::net::TcpListener::bind(("127.0.0.1", p)).expect("the port is free");
    }
}
