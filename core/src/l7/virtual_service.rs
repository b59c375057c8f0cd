//! Istio `VirtualService` (networking.istio.io v1alpha3, v1beta1 and v1 share
//! this schema): HTTP routing, retries, timeouts, fault injection, mirroring
//! and header rewrites, applied by waypoints.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::check::{self, Checked, Ctx, err};
use super::common::{Headers, Percent, StringMatch};
use super::duration::IstioDuration;

/// The `spec` of a VirtualService.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    /// Hosts the rules apply to (service short names or FQDNs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Only `mesh` (or none) is supported; ingress gateways are not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Ordered HTTP rules: the first that matches wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// Not supported (kept as written so it can be reported).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<serde_json::Value>,
    /// Not supported (kept as written so it can be reported).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<serde_json::Value>,
    /// Not supported: every VirtualService is visible mesh-wide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// One HTTP rule (`http[]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// Name used in logs and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one of these matches selects the rule; none means "always".
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Answer directly instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<serde_json::Value>,
    /// Rewrite the path or authority before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Whole-request timeout, retries included; `0s` disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<IstioDuration>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Delays and aborts injected before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// Copy requests to this destination; its answers are discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Share of requests mirrored to `mirror` (absent: 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer form of `mirrorPercentage`; not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
    /// Several mirror destinations, each with its own percentage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<serde_json::Value>,
    /// Header changes for every destination of this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// One `match[]` entry: all conditions set must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Name used in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path (with query string removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Host / :authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Header name (lowercase) → match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Destination port of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Query parameter → match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Compare `uri` case-insensitively.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    /// Header name → match that must NOT hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
}

/// A weighted destination of `route[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where to send the request.
    pub destination: Destination,
    /// Relative weight: a destination gets weight / (sum of weights) of the
    /// requests. Ignored when there is only one destination.
    #[serde(default)]
    pub weight: i32,
    /// Header changes for this destination only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A service (and optionally a DestinationRule subset and port).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Service short name or FQDN.
    pub host: String,
    /// A subset defined by the host's DestinationRule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Service port; needed when the service has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// `port: {number: 80}`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    /// Port number.
    pub number: u32,
}

/// `redirect`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    /// Replace the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replace the authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replace the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<DerivePort>,
    /// Replace the scheme: `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// 3xx status, 301 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
}

/// How a redirect picks its port.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DerivePort {
    /// 80 for http, 443 for https.
    FromProtocolDefault,
    /// The port of the request.
    FromRequestPort,
}

/// `directResponse`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// Response status.
    pub status: u32,
    /// Response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// A direct response body: text or base64 bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    /// Body as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// Body as base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// `rewrite`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replaces the part of the path matched by a `uri` prefix match (or
    /// the whole path for an exact match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the Host / :authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `uriRegexRewrite`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Replacement with `\1` style groups.
    pub rewrite: String,
}

/// `retries`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Retries after the first try; 0 disables retries.
    #[serde(default)]
    pub attempts: i32,
    /// Timeout of each try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<IstioDuration>,
    /// Comma-separated conditions: `5xx`, `connect-failure`, `503`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    /// Not supported (no locality-aware load balancing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<IstioDuration>,
}

impl HttpRetry {
    /// `retryOn` split on commas, blanks dropped.
    pub fn retry_on_list(&self) -> Vec<&str> {
        self.retry_on
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// `fault`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    /// Delay before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Answer with an error instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// `fault.delay`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// Share of requests delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// How long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<IstioDuration>,
    /// Refused, as Istio does ("not supported yet").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<IstioDuration>,
    /// Deprecated integer percentage; not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

/// `fault.abort`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// Share of requests aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// HTTP status to answer with (200..599).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u32>,
    /// gRPC status name to answer with (`UNAVAILABLE`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Refused, as Istio does ("not supported yet").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
}

/// One `mirrors[]` entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Where the copy goes.
    pub destination: Destination,
    /// Share of requests copied (absent: 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// The gateway name that means "sidecars / waypoints inside the mesh".
const MESH_GATEWAY: &str = "mesh";

/// gRPC status names Istio accepts for `abort.grpcStatus`.
const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `retryOn` conditions Istio accepts (besides HTTP status codes).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

impl VirtualService {
    pub(crate) fn check(&self, at: &str, ctx: &mut Ctx) -> Checked {
        if self.hosts.is_empty() {
            return Err(err(
                format!("{at}.hosts"),
                "at least one host is required (delegate VirtualServices are not supported)",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let f = format!("{at}.hosts[{i}]");
            check::non_empty(&f, host, "host")?;
            if host == "*" {
                return Err(err(
                    f,
                    "wildcard host * is not allowed for virtual services bound to the mesh",
                ));
            }
            if !seen.insert(host.as_str()) {
                return Err(err(f, format!("duplicate host {host:?}")));
            }
        }
        for (i, gw) in self.gateways.iter().enumerate() {
            if gw != MESH_GATEWAY {
                ctx.unsupported(format!("{at}.gateways[{i}]"));
            }
        }
        if self.http.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            return Err(err(
                format!("{at}.http"),
                "http, tcp or tls must be provided in virtual service",
            ));
        }
        for (i, route) in self.http.iter().enumerate() {
            route.check(&format!("{at}.http[{i}]"), ctx)?;
        }
        ctx.unsupported_if_any(at, "tcp", !self.tcp.is_empty());
        ctx.unsupported_if_any(at, "tls", !self.tls.is_empty());
        ctx.unsupported_if_any(at, "exportTo", !self.export_to.is_empty());
        Ok(())
    }
}

impl HttpRoute {
    fn check(&self, at: &str, ctx: &mut Ctx) -> Checked {
        if self.route.is_empty()
            && self.redirect.is_none()
            && self.direct_response.is_none()
            && self.delegate.is_none()
        {
            return Err(err(
                at,
                "HTTP route, redirect, directResponse or delegate is required",
            ));
        }
        if self.redirect.is_some() && !self.route.is_empty() {
            return Err(err(
                format!("{at}.redirect"),
                "HTTP route cannot contain both route and redirect",
            ));
        }
        if self.direct_response.is_some() && (!self.route.is_empty() || self.redirect.is_some()) {
            return Err(err(
                format!("{at}.directResponse"),
                "directResponse cannot be used with route or redirect",
            ));
        }
        if self.rewrite.is_some() && self.redirect.is_some() {
            return Err(err(
                format!("{at}.rewrite"),
                "rewrite may not be used with redirect",
            ));
        }
        if self.mirror.is_some() && !self.mirrors.is_empty() {
            return Err(err(
                format!("{at}.mirrors"),
                "mirror and mirrors cannot be used together",
            ));
        }
        for (i, m) in self.matches.iter().enumerate() {
            m.check(&format!("{at}.match[{i}]"), ctx)?;
        }
        check_destinations(at, &self.route)?;
        if let Some(r) = &self.redirect {
            r.check(&format!("{at}.redirect"))?;
        }
        if let Some(d) = &self.direct_response {
            let f = format!("{at}.directResponse.status");
            if !(200..=599).contains(&d.status) {
                return Err(err(
                    f,
                    format!("status {} is not in range 200..599", d.status),
                ));
            }
            if let Some(b) = &d.body
                && b.string.is_some()
                && b.bytes.is_some()
            {
                return Err(err(
                    format!("{at}.directResponse.body"),
                    "only one of string or bytes may be set",
                ));
            }
        }
        if let Some(rw) = &self.rewrite {
            if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
                return Err(err(
                    format!("{at}.rewrite"),
                    "rewrite may only contain one of uri or uriRegexRewrite",
                ));
            }
            if let Some(re) = &rw.uri_regex_rewrite {
                check::regex(&format!("{at}.rewrite.uriRegexRewrite.match"), &re.pattern)?;
            }
            ctx.unsupported_if(
                &format!("{at}.rewrite"),
                "uriRegexRewrite",
                &rw.uri_regex_rewrite,
            );
        }
        // `timeout: 0s` disables the timeout, so it needs no range check.
        if let Some(r) = &self.retries {
            r.check(&format!("{at}.retries"), ctx)?;
        }
        if let Some(f) = &self.fault {
            f.check(&format!("{at}.fault"), ctx)?;
        }
        if let Some(m) = &self.mirror {
            m.check(&format!("{at}.mirror"))?;
        }
        if let Some(p) = &self.mirror_percentage {
            check::percent(&format!("{at}.mirrorPercentage"), p)?;
        }
        for (i, m) in self.mirrors.iter().enumerate() {
            let f = format!("{at}.mirrors[{i}]");
            m.destination.check(&format!("{f}.destination"))?;
            if let Some(p) = &m.percentage {
                check::percent(&format!("{f}.percentage"), p)?;
            }
        }
        ctx.unsupported_if(at, "delegate", &self.delegate);
        ctx.unsupported_if(at, "corsPolicy", &self.cors_policy);
        ctx.unsupported_if(at, "mirrorPercent", &self.mirror_percent);
        Ok(())
    }
}

/// Istio's rule: each weight ≥ 0, and several destinations may not all be 0.
/// Since Istio 1.x weights are relative and need not total 100.
fn check_destinations(at: &str, route: &[HttpRouteDestination]) -> Checked {
    let mut total: i64 = 0;
    for (i, d) in route.iter().enumerate() {
        let f = format!("{at}.route[{i}]");
        d.destination.check(&format!("{f}.destination"))?;
        if d.weight < 0 {
            return Err(err(
                format!("{f}.weight"),
                format!("weight {} must not be negative", d.weight),
            ));
        }
        total += i64::from(d.weight);
    }
    if route.len() > 1 && total == 0 {
        return Err(err(
            format!("{at}.route"),
            "total destination weight = 0: give at least one destination a weight",
        ));
    }
    Ok(())
}

impl HttpMatchRequest {
    fn check(&self, at: &str, ctx: &mut Ctx) -> Checked {
        let single = [
            ("uri", &self.uri),
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ];
        for (name, m) in single {
            if let Some(m) = m {
                let f = format!("{at}.{name}");
                if *m == StringMatch::Present {
                    return Err(err(f, "one of exact, prefix or regex is required"));
                }
                check::string_match(&f, m)?;
            }
        }
        let maps = [
            ("headers", &self.headers),
            ("queryParams", &self.query_params),
            ("withoutHeaders", &self.without_headers),
        ];
        for (name, map) in maps {
            for (key, m) in map {
                let f = format!("{at}.{name}.{key}");
                if key.is_empty() {
                    return Err(err(f, "name must not be empty"));
                }
                check::string_match(&f, m)?;
            }
        }
        if let Some(p) = self.port {
            check::port(&format!("{at}.port"), p)?;
        }
        ctx.unsupported_if_any(at, "sourceLabels", !self.source_labels.is_empty());
        ctx.unsupported_if_any(at, "gateways", !self.gateways.is_empty());
        ctx.unsupported_if(at, "sourceNamespace", &self.source_namespace);
        ctx.unsupported_if(at, "statPrefix", &self.stat_prefix);
        Ok(())
    }
}

impl Destination {
    fn check(&self, at: &str) -> Checked {
        check::non_empty(&format!("{at}.host"), &self.host, "host")?;
        if self.host == "*" {
            return Err(err(format!("{at}.host"), "invalid destination host *"));
        }
        if let Some(s) = &self.subset {
            check::dns_label(&format!("{at}.subset"), s, "subset name")?;
        }
        if let Some(p) = &self.port {
            check::port(&format!("{at}.port.number"), p.number)?;
        }
        Ok(())
    }
}

impl HttpRedirect {
    fn check(&self, at: &str) -> Checked {
        if self.uri.is_none()
            && self.authority.is_none()
            && self.port.is_none()
            && self.derive_port.is_none()
            && self.scheme.is_none()
        {
            return Err(err(
                at,
                "redirect must specify uri, authority, scheme, or port",
            ));
        }
        if let Some(code) = self.redirect_code
            && !(300..=399).contains(&code)
        {
            return Err(err(
                format!("{at}.redirectCode"),
                format!("{code} is not a valid redirect code, must be 3xx"),
            ));
        }
        if let Some(s) = &self.scheme
            && s != "http"
            && s != "https"
        {
            return Err(err(
                format!("{at}.scheme"),
                format!("invalid redirect scheme {s:?}, must be \"http\" or \"https\""),
            ));
        }
        if let Some(p) = self.port {
            check::port(&format!("{at}.port"), p)?;
        }
        Ok(())
    }
}

impl HttpRetry {
    fn check(&self, at: &str, ctx: &mut Ctx) -> Checked {
        if self.attempts < 0 {
            return Err(err(
                format!("{at}.attempts"),
                format!("attempts {} cannot be negative", self.attempts),
            ));
        }
        if self.attempts == 0
            && (self.per_try_timeout.is_some()
                || self.retry_on.is_some()
                || self.retry_remote_localities.is_some())
        {
            return Err(err(
                format!("{at}.attempts"),
                "http retry policy configured when attempts are set to 0 (disabled)",
            ));
        }
        if let Some(t) = &self.per_try_timeout {
            check::at_least_1ms(&format!("{at}.perTryTimeout"), t)?;
        }
        for cond in self.retry_on_list() {
            let is_status = cond.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
            if !is_status && !RETRY_ON.contains(&cond) {
                return Err(err(
                    format!("{at}.retryOn"),
                    format!("{cond:?} is not a valid retryOn policy"),
                ));
            }
        }
        ctx.unsupported_if(at, "retryRemoteLocalities", &self.retry_remote_localities);
        ctx.unsupported_if(
            at,
            "retryIgnorePreviousHosts",
            &self.retry_ignore_previous_hosts,
        );
        ctx.unsupported_if(at, "backoff", &self.backoff);
        Ok(())
    }
}

impl HttpFaultInjection {
    fn check(&self, at: &str, ctx: &mut Ctx) -> Checked {
        if self.delay.is_none() && self.abort.is_none() {
            return Err(err(
                at,
                "HTTP fault injection must have an abort and/or a delay",
            ));
        }
        if let Some(d) = &self.delay {
            let at = format!("{at}.delay");
            if let Some(p) = &d.percentage {
                check::percent(&format!("{at}.percentage"), p)?;
            }
            if d.exponential_delay.is_some() {
                return Err(err(
                    format!("{at}.exponentialDelay"),
                    "exponentialDelay not supported yet",
                ));
            }
            match &d.fixed_delay {
                Some(t) => check::at_least_1ms(&format!("{at}.fixedDelay"), t)?,
                None => return Err(err(format!("{at}.fixedDelay"), "fixedDelay is required")),
            }
            ctx.unsupported_if(&at, "percent", &d.percent);
        }
        if let Some(a) = &self.abort {
            let at = format!("{at}.abort");
            if let Some(p) = &a.percentage {
                check::percent(&format!("{at}.percentage"), p)?;
            }
            if a.http2_error.is_some() {
                return Err(err(
                    format!("{at}.http2Error"),
                    "HTTP/2 abort fault injection not supported yet",
                ));
            }
            match (a.http_status, &a.grpc_status) {
                (Some(_), Some(_)) => {
                    return Err(err(at, "only one of httpStatus or grpcStatus may be set"));
                }
                (None, None) => {
                    return Err(err(
                        format!("{at}.httpStatus"),
                        "abort needs httpStatus or grpcStatus",
                    ));
                }
                (Some(s), None) if !(200..=599).contains(&s) => {
                    return Err(err(
                        format!("{at}.httpStatus"),
                        format!("HTTP status {s} is not in range 200..599"),
                    ));
                }
                (None, Some(g)) if !GRPC_STATUSES.contains(&g.as_str()) => {
                    return Err(err(
                        format!("{at}.grpcStatus"),
                        format!("gRPC status {g:?} is not supported (e.g. UNAVAILABLE, NOT_FOUND)"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
