//! Gateway API (gateway.networking.k8s.io v1) `HTTPRoute` and `Gateway`.
//! Waypoints are Gateways of class `istio-waypoint`; HTTPRoutes whose
//! parentRef is a Service configure that service's waypoint.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::check::{self, Checked, Ctx, err};
use super::duration::IstioDuration;

/// The `spec` of an HTTPRoute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    /// Gateways or Services the route attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Host names matched against Host / :authority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Ordered rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRule>,
}

/// `parentRefs[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    /// Default `gateway.networking.k8s.io`; `""` for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Default `Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Default: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Parent name.
    #[serde(default)]
    pub name: String,
    /// Listener name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Listener or service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// `rules[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    /// Rule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one matches; none: path prefix `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    /// Applied in order to matching requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted backends; none (and no redirect): 500.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
    /// Request timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Not supported (experimental channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<serde_json::Value>,
    /// Not supported (experimental channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
}

/// `matches[]`: all conditions set must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// Path match (default `PathPrefix /`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    /// Header matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeaderMatch>,
    /// Query parameter matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HttpHeaderMatch>,
    /// Request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
}

/// `path`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathMatch {
    /// Default `PathPrefix`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<PathMatchType>,
    /// Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `path.type`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMatchType {
    /// Whole path equal.
    Exact,
    /// Path starts with the value, element-wise (`/a` matches `/a/b`, not `/ab`).
    PathPrefix,
    /// Regular expression.
    RegularExpression,
}

/// A header or query parameter match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeaderMatch {
    /// Default `Exact`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ValueMatchType>,
    /// Header (case-insensitive) or parameter (case-sensitive) name.
    #[serde(default)]
    pub name: String,
    /// Value to match.
    #[serde(default)]
    pub value: String,
}

/// `type` of a header or query parameter match.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueMatchType {
    /// Equal.
    Exact,
    /// Regular expression.
    RegularExpression,
}

/// HTTP methods the Gateway API allows in a match.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

/// `filters[]`: `type` says which of the other fields is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteFilter {
    /// Which filter this is.
    #[serde(rename = "type")]
    pub kind: FilterType,
    /// For `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// For `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// For `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
    /// For `RequestRedirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    /// For `URLRewrite`.
    #[serde(
        rename = "urlRewrite",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub url_rewrite: Option<UrlRewrite>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<serde_json::Value>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<serde_json::Value>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth: Option<serde_json::Value>,
}

/// `filters[].type`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestMirror,
    RequestRedirect,
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    ExtensionRef,
    #[serde(rename = "CORS")]
    Cors,
    ExternalAuth,
}

/// `requestHeaderModifier` / `responseHeaderModifier`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifier {
    /// Overwrite.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    /// Append.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    /// Delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// `requestMirror`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    /// Where copies go.
    pub backend_ref: BackendObjectReference,
    /// Share of requests copied, 0..100 (absent: 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Share of requests copied as a fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

/// `fraction`: numerator / denominator (default 100).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Fraction {
    /// Numerator.
    pub numerator: u32,
    /// Denominator, default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<u32>,
}

/// A backend without a weight (mirror targets).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendObjectReference {
    /// Default `""` (core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Default `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Default: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service port; required for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// `requestRedirect`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Replacement host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Path change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
    /// Replacement port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// 301 or 302 (303, 307, 308 in the experimental channel); default 302.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u32>,
}

/// `urlRewrite`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    /// Replacement Host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Path change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
}

/// A path change for redirects and rewrites.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathModifier {
    /// Which of the fields below applies.
    #[serde(rename = "type")]
    pub kind: PathModifierType,
    /// New whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// Replaces the matched `PathPrefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// `path.type` of a modifier.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathModifierType {
    /// Use `replaceFullPath`.
    ReplaceFullPath,
    /// Use `replacePrefixMatch`.
    ReplacePrefixMatch,
}

/// `backendRefs[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBackendRef {
    /// Default `""` (core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Default `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Default: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service port; required for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Relative weight, 0..1000000, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Filters for requests sent to this backend only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
}

/// `timeouts`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    /// Whole request, retries included; `0s` disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<IstioDuration>,
    /// Each try to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<IstioDuration>,
}

/// The `spec` of a Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// `istio-waypoint` for waypoints.
    #[serde(default)]
    pub gateway_class_name: String,
    /// Listeners (a waypoint has `mesh`, port 15008, protocol HBONE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    /// Not supported: addresses are assigned by amesh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayAddress>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<serde_json::Value>,
    /// Not supported.
    #[serde(
        rename = "backendTLS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_tls: Option<serde_json::Value>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_listeners: Option<serde_json::Value>,
}

/// `listeners[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// Unique within the Gateway.
    #[serde(default)]
    pub name: String,
    /// Host name filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: u32,
    /// `HBONE`, `HTTP`, `TCP`, ...
    #[serde(default)]
    pub protocol: String,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
    /// Which routes may attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// `allowedRoutes`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedRoutes {
    /// Namespaces routes may come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    /// Route kinds allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RouteGroupKind>,
}

/// `allowedRoutes.namespaces`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteNamespaces {
    /// `All`, `Same` (default) or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<FromNamespaces>,
    /// A Kubernetes label selector, for `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<serde_json::Value>,
}

/// `allowedRoutes.namespaces.from`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum FromNamespaces {
    All,
    Same,
    Selector,
    None,
}

/// `allowedRoutes.kinds[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteGroupKind {
    /// Default `gateway.networking.k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Route kind.
    pub kind: String,
}

/// `addresses[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct GatewayAddress {
    /// `IPAddress` (default) or `Hostname`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The address.
    pub value: String,
}

/// Redirect status codes the Gateway API allows (standard + experimental).
const REDIRECT_CODES: &[u32] = &[301, 302, 303, 307, 308];

impl HttpRouteSpec {
    pub(crate) fn check(&self, at: &str, ctx: &mut Ctx) -> Checked {
        for (i, p) in self.parent_refs.iter().enumerate() {
            let f = format!("{at}.parentRefs[{i}]");
            check::non_empty(&format!("{f}.name"), &p.name, "name")?;
            if let Some(port) = p.port {
                check::port(&format!("{f}.port"), port)?;
            }
        }
        for (i, h) in self.hostnames.iter().enumerate() {
            check::non_empty(&format!("{at}.hostnames[{i}]"), h, "hostname")?;
        }
        for (i, r) in self.rules.iter().enumerate() {
            r.check(&format!("{at}.rules[{i}]"), ctx)?;
        }
        Ok(())
    }
}

impl HttpRouteRule {
    fn check(&self, at: &str, ctx: &mut Ctx) -> Checked {
        for (i, m) in self.matches.iter().enumerate() {
            m.check(&format!("{at}.matches[{i}]"))?;
        }
        check_filters(&format!("{at}.filters"), &self.filters, ctx)?;
        for (i, b) in self.backend_refs.iter().enumerate() {
            let f = format!("{at}.backendRefs[{i}]");
            check::non_empty(&format!("{f}.name"), &b.name, "name")?;
            check_backend_port(&f, b.group.as_deref(), b.kind.as_deref(), b.port)?;
            if let Some(w) = b.weight
                && !(0..=1_000_000).contains(&w)
            {
                return Err(err(
                    format!("{f}.weight"),
                    format!("weight {w} is not in range 0..1000000"),
                ));
            }
            check_filters(&format!("{f}.filters"), &b.filters, ctx)?;
        }
        if let Some(t) = &self.timeouts
            && let (Some(req), Some(backend)) = (t.request, t.backend_request)
            && !req.0.is_zero()
            && backend.0 > req.0
        {
            return Err(err(
                format!("{at}.timeouts.backendRequest"),
                format!(
                    "backendRequest timeout {backend} cannot be longer than request timeout {req}"
                ),
            ));
        }
        ctx.unsupported_if(at, "retry", &self.retry);
        ctx.unsupported_if(at, "sessionPersistence", &self.session_persistence);
        Ok(())
    }
}

/// A core Service backend needs a port (Gateway API CEL rule).
fn check_backend_port(
    at: &str,
    group: Option<&str>,
    kind: Option<&str>,
    port: Option<u32>,
) -> Checked {
    let is_service = group.unwrap_or("").is_empty() && kind.unwrap_or("Service") == "Service";
    match port {
        None if is_service => Err(err(
            format!("{at}.port"),
            "port is required when the backend is a Service",
        )),
        Some(p) => check::port(&format!("{at}.port"), p),
        None => Ok(()),
    }
}

impl HttpRouteMatch {
    fn check(&self, at: &str) -> Checked {
        if let Some(p) = &self.path
            && let Some(v) = &p.value
            && p.kind != Some(PathMatchType::RegularExpression)
            && !v.starts_with('/')
        {
            return Err(err(
                format!("{at}.path.value"),
                format!("path {v:?} must start with '/'"),
            ));
        }
        if let Some(p) = &self.path
            && p.kind == Some(PathMatchType::RegularExpression)
        {
            check::regex(
                &format!("{at}.path.value"),
                p.value.as_deref().unwrap_or(""),
            )?;
        }
        for (name, list) in [
            ("headers", &self.headers),
            ("queryParams", &self.query_params),
        ] {
            let mut seen = BTreeSet::new();
            for (i, h) in list.iter().enumerate() {
                let f = format!("{at}.{name}[{i}].name");
                check::non_empty(&f, &h.name, "name")?;
                // Header names compare case-insensitively.
                let key = if name == "headers" {
                    h.name.to_ascii_lowercase()
                } else {
                    h.name.clone()
                };
                if h.kind == Some(ValueMatchType::RegularExpression) {
                    check::regex(&format!("{at}.{name}[{i}].value"), &h.value)?;
                }
                if !seen.insert(key) {
                    return Err(err(f, format!("duplicate match on {:?}", h.name)));
                }
            }
        }
        Ok(())
    }
}

fn check_filters(at: &str, filters: &[HttpRouteFilter], ctx: &mut Ctx) -> Checked {
    let mut seen = BTreeSet::new();
    let mut redirect = false;
    let mut rewrite = false;
    for (i, flt) in filters.iter().enumerate() {
        let f = format!("{at}[{i}]");
        flt.check(&f, ctx)?;
        // Gateway API: each of these may appear at most once per rule.
        let once = matches!(
            flt.kind,
            FilterType::RequestHeaderModifier
                | FilterType::ResponseHeaderModifier
                | FilterType::RequestRedirect
                | FilterType::UrlRewrite
        );
        if once && !seen.insert(format!("{:?}", flt.kind)) {
            return Err(err(
                format!("{f}.type"),
                format!("{:?} may appear only once", flt.kind),
            ));
        }
        redirect |= flt.kind == FilterType::RequestRedirect;
        rewrite |= flt.kind == FilterType::UrlRewrite;
    }
    if redirect && rewrite {
        return Err(err(
            at.to_owned(),
            "RequestRedirect and URLRewrite cannot be used together",
        ));
    }
    Ok(())
}

impl HttpRouteFilter {
    fn check(&self, at: &str, ctx: &mut Ctx) -> Checked {
        let set = [
            (
                FilterType::RequestHeaderModifier,
                "requestHeaderModifier",
                self.request_header_modifier.is_some(),
            ),
            (
                FilterType::ResponseHeaderModifier,
                "responseHeaderModifier",
                self.response_header_modifier.is_some(),
            ),
            (
                FilterType::RequestMirror,
                "requestMirror",
                self.request_mirror.is_some(),
            ),
            (
                FilterType::RequestRedirect,
                "requestRedirect",
                self.request_redirect.is_some(),
            ),
            (
                FilterType::UrlRewrite,
                "urlRewrite",
                self.url_rewrite.is_some(),
            ),
            (
                FilterType::ExtensionRef,
                "extensionRef",
                self.extension_ref.is_some(),
            ),
            (FilterType::Cors, "cors", self.cors.is_some()),
            (
                FilterType::ExternalAuth,
                "externalAuth",
                self.external_auth.is_some(),
            ),
        ];
        // The field named by `type` first, so that a misplaced field is
        // reported after the missing one it was meant to be.
        for (kind, field, present) in set {
            if kind == self.kind && !present {
                return Err(err(
                    format!("{at}.{field}"),
                    format!("{field} must be set when type is {:?}", self.kind),
                ));
            }
        }
        for (kind, field, present) in set {
            if kind != self.kind && present {
                return Err(err(
                    format!("{at}.{field}"),
                    format!("{field} must not be set when type is {:?}", self.kind),
                ));
            }
        }
        if let Some(m) = &self.request_header_modifier {
            m.check(&format!("{at}.requestHeaderModifier"))?;
        }
        if let Some(m) = &self.response_header_modifier {
            m.check(&format!("{at}.responseHeaderModifier"))?;
        }
        if let Some(m) = &self.request_mirror {
            let f = format!("{at}.requestMirror");
            let b = &m.backend_ref;
            check::non_empty(&format!("{f}.backendRef.name"), &b.name, "name")?;
            check_backend_port(
                &format!("{f}.backendRef"),
                b.group.as_deref(),
                b.kind.as_deref(),
                b.port,
            )?;
            if m.percent.is_some() && m.fraction.is_some() {
                return Err(err(f, "only one of percent or fraction may be set"));
            }
            if let Some(p) = m.percent
                && p > 100
            {
                return Err(err(
                    format!("{f}.percent"),
                    format!("percent {p} is not in range 0..100"),
                ));
            }
            if let Some(fr) = m.fraction {
                let d = fr.denominator.unwrap_or(100);
                if d == 0 || fr.numerator > d {
                    return Err(err(
                        format!("{f}.fraction"),
                        "numerator must be at most the denominator, and the denominator above 0",
                    ));
                }
            }
        }
        if let Some(r) = &self.request_redirect {
            let f = format!("{at}.requestRedirect");
            if let Some(s) = &r.scheme
                && s != "http"
                && s != "https"
            {
                return Err(err(
                    format!("{f}.scheme"),
                    format!("scheme {s:?} must be \"http\" or \"https\""),
                ));
            }
            if let Some(c) = r.status_code
                && !REDIRECT_CODES.contains(&c)
            {
                return Err(err(
                    format!("{f}.statusCode"),
                    format!("statusCode {c} must be one of 301, 302, 303, 307, 308"),
                ));
            }
            if let Some(p) = r.port {
                check::port(&format!("{f}.port"), p)?;
            }
            if let Some(p) = &r.path {
                p.check(&format!("{f}.path"))?;
            }
        }
        if let Some(r) = &self.url_rewrite
            && let Some(p) = &r.path
        {
            p.check(&format!("{at}.urlRewrite.path"))?;
        }
        if matches!(
            self.kind,
            FilterType::ExtensionRef | FilterType::Cors | FilterType::ExternalAuth
        ) {
            ctx.unsupported(format!("{at}.type"));
        }
        Ok(())
    }
}

impl HeaderModifier {
    fn check(&self, at: &str) -> Checked {
        for (name, list) in [("set", &self.set), ("add", &self.add)] {
            for (i, h) in list.iter().enumerate() {
                check::non_empty(&format!("{at}.{name}[{i}].name"), &h.name, "header name")?;
            }
        }
        for (i, h) in self.remove.iter().enumerate() {
            check::non_empty(&format!("{at}.remove[{i}]"), h, "header name")?;
        }
        Ok(())
    }
}

impl HttpPathModifier {
    fn check(&self, at: &str) -> Checked {
        let (want, other, value) = match self.kind {
            PathModifierType::ReplaceFullPath => (
                "replaceFullPath",
                self.replace_prefix_match.is_some(),
                &self.replace_full_path,
            ),
            PathModifierType::ReplacePrefixMatch => (
                "replacePrefixMatch",
                self.replace_full_path.is_some(),
                &self.replace_prefix_match,
            ),
        };
        if other {
            return Err(err(
                at.to_owned(),
                format!("only {want} may be set when type is {:?}", self.kind),
            ));
        }
        if value.is_none() {
            return Err(err(
                format!("{at}.{want}"),
                format!("{want} must be set when type is {:?}", self.kind),
            ));
        }
        Ok(())
    }
}

impl GatewaySpec {
    pub(crate) fn check(&self, at: &str, ctx: &mut Ctx) -> Checked {
        check::non_empty(
            &format!("{at}.gatewayClassName"),
            &self.gateway_class_name,
            "gatewayClassName",
        )?;
        if self.listeners.is_empty() {
            return Err(err(
                format!("{at}.listeners"),
                "at least one listener is required",
            ));
        }
        let mut names = BTreeSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let f = format!("{at}.listeners[{i}]");
            check::non_empty(&format!("{f}.name"), &l.name, "listener name")?;
            if !names.insert(l.name.as_str()) {
                return Err(err(
                    format!("{f}.name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            check::port(&format!("{f}.port"), l.port)?;
            check::non_empty(&format!("{f}.protocol"), &l.protocol, "protocol")?;
            ctx.unsupported_if(&f, "tls", &l.tls);
        }
        for (i, a) in self.addresses.iter().enumerate() {
            check::non_empty(&format!("{at}.addresses[{i}].value"), &a.value, "address")?;
        }
        ctx.unsupported_if_any(at, "addresses", !self.addresses.is_empty());
        ctx.unsupported_if(at, "infrastructure", &self.infrastructure);
        ctx.unsupported_if(at, "backendTLS", &self.backend_tls);
        ctx.unsupported_if(at, "allowedListeners", &self.allowed_listeners);
        Ok(())
    }
}
