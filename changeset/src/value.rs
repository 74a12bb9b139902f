//! Owns how `Value` (SQLite's five storage classes, defined with the change-set model so that
//! the message and the database share one type) moves in and out of rusqlite.
//! Must not know about JSON or the PostgreSQL wire format: front ends translate.
//! Invariant: integers stay exact `i64` end to end; a BLOB never silently becomes TEXT.
//! See `codec` for the JSON encoding built on top of it.

use rusqlite::types::{FromSql, FromSqlResult, ToSqlOutput, ValueRef};

use crate::Value;

impl Value {
    /// The value SQLite holds in `v`, copied out.
    pub fn from_ref(v: ValueRef<'_>) -> Value {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            // SQLite may hold invalid UTF-8 in TEXT (written through a blob cast); keep what can be kept.
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

impl FromSql for Value {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Value> {
        Ok(Value::from_ref(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_sqlite_exactly() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let vals = [
            Value::Null,
            Value::Integer(i64::MAX),
            Value::Integer(i64::MIN),
            Value::Integer(9_007_199_254_740_993),
            Value::Real(1.5),
            Value::Text("héllo ✓".into()),
            Value::Blob(vec![0, 1, 2, 255]),
        ];
        for v in vals {
            let back = conn
                .query_row("SELECT ?1", [&v], |r| Ok(Value::from_ref(r.get_ref(0)?)))
                .unwrap();
            assert_eq!(back, v);
            let via_from_sql: Value = conn.query_row("SELECT ?1", [&v], |r| r.get(0)).unwrap();
            assert_eq!(via_from_sql, v);
        }
    }
}
