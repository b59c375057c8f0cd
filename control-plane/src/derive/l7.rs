//! L7 resources (VirtualService, DestinationRule, HTTPRoute,
//! RequestAuthentication, and AuthorizationPolicies with `targetRefs`):
//! validated, then handed to the waypoints that serve the services (or are
//! the Gateways) they refer to, as [`WaypointConfig`]s.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use amesh_core::l7::{L7Kind, parse};
use amesh_core::xds::proto::amesh::{L7Resource, WaypointConfig};
use serde_json::Value;

use super::Settings;
use super::cache::ObjectCache;
use super::inputs::Inputs;
use super::policies::has_target_refs;
use super::reports::Reports;
use super::waypoints::{Bound, Waypoints};
use crate::store::{CustomObject, Kind, Severity};

/// Per object: `Err((field, message))`, or the unsupported fields.
pub type L7Cache = ObjectCache<Result<Vec<String>, (String, String)>>;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

fn l7_kind(kind: Kind) -> Option<L7Kind> {
    Some(match kind {
        Kind::VirtualService => L7Kind::VirtualService,
        Kind::DestinationRule => L7Kind::DestinationRule,
        Kind::HTTPRoute => L7Kind::HttpRoute,
        Kind::RequestAuthentication => L7Kind::RequestAuthentication,
        Kind::Gateway => L7Kind::Gateway,
        _ => return None,
    })
}

/// Checks `object`: `Err((field, message))`, or the fields amesh ignores.
pub fn check(
    cache: &mut L7Cache,
    kind: L7Kind,
    object: &Arc<CustomObject>,
) -> Result<Vec<String>, (String, String)> {
    cache.get_or_insert(object, |o| {
        parse(kind, &o.spec)
            .map(|parsed| parsed.unsupported)
            .map_err(|e| (e.field, e.message))
    })
}

/// The L7 objects that validated, with `targeted_policies` (the
/// AuthorizationPolicies for waypoints, validated by the policy reader).
pub fn validate<'a>(
    inputs: &Inputs<'a>,
    cache: &mut L7Cache,
    targeted_policies: Vec<&'a Arc<CustomObject>>,
    reports: &mut Reports,
) -> Vec<&'a Arc<CustomObject>> {
    let mut valid = Vec::new();
    let kinds = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::HTTPRoute,
        Kind::RequestAuthentication,
    ];
    for kind in kinds {
        let Some(l7) = l7_kind(kind) else { continue };
        for &object in inputs.custom(kind) {
            let checked = check(cache, l7, object);
            match checked {
                Ok(unsupported) => {
                    for field in unsupported {
                        reports.object(
                            Severity::Unsupported,
                            object,
                            field,
                            "field has no effect in amesh".to_owned(),
                        );
                    }
                    if kind == Kind::RequestAuthentication && !has_target_refs(object) {
                        reports.object(
                            Severity::Unsupported,
                            object,
                            "spec".to_owned(),
                            "without targetRefs it would apply to workloads, which only a waypoint can check: no effect (target the waypoint or a Service)".to_owned(),
                        );
                        continue;
                    }
                    valid.push(object);
                }
                Err((field, message)) => {
                    reports.object(
                        Severity::Error,
                        object,
                        field,
                        format!("{message}: skipped"),
                    );
                }
            }
        }
    }
    valid.extend(targeted_policies);
    valid
}

/// A waypoint's bound services, as the names L7 resources use for them.
struct ServiceNames {
    /// (namespace, name)
    services: HashSet<(String, String)>,
}

impl ServiceNames {
    fn new(hostnames: &BTreeSet<String>, cluster_domain: &str) -> Self {
        let suffix = format!(".svc.{cluster_domain}");
        let services = hostnames
            .iter()
            .filter_map(|entry| {
                let (ns, host) = entry.split_once('/')?;
                let name = host
                    .strip_suffix(&suffix)?
                    .strip_suffix(&format!(".{ns}"))?;
                Some((ns.to_owned(), name.to_owned()))
            })
            .collect();
        Self { services }
    }

    fn has(&self, namespace: &str, name: &str) -> bool {
        self.services
            .contains(&(namespace.to_owned(), name.to_owned()))
    }

    /// A VirtualService host or DestinationRule host, written in namespace
    /// `ns`: `name`, `name.ns`, `name.ns.svc` or the FQDN.
    fn has_host(&self, ns: &str, host: &str, cluster_domain: &str) -> bool {
        let fqdn_suffix = format!(".svc.{cluster_domain}");
        let host = host
            .strip_suffix(&fqdn_suffix)
            .or_else(|| host.strip_suffix(".svc"))
            .unwrap_or(host);
        match host.split_once('.') {
            None => self.has(ns, host),
            Some((name, other_ns)) => !other_ns.contains('.') && self.has(other_ns, name),
        }
    }
}

/// Whether `object` applies to the waypoint `(wp_ns, wp_name)` serving
/// `names`.
fn applies(
    object: &CustomObject,
    wp_ns: &str,
    wp_name: &str,
    names: &ServiceNames,
    settings: &Settings,
) -> bool {
    let ns = object.namespace.as_str();
    let spec = &object.spec;
    let strs = |key: &str| -> Vec<&str> {
        spec.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    match object.kind {
        Kind::VirtualService => strs("hosts")
            .iter()
            .any(|h| names.has_host(ns, h, &settings.cluster_domain)),
        Kind::DestinationRule => spec
            .get("host")
            .and_then(Value::as_str)
            .is_some_and(|h| names.has_host(ns, h, &settings.cluster_domain)),
        Kind::HTTPRoute => refs(spec, "parentRefs").any(|r| r.points_at(ns, wp_ns, wp_name, names)),
        Kind::RequestAuthentication | Kind::AuthorizationPolicy => refs(spec, "targetRefs")
            .chain(spec.get("targetRef").map(Ref::new))
            .any(|r| r.points_at(ns, wp_ns, wp_name, names)),
        _ => false,
    }
}

/// A Gateway API parent or policy target reference.
struct Ref<'v> {
    group: &'v str,
    kind: &'v str,
    name: &'v str,
    namespace: Option<&'v str>,
}

impl<'v> Ref<'v> {
    fn new(v: &'v Value) -> Self {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        Self {
            group: s("group").unwrap_or(""),
            kind: s("kind").unwrap_or(""),
            name: s("name").unwrap_or(""),
            namespace: s("namespace"),
        }
    }

    fn points_at(&self, own_ns: &str, wp_ns: &str, wp_name: &str, names: &ServiceNames) -> bool {
        let ns = self.namespace.unwrap_or(own_ns);
        match (self.group, self.kind) {
            ("" | "core", "Service") => names.has(ns, self.name),
            // parentRefs default to a Gateway of the Gateway API group.
            (GATEWAY_GROUP, "Gateway") | ("", "") | (GATEWAY_GROUP, "") | ("", "Gateway") => {
                ns == wp_ns && self.name == wp_name
            }
            _ => false,
        }
    }
}

fn refs<'v>(spec: &'v Value, key: &str) -> impl Iterator<Item = Ref<'v>> {
    spec.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(Ref::new)
}

/// One [`WaypointConfig`] per waypoint. Valid resources no waypoint takes
/// are reported: they have no effect.
pub fn waypoint_configs(
    waypoints: &Waypoints<'_>,
    bound: &Bound,
    valid: &[&Arc<CustomObject>],
    settings: &Settings,
    reports: &mut Reports,
) -> Vec<WaypointConfig> {
    let empty = BTreeSet::new();
    let mut used = vec![false; valid.len()];
    let configs = waypoints
        .by_key
        .keys()
        .map(|(ns, name)| {
            let (ns, name) = (ns.as_str(), name.as_str());
            let key = (ns.to_owned(), name.to_owned());
            let services = bound.services.get(&key).unwrap_or(&empty);
            let workloads = bound.workloads.get(&key).unwrap_or(&empty);
            let names = ServiceNames::new(services, &settings.cluster_domain);
            let resources = valid
                .iter()
                .enumerate()
                .filter(|(_, o)| applies(o, ns, name, &names, settings))
                .map(|(i, o)| {
                    used[i] = true;
                    o
                })
                .map(|o| L7Resource {
                    kind: o.kind.to_string(),
                    namespace: o.namespace.clone(),
                    name: o.name.clone(),
                    spec_json: o.spec.to_string(),
                })
                .collect();
            WaypointConfig {
                name: name.to_owned(),
                namespace: ns.to_owned(),
                services: services.iter().cloned().collect(),
                workloads: workloads.iter().cloned().collect(),
                resources,
                trust_domain: settings.trust_domain.clone(),
            }
        })
        .collect();
    for (object, _) in valid.iter().zip(used).filter(|(_, used)| !used) {
        reports.object(
            Severity::Unsupported,
            object,
            String::new(),
            format!(
                "refers to no service or Gateway that a waypoint serves (label the service {}=<waypoint>): no effect",
                super::waypoints::USE_WAYPOINT_LABEL
            ),
        );
    }
    configs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_a_service_in_every_short_form() {
        let bound: BTreeSet<String> = ["prod/reviews.prod.svc.cluster.local".to_owned()].into();
        let names = ServiceNames::new(&bound, "cluster.local");
        for host in [
            "reviews",
            "reviews.prod",
            "reviews.prod.svc",
            "reviews.prod.svc.cluster.local",
        ] {
            assert!(names.has_host("prod", host, "cluster.local"), "{host}");
        }
        assert!(!names.has_host("other", "reviews", "cluster.local"));
        assert!(!names.has_host("prod", "ratings", "cluster.local"));
        assert!(names.has_host("other", "reviews.prod", "cluster.local"));
    }
}
