//! Hostile clients through real tokio-postgres connections and raw sockets against an in-process
//! node: refused SQL, statement timeouts and cancellation, result limits, and what a client
//! costs before it authenticates. See docs/security.md.

mod common;

use common::{TestNode, code};

#[tokio::test]
async fn refused_sql_has_sqlstate_42501_and_the_session_goes_on() {
    let node = TestNode::start().await;
    let c = node.client().await;
    for sql in [
        "VACUUM INTO '/tmp/ha-stolen.db'",
        "PRAGMA writable_schema = ON",
        "PRAGMA cache_size = 5",
        "ATTACH 'x.db' AS x",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "42501", "{sql}: {e}");
    }
    assert!(!std::path::Path::new("/tmp/ha-stolen.db").exists());
    let e = c
        .query("SELECT load_extension($1)", &[&"x"])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    c.simple_query("SELECT 1").await.unwrap();
}
