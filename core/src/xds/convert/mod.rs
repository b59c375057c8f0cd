//! The workload model ([`crate::config`]) ↔ Istio's workload API, both
//! ways: the control plane converts its [`ConfigSnapshot`] into xDS
//! resources; ztunnel and the node agent rebuild a [`ConfigSnapshot`] from
//! what they receive ([`snapshot_from_xds`]).
//!
//! Resource names are `namespace/name` for Authorizations and services
//! (`namespace/hostname`), the uid for workloads.
//!
//! Mapping (what istiod does for its ztunnel):
//! - Workload → `istio.workload.Workload`: addresses as 4/16 bytes; tunnel
//!   protocol HBONE when in the mesh; trust domain and service account
//!   always set; `services` lists every service the workload is an endpoint
//!   of (`namespace/hostname` → ports); labels are not sent, so
//!   `authorization_policies` lists the selector-scoped policies that select
//!   it. Canonical name/revision come from the labels as in Istio.
//! - Service → `istio.workload.Service`: VIPs, ports, waypoint; endpoints
//!   are not listed: a workload names its services.
//! - AuthorizationPolicy → `istio.security.Authorization`: the compiled L4
//!   rules (rules OR, clauses AND, matches OR); scope GLOBAL in a root
//!   namespace without selector, NAMESPACE without selector,
//!   WORKLOAD_SELECTOR with one. AUDIT is not sent (as in Istio); CUSTOM
//!   becomes DENY with one empty rule (ztunnel fails closed); policies with
//!   targetRefs are not for ztunnel and are not sent.
//! - PeerAuthentication → per workload, the effective mode per port
//!   ([`crate::policy::PolicySet::effective_mtls`]); where STRICT applies, a
//!   DENY Authorization `<pa-namespace>/converted_peer_authentication_<pa-name>`
//!   (named after the most specific PeerAuthentication that had a say, so
//!   every workload it governs shares it), WORKLOAD_SELECTOR scope, bound
//!   to those workloads, with one rule: no principal (`not_principals:
//!   [presence]`) on the STRICT ports (`destination_ports`), or on every
//!   port but the PERMISSIVE ones (`not_destination_ports`). When the only
//!   PeerAuthentication in force is a mesh-wide STRICT, it is one GLOBAL
//!   policy instead, bound to no one.

mod authorization;
mod service;
mod snapshot;
mod workload;

#[cfg(test)]
mod tests;

pub(crate) use authorization::compiled_from_proto;
pub use authorization::{
    AuthorizationOutput, WorkloadBinding, authorization_resources, policy_authorizations,
    workload_binding,
};
pub use service::service_to_proto;
pub use snapshot::{ClientOptions, XdsInput, snapshot_from_xds};
pub use workload::{ServiceIndex, address_resources, workload_proto, workload_to_proto};

use std::net::IpAddr;

/// Received resources that cannot be used: which resource, which field,
/// and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {field}: {message}")]
pub struct ConvertError {
    /// `Address default/a`, `Authorization prod/deny-all`, ...
    pub resource: String,
    /// `addresses[1]`, `rules[0].clauses[1].matches[0].source_ips[0]`, ...
    pub field: String,
    pub message: String,
}

/// Unpacks `any`, which must be of `expected_type` (a type URL).
pub fn decode<T: prost::Message + Default>(
    any: &prost_types::Any,
    expected_type: &str,
) -> Result<T, ConvertError> {
    let err = |field: &str, message: String| ConvertError {
        resource: format!("resource of type {expected_type}"),
        field: field.to_owned(),
        message,
    };
    if any.type_url != expected_type {
        return Err(err(
            "type_url",
            format!("is {:?}, expected {expected_type:?}", any.type_url),
        ));
    }
    T::decode(any.value.as_slice()).map_err(|e| err("value", format!("cannot decode: {e}")))
}

/// An address as Istio sends it: 4 or 16 bytes.
pub(crate) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The inverse of [`ip_bytes`]; the message says what was wrong.
pub(crate) fn ip_from_bytes(bytes: &[u8]) -> Result<IpAddr, String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Ok(IpAddr::from(v4))
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Ok(IpAddr::from(v6))
    } else {
        Err(format!(
            "an address is 4 or 16 bytes, this one is {}",
            bytes.len()
        ))
    }
}
