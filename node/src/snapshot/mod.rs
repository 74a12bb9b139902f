//! Owns snapshots: consistent copies of the database in the JetStream Object Store, taken on
//! demand (`POST /snapshot`), on `--snapshot-interval`, and restored at start
//! (`--from-latest-snapshot`) or automatically when the stream no longer holds what a node needs.
//! Must not open SQLite itself: the content comes from `Executor::read_image` (a file database
//! in WAL mode, read in place) or `Executor::backup_to` (a copy), file checks from
//! `exec::file_check`, and a live restore goes through `Executor::restore_from` (the writer).
//! Invariant: a snapshot's sequence is read *from the content itself* (`_ha_meta.applied_seq`,
//! in the read transaction of the image or from the copy), so
//! the header and the content always agree; and a restore never moves a database backwards.
//!
//! Layout (bucket `<stream>_SNAPSHOTS`, file storage, compressed, `--replicas` replicas):
//! every snapshot is its own object `<db file name>.<seq>` (e.g. `t.db.42`) with headers `seq`
//! (decimal) and `sha256` (hex of the content). There is no pointer to update: the latest is the
//! complete object with the highest `seq`. The object store publishes an object's metadata only
//! after all its chunks are stored, so a `kill -9` during an upload leaves no visible object
//! (at most orphaned chunks) and the previous snapshots stay the latest — there is always a
//! usable one once one was taken. After a new one is stored and its metadata read back, all
//! but the newest `--snapshot-retain` are deleted, and `sweep` removes the chunks of
//! uploads that never completed (also once at start). An object named exactly `<db file name>`
//! (the Go original's key, header `seq` only) is read as a candidate too but never written.
//!
//! Upload (`upload`): ha writes the object itself in the object store's layout — chunks, then
//! the metadata — as the client's `put` does, but with several chunks awaiting their ack at
//! once, and with the content's SHA-256 computed while the chunks are read: `put` waits for
//! each chunk's ack, and takes the headers before the data, which cost a hashing pass first.
//! The one digest becomes both our `sha256` header (hex) and the object store's `digest`.
//!
//! Restore tries candidates from the newest: download to a temporary file (`download`: an
//! ordered consumer on the object's chunks; a blocking thread hashes and writes each chunk
//! while the task receives the next), compare the size, the `sha256` header and the object
//! store's `digest` with what was written, open it read-only and run `PRAGMA integrity_check`;
//! the first that passes every check and is newer than the local database wins. A refused one
//! is logged with the check that failed and the next older one is tried.
//!
//! Automatic recovery (a gap: the stream's first sequence is past `applied_seq + 1`): the
//! consumer, before it creates its durable, asks `recover` for a snapshot whose `seq` is at
//! least `first - 1`; it is written *into the live database* by the writer with the online
//! backup API (one job, so readers see the old or the new content, never a mix), and the
//! consumer then starts at the restored `applied_seq + 1`. There are no local writes that the
//! stream lacks (every commit is published before it commits), so nothing local is lost.
//! See docs/operations.md.
//!
//! Files: `store` (the bucket: take, list, fetch, recover), `image` (the live database read in
//! place as upload chunks), `upload` (writing one object), `download` (one object's chunks as a stream, which
//! `GET /snapshot` serves, and reading them into a file),
//! `sweep` (unfinished uploads and deletes), `restore` (`--from-latest-snapshot`, before the database opens; it keeps trying
//! for up to 2 minutes while JetStream does not answer), `interval`
//! (`--snapshot-interval`).

mod download;
mod image;
mod interval;
mod restore;
mod store;
pub mod sweep;
mod upload;

pub use interval::take_every;
pub use restore::{StartRestore, restore_at_start};
pub use store::{Candidate, Fetched, Snapshots, Taken, hex};

use crate::exec::{ExecError, file_check};

#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    #[error("object store {what}: {reason}")]
    Nats { what: &'static str, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] ExecError),
    #[error("snapshot {name}: sha256 check failed: header says {expected}, content is {actual}")]
    Checksum {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("snapshot {name}: size check failed: expected {expected} bytes, got {actual}")]
    Size {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("snapshot {name}: {source}")]
    File {
        name: String,
        #[source]
        source: file_check::FileCheckError,
    },
    #[error("no snapshot")]
    NotFound,
}

pub(crate) fn nats<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> SnapError {
    move |e| SnapError::Nats {
        what,
        reason: e.to_string(),
    }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SnapError {
    let what = what.into();
    move |source| SnapError::Io { what, source }
}
