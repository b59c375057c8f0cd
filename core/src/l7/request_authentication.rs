//! Istio `RequestAuthentication` (security.istio.io v1beta1 and v1): which
//! JWTs a workload accepts and where to find them.

use serde::{Deserialize, Serialize};

use super::check::{self, Checked, Ctx, err};
use super::common::{PolicyTargetReference, WorkloadSelector};
use super::duration::IstioDuration;

/// The `spec` of a RequestAuthentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    /// Workloads (by pod labels); absent with no targetRef: the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Deprecated single form of `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Services or Gateways (waypoints) this applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Accepted issuers; a request with a token from none of them is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// `jwtRules[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The `iss` claim the token must carry.
    #[serde(default)]
    pub issuer: String,
    /// Accepted `aud` values; empty: the service name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where to fetch the JSON Web Key Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The JSON Web Key Set inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers carrying the token (default `Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters carrying the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies carrying the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Header receiving the verified payload (base64url JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Keep the token in the forwarded request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Copy claims into request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Timeout of the JWKS fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<IstioDuration>,
}

/// `fromHeaders[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// Header name.
    #[serde(default)]
    pub name: String,
    /// Prefix before the token, e.g. `"Bearer "`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// `outputClaimToHeaders[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header to set.
    #[serde(default)]
    pub header: String,
    /// Claim to copy (nested claims with `.`).
    #[serde(default)]
    pub claim: String,
}

impl RequestAuthentication {
    pub(crate) fn check(&self, at: &str, _ctx: &mut Ctx) -> Checked {
        let has_selector = self
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if self.target_ref.is_some() && !self.target_refs.is_empty() {
            return Err(err(
                format!("{at}.targetRef"),
                "only one of targetRef or targetRefs may be set",
            ));
        }
        if has_selector && (self.target_ref.is_some() || !self.target_refs.is_empty()) {
            return Err(err(
                format!("{at}.selector"),
                "only one of selector or targetRefs may be set",
            ));
        }
        if let Some(t) = &self.target_ref {
            check_target(&format!("{at}.targetRef"), t)?;
        }
        for (i, t) in self.target_refs.iter().enumerate() {
            check_target(&format!("{at}.targetRefs[{i}]"), t)?;
        }
        for (i, rule) in self.jwt_rules.iter().enumerate() {
            rule.check(&format!("{at}.jwtRules[{i}]"))?;
        }
        Ok(())
    }
}

fn check_target(at: &str, t: &PolicyTargetReference) -> Checked {
    check::non_empty(&format!("{at}.kind"), &t.kind, "kind")?;
    check::non_empty(&format!("{at}.name"), &t.name, "name")
}

impl JwtRule {
    fn check(&self, at: &str) -> Checked {
        check::non_empty(&format!("{at}.issuer"), &self.issuer, "issuer")?;
        if let Some(uri) = &self.jwks_uri {
            let scheme_ok = ["http://", "https://"]
                .iter()
                .any(|s| uri.starts_with(s) && uri.len() > s.len());
            if !scheme_ok {
                return Err(err(
                    format!("{at}.jwksUri"),
                    format!("jwksUri {uri:?} must be an http:// or https:// URL"),
                ));
            }
        }
        if let Some(jwks) = &self.jwks
            && serde_json::from_str::<serde_json::Value>(jwks).is_err()
        {
            return Err(err(format!("{at}.jwks"), "jwks is not valid JSON"));
        }
        for (i, h) in self.from_headers.iter().enumerate() {
            check::non_empty(
                &format!("{at}.fromHeaders[{i}].name"),
                &h.name,
                "header name",
            )?;
        }
        for (i, p) in self.from_params.iter().enumerate() {
            check::non_empty(&format!("{at}.fromParams[{i}]"), p, "query parameter")?;
        }
        for (i, c) in self.from_cookies.iter().enumerate() {
            check::non_empty(&format!("{at}.fromCookies[{i}]"), c, "cookie name")?;
        }
        for (i, c) in self.output_claim_to_headers.iter().enumerate() {
            let f = format!("{at}.outputClaimToHeaders[{i}]");
            check::non_empty(&format!("{f}.header"), &c.header, "header")?;
            check::non_empty(&format!("{f}.claim"), &c.claim, "claim")?;
        }
        if let Some(t) = &self.timeout {
            check::at_least_1ms(&format!("{at}.timeout"), t)?;
        }
        Ok(())
    }
}
