//! Istio's `security.istio.io` resources as users write them (camelCase,
//! unknown fields refused). These are also what `/config_dump` prints.
//!
//! Every field of Istio's API parses, including the L7 ones ztunnel cannot
//! enforce (see [`super::compile`] for what happens to them).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::scalars::{Condition, IpBlock, PortValue};

/// `spec.selector`: the workloads a policy applies to, by labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    }
}

/// `spec.targetRef(s)`: attaches a policy to a waypoint or gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Audit => "AUDIT",
            Self::Custom => "CUSTOM",
        })
    }
}

/// `spec.provider` of a CUSTOM policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

/// A rule matches when all of `from` (any entry), `to` (any entry) and
/// `when` (every condition) match; absent parts match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(deserialize_with = "non_empty_source")]
    pub source: Source,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    #[serde(deserialize_with = "non_empty_operation")]
    pub operation: Operation,
}

/// Who connects. `requestPrincipals` and `remoteIpBlocks` (and their `not`
/// forms) are L7: they come from a JWT or X-Forwarded-For.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// `<namespace>/<name>`, or `<name>` in the policy's namespace (Istio 1.24+).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<IpBlock>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<IpBlock>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<IpBlock>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<IpBlock>,
}

impl Source {
    /// The L7 fields that are set, by their YAML names.
    pub(crate) fn l7_fields(&self) -> impl Iterator<Item = &'static str> {
        [
            ("requestPrincipals", self.request_principals.is_empty()),
            (
                "notRequestPrincipals",
                self.not_request_principals.is_empty(),
            ),
            ("remoteIpBlocks", self.remote_ip_blocks.is_empty()),
            ("notRemoteIpBlocks", self.not_remote_ip_blocks.is_empty()),
        ]
        .into_iter()
        .filter_map(|(name, empty)| (!empty).then_some(name))
    }

    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// What is connected to. Only `ports`/`notPorts` are L4.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<PortValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

impl Operation {
    pub(crate) fn l7_fields(&self) -> impl Iterator<Item = &'static str> {
        [
            ("hosts", self.hosts.is_empty()),
            ("notHosts", self.not_hosts.is_empty()),
            ("methods", self.methods.is_empty()),
            ("notMethods", self.not_methods.is_empty()),
            ("paths", self.paths.is_empty()),
            ("notPaths", self.not_paths.is_empty()),
        ]
        .into_iter()
        .filter_map(|(name, empty)| (!empty).then_some(name))
    }

    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

// Istio refuses an empty source/operation: it would match everything, which
// is never what `from: [{source: {}}]` was meant to say.
fn non_empty_source<'de, D: Deserializer<'de>>(d: D) -> Result<Source, D::Error> {
    let source = Source::deserialize(d)?;
    if source.is_empty() {
        return Err(de::Error::custom("`source` must not be empty"));
    }
    Ok(source)
}

fn non_empty_operation<'de, D: Deserializer<'de>>(d: D) -> Result<Operation, D::Error> {
    let operation = Operation::deserialize(d)?;
    if operation.is_empty() {
        return Err(de::Error::custom("`operation` must not be empty"));
    }
    Ok(operation)
}

/// `spec.mtls.mode` as written. `UNSET` inherits from the next level up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsModeSpec {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsModeSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Keyed by the workload's port (the target port, not a service port).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<PortValue, MutualTls>,
}

/// A selector with no labels selects everything, like no selector (Istio).
pub(crate) fn has_labels(selector: Option<&WorkloadSelector>) -> bool {
    selector.is_some_and(|s| !s.match_labels.is_empty())
}

/// A cross-field problem found once a spec has been read: the field below
/// `spec` (also the YAML key its line is found by), and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SpecError {
    pub field: &'static str,
    pub message: String,
}

impl AuthorizationPolicySpec {
    /// Checks Istio's validation rules that span fields.
    pub(crate) fn validate(&self) -> Result<(), SpecError> {
        let has_target = self.target_ref.is_some() || !self.target_refs.is_empty();
        if has_target && self.selector.is_some() {
            return Err(SpecError {
                field: "selector",
                message: "only one of `selector` and `targetRef`/`targetRefs` may be set".into(),
            });
        }
        match (self.action, &self.provider) {
            (Action::Custom, None) => Err(SpecError {
                field: "action",
                message: "a CUSTOM policy needs `provider`".into(),
            }),
            (Action::Custom, Some(_)) | (_, None) => Ok(()),
            (action, Some(_)) => Err(SpecError {
                field: "provider",
                message: format!("`provider` is only allowed with action CUSTOM, not {action}"),
            }),
        }
    }
}

impl PeerAuthenticationSpec {
    pub(crate) fn validate(&self) -> Result<(), SpecError> {
        if !self.port_level_mtls.is_empty() && !has_labels(self.selector.as_ref()) {
            return Err(SpecError {
                field: "portLevelMtls",
                message: "portLevelMtls needs a workload selector (matchLabels): \
                          namespace- and mesh-wide policies cannot set ports"
                    .into(),
            });
        }
        Ok(())
    }
}
