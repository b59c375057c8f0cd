//! Istio's TCP metric labels for ztunnel's connections, from the config.

use std::net::IpAddr;

use amesh_core::Identity;
use amesh_core::config::{ConfigSnapshot, Service, Workload};
use amesh_core::metrics::{ConnectionLabels, Reporter, WorkloadFacts};

use crate::pod::Pod;

pub fn facts(w: &Workload) -> WorkloadFacts {
    WorkloadFacts::from_labels(&w.name, &w.namespace, &w.identity.to_string(), &w.labels)
}

/// The pod's own facts: from the config, or what ZDS told us.
pub fn pod_facts(snapshot: &ConfigSnapshot, pod: &Pod) -> WorkloadFacts {
    match snapshot.workload_by_uid(&pod.info.uid) {
        Some(w) => facts(w),
        None => WorkloadFacts::from_labels(
            &pod.info.name,
            &pod.info.namespace,
            &pod.identity.to_string(),
            &Default::default(),
        ),
    }
}

/// The service that sends `port` to workload `uid`, if any: what a
/// destination ztunnel reports as `destination_service` (HBONE does not say
/// which service the client dialled).
pub fn service_for<'a>(snapshot: &'a ConfigSnapshot, uid: &str, port: u16) -> Option<&'a Service> {
    snapshot.services().map(|entry| &entry.service).find(|s| {
        s.endpoints.iter().any(|e| e == uid)
            && s.ports
                .iter()
                .any(|p| p.target_port.unwrap_or(p.port) == port)
    })
}

/// `<namespace>/<name>` of the workload at `ip`, if the config has it.
pub fn workload_name(snapshot: &ConfigSnapshot, ip: IpAddr) -> Option<String> {
    snapshot
        .workload_by_ip(ip)
        .map(|w| format!("{}/{}", w.namespace, w.name))
}

fn service_triple(s: &Service) -> (&str, &str, &str) {
    (&s.hostname, &s.namespace, &s.name)
}

/// Labels a destination ztunnel reports for a connection into `pod`.
pub fn inbound_labels(
    snapshot: &ConfigSnapshot,
    pod: &Pod,
    src_ip: IpAddr,
    src_identity: Option<&Identity>,
    dst_port: u16,
) -> ConnectionLabels {
    let src = snapshot.workload_by_ip(src_ip).map(|w| facts(w));
    let dst = pod_facts(snapshot, pod);
    let service = service_for(snapshot, &pod.info.uid, dst_port).map(service_triple);
    let labels = ConnectionLabels::new(
        Reporter::Destination,
        src.as_ref(),
        Some(&dst),
        service,
        src_identity.is_some(),
    );
    // The principal the peer proved, over what the config says of its IP.
    match src_identity {
        Some(identity) => labels.with_source_principal(&identity.to_string()),
        None => labels,
    }
}

/// Labels a source ztunnel reports for a connection out of `pod`.
pub fn outbound_labels(
    snapshot: &ConfigSnapshot,
    pod: &Pod,
    dst_ip: IpAddr,
    service_hostname: Option<&str>,
    mtls: bool,
) -> ConnectionLabels {
    let src = pod_facts(snapshot, pod);
    let dst = snapshot.workload_by_ip(dst_ip).map(|w| facts(w));
    let service = service_hostname.and_then(|host| {
        snapshot
            .services()
            .map(|entry| &entry.service)
            .find(|s| s.hostname == host)
    });
    ConnectionLabels::new(
        Reporter::Source,
        Some(&src),
        dst.as_ref(),
        service.map(service_triple),
        mtls,
    )
}
