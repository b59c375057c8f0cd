//! Typed L7 resources: Istio `VirtualService`, `DestinationRule`,
//! `RequestAuthentication` and Gateway API `HTTPRoute` / `Gateway`.
//!
//! Users' YAML works unchanged: field names are the YAML's (camelCase), and
//! every served version of a kind shares one schema. [`parse`] turns a
//! `spec` into typed values and checks what Istio's validation checks.
//! Unknown fields and wrong types are errors naming the field path; fields
//! that Istio has but amesh does not implement parse and are listed in
//! [`Parsed::unsupported`] so the caller reports them (never silently
//! ignored).

mod check;
pub mod common;
pub mod destination_rule;
pub mod duration;
pub mod gateway_api;
pub mod request_authentication;
pub mod virtual_service;

use serde::de::DeserializeOwned;

pub use common::{HeaderOperations, Headers, Percent, StringMatch};
pub use destination_rule::DestinationRule;
pub use duration::{DurationError, IstioDuration, parse_duration};
pub use gateway_api::{GatewaySpec, HttpRouteSpec};
pub use request_authentication::RequestAuthentication;
pub use virtual_service::VirtualService;

/// The L7 kinds amesh reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L7Kind {
    /// networking.istio.io VirtualService.
    VirtualService,
    /// networking.istio.io DestinationRule.
    DestinationRule,
    /// security.istio.io RequestAuthentication.
    RequestAuthentication,
    /// gateway.networking.k8s.io HTTPRoute.
    HttpRoute,
    /// gateway.networking.k8s.io Gateway.
    Gateway,
}

/// Versions served for each API group; all share one schema per kind.
const NETWORKING_VERSIONS: &[&str] = &["v1alpha3", "v1beta1", "v1"];
const SECURITY_VERSIONS: &[&str] = &["v1beta1", "v1"];
const GATEWAY_VERSIONS: &[&str] = &["v1", "v1beta1"];

impl L7Kind {
    /// Every L7 kind.
    pub const ALL: [L7Kind; 5] = [
        Self::VirtualService,
        Self::DestinationRule,
        Self::RequestAuthentication,
        Self::HttpRoute,
        Self::Gateway,
    ];

    /// The kind of a document, from its `apiVersion` and `kind`; `None` for
    /// anything else (including unserved versions of these kinds).
    pub fn from_type(api_version: &str, kind: &str) -> Option<Self> {
        let (group, version) = api_version.split_once('/')?;
        let (want_group, versions) = match kind {
            "VirtualService" | "DestinationRule" => ("networking.istio.io", NETWORKING_VERSIONS),
            "RequestAuthentication" => ("security.istio.io", SECURITY_VERSIONS),
            "HTTPRoute" | "Gateway" => ("gateway.networking.k8s.io", GATEWAY_VERSIONS),
            _ => return None,
        };
        if group != want_group || !versions.contains(&version) {
            return None;
        }
        Self::ALL.into_iter().find(|k| k.kind_name() == kind)
    }

    /// The Kubernetes `kind` string.
    pub fn kind_name(self) -> &'static str {
        match self {
            Self::VirtualService => "VirtualService",
            Self::DestinationRule => "DestinationRule",
            Self::RequestAuthentication => "RequestAuthentication",
            Self::HttpRoute => "HTTPRoute",
            Self::Gateway => "Gateway",
        }
    }

    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            Self::VirtualService | Self::DestinationRule => "networking.istio.io",
            Self::RequestAuthentication => "security.istio.io",
            Self::HttpRoute | Self::Gateway => "gateway.networking.k8s.io",
        }
    }
}

/// A typed, validated spec.
#[derive(Clone, Debug, PartialEq)]
pub enum L7Spec {
    /// A VirtualService spec.
    VirtualService(VirtualService),
    /// A DestinationRule spec (boxed: it is much larger than the others).
    DestinationRule(Box<DestinationRule>),
    /// A RequestAuthentication spec.
    RequestAuthentication(RequestAuthentication),
    /// An HTTPRoute spec.
    HttpRoute(HttpRouteSpec),
    /// A Gateway spec.
    Gateway(GatewaySpec),
}

impl L7Spec {
    /// Which kind this is.
    pub fn kind(&self) -> L7Kind {
        match self {
            Self::VirtualService(_) => L7Kind::VirtualService,
            Self::DestinationRule(_) => L7Kind::DestinationRule,
            Self::RequestAuthentication(_) => L7Kind::RequestAuthentication,
            Self::HttpRoute(_) => L7Kind::HttpRoute,
            Self::Gateway(_) => L7Kind::Gateway,
        }
    }

    /// The spec as JSON, in the YAML's field names.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Self::VirtualService(s) => serde_json::to_value(s),
            Self::DestinationRule(s) => serde_json::to_value(s),
            Self::RequestAuthentication(s) => serde_json::to_value(s),
            Self::HttpRoute(s) => serde_json::to_value(s),
            Self::Gateway(s) => serde_json::to_value(s),
        }
    }
}

/// A parsed spec and the fields amesh does not implement.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// The typed spec.
    pub resource: L7Spec,
    /// Dotted paths of set fields amesh ignores, e.g. `spec.http[0].corsPolicy`.
    pub unsupported: Vec<String>,
}

/// A spec that cannot be used, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// Dotted path, e.g. `spec.http[1].retries.perTryTimeout`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Parses and validates the `spec` of an L7 kind.
pub fn parse(kind: L7Kind, spec: &serde_json::Value) -> Result<Parsed, SpecError> {
    let mut ctx = check::Ctx::default();
    let at = "spec";
    let resource = match kind {
        L7Kind::VirtualService => {
            let s: VirtualService = typed(spec)?;
            s.check(at, &mut ctx)?;
            L7Spec::VirtualService(s)
        }
        L7Kind::DestinationRule => {
            let s: DestinationRule = typed(spec)?;
            s.check(at, &mut ctx)?;
            L7Spec::DestinationRule(Box::new(s))
        }
        L7Kind::RequestAuthentication => {
            let s: RequestAuthentication = typed(spec)?;
            s.check(at, &mut ctx)?;
            L7Spec::RequestAuthentication(s)
        }
        L7Kind::HttpRoute => {
            let s: HttpRouteSpec = typed(spec)?;
            s.check(at, &mut ctx)?;
            L7Spec::HttpRoute(s)
        }
        L7Kind::Gateway => {
            let s: GatewaySpec = typed(spec)?;
            s.check(at, &mut ctx)?;
            L7Spec::Gateway(s)
        }
    };
    Ok(Parsed {
        resource,
        unsupported: ctx.unsupported,
    })
}

/// Deserializes with the failing field's path in the error.
fn typed<T: DeserializeOwned>(spec: &serde_json::Value) -> Result<T, SpecError> {
    // A document without `spec` is an empty spec: validation then names the
    // missing required fields.
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let spec = if spec.is_null() { &empty } else { spec };
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let mut field = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        let mut message = e.into_inner().to_string();
        // serde reports a missing field at its parent; point at the field.
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            field = format!("{field}.{name}");
            message = "required field is missing".to_owned();
        }
        SpecError { field, message }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn kinds_from_every_served_version() {
        for v in ["v1alpha3", "v1beta1", "v1"] {
            assert_eq!(
                L7Kind::from_type(&format!("networking.istio.io/{v}"), "VirtualService"),
                Some(L7Kind::VirtualService)
            );
        }
        assert_eq!(
            L7Kind::from_type("security.istio.io/v1", "RequestAuthentication"),
            Some(L7Kind::RequestAuthentication)
        );
        assert_eq!(
            L7Kind::from_type("gateway.networking.k8s.io/v1", "HTTPRoute"),
            Some(L7Kind::HttpRoute)
        );
        assert_eq!(
            L7Kind::from_type("security.istio.io/v1", "AuthorizationPolicy"),
            None
        );
        assert_eq!(L7Kind::from_type("networking.istio.io/v1", "Gateway"), None);
        assert_eq!(
            L7Kind::from_type("networking.istio.io/v2", "VirtualService"),
            None
        );
    }

    #[test]
    fn missing_spec_names_the_required_field() {
        let e = parse(L7Kind::VirtualService, &serde_json::Value::Null).unwrap_err();
        assert_eq!(e.field, "spec.hosts");
        let e = parse(L7Kind::DestinationRule, &serde_json::json!({})).unwrap_err();
        assert_eq!(e.field, "spec.host");
    }

    #[test]
    fn missing_nested_field_points_at_it() {
        let spec = serde_json::json!({"hosts": ["a"], "http": [{"route": [{"destination": {}}]}]});
        let e = parse(L7Kind::VirtualService, &spec).unwrap_err();
        assert_eq!(e.field, "spec.http[0].route[0].destination.host");
        assert_eq!(
            e.to_string(),
            "spec.http[0].route[0].destination.host: required field is missing"
        );
    }
}
