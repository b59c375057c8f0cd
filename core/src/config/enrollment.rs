//! Which pods are in the mesh, decided as Istio's ambient mode decides it, in
//! one place for the node agent, the CNI plugin's offline fallback and
//! (later) the control plane.
//!
//! A pod is in the mesh when its namespace, or the pod itself, is labelled
//! `istio.io/dataplane-mode=ambient`, unless the pod is labelled `none`.
//! Never in the mesh, whatever the labels: hostNetwork pods (their netns is
//! the node's), pods in the mesh's own namespace, and waypoints (proxies
//! that ztunnel sends to; capturing them would loop).

use std::collections::BTreeMap;

/// The label that opts a namespace or pod in (`ambient`) or out (`none`).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";
pub const DATAPLANE_MODE_NONE: &str = "none";
/// Istio labels the waypoint pods it deploys with this (value
/// `istio.io-mesh-controller`); Gateway API labels them with their class.
pub const WAYPOINT_MANAGED_LABEL: &str = "gateway.istio.io/managed";
pub const GATEWAY_CLASS_LABEL: &str = "gateway.networking.k8s.io/gateway-class-name";
pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// What the decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct PodFacts<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub host_network: bool,
}

/// The verdict, with the reason a pod stays out (for logs and errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrollment {
    Ambient,
    Out(OutReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutReason {
    #[error("hostNetwork pods are never captured (their netns is the node's)")]
    HostNetwork,
    #[error("pods in the mesh's own namespace are never captured")]
    MeshNamespace,
    #[error("waypoint pods are never captured")]
    Waypoint,
    #[error("the pod is labelled istio.io/dataplane-mode=none")]
    PodOptedOut,
    #[error("neither the pod nor its namespace is labelled istio.io/dataplane-mode=ambient")]
    NotLabelled,
}

impl Enrollment {
    pub fn is_ambient(self) -> bool {
        self == Enrollment::Ambient
    }
}

/// Decides for one pod; `namespace_labels` is `None` for a namespace the
/// source does not know (treated as unlabelled).
pub fn decide(
    pod: PodFacts<'_>,
    namespace_labels: Option<&BTreeMap<String, String>>,
    mesh_namespace: &str,
) -> Enrollment {
    if pod.host_network {
        return Enrollment::Out(OutReason::HostNetwork);
    }
    if pod.namespace == mesh_namespace {
        return Enrollment::Out(OutReason::MeshNamespace);
    }
    if is_waypoint(pod.labels) {
        return Enrollment::Out(OutReason::Waypoint);
    }
    match pod.labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) {
        Some(DATAPLANE_MODE_NONE) => Enrollment::Out(OutReason::PodOptedOut),
        Some(DATAPLANE_MODE_AMBIENT) => Enrollment::Ambient,
        _ if namespace_is_ambient(namespace_labels) => Enrollment::Ambient,
        _ => Enrollment::Out(OutReason::NotLabelled),
    }
}

pub fn namespace_is_ambient(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(DATAPLANE_MODE_LABEL))
        .is_some_and(|v| v == DATAPLANE_MODE_AMBIENT)
}

pub fn is_waypoint(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key(WAYPOINT_MANAGED_LABEL)
        || labels
            .get(GATEWAY_CLASS_LABEL)
            .is_some_and(|c| c == WAYPOINT_CLASS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn verdict(ns_labels: &[(&str, &str)], pod_labels: &[(&str, &str)], ns: &str) -> Enrollment {
        let pod = labels(pod_labels);
        let namespace = labels(ns_labels);
        decide(
            PodFacts {
                namespace: ns,
                labels: &pod,
                host_network: false,
            },
            Some(&namespace),
            "amesh-system",
        )
    }

    #[test]
    fn namespace_label_enrolls_and_pod_label_overrides() {
        let ambient = [(DATAPLANE_MODE_LABEL, "ambient")];
        assert_eq!(verdict(&ambient, &[], "app"), Enrollment::Ambient);
        assert_eq!(
            verdict(&ambient, &[(DATAPLANE_MODE_LABEL, "none")], "app"),
            Enrollment::Out(OutReason::PodOptedOut)
        );
        assert_eq!(
            verdict(&[], &[(DATAPLANE_MODE_LABEL, "ambient")], "app"),
            Enrollment::Ambient
        );
        assert_eq!(
            verdict(&[], &[], "app"),
            Enrollment::Out(OutReason::NotLabelled)
        );
        assert_eq!(
            verdict(&[(DATAPLANE_MODE_LABEL, "sidecar")], &[], "app"),
            Enrollment::Out(OutReason::NotLabelled)
        );
    }

    #[test]
    fn never_enrolled_whatever_the_labels() {
        let ambient = [(DATAPLANE_MODE_LABEL, "ambient")];
        assert_eq!(
            verdict(&ambient, &ambient, "amesh-system"),
            Enrollment::Out(OutReason::MeshNamespace)
        );
        assert_eq!(
            verdict(&ambient, &[(GATEWAY_CLASS_LABEL, WAYPOINT_CLASS)], "app"),
            Enrollment::Out(OutReason::Waypoint)
        );
        assert_eq!(
            verdict(
                &ambient,
                &[(WAYPOINT_MANAGED_LABEL, "istio.io-mesh-controller")],
                "app"
            ),
            Enrollment::Out(OutReason::Waypoint)
        );
        let pod = labels(&ambient);
        let host = decide(
            PodFacts {
                namespace: "app",
                labels: &pod,
                host_network: true,
            },
            Some(&pod),
            "amesh-system",
        );
        assert_eq!(host, Enrollment::Out(OutReason::HostNetwork));
    }
}
