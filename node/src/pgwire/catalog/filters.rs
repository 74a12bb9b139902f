//! Owns the value filters of a catalog query that its answer honours: `relname = …`,
//! `relname IN (…)`, `relkind IN (…)` / `relkind = ANY (ARRAY[…])`, an OID compared by `oid`,
//! `attrelid`, `conrelid` or `indrelid`, `contype = …`, `typtype = …` and `NOT indisprimary`.
//! Values are literals or `$n` parameters, resolved when the query runs. A comparison with
//! anything but values (a column, a function call, a subquery) is not a filter here.

use std::collections::BTreeMap;

use crate::exec::Value;
use crate::pgwire::sql::{Tok, tokenize};

/// The filters found in a query's text (values may be parameters).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Filters {
    pub(super) relkinds: Option<Vec<Arg>>,
    pub(super) names: Option<Vec<Arg>>,
    pub(super) oids: Option<Vec<Arg>>,
    pub(super) contype: Option<Vec<Arg>>,
    pub(super) typtype: Option<Vec<Arg>>,
    pub(super) not_primary: bool,
    /// `relkind <> v` / `relname != v` exclusions.
    pub(super) not_relkinds: Vec<Arg>,
    pub(super) not_names: Vec<Arg>,
    /// A relname or relkind condition that is not a comparison with values (a join, a
    /// subquery, LIKE, a pattern from a parameter): the query is refused rather than answered
    /// as if the condition were not there.
    pub(super) unreadable: Option<&'static str>,
}

/// The filters with their parameters bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Resolved {
    /// relkind letters (`r`, `v`, `i`, …); `None` when the query does not filter on it.
    pub(super) relkinds: Option<Vec<char>>,
    pub(super) names: Option<Vec<String>>,
    pub(super) oids: Option<Vec<String>>,
    pub(super) contype: Option<Vec<String>>,
    pub(super) typtype: Option<Vec<String>>,
    pub(super) not_primary: bool,
    pub(super) not_relkinds: Vec<char>,
    pub(super) not_names: Vec<String>,
    /// The OID or type name the query is about (see `recognise::argument`).
    pub(super) arg: Option<String>,
}

const OID_COLUMNS: &[&str] = &["oid", "attrelid", "conrelid", "indrelid"];

/// Finds the filters of a tokenized query; the first comparison of each column counts.
pub(super) fn filters(toks: &[Tok]) -> Filters {
    let mut f = Filters {
        not_primary: not_primary(toks),
        ..Filters::default()
    };
    for (i, t) in toks.iter().enumerate() {
        let Tok::Word(w) = t else { continue };
        // A column, not the name of a qualified relation or a function.
        if matches!(toks.get(i + 1), Some(Tok::Punct(p)) if p == "." || p == "(") {
            continue;
        }
        let w = w.to_ascii_lowercase();
        let rest = &toks[i + 1..];
        if let Some(v) = excluded_value(rest) {
            match w.as_str() {
                "relkind" => f.not_relkinds.push(v),
                "relname" => f.not_names.push(v),
                _ => {}
            }
            continue;
        }
        if matches!(w.as_str(), "relname" | "relkind")
            && compared(rest)
            && compared_values(rest).is_none()
            && !(w == "relname" && literal_pattern(rest))
        {
            f.unreadable
                .get_or_insert(if w == "relname" { "relname" } else { "relkind" });
            continue;
        }
        let slot = match w.as_str() {
            "relkind" => &mut f.relkinds,
            "relname" => &mut f.names,
            "contype" => &mut f.contype,
            "typtype" => &mut f.typtype,
            c if OID_COLUMNS.contains(&c) => &mut f.oids,
            _ => continue,
        };
        if slot.is_none() {
            *slot = compared_values(&toks[i + 1..]);
        }
    }
    f
}

/// `NOT indisprimary`, the column maybe qualified (`NOT pg_catalog.pg_index.indisprimary`).
fn not_primary(toks: &[Tok]) -> bool {
    toks.iter().enumerate().any(|(i, t)| {
        if !matches!(t, Tok::Word(n) if n.eq_ignore_ascii_case("not")) {
            return false;
        }
        let mut k = i + 1;
        while matches!(toks.get(k + 1), Some(Tok::Punct(p)) if p == ".") {
            k += 2;
        }
        matches!(toks.get(k), Some(Tok::Word(c)) if c.eq_ignore_ascii_case("indisprimary"))
    })
}

/// The value after `<> v` / `!= v` (then `AND`, `)`, the end, …); `None` for anything else.
fn excluded_value(rest: &[Tok]) -> Option<Arg> {
    if !matches!(rest.first(), Some(Tok::Punct(p)) if p == "<>" || p == "!=") {
        return None;
    }
    let mut eq = rest[..rest.len().min(3)].to_vec();
    eq[0] = Tok::Punct("=".into());
    compared_values(&eq)?.pop()
}

/// Whether a comparison follows a column (`=`, `<>`, `IN`, `LIKE`, `~`, `OPERATOR(…)`, …).
fn compared(rest: &[Tok]) -> bool {
    match rest.first() {
        Some(Tok::Punct(p)) => matches!(
            p.as_str(),
            "=" | "==" | "<>" | "!=" | "<" | ">" | "<=" | ">=" | "~" | "~~" | "!~"
        ),
        Some(Tok::Word(w)) => matches!(
            w.to_ascii_lowercase().as_str(),
            "in" | "not" | "like" | "ilike" | "similar" | "operator" | "glob" | "regexp"
        ),
        _ => false,
    }
}

/// psql's `relname ~ '…'` / `relname OPERATOR(pg_catalog.~) '…'` with a literal pattern.
fn literal_pattern(rest: &[Tok]) -> bool {
    matches!(pattern_operand(rest), Some(Tok::Str(_)))
}

/// What a column is matched against by `~ x` or `OPERATOR(pg_catalog.~) x` (`rest` starts after
/// the column).
pub(super) fn pattern_operand(rest: &[Tok]) -> Option<&Tok> {
    match rest.first() {
        Some(Tok::Punct(p)) if p == "~" => rest.get(1),
        Some(Tok::Word(w)) if w.eq_ignore_ascii_case("operator") => rest
            .iter()
            .position(|t| matches!(t, Tok::Punct(p) if p == ")"))
            .and_then(|k| rest.get(k + 1)),
        _ => None,
    }
}

/// The values after `= v`, `IN (v, …)` or `= ANY (ARRAY[v, …])`; `None` if the comparison is
/// with anything else.
fn compared_values(rest: &[Tok]) -> Option<Vec<Arg>> {
    let punct = |k: usize, s: &str| matches!(rest.get(k), Some(Tok::Punct(p)) if p == s);
    let word =
        |k: usize, s: &str| matches!(rest.get(k), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(s));
    if punct(0, "=") && word(1, "any") && punct(2, "(") && word(3, "array") {
        // The SQL reader takes `[…]` for a quoted identifier (SQLite's spelling): read inside.
        return match rest.get(4) {
            Some(Tok::Quoted(inner)) => {
                let mut toks: Vec<Tok> = tokenize(inner).into_iter().map(|(t, _)| t).collect();
                toks.push(Tok::Punct("]".into()));
                value_list(&toks, "]")
            }
            Some(Tok::Punct(p)) if p == "[" => value_list(&rest[5..], "]"),
            _ => None,
        };
    }
    if word(0, "in") && punct(1, "(") {
        return value_list(&rest[2..], ")");
    }
    if punct(0, "=") {
        let v = value(rest.get(1)?)?;
        // `= $1::VARCHAR` is a value; `= $1 + 1` or `= 'x' || y` is not.
        let next = rest.get(2);
        let ends = match next {
            None => true,
            Some(Tok::Punct(p)) => matches!(p.as_str(), "::" | ")" | ";" | ","),
            Some(Tok::Word(w)) => matches!(
                w.to_ascii_lowercase().as_str(),
                "and" | "or" | "order" | "group" | "limit" | "left" | "join" | "inner" | "where"
            ),
            _ => false,
        };
        return ends.then(|| vec![v]);
    }
    None
}

/// Values separated by commas (each optionally cast) up to `close`.
fn value_list(toks: &[Tok], close: &str) -> Option<Vec<Arg>> {
    let mut out = Vec::new();
    let mut k = 0;
    loop {
        out.push(value(toks.get(k)?)?);
        k += 1;
        if matches!(toks.get(k), Some(Tok::Punct(p)) if p == "::") {
            k += 2;
        }
        match toks.get(k)? {
            Tok::Punct(p) if p == "," => k += 1,
            Tok::Punct(p) if p == close => return Some(out),
            _ => return None,
        }
    }
}

fn value(t: &Tok) -> Option<Arg> {
    match t {
        Tok::Str(s) => Some(Arg::Lit(unquote(s))),
        Tok::Number(n) => Some(Arg::Lit(n.clone())),
        Tok::Param(p) => p
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .map(Arg::Param),
        _ => None,
    }
}

/// A literal, or the text of the bound parameter (`None` if unbound or NULL).
pub(super) fn resolve_arg(a: &Arg, params: &BTreeMap<String, Value>) -> Option<String> {
    match a {
        Arg::Lit(s) => Some(s.clone()),
        Arg::Param(n) => match params.get(&n.to_string()) {
            Some(Value::Integer(i)) => Some(i.to_string()),
            Some(Value::Text(s)) => Some(s.clone()),
            Some(_) | None => None,
        },
    }
}

impl Filters {
    pub(super) fn resolve(&self, arg: Option<&Arg>, params: &BTreeMap<String, Value>) -> Resolved {
        let all = |v: &Option<Vec<Arg>>| {
            v.as_ref().map(|v| {
                v.iter()
                    .filter_map(|a| resolve_arg(a, params))
                    .collect::<Vec<_>>()
            })
        };
        Resolved {
            relkinds: all(&self.relkinds).map(|v| v.iter().flat_map(|s| s.chars()).collect()),
            names: all(&self.names),
            oids: all(&self.oids),
            contype: all(&self.contype),
            typtype: all(&self.typtype),
            not_primary: self.not_primary,
            not_relkinds: self
                .not_relkinds
                .iter()
                .filter_map(|a| resolve_arg(a, params))
                .flat_map(|s| s.chars().collect::<Vec<_>>())
                .collect(),
            not_names: self
                .not_names
                .iter()
                .filter_map(|a| resolve_arg(a, params))
                .collect(),
            arg: arg.and_then(|a| resolve_arg(a, params)),
        }
    }
}

/// A value in a catalog query: a literal or a bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arg {
    Lit(String),
    /// 1-based parameter number.
    Param(usize),
}

/// A SQL string literal's text (`'a''b'` → `a'b`, also `E'…'`).
pub(super) fn unquote(s: &str) -> String {
    let s = s.strip_prefix(['E', 'e']).unwrap_or(s);
    s.strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(s)
        .replace("''", "'")
}
