//! Workload identities: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Istio policies write principals without the scheme (`cluster.local/ns/x/sa/y`);
//! [`Identity::from_principal`] and [`Identity::to_principal`] convert both ways.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The trust domain used when none is configured, as in Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";

/// Longest SPIFFE ID the SPIFFE spec allows (URI length limit).
const MAX_ID_LEN: usize = 2048;

/// Why a string is not a workload identity. Each variant names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity is empty")]
    Empty,
    #[error("identity is {0} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong(usize),
    #[error("identity {0:?} does not start with \"spiffe://\"")]
    MissingScheme(String),
    #[error("identity {0:?} has an empty trust domain")]
    EmptyTrustDomain(String),
    #[error(
        "identity {input:?}: trust domain {domain:?} may only hold lowercase letters, digits, '.', '-' and '_'"
    )]
    InvalidTrustDomain { input: String, domain: String },
    #[error("identity {0:?} must have the form <trust-domain>/ns/<namespace>/sa/<service-account>")]
    BadPath(String),
    #[error(
        "identity {input:?}: {part} {value:?} is not a valid Kubernetes name (lowercase letters, digits, '-', '.'; at most 253 characters)"
    )]
    InvalidName {
        input: String,
        part: &'static str,
        value: String,
    },
}

/// A SPIFFE workload identity in Istio's Kubernetes form.
///
/// Cheap to clone: the parts share one allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    inner: Arc<IdentityParts>,
}

#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
struct IdentityParts {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl Identity {
    /// Builds an identity from its parts, validating each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        let input = format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}");
        validate_trust_domain(&input, trust_domain)?;
        validate_name(&input, "namespace", namespace)?;
        validate_name(&input, "service account", service_account)?;
        Ok(Self::from_valid_parts(
            trust_domain,
            namespace,
            service_account,
        ))
    }

    fn from_valid_parts(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            inner: Arc::new(IdentityParts {
                trust_domain: trust_domain.to_owned(),
                namespace: namespace.to_owned(),
                service_account: service_account.to_owned(),
            }),
        }
    }

    /// Parses the policy form used by Istio principals: `cluster.local/ns/x/sa/y`.
    pub fn from_principal(principal: &str) -> Result<Self, IdentityError> {
        if principal.starts_with(SCHEME) {
            return Err(IdentityError::BadPath(principal.to_owned()));
        }
        parse_path(principal, principal)
    }

    /// The policy form without the scheme: `cluster.local/ns/x/sa/y`.
    pub fn to_principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.inner.trust_domain, self.inner.namespace, self.inner.service_account
        )
    }

    pub fn trust_domain(&self) -> &str {
        &self.inner.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.inner.service_account
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdentityError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdentityError::TooLong(s.len()));
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::MissingScheme(s.to_owned()))?;
        parse_path(s, rest)
    }
}

/// Parses `<td>/ns/<ns>/sa/<sa>`; `input` is the whole original string, for errors.
fn parse_path(input: &str, path: &str) -> Result<Identity, IdentityError> {
    if input.is_empty() {
        return Err(IdentityError::Empty);
    }
    if input.len() > MAX_ID_LEN {
        return Err(IdentityError::TooLong(input.len()));
    }
    let mut parts = path.split('/');
    let domain = parts.next().unwrap_or_default();
    if domain.is_empty() {
        return Err(IdentityError::EmptyTrustDomain(input.to_owned()));
    }
    validate_trust_domain(input, domain)?;
    let (Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(IdentityError::BadPath(input.to_owned()));
    };
    validate_name(input, "namespace", ns)?;
    validate_name(input, "service account", sa)?;
    Ok(Identity::from_valid_parts(domain, ns, sa))
}

fn validate_trust_domain(input: &str, domain: &str) -> Result<(), IdentityError> {
    if domain.is_empty() {
        return Err(IdentityError::EmptyTrustDomain(input.to_owned()));
    }
    let ok = domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidTrustDomain {
            input: input.to_owned(),
            domain: domain.to_owned(),
        })
    }
}

/// Kubernetes namespaces and service accounts are DNS subdomain names.
fn validate_name(input: &str, part: &'static str, value: &str) -> Result<(), IdentityError> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 253
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidName {
            input: input.to_owned(),
            part,
            value: value.to_owned(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.inner.trust_domain, self.inner.namespace, self.inner.service_account
        )
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_round_trip() {
        let id: Identity = "spiffe://cluster.local/ns/shop/sa/reviews"
            .parse()
            .expect("valid");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "reviews");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/reviews");
    }

    #[test]
    fn principal_form_converts_both_ways() {
        let id = Identity::from_principal("cluster.local/ns/production/sa/order-service")
            .expect("valid");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/production/sa/order-service"
        );
        assert_eq!(
            id.to_principal(),
            "cluster.local/ns/production/sa/order-service"
        );
        let back = Identity::from_principal(&id.to_principal()).expect("round trip");
        assert_eq!(back, id);
        assert_eq!(
            Identity::new("cluster.local", "production", "order-service").expect("valid"),
            id
        );
    }

    #[test]
    fn malformed_inputs_name_what_is_wrong() {
        type Check = fn(&IdentityError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, IdentityError::Empty)),
            ("http://cluster.local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::MissingScheme(_))
            }),
            ("cluster.local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::MissingScheme(_))
            }),
            ("spiffe:///ns/a/sa/b", |e| {
                matches!(e, IdentityError::EmptyTrustDomain(_))
            }),
            ("spiffe://Cluster.Local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::InvalidTrustDomain { .. })
            }),
            ("spiffe://cluster.local/ns/a", |e| {
                matches!(e, IdentityError::BadPath(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/b/extra", |e| {
                matches!(e, IdentityError::BadPath(_))
            }),
            ("spiffe://cluster.local/namespace/a/sa/b", |e| {
                matches!(e, IdentityError::BadPath(_))
            }),
            ("spiffe://cluster.local/ns//sa/b", |e| {
                matches!(
                    e,
                    IdentityError::InvalidName {
                        part: "namespace",
                        ..
                    }
                )
            }),
            ("spiffe://cluster.local/ns/a/sa/B_ad", |e| {
                matches!(
                    e,
                    IdentityError::InvalidName {
                        part: "service account",
                        ..
                    }
                )
            }),
            ("spiffe://cluster.local/ns/-a/sa/b", |e| {
                matches!(
                    e,
                    IdentityError::InvalidName {
                        part: "namespace",
                        ..
                    }
                )
            }),
        ];
        for (input, check) in cases {
            let err = input.parse::<Identity>().expect_err(input);
            assert!(check(&err), "{input:?} gave unexpected error {err:?}");
            assert!(
                err.to_string().contains(input) || input.is_empty(),
                "error for {input:?} does not quote the input: {err}"
            );
        }
        let long = format!("spiffe://cluster.local/ns/a/sa/{}", "b".repeat(3000));
        assert!(matches!(
            long.parse::<Identity>(),
            Err(IdentityError::TooLong(_))
        ));
        assert!(matches!(
            Identity::from_principal("spiffe://cluster.local/ns/a/sa/b"),
            Err(IdentityError::BadPath(_))
        ));
    }
}
