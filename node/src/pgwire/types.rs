//! Owns the mapping between SQLite values and PostgreSQL types: type OIDs from declared column
//! types and values, encoding result cells (text and binary) and decoding bound parameters.
//! Must not run SQL or know about sessions; pure functions only.
//! Invariant: a column is encoded with exactly the type its RowDescription announced, so what
//! Describe said and what Execute sends never disagree; NULL is always a real NULL.

use bytes::{BufMut, BytesMut};
use pgwire::api::Type;
use time::{Date, Month, PrimitiveDateTime, Time};

use crate::exec::Value;

#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    #[error("invalid input for type {ty}: {value:?}")]
    Input { ty: String, value: String },
    #[error("cannot send {value:?} as {ty} in binary format")]
    Output { ty: String, value: String },
}

/// The PostgreSQL type for an SQLite declared column type, by SQLite's own affinity rules
/// refined for the names PostgreSQL users write.
pub fn type_for_decl(decl: &str) -> Type {
    let d = decl.to_ascii_uppercase();
    if d.contains("BOOL") {
        Type::BOOL
    } else if d.contains("TIMESTAMPTZ") || d.contains("WITH TIME ZONE") {
        Type::TIMESTAMPTZ
    } else if d.contains("TIMESTAMP") || d.contains("DATETIME") {
        Type::TIMESTAMP
    } else if d == "DATE" {
        Type::DATE
    } else if d.contains("INT") {
        Type::INT8
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        Type::TEXT
    } else if d.contains("BLOB") || d.contains("BYTEA") {
        Type::BYTEA
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        Type::FLOAT8
    } else if d.contains("NUMERIC") || d.contains("DECIMAL") {
        Type::NUMERIC
    } else {
        Type::TEXT
    }
}

/// The PostgreSQL type for a value whose column has no declared type.
pub fn type_for_value(v: &Value) -> Type {
    match v {
        Value::Integer(_) => Type::INT8,
        Value::Real(_) => Type::FLOAT8,
        Value::Blob(_) => Type::BYTEA,
        Value::Null | Value::Text(_) => Type::TEXT,
    }
}

/// A column's type: declared type first, else the first non-NULL value seen, else text.
pub fn column_type<'a>(decl: Option<&str>, mut values: impl Iterator<Item = &'a Value>) -> Type {
    match decl {
        Some(d) => type_for_decl(d),
        None => values
            .find(|v| !matches!(v, Value::Null))
            .map(type_for_value)
            .unwrap_or(Type::TEXT),
    }
}

/// Appends one DataRow cell (length prefix and bytes) for `v` as `ty` in text or binary.
pub fn encode_cell(
    buf: &mut BytesMut,
    v: &Value,
    ty: &Type,
    binary: bool,
) -> Result<(), TypeError> {
    if matches!(v, Value::Null) {
        buf.put_i32(-1);
        return Ok(());
    }
    let at = buf.len();
    buf.put_i32(0);
    if binary {
        encode_binary(buf, v, ty)?;
    } else {
        buf.put_slice(text_of(v, ty).as_bytes());
    }
    let len = (buf.len() - at - 4) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// The text form PostgreSQL would print for `v` as `ty`.
pub fn text_of(v: &Value, ty: &Type) -> String {
    match (v, ty) {
        (Value::Null, _) => String::new(),
        (Value::Integer(i), t) if *t == Type::BOOL => if *i != 0 { "t" } else { "f" }.into(),
        (Value::Text(s), t) if *t == Type::BOOL => match parse_bool(s) {
            Some(b) => if b { "t" } else { "f" }.into(),
            None => s.clone(),
        },
        (Value::Integer(i), t) if *t == Type::FLOAT8 => float_text(*i as f64),
        (Value::Integer(i), _) => i.to_string(),
        (Value::Real(f), _) => float_text(*f),
        (Value::Text(s), t) if *t == Type::BYTEA => hex_escape(s.as_bytes()),
        (Value::Text(s), t) if *t == Type::TIMESTAMPTZ => match parse_timestamp(s) {
            Some(ts) => format!("{}+00", timestamp_text(ts)),
            None => s.clone(),
        },
        (Value::Text(s), t) if *t == Type::TIMESTAMP => match parse_timestamp(s) {
            Some(ts) => timestamp_text(ts),
            None => s.clone(),
        },
        (Value::Text(s), _) => s.clone(),
        (Value::Blob(b), t) if *t == Type::BYTEA => hex_escape(b),
        (Value::Blob(b), _) => match std::str::from_utf8(b) {
            Ok(s) => s.to_string(),
            Err(_) => hex_escape(b),
        },
    }
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        // Rust's shortest round-trip form, as PostgreSQL 12+ prints (extra_float_digits = 1).
        format!("{f}")
    }
}

fn hex_escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("\\x");
    for byte in b {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

fn out_err(v: &Value, ty: &Type) -> TypeError {
    TypeError::Output {
        ty: ty.name().to_string(),
        value: format!("{v:?}").chars().take(64).collect(),
    }
}

fn encode_binary(buf: &mut BytesMut, v: &Value, ty: &Type) -> Result<(), TypeError> {
    match *ty {
        Type::INT8 => buf.put_i64(as_i64(v).ok_or_else(|| out_err(v, ty))?),
        Type::INT4 => buf.put_i32(
            as_i64(v)
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(|| out_err(v, ty))?,
        ),
        Type::FLOAT8 => buf.put_f64(as_f64(v).ok_or_else(|| out_err(v, ty))?),
        Type::OID => buf.put_u32(
            as_i64(v)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| out_err(v, ty))?,
        ),
        // "char": one byte (catalog answers: relkind, typtype, …).
        Type::CHAR => buf.put_slice(text_of(v, ty).as_bytes().get(..1).unwrap_or_default()),
        Type::BOOL => {
            let b = match v {
                Value::Integer(i) => *i != 0,
                Value::Real(f) => *f != 0.0,
                Value::Text(s) => parse_bool(s).ok_or_else(|| out_err(v, ty))?,
                _ => return Err(out_err(v, ty)),
            };
            buf.put_u8(u8::from(b));
        }
        Type::BYTEA => match v {
            Value::Blob(b) => buf.put_slice(b),
            other => buf.put_slice(text_of(other, &Type::TEXT).as_bytes()),
        },
        Type::NUMERIC => {
            let text = text_of(v, &Type::TEXT);
            encode_numeric(buf, &text).ok_or_else(|| out_err(v, ty))?;
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let ts = match v {
                Value::Text(s) => parse_timestamp(s),
                Value::Integer(secs) => unix_to_timestamp(*secs as f64),
                Value::Real(secs) => unix_to_timestamp(*secs),
                _ => None,
            }
            .ok_or_else(|| out_err(v, ty))?;
            buf.put_i64(micros_since_2000(ts));
        }
        Type::DATE => {
            let d = match v {
                Value::Text(s) => parse_timestamp(s).map(|ts| ts.date()),
                _ => None,
            }
            .ok_or_else(|| out_err(v, ty))?;
            buf.put_i32(d.to_julian_day() - pg_epoch().date().to_julian_day());
        }
        // text, varchar, name and everything announced as text: UTF-8 bytes.
        _ => buf.put_slice(text_of(v, ty).as_bytes()),
    }
    Ok(())
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(*f as i64),
        Value::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Real(f) => Some(*f),
        Value::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "1" | "yes" | "y" | "on" => Some(true),
        "f" | "false" | "0" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

fn pg_epoch() -> PrimitiveDateTime {
    PrimitiveDateTime::new(
        Date::from_calendar_date(2000, Month::January, 1).unwrap_or(Date::MIN),
        Time::MIDNIGHT,
    )
}

fn micros_since_2000(ts: PrimitiveDateTime) -> i64 {
    let d = ts - pg_epoch();
    d.whole_microseconds() as i64
}

fn unix_to_timestamp(secs: f64) -> Option<PrimitiveDateTime> {
    let unix = PrimitiveDateTime::new(
        Date::from_calendar_date(1970, Month::January, 1).ok()?,
        Time::MIDNIGHT,
    );
    unix.checked_add(time::Duration::seconds_f64(secs))
}

/// Parses SQLite's date/time text forms: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.fff]]`, with `T`
/// instead of the space, and a trailing `Z` or `+00`/`+00:00` (other offsets are applied).
pub fn parse_timestamp(s: &str) -> Option<PrimitiveDateTime> {
    let s = s.trim();
    if s.len() < 10 {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let mut dp = date.split('-');
    let y: i32 = dp.next()?.parse().ok()?;
    let m: u8 = dp.next()?.parse().ok()?;
    let d: u8 = dp.next()?.parse().ok()?;
    let date = Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()?;
    let rest = rest.trim_start_matches(['T', ' ']);
    if rest.is_empty() {
        return Some(PrimitiveDateTime::new(date, Time::MIDNIGHT));
    }
    // Split off a zone: Z, +hh[:mm], -hh[:mm].
    let (clock, offset_secs) = match rest.find(['Z', '+', '-']) {
        Some(i) => {
            let (c, z) = rest.split_at(i);
            let secs = if z == "Z" {
                0
            } else {
                let sign = if z.starts_with('-') { -1 } else { 1 };
                let digits: String = z[1..].chars().filter(|c| c.is_ascii_digit()).collect();
                let h: i64 = digits.get(0..2)?.parse().ok()?;
                let mm: i64 = digits.get(2..4).and_then(|m| m.parse().ok()).unwrap_or(0);
                sign * (h * 3600 + mm * 60)
            };
            (c.trim(), secs)
        }
        None => (rest.trim(), 0),
    };
    let mut cp = clock.split(':');
    let h: u8 = cp.next()?.parse().ok()?;
    let mi: u8 = cp.next()?.parse().ok()?;
    let (sec, micro) = match cp.next() {
        Some(sf) => {
            let (s, f) = sf.split_once('.').unwrap_or((sf, ""));
            let mut f: String = f.chars().take(6).collect();
            while f.len() < 6 {
                f.push('0');
            }
            (s.parse::<u8>().ok()?, f.parse::<u32>().ok()?)
        }
        None => (0, 0),
    };
    let t = Time::from_hms_micro(h, mi, sec, micro).ok()?;
    PrimitiveDateTime::new(date, t).checked_sub(time::Duration::seconds(offset_secs))
}

fn timestamp_text(ts: PrimitiveDateTime) -> String {
    let base = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        ts.year(),
        u8::from(ts.month()),
        ts.day(),
        ts.hour(),
        ts.minute(),
        ts.second()
    );
    match ts.microsecond() {
        0 => base,
        us => format!("{base}.{}", format!("{us:06}").trim_end_matches('0')),
    }
}

/// PostgreSQL's binary NUMERIC from a decimal text (`-12.345`, `1e3` is not accepted).
fn encode_numeric(buf: &mut BytesMut, text: &str) -> Option<()> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if t == "NaN" {
        buf.put_i16(0);
        buf.put_i16(0);
        buf.put_u16(0xC000);
        buf.put_i16(0);
        return Some(());
    }
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let dscale = frac.len() as i16;
    // Pad the integer part on the left and the fraction on the right to groups of 4 digits.
    let int = int.trim_start_matches('0');
    let pad_left = (4 - int.len() % 4) % 4;
    let int_p = format!("{}{int}", "0".repeat(pad_left));
    let pad_right = (4 - frac.len() % 4) % 4;
    let frac_p = format!("{frac}{}", "0".repeat(pad_right));
    let mut digits: Vec<i16> = Vec::new();
    for chunk in int_p
        .as_bytes()
        .chunks(4)
        .chain(frac_p.as_bytes().chunks(4))
    {
        let s = std::str::from_utf8(chunk).ok()?;
        digits.push(s.parse().ok()?);
    }
    let mut weight = (int_p.len() / 4) as i16 - 1;
    // Strip leading and trailing zero groups.
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    buf.put_i16(digits.len() as i16);
    buf.put_i16(weight);
    buf.put_u16(if neg && !digits.is_empty() { 0x4000 } else { 0 });
    buf.put_i16(dscale);
    for d in digits {
        buf.put_i16(d);
    }
    Some(())
}

fn decode_numeric(b: &[u8]) -> Option<String> {
    let rd = |i: usize| -> Option<i16> { Some(i16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])) };
    let n = rd(0)? as usize;
    let weight = rd(2)? as i32;
    let sign = rd(4)? as u16;
    let dscale = rd(6)? as usize;
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    let digits: Vec<i16> = (0..n).map(|i| rd(8 + 2 * i)).collect::<Option<_>>()?;
    let mut int = String::new();
    for w in 0..=weight.max(-1) {
        let d = digits.get(w as usize).copied().unwrap_or(0);
        if int.is_empty() {
            int = d.to_string();
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    if int.is_empty() {
        int = "0".into();
    }
    let mut frac = String::new();
    let mut w = weight + 1;
    while frac.len() < dscale {
        let d = if w < 0 {
            0
        } else {
            digits.get(w as usize).copied().unwrap_or(0)
        };
        frac.push_str(&format!("{d:04}"));
        w += 1;
    }
    frac.truncate(dscale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// Decodes one bound parameter into a value SQLite stores well.
pub fn decode_param(raw: Option<&[u8]>, ty: &Type, binary: bool) -> Result<Value, TypeError> {
    let Some(b) = raw else {
        return Ok(Value::Null);
    };
    let bad = || TypeError::Input {
        ty: ty.name().to_string(),
        value: String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned(),
    };
    if binary {
        let fixed = |n: usize| -> Result<&[u8], TypeError> {
            if b.len() == n { Ok(b) } else { Err(bad()) }
        };
        return Ok(match *ty {
            Type::INT2 => {
                Value::Integer(i16::from_be_bytes(fixed(2)?.try_into().map_err(|_| bad())?) as i64)
            }
            Type::INT4 | Type::OID => {
                Value::Integer(i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?) as i64)
            }
            Type::INT8 => {
                Value::Integer(i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?))
            }
            Type::FLOAT4 => {
                Value::Real(f32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?) as f64)
            }
            Type::FLOAT8 => {
                Value::Real(f64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?))
            }
            Type::BOOL => Value::Integer(i64::from(fixed(1)?[0] != 0)),
            Type::BYTEA => Value::Blob(b.to_vec()),
            Type::NUMERIC => number_value(&decode_numeric(b).ok_or_else(bad)?),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let us = i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?);
                let ts = pg_epoch()
                    .checked_add(time::Duration::microseconds(us))
                    .ok_or_else(bad)?;
                Value::Text(timestamp_text(ts))
            }
            Type::DATE => {
                let days = i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?);
                let d = Date::from_julian_day(pg_epoch().date().to_julian_day() + days)
                    .map_err(|_| bad())?;
                Value::Text(format!(
                    "{:04}-{:02}-{:02}",
                    d.year(),
                    u8::from(d.month()),
                    d.day()
                ))
            }
            Type::UUID => {
                let u = fixed(16)?;
                let h: String = u.iter().map(|x| format!("{x:02x}")).collect();
                Value::Text(format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                ))
            }
            Type::JSONB => Value::Text(String::from_utf8_lossy(b.get(1..).unwrap_or(&[])).into()),
            _ => match std::str::from_utf8(b) {
                Ok(s) => Value::Text(s.to_string()),
                Err(_) => Value::Blob(b.to_vec()),
            },
        });
    }
    let s = std::str::from_utf8(b).map_err(|_| bad())?;
    Ok(match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => {
            Value::Integer(s.trim().parse().map_err(|_| bad())?)
        }
        Type::FLOAT4 | Type::FLOAT8 => Value::Real(match s.trim() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            t => t.parse().map_err(|_| bad())?,
        }),
        Type::NUMERIC => number_value(s),
        Type::BOOL => Value::Integer(i64::from(parse_bool(s).ok_or_else(bad)?)),
        Type::BYTEA => match s.strip_prefix("\\x") {
            Some(hex) => Value::Blob(unhex(hex).ok_or_else(bad)?),
            None => Value::Blob(s.as_bytes().to_vec()),
        },
        _ => Value::Text(s.to_string()),
    })
}

/// A decimal text as an integer if it is one, else a real, else kept as text.
fn number_value(s: &str) -> Value {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        Value::Integer(i)
    } else if let Ok(f) = t.parse::<f64>() {
        Value::Real(f)
    } else {
        Value::Text(t.to_string())
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_to_real_oids() {
        assert_eq!(type_for_decl("INTEGER"), Type::INT8);
        assert_eq!(type_for_decl("varchar(20)"), Type::TEXT);
        assert_eq!(type_for_decl("BOOLEAN"), Type::BOOL);
        assert_eq!(type_for_decl("timestamp"), Type::TIMESTAMP);
        assert_eq!(type_for_decl("NUMERIC(10,2)"), Type::NUMERIC);
        assert_eq!(type_for_decl("double precision"), Type::FLOAT8);
        assert_eq!(type_for_decl("blob"), Type::BYTEA);
    }

    #[test]
    fn numeric_binary_round_trips() {
        for s in ["0", "1", "-12.345", "10000", "123456789.0001", "0.05"] {
            let mut b = BytesMut::new();
            encode_numeric(&mut b, s).unwrap();
            assert_eq!(decode_numeric(&b).unwrap(), s, "{s}");
        }
    }

    #[test]
    fn timestamps_parse_sqlite_forms() {
        let ts = parse_timestamp("2024-02-03 04:05:06.5").unwrap();
        assert_eq!(timestamp_text(ts), "2024-02-03 04:05:06.5");
        let ts = parse_timestamp("2024-02-03T06:05:06+02:00").unwrap();
        assert_eq!(timestamp_text(ts), "2024-02-03 04:05:06");
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn null_is_a_real_null_and_text_params_decode_by_type() {
        let mut b = BytesMut::new();
        encode_cell(&mut b, &Value::Null, &Type::TEXT, false).unwrap();
        assert_eq!(&b[..], &(-1i32).to_be_bytes());
        assert_eq!(
            decode_param(Some(b"42"), &Type::INT8, false).unwrap(),
            Value::Integer(42)
        );
        assert_eq!(
            decode_param(Some(b"\\x0aff"), &Type::BYTEA, false).unwrap(),
            Value::Blob(vec![10, 255])
        );
        assert!(decode_param(Some(b"x"), &Type::INT8, false).is_err());
    }
}
