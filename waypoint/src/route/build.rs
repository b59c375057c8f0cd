//! Building the table: parse every resource, compile routes, and give each
//! bound service its route list.

use std::collections::HashMap;

use amesh_core::l7::{L7Kind, L7Spec, parse};

use super::decision::{RouteInfo, RouteSource};
use super::http_route::{self, BoundRoute};
use super::input::{L7Input, RouteInputs};
use super::problem::{BuildProblem, ProblemKind, Reporter};
use super::subsets::Subsets;
use super::table::{Route, ServiceRoutes, ServiceRouting};
use super::virtual_service;

/// The routes of every bound service, and the problems met.
pub(crate) fn build(inputs: &RouteInputs) -> (HashMap<String, ServiceRoutes>, Vec<BuildProblem>) {
    let mut problems = Vec::new();
    let parsed: Vec<(&L7Input, L7Spec)> = inputs
        .resources
        .iter()
        .filter_map(|res| parse_one(res, &mut problems).map(|spec| (res, spec)))
        .collect();
    let domain = inputs.cluster_domain.as_str();

    // Subsets first: routes resolve `destination.subset` against them.
    let mut subsets = Subsets::default();
    for (res, spec) in &parsed {
        if let L7Spec::DestinationRule(dr) = spec {
            subsets.add(dr, domain, &mut reporter(res, &mut problems));
        }
    }

    let bound: HashMap<&str, _> = inputs
        .services
        .iter()
        .map(|s| (s.hostname.as_str(), s))
        .collect();
    // FQDN → (VirtualService `ns/name`, its rules).
    let mut by_vs: HashMap<String, (String, Vec<Route>)> = HashMap::new();
    let mut by_http_route: HashMap<String, Vec<BoundRoute>> = HashMap::new();
    for (res, spec) in &parsed {
        let mut r = reporter(res, &mut problems);
        match spec {
            // Istio: a VirtualService naming only ingress gateways does
            // not apply inside the mesh.
            L7Spec::VirtualService(vs)
                if !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh") =>
            {
                r.report(
                    ProblemKind::Unsupported,
                    "spec.gateways",
                    "applies only to gateways, not to the mesh: ignored by the waypoint",
                );
            }
            L7Spec::VirtualService(vs) => {
                let rules = virtual_service::compile(vs, &subsets, domain, &mut r);
                for (i, host) in vs.hosts.iter().enumerate() {
                    let fqdn = super::hosts::resolve(host, &res.namespace, domain);
                    if !bound.contains_key(fqdn.as_str()) {
                        continue;
                    }
                    if let Some((owner, _)) = by_vs.get(&fqdn) {
                        // Istio uses one VirtualService per host for
                        // sidecars and waypoints: the first given.
                        let msg =
                            format!("VirtualService {owner} already routes {fqdn}: ignored for it");
                        r.report(ProblemKind::Conflict, format!("spec.hosts[{i}]"), msg);
                        continue;
                    }
                    let owner = format!("{}/{}", res.namespace, res.name);
                    by_vs.insert(fqdn, (owner, rules.clone()));
                }
            }
            L7Spec::HttpRoute(spec) => {
                for b in http_route::compile(spec, domain, &mut r) {
                    if bound.contains_key(b.host.as_str()) {
                        by_http_route.entry(b.host.clone()).or_default().push(b);
                    }
                }
            }
            _ => {}
        }
    }

    let mut services = HashMap::new();
    for service in &inputs.services {
        let host = service.hostname.clone();
        let vs = by_vs.remove(&host);
        let routes = match by_http_route.remove(&host) {
            Some(mut list) => {
                if let Some((owner, _)) = vs {
                    // Istio: Gateway API routes take precedence.
                    let (ns, name) = owner.split_once('/').unwrap_or(("", &owner));
                    Reporter {
                        resource_kind: "VirtualService",
                        namespace: ns,
                        name,
                        problems: &mut problems,
                    }
                    .report(
                        ProblemKind::Conflict,
                        "spec.hosts",
                        format!("HTTPRoutes bind {host}: they take precedence and this VirtualService is ignored for it"),
                    );
                }
                list.sort_by(|a, b| a.key.cmp(&b.key));
                ServiceRouting::Rules(list.into_iter().map(|b| b.route).collect())
            }
            None => match vs {
                Some((_, rules)) => ServiceRouting::Rules(rules),
                None => ServiceRouting::ToItself(default_route(&host)),
            },
        };
        services.insert(
            host,
            ServiceRoutes {
                service: service.clone(),
                routes,
            },
        );
    }
    (services, problems)
}

/// Parses one resource; kinds the router does not read are skipped quietly
/// (policies are for other parts of the waypoint).
fn parse_one(res: &L7Input, problems: &mut Vec<BuildProblem>) -> Option<L7Spec> {
    let kind = [
        L7Kind::VirtualService,
        L7Kind::DestinationRule,
        L7Kind::HttpRoute,
    ]
    .into_iter()
    .find(|k| k.kind_name() == res.kind)?;
    let mut r = reporter(res, problems);
    let json: serde_json::Value = match serde_json::from_str(&res.spec_json) {
        Ok(v) => v,
        Err(e) => {
            r.error("spec", format!("invalid JSON: {e}: skipped"));
            return None;
        }
    };
    match parse(kind, &json) {
        Ok(parsed) => {
            for field in parsed.unsupported {
                r.unsupported(field);
            }
            Some(parsed.resource)
        }
        Err(e) => {
            r.error(e.field, format!("{}: skipped", e.message));
            None
        }
    }
}

fn reporter<'a>(res: &'a L7Input, problems: &'a mut Vec<BuildProblem>) -> Reporter<'a> {
    Reporter {
        resource_kind: &res.kind,
        namespace: &res.namespace,
        name: &res.name,
        problems,
    }
}

/// The implicit route of a service without routes, named after it.
fn default_route(host: &str) -> std::sync::Arc<RouteInfo> {
    let namespace = host.split('.').nth(1).unwrap_or_default().to_owned();
    std::sync::Arc::new(RouteInfo {
        source: RouteSource::Default,
        namespace,
        name: host.to_owned(),
        rule_index: 0,
        rule_name: None,
    })
}
