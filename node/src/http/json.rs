//! Owns the JSON shapes of `POST /`: request bodies into `Stmt`s, results into the original's
//! `{"columns": [...], "rows": [[...]]}` objects.
//! Must not run anything; `http::query` does.
//! Invariant: integers are exact i64 both ways; a BLOB goes out as base64 and comes in as
//! `{"base64": "..."}`; anything unrepresentable is an error, never a silent change.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};
use serde_json::Value as Json;

use crate::exec::{Params, Seq, Stmt, StmtResult, Value};

/// A request: one statement (answered with a bare result) or several (one transaction,
/// answered with `{"results": [...]}`).
#[derive(Debug)]
pub struct Request {
    pub stmts: Vec<Stmt>,
    pub is_array: bool,
}

pub fn parse_request(body: &[u8]) -> Result<Request, String> {
    check_integers(body)?;
    let json: Json =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    match json {
        Json::Object(_) => Ok(Request {
            stmts: vec![parse_stmt(json, None)?],
            is_array: false,
        }),
        Json::Array(items) if items.is_empty() => Err("no queries found".into()),
        Json::Array(items) => {
            let stmts = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| parse_stmt(item, Some(i)))
                .collect::<Result<_, _>>()?;
            Ok(Request {
                stmts,
                is_array: true,
            })
        }
        _ => Err(
            "no queries found: send {\"sql\": \"...\", \"params\": {...}} or an array of them"
                .into(),
        ),
    }
}

/// Refuses integer literals outside the 64-bit signed range before serde_json reads them as
/// floats (`99999999999999999999999` would silently become `1e+23`). One pass over the body:
/// strings are skipped, numbers with a fraction or exponent are left to be floats.
fn check_integers(body: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < body.len()
                    && matches!(body[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let literal = &body[start..i];
                let is_integer = !literal.iter().any(|c| matches!(c, b'.' | b'e' | b'E'));
                if is_integer {
                    let text = String::from_utf8_lossy(literal);
                    if text.parse::<i64>().is_err() && text.trim_start_matches('-').len() > 1 {
                        return Err(format!(
                            "integer {text} is out of the 64-bit signed range (send it as a string)"
                        ));
                    }
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn parse_stmt(item: Json, index: Option<usize>) -> Result<Stmt, String> {
    let at = |m: String| match index {
        Some(i) => format!("statement {}: {m}", i + 1),
        None => m,
    };
    let Json::Object(mut obj) = item else {
        return Err(at(
            "expected an object {\"sql\": \"...\", \"params\": ...}".into()
        ));
    };
    let sql = match obj.remove("sql") {
        Some(Json::String(s)) => s,
        Some(_) => return Err(at("\"sql\" must be a string".into())),
        None => return Err(at("missing \"sql\"".into())),
    };
    let params = match obj.remove("params") {
        None | Some(Json::Null) => Params::None,
        Some(Json::Array(items)) => Params::Positional(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_in(v).map_err(|e| at(format!("parameter {}: {e}", i + 1))))
                .collect::<Result<_, _>>()?,
        ),
        Some(Json::Object(map)) => {
            let mut out = BTreeMap::new();
            for (k, v) in map {
                let key = normalize_key(&k);
                if key.is_empty() {
                    return Err(at(format!("parameter name {k:?} is empty")));
                }
                let v = value_in(v).map_err(|e| at(format!("parameter {k}: {e}")))?;
                if out.insert(key.clone(), v).is_some() {
                    return Err(at(format!("parameter {key} is given twice")));
                }
            }
            Params::Named(out)
        }
        Some(_) => return Err(at("\"params\" must be an object or an array".into())),
    };
    Ok(Stmt { sql, params })
}

/// `:id`, `@id`, `$id` and `id` all name the placeholder `id`; `$1` names position 1.
fn normalize_key(k: &str) -> String {
    k.strip_prefix([':', '@', '$', '?'])
        .unwrap_or(k)
        .to_string()
}

/// A JSON parameter value as an SQLite value.
pub fn value_in(v: Json) -> Result<Value, String> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(b)),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i)
            } else if n.is_u64() {
                return Err(format!("integer {n} is out of the 64-bit signed range"));
            } else {
                Value::Real(n.as_f64().ok_or("number is not representable")?)
            }
        }
        Json::String(s) => Value::Text(s),
        Json::Object(mut o) if o.len() == 1 && o.contains_key("base64") => match o.remove("base64")
        {
            Some(Json::String(s)) => Value::Blob(
                B64.decode(s.as_bytes())
                    .map_err(|e| format!("invalid base64 blob: {e}"))?,
            ),
            _ => return Err("\"base64\" must be a string".into()),
        },
        Json::Object(_) => {
            return Err("objects are not values (a blob is {\"base64\": \"...\"})".into());
        }
        Json::Array(_) => return Err("arrays are not values".into()),
    })
}

/// Serializes a value the way the original did: BLOBs as base64 strings.
pub struct ValueOut<'a>(pub &'a Value);

impl Serialize for ValueOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_none(),
            Value::Integer(i) => s.serialize_i64(*i),
            // JSON has no NaN or infinity; serde_json writes null for them.
            Value::Real(f) => s.serialize_f64(*f),
            Value::Text(t) => s.serialize_str(t),
            Value::Blob(b) => s.serialize_str(&B64.encode(b)),
        }
    }
}

/// One statement's result in the original's shape.
pub struct ResultOut<'a>(pub &'a StmtResult);

impl Serialize for ResultOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        match self.0 {
            StmtResult::Rows(rows) => {
                let names: Vec<&str> = rows.columns.iter().map(|c| c.name.as_str()).collect();
                map.serialize_entry("columns", &names)?;
                map.serialize_entry("rows", &RowsOut(&rows.rows))?;
            }
            StmtResult::Exec(e) => {
                map.serialize_entry("columns", &["rows_affected", "last_insert_id"])?;
                map.serialize_entry("rows", &[[e.rows_affected as i64, e.last_insert_id]])?;
            }
        }
        map.end()
    }
}

struct RowsOut<'a>(&'a [Vec<Value>]);

impl Serialize for RowsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for row in self.0 {
            seq.serialize_element(&RowOut(row))?;
        }
        seq.end()
    }
}

struct RowOut<'a>(&'a [Value]);

impl Serialize for RowOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&ValueOut(v))?;
        }
        seq.end()
    }
}

/// The whole answer: a bare result for an object request (the original's shape, nothing
/// added), `{"results": [...]}` for an array, with `"seq"` beside `results` when the
/// transaction was published as stream sequence `seq` (also in the `X-Ha-Seq` header).
pub fn encode_response(results: &[StmtResult], is_array: bool, seq: Option<Seq>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Many<'a> {
        results: Vec<ResultOut<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    }
    let out = if is_array {
        serde_json::to_vec(&Many {
            results: results.iter().map(ResultOut).collect(),
            seq: seq.map(|s| s.0),
        })
    } else {
        match results.first() {
            Some(r) => serde_json::to_vec(&ResultOut(r)),
            None => Ok(b"{}".to_vec()),
        }
    };
    // Serializing our own types into a Vec cannot fail.
    let mut out = out.unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Column, ExecSummary, Rows};

    #[test]
    fn big_integers_stay_exact() {
        let r = parse_request(
            br#"{"sql":"SELECT ?","params":[9007199254740993, -9223372036854775808]}"#,
        )
        .unwrap();
        assert_eq!(
            r.stmts[0].params,
            Params::Positional(vec![
                Value::Integer(9007199254740993),
                Value::Integer(i64::MIN)
            ])
        );
        assert!(parse_request(br#"{"sql":"SELECT ?","params":[9223372036854775808]}"#).is_err());
        let e =
            parse_request(br#"{"sql":"SELECT ?","params":[99999999999999999999999]}"#).unwrap_err();
        assert!(e.contains("99999999999999999999999"), "{e}");
        let e =
            parse_request(br#"{"sql":"x","params":{"a":-99999999999999999999999}}"#).unwrap_err();
        assert!(e.contains("64-bit"), "{e}");
        // Floats, and digits inside strings, are not integers.
        let r = parse_request(
            br#"{"sql":"SELECT ?, ?, ?","params":[1.5e300, "99999999999999999999999\"1", -5]}"#,
        )
        .unwrap();
        assert_eq!(
            r.stmts[0].params,
            Params::Positional(vec![
                Value::Real(1.5e300),
                Value::Text("99999999999999999999999\"1".into()),
                Value::Integer(-5),
            ])
        );
        let res = StmtResult::Rows(Rows {
            columns: vec![Column {
                name: "x".into(),
                decl_type: None,
            }],
            rows: vec![vec![Value::Integer(9007199254740993)]],
        });
        assert_eq!(
            String::from_utf8(encode_response(&[res], false, None)).unwrap(),
            "{\"columns\":[\"x\"],\"rows\":[[9007199254740993]]}\n"
        );
    }

    #[test]
    fn keys_lose_their_prefix_and_blobs_decode() {
        let r =
            parse_request(br#"{"sql":"x","params":{"$1":1,":name":"a","@b":{"base64":"AAH/"}}}"#)
                .unwrap();
        let Params::Named(m) = &r.stmts[0].params else {
            panic!()
        };
        assert_eq!(m["1"], Value::Integer(1));
        assert_eq!(m["name"], Value::Text("a".into()));
        assert_eq!(m["b"], Value::Blob(vec![0, 1, 255]));
    }

    #[test]
    fn wrong_shapes_are_refused_with_a_reason() {
        for body in [
            &b"nope"[..],
            b"[]",
            b"42",
            b"{}",
            b"{\"sql\":1}",
            b"[{\"sql\":\"x\"}, 3]",
            b"{\"sql\":\"x\",\"params\":{\"a\":[1]}}",
        ] {
            assert!(
                parse_request(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn exec_results_have_the_original_shape() {
        let res = StmtResult::Exec(ExecSummary {
            rows_affected: 2,
            last_insert_id: 5,
        });
        assert_eq!(
            String::from_utf8(encode_response(std::slice::from_ref(&res), true, None)).unwrap(),
            "{\"results\":[{\"columns\":[\"rows_affected\",\"last_insert_id\"],\"rows\":[[2,5]]}]}\n"
        );
        // A published write: its sequence beside the results; a bare result stays the original's.
        assert_eq!(
            String::from_utf8(encode_response(
                std::slice::from_ref(&res),
                true,
                Some(Seq(12))
            ))
            .unwrap(),
            "{\"results\":[{\"columns\":[\"rows_affected\",\"last_insert_id\"],\"rows\":[[2,5]]}],\"seq\":12}\n"
        );
        assert_eq!(
            String::from_utf8(encode_response(&[res], false, Some(Seq(12)))).unwrap(),
            "{\"columns\":[\"rows_affected\",\"last_insert_id\"],\"rows\":[[2,5]]}\n"
        );
    }
}
