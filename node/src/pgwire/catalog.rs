//! Owns the answers to the PostgreSQL catalog queries that psql and drivers send (`pg_class`,
//! `pg_attribute`, `pg_index`, `pg_type`, …), computed from SQLite's own schema.
//! Must not write or keep state: every answer is read fresh from the database via `exec`, and
//! queries naming a catalog relation that is not understood fail with 42P01, never garbage.
//! Invariant: an answer has exactly the select list of the query (count, order, names), since
//! psql reads results by position; only the values come from here.
//!
//! How: psql 15's queries (captured from a real PostgreSQL 15 with `log_statement=all`) are
//! recognised by the catalog relations they read and a few marker words, not by their text. The
//! top-level select list is split into items, and each item is matched to a field of the
//! answer by its alias or by the words of its expression (`c2.relname` → `relname`,
//! `pg_catalog.format_type(…)` → `format_type`); items that match nothing are NULL. So the
//! `\d+` variants and other clients' spellings of the same question get sensible answers too.
//! Relation OIDs are a stable hash of the name (`oid_of`), the same on every node.

use std::collections::BTreeMap;

use pgwire::api::Type;
use pgwire::error::PgWireError;

use super::error::{to_pg, user_error};
use super::sql::{Tok, tokenize};
use crate::exec::{ExecError, Executor, Params, Rows, Stmt, StmtResult, Value};

/// What a recognised catalog query asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `\dt`, `\d`, `\di`, `\dv`: pg_class by relkind, with an optional name pattern.
    Relations,
    /// `\d NAME`, first step: the OIDs of the relations whose name matches.
    FindRelation,
    /// `\d NAME`: pg_class flags of one relation (`relchecks`, `relkind`, …).
    RelationInfo,
    /// `\d NAME`: pg_attribute of one table or index.
    Attributes,
    /// `\d TABLE`: its indexes (pg_index by `indrelid`).
    TableIndexes,
    /// `\d INDEX`: the index itself (pg_index by `indexrelid`).
    IndexInfo,
    /// `\d TABLE`: its foreign keys (pg_constraint by `conrelid`, contype 'f').
    ForeignKeys,
    /// `\d TABLE`: foreign keys of other tables referencing it (by `confrelid`).
    ReferencedBy,
    /// `\l`: pg_database.
    Databases,
    /// `\dn`: pg_namespace.
    Schemas,
    /// `\du`: pg_roles / pg_user.
    Roles,
    /// pg_type lookups (tokio-postgres' and psycopg's type introspection).
    Types,
    /// Catalogs that are empty here (policies, triggers, publications, inheritance, …).
    Empty,
}

/// A catalog query this front end answers itself, or refuses clearly.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Known(Known),
    /// A catalog relation ha does not provide: answered with 42P01 naming it.
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub kind: Kind,
    /// The select list: output column names and the lower-case words of each expression.
    items: Vec<Item>,
    /// relkinds of a `relkind IN (…)` filter (`r`, `v`, `i`, …).
    relkinds: Vec<char>,
    /// A `relname ~ '^(…)$'` pattern.
    pattern: Option<String>,
    /// The OID (or type name) the query is about: a literal or a `$n` parameter.
    arg: Option<Arg>,
    /// `$n` parameters of the query, and whether each is an OID.
    params: Vec<Type>,
}

#[derive(Debug, Clone, PartialEq)]
struct Item {
    name: String,
    alias: Option<String>,
    words: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Lit(String),
    /// 1-based parameter number.
    Param(usize),
}

/// Relation names of PostgreSQL's catalogs that may appear unqualified.
const CATALOG_RELATIONS: &[&str] = &[
    "pg_class",
    "pg_namespace",
    "pg_attribute",
    "pg_attrdef",
    "pg_type",
    "pg_range",
    "pg_index",
    "pg_am",
    "pg_constraint",
    "pg_database",
    "pg_roles",
    "pg_user",
    "pg_authid",
    "pg_auth_members",
    "pg_proc",
    "pg_settings",
    "pg_description",
    "pg_collation",
    "pg_enum",
    "pg_extension",
    "pg_tables",
    "pg_views",
    "pg_indexes",
    "pg_trigger",
    "pg_policy",
    "pg_inherits",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_stat_activity",
    "pg_tablespace",
    "pg_rewrite",
    "pg_sequence",
    "pg_foreign_table",
    "pg_operator",
    "pg_cast",
];

/// Relations an always-empty answer may also read (joined in by psql's queries).
const EMPTY_OK: &[&str] = &[
    "pg_policy",
    "pg_roles",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_class",
    "pg_attribute",
    "pg_trigger",
    "pg_inherits",
    "pg_constraint",
    "pg_rewrite",
];

/// The catalog relations a statement reads: `pg_catalog.x`, `information_schema.x`, or a bare
/// well-known catalog name that is not called as a function. Lower case, in order of appearance.
fn catalog_relations(toks: &[Tok]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let is_dot = |t: Option<&Tok>| matches!(t, Some(Tok::Punct(p)) if p == ".");
    let is_call = |t: Option<&Tok>| matches!(t, Some(Tok::Punct(p)) if p == "(");
    for (i, t) in toks.iter().enumerate() {
        let Tok::Word(w) = t else { continue };
        let lw = w.to_ascii_lowercase();
        let qualified = i >= 2
            && is_dot(toks.get(i - 1))
            && matches!(&toks[i - 2], Tok::Word(s) if s.eq_ignore_ascii_case("pg_catalog") || s.eq_ignore_ascii_case("information_schema"));
        let schema = if qualified {
            match &toks[i - 2] {
                Tok::Word(s) => s.to_ascii_lowercase(),
                _ => String::new(),
            }
        } else {
            String::new()
        };
        let name = if qualified && schema == "information_schema" {
            format!("information_schema.{lw}")
        } else {
            lw.clone()
        };
        let relation = if qualified {
            // pg_catalog.version() is a function; pg_catalog.pg_class a relation. Type names
            // after a cast (`::pg_catalog.text`) are neither.
            let after_cast = i >= 3 && matches!(&toks[i - 3], Tok::Punct(p) if p == "::");
            !is_call(toks.get(i + 1))
                && !after_cast
                && (schema == "information_schema" || lw.starts_with("pg_"))
        } else {
            !is_dot(toks.get(i.wrapping_sub(1)))
                && !is_call(toks.get(i + 1))
                && CATALOG_RELATIONS.contains(&lw.as_str())
        };
        if relation && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Recognises a catalog query psql or a driver sends; `None` for anything else (which then
/// runs on SQLite as it is).
pub fn recognise(sql: &str) -> Option<Query> {
    // Cheap test first: this runs for every statement.
    let lower_has = |needle: &[u8]| {
        sql.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    if !lower_has(b"pg_") && !lower_has(b"information_schema") {
        return None;
    }
    let toks: Vec<Tok> = tokenize(sql).into_iter().map(|(t, _)| t).collect();
    let rels = catalog_relations(&toks);
    if rels.is_empty() {
        return None;
    }
    let has = |r: &str| rels.iter().any(|x| x == r);
    let words: Vec<String> = toks
        .iter()
        .filter_map(|t| match t {
            Tok::Word(w) => Some(w.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let word = |w: &str| words.iter().any(|x| x == w);
    let items = select_list(&toks);
    // Catalogs that are always empty here decide first: psql's publication query also reads
    // pg_attribute, its inheritance query pg_class.
    let empty_catalog = rels.iter().any(|r| {
        matches!(
            r.as_str(),
            "pg_policy"
                | "pg_statistic_ext"
                | "pg_publication"
                | "pg_publication_rel"
                | "pg_publication_namespace"
                | "pg_trigger"
                | "pg_inherits"
                | "pg_rewrite"
        )
    });
    let kind = if empty_catalog && rels.iter().all(|r| EMPTY_OK.contains(&r.as_str())) {
        Kind::Empty
    } else if has("pg_class") && word("relkind") && relkind_filter(&toks).is_some() {
        Kind::Relations
    } else if has("pg_class") && word("relchecks") {
        Kind::RelationInfo
    } else if has("pg_attribute") && word("attrelid") && word("attname") {
        Kind::Attributes
    } else if has("pg_index") && word("pg_get_indexdef") && word("indrelid") {
        Kind::TableIndexes
    } else if has("pg_index") && word("indexrelid") {
        Kind::IndexInfo
    } else if has("pg_constraint") && word("confrelid") {
        Kind::ReferencedBy
    } else if has("pg_constraint") && word("conrelid") && contype_is(&toks, "f") {
        Kind::ForeignKeys
    } else if has("pg_class") && has("pg_namespace") && word("relname") && rels.len() == 2 {
        Kind::FindRelation
    } else if has("pg_database") && rels.len() == 1 {
        Kind::Databases
    } else if has("pg_namespace") && rels.len() == 1 {
        Kind::Schemas
    } else if (has("pg_roles") || has("pg_user") || has("pg_authid"))
        && rels.iter().all(|r| {
            matches!(
                r.as_str(),
                "pg_roles" | "pg_user" | "pg_authid" | "pg_auth_members"
            )
        })
    {
        Kind::Roles
    } else if has("pg_type")
        && rels
            .iter()
            .all(|r| matches!(r.as_str(), "pg_type" | "pg_range" | "pg_namespace"))
    {
        Kind::Types
    } else if has("pg_constraint") && rels.iter().all(|r| EMPTY_OK.contains(&r.as_str())) {
        // CHECK constraints and other pg_constraint questions: none are reported.
        Kind::Empty
    } else {
        let first = rels.first().cloned().unwrap_or_default();
        return Some(Query::Unsupported(first));
    };
    if items.is_empty() {
        return Some(Query::Unsupported(
            rels.first().cloned().unwrap_or_default(),
        ));
    }
    Some(Query::Known(Known {
        kind,
        items,
        relkinds: relkind_filter(&toks).unwrap_or_default(),
        pattern: name_pattern(&toks),
        arg: argument(&toks, kind),
        params: param_types(&toks),
    }))
}

/// Types of the `$n` parameters: OID where compared with an `oid` column, else text.
fn param_types(toks: &[Tok]) -> Vec<Type> {
    let mut out: Vec<Type> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let Tok::Param(p) = t else { continue };
        let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        if n == 0 || n > 64 {
            continue;
        }
        if out.len() < n {
            out.resize(n, Type::TEXT);
        }
        let oidish = |t: Option<&Tok>| matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case("oid") || w.to_ascii_lowercase().ends_with("relid"));
        let cast = matches!(toks.get(i + 1), Some(Tok::Punct(p)) if p == "::");
        if !cast
            && matches!(toks.get(i.wrapping_sub(1)), Some(Tok::Punct(p)) if p == "=")
            && oidish(toks.get(i.wrapping_sub(2)))
        {
            out[n - 1] = Type::OID;
        }
    }
    out
}

fn contype_is(toks: &[Tok], c: &str) -> bool {
    toks.windows(3).any(|w| {
        matches!(&w[0], Tok::Word(x) if x.eq_ignore_ascii_case("contype"))
            && matches!(&w[1], Tok::Punct(p) if p == "=")
            && matches!(&w[2], Tok::Str(s) if s == &format!("'{c}'"))
    })
}

/// `relkind IN ('r','p','')` → the letters.
fn relkind_filter(toks: &[Tok]) -> Option<Vec<char>> {
    let at = toks.windows(3).position(|w| {
        matches!(&w[0], Tok::Word(x) if x.eq_ignore_ascii_case("relkind"))
            && matches!(&w[1], Tok::Word(x) if x.eq_ignore_ascii_case("in"))
            && matches!(&w[2], Tok::Punct(p) if p == "(")
    })?;
    let mut out = Vec::new();
    for t in &toks[at + 3..] {
        match t {
            Tok::Str(s) => out.extend(s.trim_matches('\'').chars()),
            Tok::Punct(p) if p == ")" => break,
            _ => {}
        }
    }
    Some(out)
}

/// The regular expression psql matches `relname` against (`OPERATOR(pg_catalog.~) '…'` or `~`).
fn name_pattern(toks: &[Tok]) -> Option<String> {
    for (i, t) in toks.iter().enumerate() {
        if !matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case("relname")) {
            continue;
        }
        // relname ~ '…' | relname OPERATOR(pg_catalog.~) '…'
        let rest = &toks[i + 1..];
        let lit = match rest.first() {
            Some(Tok::Punct(p)) if p == "~" => rest.get(1),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("operator") => rest
                .iter()
                .position(|t| matches!(t, Tok::Punct(p) if p == ")"))
                .and_then(|k| rest.get(k + 1)),
            _ => None,
        };
        if let Some(Tok::Str(s)) = lit {
            return Some(unquote(s));
        }
    }
    None
}

/// The OID a query is about: the first all-digit string literal (psql quotes OIDs), else the
/// first `$n`; for pg_type also a `typname = '…'` literal.
fn argument(toks: &[Tok], kind: Kind) -> Option<Arg> {
    if kind == Kind::Types {
        for (i, w) in toks.windows(3).enumerate() {
            if let (Tok::Word(c), Tok::Punct(eq), v) = (&w[0], &w[1], &w[2])
                && eq == "="
                && (c.eq_ignore_ascii_case("oid") || c.eq_ignore_ascii_case("typname"))
            {
                // `oid = to_regtype($1)` (psycopg): the function's argument.
                let v = match (v, toks.get(i + 3)) {
                    (Tok::Word(_), Some(Tok::Punct(p))) if p == "(" => toks.get(i + 4).unwrap_or(v),
                    _ => v,
                };
                return match v {
                    Tok::Str(s) => Some(Arg::Lit(unquote(s))),
                    Tok::Number(n) => Some(Arg::Lit(n.clone())),
                    Tok::Param(p) => p
                        .strip_prefix('$')
                        .and_then(|n| n.parse().ok())
                        .map(Arg::Param),
                    _ => None,
                };
            }
        }
        return None;
    }
    let lit = toks.iter().find_map(|t| match t {
        Tok::Str(s) => {
            let u = unquote(s);
            (!u.is_empty() && u.bytes().all(|b| b.is_ascii_digit())).then_some(u)
        }
        _ => None,
    });
    if let Some(l) = lit {
        return Some(Arg::Lit(l));
    }
    toks.iter().find_map(|t| match t {
        Tok::Param(p) => p
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .map(Arg::Param),
        _ => None,
    })
}

fn unquote(s: &str) -> String {
    let s = s.strip_prefix(['E', 'e']).unwrap_or(s);
    s.strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(s)
        .replace("''", "'")
}

/// The first top-level select list: each item's output name and expression words.
fn select_list(toks: &[Tok]) -> Vec<Item> {
    let mut depth = 0i32;
    let mut start = None;
    let mut items = Vec::new();
    let mut cur: Vec<&Tok> = Vec::new();
    for t in toks {
        match t {
            Tok::Punct(p) if p == "(" => depth += 1,
            Tok::Punct(p) if p == ")" => depth -= 1,
            _ => {}
        }
        let top = depth == 0;
        if start.is_none() {
            if top && matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case("select")) {
                start = Some(());
            }
            continue;
        }
        if top && matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case("from")) {
            break;
        }
        if top && matches!(t, Tok::Punct(p) if p == "," ) {
            items.push(item(&cur));
            cur.clear();
            continue;
        }
        if top && matches!(t, Tok::Punct(p) if p == ";") {
            break;
        }
        cur.push(t);
    }
    if !cur.is_empty() {
        items.push(item(&cur));
    }
    items
}

fn item(toks: &[&Tok]) -> Item {
    let words: Vec<String> = toks
        .iter()
        .filter_map(|t| match t {
            Tok::Word(w) => Some(w.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let n = toks.len();
    let alias = if n >= 2 && matches!(toks[n - 2], Tok::Word(w) if w.eq_ignore_ascii_case("as")) {
        match toks[n - 1] {
            Tok::Word(w) => Some(w.to_ascii_lowercase()),
            Tok::Quoted(q) => Some(q.clone()),
            _ => None,
        }
    } else {
        None
    };
    let name = match (&alias, toks) {
        (Some(a), _) => a.clone(),
        (None, [.., Tok::Punct(d), Tok::Word(w)]) if d == "." => w.to_ascii_lowercase(),
        (None, [Tok::Word(w)]) => w.to_ascii_lowercase(),
        _ => toks
            .windows(2)
            .find_map(|w| match (w[0], w[1]) {
                (Tok::Word(f), Tok::Punct(p)) if p == "(" => Some(f.to_ascii_lowercase()),
                _ => None,
            })
            .filter(|f| f != "case")
            .unwrap_or_else(|| {
                if words.first().map(String::as_str) == Some("case") {
                    "case".into()
                } else {
                    "?column?".into()
                }
            }),
    };
    Item { name, alias, words }
}

/// One answer field: its key (matched against aliases and expression words) and type.
type Field = (&'static str, Type);

const B: Type = Type::BOOL;
const T: Type = Type::TEXT;
const I: Type = Type::INT8;
const O: Type = Type::OID;
const C: Type = Type::CHAR;

/// The fields each kind of answer has, most specific first (an item takes the first field
/// whose key is its alias, else the first whose key is one of its words).
fn fields(kind: Kind) -> &'static [Field] {
    match kind {
        Kind::Relations => &[
            ("schema", T),
            ("name", T),
            ("type", T),
            ("owner", T),
            ("table", T),
            ("persistence", T),
            ("access method", T),
            ("size", T),
            ("description", T),
            ("nspname", T),
            ("relname", T),
            ("relkind", C),
            ("oid", O),
        ],
        Kind::FindRelation => &[("oid", O), ("nspname", T), ("relname", T), ("relkind", C)],
        Kind::RelationInfo => &[
            ("reloftype", T),
            ("relchecks", I),
            ("relkind", C),
            ("relhasindex", B),
            ("relhasrules", B),
            ("relhastriggers", B),
            ("relrowsecurity", B),
            ("relforcerowsecurity", B),
            ("relhasoids", B),
            ("relispartition", B),
            ("reltablespace", O),
            ("relpersistence", C),
            ("relreplident", C),
            ("amname", T),
        ],
        Kind::Attributes => &[
            ("is_key", T),
            ("indexdef", T),
            ("format_type", T),
            ("adbin", T),
            ("attcollation", T),
            ("collname", T),
            ("attnotnull", B),
            ("attidentity", C),
            ("attgenerated", C),
            ("attstorage", C),
            ("attcompression", C),
            ("col_description", T),
            ("attname", T),
            ("attnum", I),
        ],
        Kind::TableIndexes => &[
            ("pg_get_indexdef", T),
            ("pg_get_constraintdef", T),
            ("relname", T),
            ("indisprimary", B),
            ("indisunique", B),
            ("indisclustered", B),
            ("indisvalid", B),
            ("contype", C),
            ("condeferrable", B),
            ("condeferred", B),
            ("indisreplident", B),
            ("reltablespace", O),
        ],
        Kind::IndexInfo => &[
            ("condeferrable", B),
            ("condeferred", B),
            ("indisunique", B),
            ("indisprimary", B),
            ("indisclustered", B),
            ("indisvalid", B),
            ("indisreplident", B),
            ("indnullsnotdistinct", B),
            ("amname", T),
            ("indpred", T),
            ("relname", T),
        ],
        Kind::ForeignKeys | Kind::ReferencedBy => &[
            ("sametable", B),
            ("condef", T),
            ("ontable", T),
            ("pg_get_constraintdef", T),
            ("conname", T),
        ],
        Kind::Databases => &[
            ("name", T),
            ("owner", T),
            ("encoding", T),
            ("collate", T),
            ("ctype", T),
            ("icu locale", T),
            ("locale provider", T),
            ("access privileges", T),
            ("size", T),
            ("tablespace", T),
            ("description", T),
            ("datdba", T),
            ("datname", T),
            ("oid", O),
        ],
        Kind::Schemas => &[
            ("name", T),
            ("owner", T),
            ("access privileges", T),
            ("description", T),
            ("nspowner", T),
            ("nspname", T),
            ("oid", O),
        ],
        Kind::Roles => &[
            ("memberof", T),
            ("rolname", T),
            ("usename", T),
            ("rolsuper", B),
            ("usesuper", B),
            ("rolinherit", B),
            ("rolcreaterole", B),
            ("rolcreatedb", B),
            ("usecreatedb", B),
            ("rolcanlogin", B),
            ("rolconnlimit", I),
            ("rolvaliduntil", T),
            ("rolreplication", B),
            ("rolbypassrls", B),
            ("oid", O),
        ],
        Kind::Types => &[
            ("regtype", T),
            ("typname", T),
            ("typtype", C),
            ("typelem", O),
            ("rngsubtype", O),
            ("typbasetype", O),
            ("nspname", T),
            ("typrelid", O),
            ("typarray", O),
            ("typdelim", C),
            ("typlen", I),
            ("typnamespace", O),
            ("oid", O),
        ],
        Kind::Empty => &[],
    }
}

/// Which field (index into `fields`) each item takes; `None` for NULL.
fn resolve(items: &[Item], fields: &[Field]) -> Vec<Option<usize>> {
    items
        .iter()
        .map(|it| {
            if let Some(a) = &it.alias {
                let a = a.to_ascii_lowercase();
                if let Some(k) = fields.iter().position(|(f, _)| *f == a) {
                    return Some(k);
                }
            }
            fields
                .iter()
                .position(|(f, _)| it.words.iter().any(|w| w == f))
        })
        .collect()
}

/// The columns a recognised query answers with (for Describe), without running it.
pub fn columns(q: &Known) -> Vec<(String, Type)> {
    let f = fields(q.kind);
    resolve(&q.items, f)
        .into_iter()
        .zip(&q.items)
        .map(|(k, it)| {
            let ty = k.and_then(|k| f.get(k)).map(|(_, t)| t.clone());
            (it.name.clone(), ty.unwrap_or(Type::TEXT))
        })
        .collect()
}

/// Parameter types a recognised query declares (for ParameterDescription).
pub fn param_types_of(q: &Known) -> &[Type] {
    &q.params
}

/// The answer: column names with their types, and rows.
pub struct Answer {
    pub columns: Vec<(String, Type)>,
    pub rows: Vec<Vec<Value>>,
}

/// Who is asking, for the fields that name the database and the user.
pub struct Context<'a> {
    pub database: &'a str,
    pub user: &'a str,
}

/// Answers a catalog query, with the values bound to its `$n` parameters (keys "1", "2", …).
pub async fn answer(
    q: &Query,
    exec: &Executor,
    ctx: &Context<'_>,
    params: &BTreeMap<String, Value>,
) -> Result<Answer, PgWireError> {
    let q = match q {
        Query::Unsupported(rel) => {
            return Err(user_error(
                "42P01",
                format!(
                    "relation \"{rel}\" does not exist: ha answers only the catalog queries of \
                     psql's \\d, \\dt, \\l, \\dn, \\du and common drivers (see docs/postgres.md)"
                ),
            ));
        }
        Query::Known(k) => k,
    };
    let arg: Option<String> = match &q.arg {
        Some(Arg::Lit(s)) => Some(s.clone()),
        Some(Arg::Param(n)) => match params.get(&n.to_string()) {
            Some(Value::Integer(i)) => Some(i.to_string()),
            Some(Value::Text(s)) => Some(s.clone()),
            Some(_) | None => None,
        },
        None => None,
    };
    let records: Vec<Vec<(&'static str, Value)>> = match q.kind {
        Kind::Databases => vec![vec![
            ("name", text(ctx.database)),
            ("datname", text(ctx.database)),
            ("owner", text(ctx.user)),
            ("datdba", text(ctx.user)),
            ("encoding", text("UTF8")),
            ("collate", text("C")),
            ("ctype", text("C")),
            ("locale provider", text("libc")),
            ("oid", Value::Integer(1)),
        ]],
        Kind::Schemas => vec![vec![
            ("name", text("public")),
            ("nspname", text("public")),
            ("owner", text(ctx.user)),
            ("nspowner", text(ctx.user)),
            ("oid", Value::Integer(2200)),
        ]],
        Kind::Roles => {
            let t = Value::Integer(1);
            vec![vec![
                ("memberof", text("{}")),
                ("rolname", text(ctx.user)),
                ("usename", text(ctx.user)),
                ("rolsuper", t.clone()),
                ("usesuper", t.clone()),
                ("rolinherit", t.clone()),
                ("rolcreaterole", t.clone()),
                ("rolcreatedb", t.clone()),
                ("usecreatedb", t.clone()),
                ("rolcanlogin", t.clone()),
                ("rolconnlimit", Value::Integer(-1)),
                ("rolreplication", t.clone()),
                ("rolbypassrls", t),
                ("oid", Value::Integer(10)),
            ]]
        }
        Kind::Types => types_records(arg.as_deref()),
        Kind::Empty => Vec::new(),
        _ => {
            let schema = Schema::load(exec).await.map_err(to_pg)?;
            schema.records(q, arg.as_deref(), ctx.user)
        }
    };
    let f = fields(q.kind);
    let map = resolve(&q.items, f);
    let rows = records
        .into_iter()
        .map(|rec| {
            map.iter()
                .map(|k| {
                    k.and_then(|k| f.get(k))
                        .and_then(|(key, _)| rec.iter().find(|(n, _)| n == key))
                        .map(|(_, v)| v.clone())
                        .unwrap_or(Value::Null)
                })
                .collect()
        })
        .collect();
    Ok(Answer {
        columns: columns(q),
        rows,
    })
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn flag(b: bool) -> Value {
    Value::Integer(i64::from(b))
}

/// The built-in types ha announces (and a few more drivers ask about): oid, name, array oid, length.
const TYPES: &[(u32, &str, u32, i64)] = &[
    (16, "bool", 1000, 1),
    (17, "bytea", 1001, -1),
    (18, "char", 1002, 1),
    (19, "name", 1003, 64),
    (20, "int8", 1016, 8),
    (21, "int2", 1005, 2),
    (23, "int4", 1007, 4),
    (25, "text", 1009, -1),
    (26, "oid", 1028, 4),
    (700, "float4", 1021, 4),
    (701, "float8", 1022, 8),
    (1043, "varchar", 1015, -1),
    (1082, "date", 1182, 4),
    (1114, "timestamp", 1115, 8),
    (1184, "timestamptz", 1185, 8),
    (1700, "numeric", 1231, -1),
];

fn types_records(arg: Option<&str>) -> Vec<Vec<(&'static str, Value)>> {
    TYPES
        .iter()
        .filter(|(oid, name, _, _)| match arg {
            None => true,
            Some(a) => a == oid.to_string() || a.eq_ignore_ascii_case(name),
        })
        .map(|(oid, name, array, len)| {
            vec![
                ("regtype", text(name)),
                ("typname", text(name)),
                ("typtype", text("b")),
                ("typelem", Value::Integer(0)),
                ("typbasetype", Value::Integer(0)),
                ("nspname", text("pg_catalog")),
                ("typrelid", Value::Integer(0)),
                ("typarray", Value::Integer(i64::from(*array))),
                ("typdelim", text(",")),
                ("typlen", Value::Integer(*len)),
                ("typnamespace", Value::Integer(11)),
                ("oid", Value::Integer(i64::from(*oid))),
            ]
        })
        .collect()
}

/// A stable OID for a relation name: FNV-1a, above PostgreSQL's reserved range.
pub fn oid_of(name: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    16384 + (h % 2_000_000_000) as u32
}

/// ha's and SQLite's own tables: never shown.
fn internal(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.starts_with("sqlite_") || l.starts_with("_ha_")
}

#[derive(Debug, Clone)]
struct Object {
    kind: char,
    name: String,
    table: String,
}

#[derive(Debug, Clone)]
struct ColumnDef {
    name: String,
    decl: String,
    notnull: bool,
    default: Option<String>,
    pk: i64,
    hidden: i64,
}

#[derive(Debug, Clone)]
struct IndexDef {
    /// The name shown (`{table}_pkey` for the primary key).
    name: String,
    table: String,
    unique: bool,
    /// 'c' created, 'u' UNIQUE constraint, 'pk' primary key.
    origin: String,
    columns: Vec<String>,
}

#[derive(Debug, Clone)]
struct ForeignKey {
    table: String,
    id: i64,
    target: String,
    from: Vec<String>,
    to: Vec<String>,
}

/// SQLite's schema, read in one transaction.
struct Schema {
    objects: Vec<Object>,
    columns: BTreeMap<String, Vec<ColumnDef>>,
    indexes: Vec<IndexDef>,
    fks: Vec<ForeignKey>,
}

const SCHEMA_SQL: [&str; 5] = [
    "SELECT type, name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'view', 'index') ORDER BY name",
    "SELECT m.name, p.name, p.type, p.\"notnull\", p.dflt_value, p.pk, p.hidden \
     FROM sqlite_schema m, pragma_table_xinfo(m.name) p WHERE m.type IN ('table', 'view') ORDER BY m.name, p.cid",
    "SELECT m.name, il.name, il.\"unique\", il.origin FROM sqlite_schema m, pragma_index_list(m.name) il \
     WHERE m.type = 'table' ORDER BY m.name, il.seq",
    "SELECT il.name, ii.name FROM sqlite_schema m, pragma_index_list(m.name) il, pragma_index_info(il.name) ii \
     WHERE m.type = 'table' ORDER BY il.name, ii.seqno",
    "SELECT m.name, f.id, f.\"table\", f.\"from\", f.\"to\" FROM sqlite_schema m, pragma_foreign_key_list(m.name) f \
     WHERE m.type = 'table' ORDER BY m.name, f.id, f.seq",
];

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::Text(t)) => t.clone(),
        Some(Value::Integer(i)) => i.to_string(),
        _ => String::new(),
    }
}

fn n(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Integer(i)) => *i,
        _ => 0,
    }
}

impl Schema {
    async fn load(exec: &Executor) -> Result<Schema, ExecError> {
        let batch = SCHEMA_SQL.iter().map(|q| Stmt::new(*q)).collect();
        let mut results = exec.execute(batch).await?.into_iter();
        let mut next = || match results.next() {
            Some(StmtResult::Rows(r)) => Ok(r),
            _ => Err(ExecError::BadRequest(
                "catalog query returned no rows".into(),
            )),
        };
        let (objs, cols, idx, idx_cols, fks) = (next()?, next()?, next()?, next()?, next()?);
        let objects = objs
            .rows
            .iter()
            .filter(|r| !internal(&s(r.get(1))))
            .map(|r| Object {
                kind: match s(r.first()).as_str() {
                    "view" => 'v',
                    "index" => 'i',
                    _ => 'r',
                },
                name: s(r.get(1)),
                table: s(r.get(2)),
            })
            .collect();
        let mut columns: BTreeMap<String, Vec<ColumnDef>> = BTreeMap::new();
        for r in &cols.rows {
            columns.entry(s(r.first())).or_default().push(ColumnDef {
                name: s(r.get(1)),
                decl: s(r.get(2)),
                notnull: n(r.get(3)) != 0,
                default: match r.get(4) {
                    Some(Value::Null) | None => None,
                    v => Some(s(v)),
                },
                pk: n(r.get(5)),
                hidden: n(r.get(6)),
            });
        }
        let mut idx_columns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &idx_cols.rows {
            let c = match r.get(1) {
                Some(Value::Text(t)) => t.clone(),
                _ => "<expression>".into(),
            };
            idx_columns.entry(s(r.first())).or_default().push(c);
        }
        let mut indexes = Vec::new();
        for r in &idx.rows {
            let table = s(r.first());
            let name = s(r.get(1));
            let origin = s(r.get(3));
            indexes.push(IndexDef {
                name: if origin == "pk" {
                    format!("{table}_pkey")
                } else {
                    name.clone()
                },
                columns: idx_columns.get(&name).cloned().unwrap_or_default(),
                table,
                unique: n(r.get(2)) != 0,
                origin,
            });
        }
        // A rowid primary key (INTEGER PRIMARY KEY) has no index of its own: show it as one.
        for (table, cols) in &columns {
            let mut pk: Vec<&ColumnDef> = cols.iter().filter(|c| c.pk > 0).collect();
            pk.sort_by_key(|c| c.pk);
            let has_pk_index = indexes
                .iter()
                .any(|i| &i.table == table && i.origin == "pk");
            if !pk.is_empty() && !has_pk_index {
                indexes.push(IndexDef {
                    name: format!("{table}_pkey"),
                    table: table.clone(),
                    unique: true,
                    origin: "pk".into(),
                    columns: pk.iter().map(|c| c.name.clone()).collect(),
                });
            }
        }
        indexes.retain(|i| !internal(&i.table));
        let mut fk_list: Vec<ForeignKey> = Vec::new();
        for r in &fks.rows {
            let (table, id) = (s(r.first()), n(r.get(1)));
            match fk_list.last_mut() {
                Some(f) if f.table == table && f.id == id => {
                    f.from.push(s(r.get(3)));
                    f.to.push(s(r.get(4)));
                }
                _ => fk_list.push(ForeignKey {
                    table,
                    id,
                    target: s(r.get(2)),
                    from: vec![s(r.get(3))],
                    to: vec![s(r.get(4))],
                }),
            }
        }
        Ok(Schema {
            objects,
            columns,
            indexes,
            fks: fk_list,
        })
    }

    fn by_oid(&self, oid: Option<&str>) -> Option<&Object> {
        let oid: u32 = oid?.parse().ok()?;
        self.objects.iter().find(|o| oid_of(&o.name) == oid)
    }

    fn fks_of(&self, table: &str) -> Vec<&ForeignKey> {
        self.fks.iter().filter(|f| f.table == table).collect()
    }

    fn referencing(&self, table: &str) -> Vec<&ForeignKey> {
        self.fks
            .iter()
            .filter(|f| f.target.eq_ignore_ascii_case(table))
            .collect()
    }

    fn records(&self, q: &Known, arg: Option<&str>, user: &str) -> Vec<Vec<(&'static str, Value)>> {
        let pattern = q.pattern.as_deref().map(psql_pattern);
        let matches = |name: &str| match &pattern {
            None => true,
            Some(Some(r)) => r.is_match(name),
            Some(None) => false,
        };
        match q.kind {
            Kind::Relations => {
                let mut objs: Vec<&Object> = self
                    .objects
                    .iter()
                    .filter(|o| q.relkinds.contains(&o.kind) && matches(&o.name))
                    .collect();
                objs.sort_by(|a, b| a.name.cmp(&b.name));
                objs.into_iter()
                    .map(|o| {
                        let label = match o.kind {
                            'v' => "view",
                            'i' => "index",
                            _ => "table",
                        };
                        vec![
                            ("schema", text("public")),
                            ("nspname", text("public")),
                            ("name", text(&o.name)),
                            ("relname", text(&o.name)),
                            ("type", text(label)),
                            ("relkind", text(&o.kind.to_string())),
                            ("owner", text(user)),
                            (
                                "table",
                                if o.kind == 'i' {
                                    text(&o.table)
                                } else {
                                    Value::Null
                                },
                            ),
                            ("persistence", text("permanent")),
                            (
                                "access method",
                                text(if o.kind == 'i' { "btree" } else { "heap" }),
                            ),
                            ("oid", Value::Integer(i64::from(oid_of(&o.name)))),
                        ]
                    })
                    .collect()
            }
            Kind::FindRelation => self
                .objects
                .iter()
                .filter(|o| matches(&o.name))
                .map(|o| {
                    vec![
                        ("oid", Value::Integer(i64::from(oid_of(&o.name)))),
                        ("nspname", text("public")),
                        ("relname", text(&o.name)),
                        ("relkind", text(&o.kind.to_string())),
                    ]
                })
                .collect(),
            Kind::RelationInfo => {
                let Some(o) = self.by_oid(arg) else {
                    return Vec::new();
                };
                let has_index = self.indexes.iter().any(|i| i.table == o.name);
                let triggers =
                    !self.fks_of(&o.name).is_empty() || !self.referencing(&o.name).is_empty();
                vec![vec![
                    ("reloftype", text("")),
                    ("relchecks", Value::Integer(0)),
                    ("relkind", text(&o.kind.to_string())),
                    ("relhasindex", flag(has_index)),
                    ("relhasrules", flag(false)),
                    ("relhastriggers", flag(triggers)),
                    ("relrowsecurity", flag(false)),
                    ("relforcerowsecurity", flag(false)),
                    ("relhasoids", flag(false)),
                    ("relispartition", flag(false)),
                    ("reltablespace", Value::Integer(0)),
                    ("relpersistence", text("p")),
                    ("relreplident", text("d")),
                    ("amname", text(if o.kind == 'i' { "btree" } else { "heap" })),
                ]]
            }
            Kind::Attributes => {
                let Some(o) = self.by_oid(arg) else {
                    return Vec::new();
                };
                if o.kind == 'i' {
                    let cols = self.columns.get(&o.table);
                    let idx = self.indexes.iter().find(|i| i.name == o.name);
                    return idx
                        .map(|i| i.columns.clone())
                        .unwrap_or_default()
                        .iter()
                        .enumerate()
                        .map(|(k, c)| {
                            let decl = cols
                                .and_then(|cs| cs.iter().find(|d| &d.name == c))
                                .map(|d| d.decl.clone())
                                .unwrap_or_default();
                            vec![
                                ("attname", text(c)),
                                ("format_type", text(&type_name(&decl))),
                                ("is_key", text("yes")),
                                ("indexdef", text(c)),
                                ("attnum", Value::Integer(k as i64 + 1)),
                            ]
                        })
                        .collect();
                }
                let cols = self.columns.get(&o.name).cloned().unwrap_or_default();
                let single_int_pk = cols.iter().filter(|c| c.pk > 0).count() == 1;
                cols.iter()
                    .filter(|c| c.hidden != 1)
                    .enumerate()
                    .map(|(k, c)| {
                        let rowid_pk =
                            single_int_pk && c.pk > 0 && c.decl.eq_ignore_ascii_case("INTEGER");
                        let generated = matches!(c.hidden, 2 | 3);
                        vec![
                            ("attname", text(&c.name)),
                            ("format_type", text(&type_name(&c.decl))),
                            (
                                "adbin",
                                c.default.as_deref().map(text).unwrap_or(Value::Null),
                            ),
                            ("attnotnull", flag(c.notnull || rowid_pk)),
                            ("attidentity", text("")),
                            ("attgenerated", text(if generated { "s" } else { "" })),
                            ("attstorage", text("p")),
                            ("attnum", Value::Integer(k as i64 + 1)),
                        ]
                    })
                    .collect()
            }
            Kind::TableIndexes => {
                let Some(o) = self.by_oid(arg) else {
                    return Vec::new();
                };
                let mut idx: Vec<&IndexDef> =
                    self.indexes.iter().filter(|i| i.table == o.name).collect();
                idx.sort_by(|a, b| {
                    (b.origin == "pk")
                        .cmp(&(a.origin == "pk"))
                        .then(a.name.cmp(&b.name))
                });
                idx.into_iter()
                    .map(|i| {
                        let cols = i.columns.join(", ");
                        let def = format!(
                            "CREATE {}INDEX {} ON public.{} USING btree ({cols})",
                            if i.unique { "UNIQUE " } else { "" },
                            i.name,
                            i.table
                        );
                        let (condef, contype) = match i.origin.as_str() {
                            "pk" => (text(&format!("PRIMARY KEY ({cols})")), text("p")),
                            "u" => (text(&format!("UNIQUE ({cols})")), text("u")),
                            _ => (Value::Null, Value::Null),
                        };
                        vec![
                            ("pg_get_indexdef", text(&def)),
                            ("pg_get_constraintdef", condef),
                            ("relname", text(&i.name)),
                            ("indisprimary", flag(i.origin == "pk")),
                            ("indisunique", flag(i.unique)),
                            ("indisclustered", flag(false)),
                            ("indisvalid", flag(true)),
                            ("contype", contype),
                            ("condeferrable", flag(false)),
                            ("condeferred", flag(false)),
                            ("indisreplident", flag(false)),
                            ("reltablespace", Value::Integer(0)),
                        ]
                    })
                    .collect()
            }
            Kind::IndexInfo => {
                let Some(o) = self.by_oid(arg) else {
                    return Vec::new();
                };
                let Some(i) = self.indexes.iter().find(|i| i.name == o.name) else {
                    return Vec::new();
                };
                vec![vec![
                    ("condeferrable", flag(false)),
                    ("condeferred", flag(false)),
                    ("indisunique", flag(i.unique)),
                    ("indisprimary", flag(i.origin == "pk")),
                    ("indisclustered", flag(false)),
                    ("indisvalid", flag(true)),
                    ("indisreplident", flag(false)),
                    ("indnullsnotdistinct", flag(false)),
                    ("amname", text("btree")),
                    ("relname", text(&i.table)),
                ]]
            }
            Kind::ForeignKeys | Kind::ReferencedBy => {
                let Some(o) = self.by_oid(arg) else {
                    return Vec::new();
                };
                let fks = if q.kind == Kind::ForeignKeys {
                    self.fks_of(&o.name)
                } else {
                    self.referencing(&o.name)
                };
                let mut out: Vec<(String, Vec<(&'static str, Value)>)> = fks
                    .into_iter()
                    .map(|f| {
                        let name = format!("{}_{}_fkey", f.table, f.from.join("_"));
                        let to = if f.to.iter().all(|t| t.is_empty()) {
                            String::new()
                        } else {
                            format!("({})", f.to.join(", "))
                        };
                        let def = format!(
                            "FOREIGN KEY ({}) REFERENCES {}{to}",
                            f.from.join(", "),
                            f.target
                        );
                        (
                            name.clone(),
                            vec![
                                ("sametable", flag(q.kind == Kind::ForeignKeys)),
                                ("condef", text(&def)),
                                ("pg_get_constraintdef", text(&def)),
                                ("ontable", text(&f.table)),
                                ("conname", text(&name)),
                            ],
                        )
                    })
                    .collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out.into_iter().map(|(_, r)| r).collect()
            }
            Kind::Databases | Kind::Schemas | Kind::Roles | Kind::Types | Kind::Empty => Vec::new(),
        }
    }
}

/// What `format_type` prints for a declared SQLite type: the declaration as written, in lower
/// case (SQLite keeps it verbatim), or `any` when there is none.
fn type_name(decl: &str) -> String {
    if decl.trim().is_empty() {
        "any".into()
    } else {
        decl.to_ascii_lowercase()
    }
}

/// The anchored regular expression psql builds from its patterns (`^(users)$`, `^(us.*)$`,
/// `^(a|b)$`), compiled by the `regex` crate: matching takes time linear in the name whatever
/// the pattern (a hand-written backtracking matcher was exponential in `.*`). A pattern that
/// does not compile, or would compile to more than 1 MB, matches nothing.
pub fn psql_pattern(pattern: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .ok()
}

/// Whether `name` matches psql's `pattern`.
pub fn psql_pattern_matches(pattern: &str, name: &str) -> bool {
    psql_pattern(pattern).is_some_and(|r| r.is_match(name))
}

/// Declared column types of every table and view: table (lower case) → its columns (lower
/// case) with declared types, in table order. For parameter-type inference.
pub async fn column_types(
    exec: &Executor,
) -> Result<std::collections::HashMap<String, Vec<(String, String)>>, ExecError> {
    let rows = read(
        exec,
        "SELECT lower(m.name), lower(p.name), p.type FROM sqlite_schema m, pragma_table_info(m.name) p \
         WHERE m.type IN ('table', 'view') ORDER BY m.name, p.cid",
    )
    .await?;
    let mut out: std::collections::HashMap<String, Vec<(String, String)>> =
        std::collections::HashMap::new();
    for r in rows.rows {
        if let [Value::Text(t), Value::Text(c), Value::Text(ty)] = r.as_slice() {
            out.entry(t.clone())
                .or_default()
                .push((c.clone(), ty.clone()));
        }
    }
    Ok(out)
}

async fn read(exec: &Executor, sql: &str) -> Result<Rows, ExecError> {
    match exec
        .execute(vec![Stmt {
            sql: sql.into(),
            params: Params::None,
        }])
        .await?
        .pop()
    {
        Some(StmtResult::Rows(r)) => Ok(r),
        _ => Err(ExecError::BadRequest(
            "catalog query returned no rows".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(sql: &str) -> Known {
        match recognise(sql) {
            Some(Query::Known(k)) => k,
            other => panic!("not recognised: {other:?}"),
        }
    }

    const DT: &str = r#"SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;"#;

    #[test]
    fn psql_list_of_tables_is_recognised_by_its_relations() {
        let k = known(DT);
        assert_eq!(k.kind, Kind::Relations);
        assert_eq!(k.relkinds, vec!['r', 'p']);
        let cols: Vec<String> = columns(&k).into_iter().map(|(n, _)| n).collect();
        assert_eq!(cols, ["Schema", "Name", "Type", "Owner"]);
    }

    #[test]
    fn attribute_items_resolve_by_expression_words() {
        let k = known(
            "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), \
             (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d \
              WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef), a.attnotnull \
             FROM pg_catalog.pg_attribute a WHERE a.attrelid = '16384' AND a.attnum > 0 ORDER BY a.attnum",
        );
        assert_eq!(k.kind, Kind::Attributes);
        assert_eq!(k.arg, Some(Arg::Lit("16384".into())));
        let f = fields(k.kind);
        let keys: Vec<&str> = resolve(&k.items, f)
            .into_iter()
            .map(|i| i.map(|i| f[i].0).unwrap_or("-"))
            .collect();
        assert_eq!(keys, ["attname", "format_type", "adbin", "attnotnull"]);
    }

    #[test]
    fn unknown_catalogs_are_refused_and_functions_are_not_catalogs() {
        assert_eq!(
            recognise("SELECT * FROM pg_catalog.pg_stat_replication"),
            Some(Query::Unsupported("pg_stat_replication".into()))
        );
        assert_eq!(
            recognise("select * from information_schema.routines"),
            Some(Query::Unsupported("information_schema.routines".into()))
        );
        assert_eq!(recognise("SELECT pg_catalog.version()"), None);
        assert_eq!(recognise("SELECT x::pg_catalog.text FROM t"), None);
        assert_eq!(recognise("SELECT * FROM users"), None);
    }

    #[test]
    fn tokio_postgres_type_lookup_takes_an_oid_parameter() {
        let k = known(
            "SELECT t.typname, t.typtype, t.typelem, r.rngsubtype, t.typbasetype, n.nspname, t.typrelid \
             FROM pg_catalog.pg_type t LEFT OUTER JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid \
             INNER JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid WHERE t.oid = $1",
        );
        assert_eq!(k.kind, Kind::Types);
        assert_eq!(k.params, vec![Type::OID]);
        assert_eq!(k.arg, Some(Arg::Param(1)));
        let types: Vec<Type> = columns(&k).into_iter().map(|(_, t)| t).collect();
        assert_eq!(types, [T, C, O, O, O, T, O]);
    }

    #[test]
    fn psql_patterns_match_like_postgres() {
        assert!(psql_pattern_matches("^(users)$", "users"));
        assert!(!psql_pattern_matches("^(users)$", "users2"));
        assert!(psql_pattern_matches("^(us.*)$", "users"));
        assert!(psql_pattern_matches("^(a|users)$", "users"));
        assert!(psql_pattern_matches("^(u.ers)$", "users"));
        assert!(!psql_pattern_matches("^(a(b)$", "a"));
    }

    #[test]
    fn oids_are_stable_and_above_the_reserved_range() {
        assert_eq!(oid_of("users"), oid_of("users"));
        assert_ne!(oid_of("users"), oid_of("posts"));
        assert!(oid_of("x") >= 16384);
    }
}
