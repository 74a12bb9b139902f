//! Owns reading an `HaCluster` from a YAML file the way the API server would admit it: one
//! document, the right apiVersion and kind, no field the CRD schema does not know.
//! Must not fill in defaults or judge values: serde defaults and `crd::validate` do that.
//! Invariant: a field the API server would reject as unknown (strict field validation, the
//! kubectl default) is rejected here too, instead of being silently ignored by serde.
//! See `ha-operator render` (main.rs) and the example tests.

use kube::CustomResourceExt;
use serde_json::Value;

use crate::crd::HaCluster;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("expected one HaCluster document, found {0}")]
    DocumentCount(usize),
    #[error(
        "not an HaCluster: apiVersion {api_version:?}, kind {kind:?} (want {want_api:?}, \"HaCluster\")"
    )]
    WrongKind {
        api_version: String,
        kind: String,
        want_api: String,
    },
    #[error("unknown field{}: {}", if .0.len() > 1 { "s" } else { "" }, .0.join(", "))]
    UnknownFields(Vec<String>),
    #[error("cannot read the HaCluster: {0}")]
    Shape(String),
}

/// Parses one `HaCluster` document.
pub fn parse_cluster(text: &str) -> Result<HaCluster, ManifestError> {
    use serde::Deserialize;
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
        .map(Value::deserialize)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ManifestError::Yaml(e.to_string()))?
        .into_iter()
        .filter(|v| !v.is_null())
        .collect();
    let [doc] = docs.as_slice() else {
        return Err(ManifestError::DocumentCount(docs.len()));
    };
    let want_api = format!("{}/v1alpha1", crate::crd::GROUP);
    let field = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if field("apiVersion") != want_api || field("kind") != "HaCluster" {
        return Err(ManifestError::WrongKind {
            api_version: field("apiVersion"),
            kind: field("kind"),
            want_api,
        });
    }
    let unknown = unknown_fields(doc);
    if !unknown.is_empty() {
        return Err(ManifestError::UnknownFields(unknown));
    }
    serde_json::from_value(doc.clone()).map_err(|e| ManifestError::Shape(e.to_string()))
}

/// Paths of the fields of `object` (a whole HaCluster) that the CRD schema does not declare.
pub fn unknown_fields(object: &Value) -> Vec<String> {
    let crd = HaCluster::crd();
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    let mut out = Vec::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (key, value) in map {
        match key.as_str() {
            // Checked by the API server itself, not by the CRD schema.
            "apiVersion" | "kind" | "metadata" => {}
            _ => match schema.pointer(&format!("/properties/{key}")) {
                Some(s) => walk(s, value, key, &mut out),
                None => out.push(key.clone()),
            },
        }
    }
    out
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let flag = |k: &str| schema.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("x-kubernetes-preserve-unknown-fields") || flag("x-kubernetes-int-or-string") {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, v) in map {
                let sub = format!("{path}.{key}");
                match (props.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => walk(s, v, &sub, out),
                    (None, None) => out.push(sub),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(s, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "apiVersion: ha.sqlite.dev/v1alpha1\nkind: HaCluster\nmetadata:\n  name: db\n";

    #[test]
    fn a_cluster_document_is_read_with_defaults() {
        let c = parse_cluster(&format!("{HEAD}spec:\n  replicas: 5\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.metadata.name.as_deref(), Some("db"));
        assert_eq!(c.spec.replicas, 5);
        assert_eq!(c.spec.http.port, 8080);
        let c = parse_cluster(&format!("{HEAD}spec: {{}}\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.spec.replicas, 3);
        // The CRD requires `spec`, as the API server does.
        assert!(matches!(parse_cluster(HEAD), Err(ManifestError::Shape(m)) if m.contains("spec")));
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let e = parse_cluster(&format!(
            "{HEAD}spec:\n  replica: 5\n  pod:\n    env:\n    - name: A\n      valu: b\n    \
             resources:\n      limits: {{cpu: 1}}\n    nodeSelector: {{any: thing}}\n"
        ))
        .map(|_| ())
        .unwrap_err();
        match e {
            ManifestError::UnknownFields(f) => {
                assert_eq!(f, ["spec.pod.env[0].valu", "spec.replica"]);
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn other_kinds_several_documents_and_garbage_are_refused() {
        assert!(matches!(
            parse_cluster("apiVersion: v1\nkind: ConfigMap\n"),
            Err(ManifestError::WrongKind { .. })
        ));
        assert!(matches!(
            parse_cluster(&format!("{HEAD}---\n{HEAD}")),
            Err(ManifestError::DocumentCount(2))
        ));
        assert!(matches!(
            parse_cluster(""),
            Err(ManifestError::DocumentCount(0))
        ));
        assert!(matches!(
            parse_cluster("a: [\n"),
            Err(ManifestError::Yaml(_))
        ));
        assert!(matches!(
            parse_cluster(&format!("{HEAD}spec:\n  replicas: three\n")),
            Err(ManifestError::Shape(_))
        ));
    }
}
