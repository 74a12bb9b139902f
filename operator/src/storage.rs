//! Owns what the operator does when `spec.storage` no longer matches the StatefulSet's volume
//! claim template, which a StatefulSet cannot change: a larger size expands the existing
//! claims (when their StorageClass allows it); a smaller size or another class is refused.
//! Must not do I/O: `controller` lists the claims, reads the StorageClass and patches.
//! Invariant: the StatefulSet is always applied with the live claim template, so a storage
//! change never blocks the apply of anything else (a 422 on the whole StatefulSet).
//! See docs/kubernetes.md ("Storage").

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use crate::syntax::quantity_value;

/// How the spec's storage differs from the live claim template.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    None,
    /// Expand every claim to `to`.
    Grow {
        from: String,
        to: String,
    },
    /// Refused: a volume cannot shrink.
    Shrink {
        from: String,
        to: String,
    },
    /// Refused: claims do not move between classes.
    Class {
        from: Option<String>,
        to: Option<String>,
    },
}

/// The `data` claim template's (size, class).
fn claim_of(sts: &StatefulSet) -> Option<(String, Option<String>)> {
    let claim = sts
        .spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(crate::render::names::VOLUME_DATA))?;
    Some((
        request_of(claim)?,
        claim.spec.as_ref()?.storage_class_name.clone(),
    ))
}

/// A claim's requested storage.
pub fn request_of(claim: &PersistentVolumeClaim) -> Option<String> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// What changed between the live StatefulSet's claim template and the rendered one.
pub fn compare(live: &StatefulSet, rendered: &StatefulSet) -> Change {
    let (Some((live_size, live_class)), Some((size, class))) = (claim_of(live), claim_of(rendered))
    else {
        return Change::None;
    };
    if live_class != class {
        return Change::Class {
            from: live_class,
            to: class,
        };
    }
    match (quantity_value(&live_size), quantity_value(&size)) {
        (Some(a), Some(b)) if b > a => Change::Grow {
            from: live_size,
            to: size,
        },
        (Some(a), Some(b)) if b < a => Change::Shrink {
            from: live_size,
            to: size,
        },
        _ => Change::None,
    }
}

/// Applies the StatefulSet with the claim templates it has (they cannot change).
pub fn keep_live_claims(rendered: &mut StatefulSet, live: &StatefulSet) {
    let live_claims = live
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone());
    if let (Some(spec), Some(claims)) = (rendered.spec.as_mut(), live_claims) {
        spec.volume_claim_templates = Some(claims);
    }
}

/// The claims (of `claims`) whose request is below `to`.
pub fn to_expand<'a>(
    claims: &'a [PersistentVolumeClaim],
    to: &str,
) -> Vec<&'a PersistentVolumeClaim> {
    let target = quantity_value(to);
    claims
        .iter()
        .filter(|c| {
            request_of(c)
                .and_then(|r| quantity_value(&r))
                .zip(target)
                .is_some_and(|(r, t)| r < t)
        })
        .collect()
}

/// The status condition's (status, reason, message) for a change, before any I/O.
pub fn refusal(change: &Change) -> Option<(&'static str, String)> {
    match change {
        Change::Shrink { from, to } => Some((
            "ShrinkRefused",
            format!(
                "storage.size {to} is smaller than the volumes' {from}: a volume cannot shrink; \
                 set spec.storage.size back to {from} or more"
            ),
        )),
        Change::Class { from, to } => Some((
            "StorageClassChangeRefused",
            format!(
                "storage.storageClassName {} differs from the volumes' {}: volumes do not move \
                 between classes; set it back, or create a new HaCluster with the new class and \
                 copy the data into it",
                to.as_deref().unwrap_or("(cluster default)"),
                from.as_deref().unwrap_or("(cluster default)")
            ),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{cluster, creds};

    fn sts(spec: &str) -> StatefulSet {
        crate::render::render(&cluster("db", spec), "prod", &creds())
            .unwrap_or_else(|e| panic!("{e}"))
            .stateful_set
    }

    #[test]
    fn a_larger_size_grows_a_smaller_one_or_another_class_is_refused() {
        let live = sts("storage: {size: 10Gi}");
        assert_eq!(
            compare(&live, &sts("storage: {size: 10240Mi}")),
            Change::None
        );
        assert_eq!(
            compare(&live, &sts("storage: {size: 20Gi}")),
            Change::Grow {
                from: "10Gi".into(),
                to: "20Gi".into()
            }
        );
        let shrink = compare(&live, &sts("storage: {size: 5Gi}"));
        assert!(matches!(shrink, Change::Shrink { .. }));
        assert!(refusal(&shrink).is_some_and(|(_, m)| m.contains("back to 10Gi")));
        let class = compare(&live, &sts("storage: {size: 10Gi, storageClassName: fast}"));
        assert!(matches!(class, Change::Class { .. }));
        assert!(refusal(&class).is_some_and(|(_, m)| m.contains("fast")));
    }

    #[test]
    fn the_statefulset_is_applied_with_its_live_claims() {
        let live = sts("storage: {size: 10Gi}");
        let mut rendered = sts("storage: {size: 20Gi, storageClassName: fast}");
        keep_live_claims(&mut rendered, &live);
        assert_eq!(compare(&live, &rendered), Change::None);
    }
}
