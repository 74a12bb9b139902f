//! Owns NATS as a process and as credentials: the supervised `nats-server` child (the
//! "embedded" server) and its generated configuration, JetStream cluster membership through the
//! system account, and how the node's client authenticates.
//! Must not touch SQLite or the stream's contents: `replication` publishes and consumes.
//! See `server` for the child, `conf` for its file, `generation` for its name, `peers` for
//! scale-down, `client_auth` for the connection's options.

pub mod client_auth;
mod conf;
pub mod generation;
pub mod peers;
pub mod server;
