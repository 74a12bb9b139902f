//! # ha-changeset — the replication message and how a replica applies it
//!
//! Owns the change-set message: the model (`ChangeSet`, `Change`, `Value`), its JSON codec
//! (wire-compatible with the Go original), splitting of oversized change sets, DDL text rules and
//! the NATS names and deliver policies; and applying a change set to a SQLite database with
//! last-writer-wins per row (`apply`, over the bookkeeping tables of `meta` and the table
//! descriptions of `schema`).
//! Must not do I/O beyond the `rusqlite::Connection` it is handed: no NATS, no threads, no hooks.
//! Its rusqlite dependency enables no `bundled` and no hooks, so that both the node (bundled
//! SQLite with the preupdate hook) and the `ha-sync` loadable extension (the host's SQLite) build
//! on this one implementation.
//! Invariant: what `encode` writes, the Go original can read, and `decode(encode(x)) == x`
//! (integers exact, blobs as blobs, reals as reals).
//!
//! ## Layout
//! - pure: `codec` (wire format and its additive fields), `split` (parts), `sql` (THE SQL
//!   reader: tokens, comments, leading keyword, statement splitting), `ddl` (DDL text, read
//!   through `sql`), `names` (subjects, durables, `--replication-policy`);
//! - SQLite: `value` (how `Value` moves in and out of rusqlite), `schema` (what a table looks
//!   like), `meta` (the `_ha_*` tables), `apply` (one change set, last writer wins), `rows` (one row
//!   image written as an effect; the SQL text it builds is kept per table by `row_sql`),
//!   `conflict` (rows in the way of a UNIQUE constraint).
//!
//! ## Errors
//! `CodecError`, `SplitError`, `DdlError` for the message; `ApplyError` for everything that
//! touches SQLite (the node turns it into its `DbError` with `From`).

pub mod apply;
pub mod codec;
pub mod conflict;
pub mod ddl;
mod error;
pub mod meta;
pub mod names;
mod row_sql;
mod rows;
pub mod schema;
pub mod split;
pub mod sql;
mod value;

pub use codec::{CodecError, FORMAT_VERSION, decode, encode};
pub use error::ApplyError;
pub use split::{Assembled, Reassembler, SplitError, split};

/// A JetStream stream sequence: the position of a message in the replication log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl std::fmt::Display for Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One SQLite value as carried in a change set (SQLite's five storage classes).
///
/// The database and the message share this one type (`value` adds the rusqlite conversions).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// What a change does. Unknown operations from other implementations are kept (`Other`) so that
/// a receiver can skip them with a warning, as the original does, instead of failing to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Insert,
    Update,
    Delete,
    /// A statement text (`command`) with bind `args`: captured DDL.
    Sql,
    /// Reserved by the original; never produced by ha.
    Custom,
    Other(String),
}

impl Operation {
    pub fn as_str(&self) -> &str {
        match self {
            Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Sql => "SQL",
            Operation::Custom => "CUSTOM",
            Operation::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> Operation {
        match s {
            "INSERT" => Operation::Insert,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            "SQL" => Operation::Sql,
            "CUSTOM" => Operation::Custom,
            other => Operation::Other(other.to_string()),
        }
    }
}

/// One row change or one statement, in the order it happened inside the transaction.
///
/// Empty strings, empty vectors and zero rowids are "absent" (the original's `omitempty`).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Schema name: `main` (ha never replicates `temp` or attached schemas).
    pub database: String,
    pub table: String,
    /// Column names in table order (`pragma_table_info` cid order).
    pub columns: Vec<String>,
    /// Names of the declared PRIMARY KEY columns in cid order; empty = rowid identity.
    pub pk_columns: Vec<String>,
    pub operation: Operation,
    pub old_rowid: i64,
    pub new_rowid: i64,
    /// Row image before the change (UPDATE, DELETE), aligned with `columns`.
    pub old_values: Vec<Value>,
    /// Row image after the change (INSERT, UPDATE), aligned with `columns`.
    pub new_values: Vec<Value>,
    /// Statement text for `Operation::Sql`.
    pub command: String,
    /// Bind arguments for `command`.
    pub args: Vec<Value>,
    /// Per-change wall clock (nanoseconds) as the original's HEAD sends it; 0 = absent.
    pub ts_ns: i64,
}

impl Change {
    /// An empty change of the given operation on `main.<table>`; fill in the rest.
    pub fn new(operation: Operation, table: impl Into<String>) -> Change {
        Change {
            database: "main".into(),
            table: table.into(),
            columns: Vec::new(),
            pk_columns: Vec::new(),
            operation,
            old_rowid: 0,
            new_rowid: 0,
            old_values: Vec::new(),
            new_values: Vec::new(),
            command: String::new(),
            args: Vec::new(),
            ts_ns: 0,
        }
    }

    /// A statement change (captured DDL): `{"operation":"SQL","command":…}`.
    pub fn sql(command: impl Into<String>) -> Change {
        Change {
            database: String::new(),
            table: String::new(),
            command: command.into(),
            ..Change::new(Operation::Sql, "")
        }
    }
}

/// Which part of a split transaction one message carries (additive wire fields `txid`, `part`,
/// `parts`). `index` counts from 1 to `count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub txid: String,
    pub index: u32,
    pub count: u32,
}

/// One committed transaction (or, with `part`, one piece of it).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeSet {
    /// Origin node name.
    pub node: String,
    /// Origin process id (process start time in Unix nanoseconds).
    pub process_id: i64,
    /// Database base name: the replication group.
    pub filename: String,
    pub changes: Vec<Change>,
    /// Origin wall clock at publish, nanoseconds.
    pub timestamp_ns: i64,
    /// `ha_format` as decoded: `None` for messages of the Go original, `Some(FORMAT_VERSION)` for
    /// ours. `encode` always writes the current version. Tells a receiver whether strings in
    /// `BLOB` columns are legacy base64 (see `codec::legacy_blob`).
    pub format: Option<u32>,
    /// Set on the pieces of a change set that was split to fit the NATS max payload.
    pub part: Option<Part>,
    /// The origin's view of table names when it wrote this: it had applied every table drop and
    /// rename up to this stream sequence and none after it (`meta::name_view`). A receiver
    /// routes a change for table `t` to what became of the table the origin called `t` then
    /// (`meta::table_as_seen`), even if another table has taken the name since. `None` in
    /// messages of the Go original and of older ha versions.
    pub base: Option<u64>,
}

impl ChangeSet {
    pub fn new(node: impl Into<String>, process_id: i64, filename: impl Into<String>) -> ChangeSet {
        ChangeSet {
            node: node.into(),
            process_id,
            filename: filename.into(),
            changes: Vec::new(),
            timestamp_ns: 0,
            format: None,
            part: None,
            base: None,
        }
    }

    /// True for messages written by the Go original (or any writer without `ha_format`).
    pub fn is_legacy(&self) -> bool {
        self.format.is_none()
    }

    /// The identity of the transaction independent of its stream sequence, used to tie the
    /// parts of a split change set together: `<node>/<process_id>/<timestamp_ns>`.
    pub fn txid(&self) -> String {
        match &self.part {
            Some(p) => p.txid.clone(),
            None => {
                // (Made once per applied change set: without `format!`, which costs more than
                // the SQLite statement that records it.)
                let mut buf = itoa::Buffer::new();
                let mut out = String::with_capacity(self.node.len() + 42);
                out.push_str(&self.node);
                out.push('/');
                out.push_str(buf.format(self.process_id));
                out.push('/');
                out.push_str(buf.format(self.timestamp_ns));
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_txid_is_node_process_and_time_or_the_parts_own() {
        let mut cs = ChangeSet::new("node-1", -7, "ha.db");
        cs.timestamp_ns = i64::MAX;
        assert_eq!(cs.txid(), format!("node-1/-7/{}", i64::MAX));
        cs.part = Some(Part {
            txid: "a/1/2".into(),
            index: 1,
            count: 2,
        });
        assert_eq!(cs.txid(), "a/1/2");
    }
}
