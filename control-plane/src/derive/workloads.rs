//! Pods → workloads: enrollment, identity, addresses, health and waypoint.

use std::collections::HashMap;
use std::net::IpAddr;

use amesh_core::config::enrollment::{Enrollment, PodFacts, decide};
use amesh_core::config::{HealthStatus, Protocol, Workload};
use amesh_core::identity::{Identity, IdentityError};
use k8s_openapi::api::core::v1::Pod;

use super::Settings;
use super::inputs::{Inputs, PodView, origin_of};
use super::reports::Reports;
use super::waypoints::{BindingSource, Bound, Target, Waypoints};
use crate::store::Severity;

/// One pod's workload and the enrollment decision behind its protocol.
#[derive(Debug)]
pub struct PodWorkload {
    pub workload: Workload,
    pub enrollment: Enrollment,
}

pub fn derive_workloads(
    inputs: &Inputs<'_>,
    settings: &Settings,
    waypoints: &mut Waypoints<'_>,
    bound: &mut Bound,
    reports: &mut Reports,
) -> Vec<PodWorkload> {
    let mut out = Vec::with_capacity(inputs.pods.len());
    let mut identities = Identities::default();
    for view in &inputs.pods {
        let w = workload(
            inputs,
            settings,
            view,
            &mut identities,
            waypoints,
            bound,
            reports,
        );
        if let Some(w) = w {
            out.push(w);
        }
    }
    out
}

fn workload(
    inputs: &Inputs<'_>,
    settings: &Settings,
    view: &PodView<'_>,
    identities: &mut Identities,
    waypoints: &mut Waypoints<'_>,
    bound: &mut Bound,
    reports: &mut Reports,
) -> Option<PodWorkload> {
    let pod = view.pod;
    let spec = pod.spec.as_ref();
    let object = || format!("Pod {}/{}", view.namespace, view.name);
    let service_account = spec
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|sa| !sa.is_empty())
        .unwrap_or("default");
    let identity = match identities.get(settings, view.namespace, service_account) {
        Ok(id) => id,
        Err(e) => {
            reports.push(
                Severity::Error,
                origin_of(&pod.metadata),
                object(),
                "spec.serviceAccountName".to_owned(),
                format!("no workload identity: {e}: skipped"),
            );
            return None;
        }
    };
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let ns_labels = inputs.namespace_labels(view.namespace);
    let enrollment = decide(
        PodFacts {
            namespace: view.namespace,
            labels: view.labels,
            host_network,
        },
        ns_labels,
        &settings.mesh_namespace,
    );
    let uid = view.uid();
    // Only pods in the mesh use waypoints (this also keeps waypoints' own
    // pods from being bound to themselves).
    let waypoint = enrollment
        .is_ambient()
        .then(|| {
            waypoints.bind(
                Target::Workload,
                BindingSource {
                    labels: view.labels,
                    describe: &|| (object(), origin_of(&pod.metadata)),
                    explicit: true,
                },
                view.namespace,
                ns_labels,
                reports,
            )
        })
        .flatten()
        .and_then(|wp| {
            bound.workload(wp, uid.clone());
            wp.reference()
        });
    Some(PodWorkload {
        workload: Workload {
            name: view.name.to_owned(),
            namespace: view.namespace.to_owned(),
            service_account: service_account.to_owned(),
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            ips: pod_ips(pod, &object, reports),
            labels: view.labels.clone(),
            protocol: if enrollment.is_ambient() {
                Protocol::Hbone
            } else {
                Protocol::Tcp
            },
            netns: None,
            host_network,
            status: health(pod),
            waypoint,
            identity,
            authorization_policies: Vec::new(),
            uid,
        },
        enrollment,
    })
}

/// Identities by (namespace, service account): pods share a few.
#[derive(Debug, Default)]
struct Identities {
    /// namespace → service account → identity.
    by_account: HashMap<String, HashMap<String, Identity>>,
}

impl Identities {
    fn get(
        &mut self,
        settings: &Settings,
        namespace: &str,
        account: &str,
    ) -> Result<Identity, IdentityError> {
        if let Some(id) = self.by_account.get(namespace).and_then(|a| a.get(account)) {
            return Ok(id.clone());
        }
        let id = Identity::new(&settings.trust_domain, namespace, account)?;
        self.by_account
            .entry(namespace.to_owned())
            .or_default()
            .insert(account.to_owned(), id.clone());
        Ok(id)
    }
}

/// `status.podIPs`, else `status.podIP`.
fn pod_ips(pod: &Pod, object: &dyn Fn() -> String, reports: &mut Reports) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<(String, &str)> = match status.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("status.podIPs[{i}].ip"), ip.ip.as_str()))
            .collect(),
        _ => status
            .pod_ip
            .as_deref()
            .map(|ip| ("status.podIP".to_owned(), ip))
            .into_iter()
            .collect(),
    };
    let mut ips = Vec::with_capacity(listed.len());
    for (field, ip) in listed {
        match ip.parse() {
            Ok(ip) => ips.push(ip),
            Err(_) => reports.push(
                Severity::Error,
                origin_of(&pod.metadata),
                object(),
                field,
                format!("{ip:?} is not an IP address: ignored"),
            ),
        }
    }
    ips
}

/// Unhealthy when a Ready condition says False or the pod is terminating.
fn health(pod: &Pod) -> HealthStatus {
    let not_ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "False"));
    if not_ready || pod.metadata.deletion_timestamp.is_some() {
        HealthStatus::Unhealthy
    } else {
        HealthStatus::Healthy
    }
}
