//! Prometheus metrics, named as Istio names them.
//!
//! One [`Metrics`] per process owns the registry; clone it freely (it is an
//! `Arc`). The admin module's `serve_metrics` exposes [`Metrics::encode`].
//!
//! - [`TcpMetrics`], the counters `istio_tcp_connections_{opened,closed}_total`,
//!   `istio_tcp_{sent,received}_bytes_total` with Istio's standard labels
//!   ([`ConnectionLabels`], built from [`WorkloadFacts`]).
//! - [`ProcessCollector`], `process_*` from /proc/self.
//! - amesh's own: certificate expiry, ZDS messages, config reloads, denials.
//!
//! Cardinality is bounded on purpose: every label value comes from a fixed
//! set or from a workload/identity that exists, and series are dropped when
//! their workload ([`Metrics::forget_workload`]) or identity
//! ([`Metrics::forget_cert`]) goes away.

mod labels;
mod process;
mod tcp;

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

pub use labels::{ConnectionLabels, Reporter, UNKNOWN, WorkloadFacts};
pub use process::ProcessCollector;
pub use tcp::{ConnectionCounters, TcpMetrics};

/// The `content-type` of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why a connection was refused, the `reason` of `amesh_connections_denied_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// An AuthorizationPolicy denied it.
    Policy,
    /// PeerAuthentication STRICT and the client did not use mTLS.
    StrictMtls,
    /// The target is not one ztunnel may connect to (unknown, not local, bad port).
    BadTarget,
}

impl DenyReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Policy => "policy",
            DenyReason::StrictMtls => "strict_mtls",
            DenyReason::BadTarget => "bad_target",
        }
    }

    const ALL: [DenyReason; 3] = [
        DenyReason::Policy,
        DenyReason::StrictMtls,
        DenyReason::BadTarget,
    ];
}

/// The ZDS message kinds counted; anything else counts as `other`.
const ZDS_KINDS: [&str; 5] = ["add", "keep", "delete", "snapshot_sent", "other"];

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IdentityLabel {
    identity: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The process's metrics registry and its metrics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    tcp: TcpMetrics,
    cert_expiry: Family<IdentityLabel, Gauge>,
    zds: Family<TypeLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    denied: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All of amesh's metrics plus the process collector.
    pub fn new() -> Self {
        Self::new_with(|_| {})
    }

    /// Like [`Metrics::new`], letting a binary register its own metrics too
    /// (e.g. ztunnel's L7 metrics) before the registry is frozen.
    pub fn new_with(register: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::default();
        let tcp = TcpMetrics::register(&mut registry);

        let cert_expiry = Family::<IdentityLabel, Gauge>::default();
        registry.register_with_unit(
            "amesh_workload_certificate_expiry_timestamp",
            "When each workload certificate held by this process expires (unix time)",
            Unit::Seconds,
            cert_expiry.clone(),
        );
        let zds = Family::<TypeLabel, Counter>::default();
        registry.register(
            "amesh_zds_messages",
            "ZDS messages handled, by type",
            zds.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "amesh_config_reloads",
            "Config reloads, applied or rejected",
            reloads.clone(),
        );
        let denied = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "amesh_connections_denied",
            "Connections refused, by reason",
            denied.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector::new()));
        register(&mut registry);

        // Export the bounded control counters at zero from the start, so a
        // rate() over them works before the first event.
        for r#type in ZDS_KINDS {
            drop(zds.get_or_create(&TypeLabel { r#type }));
        }
        for result in ["applied", "rejected"] {
            drop(reloads.get_or_create(&ResultLabel { result }));
        }
        for r in DenyReason::ALL {
            drop(denied.get_or_create(&ReasonLabel { reason: r.as_str() }));
        }

        Metrics {
            inner: Arc::new(Inner {
                registry,
                tcp,
                cert_expiry,
                zds,
                reloads,
                denied,
            }),
        }
    }

    /// The `istio_tcp_*` counters.
    pub fn tcp(&self) -> &TcpMetrics {
        &self.inner.tcp
    }

    /// Everything, in the OpenMetrics text format ([`OPENMETRICS_CONTENT_TYPE`]),
    /// ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = text::encode(&mut out, &self.inner.registry) {
            // Only a metric's own encoder can fail (writing to a String cannot);
            // serve what was encoded rather than nothing.
            tracing::warn!(error = %e, "metrics encoding failed; output is partial");
        }
        out
    }

    /// Drops every TCP series whose source or destination workload is
    /// `namespace/name`; call when the workload is deleted. Without this the
    /// series of every pod that ever existed would be exported forever.
    /// Returns how many label sets were dropped.
    pub fn forget_workload(&self, namespace: &str, name: &str) -> usize {
        self.inner.tcp.forget_workload(namespace, name)
    }

    /// Records when `identity`'s current certificate expires (`not_after`, unix seconds).
    pub fn set_cert_expiry(&self, identity: &str, not_after_unix: i64) {
        // Called on each renewal (rare): the label's allocation does not matter.
        let label = IdentityLabel {
            identity: identity.to_owned(),
        };
        self.inner
            .cert_expiry
            .get_or_create(&label)
            .set(not_after_unix);
    }

    /// Drops `identity`'s expiry series, when its certificate is no longer
    /// held (last workload with that identity left the node): an old expiry
    /// would otherwise look like a certificate about to lapse.
    pub fn forget_cert(&self, identity: &str) {
        self.inner.cert_expiry.remove(&IdentityLabel {
            identity: identity.to_owned(),
        });
    }

    /// Counts a ZDS message: `add`, `keep`, `delete` or `snapshot_sent`;
    /// any other kind counts as `other` (keeps the label set bounded).
    pub fn zds_message(&self, kind: &str) {
        let r#type = ZDS_KINDS
            .iter()
            .copied()
            .find(|k| *k == kind)
            .unwrap_or("other");
        self.inner.zds.get_or_create(&TypeLabel { r#type }).inc();
    }

    /// Counts a config reload, applied or rejected.
    pub fn config_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.inner
            .reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a refused connection.
    pub fn denied(&self, reason: DenyReason) {
        self.inner
            .denied
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests;
