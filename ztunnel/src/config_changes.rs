//! Acts on each new config: closes open connections that a policy now
//! denies, and drops the metric series of workloads that left.

use std::collections::HashSet;
use std::sync::Arc;

use amesh_core::config::ConfigSnapshot;
use amesh_core::metrics::Metrics;
use tracing::info;

use crate::authz;
use crate::proxy::Proxy;

pub async fn follow(proxy: Arc<Proxy>) {
    let mut config = proxy.config.clone();
    let mut previous = config.borrow_and_update().clone();
    while config.changed().await.is_ok() {
        let current = config.borrow_and_update().clone();
        forget_departed(&proxy.metrics, &previous, &current);
        let trust_domain = &proxy.settings.trust_domain;
        let revoked = proxy.live.revoke(|conn| {
            let Ok(identity) = amesh_core::Identity::new(
                trust_domain,
                &conn.pod.namespace,
                &conn.pod.service_account,
            ) else {
                return true;
            };
            let dst = authz::dst_workload(&current, &conn.pod, &identity);
            match authz::admit(
                &current,
                &dst,
                conn.src_ip,
                conn.src_identity.as_ref(),
                conn.dst,
            ) {
                Ok(_) => true,
                Err(refusal) => {
                    info!(dst.workload = %format!("{}/{}", conn.pod.namespace, conn.pod.name),
                        src.addr = %conn.src_ip, dst.addr = %conn.dst, reason = %refusal,
                        "open connection closed: the new config denies it");
                    false
                }
            }
        });
        if revoked > 0 {
            info!(revoked, "config change closed connections it now denies");
        }
        previous = current;
    }
}

/// Bounded cardinality: a workload that is gone takes its series with it.
fn forget_departed(metrics: &Metrics, previous: &ConfigSnapshot, current: &ConfigSnapshot) {
    let now: HashSet<(&str, &str)> = current
        .workloads()
        .map(|w| (w.namespace.as_str(), w.name.as_str()))
        .collect();
    for w in previous.workloads() {
        if !now.contains(&(w.namespace.as_str(), w.name.as_str())) {
            let dropped = metrics.forget_workload(&w.namespace, &w.name);
            info!(workload = %format!("{}/{}", w.namespace, w.name), series = dropped, "workload removed: its metric series dropped");
        }
    }
}
