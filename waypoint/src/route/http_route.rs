//! Gateway API HTTPRoutes bound to Services (GAMMA) compiled to routes,
//! with the Gateway API precedence order.

use std::cmp::Reverse;
use std::sync::Arc;

use amesh_core::l7::HttpRouteSpec;
use amesh_core::l7::gateway_api::{
    FilterType, HttpBackendRef, HttpHeaderMatch, HttpPathModifier, HttpRouteFilter, HttpRouteMatch,
    PathMatchType, PathModifierType, RequestRedirect, ValueMatchType,
};
use http::{HeaderName, StatusCode};

use super::decision::{Destination, RouteInfo, RouteSource};
use super::header_ops::HeaderOps;
use super::hosts;
use super::matcher::{PathMatch, RequestMatch};
use super::path_rewrite::PathRewrite;
use super::problem::Reporter;
use super::redirect::{RedirectHost, RedirectPort, RedirectSpec};
use super::string_match::{StrMatch, full_match_regex};
use super::table::{Action, Backend, ForwardAction, Route};
use super::weighted::Weighted;

/// A route for one service, with its precedence.
#[derive(Debug)]
pub(crate) struct BoundRoute {
    /// FQDN of the parent Service.
    pub(crate) host: String,
    pub(crate) key: Precedence,
    pub(crate) route: Route,
}

/// Gateway API precedence, smallest first: exact path, then regex, then
/// the longest prefix; then a method match; then most header matches; then
/// most query matches. Ties: resource namespace/name (creation time is not
/// known here), rule index, match index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Precedence {
    path_kind: u8,
    path_len: Reverse<usize>,
    no_method: bool,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    resource: (String, String),
    rule: usize,
    matched: usize,
}

/// Every (parent Service, rule, match) of `spec`.
pub(crate) fn compile(
    spec: &HttpRouteSpec,
    cluster_domain: &str,
    r: &mut Reporter<'_>,
) -> Vec<BoundRoute> {
    let parents: Vec<(String, Option<u16>)> = spec
        .parent_refs
        .iter()
        .filter(|p| {
            // As the control plane reads it: an unset group with kind
            // Service is the core group.
            matches!(p.group.as_deref(), None | Some("" | "core"))
                && p.kind.as_deref() == Some("Service")
        })
        .map(|p| {
            let ns = p.namespace.as_deref().unwrap_or(r.namespace);
            let port = p.port.and_then(|port| u16::try_from(port).ok());
            (hosts::service_fqdn(&p.name, ns, cluster_domain), port)
        })
        .collect();
    if parents.is_empty() {
        return Vec::new();
    }
    if !spec.hostnames.is_empty() {
        // GAMMA: a route attached to a Service applies to that Service
        // whatever the Host header.
        r.unsupported("spec.hostnames");
    }
    let mut out = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let info = Arc::new(RouteInfo {
            source: RouteSource::HttpRoute,
            namespace: r.namespace.to_owned(),
            name: r.name.to_owned(),
            rule_index: i,
            rule_name: rule.name.clone(),
        });
        let action = compile_action(rule, &at, cluster_domain, r);
        // No matches: one implicit `PathPrefix /`.
        let default_match = [HttpRouteMatch::default()];
        let matches = if rule.matches.is_empty() {
            &default_match[..]
        } else {
            &rule.matches[..]
        };
        for (j, m) in matches.iter().enumerate() {
            let before = r.problems.len();
            let mut compiled = compile_match(m, &format!("{at}.matches[{j}]"), r);
            compiled.invalid = r.problems.len() > before;
            let key = precedence(m, (r.namespace, r.name), i, j);
            for (host, port) in &parents {
                out.push(BoundRoute {
                    host: host.clone(),
                    key: key.clone(),
                    route: Route {
                        info: info.clone(),
                        port: *port,
                        matches: vec![compiled.clone()],
                        action: action.clone(),
                    },
                });
            }
        }
    }
    out
}

fn precedence(
    m: &HttpRouteMatch,
    resource: (&str, &str),
    rule: usize,
    matched: usize,
) -> Precedence {
    let (kind, value) = path_of(m);
    let path_kind = match kind {
        PathMatchType::Exact => 0,
        PathMatchType::RegularExpression => 1,
        PathMatchType::PathPrefix => 2,
    };
    Precedence {
        path_kind,
        path_len: Reverse(value.len()),
        no_method: m.method.is_none(),
        headers: Reverse(m.headers.len()),
        query: Reverse(m.query_params.len()),
        resource: (resource.0.to_owned(), resource.1.to_owned()),
        rule,
        matched,
    }
}

/// The path match with its defaults (`PathPrefix`, `/`).
fn path_of(m: &HttpRouteMatch) -> (PathMatchType, &str) {
    let p = m.path.as_ref();
    (
        p.and_then(|p| p.kind).unwrap_or(PathMatchType::PathPrefix),
        p.and_then(|p| p.value.as_deref()).unwrap_or("/"),
    )
}

fn compile_match(m: &HttpRouteMatch, at: &str, r: &mut Reporter<'_>) -> RequestMatch {
    let (kind, value) = path_of(m);
    let path = match kind {
        PathMatchType::Exact => PathMatch::Exact {
            value: value.to_owned(),
            ignore_case: false,
        },
        PathMatchType::PathPrefix => PathMatch::Segments {
            value: value.trim_end_matches('/').to_owned(),
        },
        PathMatchType::RegularExpression => {
            PathMatch::Regex(regex_match(value, &format!("{at}.path.value"), r))
        }
    };
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(k, h)| {
            let f = format!("{at}.headers[{k}]");
            let value = value_match(h, &f, r);
            match HeaderName::from_bytes(h.name.as_bytes()) {
                Ok(n) => (n, value),
                Err(_) => {
                    r.error(
                        format!("{f}.name"),
                        "invalid header name: the match never matches",
                    );
                    // Placeholder: the reported error marks the entry invalid.
                    (
                        HeaderName::from_static("x-amesh-invalid-header-name"),
                        StrMatch::Regex(None),
                    )
                }
            }
        })
        .collect();
    let query_params = m
        .query_params
        .iter()
        .enumerate()
        .map(|(k, q)| {
            (
                q.name.clone(),
                value_match(q, &format!("{at}.queryParams[{k}]"), r),
            )
        })
        .collect();
    RequestMatch {
        path: Some(path),
        method: m
            .method
            .map(|meth| StrMatch::Exact(method_name(meth).to_owned())),
        headers,
        query_params,
        ..RequestMatch::default()
    }
}

fn method_name(m: amesh_core::l7::gateway_api::HttpMethod) -> &'static str {
    use amesh_core::l7::gateway_api::HttpMethod as M;
    match m {
        M::Get => "GET",
        M::Head => "HEAD",
        M::Post => "POST",
        M::Put => "PUT",
        M::Delete => "DELETE",
        M::Connect => "CONNECT",
        M::Options => "OPTIONS",
        M::Trace => "TRACE",
        M::Patch => "PATCH",
    }
}

fn value_match(h: &HttpHeaderMatch, at: &str, r: &mut Reporter<'_>) -> StrMatch {
    match h.kind.unwrap_or(ValueMatchType::Exact) {
        ValueMatchType::Exact => StrMatch::Exact(h.value.clone()),
        ValueMatchType::RegularExpression => regex_match(&h.value, &format!("{at}.value"), r),
    }
}

/// A bad regex is reported and never matches.
fn regex_match(pattern: &str, at: &str, r: &mut Reporter<'_>) -> StrMatch {
    match full_match_regex(pattern) {
        Ok(re) => StrMatch::Regex(Some(re)),
        Err(e) => {
            r.error(at, e);
            StrMatch::Regex(None)
        }
    }
}

fn compile_action(
    rule: &amesh_core::l7::gateway_api::HttpRouteRule,
    at: &str,
    cluster_domain: &str,
    r: &mut Reporter<'_>,
) -> Action {
    let filters = Filters::compile(&rule.filters, &format!("{at}.filters"), true, r);
    if let Some(spec) = filters.redirect {
        return Action::Redirect {
            spec,
            response_headers: filters.response_headers,
        };
    }
    let backends = rule.backend_refs.iter().enumerate().map(|(k, b)| {
        let weight = u64::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        (
            weight,
            backend(b, &format!("{at}.backendRefs[{k}]"), cluster_domain, r),
        )
    });
    Action::Forward(ForwardAction {
        // No backends, or all of weight 0: 500 (Gateway API).
        backends: Weighted::new(backends.collect::<Vec<_>>()),
        path: filters.path,
        authority: filters.authority,
        request_headers: filters.request_headers,
        response_headers: filters.response_headers,
    })
}

fn backend(b: &HttpBackendRef, at: &str, cluster_domain: &str, r: &mut Reporter<'_>) -> Backend {
    let is_service = b
        .group
        .as_deref()
        .is_none_or(|g| g.is_empty() || g == "core")
        && b.kind.as_deref().is_none_or(|k| k == "Service");
    if !is_service {
        r.unsupported(format!("{at}.kind"));
        return Backend::Unusable(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let ns = b.namespace.as_deref().unwrap_or(r.namespace);
    let filters = Filters::compile(&b.filters, &format!("{at}.filters"), false, r);
    Backend::Service {
        destination: Arc::new(Destination {
            host: hosts::service_fqdn(&b.name, ns, cluster_domain),
            port: b.port.and_then(|p| u16::try_from(p).ok()),
            subset: None,
        }),
        request_headers: filters.request_headers,
        response_headers: filters.response_headers,
    }
}

/// The filters of a rule (or of a backendRef: header modifiers only).
#[derive(Debug, Default)]
struct Filters {
    request_headers: Option<Arc<HeaderOps>>,
    response_headers: Option<Arc<HeaderOps>>,
    redirect: Option<RedirectSpec>,
    path: Option<PathRewrite>,
    authority: Option<Arc<str>>,
}

impl Filters {
    fn compile(
        filters: &[HttpRouteFilter],
        at: &str,
        rule_level: bool,
        r: &mut Reporter<'_>,
    ) -> Self {
        let mut out = Self::default();
        for (i, f) in filters.iter().enumerate() {
            let at = format!("{at}[{i}]");
            match f.kind {
                FilterType::RequestHeaderModifier => {
                    out.request_headers = modifier(
                        f.request_header_modifier.as_ref(),
                        &at,
                        "requestHeaderModifier",
                        r,
                    );
                }
                FilterType::ResponseHeaderModifier => {
                    out.response_headers = modifier(
                        f.response_header_modifier.as_ref(),
                        &at,
                        "responseHeaderModifier",
                        r,
                    );
                }
                FilterType::RequestRedirect if rule_level => {
                    out.redirect = f.request_redirect.as_ref().map(redirect_spec);
                }
                FilterType::UrlRewrite if rule_level => {
                    if let Some(rw) = &f.url_rewrite {
                        out.path = rw.path.as_ref().and_then(path_modifier);
                        out.authority = rw.hostname.as_deref().map(Arc::from);
                    }
                }
                _ => r.unsupported(format!("{at}.type")),
            }
        }
        out
    }
}

fn modifier(
    m: Option<&amesh_core::l7::gateway_api::HeaderModifier>,
    at: &str,
    field: &str,
    r: &mut Reporter<'_>,
) -> Option<Arc<HeaderOps>> {
    let (ops, bad) = HeaderOps::from_gateway(m?);
    for (f, message) in bad {
        r.error(format!("{at}.{field}.{f}"), message);
    }
    (!ops.is_empty()).then(|| Arc::new(ops))
}

fn path_modifier(p: &HttpPathModifier) -> Option<PathRewrite> {
    match p.kind {
        PathModifierType::ReplaceFullPath => p.replace_full_path.clone().map(PathRewrite::Full),
        PathModifierType::ReplacePrefixMatch => p
            .replace_prefix_match
            .clone()
            .map(PathRewrite::PrefixElements),
    }
}

fn redirect_spec(rd: &RequestRedirect) -> RedirectSpec {
    let port = match (rd.port.and_then(|p| u16::try_from(p).ok()), &rd.scheme) {
        (Some(p), _) => RedirectPort::Set(p),
        // Only the scheme changes: its well-known port.
        (None, Some(_)) => RedirectPort::SchemeDefault,
        (None, None) => RedirectPort::Keep,
    };
    RedirectSpec {
        scheme: rd.scheme.clone(),
        host: rd
            .hostname
            .clone()
            .map_or(RedirectHost::Keep, RedirectHost::Hostname),
        port,
        path: rd.path.as_ref().and_then(path_modifier),
        status: rd
            .status_code
            .and_then(|c| u16::try_from(c).ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::FOUND),
    }
}
