//! Redirect answers: building the `Location` from the request and the
//! route's redirect settings.

use http::StatusCode;
use http::request::Parts;

use super::matcher::{self, PathMatched};
use super::path_rewrite::PathRewrite;

/// How the redirect's port is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RedirectPort {
    /// The port of the (possibly replaced) authority.
    Keep,
    /// This port.
    Set(u16),
    /// None: the scheme's default (Istio `FROM_PROTOCOL_DEFAULT`, Gateway
    /// API when only the scheme changes).
    SchemeDefault,
    /// The port the request came in on (Istio `FROM_REQUEST_PORT`).
    Request,
}

/// How the host is replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RedirectHost {
    /// Keep the request's.
    Keep,
    /// Istio `authority`: replaces host and port.
    Authority(String),
    /// Gateway API `hostname`: replaces the host, keeps the port.
    Hostname(String),
}

/// A compiled redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RedirectSpec {
    pub(crate) scheme: Option<String>,
    pub(crate) host: RedirectHost,
    pub(crate) port: RedirectPort,
    pub(crate) path: Option<PathRewrite>,
    pub(crate) status: StatusCode,
}

impl RedirectSpec {
    /// The `Location` for a request that arrived on `port`.
    pub(crate) fn location(&self, port: u16, req: &Parts, matched: PathMatched) -> String {
        let scheme = self
            .scheme
            .as_deref()
            .or(req.uri.scheme_str())
            .unwrap_or("http");
        let (req_host, req_port) = split_host_port(matcher::authority(req).unwrap_or(""));
        let (host, mut out_port) = match &self.host {
            RedirectHost::Keep => (req_host, req_port),
            RedirectHost::Authority(a) => split_host_port(a),
            RedirectHost::Hostname(h) => (h.as_str(), req_port),
        };
        match self.port {
            RedirectPort::Keep => {}
            RedirectPort::Set(p) => out_port = Some(p),
            RedirectPort::SchemeDefault => out_port = None,
            RedirectPort::Request => out_port = Some(req_port.unwrap_or(port)),
        }
        let default_port = match scheme {
            "https" => 443,
            _ => 80,
        };
        let path_and_query = match &self.path {
            Some(rw) => rw.apply(req.uri.path(), req.uri.query(), matched),
            None => req
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
        };
        match out_port.filter(|p| *p != default_port) {
            Some(p) => format!("{scheme}://{host}:{p}{path_and_query}"),
            None => format!("{scheme}://{host}{path_and_query}"),
        }
    }
}

/// `host:port` → (host, port); IPv6 literals keep their brackets.
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a:8080"), ("a", Some(8080)));
        assert_eq!(split_host_port("a"), ("a", None));
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", Some(80)));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
    }
}
