//! What the control plane's admin endpoint (localhost only) shows and
//! changes: `/config_dump` (the store, every report, the derived model and
//! resource counts) and `/logging`.

use std::collections::BTreeMap;
use std::sync::Arc;

use amesh_core::admin::{AdminHandler, Readiness};
use amesh_core::config::{Service, Workload};
use amesh_core::logging::LogControl;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::derive::Derived;
use crate::store::{Kind, Store};

/// The admin endpoint's view of the control plane.
#[derive(Debug)]
pub struct ControlPlaneAdmin {
    pub store: Arc<Store>,
    pub derived: watch::Receiver<Arc<Derived>>,
    /// `None` when logging was set up elsewhere (tests).
    pub log: Option<LogControl>,
}

fn workload_json(w: &Workload) -> Value {
    json!({
        "uid": w.uid,
        "namespace": w.namespace,
        "name": w.name,
        "identity": w.identity.to_string(),
        "node": w.node,
        "ips": w.ips,
        "protocol": if w.in_mesh() { "HBONE" } else { "TCP" },
        "healthy": w.is_healthy(),
        "hostNetwork": w.host_network,
        "waypoint": w.waypoint.map(|wp| format!("{}:{}", wp.address, wp.port)),
        "authorizationPolicies": w.authorization_policies,
    })
}

fn service_json(s: &Service) -> Value {
    json!({
        "namespace": s.namespace,
        "name": s.name,
        "hostname": s.hostname,
        "vips": s.vips,
        "ports": s.ports.iter().map(|p| json!({"port": p.port, "targetPort": p.target()})).collect::<Vec<_>>(),
        "endpoints": s.endpoints,
        "waypoint": s.waypoint.map(|wp| format!("{}:{}", wp.address, wp.port)),
    })
}

/// The whole dump, also used by tests.
pub fn config_dump(store: &Store, derived: &Derived) -> Value {
    let snapshot = store.snapshot();
    let mut counts: BTreeMap<String, usize> =
        Kind::ALL.iter().map(|k| (k.to_string(), 0)).collect();
    for key in snapshot.objects.keys() {
        *counts.entry(key.kind.to_string()).or_default() += 1;
    }
    let resources: BTreeMap<&str, usize> = derived
        .resources
        .by_type
        .iter()
        .map(|(t, r)| (*t, r.len()))
        .collect();
    let model = derived.model();
    json!({
        "store": {
            "generation": snapshot.generation,
            "objects": counts,
        },
        "derived": {
            "generation": derived.generation,
            "resources": resources,
        },
        "reports": derived.reports,
        "namespaces": model.namespaces().values().map(|n| json!({
            "name": n.name,
            "labels": n.labels,
            "ambient": model.namespace_is_ambient(&n.name),
        })).collect::<Vec<_>>(),
        "workloads": model.workloads().map(|w| workload_json(w)).collect::<Vec<_>>(),
        "services": model.services().map(|s| service_json(&s.service)).collect::<Vec<_>>(),
        "policies": serde_json::to_value(model.policies()).unwrap_or(Value::Null),
    })
}

impl AdminHandler for ControlPlaneAdmin {
    fn config_dump(&self) -> Value {
        let derived = self.derived.borrow().clone();
        config_dump(&self.store, &derived)
    }

    fn log_level(&self) -> String {
        self.log
            .as_ref()
            .map(LogControl::current)
            .unwrap_or_default()
    }

    fn set_log_level(&self, filter: &str) -> Result<(), String> {
        match &self.log {
            Some(log) => log.set(filter).map(drop),
            None => Err("logging is not controlled by this process".to_owned()),
        }
    }
}

/// Ready once a derivation of a loaded store (generation above 0) is out.
pub fn readiness(
    mut derived: watch::Receiver<Arc<Derived>>,
    cancel: CancellationToken,
) -> watch::Receiver<Readiness> {
    let (tx, rx) = watch::channel(Readiness::not_ready("waiting for the first configuration"));
    tokio::spawn(async move {
        loop {
            if derived.borrow_and_update().generation > 0 {
                tx.send_replace(Readiness::ready());
                return;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = derived.changed() => if changed.is_err() { return },
            }
        }
    });
    rx
}
