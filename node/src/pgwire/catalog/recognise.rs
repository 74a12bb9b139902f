//! Owns recognising a catalog query: which catalog relations it reads, its kind, its select list
//! (aliases and expression words), filters (see `filters`; a `relname ~` pattern) and the OID
//! or type name it is about, without interpreting its text any further.

use pgwire::api::Type;

pub(super) use super::filters::{Arg, unquote};
use super::filters::{Filters, filters, pattern_operand};
use crate::pgwire::sql::{Tok, tokenize};

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
    /// Primary key or unique constraints of tables by OID, with their columns as an array
    /// (pg_constraint joined with pg_index on `conindid`; SQLAlchemy's reflection).
    KeyConstraints,
    /// Tables by name, each with its constraints of one `contype` (pg_class left-joined with
    /// pg_constraint: a table without any still gives one row; SQLAlchemy's reflection).
    TableConstraints,
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
    /// A condition on this column that ha cannot evaluate (see `filters`): refused, never
    /// answered as if it were not there.
    Unreadable(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub kind: Kind,
    /// The select list: output column names and the lower-case words of each expression.
    pub(super) items: Vec<Item>,
    /// Value filters (relkind, relname, OIDs, contype, typtype), bound when the query runs.
    pub(super) filters: Box<Filters>,
    /// A `relname ~ '^(…)$'` pattern.
    pub(super) pattern: Option<String>,
    /// The OID (or type name) the query is about: a literal or a `$n` parameter.
    pub(super) arg: Option<Arg>,
    /// `$n` parameters of the query, and whether each is an OID.
    pub(super) params: Vec<Type>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Item {
    pub(super) name: String,
    pub(super) alias: Option<String>,
    pub(super) words: Vec<String>,
}

/// Relation names of PostgreSQL's catalogs that may appear unqualified.
pub(super) const CATALOG_RELATIONS: &[&str] = &[
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
pub(super) const EMPTY_OK: &[&str] = &[
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
pub(super) fn catalog_relations(toks: &[Tok]) -> Vec<String> {
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
    let filters = filters(&toks);
    if let Some(column) = filters.unreadable {
        return Some(Query::Unreadable(column));
    }
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
    } else if has("pg_index") && word("pg_get_indexdef") && word("indrelid") {
        Kind::TableIndexes
    } else if has("pg_constraint") && has("pg_index") && word("conindid") && word("indkey") {
        Kind::KeyConstraints
    } else if has("pg_class")
        && has("pg_constraint")
        && word("contype")
        && filters.relkinds.is_some()
        && filters.contype.is_some()
    {
        Kind::TableConstraints
    } else if has("pg_class") && filters.relkinds.is_some() && !has("pg_attribute") {
        Kind::Relations
    } else if has("pg_class") && word("relchecks") {
        Kind::RelationInfo
    } else if has("pg_attribute") && word("attrelid") && word("attname") {
        Kind::Attributes
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
        && rels.iter().all(|r| {
            matches!(
                r.as_str(),
                "pg_type"
                    | "pg_range"
                    | "pg_namespace"
                    | "pg_collation"
                    | "pg_constraint"
                    | "pg_enum"
            )
        })
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
        filters: Box::new(filters),
        pattern: name_pattern(&toks),
        arg: argument(&toks, kind),
        params: param_types(&toks),
    }))
}

/// Types of the `$n` parameters: OID where compared with an `oid` column, else text.
pub(super) fn param_types(toks: &[Tok]) -> Vec<Type> {
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

pub(super) fn contype_is(toks: &[Tok], c: &str) -> bool {
    toks.windows(3).any(|w| {
        matches!(&w[0], Tok::Word(x) if x.eq_ignore_ascii_case("contype"))
            && matches!(&w[1], Tok::Punct(p) if p == "=")
            && matches!(&w[2], Tok::Str(s) if s == &format!("'{c}'"))
    })
}

/// The regular expression psql matches `relname` against (`OPERATOR(pg_catalog.~) '…'` or `~`).
pub(super) fn name_pattern(toks: &[Tok]) -> Option<String> {
    for (i, t) in toks.iter().enumerate() {
        if !matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case("relname")) {
            continue;
        }
        // relname ~ '…' | relname OPERATOR(pg_catalog.~) '…'
        if let Some(Tok::Str(s)) = pattern_operand(&toks[i + 1..]) {
            return Some(unquote(s));
        }
    }
    None
}

/// The OID a query is about: the first all-digit string literal (psql quotes OIDs), else the
/// first `$n`; for pg_type also a `typname = '…'` literal.
pub(super) fn argument(toks: &[Tok], kind: Kind) -> Option<Arg> {
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

/// The first top-level select list: each item's output name and expression words.
pub(super) fn select_list(toks: &[Tok]) -> Vec<Item> {
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

pub(super) fn item(toks: &[&Tok]) -> Item {
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
