//! What the routing engine decides for one request.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};

use super::header_ops::HeaderOps;

/// The outcome of [`super::RouteTable::route`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the request upstream.
    Forward(Forward),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with this status and body without forwarding (VirtualService
    /// `directResponse`, an HTTPRoute rule without usable backends, a
    /// destination subset that no DestinationRule defines).
    Direct(DirectResponse),
    /// No route matches (or the service is not bound here): answer 404.
    NotFound,
}

impl Decision {
    /// The route that decided, for telemetry; `None` for [`Decision::NotFound`].
    pub fn route(&self) -> Option<&Arc<RouteInfo>> {
        match self {
            Self::Forward(f) => Some(&f.route),
            Self::Redirect(r) => Some(&r.route),
            Self::Direct(d) => Some(&d.route),
            Self::NotFound => None,
        }
    }
}

/// Where and how to forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The matched route.
    pub route: Arc<RouteInfo>,
    /// The chosen destination.
    pub destination: Arc<Destination>,
    /// Changes to the request headers, before forwarding.
    pub request_headers: HeaderOpsChain,
    /// Changes to the response headers, before answering.
    pub response_headers: HeaderOpsChain,
    /// New path and query (`/users/42?x=1`) when the route rewrites the path.
    pub path_and_query: Option<String>,
    /// New authority (Host / `:authority`) when the route rewrites it.
    pub authority: Option<Arc<str>>,
}

/// A redirect answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The matched route.
    pub route: Arc<RouteInfo>,
    /// The `Location` header value.
    pub location: String,
    /// 3xx status (Istio default 301, Gateway API default 302).
    pub status: StatusCode,
    /// Changes to the response headers (Gateway API response filters).
    pub response_headers: HeaderOpsChain,
}

/// A direct answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectResponse {
    /// The matched route.
    pub route: Arc<RouteInfo>,
    /// Status.
    pub status: StatusCode,
    /// Body (may be empty).
    pub body: Arc<[u8]>,
}

/// An upstream service, and which of its endpoints may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// FQDN, e.g. `reviews.shop.svc.cluster.local`.
    pub host: String,
    /// The service port named by the route; `None`: the request's port
    /// (or, for another service, its only port: the proxy resolves it).
    pub port: Option<u16>,
    /// Only endpoints of this subset.
    pub subset: Option<Subset>,
}

/// A DestinationRule subset: endpoints whose labels include all of these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subset {
    /// Subset name.
    pub name: String,
    /// Label selector.
    pub labels: BTreeMap<String, String>,
}

impl Subset {
    /// Whether an endpoint with `labels` belongs to the subset.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Header changes from a route rule and from the chosen destination.
/// Applied destination first, then rule, so the rule's `set` wins (Envoy's
/// default order: the less specific level is applied last).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderOpsChain {
    /// Destination-level (`route[].headers`, backendRef filters).
    pub destination: Option<Arc<HeaderOps>>,
    /// Rule-level (`http[].headers`, rule filters).
    pub rule: Option<Arc<HeaderOps>>,
}

impl HeaderOpsChain {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.destination.is_none() && self.rule.is_none()
    }

    /// Applies every change to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for ops in [&self.destination, &self.rule].into_iter().flatten() {
            ops.apply(headers);
        }
    }
}

/// Which resource a route came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteSource {
    /// A VirtualService `http[]` rule.
    VirtualService,
    /// An HTTPRoute `rules[]` entry.
    HttpRoute,
    /// The implicit route of a service without routes: to itself.
    Default,
}

/// The identity of a route, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteInfo {
    /// Which kind of resource.
    pub source: RouteSource,
    /// Resource namespace (the service's for the default route).
    pub namespace: String,
    /// Resource name (the service host for the default route).
    pub name: String,
    /// Index of the rule in `http[]` / `rules[]`.
    pub rule_index: usize,
    /// The rule's `name`, when set.
    pub rule_name: Option<String>,
}
