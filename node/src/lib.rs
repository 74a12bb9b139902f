//! # ha — one node of a highly available, leaderless SQLite cluster
//!
//! ## Layout
//! - `config`   flags > `HA_*` environment > config file, validated into one `Config`.
//! - `node`     start order and reverse shutdown order of one node.
//! - `http`     the HTTP JSON API (axum); translates requests into executor calls.
//! - `pgwire`   the PostgreSQL wire front end (pgwire crate): auth, TLS, sessions, types.
//! - `exec`     THE executor: the only API front ends call (`Executor::execute`), and
//!   `ExecError`, the only error they see.
//! - `db`       SQLite only: DSN reading, connections, read pool, the single writer thread,
//!   statements, backups.
//! - `changeset` the replication message (model, JSON codec, splitting, DDL text rules) and
//!   applying it: the `ha-changeset` crate, re-exported here (shared with the `ha-sync` extension).
//! - `interceptor` the user's Rhai script (`--interceptor`): hooks around applying and publishing
//!   change sets, sandboxed; the writer calls it.
//! - `replication` the log: connecting to NATS, publishing, consuming (through `ha-follow`, shared
//!   with ha-sync), gaps, the stream's identity, status.
//! - `snapshot` the object-store bucket: taking, sweeping, restoring at start, the interval.
//! - `nats`     the supervised `nats-server` child, its generated config, JetStream peers, and how
//!   the node's client authenticates.
//! - `metrics`, `telemetry`: Prometheus registry and logging.
//! - `backup`   off-cluster backups to S3: snapshots, change-log archive, point-in-time restore.
//! - `check`    `ha check --nodes …`: compares the nodes' `/checksum` (a client, not the node).
//!
//! Dependencies point down only: `http`, `pgwire` → `exec` → `db` → `interceptor` → `changeset`;
//! `replication` → `snapshot`, `nats`; and everything reads `config`, which reads only the DSN
//! grammar (`db::dsn`) and `ha-changeset`'s names (`scripts/structure.py` checks for circles). Front ends never import rusqlite.
//!
//! ## Errors
//! Library code returns `thiserror` enums per boundary (`ConfigError`, `DbError`, `ExecError`,
//! `NodeError`); `anyhow` appears only in `main.rs` and tests.

pub use ha_changeset as changeset;
pub mod backup;
pub mod check;
pub mod config;
pub mod db;
pub mod exec;
pub mod http;
pub mod interceptor;
pub mod metrics;
pub mod nats;
pub mod node;
pub mod pgwire;
pub mod probe;
pub mod replication;
pub mod snapshot;
pub mod telemetry;

/// `ha --version` output: version, commit and build date.
pub fn version_text() -> String {
    format!(
        "ha\nVersion: {}\nCommit: {}\nDate: {}\n",
        env!("CARGO_PKG_VERSION"),
        env!("HA_COMMIT"),
        env!("HA_BUILD_DATE")
    )
}
