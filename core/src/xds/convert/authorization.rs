//! AuthorizationPolicy and PeerAuthentication → `istio.security.Authorization`,
//! and the received rules back to L4 matchers. See the module doc of
//! [`super`] for the mapping.

use std::collections::{BTreeMap, HashMap};

use super::{ConvertError, ip_bytes, ip_from_bytes};
use crate::config::Workload;
use crate::policy::{
    Action, AuthzEntry, Cidr, CompiledPolicy, CompiledRule, L4Match, PlaintextDeny, PolicyRef,
    PolicySet, ServiceAccount, StrMatch, StrictPorts,
};
use crate::xds::proto::istio::security::{
    self as proto, Authorization, Clause, Match, Scope, ServiceAccountMatch, StringMatch,
    string_match::MatchType,
};

/// The prefix istiod gives the DENY policies it derives from
/// PeerAuthentications.
const CONVERTED_PREFIX: &str = "converted_peer_authentication_";

/// What the control plane serves for a [`PolicySet`].
#[derive(Debug, Default)]
pub struct AuthorizationOutput {
    /// By xDS name, `namespace/name`.
    pub resources: Vec<(String, Authorization)>,
    /// Workload uid → the WORKLOAD_SELECTOR-scoped policies (`namespace/name`)
    /// bound to it; workloads bound to none are absent.
    pub bindings: HashMap<String, Vec<String>>,
}

/// The Authorizations ztunnel enforces for `policies`, and which of
/// `workloads` each selector-scoped one is bound to.
pub fn authorization_resources<'a>(
    policies: &PolicySet,
    workloads: impl Iterator<Item = &'a Workload>,
) -> AuthorizationOutput {
    let mut resources = policy_authorizations(policies);
    let mut converted_by_name: BTreeMap<String, Authorization> = BTreeMap::new();
    let mut bindings = HashMap::new();
    for w in workloads {
        let binding = workload_binding(policies, w);
        if let Some((name, auth)) = binding.converted {
            converted_by_name.entry(name).or_insert(auth);
        }
        if !binding.policies.is_empty() {
            bindings.insert(w.uid.clone(), binding.policies);
        }
    }
    resources.extend(converted_by_name);
    AuthorizationOutput {
        resources,
        bindings,
    }
}

/// The Authorizations of `policies` themselves (by xDS name,
/// `namespace/name`), without the per-workload converted
/// PeerAuthentication denies (see [`workload_binding`]).
pub fn policy_authorizations(policies: &PolicySet) -> Vec<(String, Authorization)> {
    let mut resources: Vec<(String, Authorization)> = policies
        .authorization_entries()
        .iter()
        .filter_map(|entry| entry_to_proto(policies, entry))
        .map(|auth| (format!("{}/{}", auth.namespace, auth.name), auth))
        .collect();
    if let Some(pa) = policies.mesh_only_strict() {
        let auth = converted(pa, Scope::Global, &StrictPorts::AllExcept(Vec::new()));
        resources.push((format!("{}/{}", auth.namespace, auth.name), auth));
    }
    resources
}

/// What binds one workload: the WORKLOAD_SELECTOR-scoped policies
/// (`namespace/name`), and the DENY converted from the PeerAuthentication
/// that makes it STRICT, when one does (named and built, to be served).
#[derive(Debug, Default, PartialEq)]
pub struct WorkloadBinding {
    pub policies: Vec<String>,
    pub converted: Option<(String, Authorization)>,
}

pub fn workload_binding(policies: &PolicySet, w: &Workload) -> WorkloadBinding {
    let mut names: Vec<String> = policies
        .selector_bound(w)
        .filter(|p| p.action != Action::Audit)
        .map(|p| p.policy.to_string())
        .collect();
    let mut converted = None;
    if policies.mesh_only_strict().is_none()
        && let Some(deny) = policies.plaintext_deny(w)
    {
        let name = converted_name(&deny.policy);
        names.push(name.clone());
        converted = Some((name, converted_deny(&deny)));
    }
    WorkloadBinding {
        policies: names,
        converted,
    }
}

/// The names [`authorization_resources`] binds `w` to, for one workload;
/// `global_strict`: [`PolicySet::mesh_only_strict`], looked up once.
pub(crate) fn bound_policies(
    policies: &PolicySet,
    w: &Workload,
    global_strict: bool,
) -> Vec<String> {
    let mut names: Vec<String> = policies
        .selector_bound(w)
        .filter(|p| p.action != Action::Audit)
        .map(|p| p.policy.to_string())
        .collect();
    if !global_strict && let Some(deny) = policies.plaintext_deny(w) {
        names.push(converted_name(&deny.policy));
    }
    names
}

fn converted_name(pa: &PolicyRef) -> String {
    format!("{}/{CONVERTED_PREFIX}{}", pa.namespace(), pa.name())
}

fn converted_deny(deny: &PlaintextDeny) -> Authorization {
    converted(&deny.policy, Scope::WorkloadSelector, &deny.ports)
}

/// One DENY rule: no principal, on the STRICT ports.
fn converted(pa: &PolicyRef, scope: Scope, ports: &StrictPorts) -> Authorization {
    let (destination_ports, not_destination_ports) = match ports {
        StrictPorts::Only(ports) => (ports, &Vec::new()),
        StrictPorts::AllExcept(ports) => (&Vec::new(), ports),
    };
    let m = Match {
        not_principals: vec![presence()],
        destination_ports: destination_ports.iter().map(|&p| u32::from(p)).collect(),
        not_destination_ports: not_destination_ports
            .iter()
            .map(|&p| u32::from(p))
            .collect(),
        ..Match::default()
    };
    Authorization {
        name: format!("{CONVERTED_PREFIX}{}", pa.name()),
        namespace: pa.namespace().to_owned(),
        scope: scope.into(),
        action: proto::Action::Deny.into(),
        rules: vec![proto::Rule {
            clauses: vec![Clause { matches: vec![m] }],
        }],
        dry_run: false,
    }
}

fn presence() -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Presence(())),
    }
}

fn entry_to_proto(policies: &PolicySet, entry: &AuthzEntry) -> Option<Authorization> {
    if entry.skipped.is_some() {
        return None;
    }
    let scope = if entry.is_selector_scoped() {
        Scope::WorkloadSelector
    } else if policies.is_root_namespace(&entry.namespace) && entry.mesh_wide {
        Scope::Global
    } else {
        Scope::Namespace
    };
    let (action, rules) = match entry.action {
        // Istio does not send AUDIT to ztunnel: it never changes a decision.
        Action::Audit => return None,
        Action::Allow => (proto::Action::Allow, rules_to_proto(&entry.compiled)),
        Action::Deny => (proto::Action::Deny, rules_to_proto(&entry.compiled)),
        // ztunnel cannot call an external authorizer: one empty rule
        // matches every connection, so it denies all (fail closed).
        Action::Custom => (proto::Action::Deny, vec![proto::Rule::default()]),
    };
    Some(Authorization {
        name: entry.name.clone(),
        namespace: entry.namespace.clone(),
        scope: scope.into(),
        action: action.into(),
        rules,
        dry_run: false,
    })
}

fn rules_to_proto(compiled: &CompiledPolicy) -> Vec<proto::Rule> {
    compiled
        .rules
        .iter()
        .map(|rule| proto::Rule {
            clauses: rule
                .clauses
                .iter()
                .map(|clause| Clause {
                    matches: clause.iter().map(match_to_proto).collect(),
                })
                .collect(),
        })
        .collect()
}

fn match_to_proto(m: &L4Match) -> Match {
    let strs = |v: &[StrMatch]| v.iter().map(str_to_proto).collect();
    let sas = |v: &[ServiceAccount]| {
        v.iter()
            .map(|sa| ServiceAccountMatch {
                namespace: sa.namespace.to_string(),
                service_account: sa.name.to_string(),
            })
            .collect()
    };
    let cidrs = |v: &[Cidr]| {
        v.iter()
            .map(|c| proto::Address {
                address: ip_bytes(c.addr()),
                length: u32::from(c.prefix()),
            })
            .collect()
    };
    let ports = |v: &[u16]| v.iter().map(|&p| u32::from(p)).collect();
    Match {
        namespaces: strs(&m.namespaces),
        not_namespaces: strs(&m.not_namespaces),
        service_accounts: sas(&m.service_accounts),
        not_service_accounts: sas(&m.not_service_accounts),
        principals: strs(&m.principals),
        not_principals: strs(&m.not_principals),
        source_ips: cidrs(&m.source_ips),
        not_source_ips: cidrs(&m.not_source_ips),
        destination_ips: cidrs(&m.destination_ips),
        not_destination_ips: cidrs(&m.not_destination_ips),
        destination_ports: ports(&m.destination_ports),
        not_destination_ports: ports(&m.not_destination_ports),
    }
}

fn str_to_proto(m: &StrMatch) -> StringMatch {
    let match_type = match m {
        StrMatch::Presence => MatchType::Presence(()),
        StrMatch::Exact(v) => MatchType::Exact(v.to_string()),
        StrMatch::Prefix(v) => MatchType::Prefix(v.to_string()),
        StrMatch::Suffix(v) => MatchType::Suffix(v.to_string()),
    };
    StringMatch {
        match_type: Some(match_type),
    }
}

/// Received rules → matchers; `resource` labels errors.
pub(crate) fn compiled_from_proto(
    rules: &[proto::Rule],
    resource: &str,
) -> Result<CompiledPolicy, ConvertError> {
    let mut out = CompiledPolicy::default();
    for (i, rule) in rules.iter().enumerate() {
        let mut clauses = Vec::with_capacity(rule.clauses.len());
        for (j, clause) in rule.clauses.iter().enumerate() {
            let mut matches = Vec::with_capacity(clause.matches.len());
            for (k, m) in clause.matches.iter().enumerate() {
                let at = MatchAt {
                    resource,
                    path: format!("rules[{i}].clauses[{j}].matches[{k}]"),
                };
                matches.push(at.decode(m)?);
            }
            clauses.push(matches);
        }
        out.rules.push(CompiledRule { clauses, l7: false });
    }
    Ok(out)
}

/// Where a match is, for errors.
struct MatchAt<'a> {
    resource: &'a str,
    path: String,
}

impl MatchAt<'_> {
    fn err(&self, field: &str, i: usize, message: String) -> ConvertError {
        ConvertError {
            resource: self.resource.to_owned(),
            field: format!("{}.{field}[{i}]", self.path),
            message,
        }
    }

    fn decode(&self, m: &Match) -> Result<L4Match, ConvertError> {
        Ok(L4Match {
            principals: self.strs("principals", &m.principals, true)?,
            not_principals: self.strs("not_principals", &m.not_principals, true)?,
            namespaces: self.strs("namespaces", &m.namespaces, false)?,
            not_namespaces: self.strs("not_namespaces", &m.not_namespaces, false)?,
            service_accounts: self.sas("service_accounts", &m.service_accounts)?,
            not_service_accounts: self.sas("not_service_accounts", &m.not_service_accounts)?,
            source_ips: self.cidrs("source_ips", &m.source_ips)?,
            not_source_ips: self.cidrs("not_source_ips", &m.not_source_ips)?,
            destination_ips: self.cidrs("destination_ips", &m.destination_ips)?,
            not_destination_ips: self.cidrs("not_destination_ips", &m.not_destination_ips)?,
            destination_ports: self.ports("destination_ports", &m.destination_ports)?,
            not_destination_ports: self.ports("not_destination_ports", &m.not_destination_ports)?,
        })
    }

    /// `principal`: istiod may write `spiffe://`; our matchers compare
    /// without it.
    fn strs(
        &self,
        field: &str,
        values: &[StringMatch],
        principal: bool,
    ) -> Result<Vec<StrMatch>, ConvertError> {
        let strip = |v: &str| -> Box<str> {
            match v.strip_prefix("spiffe://") {
                Some(rest) if principal => rest.into(),
                _ => v.into(),
            }
        };
        values
            .iter()
            .enumerate()
            .map(|(i, v)| match &v.match_type {
                Some(MatchType::Presence(())) => Ok(StrMatch::Presence),
                Some(MatchType::Exact(v)) => Ok(StrMatch::Exact(strip(v))),
                Some(MatchType::Prefix(v)) => Ok(StrMatch::Prefix(strip(v))),
                Some(MatchType::Suffix(v)) => Ok(StrMatch::Suffix(v.as_str().into())),
                None => Err(self.err(
                    field,
                    i,
                    "no match type (exact, prefix, suffix or presence)".into(),
                )),
            })
            .collect()
    }

    fn sas(
        &self,
        field: &str,
        values: &[ServiceAccountMatch],
    ) -> Result<Vec<ServiceAccount>, ConvertError> {
        values
            .iter()
            .enumerate()
            .map(|(i, sa)| {
                if sa.namespace.is_empty() || sa.service_account.is_empty() {
                    return Err(self.err(
                        field,
                        i,
                        "namespace and service_account must both be set".into(),
                    ));
                }
                Ok(ServiceAccount {
                    namespace: sa.namespace.as_str().into(),
                    name: sa.service_account.as_str().into(),
                })
            })
            .collect()
    }

    fn cidrs(&self, field: &str, values: &[proto::Address]) -> Result<Vec<Cidr>, ConvertError> {
        values
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let addr = ip_from_bytes(&a.address).map_err(|m| self.err(field, i, m))?;
                u8::try_from(a.length)
                    .ok()
                    .and_then(|len| Cidr::new(addr, len))
                    .ok_or_else(|| {
                        self.err(
                            field,
                            i,
                            format!("length {} is too long for address {addr}", a.length),
                        )
                    })
            })
            .collect()
    }

    fn ports(&self, field: &str, values: &[u32]) -> Result<Vec<u16>, ConvertError> {
        values
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                u16::try_from(p)
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| self.err(field, i, format!("{p} is not a port (1-65535)")))
            })
            .collect()
    }
}
