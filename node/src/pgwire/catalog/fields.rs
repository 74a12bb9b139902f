//! Owns the fields each kind of answer has, and matching a query's select-list items to them
//! (by alias, else by expression words): the column names and types of an answer.

use pgwire::api::Type;

use super::recognise::{Item, Kind, Known};

/// One answer field: its key (matched against aliases and expression words) and type.
pub(super) type Field = (&'static str, Type);

pub(super) const B: Type = Type::BOOL;
pub(super) const T: Type = Type::TEXT;
pub(super) const I: Type = Type::INT8;
pub(super) const O: Type = Type::OID;
pub(super) const C: Type = Type::CHAR;
const TA: Type = Type::TEXT_ARRAY;
const BA: Type = Type::BOOL_ARRAY;

/// The fields each kind of answer has, most specific first (an item takes the first field
/// whose key is its alias, else the first whose key is one of its words).
pub(super) fn fields(kind: Kind) -> &'static [Field] {
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
            ("relname", T),
            // SQLAlchemy's identity options: always NULL (no identity columns).
            ("identity_options", T),
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
            ("indrelid", O),
            ("has_constraint", B),
            ("indoption", Type::INT2_VECTOR),
            ("reloptions", TA),
            ("amname", T),
            ("filter_definition", T),
            ("indnkeyatts", I),
            ("indnullsnotdistinct", B),
            ("elements", TA),
            ("elements_is_expr", BA),
            ("elements_opclass", TA),
            ("elements_opdefault", BA),
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
        Kind::KeyConstraints => &[
            ("conrelid", O),
            ("cols", TA),
            ("conname", T),
            ("description", T),
            ("indnkeyatts", I),
            ("indnullsnotdistinct", B),
        ],
        Kind::TableConstraints => &[
            ("relname", T),
            ("conname", T),
            ("pg_get_constraintdef", T),
            ("nspname", T),
            ("description", T),
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
pub(super) fn resolve(items: &[Item], fields: &[Field]) -> Vec<Option<usize>> {
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
