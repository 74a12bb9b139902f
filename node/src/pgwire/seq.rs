//! Owns read-your-writes in PostgreSQL terms: `SELECT ha_last_seq()` (the stream sequence of
//! the session's last published commit) and the settings `ha.min_seq` (every later statement
//! first waits until the node has applied it) and `ha.min_seq_timeout` (how long, default 5 s).
//! Must not wait itself: `exec::Session` waits; this reads the SQL text and setting values.
//! Invariant: `ha_last_seq()` is answered when the statement runs, never from a value frozen
//! at Parse, so a prepared statement reused later gives the sequence of that moment.

use std::time::Duration;

use super::sql::{Tok, tokenize};
use crate::exec::{Column, Rows, Seq, Value};

pub const MIN_SEQ: &str = "ha.min_seq";
pub const MIN_SEQ_TIMEOUT: &str = "ha.min_seq_timeout";
/// How long a statement waits for `ha.min_seq` unless `ha.min_seq_timeout` says otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

fn word(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
}

fn punct(t: Option<&Tok>, p: &str) -> bool {
    matches!(t, Some(Tok::Punct(x)) if x == p)
}

/// `SELECT ha_last_seq() [[AS] name] [;]`: the name of its one column, if `sql` is that query.
pub fn last_seq_query(sql: &str) -> Option<String> {
    let toks: Vec<Tok> = tokenize(sql).into_iter().map(|(t, _)| t).collect();
    let toks = match toks.last() {
        Some(Tok::Punct(p)) if p == ";" => &toks[..toks.len() - 1],
        _ => &toks[..],
    };
    if !(word(toks.first(), "SELECT")
        && word(toks.get(1), "ha_last_seq")
        && punct(toks.get(2), "(")
        && punct(toks.get(3), ")"))
    {
        return None;
    }
    let alias = match &toks[4..] {
        [] => "ha_last_seq".to_string(),
        [Tok::Word(a)] if !a.eq_ignore_ascii_case("FROM") => a.to_ascii_lowercase(),
        [Tok::Quoted(a)] => a.clone(),
        [as_, Tok::Word(a)] if word(Some(as_), "AS") => a.to_ascii_lowercase(),
        [as_, Tok::Quoted(a)] if word(Some(as_), "AS") => a.clone(),
        _ => return None,
    };
    Some(alias)
}

/// The answer of `ha_last_seq()`: one BIGINT row, NULL when the session published nothing.
pub fn last_seq_rows(column: &str, seq: Option<Seq>) -> Rows {
    Rows {
        columns: vec![Column {
            name: column.to_string(),
            decl_type: Some("BIGINT".into()),
        }],
        rows: vec![vec![
            seq.map_or(Value::Null, |s| Value::Integer(s.0 as i64)),
        ]],
    }
}

/// A value of `ha.min_seq`: a stream sequence; 0 or empty means "do not wait".
pub fn parse_min_seq(value: &str) -> Result<Option<Seq>, String> {
    let v = value.trim().trim_matches('\'').trim();
    if v.is_empty() || v.eq_ignore_ascii_case("default") {
        return Ok(None);
    }
    let n = v.parse::<u64>().map_err(|_| {
        format!("invalid value for parameter \"{MIN_SEQ}\": \"{value}\": expected a stream sequence (SELECT ha_last_seq())")
    })?;
    Ok((n > 0).then_some(Seq(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_seq_query_is_recognised_with_its_alias() {
        assert_eq!(
            last_seq_query("SELECT ha_last_seq()"),
            Some("ha_last_seq".into())
        );
        assert_eq!(
            last_seq_query("select HA_LAST_SEQ() AS s;"),
            Some("s".into())
        );
        assert_eq!(last_seq_query("SELECT ha_last_seq() t"), Some("t".into()));
        assert_eq!(last_seq_query("SELECT ha_last_seq() + 1"), None);
        assert_eq!(last_seq_query("SELECT 'ha_last_seq()'"), None);
        assert_eq!(last_seq_query("SELECT x FROM t"), None);
    }

    #[test]
    fn min_seq_values_are_sequences_or_nothing() {
        assert_eq!(parse_min_seq("42"), Ok(Some(Seq(42))));
        assert_eq!(parse_min_seq("'42'"), Ok(Some(Seq(42))));
        assert_eq!(parse_min_seq("0"), Ok(None));
        assert_eq!(parse_min_seq("DEFAULT"), Ok(None));
        assert!(parse_min_seq("-1").unwrap_err().contains("ha.min_seq"));
    }
}
