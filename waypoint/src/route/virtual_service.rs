//! VirtualService `http[]` rules compiled to routes.

use std::sync::Arc;

use amesh_core::l7::virtual_service::{
    DerivePort, HttpMatchRequest, HttpRedirect, HttpRoute, HttpRouteDestination,
};
use amesh_core::l7::{Headers, StringMatch, VirtualService};
use http::{HeaderName, StatusCode};

use super::decision::{Destination, RouteInfo, RouteSource};
use super::header_ops::HeaderOps;
use super::hosts;
use super::matcher::{PathMatch, RequestMatch};
use super::path_rewrite::PathRewrite;
use super::problem::Reporter;
use super::redirect::{RedirectHost, RedirectPort, RedirectSpec};
use super::string_match::StrMatch;
use super::subsets::Subsets;
use super::table::{Action, Backend, ForwardAction, Route};
use super::weighted::Weighted;

/// The routes of `vs`, in order.
pub(crate) fn compile(
    vs: &VirtualService,
    subsets: &Subsets,
    cluster_domain: &str,
    r: &mut Reporter<'_>,
) -> Vec<Route> {
    vs.http
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let at = format!("spec.http[{i}]");
            let info = Arc::new(RouteInfo {
                source: RouteSource::VirtualService,
                namespace: r.namespace.to_owned(),
                name: r.name.to_owned(),
                rule_index: i,
                rule_name: rule.name.clone(),
            });
            report_mirrors(rule, &at, r);
            Route {
                info,
                port: None,
                matches: rule
                    .matches
                    .iter()
                    .enumerate()
                    .map(|(j, m)| {
                        let before = r.problems.len();
                        let mut compiled = compile_match(m, &format!("{at}.match[{j}]"), r);
                        compiled.invalid = r.problems.len() > before;
                        compiled
                    })
                    .collect(),
                action: compile_action(rule, &at, subsets, cluster_domain, r),
            }
        })
        .collect()
}

/// Mirroring is not implemented: say so rather than ignore it.
fn report_mirrors(rule: &HttpRoute, at: &str, r: &mut Reporter<'_>) {
    if rule.mirror.is_some() {
        r.unsupported(format!("{at}.mirror"));
    }
    if rule.mirror_percentage.is_some() {
        r.unsupported(format!("{at}.mirrorPercentage"));
    }
    if !rule.mirrors.is_empty() {
        r.unsupported(format!("{at}.mirrors"));
    }
}

fn compile_match(m: &HttpMatchRequest, at: &str, r: &mut Reporter<'_>) -> RequestMatch {
    let mut out = RequestMatch {
        port: m.port.and_then(|p| u16::try_from(p).ok()),
        ..RequestMatch::default()
    };
    let mut single = |name: &str, m: &Option<StringMatch>| {
        m.as_ref()
            .map(|m| string_match(m, &format!("{at}.{name}"), r))
    };
    out.method = single("method", &m.method);
    out.authority = single("authority", &m.authority);
    out.scheme = single("scheme", &m.scheme);
    out.path = m.uri.as_ref().map(|u| match u {
        StringMatch::Exact(v) => PathMatch::Exact {
            value: v.clone(),
            ignore_case: m.ignore_uri_case,
        },
        StringMatch::Prefix(v) => PathMatch::Prefix {
            value: v.clone(),
            ignore_case: m.ignore_uri_case,
        },
        // `(?i)` makes a regex case-insensitive, as Envoy's ignore_case.
        StringMatch::Regex(p) if m.ignore_uri_case => PathMatch::Regex(string_match(
            &StringMatch::Regex(format!("(?i){p}")),
            &format!("{at}.uri"),
            r,
        )),
        other => PathMatch::Regex(string_match(other, &format!("{at}.uri"), r)),
    });
    out.headers = header_conditions(&m.headers, &format!("{at}.headers"), r);
    out.without_headers = header_conditions(&m.without_headers, &format!("{at}.withoutHeaders"), r);
    out.query_params = m
        .query_params
        .iter()
        .map(|(name, sm)| {
            let f = format!("{at}.queryParams.{name}");
            (name.clone(), string_match(sm, &f, r))
        })
        .collect();
    out
}

/// Compiles a match; a bad regex is reported at `<at>.regex` and never
/// matches.
fn string_match(m: &StringMatch, at: &str, r: &mut Reporter<'_>) -> StrMatch {
    let (compiled, err) = StrMatch::compile(m);
    if let Some(e) = err {
        r.error(format!("{at}.regex"), e);
    }
    compiled
}

fn header_conditions(
    map: &std::collections::BTreeMap<String, StringMatch>,
    at: &str,
    r: &mut Reporter<'_>,
) -> Vec<(HeaderName, StrMatch)> {
    map.iter()
        .map(|(name, sm)| {
            let f = format!("{at}.{name}");
            let compiled = string_match(sm, &f, r);
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => (n, compiled),
                Err(_) => {
                    r.error(f, "invalid header name: the match never matches");
                    // Placeholder: the reported error marks the entry invalid.
                    (
                        HeaderName::from_static("x-amesh-invalid-header-name"),
                        StrMatch::Regex(None),
                    )
                }
            }
        })
        .collect()
}

fn compile_action(
    rule: &HttpRoute,
    at: &str,
    subsets: &Subsets,
    cluster_domain: &str,
    r: &mut Reporter<'_>,
) -> Action {
    if let Some(redirect) = &rule.redirect {
        return Action::Redirect {
            spec: redirect_spec(redirect),
            response_headers: None,
        };
    }
    if let Some(d) = &rule.direct_response {
        let status = u16::try_from(d.status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = d.body.as_ref().map_or_else(Vec::new, |b| {
            if b.bytes.is_some() {
                r.unsupported(format!("{at}.directResponse.body.bytes"));
            }
            b.string.clone().unwrap_or_default().into_bytes()
        });
        return Action::Direct {
            status,
            body: body.into(),
        };
    }
    let (request_headers, response_headers) =
        headers(rule.headers.as_ref(), &format!("{at}.headers"), r);
    let single = rule.route.len() == 1;
    let backends = rule.route.iter().enumerate().map(|(k, d)| {
        let f = format!("{at}.route[{k}]");
        // One destination takes every request whatever its weight.
        let weight = if single {
            1
        } else {
            u64::try_from(d.weight).unwrap_or(0)
        };
        (weight, backend(d, &f, subsets, cluster_domain, r))
    });
    let backends = Weighted::new(backends.collect::<Vec<_>>());
    let rewrite = rule.rewrite.as_ref();
    Action::Forward(ForwardAction {
        backends,
        path: rewrite
            .and_then(|rw| rw.uri.clone())
            .map(PathRewrite::MatchedPart),
        authority: rewrite
            .and_then(|rw| rw.authority.as_deref())
            .map(Arc::from),
        request_headers,
        response_headers,
    })
}

fn backend(
    d: &HttpRouteDestination,
    at: &str,
    subsets: &Subsets,
    cluster_domain: &str,
    r: &mut Reporter<'_>,
) -> Backend {
    let host = hosts::resolve(&d.destination.host, r.namespace, cluster_domain);
    let subset = match &d.destination.subset {
        None => None,
        Some(name) => match subsets.get(&host, name) {
            Some(s) => Some(s.clone()),
            None => {
                r.error(
                    format!("{at}.destination.subset"),
                    format!("no DestinationRule for {host} defines subset {name:?}: 503"),
                );
                return Backend::Unusable(StatusCode::SERVICE_UNAVAILABLE);
            }
        },
    };
    let (request_headers, response_headers) =
        headers(d.headers.as_ref(), &format!("{at}.headers"), r);
    Backend::Service {
        destination: Arc::new(Destination {
            host,
            port: d
                .destination
                .port
                .and_then(|p| u16::try_from(p.number).ok()),
            subset,
        }),
        request_headers,
        response_headers,
    }
}

type OpsPair = (Option<Arc<HeaderOps>>, Option<Arc<HeaderOps>>);

/// Request and response header operations of an Istio `headers` block.
fn headers(h: Option<&Headers>, at: &str, r: &mut Reporter<'_>) -> OpsPair {
    let Some(h) = h else {
        return (None, None);
    };
    let mut one = |ops: &Option<amesh_core::l7::HeaderOperations>, which: &str| {
        let (compiled, bad) = HeaderOps::from_istio(ops.as_ref()?);
        for (field, message) in bad {
            r.error(format!("{at}.{which}.{field}"), message);
        }
        (!compiled.is_empty()).then(|| Arc::new(compiled))
    };
    (one(&h.request, "request"), one(&h.response, "response"))
}

fn redirect_spec(rd: &HttpRedirect) -> RedirectSpec {
    let port = match (rd.port.and_then(|p| u16::try_from(p).ok()), rd.derive_port) {
        (Some(p), _) => RedirectPort::Set(p),
        (None, Some(DerivePort::FromProtocolDefault)) => RedirectPort::SchemeDefault,
        (None, Some(DerivePort::FromRequestPort)) => RedirectPort::Request,
        (None, None) => RedirectPort::Keep,
    };
    RedirectSpec {
        scheme: rd.scheme.clone(),
        host: rd
            .authority
            .clone()
            .map_or(RedirectHost::Keep, RedirectHost::Authority),
        port,
        path: rd.uri.clone().map(PathRewrite::Full),
        status: rd
            .redirect_code
            .and_then(|c| u16::try_from(c).ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::MOVED_PERMANENTLY),
    }
}
