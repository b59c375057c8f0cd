//! Services → VIPs, ports, endpoints (EndpointSlices, else the selector
//! over the namespace's pods) and waypoint.

use std::collections::BTreeSet;
use std::net::IpAddr;

use amesh_core::config::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Settings;
use super::inputs::{Inputs, ServiceView, origin_of};
use super::reports::Reports;
use super::waypoints::{BindingSource, Bound, Target, Waypoints};
use crate::store::Severity;

pub fn derive_services(
    inputs: &Inputs<'_>,
    settings: &Settings,
    waypoints: &mut Waypoints<'_>,
    bound: &mut Bound,
    reports: &mut Reports,
) -> Vec<Service> {
    inputs
        .services
        .iter()
        .map(|view| service(inputs, settings, view, waypoints, bound, reports))
        .collect()
}

fn service(
    inputs: &Inputs<'_>,
    settings: &Settings,
    view: &ServiceView<'_>,
    waypoints: &mut Waypoints<'_>,
    bound: &mut Bound,
    reports: &mut Reports,
) -> Service {
    let svc = view.service;
    let spec = svc.spec.as_ref();
    let object = format!("Service {}/{}", view.namespace, view.name);
    let hostname = format!(
        "{}.{}.svc.{}",
        view.name, view.namespace, settings.cluster_domain
    );
    let endpoint_pods = endpoint_pods(inputs, view);
    let ports = spec
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let field = format!("spec.ports[{i}]");
            let port = u16::try_from(p.port).ok().filter(|&p| p != 0);
            let Some(port) = port else {
                reports.push(
                    Severity::Error,
                    origin_of(&svc.metadata),
                    object.clone(),
                    format!("{field}.port"),
                    format!("{} is not a port: ignored", p.port),
                );
                return None;
            };
            let target_port = match &p.target_port {
                None => None,
                Some(IntOrString::Int(t)) => u16::try_from(*t).ok().filter(|&t| t != 0),
                Some(IntOrString::String(name)) => {
                    let found = named_port(inputs, &endpoint_pods, name);
                    if found.is_none() {
                        reports.push(
                            Severity::Unsupported,
                            origin_of(&svc.metadata),
                            object.clone(),
                            format!("{field}.targetPort"),
                            format!(
                                "no endpoint pod has a container port named {name:?}: port {port} is used"
                            ),
                        );
                    }
                    found
                }
            };
            Some(ServicePort { port, target_port })
        })
        .collect();
    // The waypoint's own Service is not bound to itself.
    let waypoint = if waypoints.is_waypoint_service(view.namespace, view.name) {
        None
    } else {
        let ns_labels = inputs.namespace_labels(view.namespace);
        let describe = || (object.clone(), origin_of(&svc.metadata));
        let source = BindingSource {
            labels: view.labels,
            describe: &describe,
            explicit: true,
        };
        waypoints
            .bind(Target::Service, source, view.namespace, ns_labels, reports)
            .and_then(|wp| {
                bound.service(wp, format!("{}/{hostname}", view.namespace));
                wp.reference()
            })
    };
    Service {
        name: view.name.to_owned(),
        namespace: view.namespace.to_owned(),
        vips: vips(view),
        ports,
        endpoints: endpoint_pods.into_iter().collect(),
        waypoint,
        hostname,
    }
}

/// `spec.clusterIPs`, else `spec.clusterIP`; headless (`None`) has none.
fn vips(view: &ServiceView<'_>) -> Vec<IpAddr> {
    let Some(spec) = view.service.spec.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    listed.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// Workload uids behind the service, ordered: from its EndpointSlices when
/// there are any, else from its selector.
fn endpoint_pods(inputs: &Inputs<'_>, view: &ServiceView<'_>) -> BTreeSet<String> {
    if let Some(slices) = inputs.slices.get(&(view.namespace, view.name)) {
        let mut uids = BTreeSet::new();
        for slice in slices {
            for endpoint in slice.endpoints.iter().flatten() {
                let Some(target) = endpoint.target_ref.as_ref() else {
                    continue;
                };
                if target.kind.as_deref() != Some("Pod") {
                    continue;
                }
                let ns = target.namespace.as_deref().unwrap_or(view.namespace);
                if let Some(name) = target.name.as_deref() {
                    uids.insert(format!("{ns}/{name}"));
                }
            }
        }
        return uids;
    }
    let selector = view.service.spec.as_ref().and_then(|s| s.selector.as_ref());
    match selector {
        Some(sel) if !sel.is_empty() => inputs
            .select(view.namespace, sel)
            .into_iter()
            .map(|i| inputs.pods[i].uid())
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// The container port named `name` on the first endpoint pod that has one.
fn named_port(inputs: &Inputs<'_>, endpoints: &BTreeSet<String>, name: &str) -> Option<u16> {
    endpoints.iter().find_map(|uid| {
        let (ns, pod) = uid.split_once('/')?;
        let spec = inputs.pod_object(ns, pod)?.spec.as_ref()?;
        spec.containers.iter().find_map(|c| {
            c.ports
                .as_deref()?
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
        })
    })
}
