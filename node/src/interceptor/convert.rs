//! Owns the mapping between a `ChangeSet` and the Rhai object map a script sees, both ways.
//! Must not interpret what a hook returns (see `verdict`); it only converts and says exactly
//! which field is wrong when a script hands back something that is not a change set.
//! Invariant: values round-trip exactly: INTEGER ↔ Rhai INT (i64), REAL ↔ FLOAT (f64),
//! TEXT ↔ string, BLOB ↔ Rhai BLOB, NULL ↔ `()`; `from_map(to_map(cs)) == cs`.
//! See docs/interceptor.md for the field list users read.

use rhai::{Array, Dynamic, Map};

use crate::changeset::{Change, ChangeSet, Operation, Seq, Value};

/// Where a change set is in the stream, for the read-only fields `stream_seq` and `subject`.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    /// The stream sequence (none yet on the publishing side).
    pub seq: Option<Seq>,
    pub subject: &'a str,
}

const CS_FIELDS: &[&str] = &[
    "node",
    "process_id",
    "filename",
    "timestamp_ns",
    "stream_seq",
    "subject",
    "changes",
];
const CHANGE_FIELDS: &[&str] = &[
    "database",
    "table",
    "columns",
    "pk_columns",
    "operation",
    "old_rowid",
    "new_rowid",
    "old_values",
    "new_values",
    "command",
    "args",
    "ts_ns",
];

/// The change set as a script sees it.
pub fn to_dynamic(cs: &ChangeSet, at: Position<'_>) -> Dynamic {
    let mut m = Map::new();
    m.insert("node".into(), cs.node.clone().into());
    m.insert("process_id".into(), Dynamic::from_int(cs.process_id));
    m.insert("filename".into(), cs.filename.clone().into());
    m.insert("timestamp_ns".into(), Dynamic::from_int(cs.timestamp_ns));
    m.insert(
        "stream_seq".into(),
        Dynamic::from_int(at.seq.map(|s| s.0.min(i64::MAX as u64) as i64).unwrap_or(0)),
    );
    m.insert("subject".into(), at.subject.into());
    let changes: Array = cs.changes.iter().map(change_to_dynamic).collect();
    m.insert("changes".into(), Dynamic::from_array(changes));
    Dynamic::from_map(m)
}

fn change_to_dynamic(c: &Change) -> Dynamic {
    let mut m = Map::new();
    m.insert("database".into(), c.database.clone().into());
    m.insert("table".into(), c.table.clone().into());
    m.insert("columns".into(), strings(&c.columns));
    m.insert("pk_columns".into(), strings(&c.pk_columns));
    m.insert("operation".into(), c.operation.as_str().into());
    m.insert("old_rowid".into(), Dynamic::from_int(c.old_rowid));
    m.insert("new_rowid".into(), Dynamic::from_int(c.new_rowid));
    m.insert("old_values".into(), values(&c.old_values));
    m.insert("new_values".into(), values(&c.new_values));
    m.insert("command".into(), c.command.clone().into());
    m.insert("args".into(), values(&c.args));
    m.insert("ts_ns".into(), Dynamic::from_int(c.ts_ns));
    Dynamic::from_map(m)
}

fn strings(v: &[String]) -> Dynamic {
    Dynamic::from_array(v.iter().map(|s| s.clone().into()).collect())
}

fn values(v: &[Value]) -> Dynamic {
    Dynamic::from_array(v.iter().map(value_to_dynamic).collect())
}

pub fn value_to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Integer(i) => Dynamic::from_int(*i),
        Value::Real(f) => Dynamic::from_float(*f),
        Value::Text(s) => s.clone().into(),
        Value::Blob(b) => Dynamic::from_blob(b.clone()),
    }
}

/// The change set a script returned. Fields it left out keep `original`'s value (top level) or
/// are empty (inside a change, so a script can add `#{operation: "SQL", command: …}`);
/// `stream_seq` and `subject` are read-only and ignored; unknown fields are refused (a typo
/// must not silently leave the original in place).
pub fn from_dynamic(d: Dynamic, original: &ChangeSet) -> Result<ChangeSet, String> {
    let d = d.flatten();
    let type_name = d.type_name();
    let Some(map) = d.try_cast::<Map>() else {
        return Err(format!(
            "expected a change set (an object map), got {type_name}"
        ));
    };
    let mut cs = header_of(original);
    let mut saw_changes = false;
    for (key, value) in map {
        match key.as_str() {
            "node" => cs.node = string(value, "node")?,
            "process_id" => cs.process_id = int(value, "process_id")?,
            "filename" => cs.filename = string(value, "filename")?,
            "timestamp_ns" => cs.timestamp_ns = int(value, "timestamp_ns")?,
            "stream_seq" | "subject" => {}
            "changes" => {
                saw_changes = true;
                let items = array(value, "changes")?;
                cs.changes.reserve(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    cs.changes.push(change_from_dynamic(item, i)?);
                }
            }
            other => {
                return Err(format!(
                    "unknown field {other:?} in the change set (fields: {})",
                    CS_FIELDS.join(", ")
                ));
            }
        }
    }
    if !saw_changes {
        cs.changes = original.changes.clone();
    }
    Ok(cs)
}

/// Everything of `cs` but its changes.
fn header_of(cs: &ChangeSet) -> ChangeSet {
    ChangeSet {
        node: cs.node.clone(),
        process_id: cs.process_id,
        filename: cs.filename.clone(),
        changes: Vec::new(),
        timestamp_ns: cs.timestamp_ns,
        format: cs.format,
        part: cs.part.clone(),
        base: cs.base,
    }
}

fn change_from_dynamic(d: Dynamic, i: usize) -> Result<Change, String> {
    let d = d.flatten();
    let type_name = d.type_name();
    let Some(map) = d.try_cast::<Map>() else {
        return Err(format!(
            "changes[{i}]: expected a change (an object map), got {type_name}"
        ));
    };
    let mut c = Change::new(Operation::Other(String::new()), "");
    c.database = String::new();
    let mut saw_operation = false;
    for (key, value) in map {
        let at = |f: &str| format!("changes[{i}].{f}");
        match key.as_str() {
            "database" => c.database = string(value, &at("database"))?,
            "table" => c.table = string(value, &at("table"))?,
            "columns" => c.columns = string_array(value, &at("columns"))?,
            "pk_columns" => c.pk_columns = string_array(value, &at("pk_columns"))?,
            "operation" => {
                saw_operation = true;
                c.operation = Operation::parse(&string(value, &at("operation"))?);
            }
            "old_rowid" => c.old_rowid = int(value, &at("old_rowid"))?,
            "new_rowid" => c.new_rowid = int(value, &at("new_rowid"))?,
            "old_values" => c.old_values = value_array(value, &at("old_values"))?,
            "new_values" => c.new_values = value_array(value, &at("new_values"))?,
            "command" => c.command = string(value, &at("command"))?,
            "args" => c.args = value_array(value, &at("args"))?,
            "ts_ns" => c.ts_ns = int(value, &at("ts_ns"))?,
            other => {
                return Err(format!(
                    "changes[{i}]: unknown field {other:?} (fields: {})",
                    CHANGE_FIELDS.join(", ")
                ));
            }
        }
    }
    if !saw_operation {
        return Err(format!(
            "changes[{i}]: no operation (INSERT, UPDATE, DELETE or SQL)"
        ));
    }
    Ok(c)
}

fn string(d: Dynamic, at: &str) -> Result<String, String> {
    let d = d.flatten();
    let type_name = d.type_name();
    d.into_string()
        .map_err(|_| format!("{at}: expected a string, got {type_name}"))
}

fn int(d: Dynamic, at: &str) -> Result<i64, String> {
    let d = d.flatten();
    d.as_int()
        .map_err(|_| format!("{at}: expected an integer, got {}", d.type_name()))
}

fn array(d: Dynamic, at: &str) -> Result<Array, String> {
    let d = d.flatten();
    let type_name = d.type_name();
    d.into_array()
        .map_err(|_| format!("{at}: expected an array, got {type_name}"))
}

fn string_array(d: Dynamic, at: &str) -> Result<Vec<String>, String> {
    array(d, at)?
        .into_iter()
        .enumerate()
        .map(|(j, s)| string(s, &format!("{at}[{j}]")))
        .collect()
}

fn value_array(d: Dynamic, at: &str) -> Result<Vec<Value>, String> {
    array(d, at)?
        .into_iter()
        .enumerate()
        .map(|(j, v)| value_from_dynamic(v, &format!("{at}[{j}]")))
        .collect()
}

/// An SQLite value from a script value; `true`/`false` become 1/0 (SQLite has no booleans).
pub fn value_from_dynamic(d: Dynamic, at: &str) -> Result<Value, String> {
    let d = d.flatten();
    if d.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(i) = d.as_int() {
        return Ok(Value::Integer(i));
    }
    if let Ok(f) = d.as_float() {
        return Ok(Value::Real(f));
    }
    if let Ok(b) = d.as_bool() {
        return Ok(Value::Integer(i64::from(b)));
    }
    if let Ok(c) = d.as_char() {
        return Ok(Value::Text(c.to_string()));
    }
    if d.is_blob() {
        return d
            .into_blob()
            .map(Value::Blob)
            .map_err(|t| format!("{at}: {t}"));
    }
    let type_name = d.type_name();
    if d.is_string() {
        return d
            .into_string()
            .map(Value::Text)
            .map_err(|t| format!("{at}: {t}"));
    }
    Err(format!(
        "{at}: a {type_name} cannot be stored in SQLite (use (), an integer, a float, a string or a BLOB)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(bytes: &[u8]) -> Dynamic {
        Dynamic::from_blob(rhai::Blob::from(bytes))
    }

    fn sample() -> ChangeSet {
        let mut cs = ChangeSet::new("n1", 1_700_000_000_123_456_789, "t.db");
        cs.timestamp_ns = i64::MAX - 7;
        cs.format = Some(crate::changeset::FORMAT_VERSION);
        let mut c = Change::new(Operation::Update, "users");
        c.columns = vec![
            "id".into(),
            "big".into(),
            "r".into(),
            "t".into(),
            "b".into(),
            "n".into(),
        ];
        c.pk_columns = vec!["id".into()];
        c.old_rowid = i64::MIN;
        c.new_rowid = i64::MAX;
        c.old_values = vec![
            Value::Integer(1),
            Value::Integer(i64::MIN),
            Value::Real(-0.0),
            Value::Text(String::new()),
            Value::Blob(Vec::new()),
            Value::Null,
        ];
        c.new_values = vec![
            Value::Integer(1),
            Value::Integer(9_007_199_254_740_993), // 2^53 + 1: not a float
            Value::Real(0.1 + 0.2),
            Value::Text("é ✓ \u{0}".into()),
            Value::Blob(vec![0, 255, 1, 254]),
            Value::Null,
        ];
        c.ts_ns = 42;
        let mut ddl = Change::sql("ALTER TABLE users ADD COLUMN x");
        ddl.args = vec![Value::Real(1e300), Value::Integer(-1)];
        cs.changes = vec![c, ddl];
        cs
    }

    #[test]
    fn a_change_set_round_trips_exactly() {
        let cs = sample();
        let at = Position {
            seq: Some(Seq(77)),
            subject: "ha_replication.t_db",
        };
        let back = from_dynamic(to_dynamic(&cs, at), &cs).unwrap();
        assert_eq!(back, cs);
        // -0.0 == 0.0 for PartialEq; the bits must survive too.
        let Value::Real(z) = back.changes[0].old_values[2] else {
            panic!()
        };
        assert!(z.is_sign_negative());
    }

    #[test]
    fn read_only_fields_are_visible_and_ignored_on_return() {
        let cs = sample();
        let d = to_dynamic(
            &cs,
            Position {
                seq: Some(Seq(9)),
                subject: "s",
            },
        );
        let mut m = d.clone().try_cast::<Map>().unwrap();
        assert_eq!(m["stream_seq"].as_int().unwrap(), 9);
        assert_eq!(m["subject"].clone().into_string().unwrap(), "s");
        m.insert("stream_seq".into(), Dynamic::from_int(1));
        assert_eq!(from_dynamic(Dynamic::from_map(m), &cs).unwrap(), cs);
    }

    #[test]
    fn wrong_shapes_are_refused_with_the_field_named() {
        let cs = sample();
        let mut m = to_dynamic(
            &cs,
            Position {
                seq: None,
                subject: "",
            },
        )
        .try_cast::<Map>()
        .unwrap();
        m.insert("chnages".into(), Dynamic::from_array(Vec::new()));
        let e = from_dynamic(Dynamic::from_map(m.clone()), &cs).unwrap_err();
        assert!(e.contains("\"chnages\""), "{e}");
        m.remove("chnages");
        let mut bad = Map::new();
        bad.insert("operation".into(), "INSERT".into());
        bad.insert(
            "new_values".into(),
            Dynamic::from_array(vec![Dynamic::from_map(Map::new())]),
        );
        m.insert(
            "changes".into(),
            Dynamic::from_array(vec![Dynamic::from_map(bad)]),
        );
        let e = from_dynamic(Dynamic::from_map(m), &cs).unwrap_err();
        assert!(e.contains("changes[0].new_values[0]"), "{e}");
        assert!(from_dynamic(Dynamic::from_int(1), &cs).is_err());
    }

    #[test]
    fn a_change_without_operation_is_refused_and_missing_fields_default() {
        let cs = sample();
        let mut c = Map::new();
        c.insert("command".into(), "DELETE FROM users".into());
        let mut m = Map::new();
        m.insert(
            "changes".into(),
            Dynamic::from_array(vec![Dynamic::from_map(c.clone())]),
        );
        assert!(from_dynamic(Dynamic::from_map(m.clone()), &cs).is_err());
        c.insert("operation".into(), "SQL".into());
        m.insert(
            "changes".into(),
            Dynamic::from_array(vec![Dynamic::from_map(c)]),
        );
        let back = from_dynamic(Dynamic::from_map(m), &cs).unwrap();
        assert_eq!(back.node, cs.node);
        assert_eq!(back.changes, vec![Change::sql("DELETE FROM users")]);
    }

    #[test]
    fn booleans_and_chars_become_sqlite_values() {
        assert_eq!(
            value_from_dynamic(Dynamic::from_bool(true), "x").unwrap(),
            Value::Integer(1)
        );
        assert_eq!(
            value_from_dynamic(Dynamic::from_char('z'), "x").unwrap(),
            Value::Text("z".into())
        );
        assert_eq!(
            value_from_dynamic(blob(&[1, 2]), "x").unwrap(),
            Value::Blob(vec![1, 2])
        );
    }
}
