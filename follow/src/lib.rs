//! # ha-follow — following an ha replication stream
//!
//! The mechanism every follower of the stream shares: the node's consumer
//! (`node/src/replication/consumer.rs`) and the ha-sync extension (`sync/src/follow.rs`). Each
//! keeps only its own policy — what to do with a change set that will not apply (the node
//! quarantines deterministic failures, ha-sync retries forever) and where its status goes.
//!
//! ## Layout
//! - `pull`     the durable pull consumer: deliver policy, settings, creation with the
//!   insufficient-resources fallback, taking what has already arrived as one batch.
//! - `in_order` received messages held in stream order and released only up to the first part
//!   of a split change set still incomplete; the part timeout.
//! - `backoff`  doubling pauses, for restarts and retries.
//! - `group`    the apply-group transaction on a SQLite connection (one transaction, one
//!   savepoint per change set, stop at the first failure, commit what came before), and the
//!   pruning of transaction identities.
//!
//! Nothing here decides policy or logs a change set's content. The crate is shared across two
//! cargo workspaces (sync/ is its own), so its dependency versions are written out, not inherited.

pub mod backoff;
pub mod group;
pub mod in_order;
pub mod pull;

pub use backoff::Backoff;
pub use in_order::{InOrder, Received};
