//! One namespace's share of the derivation: its pods' workloads and its
//! services, bound to waypoints and policies, and their encoded resources.
//! A change derives again only the namespaces it touches (see
//! [`super::changes`]); the others are reused as they are.
//!
//! Two steps, because a Service's endpoints may be pods of another
//! namespace (EndpointSlices can say so) and a workload's Address lists
//! every service it backs: [`derive`] the models of all changed
//! namespaces, then [`encode`] each with the services of other namespaces
//! that point into it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use amesh_core::config::{Service, ServicePort, Workload};
use amesh_core::policy::PolicySet;
use amesh_core::xds::convert::{service_to_proto, workload_binding, workload_proto};
use amesh_core::xds::proto::istio::security::Authorization;
use amesh_core::xds::proto::istio::workload::{Address, address};
use amesh_core::xds::{ADDRESS_TYPE, POD_ENROLLMENT_TYPE};

use super::Settings;
use super::encode::encode_pod_enrollment;
use super::inputs::Inputs;
use super::reports::Reports;
use super::services::derive_services;
use super::waypoints::{Bound, Waypoints};
use super::workloads::{PodWorkload, derive_workloads};
use crate::resources::XdsResource;
use crate::store::{Report, StoreSnapshot};

/// A namespace derived, not yet encoded.
#[derive(Debug)]
pub struct Model {
    /// Workloads with the policies bound to them.
    pub pods: Vec<PodWorkload>,
    pub services: Vec<Service>,
    pub bound: Bound,
    pub reports: Vec<Report>,
    /// Other namespaces whose pods this namespace's services list.
    pub foreign: BTreeSet<String>,
    /// The DENYs converted from PeerAuthentications its workloads are
    /// bound to, by xDS name.
    pub converted: BTreeMap<String, Authorization>,
}

/// The services as a workload's Address shows it (`namespace/hostname` and
/// ports), to tell whether an encoded Address is still right.
type ServiceKey = Vec<(String, String, Vec<ServicePort>)>;

#[derive(Debug)]
pub struct PodEntry {
    pub pod: PodWorkload,
    services: ServiceKey,
    pub address: Arc<XdsResource>,
    pub enrollment: Arc<XdsResource>,
}

#[derive(Debug)]
pub struct ServiceEntry {
    pub service: Service,
    pub address: Arc<XdsResource>,
}

/// A namespace derived and encoded.
#[derive(Debug)]
pub struct Shard {
    pub pods: Vec<PodEntry>,
    pub services: Vec<ServiceEntry>,
    pub bound: Bound,
    pub reports: Vec<Report>,
    pub foreign: BTreeSet<String>,
    pub converted: BTreeMap<String, Authorization>,
}

impl Shard {
    /// Every encoded resource of the namespace, with its type.
    pub fn resources(&self) -> impl Iterator<Item = (&'static str, &Arc<XdsResource>)> {
        let pods = self.pods.iter().flat_map(|p| {
            [
                (ADDRESS_TYPE, &p.address),
                (POD_ENROLLMENT_TYPE, &p.enrollment),
            ]
        });
        let services = self.services.iter().map(|s| (ADDRESS_TYPE, &s.address));
        pods.chain(services)
    }
}

/// Derives `namespace`: workloads (enrollment, identity, waypoint, bound
/// policies) and services (endpoints, waypoint).
pub fn derive(
    snapshot: &StoreSnapshot,
    namespace: &str,
    settings: &Settings,
    waypoints: &mut Waypoints<'_>,
    policies: &PolicySet,
) -> Model {
    let inputs = Inputs::namespace(snapshot, namespace);
    let mut reports = Reports::default();
    let mut bound = Bound::default();
    let mut pods = derive_workloads(&inputs, settings, waypoints, &mut bound, &mut reports);
    let services = derive_services(&inputs, settings, waypoints, &mut bound, &mut reports);
    let mut converted = BTreeMap::new();
    for pod in &mut pods {
        let binding = workload_binding(policies, &pod.workload);
        if let Some((name, auth)) = binding.converted {
            converted.entry(name).or_insert(auth);
        }
        pod.workload.authorization_policies = binding.policies;
    }
    let foreign = services
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter_map(|uid| uid.split_once('/').map(|(ns, _)| ns))
        .filter(|ns| *ns != namespace)
        .map(str::to_owned)
        .collect();
    Model {
        pods,
        services,
        bound,
        reports: reports.list,
        foreign,
        converted,
    }
}

/// Encodes `model`; `foreign` are other namespaces' services with
/// endpoints in it; what `previous` (the namespace's last shard) encoded
/// from the same inputs is reused.
pub fn encode(
    model: Model,
    foreign: &[&Service],
    policies: &PolicySet,
    previous: Option<&Shard>,
) -> Shard {
    let mut by_uid: HashMap<&str, Vec<&Service>> = HashMap::new();
    for service in model.services.iter().chain(foreign.iter().copied()) {
        for uid in &service.endpoints {
            by_uid.entry(uid.as_str()).or_default().push(service);
        }
    }
    let old_pods: HashMap<&str, &PodEntry> = previous
        .map(|s| {
            s.pods
                .iter()
                .map(|p| (p.pod.workload.uid.as_str(), p))
                .collect()
        })
        .unwrap_or_default();
    let old_services: HashMap<&str, &ServiceEntry> = previous
        .map(|s| {
            s.services
                .iter()
                .map(|e| (e.service.hostname.as_str(), e))
                .collect()
        })
        .unwrap_or_default();
    let mut pods = Vec::with_capacity(model.pods.len());
    for pod in model.pods {
        let services = by_uid
            .get(pod.workload.uid.as_str())
            .map_or(&[][..], Vec::as_slice);
        let old = old_pods.get(pod.workload.uid.as_str());
        let same_workload = old.is_some_and(|o| o.pod.workload == pod.workload);
        let address = match old {
            Some(o) if same_workload && same_services(&o.services, services) => o.address.clone(),
            _ => {
                let address = Address {
                    r#type: Some(address::Type::Workload(workload_proto(
                        policies,
                        &pod.workload,
                        services.iter().copied(),
                    ))),
                };
                Arc::new(XdsResource::new(
                    ADDRESS_TYPE,
                    pod.workload.uid.as_str(),
                    &address,
                ))
            }
        };
        let enrollment = match old {
            Some(o) if same_workload && o.pod.enrollment == pod.enrollment => o.enrollment.clone(),
            _ => Arc::new(encode_pod_enrollment(&pod)),
        };
        pods.push(PodEntry {
            services: service_key(services),
            pod,
            address,
            enrollment,
        });
    }
    let services = model
        .services
        .into_iter()
        .map(|service| {
            let address = match old_services.get(service.hostname.as_str()) {
                Some(o) if o.service == service => o.address.clone(),
                _ => {
                    let address = Address {
                        r#type: Some(address::Type::Service(service_to_proto(&service))),
                    };
                    let name = format!("{}/{}", service.namespace, service.hostname);
                    Arc::new(XdsResource::new(ADDRESS_TYPE, name, &address))
                }
            };
            ServiceEntry { service, address }
        })
        .collect();
    Shard {
        pods,
        services,
        bound: model.bound,
        reports: model.reports,
        foreign: model.foreign,
        converted: model.converted,
    }
}

fn service_key(services: &[&Service]) -> ServiceKey {
    services
        .iter()
        .map(|s| (s.namespace.clone(), s.hostname.clone(), s.ports.clone()))
        .collect()
}

fn same_services(key: &ServiceKey, services: &[&Service]) -> bool {
    key.len() == services.len()
        && key.iter().zip(services).all(|((ns, host, ports), s)| {
            *ns == s.namespace && *host == s.hostname && *ports == s.ports
        })
}

/// Workloads of `shards`, for the model.
pub fn workloads<'a>(shards: impl Iterator<Item = &'a Arc<Shard>>) -> Vec<Workload> {
    shards
        .flat_map(|s| s.pods.iter().map(|p| p.pod.workload.clone()))
        .collect()
}
