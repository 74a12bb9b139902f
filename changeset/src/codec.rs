//! Owns the JSON wire format of a change set (reference §2.3) and its additive fields.
//! Must not change the meaning of any field the Go original reads; new fields are additive only.
//! Invariant: integers are exact i64 JSON integers, reals are finite JSON numbers, blobs are
//! base64 strings whose positions are listed, so `decode(encode(x)) == x`.
//! See `split` for oversized change sets and `mod.rs` for the model.
//!
//! # Wire format
//! Top level: `node`, `process_id`, `filename`, `changes` (`null` when empty), `timestamp_ns` —
//! always present, as the original. Each change: `database`, `table`, `columns`, `pk_columns`,
//! `operation` (always), `old_rowid`, `new_rowid`, `old_values`, `new_values`, `command`, `args`,
//! `ts_ns` — omitted when empty or zero (Go `omitempty`).
//!
//! Additive fields (ignored by the original's readers):
//! - top level `ha_format` (`1`): written by ha. Its absence marks a legacy message.
//! - top level `ha_base`: the origin's view of table names (`ChangeSet::base`), when known.
//! - top level `txid`, `part`, `parts`: only on the pieces of a split change set (`split`).
//! - per change `old_blobs`, `new_blobs`, `args_blobs`: indexes into `old_values`, `new_values`,
//!   `args` whose string is base64 of a BLOB. A legacy message has none; its writer base64-encoded
//!   exactly the values of columns declared `BLOB` (case-sensitive), so the receiver decodes those
//!   with `legacy_blob` once it knows the declared type.
//!
//! Values: NULL → `null`, INTEGER → JSON integer, REAL → JSON number (`2.0` stays `2.0`; NaN and
//! ±Inf are an encode error), TEXT → string, BLOB → standard base64 with padding (as Go).
//! Decoding: integral numbers → `Integer` exactly (also above 2^53), others → `Real`; booleans
//! → 0/1; arrays and objects in a value position are an error.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::{Change, ChangeSet, Operation, Part, Value};

/// The `ha_format` version this code writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(
        "cannot replicate a non-finite REAL ({value}) in {table}.{column}: NaN and Infinity have no JSON form"
    )]
    NonFiniteReal {
        table: String,
        column: String,
        value: f64,
    },
    #[error("malformed change set: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed change set: {0}")]
    Envelope(String),
    #[error("malformed change set: change {change}: {reason}")]
    Invalid { change: usize, reason: String },
}

/// Encodes one change set (or one part of it) as the JSON message body.
pub fn encode(cs: &ChangeSet) -> Result<Vec<u8>, CodecError> {
    let mut changes = Vec::with_capacity(cs.changes.len());
    for c in &cs.changes {
        changes.push(encode_change(c)?);
    }
    Ok(assemble(cs, cs.part.as_ref(), &changes))
}

/// Decodes a message body written by ha or by the Go original.
pub fn decode(bytes: &[u8]) -> Result<ChangeSet, CodecError> {
    // serde would also read a struct from a JSON array; a message is always an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(CodecError::Envelope(
            "a change set must be a JSON object".into(),
        ));
    }
    // One UTF-8 check of the whole body, then a parse that takes every string as valid: cheaper
    // than checking each string (keys included) on its own as `from_slice` does.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| CodecError::Envelope(format!("a change set must be UTF-8 JSON: {e}")))?;
    let wire: WireSet<'_> = serde_json::from_str(text)?;
    let mut changes = Vec::with_capacity(wire.changes.as_ref().map_or(0, Vec::len));
    for (i, c) in wire.changes.unwrap_or_default().into_iter().enumerate() {
        changes.push(decode_change(c).map_err(|reason| CodecError::Invalid { change: i, reason })?);
    }
    let part = match (wire.txid, wire.part, wire.parts) {
        (None, None, None) => None,
        (Some(txid), Some(index), Some(count)) if index >= 1 && index <= count => {
            Some(Part { txid, index, count })
        }
        _ => {
            return Err(CodecError::Envelope(
                "txid, part and parts must come together with 1 <= part <= parts".into(),
            ));
        }
    };
    Ok(ChangeSet {
        node: wire.node,
        process_id: wire.process_id,
        filename: wire.filename,
        changes,
        timestamp_ns: wire.timestamp_ns,
        format: wire.ha_format,
        part,
        base: wire.ha_base,
    })
}

/// Decodes a legacy (Go original) value of a column declared exactly `BLOB`: the original sent
/// those bytes as base64. Returns `None` when the text is not valid base64 (keep it as text).
pub fn legacy_blob(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

/// Encodes one change to its JSON object; `split` sizes parts with this.
pub(crate) fn encode_change(c: &Change) -> Result<Vec<u8>, CodecError> {
    check_finite(c)?;
    let wire = WireChangeOut {
        database: &c.database,
        table: &c.table,
        columns: &c.columns,
        pk_columns: &c.pk_columns,
        operation: c.operation.as_str(),
        old_rowid: c.old_rowid,
        new_rowid: c.new_rowid,
        old_values: Values(&c.old_values),
        new_values: Values(&c.new_values),
        command: &c.command,
        args: Values(&c.args),
        ts_ns: c.ts_ns,
        old_blobs: blob_indexes(&c.old_values),
        new_blobs: blob_indexes(&c.new_values),
        args_blobs: blob_indexes(&c.args),
    };
    Ok(serde_json::to_vec(&wire)?)
}

/// Builds the message from already encoded changes. The envelope is written first and
/// `changes` appended last, so that `split` can size a part exactly from its pieces.
pub(crate) fn assemble(cs: &ChangeSet, part: Option<&Part>, changes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = envelope(cs, part);
    if changes.is_empty() {
        out.extend_from_slice(b",\"changes\":null}");
        return out;
    }
    let body: usize = changes.iter().map(|c| c.len() + 1).sum();
    out.reserve(body + 16);
    out.extend_from_slice(b",\"changes\":[");
    for (i, c) in changes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(c);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Bytes `assemble` adds around the changes of a part: envelope, `,"changes":[`, `]}`.
pub(crate) fn envelope_len(cs: &ChangeSet, part: Option<&Part>) -> usize {
    envelope(cs, part).len() + ",\"changes\":[]}".len()
}

/// The top-level object without `changes` and without its closing brace.
fn envelope(cs: &ChangeSet, part: Option<&Part>) -> Vec<u8> {
    let wire = WireEnvelope {
        node: &cs.node,
        process_id: cs.process_id,
        filename: &cs.filename,
        timestamp_ns: cs.timestamp_ns,
        ha_format: FORMAT_VERSION,
        ha_base: cs.base,
        txid: part.map(|p| p.txid.as_str()),
        part: part.map(|p| p.index),
        parts: part.map(|p| p.count),
    };
    // Serialising a struct of strings and integers cannot fail.
    let mut out = serde_json::to_vec(&wire).unwrap_or_else(|_| b"{}".to_vec());
    out.pop(); // the closing '}'
    out
}

fn check_finite(c: &Change) -> Result<(), CodecError> {
    let lists: [(&[Value], bool); 3] = [
        (&c.old_values, true),
        (&c.new_values, true),
        (&c.args, false),
    ];
    for (values, is_row) in lists {
        for (i, v) in values.iter().enumerate() {
            if let Value::Real(f) = v
                && !f.is_finite()
            {
                let column = if is_row {
                    c.columns.get(i).cloned().unwrap_or_else(|| format!("#{i}"))
                } else {
                    format!("argument {}", i + 1)
                };
                return Err(CodecError::NonFiniteReal {
                    table: c.table.clone(),
                    column,
                    value: *f,
                });
            }
        }
    }
    Ok(())
}

fn blob_indexes(values: &[Value]) -> Vec<usize> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| matches!(v, Value::Blob(_)))
        .map(|(i, _)| i)
        .collect()
}

fn decode_change(c: WireChangeIn<'_>) -> Result<Change, String> {
    Ok(Change {
        database: c.database,
        table: c.table,
        columns: c.columns.unwrap_or_default(),
        pk_columns: c.pk_columns.unwrap_or_default(),
        operation: Operation::parse(&c.operation),
        old_rowid: c.old_rowid,
        new_rowid: c.new_rowid,
        old_values: values_in(c.old_values, c.old_blobs, "old_values")?,
        new_values: values_in(c.new_values, c.new_blobs, "new_values")?,
        command: c.command,
        args: values_in(c.args, c.args_blobs, "args")?,
        ts_ns: c.ts_ns,
    })
}

fn values_in(
    values: Option<Vec<WireValue>>,
    blobs: Option<Vec<usize>>,
    field: &str,
) -> Result<Vec<Value>, String> {
    let mut out: Vec<Value> = values
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.0)
        .collect();
    for i in blobs.unwrap_or_default() {
        let slot = out
            .get_mut(i)
            .ok_or_else(|| format!("{field}: blob index {i} is out of range"))?;
        let Value::Text(text) = slot else {
            return Err(format!("{field}[{i}]: a blob must be a base64 string"));
        };
        let bytes = B64
            .decode(text.as_bytes())
            .map_err(|e| format!("{field}[{i}]: invalid base64: {e}"))?;
        *slot = Value::Blob(bytes);
    }
    Ok(out)
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct WireEnvelope<'a> {
    node: &'a str,
    process_id: i64,
    filename: &'a str,
    timestamp_ns: i64,
    ha_format: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ha_base: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    txid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parts: Option<u32>,
}

#[derive(Serialize)]
struct WireChangeOut<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    database: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    table: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    columns: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pk_columns: &'a [String],
    operation: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    old_rowid: i64,
    #[serde(skip_serializing_if = "is_zero")]
    new_rowid: i64,
    #[serde(skip_serializing_if = "Values::is_empty")]
    old_values: Values<'a>,
    #[serde(skip_serializing_if = "Values::is_empty")]
    new_values: Values<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    command: &'a str,
    #[serde(skip_serializing_if = "Values::is_empty")]
    args: Values<'a>,
    #[serde(skip_serializing_if = "is_zero")]
    ts_ns: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    old_blobs: Vec<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    new_blobs: Vec<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    args_blobs: Vec<usize>,
}

/// A values array as the wire writes it (blobs as base64).
struct Values<'a>(&'a [Value]);

impl Values<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            match v {
                Value::Null => seq.serialize_element(&())?,
                Value::Integer(i) => seq.serialize_element(i)?,
                Value::Real(f) => seq.serialize_element(f)?,
                Value::Text(t) => seq.serialize_element(t)?,
                Value::Blob(b) => seq.serialize_element(&B64.encode(b))?,
            }
        }
        seq.end()
    }
}

#[derive(Deserialize)]
struct WireSet<'a> {
    #[serde(default)]
    node: String,
    #[serde(default)]
    process_id: i64,
    #[serde(default)]
    filename: String,
    #[serde(default, borrow)]
    changes: Option<Vec<WireChangeIn<'a>>>,
    #[serde(default)]
    timestamp_ns: i64,
    #[serde(default)]
    ha_format: Option<u32>,
    #[serde(default)]
    ha_base: Option<u64>,
    #[serde(default)]
    txid: Option<String>,
    #[serde(default)]
    part: Option<u32>,
    #[serde(default)]
    parts: Option<u32>,
}

#[derive(Deserialize)]
struct WireChangeIn<'a> {
    #[serde(default)]
    database: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    pk_columns: Option<Vec<String>>,
    /// Borrowed from the body unless it has escapes: only looked at, never kept.
    #[serde(borrow)]
    operation: Cow<'a, str>,
    #[serde(default)]
    old_rowid: i64,
    #[serde(default)]
    new_rowid: i64,
    #[serde(default)]
    old_values: Option<Vec<WireValue>>,
    #[serde(default)]
    new_values: Option<Vec<WireValue>>,
    #[serde(default)]
    command: String,
    #[serde(default)]
    args: Option<Vec<WireValue>>,
    #[serde(default)]
    ts_ns: i64,
    #[serde(default)]
    old_blobs: Option<Vec<usize>>,
    #[serde(default)]
    new_blobs: Option<Vec<usize>>,
    #[serde(default)]
    args_blobs: Option<Vec<usize>>,
}

/// One JSON value in a values array, decoded without going through `serde_json::Value`.
struct WireValue(Value);

impl<'de> Deserialize<'de> for WireValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = WireValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("null, a number or a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<WireValue, E> {
        Ok(WireValue(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<WireValue, E> {
        Ok(WireValue(Value::Null))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<WireValue, E> {
        Ok(WireValue(Value::Integer(i64::from(b))))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<WireValue, E> {
        Ok(WireValue(Value::Integer(i)))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<WireValue, E> {
        Ok(WireValue(match i64::try_from(u) {
            Ok(i) => Value::Integer(i),
            // Beyond i64: SQLite itself would store such a literal as REAL.
            Err(_) => Value::Real(u as f64),
        }))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<WireValue, E> {
        Ok(WireValue(Value::Real(f)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<WireValue, E> {
        Ok(WireValue(Value::Text(s.to_string())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<WireValue, E> {
        Ok(WireValue(Value::Text(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn golden(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn sample() -> ChangeSet {
        let mut ins = Change::new(Operation::Insert, "users");
        ins.columns = vec!["id".into(), "name".into(), "score".into(), "avatar".into()];
        ins.pk_columns = vec!["id".into()];
        ins.old_rowid = 1;
        ins.new_rowid = 1;
        ins.new_values = vec![
            Value::Integer(1),
            Value::Text("Ann".into()),
            Value::Real(2.0),
            Value::Blob(vec![0, 1, 2, 255]),
        ];
        let mut upd = Change::new(Operation::Update, "users");
        upd.columns = vec!["id".into(), "name".into()];
        upd.old_rowid = 1;
        upd.new_rowid = 1;
        upd.old_values = vec![Value::Integer(1), Value::Null];
        upd.new_values = vec![
            Value::Integer(9_007_199_254_740_993),
            Value::Text("Bo".into()),
        ];
        let mut del = Change::new(Operation::Delete, "users");
        del.columns = vec!["id".into()];
        del.old_values = vec![Value::Integer(i64::MIN)];
        let mut cs = ChangeSet::new("node1", 1_700_000_000_000_000_000, "ha.db");
        cs.timestamp_ns = 1_700_000_000_123_456_789;
        cs.changes = vec![
            Change::sql("CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, name TEXT)"),
            ins,
            upd,
            del,
        ];
        cs
    }

    #[test]
    fn encode_then_decode_gives_back_the_same_change_set() {
        let cs = sample();
        let mut back = decode(&encode(&cs).unwrap()).unwrap();
        assert_eq!(back.format, Some(FORMAT_VERSION));
        back.format = None;
        assert_eq!(back, cs);
        // The writer's view of table names travels as `ha_base`.
        let mut cs = sample();
        cs.base = Some(41);
        let body = encode(&cs).unwrap();
        assert_eq!(json(&body)["ha_base"], 41);
        assert_eq!(decode(&body).unwrap().base, Some(41));
    }

    #[test]
    fn integers_above_2_pow_53_survive_exactly() {
        let body = br#"{"node":"a","process_id":1,"filename":"ha.db","timestamp_ns":1,
            "changes":[{"operation":"INSERT","table":"t","columns":["a","b","c"],
            "new_values":[9007199254740993,-9223372036854775808,9223372036854775807]}]}"#;
        let cs = decode(body).unwrap();
        assert_eq!(
            cs.changes[0].new_values,
            vec![
                Value::Integer(9_007_199_254_740_993),
                Value::Integer(i64::MIN),
                Value::Integer(i64::MAX)
            ]
        );
        let again = json(&encode(&cs).unwrap());
        assert_eq!(
            again["changes"][0]["new_values"][0].as_i64(),
            Some(9_007_199_254_740_993)
        );
    }

    #[test]
    fn reals_stay_reals_and_integral_numbers_become_integers() {
        let body = br#"{"changes":[{"operation":"INSERT","new_values":[2.0,2,1e+21,0.5,true]}]}"#;
        let cs = decode(body).unwrap();
        assert_eq!(
            cs.changes[0].new_values,
            vec![
                Value::Real(2.0),
                Value::Integer(2),
                Value::Real(1e21),
                Value::Real(0.5),
                Value::Integer(1)
            ]
        );
        let out = String::from_utf8(encode(&cs).unwrap()).unwrap();
        assert!(out.contains("[2.0,2,1e+21,0.5,1]"), "{out}");
    }

    #[test]
    fn nan_and_infinity_are_refused_with_the_column_name() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut c = Change::new(Operation::Insert, "m");
            c.columns = vec!["id".into(), "x".into()];
            c.new_values = vec![Value::Integer(1), Value::Real(bad)];
            let mut cs = ChangeSet::new("n", 1, "ha.db");
            cs.changes.push(c);
            let err = encode(&cs).unwrap_err();
            assert!(
                matches!(&err, CodecError::NonFiniteReal { table, column, .. } if table == "m" && column == "x"),
                "{err}"
            );
        }
    }

    #[test]
    fn blobs_are_base64_and_listed_and_come_back_as_blobs() {
        let mut c = Change::new(Operation::Update, "f");
        c.columns = vec!["id".into(), "data".into()];
        c.old_values = vec![Value::Integer(1), Value::Text("AAEC".into())];
        c.new_values = vec![Value::Integer(1), Value::Blob(vec![0, 1, 2])];
        c.command = String::new();
        let mut cs = ChangeSet::new("n", 1, "ha.db");
        cs.changes.push(c.clone());
        let v = json(&encode(&cs).unwrap());
        assert_eq!(v["changes"][0]["new_values"][1], "AAEC");
        assert_eq!(v["changes"][0]["new_blobs"], serde_json::json!([1]));
        assert!(v["changes"][0].get("old_blobs").is_none());
        let back = decode(&encode(&cs).unwrap()).unwrap();
        // Text that looks like base64 stays text; the blob stays a blob.
        assert_eq!(back.changes[0], c);
    }

    #[test]
    fn empty_fields_are_omitted_like_go_omitempty() {
        let mut cs = ChangeSet::new("n", 7, "ha.db");
        cs.changes.push(Change::sql("DROP TABLE IF EXISTS t"));
        let v = json(&encode(&cs).unwrap());
        let change = v["changes"][0].as_object().unwrap();
        let keys: Vec<&str> = change.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["command", "operation"]);
        for k in ["node", "process_id", "filename", "changes", "timestamp_ns"] {
            assert!(v.get(k).is_some(), "{k} must always be present");
        }
        assert!(v.get("txid").is_none() && v.get("part").is_none());
        let empty = json(&encode(&ChangeSet::new("n", 7, "ha.db")).unwrap());
        assert!(empty["changes"].is_null());
    }

    #[test]
    fn golden_message_of_the_original_decodes() {
        // Hand-written from reference §2.3: a Go v0.0.13-era message (no additive fields,
        // zero rowids omitted, DDL as an SQL change, a BLOB column as base64).
        let cs = decode(&golden("go_original.json")).unwrap();
        assert!(cs.is_legacy());
        assert_eq!(cs.node, "node1");
        assert_eq!(cs.process_id, 1_745_000_000_000_000_001);
        assert_eq!(cs.filename, "ha.db");
        assert_eq!(cs.timestamp_ns, 1_745_000_000_500_000_000);
        assert_eq!(cs.changes.len(), 4);
        assert_eq!(cs.changes[0].operation, Operation::Sql);
        assert_eq!(
            cs.changes[0].command,
            "CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, name TEXT, photo BLOB)"
        );
        let ins = &cs.changes[1];
        assert_eq!(ins.operation, Operation::Insert);
        assert_eq!(
            (ins.database.as_str(), ins.table.as_str()),
            ("main", "users")
        );
        assert_eq!(ins.columns, vec!["id", "name", "photo"]);
        assert_eq!((ins.old_rowid, ins.new_rowid), (1, 1));
        // Legacy: the BLOB column's base64 arrives as text; the receiver decodes it by type.
        assert_eq!(ins.new_values[2], Value::Text("3q2+7w==".into()));
        assert_eq!(legacy_blob("3q2+7w=="), Some(vec![0xde, 0xad, 0xbe, 0xef]));
        let upd = &cs.changes[2];
        assert_eq!(upd.old_values[1], Value::Text("Ann".into()));
        assert_eq!(upd.new_values[1], Value::Text("Anna".into()));
        let del = &cs.changes[3];
        assert_eq!(del.operation, Operation::Delete);
        assert!(del.new_values.is_empty());
        assert_eq!(del.old_values[0], Value::Integer(1));
    }

    #[test]
    fn golden_message_of_the_original_head_with_pk_columns_and_ts_decodes() {
        let cs = decode(&golden("go_head.json")).unwrap();
        let c = &cs.changes[0];
        assert_eq!(c.pk_columns, vec!["id"]);
        assert_eq!(c.ts_ns, 1_745_000_000_400_000_000);
        assert_eq!(c.operation, Operation::Insert);
        assert_eq!(cs.changes[1].operation, Operation::Other("MERGE".into()));
    }

    #[test]
    fn our_encoding_matches_the_golden_file_and_keeps_original_fields() {
        let mut cs = ChangeSet::new("node1", 1_745_000_000_000_000_001, "ha.db");
        cs.timestamp_ns = 1_745_000_000_500_000_000;
        let mut c = Change::new(Operation::Insert, "users");
        c.columns = vec!["id".into(), "name".into(), "photo".into()];
        c.pk_columns = vec!["id".into()];
        c.old_rowid = 1;
        c.new_rowid = 1;
        c.new_values = vec![
            Value::Integer(1),
            Value::Text("Ann".into()),
            Value::Blob(vec![0xde, 0xad, 0xbe, 0xef]),
        ];
        cs.changes.push(c);
        assert_eq!(json(&encode(&cs).unwrap()), json(&golden("ha_v1.json")));
        // Every field the original reads is where the original expects it.
        let original = json(&golden("go_original.json"));
        let ours = json(&golden("ha_v1.json"));
        assert_eq!(
            ours["changes"][0]["new_values"],
            original["changes"][1]["new_values"]
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let bad: [&[u8]; 8] = [
            b"",
            b"[]",
            b"{\"changes\":[{}]}",
            b"{\"changes\":[{\"operation\":\"INSERT\",\"new_values\":[[1]]}]}",
            b"{\"changes\":[{\"operation\":\"INSERT\",\"new_values\":[{\"a\":1}]}]}",
            b"{\"changes\":[{\"operation\":\"INSERT\",\"new_values\":[1],\"new_blobs\":[3]}]}",
            b"{\"changes\":[{\"operation\":\"INSERT\",\"new_values\":[\"!!\"],\"new_blobs\":[0]}]}",
            b"{\"txid\":\"x\",\"part\":3,\"parts\":2,\"changes\":null}",
        ];
        for b in bad {
            assert!(
                decode(b).is_err(),
                "{:?} should not decode",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn null_changes_and_missing_optional_fields_decode_as_empty() {
        let cs = decode(br#"{"node":"n","changes":null,"timestamp_ns":5}"#).unwrap();
        assert!(cs.changes.is_empty());
        assert_eq!(cs.timestamp_ns, 5);
        assert!(cs.part.is_none());
    }
}
