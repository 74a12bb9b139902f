//! Owns everything NATS: identifier and subject names, consumer deliver policies, and the
//! supervised `nats-server` child (the "embedded" server).
//! Must not touch SQLite; the writer reaches JetStream only through the sink it declares.
//! Invariant: names and policies are exactly the original's (reference §2.1, §2.5), so Go nodes
//! and ha nodes can share one stream.
//! See `names` for naming, `nats_server` for the child process.

pub mod names;
mod nats_conf;
pub mod nats_server;
