//! Owns the text form of a rendering: one multi-document YAML stream, in apply order.
//! Must not change the objects; it only serializes them (with `apiVersion` and `kind`).
//! Invariant: the stream parses back into exactly the objects of `Rendered`.
//! See `ha-operator render` (main.rs) and the example tests that validate this output.

use serde::Serialize;

use super::Rendered;
use crate::Result;

/// Said above the Secret in the stream.
pub const SECRET_COMMENT: &str = "\
# Generated credentials: fresh random values at every `ha-operator render`. The operator creates
# this Secret once and never overwrites it, so a running cluster keeps its first credentials.
";

/// Every object as YAML documents: ConfigMap, Secret, Services, StatefulSet, then the optional
/// PodDisruptionBudget, Ingress and ServiceMonitor.
pub fn to_yaml_stream(r: &Rendered) -> Result<String> {
    let mut out = String::new();
    doc(&mut out, "", &r.config_map)?;
    doc(&mut out, SECRET_COMMENT, &r.secret)?;
    doc(&mut out, "", &r.peers_service)?;
    doc(&mut out, "", &r.client_service)?;
    doc(&mut out, "", &r.stateful_set)?;
    if let Some(p) = &r.pdb {
        doc(&mut out, "", p)?;
    }
    if let Some(i) = &r.ingress {
        doc(&mut out, "", i)?;
    }
    if let Some(m) = &r.service_monitor {
        doc(&mut out, "", m)?;
    }
    Ok(out)
}

fn doc(out: &mut String, comment: &str, object: &impl Serialize) -> Result<()> {
    // Through JSON first: serde_json's error is the crate's serialization error.
    let value = serde_json::to_value(object)?;
    let yaml =
        serde_yaml::to_string(&value).map_err(<serde_json::Error as serde::ser::Error>::custom)?;
    out.push_str("---\n");
    out.push_str(comment);
    out.push_str(&yaml);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::render;
    use crate::render::tests::{cluster, creds};
    use serde::Deserialize;

    #[test]
    fn stream_has_every_object_with_kind_and_the_secret_comment() {
        let c = cluster("db", "http:\n  ingress:\n    host: h");
        let r = render(&c, "prod", &creds()).unwrap_or_else(|e| panic!("{e}"));
        let text = to_yaml_stream(&r).unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<String> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| {
                let v = serde_yaml::Value::deserialize(d).unwrap_or_default();
                format!(
                    "{}/{}",
                    v["kind"].as_str().unwrap_or("?"),
                    v["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "ConfigMap/db-config",
                "Secret/db-credentials",
                "Service/db-peers",
                "Service/db",
                "StatefulSet/db",
                "PodDisruptionBudget/db",
                "Ingress/db"
            ]
        );
        let secret_at = text.find("kind: Secret").unwrap_or(0);
        let comment_at = text.find("never overwrites").unwrap_or(usize::MAX);
        assert!(comment_at < secret_at);
        assert!(text.contains("apiVersion: apps/v1"));
    }
}
