//! The immutable route table and request evaluation.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use http::request::Parts;
use rand::Rng;

use super::build;
use super::decision::{
    Decision, Destination, DirectResponse, Forward, HeaderOpsChain, Redirect, RouteInfo,
};
use super::header_ops::HeaderOps;
use super::input::{BoundService, RouteInputs};
use super::matcher::{PathMatched, RequestMatch};
use super::path_rewrite::PathRewrite;
use super::problem::BuildProblem;
use super::redirect::RedirectSpec;
use super::weighted::Weighted;

/// Routes for every service bound to one waypoint. Immutable: a config
/// change builds a new table (swap it behind an `Arc` so in-flight requests
/// finish on the old one).
#[derive(Debug, Default)]
pub struct RouteTable {
    /// By service FQDN.
    services: HashMap<String, ServiceRoutes>,
}

/// One bound service's routes.
#[derive(Debug)]
pub(crate) struct ServiceRoutes {
    pub(crate) service: BoundService,
    pub(crate) routes: ServiceRouting,
}

/// How a service routes.
#[derive(Debug)]
pub(crate) enum ServiceRouting {
    /// No VirtualService or HTTPRoute: to the service itself.
    ToItself(Arc<RouteInfo>),
    /// Ordered rules; the first that matches wins, none: 404.
    Rules(Vec<Route>),
}

/// One rule (or, for HTTPRoutes, one rule's match).
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) info: Arc<RouteInfo>,
    /// Only requests to this port (HTTPRoute `parentRefs[].port`).
    pub(crate) port: Option<u16>,
    /// Any one selects the rule; empty: every request.
    pub(crate) matches: Vec<RequestMatch>,
    pub(crate) action: Action,
}

/// What a matched rule does.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    Forward(ForwardAction),
    Redirect {
        spec: RedirectSpec,
        response_headers: Option<Arc<HeaderOps>>,
    },
    Direct {
        status: StatusCode,
        body: Arc<[u8]>,
    },
}

/// A forwarding rule's settings.
#[derive(Clone, Debug)]
pub(crate) struct ForwardAction {
    /// `None`: no usable backend (Gateway API: 500).
    pub(crate) backends: Option<Weighted<Backend>>,
    pub(crate) path: Option<PathRewrite>,
    pub(crate) authority: Option<Arc<str>>,
    pub(crate) request_headers: Option<Arc<HeaderOps>>,
    pub(crate) response_headers: Option<Arc<HeaderOps>>,
}

/// One weighted backend.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Service {
        destination: Arc<Destination>,
        request_headers: Option<Arc<HeaderOps>>,
        response_headers: Option<Arc<HeaderOps>>,
    },
    /// A backend that cannot be reached (unknown subset, unsupported kind):
    /// its share of requests gets this status.
    Unusable(StatusCode),
}

impl RouteTable {
    /// Compiles the table. Never fails: what cannot be used is skipped and
    /// returned as problems (log or report them).
    pub fn build(inputs: &RouteInputs) -> (Self, Vec<BuildProblem>) {
        let (services, problems) = build::build(inputs);
        (Self { services }, problems)
    }

    /// Whether `service_host` (FQDN) is bound to this waypoint.
    pub fn serves(&self, service_host: &str) -> bool {
        self.services.contains_key(service_host)
    }

    /// The decision for a request to `service_host` (FQDN) on `port`, with
    /// weighted choices drawn from the thread's RNG.
    pub fn route(&self, service_host: &str, port: u16, req: &Parts) -> Decision {
        self.route_with(service_host, port, req, &mut rand::rng())
    }

    /// [`Self::route`] with weighted choices drawn from `rng` (seed it in
    /// tests).
    pub fn route_with<R: Rng + ?Sized>(
        &self,
        service_host: &str,
        port: u16,
        req: &Parts,
        rng: &mut R,
    ) -> Decision {
        let Some(svc) = self.services.get(service_host) else {
            tracing::debug!(service_host, "no bound service");
            return Decision::NotFound;
        };
        if !svc.service.serves_port(port) {
            return Decision::NotFound;
        }
        let rules = match &svc.routes {
            ServiceRouting::ToItself(info) => {
                return Decision::Forward(Forward {
                    route: info.clone(),
                    destination: Arc::new(Destination {
                        host: svc.service.hostname.clone(),
                        port: Some(port),
                        subset: None,
                    }),
                    request_headers: HeaderOpsChain::default(),
                    response_headers: HeaderOpsChain::default(),
                    path_and_query: None,
                    authority: None,
                });
            }
            ServiceRouting::Rules(rules) => rules,
        };
        for route in rules {
            if route.port.is_some_and(|p| p != port) {
                continue;
            }
            let matched = if route.matches.is_empty() {
                Some(PathMatched::Any)
            } else {
                route.matches.iter().find_map(|m| m.evaluate(port, req))
            };
            if let Some(matched) = matched {
                return route.decide(port, req, matched, rng);
            }
        }
        Decision::NotFound
    }
}

impl Route {
    fn decide<R: Rng + ?Sized>(
        &self,
        port: u16,
        req: &Parts,
        matched: PathMatched,
        rng: &mut R,
    ) -> Decision {
        let route = self.info.clone();
        match &self.action {
            Action::Redirect {
                spec,
                response_headers,
            } => Decision::Redirect(Redirect {
                route,
                location: spec.location(port, req, matched),
                status: spec.status,
                response_headers: HeaderOpsChain {
                    destination: None,
                    rule: response_headers.clone(),
                },
            }),
            Action::Direct { status, body } => Decision::Direct(DirectResponse {
                route,
                status: *status,
                body: body.clone(),
            }),
            Action::Forward(fwd) => {
                let picked = fwd.backends.as_ref().and_then(|b| b.pick(rng));
                let (destination, dest_req, dest_resp) = match picked {
                    Some(Backend::Service {
                        destination,
                        request_headers,
                        response_headers,
                    }) => (destination, request_headers, response_headers),
                    Some(Backend::Unusable(status)) => {
                        return direct(route, *status);
                    }
                    None => return direct(route, StatusCode::INTERNAL_SERVER_ERROR),
                };
                Decision::Forward(Forward {
                    route,
                    destination: destination.clone(),
                    request_headers: HeaderOpsChain {
                        destination: dest_req.clone(),
                        rule: fwd.request_headers.clone(),
                    },
                    response_headers: HeaderOpsChain {
                        destination: dest_resp.clone(),
                        rule: fwd.response_headers.clone(),
                    },
                    path_and_query: fwd
                        .path
                        .as_ref()
                        .map(|rw| rw.apply(req.uri.path(), req.uri.query(), matched)),
                    authority: fwd.authority.clone(),
                })
            }
        }
    }
}

fn direct(route: Arc<RouteInfo>, status: StatusCode) -> Decision {
    Decision::Direct(DirectResponse {
        route,
        status,
        body: Arc::from(&b""[..]),
    })
}
