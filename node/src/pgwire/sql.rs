//! Owns the light-weight reading of PostgreSQL-flavoured SQL text: its tokens (from
//! `exec::sql`, the workspace's one SQL reader), the rewrite of
//! PostgreSQL-only spellings SQLite does not know (`::type` casts, `version()`, …), recognition
//! of session commands (SET/SHOW/RESET/DISCARD) and parameter-type inference for Describe.
//! Must not parse SQL properly or run it: SQLite parses; this only looks at tokens.
//! Invariant: text inside string literals and quoted identifiers is never changed.

use std::collections::HashMap;

use pgwire::api::Type;

use crate::exec::sql::{self, Kind};

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Bare word (identifier or keyword), as written.
    Word(String),
    /// "quoted identifier", without quotes.
    Quoted(String),
    /// 'string literal' as written, with quotes.
    Str(String),
    Number(String),
    /// `$1`, `?`, `?3`, `:name`, `@name`, `$name`.
    Param(String),
    Punct(String),
}

/// Splits SQL into tokens with their byte spans; comments and white space are dropped. The
/// tokens are the workspace's SQL reader's (`changeset::sql`), in this module's shape.
pub fn tokenize(sql: &str) -> Vec<(Tok, std::ops::Range<usize>)> {
    sql::tokens(sql)
        .map(|t| {
            let tok = match t.kind {
                Kind::Word => Tok::Word(t.text.to_string()),
                Kind::QuotedIdent => Tok::Quoted(t.inner().to_string()),
                Kind::Str => Tok::Str(t.text.to_string()),
                Kind::Number => Tok::Number(t.text.to_string()),
                Kind::Param => Tok::Param(t.text.to_string()),
                Kind::Punct => Tok::Punct(t.text.to_string()),
            };
            (tok, t.span)
        })
        .collect()
}

fn is_word(t: &Tok, w: &str) -> bool {
    matches!(t, Tok::Word(x) if x.eq_ignore_ascii_case(w))
}

/// Values the rewrite substitutes for PostgreSQL's functions.
pub struct RewriteContext<'a> {
    pub version: &'a str,
    pub database: &'a str,
    pub user: &'a str,
    pub settings: &'a HashMap<String, String>,
    /// The session's process id as sent in BackendKeyData (what `pg_backend_pid()` answers).
    pub backend_pid: i32,
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Rewrites PostgreSQL-only spellings into SQLite: drops `::type` casts, strips the
/// `pg_catalog.` qualifier, and replaces `version()`, `current_database()`, `current_schema()`,
/// `current_user`, `session_user`, `current_setting('x')` and `pg_backend_pid()` with literals.
/// Returns `None` when nothing needed changing.
pub fn rewrite(sql: &str, ctx: &RewriteContext<'_>) -> Option<String> {
    let toks = tokenize(sql);
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let (t, span) = &toks[i];
        // `pg_catalog.` before a word: drop the qualifier.
        if is_word(t, "pg_catalog")
            && matches!(toks.get(i + 1), Some((Tok::Punct(p), _)) if p == ".")
        {
            if let Some((_, next)) = toks.get(i + 2) {
                edits.push((span.start..next.start, String::new()));
            }
            i += 2;
            continue;
        }
        // `::type` (with optional `(n)`, `[]`, and multi-word types such as `double precision`).
        if matches!(t, Tok::Punct(p) if p == "::") {
            let mut j = i + 1;
            while matches!(toks.get(j), Some((Tok::Word(_) | Tok::Quoted(_), _))) {
                j += 1;
                if matches!(toks.get(j), Some((Tok::Punct(p), _)) if p == ".") {
                    j += 1;
                }
            }
            if matches!(toks.get(j), Some((Tok::Punct(p), _)) if p == "(") {
                while j < toks.len() && !matches!(&toks[j].0, Tok::Punct(p) if p == ")") {
                    j += 1;
                }
                j += 1;
            }
            // `[]` (SQLite reads `[...]` as a quoted identifier, so it arrives as Quoted("")).
            while matches!(toks.get(j), Some((Tok::Quoted(q), _)) if q.is_empty()) {
                j += 1;
            }
            while matches!(toks.get(j), Some((Tok::Punct(p), _)) if p == "[")
                && matches!(toks.get(j + 1), Some((Tok::Punct(p), _)) if p == "]")
            {
                j += 2;
            }
            let end = toks
                .get(j.saturating_sub(1))
                .map(|(_, s)| s.end)
                .unwrap_or(span.end);
            edits.push((span.start..end, String::new()));
            i = j;
            continue;
        }
        if let Tok::Word(w) = t {
            let lw = w.to_ascii_lowercase();
            let called = matches!(toks.get(i + 1), Some((Tok::Punct(p), _)) if p == "(");
            let empty_call =
                called && matches!(toks.get(i + 2), Some((Tok::Punct(p), _)) if p == ")");
            let lit = match lw.as_str() {
                "version" if empty_call => Some(quote_literal(ctx.version)),
                "current_database" if empty_call => Some(quote_literal(ctx.database)),
                "current_schema" if empty_call => Some(quote_literal("public")),
                "current_schema" if !called => Some(quote_literal("public")),
                "pg_backend_pid" if empty_call => Some(ctx.backend_pid.to_string()),
                "current_user" | "session_user" | "current_role" if !called => {
                    Some(quote_literal(ctx.user))
                }
                _ => None,
            };
            if let Some(lit) = lit {
                let end = if empty_call {
                    toks[i + 2].1.end
                } else {
                    span.end
                };
                edits.push((span.start..end, lit));
                i += if empty_call { 3 } else { 1 };
                continue;
            }
            if lw == "current_setting"
                && called
                && let (Some((Tok::Str(s), _)), Some((Tok::Punct(p), close))) =
                    (toks.get(i + 2), toks.get(i + 3))
                && p == ")"
            {
                {
                    let name = unquote_str(s).to_ascii_lowercase();
                    let v = ctx.settings.get(&name).cloned().unwrap_or_default();
                    edits.push((span.start..close.end, quote_literal(&v)));
                    i += 4;
                    continue;
                }
            }
        }
        i += 1;
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for (range, text) in edits {
        if range.start < at {
            continue;
        }
        out.push_str(&sql[at..range.start]);
        out.push_str(&text);
        at = range.end;
    }
    out.push_str(&sql[at..]);
    Some(out)
}

fn unquote_str(s: &str) -> String {
    s.trim_start_matches('\'')
        .trim_end_matches('\'')
        .replace("''", "'")
}

/// Session commands answered by the front end itself.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    Set {
        name: String,
        value: String,
    },
    Reset(Option<String>),
    Show(String),
    ShowAll,
    /// DISCARD, DEALLOCATE, LISTEN, UNLISTEN, …: accepted, nothing to do; the tag to answer.
    Noop(String),
}

/// Recognises SET/SHOW/RESET and friends.
pub fn session_command(sql: &str) -> Option<SessionCommand> {
    let toks: Vec<Tok> = tokenize(sql)
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| !matches!(t, Tok::Punct(p) if p == ";"))
        .collect();
    let first = match toks.first() {
        Some(Tok::Word(w)) => w.to_ascii_uppercase(),
        _ => return None,
    };
    let word_text = |t: &Tok| match t {
        Tok::Word(w) | Tok::Number(w) => w.clone(),
        Tok::Quoted(q) => q.clone(),
        Tok::Str(s) => unquote_str(s),
        Tok::Punct(p) => p.clone(),
        Tok::Param(p) => p.clone(),
    };
    // A setting's name from token `k` on, dotted names (custom settings) joined.
    let dotted = |k: usize| -> String {
        let mut name = toks.get(k).map(word_text).unwrap_or_default();
        let mut k = k + 1;
        while matches!(toks.get(k), Some(Tok::Punct(p)) if p == ".") {
            name.push('.');
            name.push_str(&toks.get(k + 1).map(word_text).unwrap_or_default());
            k += 2;
        }
        name.to_ascii_lowercase()
    };
    match first.as_str() {
        "SET" => {
            let mut k = 1;
            if matches!(toks.get(k), Some(t) if is_word(t, "SESSION") || is_word(t, "LOCAL")) {
                k += 1;
            }
            if matches!(toks.get(k), Some(t) if is_word(t, "TIME"))
                && matches!(toks.get(k + 1), Some(t) if is_word(t, "ZONE"))
            {
                let value = toks.get(k + 2).map(word_text).unwrap_or_default();
                return Some(SessionCommand::Set {
                    name: "timezone".into(),
                    value,
                });
            }
            let name = match toks.get(k)? {
                Tok::Word(w) | Tok::Quoted(w) => w.to_ascii_lowercase(),
                _ => return None,
            };
            // Dotted names (custom settings).
            let mut k = k + 1;
            let mut name = name;
            while matches!(toks.get(k), Some(Tok::Punct(p)) if p == ".") {
                name.push('.');
                name.push_str(&toks.get(k + 1).map(word_text).unwrap_or_default());
                k += 2;
            }
            if matches!(toks.get(k), Some(t) if is_word(t, "TO") || matches!(t, Tok::Punct(p) if p == "="))
            {
                k += 1;
            }
            let value = toks[k.min(toks.len())..]
                .iter()
                .map(word_text)
                .collect::<Vec<_>>()
                .join(" ")
                .replace(" , ", ", ");
            Some(SessionCommand::Set { name, value })
        }
        "RESET" => match toks.get(1) {
            Some(t) if is_word(t, "ALL") => Some(SessionCommand::Reset(None)),
            Some(_) => Some(SessionCommand::Reset(Some(dotted(1)))),
            None => None,
        },
        "SHOW" => match toks.get(1) {
            Some(t) if is_word(t, "ALL") => Some(SessionCommand::ShowAll),
            Some(t) if is_word(t, "TIME") => Some(SessionCommand::Show("timezone".into())),
            Some(t) if is_word(t, "TRANSACTION") => {
                Some(SessionCommand::Show("transaction_isolation".into()))
            }
            Some(_) => Some(SessionCommand::Show(dotted(1))),
            None => None,
        },
        "DISCARD" => Some(SessionCommand::Noop(format!(
            "DISCARD {}",
            toks.get(1)
                .map(word_text)
                .unwrap_or_default()
                .to_uppercase()
        ))),
        "DEALLOCATE" => Some(SessionCommand::Noop("DEALLOCATE".into())),
        "LISTEN" => Some(SessionCommand::Noop("LISTEN".into())),
        "UNLISTEN" => Some(SessionCommand::Noop("UNLISTEN".into())),
        _ => None,
    }
}

/// Infers the PostgreSQL type of each parameter from the column it is compared with or
/// inserted into. `params` are SQLite's parameter names in SQLite's order; `columns` maps a
/// lower-case table name to its columns (lower case, declared type) in table order. Returns one type per
/// SQLite parameter; `None` where nothing could be inferred.
pub fn infer_param_types(
    sql: &str,
    params: &[Option<String>],
    columns: &HashMap<String, Vec<(String, String)>>,
) -> Vec<Option<Type>> {
    let col_in = |t: &str, c: &str| -> Option<String> {
        columns
            .get(t)?
            .iter()
            .find(|(n, _)| n == c)
            .map(|(_, d)| d.clone())
    };
    // Bare `?` placeholders have no name: the k-th one in the text is the k-th unnamed one.
    let mut anon = 0;
    let toks: Vec<Tok> = tokenize(sql)
        .into_iter()
        .map(|(t, _)| match t {
            Tok::Param(p) if p == "?" => {
                anon += 1;
                Tok::Param(format!("?#{anon}"))
            }
            t => t,
        })
        .collect();
    let mut anon = 0;
    let params: Vec<Option<String>> = params
        .iter()
        .map(|p| match p {
            Some(n) => Some(n.clone()),
            None => {
                anon += 1;
                Some(format!("?#{anon}"))
            }
        })
        .collect();
    // Tables the statement names, for looking up columns there first.
    let named_tables: Vec<&String> = toks
        .iter()
        .filter_map(|t| match t {
            Tok::Word(w) | Tok::Quoted(w) => {
                columns.get_key_value(&w.to_lowercase()).map(|(k, _)| k)
            }
            _ => None,
        })
        .collect();
    let lookup = |col: &str| -> Option<Type> {
        let col = col.to_lowercase();
        let from_named = named_tables.iter().find_map(|t| col_in(t, &col));
        let any = || columns.keys().find_map(|t| col_in(t, &col));
        from_named
            .or_else(any)
            .map(|decl| super::types::type_for_decl(&decl))
    };
    let ident = |t: Option<&Tok>| match t {
        Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Some(w.clone()),
        _ => None,
    };
    let is_cmp = |t: Option<&Tok>| {
        matches!(t, Some(Tok::Punct(p)) if matches!(p.as_str(), "=" | "==" | "<" | ">" | "<=" | ">=" | "<>" | "!="))
            || matches!(t, Some(w) if is_word(w, "LIKE") || is_word(w, "GLOB"))
    };
    // INSERT INTO t (a, b) VALUES (…): the column list, for tuples in VALUES.
    let insert_cols: Option<Vec<String>> = (|| {
        let p = toks
            .iter()
            .position(|t| is_word(t, "INSERT") || is_word(t, "REPLACE"))?;
        let open = toks[p..]
            .iter()
            .position(|t| matches!(t, Tok::Punct(x) if x == "("))?
            + p;
        let values = toks.iter().position(|t| is_word(t, "VALUES"))?;
        if open > values {
            // INSERT INTO t VALUES (…): every column of t, in order.
            let into = toks.iter().position(|t| is_word(t, "INTO"))?;
            let table = ident(toks.get(into + 1))?.to_lowercase();
            return Some(
                columns
                    .get(&table)?
                    .iter()
                    .map(|(n, _)| n.clone())
                    .collect(),
            );
        }
        Some(
            toks[open + 1..values]
                .iter()
                .filter_map(|t| ident(Some(t)))
                .collect(),
        )
    })();
    let values_at = toks.iter().position(|t| is_word(t, "VALUES"));

    let mut by_name: HashMap<String, Type> = HashMap::new();
    for (i, t) in toks.iter().enumerate() {
        let Tok::Param(name) = t else { continue };
        let mut ty = None;
        if is_cmp(toks.get(i.wrapping_sub(1))) {
            // col = $1, t.col = $1
            ty = ident(toks.get(i.wrapping_sub(2))).and_then(|c| lookup(&c));
        }
        if ty.is_none() && is_cmp(toks.get(i + 1)) {
            ty = ident(toks.get(i + 2)).and_then(|c| lookup(&c));
        }
        if ty.is_none()
            && matches!(toks.get(i.wrapping_sub(1)), Some(w) if is_word(w, "LIMIT") || is_word(w, "OFFSET"))
        {
            ty = Some(Type::INT8);
        }
        if ty.is_none()
            && let (Some(cols), Some(v)) = (&insert_cols, values_at)
            && i > v
        {
            // Position of this token inside its tuple: commas at depth 1 since the last "(".
            let mut depth = 0i32;
            let mut pos = 0usize;
            for t2 in toks[v + 1..i].iter() {
                match t2 {
                    Tok::Punct(p) if p == "(" => {
                        depth += 1;
                        if depth == 1 {
                            pos = 0;
                        }
                    }
                    Tok::Punct(p) if p == ")" => depth -= 1,
                    Tok::Punct(p) if p == "," && depth == 1 => pos += 1,
                    _ => {}
                }
            }
            if depth == 1 {
                ty = cols.get(pos).and_then(|c| lookup(c));
            }
        }
        if let Some(ty) = ty {
            by_name.entry(name.clone()).or_insert(ty);
        }
    }
    params
        .iter()
        .map(|p| p.as_ref().and_then(|n| by_name.get(n).cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_settings() -> HashMap<String, String> {
        HashMap::from([("search_path".to_string(), "public".to_string())])
    }

    #[test]
    fn rewrite_drops_casts_and_answers_functions_but_not_inside_strings() {
        let s = ctx_settings();
        let ctx = RewriteContext {
            version: "PostgreSQL 15",
            database: "ha",
            user: "ha",
            settings: &s,
            backend_pid: 4242,
        };
        assert_eq!(
            rewrite("select $1::int8, 'a::b', version()", &ctx).unwrap(),
            "select $1, 'a::b', 'PostgreSQL 15'"
        );
        assert_eq!(
            rewrite("SELECT pg_catalog.current_setting('search_path')", &ctx).unwrap(),
            "SELECT 'public'"
        );
        assert_eq!(
            rewrite("select x::character varying(10)[] from t", &ctx).unwrap(),
            "select x from t"
        );
        assert_eq!(
            rewrite("SELECT pg_backend_pid()", &ctx).unwrap(),
            "SELECT 4242"
        );
        assert!(rewrite("select 1", &ctx).is_none());
    }

    #[test]
    fn session_commands_are_recognised() {
        assert_eq!(
            session_command("SET application_name = 'psql'"),
            Some(SessionCommand::Set {
                name: "application_name".into(),
                value: "psql".into()
            })
        );
        assert_eq!(
            session_command("set session time zone 'UTC'"),
            Some(SessionCommand::Set {
                name: "timezone".into(),
                value: "UTC".into()
            })
        );
        assert_eq!(
            session_command("SHOW server_version;"),
            Some(SessionCommand::Show("server_version".into()))
        );
        assert_eq!(
            session_command("SET ha.min_seq = 12"),
            Some(SessionCommand::Set {
                name: "ha.min_seq".into(),
                value: "12".into()
            })
        );
        assert_eq!(
            session_command("RESET ha.min_seq"),
            Some(SessionCommand::Reset(Some("ha.min_seq".into())))
        );
        assert_eq!(
            session_command("show HA.min_seq_timeout"),
            Some(SessionCommand::Show("ha.min_seq_timeout".into()))
        );
        assert_eq!(session_command("select 1"), None);
    }

    #[test]
    fn parameter_types_come_from_the_columns_they_meet() {
        let cols = HashMap::from([(
            "users".to_string(),
            vec![
                ("id".to_string(), "INTEGER".to_string()),
                ("name".to_string(), "TEXT".to_string()),
                ("score".to_string(), "REAL".to_string()),
            ],
        )]);
        let p = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        assert_eq!(
            infer_param_types(
                "INSERT INTO users(id, name, score) VALUES ($1, $2, $3)",
                &p(&["$1", "$2", "$3"]),
                &cols
            ),
            vec![Some(Type::INT8), Some(Type::TEXT), Some(Type::FLOAT8)]
        );
        assert_eq!(
            infer_param_types(
                "SELECT * FROM users WHERE id = $1 AND $2 < score LIMIT $3",
                &p(&["$1", "$2", "$3"]),
                &cols
            ),
            vec![Some(Type::INT8), Some(Type::FLOAT8), Some(Type::INT8)]
        );
        assert_eq!(
            infer_param_types(
                "INSERT INTO users VALUES ($1, $2)",
                &p(&["$1", "$2"]),
                &cols
            ),
            vec![Some(Type::INT8), Some(Type::TEXT)]
        );
        assert_eq!(
            infer_param_types("SELECT $1", &p(&["$1"]), &cols),
            vec![None]
        );
    }
}
