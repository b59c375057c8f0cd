//! What ztunnel's admin server (localhost:15000) shows and changes:
//! `/config_dump` and `/logging`. Certificates are dumped as their public
//! chain and expiry; private keys never leave the process.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use amesh_core::admin::AdminHandler;
use amesh_core::certs::WorkloadCertificate;
use amesh_core::certs::pem::encode_certificate;
use amesh_core::config::{Service, Workload};
use serde_json::{Value, json};

use crate::config_status::ConfigStatus;
use crate::pod::{Pod, PodRegistry};
use crate::proxy::Proxy;
use amesh_core::logging::LogControl;

pub struct ZtunnelAdmin {
    pub proxy: Arc<Proxy>,
    pub pods: Arc<PodRegistry>,
    pub log: LogControl,
    pub config_status: Arc<ConfigStatus>,
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn workload_json(w: &Workload) -> Value {
    json!({
        "uid": w.uid,
        "name": w.name,
        "namespace": w.namespace,
        "serviceAccount": w.service_account,
        "identity": w.identity.to_string(),
        "node": w.node,
        "ips": w.ips,
        "labels": w.labels,
        "protocol": if w.in_mesh() { "HBONE" } else { "TCP" },
        "healthy": w.is_healthy(),
        "waypoint": w.waypoint.map(|wp| format!("{}:{}", wp.address, wp.port)),
    })
}

fn service_json(s: &Service) -> Value {
    json!({
        "name": s.name,
        "namespace": s.namespace,
        "hostname": s.hostname,
        "vips": s.vips,
        "ports": s.ports.iter().map(|p| json!({"port": p.port, "targetPort": p.target_port.unwrap_or(p.port)})).collect::<Vec<_>>(),
        "endpoints": s.endpoints,
        "waypoint": s.waypoint.map(|wp| format!("{}:{}", wp.address, wp.port)),
    })
}

fn certificate_json(cert: &WorkloadCertificate) -> Value {
    let chain: Vec<String> = cert
        .certified_key()
        .cert
        .iter()
        .map(encode_certificate)
        .collect();
    json!({
        "identity": cert.identity().to_string(),
        "chain": chain,
        "roots": cert.roots().to_pem(),
        "notBefore": unix_seconds(cert.not_before()),
        "notAfter": unix_seconds(cert.not_after()),
    })
}

fn pod_json(pod: &Pod) -> Value {
    json!({
        "uid": pod.info.uid,
        "name": pod.name(),
        "identity": pod.identity.to_string(),
    })
}

impl AdminHandler for ZtunnelAdmin {
    fn config_dump(&self) -> Value {
        let snapshot = self.proxy.snapshot();
        let pods = self.pods.pods();
        // One entry per identity: pods of one service account share it.
        let mut certificates: Vec<Value> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for pod in &pods {
            if let Some(cert) = pod.cert.current()
                && seen.insert(cert.identity().to_string())
            {
                certificates.push(certificate_json(&cert));
            }
        }
        json!({
            "node": self.proxy.settings.node,
            "configSource": self.config_status.json(),
            "pods": pods.iter().map(|p| pod_json(p)).collect::<Vec<_>>(),
            "workloads": snapshot.workloads().map(|w| workload_json(w)).collect::<Vec<_>>(),
            "services": snapshot.services().map(|s| service_json(&s.service)).collect::<Vec<_>>(),
            "policies": serde_json::to_value(snapshot.policies()).unwrap_or(Value::Null),
            "certificates": certificates,
        })
    }

    fn log_level(&self) -> String {
        self.log.current()
    }

    fn set_log_level(&self, filter: &str) -> Result<(), String> {
        self.log.set(filter).map(drop)
    }
}
