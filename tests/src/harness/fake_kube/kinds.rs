//! The resource types the fake serves: a table of the ones amesh uses, and
//! registration of more (a custom resource definition being installed).

/// One resource type: what a CRD (or a built-in API) declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceKind {
    /// Empty for the core group (`/api/v1`).
    pub group: String,
    /// Served versions; objects are stored once and served in each (the
    /// conversion is the identity, as for Istio's CRDs).
    pub versions: Vec<String>,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl ResourceKind {
    pub fn new(group: &str, versions: &[&str], kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_owned(),
            versions: versions.iter().map(|v| (*v).to_owned()).collect(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
        }
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }
}

/// Splits an `apiVersion` into group and version.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

/// What a fresh fake serves: core and discovery kinds, Istio's CRDs, Gateway
/// API and the TokenReview-adjacent kinds tests use.
pub fn builtin() -> Vec<ResourceKind> {
    let core = |kind, plural, namespaced| ResourceKind::new("", &["v1"], kind, plural, namespaced);
    let security = ["v1", "v1beta1"];
    let networking = ["v1", "v1beta1", "v1alpha3"];
    let gateway = ["v1", "v1beta1"];
    vec![
        core("Namespace", "namespaces", false),
        core("Node", "nodes", false),
        core("Pod", "pods", true),
        core("Service", "services", true),
        core("Endpoints", "endpoints", true),
        core("Secret", "secrets", true),
        core("ConfigMap", "configmaps", true),
        core("ServiceAccount", "serviceaccounts", true),
        ResourceKind::new(
            "discovery.k8s.io",
            &["v1"],
            "EndpointSlice",
            "endpointslices",
            true,
        ),
        ResourceKind::new("apps", &["v1"], "Deployment", "deployments", true),
        ResourceKind::new("apps", &["v1"], "DaemonSet", "daemonsets", true),
        ResourceKind::new(
            "apiextensions.k8s.io",
            &["v1"],
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
        ResourceKind::new(
            "security.istio.io",
            &security,
            "AuthorizationPolicy",
            "authorizationpolicies",
            true,
        ),
        ResourceKind::new(
            "security.istio.io",
            &security,
            "PeerAuthentication",
            "peerauthentications",
            true,
        ),
        ResourceKind::new(
            "security.istio.io",
            &security,
            "RequestAuthentication",
            "requestauthentications",
            true,
        ),
        ResourceKind::new(
            "networking.istio.io",
            &networking,
            "VirtualService",
            "virtualservices",
            true,
        ),
        ResourceKind::new(
            "networking.istio.io",
            &networking,
            "DestinationRule",
            "destinationrules",
            true,
        ),
        ResourceKind::new(
            "gateway.networking.k8s.io",
            &gateway,
            "Gateway",
            "gateways",
            true,
        ),
        ResourceKind::new(
            "gateway.networking.k8s.io",
            &gateway,
            "HTTPRoute",
            "httproutes",
            true,
        ),
        ResourceKind::new(
            "gateway.networking.k8s.io",
            &gateway,
            "GatewayClass",
            "gatewayclasses",
            false,
        ),
    ]
}
