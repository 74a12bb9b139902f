//! Owns what a front end holds for one client connection: where that client's reads run (its
//! own thread, as a PostgreSQL backend) and the slot through which its running statement is
//! cancelled (a pg CancelRequest, shutdown).
//! Must not run anything itself: statements still go through `Executor` and `Session`.
//! Invariant: a thread marked with `run_reads_on_this_thread` serves one client only.

pub use crate::db::CancelSlot;

/// Marks the calling thread as one that serves a single client and may block on SQLite (a pg
/// connection's own thread): the reads it starts run right here, saving the two thread
/// hand-offs of the blocking pool per statement.
pub fn run_reads_on_this_thread() {
    crate::db::run_reads_here();
}
