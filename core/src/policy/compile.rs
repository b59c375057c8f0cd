//! AuthorizationPolicy spec → L4 matchers, as Istio's control plane
//! converts policies for its ztunnel (`handleRule`).
//!
//! L7 attributes (requestPrincipals, remoteIpBlocks, hosts, methods, paths,
//! their `not` forms, and `when` keys other than the five L4 ones) cannot be
//! seen by ztunnel. Like Istio, it fails closed:
//! - ALLOW (and AUDIT): a rule with any L7 attribute never matches, so the
//!   policy allows less than written;
//! - DENY: the rule is kept without its L7 parts and matches on its L4
//!   parts alone, so the policy denies more than written.
//!
//! Either way the policy needs a waypoint to be enforced as written; the
//! attributes found are kept for logs and `/config_dump`.

use std::collections::BTreeSet;

use serde::Serialize;

use super::authz::Connection;
use super::matching::{Cidr, L4Match, ServiceAccount, StrMatch};
use super::model::{Action, AuthorizationPolicySpec, Operation, Rule, Source};
use super::scalars::{Condition, IpBlock, L4_WHEN_KEYS};

/// A rule as clauses: every clause must hold, and a clause holds when any of
/// its matches does. `{}` has no clause and matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct CompiledRule {
    pub clauses: Vec<Vec<L4Match>>,
    /// L7 parts were dropped (DENY): matching denies more than written.
    #[serde(skip)]
    pub l7: bool,
}

impl CompiledRule {
    pub(crate) fn matches(&self, conn: &Connection<'_>) -> bool {
        self.clauses
            .iter()
            .all(|clause| clause.iter().any(|m| m.matches(conn)))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CompiledPolicy {
    /// The rules that can match; ALLOW/AUDIT rules with L7 attributes are
    /// left out.
    #[serde(skip)]
    pub rules: Vec<CompiledRule>,
    /// The L7 attributes the policy uses, by their YAML names.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub l7_attributes: BTreeSet<String>,
}

impl CompiledPolicy {
    /// `None` when no rule matches; else whether only rules with dropped L7
    /// parts matched (a pure L4 match is preferred: it is certain).
    pub(crate) fn matching(&self, conn: &Connection<'_>) -> Option<bool> {
        let mut l7_only = None;
        for rule in self.rules.iter().filter(|r| r.matches(conn)) {
            if !rule.l7 {
                return Some(false);
            }
            l7_only = Some(true);
        }
        l7_only
    }

    pub(crate) fn needs_waypoint(&self) -> bool {
        !self.l7_attributes.is_empty()
    }
}

pub(crate) fn compile(spec: &AuthorizationPolicySpec, namespace: &str) -> CompiledPolicy {
    let mut out = CompiledPolicy::default();
    for rule in &spec.rules {
        let l7 = l7_attributes(rule);
        let has_l7 = !l7.is_empty();
        out.l7_attributes.extend(l7);
        if has_l7 && spec.action != Action::Deny {
            continue;
        }
        out.rules.push(compile_rule(rule, namespace, has_l7));
    }
    out
}

fn l7_attributes(rule: &Rule) -> Vec<String> {
    let from = rule.from.iter().flat_map(|f| f.source.l7_fields());
    let to = rule.to.iter().flat_map(|t| t.operation.l7_fields());
    let mut found: Vec<String> = from.chain(to).map(str::to_owned).collect();
    found.extend(
        rule.when
            .iter()
            .filter(|c| !L4_WHEN_KEYS.contains(&c.key.as_str()))
            .map(|c| c.key.clone()),
    );
    found
}

fn compile_rule(rule: &Rule, namespace: &str, l7: bool) -> CompiledRule {
    let mut clauses = Vec::new();
    if !rule.from.is_empty() {
        clauses.push(
            rule.from
                .iter()
                .map(|f| source(&f.source, namespace))
                .collect(),
        );
    }
    if !rule.to.is_empty() {
        clauses.push(rule.to.iter().map(|t| operation(&t.operation)).collect());
    }
    // L7 conditions are dropped: only DENY rules with them get here.
    for condition in &rule.when {
        if let Some(m) = when(condition) {
            clauses.push(vec![m]);
        }
    }
    CompiledRule { clauses, l7 }
}

fn strs(values: &[String]) -> Vec<StrMatch> {
    values.iter().map(|v| StrMatch::parse(v)).collect()
}

fn principals(values: &[String]) -> Vec<StrMatch> {
    values.iter().map(|v| StrMatch::principal(v)).collect()
}

/// `ns/sa`, or `sa` in the policy's own namespace (Istio's rule).
fn service_accounts(values: &[String], namespace: &str) -> Vec<ServiceAccount> {
    values
        .iter()
        .map(|v| {
            let (ns, sa) = v.split_once('/').unwrap_or((namespace, v));
            ServiceAccount {
                namespace: ns.into(),
                name: sa.into(),
            }
        })
        .collect()
}

fn source(src: &Source, namespace: &str) -> L4Match {
    let ips = |blocks: &[IpBlock]| blocks.iter().map(|b| b.cidr).collect();
    L4Match {
        principals: principals(&src.principals),
        not_principals: principals(&src.not_principals),
        namespaces: strs(&src.namespaces),
        not_namespaces: strs(&src.not_namespaces),
        service_accounts: service_accounts(&src.service_accounts, namespace),
        not_service_accounts: service_accounts(&src.not_service_accounts, namespace),
        source_ips: ips(&src.ip_blocks),
        not_source_ips: ips(&src.not_ip_blocks),
        ..L4Match::default()
    }
}

fn operation(op: &Operation) -> L4Match {
    L4Match {
        destination_ports: op.ports.iter().map(|p| p.0).collect(),
        not_destination_ports: op.not_ports.iter().map(|p| p.0).collect(),
        ..L4Match::default()
    }
}

/// An L4 condition as one match (`values` and `notValues` both hold);
/// `None` for L7 keys. Values were checked when read.
fn when(c: &Condition) -> Option<L4Match> {
    let cidrs = |v: &[String]| v.iter().filter_map(|s| s.parse::<Cidr>().ok()).collect();
    let ports = |v: &[String]| v.iter().filter_map(|s| s.parse::<u16>().ok()).collect();
    let mut m = L4Match::default();
    match c.key.as_str() {
        "source.ip" => {
            m.source_ips = cidrs(&c.values);
            m.not_source_ips = cidrs(&c.not_values);
        }
        "source.namespace" => {
            m.namespaces = strs(&c.values);
            m.not_namespaces = strs(&c.not_values);
        }
        "source.principal" => {
            m.principals = principals(&c.values);
            m.not_principals = principals(&c.not_values);
        }
        "destination.ip" => {
            m.destination_ips = cidrs(&c.values);
            m.not_destination_ips = cidrs(&c.not_values);
        }
        "destination.port" => {
            m.destination_ports = ports(&c.values);
            m.not_destination_ports = ports(&c.not_values);
        }
        _ => return None,
    }
    Some(m)
}
