//! L4 authorization and peer authentication, from users' Istio YAML
//! (`security.istio.io/v1` or `v1beta1` `AuthorizationPolicy` and
//! `PeerAuthentication`), enforced by the destination ztunnel.
//!
//! The resources come from the ztunnel config file (see [`crate::config`])
//! and are held by each [`crate::config::ConfigSnapshot`] as a [`PolicySet`]:
//! - [`PolicySet::authorize`]: may this connection reach this workload?
//!   Istio's order: CUSTOM (unsupported at L4: denies, fail closed), then
//!   DENY, then ALLOW (when any applies, one must match); AUDIT matches are
//!   reported in the [`Decision`] and never change it.
//! - [`PolicySet::mtls_mode`]: is plaintext accepted on this port? See
//!   `peer_auth.rs` for Istio's precedence and our two differences.
//!
//! L7 attributes (requestPrincipals, remoteIpBlocks, hosts, methods, paths,
//! their `not` forms, `when` keys other than `source.ip`,
//! `source.namespace`, `source.principal`, `destination.ip`,
//! `destination.port`) cannot be checked by ztunnel, which fails closed as
//! Istio's does: in ALLOW (and AUDIT) a rule using one never matches; in
//! DENY the rule matches on its L4 parts alone. The decision then says the
//! policy needs a waypoint ([`Decision::needs_waypoint`]).
//!
//! Scope: a policy applies to a workload when it is in a root namespace
//! (the configured one, default [`DEFAULT_ROOT_NAMESPACE`], or
//! [`ISTIO_ROOT_NAMESPACE`]): any namespace; or in the workload's own
//! namespace. With a selector, its `matchLabels` must all be among the
//! workload's labels. Policies with `targetRef(s)` belong to waypoints and
//! gateways: ztunnel skips them ([`PolicySet::skipped`]).
//!
//! Matching, as Istio: a policy matches when any rule does; a rule when its
//! `from` (any entry), `to` (any entry) and `when` (all conditions) do;
//! inside a source or operation every field set must match, any value of a
//! field may. `principals` are compared with the client's
//! `<trust-domain>/ns/<ns>/sa/<sa>` (`spiffe://` optional in the policy);
//! `*` alone means any identity, `abc*` a prefix, `*abc` a suffix. A
//! plaintext client has no identity: `principals`/`namespaces` never match
//! it and `notPrincipals`/`notNamespaces` always do (Istio's behaviour: the
//! empty principal is in no list).

mod authz;
mod bound;
mod compile;
mod matching;
mod model;
mod peer_auth;
mod resource;
mod scalars;
mod set;
mod spec;

pub use authz::{Connection, Decision, DenyReason};
pub use model::{
    Action, AuthorizationPolicySpec, ExtensionProvider, MtlsModeSpec, MutualTls, Operation,
    PeerAuthenticationSpec, PolicyTargetReference, Rule, RuleFrom, RuleTo, Source,
    WorkloadSelector,
};
pub use peer_auth::{EffectiveMtls, MtlsMode};
pub use resource::PolicyKind;
pub use scalars::{Condition, IpBlock, PortValue};
pub use set::{DEFAULT_ROOT_NAMESPACE, ISTIO_ROOT_NAMESPACE, PolicyRef, PolicySet, SkippedPolicy};
pub use spec::{PolicyResource, PolicySpecError, parse_policy};

pub(crate) use compile::{CompiledPolicy, CompiledRule};
pub(crate) use matching::{Cidr, L4Match, ServiceAccount, StrMatch};
pub(crate) use peer_auth::{PlaintextDeny, StrictPorts};
pub(crate) use resource::{Header, ReadError, ResourceReader};
pub(crate) use set::AuthzEntry;

#[cfg(test)]
mod tests;
