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

    /// The PeerAuthentications of each level that apply to `dst`: mesh,
    /// namespace, workload.
    fn levels(&self, dst: &Workload) -> [Option<&PeerAuthEntry>; 3] {
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
        [mesh, namespace, workload]
    }

    /// As [`PolicySet::mtls_mode`], with the policy that decided.
    pub fn effective_mtls(&self, dst: &Workload, port: u16) -> EffectiveMtls {
        let levels = self.levels(dst);
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
        for p in levels.into_iter().flatten() {
            apply(mode_of(p), &p.policy);
        }
        if let [_, _, Some(p)] = levels {
            let key = super::scalars::PortValue(port);
            if let Some(port_mtls) = p.spec.port_level_mtls.get(&key) {
                apply(port_mtls.mode, &p.policy);
            }
        }
        effective
    }

    /// Where `dst` refuses plaintext, as Istio's control plane tells its
    /// ztunnel (a DENY policy for connections without a principal);
    /// `None` when it accepts plaintext on every port.
    pub(crate) fn plaintext_deny(&self, dst: &Workload) -> Option<PlaintextDeny> {
        let [_, _, workload] = self.levels(dst);
        // Port 0 is never a portLevelMtls key: this is the workload's mode.
        let base = self.effective_mtls(dst, 0);
        let mut exceptions: Vec<u16> = workload
            .into_iter()
            .flat_map(|p| p.spec.port_level_mtls.keys())
            .map(|p| p.0)
            .filter(|&port| self.effective_mtls(dst, port).mode != base.mode)
            .collect();
        exceptions.sort_unstable();
        exceptions.dedup();
        // Named after the most specific policy that had a say, so that every
        // workload it governs gets the same converted policy.
        let policy = match workload {
            Some(w) if resolve(mode_of(w)).is_some() || !exceptions.is_empty() => w.policy.clone(),
            _ => base.policy?,
        };
        let ports = match base.mode {
            MtlsMode::Strict => StrictPorts::AllExcept(exceptions),
            MtlsMode::Permissive if exceptions.is_empty() => return None,
            MtlsMode::Permissive => StrictPorts::Only(exceptions),
        };
        Some(PlaintextDeny { policy, ports })
    }

    /// When the only PeerAuthentications in force are mesh-wide and the
    /// first says STRICT: it decides alone, for every workload.
    pub(crate) fn mesh_only_strict(&self) -> Option<&PolicyRef> {
        let mut active = self
            .inner
            .peer_authentications
            .iter()
            .filter(|p| p.skipped.is_none());
        if active.clone().any(|p| p.level != Level::Mesh) {
            return None;
        }
        active
            .next()
            .filter(|p| resolve(mode_of(p)) == Some(MtlsMode::Strict))
            .map(|p| &p.policy)
    }
}

fn mode_of(p: &PeerAuthEntry) -> MtlsModeSpec {
    p.spec.mtls.map(|m| m.mode).unwrap_or_default()
}

/// The ports on which a workload refuses plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StrictPorts {
    Only(Vec<u16>),
    AllExcept(Vec<u16>),
}

/// A workload's PeerAuthentications, as one DENY rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PlaintextDeny {
    pub policy: PolicyRef,
    pub ports: StrictPorts,
}
