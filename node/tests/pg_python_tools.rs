//! The Python data tools many users look at a PostgreSQL-speaking database with (issue 19):
//! SQLAlchemy 2 (psycopg dialect) table reflection — tables, columns with types, primary keys,
//! foreign keys, indexes — and `pandas.read_sql` of a query and of a table and `to_sql`, against
//! ha's pg port.
//! Needs the Python venv of `scripts/install-deps.sh` in `<repo>/.tools` (or `HA_TEST_PYTHON`).

mod common;

use std::process::Command;

use common::{TestNode, python};
use serde_json::{Value as Json, json};

const SCRIPT: &str = r#"
import json, sys
import pandas as pd
from sqlalchemy import create_engine, inspect, text

engine = create_engine(sys.argv[1])
with engine.begin() as c:
    c.execute(text("CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email VARCHAR(80))"))
    c.execute(text("CREATE UNIQUE INDEX customers_email ON customers(email)"))
    c.execute(text(
        "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), "
        "total REAL, placed_at TIMESTAMP, note TEXT)"))
    c.execute(text("CREATE INDEX orders_customer ON orders(customer_id)"))
    c.execute(text("INSERT INTO customers VALUES (1, 'ann', 'ann@x'), (2, 'bob', NULL)"))
    c.execute(text("INSERT INTO orders VALUES (10, 1, 9.5, '2026-12-01 10:00:00', 'first'), (11, 2, 20.25, NULL, NULL)"))

insp = inspect(engine)
out = {
    "tables": sorted(insp.get_table_names()),
    "columns": [
        {"name": c["name"], "type": str(c["type"]), "nullable": c["nullable"]}
        for c in insp.get_columns("orders")
    ],
    "customer_types": {c["name"]: str(c["type"]) for c in insp.get_columns("customers")},
    "pk": insp.get_pk_constraint("orders")["constrained_columns"],
    "fks": [
        {"columns": f["constrained_columns"], "table": f["referred_table"], "referred": f["referred_columns"]}
        for f in insp.get_foreign_keys("orders")
    ],
    "indexes": sorted(
        [{"name": i["name"], "columns": i["column_names"], "unique": bool(i["unique"])}
         for i in insp.get_indexes("customers") + insp.get_indexes("orders")],
        key=lambda i: i["name"],
    ),
}
q = pd.read_sql("SELECT o.id, c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer_id ORDER BY o.id", engine)
out["query"] = {"columns": list(q.columns), "rows": q.values.tolist()}
t = pd.read_sql_table("orders", engine)
out["table"] = {"columns": list(t.columns), "rows": len(t), "total_sum": float(t["total"].sum())}
out["has_table"] = {"orders": inspect(engine).has_table("orders"), "query": inspect(engine).has_table("SELECT 1")}
pd.DataFrame({"name": ["x", "y"], "score": [1.5, 2.5]}).to_sql("scores", engine, index=False)
s = pd.read_sql_table("scores", engine)
out["to_sql"] = {"columns": list(s.columns), "rows": s.values.tolist()}
print(json.dumps(out))
"#;

/// SQLAlchemy's reflection (tables, columns with types, primary key, foreign key, indexes)
/// and pandas' `read_sql` of a query and of a table, each value as PostgreSQL 15 answers the
/// same script (captured with `log_statement=all`). pandas first asks `has_table(<the query
/// text>)`: the catalog must say no, or pandas reads a table of that name.
#[tokio::test]
async fn sqlalchemy_reflection_and_pandas_read_sql_work() {
    let node = TestNode::start().await;
    let url = format!("postgresql+psycopg://ha:ha@127.0.0.1:{}/ha", node.pg.port());
    let mut cmd = Command::new(python());
    cmd.args(["-c", SCRIPT, &url]);
    let out = common::run_command(cmd, false).await;
    let got: Json = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(got["tables"], json!(["customers", "orders"]), "{got:#}");
    assert_eq!(
        got["columns"],
        json!([
            {"name": "id", "type": "INTEGER", "nullable": false},
            {"name": "customer_id", "type": "INTEGER", "nullable": false},
            {"name": "total", "type": "REAL", "nullable": true},
            {"name": "placed_at", "type": "TIMESTAMP", "nullable": true},
            {"name": "note", "type": "TEXT", "nullable": true},
        ]),
        "{got:#}"
    );
    assert_eq!(
        got["customer_types"],
        json!({"id": "INTEGER", "name": "TEXT", "email": "VARCHAR(80)"}),
        "{got:#}"
    );
    assert_eq!(got["pk"], json!(["id"]), "{got:#}");
    assert_eq!(
        got["fks"],
        json!([{"columns": ["customer_id"], "table": "customers", "referred": ["id"]}]),
        "{got:#}"
    );
    assert_eq!(
        got["indexes"],
        json!([
            {"name": "customers_email", "columns": ["email"], "unique": true},
            {"name": "orders_customer", "columns": ["customer_id"], "unique": false},
        ]),
        "{got:#}"
    );
    assert_eq!(
        got["query"],
        json!({"columns": ["id", "name", "total"], "rows": [[10, "ann", 9.5], [11, "bob", 20.25]]}),
        "{got:#}"
    );
    assert_eq!(
        got["table"],
        json!({"columns": ["id", "customer_id", "total", "placed_at", "note"], "rows": 2, "total_sum": 29.75}),
        "{got:#}"
    );
    // pandas asks has_table(<query text>) before read_sql: a name filter the catalog ignored
    // said yes.
    assert_eq!(
        got["has_table"],
        json!({"orders": true, "query": false}),
        "{got:#}"
    );
    assert_eq!(
        got["to_sql"],
        json!({"columns": ["name", "score"], "rows": [["x", 1.5], ["y", 2.5]]}),
        "{got:#}"
    );
}

/// A catalog condition the catalog cannot evaluate (here `LIKE` on relname) is refused with a
/// clear error, not answered as if it were not there; the session keeps serving.
#[tokio::test]
async fn catalog_conditions_ha_cannot_evaluate_are_refused_and_the_session_goes_on() {
    let node = TestNode::start().await;
    let client = node.client().await;
    client
        .batch_execute("CREATE TABLE customers(id INTEGER PRIMARY KEY); CREATE TABLE other(x)")
        .await
        .unwrap();
    let e = client
        .simple_query(
            "SELECT relname FROM pg_catalog.pg_class WHERE relkind IN ('r') AND relname LIKE 'cust%'",
        )
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "0A000", "{e:?}");
    assert!(format!("{e:?}").contains("relname"), "{e:?}");
    // The same question with a value is answered, about that table only.
    let rows = client
        .query(
            "SELECT relname FROM pg_catalog.pg_class WHERE relkind IN ('r') AND relname = $1",
            &[&"customers"],
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["customers"]);
}
