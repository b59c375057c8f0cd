//! Waypoints and what uses them, as Istio's ambient mode decides.
//!
//! A waypoint is a Gateway API `Gateway` of class `istio-waypoint`; it takes
//! HBONE on port 15008 at its Service's cluster IP (the Service named like
//! the Gateway), else at the address the Gateway states. Its
//! `istio.io/waypoint-for` label says what it serves: `service` (default),
//! `workload`, `all` or `none`.
//!
//! `istio.io/use-waypoint=<name>` on a pod (or service) binds it, else the
//! same label on its namespace; `none` opts out; `istio.io/use-waypoint-namespace`
//! names the waypoint's namespace when it is not the object's own.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use amesh_core::config::WaypointRef;
use serde_json::Value;

use amesh_core::l7::L7Kind;

use super::inputs::Inputs;
use super::l7::{self, L7Cache};
use super::reports::Reports;
use crate::store::{CustomObject, Kind, Severity};

pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
pub const WAYPOINT_CLASS: &str = "istio-waypoint";
pub const WAYPOINT_PORT: u16 = 15008;

/// What a waypoint serves (`istio.io/waypoint-for`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaypointFor {
    Service,
    Workload,
    All,
    None,
}

impl WaypointFor {
    fn parse(value: Option<&str>) -> Option<Self> {
        Some(match value {
            None | Some("service") => Self::Service,
            Some("workload") => Self::Workload,
            Some("all") => Self::All,
            Some("none") => Self::None,
            Some(_) => return None,
        })
    }

    pub fn serves(self, target: Target) -> bool {
        matches!(
            (self, target),
            (Self::All, _) | (Self::Service, Target::Service) | (Self::Workload, Target::Workload)
        )
    }
}

/// What is being bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Service,
    Workload,
}

#[derive(Debug)]
pub struct Waypoint<'a> {
    pub gateway: &'a CustomObject,
    pub address: Option<IpAddr>,
    pub serves: WaypointFor,
}

impl Waypoint<'_> {
    pub fn reference(&self) -> Option<WaypointRef> {
        self.address.map(|address| WaypointRef {
            address,
            port: WAYPOINT_PORT,
        })
    }
}

/// Every waypoint, by (namespace, name).
#[derive(Debug, Default)]
pub struct Waypoints<'a> {
    pub by_key: BTreeMap<(String, String), Waypoint<'a>>,
    /// Reports already made (one per waypoint or per binding source).
    reported: HashSet<String>,
}

/// Where a binding was found, for reports.
pub struct BindingSource<'l> {
    pub labels: &'l BTreeMap<String, String>,
    /// (object, origin), e.g. (`Pod prod/a`, `a.yaml (document 3)`): made
    /// only when there is something to report.
    pub describe: &'l dyn Fn() -> (String, String),
    /// The label is on the object itself, not inherited from its namespace.
    pub explicit: bool,
}

impl std::fmt::Debug for BindingSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindingSource")
            .field("object", &(self.describe)().0)
            .field("explicit", &self.explicit)
            .finish_non_exhaustive()
    }
}

impl<'a> Waypoints<'a> {
    pub fn new(inputs: &Inputs<'a>, cache: &mut L7Cache, reports: &mut Reports) -> Self {
        let mut waypoints = Waypoints::default();
        for &gateway in inputs.custom(Kind::Gateway) {
            let class = gateway.spec.get("gatewayClassName").and_then(Value::as_str);
            if class != Some(WAYPOINT_CLASS) {
                reports.object(
                    Severity::Unsupported,
                    gateway,
                    "spec.gatewayClassName".to_owned(),
                    format!(
                        "{class:?}: amesh runs only waypoints (class {WAYPOINT_CLASS}), no ingress gateways: ignored"
                    ),
                );
                continue;
            }
            match l7::check(cache, L7Kind::Gateway, gateway) {
                Ok(unsupported) => {
                    for field in unsupported {
                        reports.object(
                            Severity::Unsupported,
                            gateway,
                            field,
                            "field has no effect in amesh".to_owned(),
                        );
                    }
                }
                Err((field, message)) => {
                    reports.object(
                        Severity::Error,
                        gateway,
                        field,
                        format!("{message}: the waypoint is not used"),
                    );
                    continue;
                }
            }
            let gateway: &'a CustomObject = gateway;
            let label = gateway.labels.get(WAYPOINT_FOR_LABEL).map(String::as_str);
            let Some(serves) = WaypointFor::parse(label) else {
                reports.object(
                    Severity::Error,
                    gateway,
                    format!("metadata.labels.{WAYPOINT_FOR_LABEL}"),
                    format!(
                        "{label:?} is not one of service, workload, all, none: the waypoint is not used"
                    ),
                );
                continue;
            };
            let address = waypoint_address(inputs, gateway, reports);
            waypoints.by_key.insert(
                (gateway.namespace.clone(), gateway.name.clone()),
                Waypoint {
                    gateway,
                    address,
                    serves,
                },
            );
        }
        waypoints
    }

    pub fn is_waypoint_service(&self, namespace: &str, name: &str) -> bool {
        self.by_key
            .contains_key(&(namespace.to_owned(), name.to_owned()))
    }

    /// The waypoint `own` (or else its namespace `ns`) binds `target` to.
    /// Problems are reported once per binding source and waypoint.
    pub fn bind(
        &mut self,
        target: Target,
        own: BindingSource<'_>,
        namespace: &str,
        ns_labels: Option<&BTreeMap<String, String>>,
        reports: &mut Reports,
    ) -> Option<&Waypoint<'a>> {
        let describe_ns = || (format!("Namespace {namespace}"), String::new());
        let source = if own.labels.contains_key(USE_WAYPOINT_LABEL) {
            own
        } else {
            let labels = ns_labels.filter(|l| l.contains_key(USE_WAYPOINT_LABEL))?;
            BindingSource {
                labels,
                describe: &describe_ns,
                explicit: false,
            }
        };
        let name = source.labels.get(USE_WAYPOINT_LABEL)?;
        if name == "none" {
            return None;
        }
        let wp_ns = source
            .labels
            .get(USE_WAYPOINT_NAMESPACE_LABEL)
            .map_or(namespace, String::as_str);
        let key = (wp_ns.to_owned(), name.clone());
        let Some(waypoint) = self.by_key.get(&key) else {
            let message = format!(
                "{USE_WAYPOINT_LABEL}: waypoint {wp_ns}/{name} does not exist (no Gateway of class {WAYPOINT_CLASS}): not bound"
            );
            self.report_once(reports, Severity::Error, &source, message);
            return None;
        };
        if !waypoint.serves.serves(target) {
            // A namespace label applies to pods and services alike; only a
            // label on the object itself asks for what the waypoint refuses.
            if source.explicit {
                let what = match target {
                    Target::Service => "services",
                    Target::Workload => "workloads",
                };
                let message = format!(
                    "{USE_WAYPOINT_LABEL}: waypoint {wp_ns}/{name} does not serve {what} ({WAYPOINT_FOR_LABEL}={:?}): not bound",
                    waypoint
                        .gateway
                        .labels
                        .get(WAYPOINT_FOR_LABEL)
                        .map_or("service", String::as_str)
                );
                self.report_once(reports, Severity::Error, &source, message);
            }
            return None;
        }
        if waypoint.address.is_none() {
            let message = format!(
                "{USE_WAYPOINT_LABEL}: waypoint {wp_ns}/{name} has no address yet (no Service {name} with a cluster IP, no spec.addresses): not bound"
            );
            self.report_once(reports, Severity::Error, &source, message);
            return None;
        }
        self.by_key.get(&key)
    }

    fn report_once(
        &mut self,
        reports: &mut Reports,
        severity: Severity,
        source: &BindingSource<'_>,
        message: String,
    ) {
        let (object, origin) = (source.describe)();
        let key = format!("{object}\0{message}");
        if self.reported.insert(key) {
            reports.push(
                severity,
                origin,
                object,
                format!("metadata.labels.{USE_WAYPOINT_LABEL}"),
                message,
            );
        }
    }
}

/// The waypoint's Service's cluster IP, else the Gateway's
/// `status.addresses[0]` (custom objects keep only their spec: a source
/// that knows the status puts it at `spec.status`), else
/// `spec.addresses[0]`.
fn waypoint_address(
    inputs: &Inputs<'_>,
    gateway: &CustomObject,
    reports: &mut Reports,
) -> Option<IpAddr> {
    if let Some(svc) = inputs.service_object(&gateway.namespace, &gateway.name) {
        let ip = svc
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        if ip.is_some() {
            return ip;
        }
    }
    let first = |v: Option<&Value>| {
        v.and_then(|a| a.get(0))
            .and_then(|a| a.get("value"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let status = gateway.spec.get("status").and_then(|s| s.get("addresses"));
    let stated = first(status).or_else(|| first(gateway.spec.get("addresses")))?;
    match stated.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            reports.object(
                Severity::Error,
                gateway,
                "spec.addresses[0].value".to_owned(),
                format!("{stated:?} is not an IP address"),
            );
            None
        }
    }
}

/// What each waypoint serves, collected while binding.
#[derive(Debug, Default)]
pub struct Bound {
    /// (namespace, name) of the waypoint → "ns/hostname" of its services.
    pub services: HashMap<(String, String), BTreeSet<String>>,
    /// (namespace, name) → workload uids.
    pub workloads: HashMap<(String, String), BTreeSet<String>>,
}

impl Bound {
    pub fn service(&mut self, waypoint: &Waypoint<'_>, service: String) {
        self.services
            .entry(key(waypoint))
            .or_default()
            .insert(service);
    }

    pub fn workload(&mut self, waypoint: &Waypoint<'_>, uid: String) {
        self.workloads.entry(key(waypoint)).or_default().insert(uid);
    }

    /// Adds what `other` (another namespace's bindings) holds.
    pub fn merge(&mut self, other: &Bound) {
        for (waypoint, services) in &other.services {
            let to = self.services.entry(waypoint.clone()).or_default();
            to.extend(services.iter().cloned());
        }
        for (waypoint, workloads) in &other.workloads {
            let to = self.workloads.entry(waypoint.clone()).or_default();
            to.extend(workloads.iter().cloned());
        }
    }
}

fn key(waypoint: &Waypoint<'_>) -> (String, String) {
    (
        waypoint.gateway.namespace.clone(),
        waypoint.gateway.name.clone(),
    )
}
