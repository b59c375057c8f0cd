//! AuthorizationPolicy and PeerAuthentication objects → the [`PolicySet`]
//! ztunnels enforce. A policy that does not validate is reported with its
//! file, document and field, and left out; the others apply.
//!
//! AuthorizationPolicies with `targetRef(s)` belong to waypoints (see
//! [`super::l7`]): they are validated here too, and the set keeps them
//! only as skipped (ztunnel does not enforce them).

use std::sync::Arc;

use amesh_core::policy::{PolicyKind, PolicyResource, PolicySet, PolicySpecError, parse_policy};

use super::Settings;
use super::cache::ObjectCache;
use super::inputs::Inputs;
use super::reports::Reports;
use crate::store::{CustomObject, Kind, Severity};

pub type PolicyCache = ObjectCache<Result<PolicyResource, PolicySpecError>>;

/// Whether an AuthorizationPolicy (or RequestAuthentication) targets a
/// Gateway or Service, i.e. is enforced by a waypoint.
pub fn has_target_refs(object: &CustomObject) -> bool {
    let has = |key: &str| {
        object
            .spec
            .get(key)
            .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
    };
    has("targetRef") || has("targetRefs")
}

/// The ztunnel policy set, and the valid AuthorizationPolicies that target
/// waypoints.
pub fn derive_policies<'a>(
    inputs: &Inputs<'a>,
    settings: &Settings,
    cache: &mut PolicyCache,
    reports: &mut Reports,
) -> (PolicySet, Vec<&'a Arc<CustomObject>>) {
    let mut resources = Vec::new();
    let mut targeted = Vec::new();
    let kinds = [
        (Kind::AuthorizationPolicy, PolicyKind::AuthorizationPolicy),
        (Kind::PeerAuthentication, PolicyKind::PeerAuthentication),
    ];
    for (kind, policy_kind) in kinds {
        for &object in inputs.custom(kind) {
            let parsed = cache.get_or_insert(object, |o| {
                parse_policy(policy_kind, &o.namespace, &o.name, &o.spec)
            });
            match parsed {
                Ok(resource) => {
                    if kind == Kind::AuthorizationPolicy && has_target_refs(object) {
                        targeted.push(object);
                    }
                    resources.push(resource);
                }
                Err(e) => reports.object(
                    Severity::Error,
                    object,
                    e.field,
                    format!("{}: policy skipped", e.message),
                ),
            }
        }
    }
    (
        PolicySet::from_resources(resources, &settings.mesh_namespace),
        targeted,
    )
}
