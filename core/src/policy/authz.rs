//! L4 authorization at the destination ztunnel, with Istio's order:
//! CUSTOM (unsupported here: fail closed), then DENY, then ALLOW. AUDIT
//! policies are reported when they match and never change the decision.

use std::fmt;
use std::net::IpAddr;

use super::model::Action;
use super::set::{PolicyRef, PolicySet};
use crate::config::Workload;
use crate::identity::Identity;

/// What ztunnel knows of a connection at L4.
#[derive(Clone, Copy, Debug)]
pub struct Connection<'a> {
    pub src_ip: IpAddr,
    /// The verified client identity; `None` for plaintext.
    pub src_identity: Option<&'a Identity>,
    pub dst_ip: IpAddr,
    /// The port on the destination workload (target port).
    pub dst_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow {
        /// AUDIT policies that matched.
        audited: Vec<PolicyRef>,
    },
    Deny {
        /// The DENY or CUSTOM policy that decided; `None` when no ALLOW
        /// policy matched (they are listed in the reason).
        policy: Option<PolicyRef>,
        reason: DenyReason,
        audited: Vec<PolicyRef>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// A DENY policy matched. `needs_waypoint`: only a rule with L7
    /// attributes matched, on its L4 parts alone (it may deny more than
    /// written).
    DenyPolicy { needs_waypoint: bool },
    /// ALLOW policies apply to the workload and none matched.
    NoAllowMatch {
        allow_policies: Vec<PolicyRef>,
        /// Those of them with L7 rules, which never match at L4.
        needs_waypoint: Vec<PolicyRef>,
    },
    /// A CUSTOM (external authorization) policy applies: ztunnel cannot ask
    /// an external authorizer, so it fails closed.
    CustomUnsupported,
}

impl DenyReason {
    pub fn needs_waypoint(&self) -> bool {
        match self {
            Self::DenyPolicy { needs_waypoint } => *needs_waypoint,
            Self::NoAllowMatch { needs_waypoint, .. } => !needs_waypoint.is_empty(),
            Self::CustomUnsupported => false,
        }
    }
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    pub fn audited(&self) -> &[PolicyRef] {
        match self {
            Self::Allow { audited } | Self::Deny { audited, .. } => audited,
        }
    }

    /// The deciding policy has L7 rules that only a waypoint can enforce.
    pub fn needs_waypoint(&self) -> bool {
        match self {
            Self::Allow { .. } => false,
            Self::Deny { reason, .. } => reason.needs_waypoint(),
        }
    }
}

fn list(f: &mut fmt::Formatter<'_>, policies: &[PolicyRef]) -> fmt::Result {
    for (i, p) in policies.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{p}")?;
    }
    Ok(())
}

fn l7_note(f: &mut fmt::Formatter<'_>, policies: &[PolicyRef]) -> fmt::Result {
    match policies {
        [] => Ok(()),
        [one] => write!(f, " (policy {one} has L7 rules: they need a waypoint)"),
        many => {
            f.write_str(" (policies ")?;
            list(f, many)?;
            f.write_str(" have L7 rules: they need a waypoint)")
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow { .. } => f.write_str("allowed")?,
            Self::Deny { policy, reason, .. } => match (reason, policy) {
                (DenyReason::DenyPolicy { needs_waypoint }, Some(p)) => {
                    write!(f, "denied by policy {p}")?;
                    if *needs_waypoint {
                        write!(
                            f,
                            " (policy {p} has L7 rules: they need a waypoint; \
                             enforced here on their L4 parts)"
                        )?;
                    }
                }
                (DenyReason::DenyPolicy { .. }, None) => f.write_str("denied by a DENY policy")?,
                (
                    DenyReason::NoAllowMatch {
                        allow_policies,
                        needs_waypoint,
                    },
                    _,
                ) => {
                    f.write_str("no ALLOW policy matched (")?;
                    list(f, allow_policies)?;
                    f.write_str(")")?;
                    l7_note(f, needs_waypoint)?;
                }
                (DenyReason::CustomUnsupported, p) => {
                    f.write_str("denied: CUSTOM policy ")?;
                    if let Some(p) = p {
                        write!(f, "{p} ")?;
                    }
                    f.write_str(
                        "needs an external authorizer, which ztunnel cannot call (fail closed)",
                    )?;
                }
            },
        }
        if !self.audited().is_empty() {
            f.write_str("; audited by ")?;
            list(f, self.audited())?;
        }
        Ok(())
    }
}

impl PolicySet {
    /// Decides whether `conn` may reach `dst`. Allocates only to report
    /// AUDIT matches and denials.
    pub fn authorize(&self, conn: &Connection<'_>, dst: &Workload) -> Decision {
        let inner = &*self.inner;
        let local = inner.local(dst);
        let applicable = || inner.applicable_with(local, dst);
        let with = |action: Action| applicable().filter(move |p| p.action == action);

        let audited: Vec<PolicyRef> = with(Action::Audit)
            .filter(|p| p.compiled.matching(conn).is_some())
            .map(|p| p.policy.clone())
            .collect();
        if let Some(custom) = with(Action::Custom).next() {
            return Decision::Deny {
                policy: Some(custom.policy.clone()),
                reason: DenyReason::CustomUnsupported,
                audited,
            };
        }
        for deny in with(Action::Deny) {
            if let Some(l7_only) = deny.compiled.matching(conn) {
                return Decision::Deny {
                    policy: Some(deny.policy.clone()),
                    reason: DenyReason::DenyPolicy {
                        needs_waypoint: l7_only,
                    },
                    audited,
                };
            }
        }
        let mut any_allow = false;
        for allow in with(Action::Allow) {
            any_allow = true;
            if allow.compiled.matching(conn).is_some() {
                return Decision::Allow { audited };
            }
        }
        if !any_allow {
            return Decision::Allow { audited };
        }
        let allow_policies = with(Action::Allow).map(|p| p.policy.clone()).collect();
        let needs_waypoint = with(Action::Allow)
            .filter(|p| p.compiled.needs_waypoint())
            .map(|p| p.policy.clone())
            .collect();
        Decision::Deny {
            policy: None,
            reason: DenyReason::NoAllowMatch {
                allow_policies,
                needs_waypoint,
            },
            audited,
        }
    }
}
