//! The L4 matchers rules compile to, and their evaluation against one
//! connection. Evaluation never allocates: principals are compared part by
//! part instead of building `td/ns/x/sa/y` strings.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::authz::Connection;

/// `spiffe://` is optional in policies: Istio writes principals without it.
const SPIFFE: &str = "spiffe://";

/// One value of `principals`, `namespaces` or a `source.*` condition, with
/// Istio's wildcards: `*` alone = any value (so it needs an identity),
/// `*abc` = suffix, `abc*` = prefix, anything else exact (a `*` elsewhere is
/// a literal character, as in Istio).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StrMatch {
    Presence,
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
}

impl StrMatch {
    pub(crate) fn parse(value: &str) -> Self {
        if value == "*" {
            Self::Presence
        } else if let Some(suffix) = value.strip_prefix('*') {
            Self::Suffix(suffix.into())
        } else if let Some(prefix) = value.strip_suffix('*') {
            Self::Prefix(prefix.into())
        } else {
            Self::Exact(value.into())
        }
    }

    /// A principal pattern: as [`StrMatch::parse`], without `spiffe://`.
    pub(crate) fn principal(value: &str) -> Self {
        Self::parse(value.strip_prefix(SPIFFE).unwrap_or(value))
    }

    /// Whether the concatenation of `parts` matches. The empty string (no
    /// identity) matches only an empty exact/prefix/suffix pattern, never `*`.
    fn matches_parts(&self, parts: &[&str]) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        match self {
            Self::Presence => total > 0,
            Self::Exact(v) => total == v.len() && starts_with(parts, v.as_bytes()),
            Self::Prefix(v) => starts_with(parts, v.as_bytes()),
            Self::Suffix(v) => ends_with(parts, v.as_bytes()),
        }
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        self.matches_parts(&[value])
    }
}

/// Istio's pattern syntax back (`*`, `abc*`, `*abc`, exact).
impl fmt::Display for StrMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Presence => f.write_str("*"),
            Self::Exact(v) => f.write_str(v),
            Self::Prefix(v) => write!(f, "{v}*"),
            Self::Suffix(v) => write!(f, "*{v}"),
        }
    }
}

fn starts_with(parts: &[&str], mut prefix: &[u8]) -> bool {
    for part in parts {
        let part = part.as_bytes();
        if prefix.len() <= part.len() {
            return part.starts_with(prefix);
        }
        if !prefix.starts_with(part) {
            return false;
        }
        prefix = &prefix[part.len()..];
    }
    prefix.is_empty()
}

fn ends_with(parts: &[&str], mut suffix: &[u8]) -> bool {
    for part in parts.iter().rev() {
        let part = part.as_bytes();
        if suffix.len() <= part.len() {
            return part.ends_with(suffix);
        }
        if !suffix.ends_with(part) {
            return false;
        }
        suffix = &suffix[..suffix.len() - part.len()];
    }
    suffix.is_empty()
}

/// An IP network; a bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR (e.g. 10.0.0.0/16, 10.0.0.1, fd00::/64)")]
pub(crate) struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                // Digits only: "+8" or " 8" would parse as u8 but are typos.
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let prefix: u8 = prefix.parse().map_err(|_| bad())?;
                (addr, prefix)
            }
            None => {
                let addr: IpAddr = s.parse().map_err(|_| bad())?;
                (addr, max_prefix(addr))
            }
        };
        if prefix > max_prefix(addr) {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

impl Cidr {
    /// `None` when `prefix` is longer than the address.
    pub(crate) fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        (prefix <= max_prefix(addr)).then_some(Self { addr, prefix })
    }

    pub(crate) fn addr(&self) -> IpAddr {
        self.addr
    }

    pub(crate) fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Host bits set in the network address are ignored, as Go's
    /// `netip.ParsePrefix` (Istio) does.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        // A v4 client may show up as ::ffff:a.b.c.d on a dual-stack socket.
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A service account as `serviceAccounts` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceAccount {
    pub namespace: Box<str>,
    pub name: Box<str>,
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// For `/config_dump`: each value as Istio writes it.
fn display_all<T: fmt::Display, S: Serializer>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(ToString::to_string))
}

/// Istio's ztunnel `Match`: every non-empty field must hold (AND); within a
/// field any value may match (OR); a `not_` field holds when no value
/// matches. From/to entries and L4 `when` conditions all compile to this.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct L4Match {
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "display_all")]
    pub principals: Vec<StrMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "display_all")]
    pub not_principals: Vec<StrMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "display_all")]
    pub namespaces: Vec<StrMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "display_all")]
    pub not_namespaces: Vec<StrMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "display_all")]
    pub service_accounts: Vec<ServiceAccount>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "display_all")]
    pub not_service_accounts: Vec<ServiceAccount>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "display_all")]
    pub source_ips: Vec<Cidr>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "display_all")]
    pub not_source_ips: Vec<Cidr>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "display_all")]
    pub destination_ips: Vec<Cidr>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "display_all")]
    pub not_destination_ips: Vec<Cidr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_ports: Vec<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ports: Vec<u16>,
}

/// Positive list: empty = no constraint, else some value must match.
fn any_of<T>(list: &[T], matches: impl Fn(&T) -> bool) -> bool {
    list.is_empty() || list.iter().any(matches)
}

/// Negative list: no value may match.
fn none_of<T>(list: &[T], matches: impl Fn(&T) -> bool) -> bool {
    !list.iter().any(matches)
}

impl L4Match {
    pub(crate) fn matches(&self, conn: &Connection<'_>) -> bool {
        // Plaintext has no identity: identity-based positive fields fail and
        // negative ones hold (Istio: the empty principal is in no list).
        let principal = |m: &StrMatch| match conn.src_identity {
            Some(id) => m.matches_parts(&[
                id.trust_domain(),
                "/ns/",
                id.namespace(),
                "/sa/",
                id.service_account(),
            ]),
            None => false,
        };
        let namespace = |m: &StrMatch| {
            conn.src_identity
                .is_some_and(|id| m.matches(id.namespace()))
        };
        let service_account = |sa: &ServiceAccount| {
            conn.src_identity.is_some_and(|id| {
                id.namespace() == &*sa.namespace && id.service_account() == &*sa.name
            })
        };
        any_of(&self.principals, principal)
            && none_of(&self.not_principals, principal)
            && any_of(&self.namespaces, namespace)
            && none_of(&self.not_namespaces, namespace)
            && any_of(&self.service_accounts, service_account)
            && none_of(&self.not_service_accounts, service_account)
            && any_of(&self.source_ips, |c| c.contains(conn.src_ip))
            && none_of(&self.not_source_ips, |c| c.contains(conn.src_ip))
            && any_of(&self.destination_ips, |c| c.contains(conn.dst_ip))
            && none_of(&self.not_destination_ips, |c| c.contains(conn.dst_ip))
            && any_of(&self.destination_ports, |p| *p == conn.dst_port)
            && none_of(&self.not_destination_ports, |p| *p == conn.dst_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn parts(s: &str) -> Vec<&str> {
        // Split at odd places to exercise part boundaries.
        let (a, rest) = s.split_at(s.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        vec![a, "", b, c]
    }

    #[test]
    fn wildcards_follow_istio() {
        let p = "cluster.local/ns/prod/sa/orders";
        assert!(StrMatch::parse("*").matches_parts(&parts(p)));
        assert!(!StrMatch::parse("*").matches(""));
        assert!(StrMatch::parse("cluster.local/ns/prod/*").matches_parts(&parts(p)));
        assert!(!StrMatch::parse("cluster.local/ns/dev/*").matches_parts(&parts(p)));
        assert!(StrMatch::parse("*/sa/orders").matches_parts(&parts(p)));
        assert!(!StrMatch::parse("*/sa/order").matches_parts(&parts(p)));
        assert!(StrMatch::parse(p).matches_parts(&parts(p)));
        assert!(!StrMatch::parse("cluster.local/ns/prod/sa/order").matches_parts(&parts(p)));
        assert!(!StrMatch::parse("cluster.local/ns/prod/sa/orders2").matches_parts(&parts(p)));
        // A star in the middle is literal, as in Istio.
        assert_eq!(StrMatch::parse("a*b"), StrMatch::Exact("a*b".into()));
        assert_eq!(
            StrMatch::principal("spiffe://cluster.local/ns/a/sa/b"),
            StrMatch::Exact("cluster.local/ns/a/sa/b".into())
        );
    }

    #[test]
    fn cidrs_v4_and_v6() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!net.contains("fd00::1".parse().unwrap()));
        let host: Cidr = "10.0.0.7".parse().unwrap();
        assert!(host.contains("10.0.0.7".parse().unwrap()));
        assert!(!host.contains("10.0.0.8".parse().unwrap()));
        let v6: Cidr = "fd00:1::/32".parse().unwrap();
        assert!(v6.contains("fd00:1:ffff::2".parse().unwrap()));
        assert!(!v6.contains("fd00:2::2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.168.1.1".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "x",
            "",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "::/129",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn plaintext_fails_positive_identity_fields_and_passes_negative_ones() {
        let id = Identity::new("cluster.local", "prod", "orders").unwrap();
        let ip = "10.0.0.1".parse().unwrap();
        let conn = |src_identity| Connection {
            src_ip: ip,
            src_identity,
            dst_ip: ip,
            dst_port: 80,
        };
        let positive = L4Match {
            principals: vec![StrMatch::Presence],
            ..L4Match::default()
        };
        let negative = L4Match {
            not_namespaces: vec![StrMatch::parse("prod")],
            ..L4Match::default()
        };
        assert!(positive.matches(&conn(Some(&id))));
        assert!(!positive.matches(&conn(None)));
        assert!(!negative.matches(&conn(Some(&id))));
        assert!(negative.matches(&conn(None)));
        assert!(L4Match::default().matches(&conn(None)));
    }
}
