//! PeerAuthentication: may a workload be reached in plaintext?
//!
//! Istio's composition (`ComposePeerAuthentication`): the workload-level
//! policy (selector, in the workload's namespace; its `portLevelMtls` entry
//! for the port) over the namespace-level one (no selector) over the
//! mesh-level one (root namespace, no selector) over PERMISSIVE. `UNSET`
//! inherits from the level above; a port entry that is `UNSET` inherits the
//! workload's mode.
//!
//! Differences from Istio, both deliberate:
//! - Istio picks the oldest policy when several compete at one level; we
//!   have no creation time and pick the first in the file.
//! - `DISABLE` behaves as `PERMISSIVE`, as in Istio's ambient mode:
//!   ztunnel always speaks mTLS (HBONE) to meshed peers, so "disable" can
//!   only mean "plaintext is accepted too".
//!
//! A PeerAuthentication with a selector in the root namespace is ignored,
//! as in Istio (reported by [`PolicySet::skipped`]).

use std::fmt;

use super::model::MtlsModeSpec;
use super::set::{Level, PeerAuthEntry, PolicyRef, PolicySet};
use crate::config::Workload;

/// What a workload accepts on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MtlsMode {
    /// Only mTLS (HBONE): plaintext connections are refused.
    Strict,
    /// mTLS and plaintext.
    Permissive,
}

impl MtlsMode {
    pub fn allows_plaintext(self) -> bool {
        self == Self::Permissive
    }
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strict => "STRICT",
            Self::Permissive => "PERMISSIVE",
        })
    }
}

/// The mode in force and the PeerAuthentication that set it (`None`: the
/// default, PERMISSIVE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveMtls {
    pub mode: MtlsMode,
    pub policy: Option<PolicyRef>,
}

impl fmt::Display for EffectiveMtls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.policy {
            Some(p) => write!(f, "{} (PeerAuthentication {p})", self.mode),
            None => write!(f, "{} (default: no PeerAuthentication)", self.mode),
        }
    }
}

fn resolve(spec: MtlsModeSpec) -> Option<MtlsMode> {
    match spec {
        MtlsModeSpec::Unset => None,
        MtlsModeSpec::Strict => Some(MtlsMode::Strict),
        MtlsModeSpec::Permissive | MtlsModeSpec::Disable => Some(MtlsMode::Permissive),
    }
}

impl PolicySet {
    /// The mode for connections to `dst` on its `port` (the workload's
    /// port, after any service port mapping).
    pub fn mtls_mode(&self, dst: &Workload, port: u16) -> MtlsMode {
        self.effective_mtls(dst, port).mode
    }

    /// As [`PolicySet::mtls_mode`], with the policy that decided.
    pub fn effective_mtls(&self, dst: &Workload, port: u16) -> EffectiveMtls {
        let inner = &*self.inner;
        let active = || {
            inner
                .peer_authentications
                .iter()
                .filter(|p| p.skipped.is_none())
        };
        let first = |level: Level, applies: &dyn Fn(&PeerAuthEntry) -> bool| {
            active().find(|p| p.level == level && applies(p))
        };
        let mesh = first(Level::Mesh, &|_| true);
        let namespace = first(Level::Namespace, &|p| p.namespace == dst.namespace);
        let workload = first(Level::Workload, &|p| {
            p.namespace == dst.namespace
                && p.spec
                    .selector
                    .as_ref()
                    .is_some_and(|s| s.matches(&dst.labels))
        });

        let mut effective = EffectiveMtls {
            mode: MtlsMode::Permissive,
            policy: None,
        };
        let mut apply = |spec: MtlsModeSpec, policy: &PolicyRef| {
            if let Some(mode) = resolve(spec) {
                effective.mode = mode;
                effective.policy = Some(policy.clone());
            }
        };
        let mode_of = |p: &PeerAuthEntry| p.spec.mtls.map(|m| m.mode).unwrap_or_default();
        for p in [mesh, namespace, workload].into_iter().flatten() {
            apply(mode_of(p), &p.policy);
        }
        if let Some(p) = workload {
            let key = super::scalars::PortValue(port);
            if let Some(port_mtls) = p.spec.port_level_mtls.get(&key) {
                apply(port_mtls.mode, &p.policy);
            }
        }
        effective
    }
}
