//! Recognition, field matching, patterns and OIDs of the catalog answers.

use super::fields::{C, O, T};
use super::recognise::{Arg, Known};
use super::schema::oid_of;
use super::*;
use std::collections::BTreeMap;

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
    assert_eq!(
        k.filters.relkinds,
        Some(vec![
            Arg::Lit("r".into()),
            Arg::Lit("p".into()),
            Arg::Lit("".into())
        ])
    );
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
fn declared_types_print_under_postgres_names_where_one_exists() {
    use super::schema::type_name;
    assert_eq!(type_name("VARCHAR(80)"), "character varying(80)");
    assert_eq!(type_name("INT"), "integer");
    assert_eq!(type_name("INTEGER"), "integer");
    assert_eq!(type_name("DOUBLE"), "double precision");
    assert_eq!(type_name("Numeric(10, 2)"), "numeric(10, 2)");
    assert_eq!(type_name("decimal(10,2)"), "numeric(10,2)");
    assert_eq!(type_name("MyType"), "mytype");
    assert_eq!(type_name(" "), "any");
}

#[test]
fn oids_are_stable_and_above_the_reserved_range() {
    assert_eq!(oid_of("users"), oid_of("users"));
    assert_ne!(oid_of("users"), oid_of("posts"));
    assert!(oid_of("x") >= 16384);
}

const SQLALCHEMY_TABLE_COMMENT: &str = "SELECT pg_catalog.pg_class.relname, pg_catalog.pg_description.description \
FROM pg_catalog.pg_class LEFT OUTER JOIN pg_catalog.pg_description ON pg_catalog.pg_class.oid = pg_catalog.pg_description.objoid AND pg_catalog.pg_description.objsubid = $1::INTEGER AND pg_catalog.pg_description.classoid = CAST($2 AS REGCLASS) JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace \
WHERE pg_catalog.pg_class.relkind = ANY (ARRAY[$3::VARCHAR, $4::VARCHAR, $5::VARCHAR, $6::VARCHAR, $7::VARCHAR]) AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != $8::VARCHAR AND pg_catalog.pg_class.relname IN ($9::VARCHAR)";

#[test]
fn sqlalchemy_table_comment_is_a_relation_question_filtered_by_name() {
    let k = known(SQLALCHEMY_TABLE_COMMENT);
    assert_eq!(k.kind, Kind::Relations);
    assert_eq!(k.filters.names, Some(vec![Arg::Param(9)]));
}

#[test]
fn value_filters_are_read_from_literals_lists_arrays_and_parameters() {
    let k = known(
        "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relname = $1::VARCHAR \
         AND c.relkind = ANY (ARRAY[$2::VARCHAR, 'v'])",
    );
    assert_eq!(k.kind, Kind::Relations);
    assert_eq!(k.filters.names, Some(vec![Arg::Param(1)]));
    assert_eq!(
        k.filters.relkinds,
        Some(vec![Arg::Param(2), Arg::Lit("v".into())])
    );
    let params: BTreeMap<String, Value> = [
        ("1".to_string(), Value::Text("users".into())),
        ("2".to_string(), Value::Text("r".into())),
    ]
    .into_iter()
    .collect();
    let r = k.filters.resolve(None, &params);
    assert_eq!(r.names, Some(vec!["users".to_string()]));
    assert_eq!(r.relkinds, Some(vec!['r', 'v']));
    // A join on an OID column is not a filter; a literal list is.
    let k = known(
        "SELECT i.indrelid FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c \
         ON i.indexrelid = c.oid WHERE NOT pg_catalog.pg_index.indisprimary \
         AND i.indrelid IN (16385, '16386') AND pg_catalog.pg_get_indexdef(i.indexrelid) IS NOT NULL",
    );
    assert_eq!(k.kind, Kind::TableIndexes);
    assert_eq!(
        k.filters.oids,
        Some(vec![Arg::Lit("16385".into()), Arg::Lit("16386".into())])
    );
    assert!(k.filters.not_primary);
}

#[test]
fn name_conditions_that_cannot_be_evaluated_are_refused_not_ignored() {
    for sql in [
        "SELECT relname FROM pg_catalog.pg_class WHERE relkind IN ('r') AND relname LIKE 'us%'",
        "SELECT relname FROM pg_catalog.pg_class WHERE relkind IN ('r') AND relname = $1 || 's'",
        "SELECT relname FROM pg_catalog.pg_class WHERE relkind IN ('r') \
         AND relname IN (SELECT name FROM t)",
        "SELECT relname FROM pg_catalog.pg_class WHERE relkind IN ('r') AND relname ~ $1",
        "SELECT relname FROM pg_catalog.pg_class c WHERE relkind <> c.relkind",
    ] {
        assert!(
            matches!(recognise(sql), Some(Query::Unreadable(_))),
            "{sql}: {:?}",
            recognise(sql)
        );
    }
    // psql's literal patterns and exclusions stay readable.
    let k = known(
        "SELECT relname FROM pg_catalog.pg_class WHERE relkind IN ('r', 'i') \
         AND relkind <> 'i' AND relkind != $1",
    );
    assert_eq!(
        k.filters.not_relkinds,
        vec![Arg::Lit("i".into()), Arg::Param(1)]
    );
    assert_eq!(known(DT).kind, Kind::Relations);
    let k = known(
        "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c \
         LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname OPERATOR(pg_catalog.~) '^(users)$' COLLATE pg_catalog.default",
    );
    assert_eq!(k.kind, Kind::FindRelation);
}
