//! `--extensions` on real `ha` binaries with real extensions from the package registries:
//! Debian's sqlite3-pcre (REGEXP) and PyPI's sqlite-vec (vector functions), both installed by
//! scripts/install-deps.sh. A 2-node cluster uses them in CHECK constraints (so the writer and the
//! apply path need them) and in queries (so the read pool needs them); a missing or broken file
//! stops start-up with its name.

use std::path::PathBuf;
use std::time::Duration;

use ha_tests::cluster::TestCluster;
use ha_tests::{TestNode, eventually, repo_root, run_ha};
use serde_json::{Value as Json, json};

const PCRE: &str = "/usr/lib/sqlite3/pcre.so";

fn pcre() -> String {
    assert!(
        std::path::Path::new(PCRE).exists(),
        "{PCRE} is missing: run scripts/install-deps.sh (apt package sqlite3-pcre)"
    );
    PCRE.to_string()
}

/// sqlite-vec's loadable library inside the `.tools` venv (`pip install sqlite-vec`).
fn vec0() -> String {
    let lib = repo_root().join(".tools/lib");
    let found: Option<PathBuf> = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.filter_map(Result::ok)
            .map(|d| d.path().join("site-packages/sqlite_vec/vec0.so"))
            .find(|p| p.exists())
    });
    found
        .unwrap_or_else(|| {
            panic!(
                "sqlite_vec/vec0.so not found under {}: run scripts/install-deps.sh",
                lib.display()
            )
        })
        .display()
        .to_string()
}

async fn rows_become(n: &TestNode, sql: &str, want: Json) {
    let last = std::sync::Mutex::new(Json::Null);
    let r = eventually(Duration::from_secs(60), sql, || async {
        let got = match n.rows(sql).await {
            Ok(rows) => Json::Array(rows),
            Err(e) => json!(e.to_string()),
        };
        if got == want {
            Some(())
        } else {
            *last.lock().ok()? = got;
            None
        }
    })
    .await;
    if let Err(e) = r {
        panic!("{e}: last {} (want {want})", last.lock().unwrap());
    }
}

#[tokio::test]
async fn regexp_and_vector_functions_work_on_every_node() {
    let exts = format!("{},{}", pcre(), vec0());
    let c = TestCluster::external(2, &["--extensions", &exts])
        .await
        .unwrap();
    let (n1, n2) = (c.node(0), c.node(1));
    // REGEXP in a CHECK constraint: every node's writer evaluates it when it applies a row.
    n1.sql(
        "CREATE TABLE emails(id INTEGER PRIMARY KEY, addr TEXT NOT NULL \
         CHECK (addr REGEXP '^[^@ ]+@[^@ ]+$'))",
    )
    .await
    .unwrap();
    n1.sql("INSERT INTO emails VALUES (1, 'ann@example.org'), (2, 'bob@example.com'), (3, 'cy@example.org')")
        .await
        .unwrap();
    let (code, body) = n1
        .post(&json!({"sql": "INSERT INTO emails VALUES (4, 'not an address')"}))
        .await
        .unwrap();
    assert_eq!(
        code, 409,
        "the CHECK with REGEXP refuses a bad address: {body}"
    );
    // Vectors: sqlite-vec functions in a CHECK and in a nearest-neighbour query.
    n1.sql(
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, \
         embedding BLOB NOT NULL CHECK (vec_length(embedding) = 3))",
    )
    .await
    .unwrap();
    n1.sql(
        "INSERT INTO docs VALUES \
         (1, 'x axis', vec_f32('[1, 0, 0]')), \
         (2, 'y axis', vec_f32('[0, 1, 0]')), \
         (3, 'z axis', vec_f32('[0, 0, 1]'))",
    )
    .await
    .unwrap();
    // Writes on n2 reach n1 too.
    n2.sql("INSERT INTO emails VALUES (5, 'dee@example.org')")
        .await
        .unwrap();
    n2.sql("INSERT INTO docs VALUES (4, 'diagonal', vec_f32('[0.7, 0.7, 0]'))")
        .await
        .unwrap();
    for n in [n1, n2] {
        // Queries run on the read pool.
        rows_become(
            n,
            "SELECT id FROM emails WHERE addr REGEXP '@example\\.org$' ORDER BY id",
            json!([[1], [3], [5]]),
        )
        .await;
        rows_become(
            n,
            "SELECT id, title FROM docs \
             ORDER BY vec_distance_l2(embedding, vec_f32('[0.1, 0.9, 0.05]')) LIMIT 2",
            json!([[2, "y axis"], [4, "diagonal"]]),
        )
        .await;
        rows_become(
            n,
            "SELECT vec_to_json(embedding) FROM docs WHERE id = 1",
            json!([["[1.000000,0.000000,0.000000]"]]),
        )
        .await;
    }
    c.assert_converged(&[]).await.unwrap();
}

#[test]
fn a_missing_or_broken_extension_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("file:{}", dir.path().join("t.db").display());
    let common = ["--nats-port", "0", "--port", "0", "--pg-port", "0"];
    let missing = dir.path().join("missing.so").display().to_string();
    let mut args: Vec<&str> = common.to_vec();
    args.extend(["--extensions", &missing, &db]);
    let out = run_ha(&args, &[]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&missing), "{stderr}");
    // A file that is not a shared library, second in the list, through HA_EXTENSIONS.
    let junk = dir.path().join("junk.so");
    std::fs::write(&junk, b"this is not a shared library").unwrap();
    let list = format!("{},{}", pcre(), junk.display());
    let mut args: Vec<&str> = common.to_vec();
    args.push(&db);
    let out = run_ha(&args, &[("HA_EXTENSIONS", &list)]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&junk.display().to_string()), "{stderr}");
    assert!(!dir.path().join("t.db").exists(), "nothing was opened");
}
