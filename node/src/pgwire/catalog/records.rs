//! Owns the records of each answer: the fixed ones (database, schema, role, types) and those
//! computed from the schema (`pg_class`, `pg_attribute`, `pg_index`, `pg_constraint`), as
//! (field, value) pairs that `fields` puts in the query's column order.

use super::pattern::psql_pattern;
use super::recognise::{Kind, Known};
use super::schema::{IndexDef, Object, Schema, oid_of, type_name};
use crate::exec::Value;

pub(super) fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

pub(super) fn flag(b: bool) -> Value {
    Value::Integer(i64::from(b))
}

/// The built-in types ha announces (and a few more drivers ask about): oid, name, array oid, length.
pub(super) const TYPES: &[(u32, &str, u32, i64)] = &[
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

pub(super) fn types_records(arg: Option<&str>) -> Vec<Vec<(&'static str, Value)>> {
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

impl Schema {
    pub(super) fn records(
        &self,
        q: &Known,
        arg: Option<&str>,
        user: &str,
    ) -> Vec<Vec<(&'static str, Value)>> {
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
