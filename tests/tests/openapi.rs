//! `GET /openapi.json` (issue 19): the document a running node serves is a valid OpenAPI
//! description (checked by `openapi-spec-validator`, the PyPI package, from the project's
//! venv) and names every route the router serves — the list comes from `http::routes::ROUTES`,
//! the table the router is built from, so a new route without documentation fails here.

use std::process::{Command, Stdio};

use ha::http::routes::ROUTES;
use ha_tests::{TestNode, repo_root};
use serde_json::Value as Json;

async fn fetch_document(n: &TestNode) -> (u16, String, Option<String>) {
    let resp = n
        .client
        .get(n.url("/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    (status, resp.text().await.expect("body"), ctype)
}

#[tokio::test]
async fn the_served_document_is_valid_and_names_every_route() {
    // With a token: the document stays readable without it, like the probes.
    let n = TestNode::start(&["file:t.db", "--token", "s3cret"])
        .await
        .unwrap();
    let mut anonymous = n.client.get(n.url("/openapi.json"));
    anonymous = anonymous.header("accept", "application/json");
    assert_eq!(anonymous.send().await.unwrap().status().as_u16(), 200);
    let (status, text, ctype) = fetch_document(&n).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(ctype.as_deref(), Some("application/json"));
    let doc: Json = serde_json::from_str(&text).expect("JSON");

    // Valid OpenAPI, by the reference validator.
    let python = repo_root().join(".tools/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps.sh",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(&python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("run openapi_spec_validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every route of the router, with its method, and nothing the router does not serve.
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            if matches!(method.as_str(), "get" | "post" | "put" | "delete" | "patch") {
                documented += 1;
                assert!(
                    ROUTES
                        .iter()
                        .any(|r| r.path == path && r.method.eq_ignore_ascii_case(method)),
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is not in /openapi.json",
            r.method,
            r.path
        );
        assert!(
            op["responses"].as_object().is_some_and(|m| !m.is_empty()),
            "{} {} documents no response",
            r.method,
            r.path
        );
        if r.protected {
            assert!(
                op["responses"]["401"].is_object(),
                "{} {} needs the token but documents no 401",
                r.method,
                r.path
            );
        }
    }
    assert_eq!(documented, ROUTES.len());

    // The SQL route: its bodies, its errors and the read-your-writes headers.
    let query = &doc["paths"]["/"]["post"];
    assert!(query["requestBody"].is_object());
    assert!(query["responses"]["200"]["headers"]["X-Ha-Seq"].is_object());
    for code in ["400", "409", "504"] {
        assert!(query["responses"][code].is_object(), "POST / lacks {code}");
    }
    let params: Vec<&str> = query["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for p in [
        "X-Ha-Min-Seq",
        "X-Ha-Min-Seq-Timeout-Ms",
        "min_seq",
        "timeout",
    ] {
        assert!(
            params.contains(&p),
            "POST / lacks parameter {p}: {params:?}"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["token"].is_object());
}
