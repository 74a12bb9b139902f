//! Owns the records of each answer: the fixed ones (database, schema, role, types) and those
//! computed from the schema (`pg_class`, `pg_attribute`, `pg_index`, `pg_constraint`), as
//! (field, value) pairs that `fields` puts in the query's column order.

use super::filters::Resolved;
use super::pattern::psql_pattern;
use super::recognise::{Kind, Known};
use super::schema::{EXPRESSION, ForeignKey, IndexDef, Object, Schema, oid_of, type_name};
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

/// A PostgreSQL array literal of text elements, each quoted (`{"id","name"}`).
pub(super) fn text_array<S: AsRef<str>>(items: &[S]) -> Value {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| {
            format!(
                "\"{}\"",
                s.as_ref().replace('\\', "\\\\").replace('"', "\\\"")
            )
        })
        .collect();
    Value::Text(format!("{{{}}}", quoted.join(",")))
}

/// A PostgreSQL array literal of `n` copies of a scalar (`{t,t}`, `{0,0}`).
pub(super) fn repeated_array(n: usize, scalar: &str) -> Value {
    Value::Text(format!("{{{}}}", vec![scalar; n].join(",")))
}

pub(super) fn types_records(f: &Resolved) -> Vec<Vec<(&'static str, Value)>> {
    // Every type here is a base type ('b'): a question about domains or enums has no answer.
    if f.typtype
        .as_ref()
        .is_some_and(|t| !t.iter().any(|t| t == "b"))
    {
        return Vec::new();
    }
    let arg = f.arg.as_deref();
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
    /// The relations a query's filters select (relkind, relname, pattern, OIDs), by name.
    fn selected(&self, q: &Known, f: &Resolved) -> Vec<&Object> {
        let pattern = q.pattern.as_deref().map(psql_pattern);
        let mut objs: Vec<&Object> = self
            .objects
            .iter()
            .filter(|o| f.relkinds.as_ref().is_none_or(|k| k.contains(&o.kind)))
            .filter(|o| f.names.as_ref().is_none_or(|n| n.contains(&o.name)))
            .filter(|o| !f.not_relkinds.contains(&o.kind) && !f.not_names.contains(&o.name))
            .filter(|o| match &pattern {
                None => true,
                Some(Some(r)) => r.is_match(&o.name),
                Some(None) => false,
            })
            .filter(|o| {
                f.oids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&oid_of(&o.name).to_string()))
            })
            .collect();
        objs.sort_by(|a, b| a.name.cmp(&b.name));
        objs
    }

    /// The relations a query is about: those its filters select when it filters by relkind,
    /// name or OID (SQLAlchemy asks about many at once), else the one its argument names.
    fn targets(&self, q: &Known, f: &Resolved) -> Vec<&Object> {
        if f.relkinds.is_some() || f.names.is_some() || f.oids.is_some() {
            self.selected(q, f)
        } else {
            self.by_oid(f.arg.as_deref()).into_iter().collect()
        }
    }

    pub(super) fn records(
        &self,
        q: &Known,
        f: &Resolved,
        user: &str,
    ) -> Vec<Vec<(&'static str, Value)>> {
        let arg = f.arg.as_deref();
        match q.kind {
            Kind::Relations => {
                let objs = self.selected(q, f);
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
                .selected(q, f)
                .into_iter()
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
            Kind::Attributes => self
                .targets(q, f)
                .into_iter()
                .flat_map(|o| {
                    let mut rows = self.attributes_of(o);
                    for r in &mut rows {
                        r.push(("relname", text(&o.name)));
                    }
                    rows
                })
                .collect(),
            Kind::TableIndexes => self
                .targets(q, f)
                .into_iter()
                .flat_map(|o| self.indexes_of(o, f.not_primary))
                .collect(),
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
                    .map(|k| {
                        let (name, def) = self.fk_def(k);
                        (
                            name.clone(),
                            vec![
                                ("sametable", flag(q.kind == Kind::ForeignKeys)),
                                ("condef", text(&def)),
                                ("pg_get_constraintdef", text(&def)),
                                ("ontable", text(&k.table)),
                                ("conname", text(&name)),
                            ],
                        )
                    })
                    .collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out.into_iter().map(|(_, r)| r).collect()
            }
            Kind::KeyConstraints => {
                let contypes = f.contype.clone().unwrap_or_default();
                self.targets(q, f)
                    .into_iter()
                    .flat_map(|o| self.key_constraints_of(o, &contypes))
                    .collect()
            }
            Kind::TableConstraints => {
                let contypes = f.contype.clone().unwrap_or_default();
                self.selected(q, f)
                    .into_iter()
                    .flat_map(|o| self.table_constraints_of(o, &contypes))
                    .collect()
            }
            Kind::Databases | Kind::Schemas | Kind::Roles | Kind::Types | Kind::Empty => Vec::new(),
        }
    }

    /// pg_attribute of one table (its columns) or index (its key columns).
    fn attributes_of(&self, o: &Object) -> Vec<Vec<(&'static str, Value)>> {
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
                let rowid_pk = single_int_pk && c.pk > 0 && c.decl.eq_ignore_ascii_case("INTEGER");
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

    /// pg_index of one table's indexes (the primary key first, unless `not_primary`).
    fn indexes_of(&self, o: &Object, not_primary: bool) -> Vec<Vec<(&'static str, Value)>> {
        let mut idx: Vec<&IndexDef> = self
            .indexes
            .iter()
            .filter(|i| i.table == o.name && !(not_primary && i.origin == "pk"))
            .collect();
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
                    ("indrelid", Value::Integer(i64::from(oid_of(&o.name)))),
                    (
                        "has_constraint",
                        flag(matches!(i.origin.as_str(), "pk" | "u")),
                    ),
                    // int2vector: PostgreSQL prints it space-separated ("0 0").
                    ("indoption", text(&vec!["0"; i.columns.len()].join(" "))),
                    ("amname", text("btree")),
                    ("indnkeyatts", Value::Integer(i.columns.len() as i64)),
                    ("indnullsnotdistinct", flag(false)),
                    ("elements", text_array(&i.columns)),
                    (
                        "elements_is_expr",
                        Value::Text(format!(
                            "{{{}}}",
                            i.columns
                                .iter()
                                .map(|c| if c == EXPRESSION { "t" } else { "f" })
                                .collect::<Vec<_>>()
                                .join(",")
                        )),
                    ),
                    (
                        "elements_opclass",
                        repeated_array(i.columns.len(), "text_ops"),
                    ),
                    ("elements_opdefault", repeated_array(i.columns.len(), "t")),
                ]
            })
            .collect()
    }

    /// Primary key ('p') or UNIQUE constraint ('u') rows of one table: its columns as an array.
    fn key_constraints_of(
        &self,
        o: &Object,
        contypes: &[String],
    ) -> Vec<Vec<(&'static str, Value)>> {
        self.indexes
            .iter()
            .filter(|i| i.table == o.name)
            .filter(|i| {
                let c = match i.origin.as_str() {
                    "pk" => "p",
                    "u" => "u",
                    _ => return false,
                };
                contypes.iter().any(|t| t == c)
            })
            .map(|i| {
                vec![
                    ("conrelid", Value::Integer(i64::from(oid_of(&o.name)))),
                    ("cols", text_array(&i.columns)),
                    ("conname", text(&i.name)),
                    ("indnkeyatts", Value::Integer(i.columns.len() as i64)),
                    ("indnullsnotdistinct", flag(false)),
                ]
            })
            .collect()
    }

    /// One table's constraints of the given contypes (foreign keys only: CHECK constraints are
    /// not reported), or a single row with only the table's name when it has none, as a left
    /// join from pg_class gives.
    fn table_constraints_of(
        &self,
        o: &Object,
        contypes: &[String],
    ) -> Vec<Vec<(&'static str, Value)>> {
        let mut rows: Vec<Vec<(&'static str, Value)>> = Vec::new();
        if contypes.iter().any(|t| t == "f") {
            let mut fks: Vec<(String, String)> = self
                .fks_of(&o.name)
                .into_iter()
                .map(|k| self.fk_def(k))
                .collect();
            fks.sort();
            for (name, def) in fks {
                rows.push(vec![
                    ("relname", text(&o.name)),
                    ("conname", text(&name)),
                    ("pg_get_constraintdef", text(&def)),
                    ("nspname", text("public")),
                ]);
            }
        }
        if rows.is_empty() {
            rows.push(vec![("relname", text(&o.name))]);
        }
        rows
    }

    /// A foreign key's constraint name and `pg_get_constraintdef` text. A reference to the
    /// target's implicit primary key names its columns, as PostgreSQL prints it.
    pub(super) fn fk_def(&self, k: &ForeignKey) -> (String, String) {
        let name = format!("{}_{}_fkey", k.table, k.from.join("_"));
        let to: Vec<String> = if k.to.iter().all(|t| t.is_empty()) {
            self.primary_key_of(&k.target)
        } else {
            k.to.clone()
        };
        let to = if to.is_empty() {
            String::new()
        } else {
            format!("({})", to.join(", "))
        };
        let def = format!(
            "FOREIGN KEY ({}) REFERENCES {}{to}",
            k.from.join(", "),
            k.target
        );
        (name, def)
    }
}
