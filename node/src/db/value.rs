//! Owns nothing of its own any more: `Value` and its rusqlite conversions (`ToSql`, `FromSql`,
//! `Value::from_ref`) live in the `ha-changeset` crate, shared with the `ha-sync` extension.
//! Must not grow a second conversion: add it there.
//! Invariant: integers stay exact `i64` end to end; a BLOB never silently becomes TEXT.
//! See `http::json`, `pgwire` and `changeset::codec` for the encodings built on top of it.

pub use crate::changeset::Value;
