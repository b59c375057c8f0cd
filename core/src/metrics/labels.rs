//! Istio's standard TCP metric labels and the workload facts they are made from.
//!
//! Label values are `Arc<str>`: a workload's facts are computed once (when the
//! workload appears in config) and every connection's label set only clones
//! the `Arc`s, so building labels on the connection path does not copy strings.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// Istio's value for a label whose fact is not known.
pub const UNKNOWN: &str = "unknown";

/// Shared `"unknown"`, so unknown labels do not allocate.
static UNKNOWN_ARC: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(UNKNOWN));
/// Istio's canonical revision when a workload has no version label.
static LATEST_ARC: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("latest"));

fn unknown() -> Arc<str> {
    UNKNOWN_ARC.clone()
}

/// Which end of the connection reported the series (Istio's `reporter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client side's proxy (ztunnel outbound).
    Source,
    /// The server side's proxy (ztunnel inbound).
    Destination,
    /// A waypoint, between the two (Istio ambient's value).
    Waypoint,
}

impl Reporter {
    /// The label value Istio uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }
}

impl EncodeLabelValue for Reporter {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// What the metrics need to know about one workload, derived once from its
/// config (name, namespace, identity, Kubernetes labels).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadFacts {
    /// Workload name (Istio's `*_workload`).
    pub name: Arc<str>,
    /// Workload namespace.
    pub namespace: Arc<str>,
    /// SPIFFE identity, `spiffe://<td>/ns/<ns>/sa/<sa>`, or `"unknown"`.
    pub principal: Arc<str>,
    /// `app` (or `app.kubernetes.io/name`) label, or `"unknown"`.
    pub app: Arc<str>,
    /// `version` (or `app.kubernetes.io/version`) label, or `"unknown"`.
    pub version: Arc<str>,
    /// `service.istio.io/canonical-name`, else the app label, else the workload name.
    pub canonical_service: Arc<str>,
    /// `service.istio.io/canonical-revision`, else the version label, else `"latest"`.
    pub canonical_revision: Arc<str>,
}

impl WorkloadFacts {
    /// Derives the facts the way Istio does. Empty label values count as absent.
    pub fn from_labels(
        name: &str,
        namespace: &str,
        principal: &str,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let get = |keys: &[&str]| -> Option<Arc<str>> {
            keys.iter()
                .filter_map(|k| labels.get(*k))
                .find(|v| !v.is_empty())
                .map(|v| Arc::from(v.as_str()))
        };
        let name = non_empty(name);
        let app = get(&["app", "app.kubernetes.io/name"]);
        let version = get(&["version", "app.kubernetes.io/version"]);
        let canonical_service = get(&["service.istio.io/canonical-name"])
            .or_else(|| app.clone())
            .unwrap_or_else(|| name.clone());
        let canonical_revision = get(&["service.istio.io/canonical-revision"])
            .or_else(|| version.clone())
            .unwrap_or_else(|| LATEST_ARC.clone());
        WorkloadFacts {
            name,
            namespace: non_empty(namespace),
            principal: non_empty(principal),
            app: app.unwrap_or_else(unknown),
            version: version.unwrap_or_else(unknown),
            canonical_service,
            canonical_revision,
        }
    }
}

fn non_empty(v: &str) -> Arc<str> {
    if v.is_empty() {
        unknown()
    } else {
        Arc::from(v)
    }
}

/// The label set of the four `istio_tcp_*` series, with Istio's label names.
///
/// Build it once per connection with [`ConnectionLabels::new`] and pass the
/// same value to every [`TcpMetrics`](super::TcpMetrics) call for that
/// connection: opened and closed counts only line up if the label sets are equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub reporter: Reporter,
    pub source_workload: Arc<str>,
    pub source_canonical_service: Arc<str>,
    pub source_canonical_revision: Arc<str>,
    pub source_workload_namespace: Arc<str>,
    pub source_principal: Arc<str>,
    pub source_app: Arc<str>,
    pub source_version: Arc<str>,
    pub destination_workload: Arc<str>,
    pub destination_workload_namespace: Arc<str>,
    pub destination_principal: Arc<str>,
    pub destination_app: Arc<str>,
    pub destination_version: Arc<str>,
    pub destination_service: Arc<str>,
    pub destination_service_namespace: Arc<str>,
    pub destination_service_name: Arc<str>,
    pub destination_canonical_service: Arc<str>,
    pub destination_canonical_revision: Arc<str>,
    /// Always `"tcp"` for these metrics.
    pub request_protocol: &'static str,
    /// Envoy-style flags; `"-"` when none (as Istio), e.g. `"DENY"`, `"CONNECT"`.
    pub response_flags: &'static str,
    /// `"mutual_tls"` or `"none"`.
    pub connection_security_policy: &'static str,
}

impl ConnectionLabels {
    /// Labels for one connection. Missing facts become `"unknown"`.
    ///
    /// `service` is `(hostname, namespace, name)` of the service the client
    /// addressed, if it addressed one (a VIP) rather than a pod directly.
    pub fn new(
        reporter: Reporter,
        src: Option<&WorkloadFacts>,
        dst: Option<&WorkloadFacts>,
        service: Option<(&str, &str, &str)>,
        mtls: bool,
    ) -> Self {
        let f = |facts: Option<&WorkloadFacts>, pick: fn(&WorkloadFacts) -> &Arc<str>| {
            facts.map_or_else(unknown, |w| pick(w).clone())
        };
        let (svc_host, svc_ns, svc_name) = match service {
            Some((host, ns, name)) => (non_empty(host), non_empty(ns), non_empty(name)),
            None => (unknown(), unknown(), unknown()),
        };
        ConnectionLabels {
            reporter,
            source_workload: f(src, |w| &w.name),
            source_canonical_service: f(src, |w| &w.canonical_service),
            source_canonical_revision: f(src, |w| &w.canonical_revision),
            source_workload_namespace: f(src, |w| &w.namespace),
            source_principal: f(src, |w| &w.principal),
            source_app: f(src, |w| &w.app),
            source_version: f(src, |w| &w.version),
            destination_workload: f(dst, |w| &w.name),
            destination_workload_namespace: f(dst, |w| &w.namespace),
            destination_principal: f(dst, |w| &w.principal),
            destination_app: f(dst, |w| &w.app),
            destination_version: f(dst, |w| &w.version),
            destination_service: svc_host,
            destination_service_namespace: svc_ns,
            destination_service_name: svc_name,
            destination_canonical_service: f(dst, |w| &w.canonical_service),
            destination_canonical_revision: f(dst, |w| &w.canonical_revision),
            request_protocol: "tcp",
            response_flags: "-",
            connection_security_policy: if mtls { "mutual_tls" } else { "none" },
        }
    }

    /// Sets Istio's `response_flags` (e.g. `"DENY"` for a policy denial).
    pub fn with_response_flags(mut self, flags: &'static str) -> Self {
        self.response_flags = flags;
        self
    }

    /// Sets `destination_principal` when the peer's identity is only known
    /// from the handshake (e.g. the destination pod is on another node).
    pub fn with_destination_principal(mut self, principal: &str) -> Self {
        self.destination_principal = non_empty(principal);
        self
    }

    /// Sets `source_principal` from the client certificate seen on inbound.
    pub fn with_source_principal(mut self, principal: &str) -> Self {
        self.source_principal = non_empty(principal);
        self
    }
}

/// Helper for tests and callers that want a `BTreeMap` of labels inline.
#[cfg(test)]
pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_follow_istio_label_precedence() {
        let w = WorkloadFacts::from_labels(
            "backend",
            "default",
            "spiffe://cluster.local/ns/default/sa/backend",
            &labels(&[("app.kubernetes.io/name", "be"), ("version", "v2")]),
        );
        assert_eq!(&*w.app, "be");
        assert_eq!(&*w.version, "v2");
        assert_eq!(&*w.canonical_service, "be");
        assert_eq!(&*w.canonical_revision, "v2");

        let w = WorkloadFacts::from_labels(
            "backend",
            "default",
            "",
            &labels(&[
                ("app", "a"),
                ("app.kubernetes.io/name", "b"),
                ("app.kubernetes.io/version", ""),
            ]),
        );
        assert_eq!(&*w.app, "a");
        assert_eq!(&*w.version, UNKNOWN);
        assert_eq!(&*w.principal, UNKNOWN);
        assert_eq!(&*w.canonical_revision, "latest");

        let w = WorkloadFacts::from_labels(
            "backend",
            "default",
            "spiffe://x",
            &labels(&[
                ("app", "a"),
                ("service.istio.io/canonical-name", "canon"),
                ("service.istio.io/canonical-revision", "r7"),
            ]),
        );
        assert_eq!(&*w.canonical_service, "canon");
        assert_eq!(&*w.canonical_revision, "r7");

        let w = WorkloadFacts::from_labels("solo", "ns", "spiffe://x", &BTreeMap::new());
        assert_eq!(&*w.app, UNKNOWN);
        assert_eq!(&*w.canonical_service, "solo");
    }

    #[test]
    fn connection_labels_fill_unknown() {
        let src =
            WorkloadFacts::from_labels("fe", "default", "spiffe://a", &labels(&[("app", "fe")]));
        let l = ConnectionLabels::new(Reporter::Source, Some(&src), None, None, false);
        assert_eq!(&*l.source_workload, "fe");
        assert_eq!(&*l.source_app, "fe");
        assert_eq!(&*l.destination_workload, UNKNOWN);
        assert_eq!(&*l.destination_service, UNKNOWN);
        assert_eq!(l.connection_security_policy, "none");
        assert_eq!(l.response_flags, "-");
        let l = ConnectionLabels::new(
            Reporter::Destination,
            None,
            Some(&src),
            Some(("fe.default.svc.cluster.local", "default", "fe")),
            true,
        )
        .with_response_flags("DENY");
        assert_eq!(l.reporter.as_str(), "destination");
        assert_eq!(&*l.destination_service, "fe.default.svc.cluster.local");
        assert_eq!(&*l.destination_service_name, "fe");
        assert_eq!(l.connection_security_policy, "mutual_tls");
        assert_eq!(l.response_flags, "DENY");
    }
}
