//! Unit tests of loading scripts, the return conventions of each hook and the sandbox limits.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::changeset::{Change, Operation, Seq, Value};

fn load(text: &str) -> Result<Interceptor, LoadError> {
    Interceptor::compile("test.rhai", text, InterceptorCounters::default())
}

fn at() -> Position<'static> {
    Position {
        seq: Some(Seq(5)),
        subject: "ha_replication.t_db",
    }
}

fn users() -> ChangeSet {
    let mut cs = ChangeSet::new("n1", 7, "t.db");
    cs.timestamp_ns = 1;
    let mut c = Change::new(Operation::Insert, "users");
    c.columns = vec!["id".into(), "email".into()];
    c.pk_columns = vec!["id".into()];
    c.new_rowid = 1;
    c.new_values = vec![Value::Integer(1), Value::Text("a@example.com".into())];
    let mut cache = c.clone();
    cache.table = "local_cache".into();
    cs.changes = vec![c, cache, Change::sql("ALTER TABLE users ADD COLUMN x")];
    cs
}

#[test]
fn a_compile_error_names_the_script_line_and_column() {
    let e = load("fn before(cs) {\n    let x = ;\n}\n").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LoadError::Compile { line: 2, .. }), "{msg}");
    assert!(msg.contains("test.rhai"), "{msg}");
    assert!(msg.contains("line 2, column"), "{msg}");
}

#[test]
fn an_undefined_variable_is_a_compile_error() {
    let e = load("fn before(cs) { csx.changes }").unwrap_err();
    assert!(matches!(e, LoadError::Compile { line: 1, .. }), "{e}");
}

#[test]
fn hooks_with_the_wrong_parameters_or_none_at_all_are_refused() {
    let e = load("fn before(cs, extra) { true }").unwrap_err();
    assert!(e.to_string().contains("before(cs)"), "{e}");
    let e = load("fn after(cs) { true }").unwrap_err();
    assert!(e.to_string().contains("after(cs, error)"), "{e}");
    let e = load("fn helper(x) { x }").unwrap_err();
    assert!(e.to_string().contains("defines none of the hooks"), "{e}");
    let i = load("fn publish(cs) { true } fn helper(x) { x }").unwrap();
    assert!(i.has_publish() && !i.has_before() && !i.has_after());
}

#[test]
fn failing_top_level_statements_stop_loading() {
    let e = load("throw \"no\"; fn before(cs) { true }").unwrap_err();
    assert!(e.to_string().contains("top-level"), "{e}");
}

#[test]
fn modules_and_eval_are_not_available() {
    assert!(load("import \"x\" as x; fn before(cs) { true }").is_err());
    assert!(load("fn before(cs) { eval(\"1\") }").is_err());
}

#[test]
fn before_return_values_decide_what_is_applied() {
    let cs = users();
    let i = load("fn before(cs) { true }").unwrap();
    assert_eq!(i.before(&cs, at()).unwrap(), Before::AsReceived);
    let i = load("fn before(cs) { }").unwrap();
    assert_eq!(i.before(&cs, at()).unwrap(), Before::AsReceived);
    let i = load("fn before(cs) { false }").unwrap();
    assert_eq!(i.before(&cs, at()).unwrap(), Before::Skip);
    let i = load(
        "fn before(cs) { cs.changes = cs.changes.filter(|c| c.table != \"local_cache\"); cs }",
    )
    .unwrap();
    let Before::Apply(out) = i.before(&cs, at()).unwrap() else {
        panic!("expected an edited change set")
    };
    assert_eq!(out.changes.len(), 2);
    assert_eq!(out.changes[0], cs.changes[0]);
    assert_eq!(out.changes[1], cs.changes[2]);
    let i = load("fn before(cs) { 42 }").unwrap();
    let e = i.before(&cs, at()).unwrap_err();
    assert!(e.message.contains("must return"), "{e}");
    assert_eq!(i.counters().failures.get(), 1);
}

#[test]
fn before_sees_every_field() {
    let cs = users();
    let i = load(
        r#"fn before(cs) {
            if cs.node != "n1" || cs.process_id != 7 || cs.filename != "t.db" { throw "header"; }
            if cs.timestamp_ns != 1 || cs.stream_seq != 5 || cs.subject != "ha_replication.t_db" { throw "stream"; }
            let c = cs.changes[0];
            if c.database != "main" || c.table != "users" || c.operation != "INSERT" { throw "change"; }
            if c.columns != ["id", "email"] || c.pk_columns != ["id"] { throw "columns"; }
            if c.new_values[1] != "a@example.com" || c.new_rowid != 1 || c.old_rowid != 0 { throw "values"; }
            if c.old_values.len() != 0 || c.args.len() != 0 || c.command != "" || c.ts_ns != 0 { throw "rest"; }
            if cs.changes[2].command != "ALTER TABLE users ADD COLUMN x" { throw "command"; }
            true
        }"#,
    )
    .unwrap();
    assert_eq!(i.before(&cs, at()).unwrap(), Before::AsReceived);
}

#[test]
fn a_field_name_typo_is_a_run_time_error() {
    let i = load("fn before(cs) { cs.changes[0].tabel == \"x\" }").unwrap();
    let e = i.before(&users(), at()).unwrap_err();
    assert_eq!(e.hook, "before");
    assert!(e.to_string().contains("test.rhai"), "{e}");
}

#[test]
fn after_can_ignore_an_error_and_a_text_refuses() {
    let cs = users();
    let i = load("fn after(cs, error) { if error == () { true } else { false } }").unwrap();
    assert_eq!(i.after(&cs, None, at()).unwrap(), After::Keep);
    assert_eq!(
        i.after(&cs, Some("duplicate column name: x"), at())
            .unwrap(),
        After::Ignore
    );
    let i = load("fn after(cs, error) { \"not here: \" + cs.node }").unwrap();
    let e = i.after(&cs, None, at()).unwrap_err();
    assert!(e.message.contains("not here: n1"), "{e}");
}

#[test]
fn publish_can_drop_changes_or_everything() {
    let cs = users();
    let i = load(
        "fn publish(cs) { cs.changes = cs.changes.filter(|c| !c.table.starts_with(\"local_\")); cs }",
    )
    .unwrap();
    let Publish::Send(out) = i.publish(&cs, "s").unwrap() else {
        panic!()
    };
    assert_eq!(out.changes.len(), 2);
    let i = load("fn publish(cs) { cs.stream_seq == 0 && false }").unwrap();
    assert_eq!(i.publish(&cs, "s").unwrap(), Publish::Nothing);
}

#[test]
fn values_edited_in_a_script_keep_their_types() {
    let mut cs = users();
    cs.changes[0].new_values = vec![
        Value::Integer(i64::MAX),
        Value::Real(2.5),
        Value::Blob(vec![0, 1, 2]),
        Value::Null,
    ];
    let i = load(
        r#"fn before(cs) {
            let v = cs.changes[0].new_values;
            if type_of(v[0]) != "i64" || type_of(v[1]) != "f64" || type_of(v[2]) != "blob" || v[3] != () { throw type_of(v[2]); }
            v[0] -= 1; v[1] *= 2.0; v[2].push(3);
            cs.changes[0].new_values = v;
            cs
        }"#,
    )
    .unwrap();
    let Before::Apply(out) = i.before(&cs, at()).unwrap() else {
        panic!()
    };
    assert_eq!(
        out.changes[0].new_values,
        vec![
            Value::Integer(i64::MAX - 1),
            Value::Real(5.0),
            Value::Blob(vec![0, 1, 2, 3]),
            Value::Null
        ]
    );
}

#[test]
fn a_runaway_script_is_stopped_quickly() {
    let cs = users();
    let start = Instant::now();
    let i = load("fn before(cs) { loop { } }").unwrap();
    let e = i.before(&cs, at()).unwrap_err();
    assert!(e.message.contains("operations"), "{e}");
    let i = load("fn f(n) { f(n + 1) } fn before(cs) { f(0) }").unwrap();
    assert!(i.before(&cs, at()).is_err());
    let i = load("fn before(cs) { let s = \"x\"; loop { s += s; } }").unwrap();
    let e = i.before(&cs, at()).unwrap_err();
    assert!(e.message.to_lowercase().contains("string"), "{e}");
    let i = load("fn before(cs) { let a = [1]; loop { a += a; } }").unwrap();
    assert!(i.before(&cs, at()).is_err());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "limits took {:?}",
        start.elapsed()
    );
    // The budget is per run: the next run starts afresh.
    let i = load("fn before(cs) { let n = 0; while n < 10000 { n += 1; } true }").unwrap();
    assert_eq!(i.before(&cs, at()).unwrap(), Before::AsReceived);
}

fn example(name: &str) -> Interceptor {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/interceptors")
        .join(name);
    Interceptor::load(&path, InterceptorCounters::default()).unwrap()
}

#[test]
fn the_shipped_alter_table_example_ignores_only_alter_table_errors() {
    let i = example("ignore_alter_table_errors.rhai");
    let mut cs = users();
    cs.changes = vec![Change::sql("  alter table users ADD COLUMN x")];
    assert_eq!(i.after(&cs, None, at()).unwrap(), After::Keep);
    assert_eq!(
        i.after(&cs, Some("duplicate column name: x"), at())
            .unwrap(),
        After::Ignore
    );
    cs.changes = vec![Change::sql("CREATE TABLE z(a)")];
    assert_eq!(i.after(&cs, Some("boom"), at()).unwrap(), After::Keep);
}

#[test]
fn the_shipped_keep_local_example_drops_local_tables_only() {
    let i = example("keep_table_local.rhai");
    let cs = users();
    let Publish::Send(out) = i.publish(&cs, "s").unwrap() else {
        panic!()
    };
    assert_eq!(
        out.changes,
        vec![cs.changes[0].clone(), cs.changes[2].clone()]
    );
}

#[test]
fn the_shipped_mask_example_masks_email_values_only() {
    let i = example("mask_email.rhai");
    let mut cs = users();
    let mut update = cs.changes[0].clone();
    update.operation = Operation::Update;
    update.old_values = vec![Value::Integer(1), Value::Null];
    cs.changes.push(update);
    let Before::Apply(out) = i.before(&cs, at()).unwrap() else {
        panic!()
    };
    assert_eq!(
        out.changes[0].new_values,
        vec![Value::Integer(1), Value::Text("a***@example.com".into())]
    );
    assert_eq!(out.changes[1], cs.changes[1], "other tables untouched");
    assert_eq!(
        out.changes[3].old_values,
        vec![Value::Integer(1), Value::Null]
    );
}
