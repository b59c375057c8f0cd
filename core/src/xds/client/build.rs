//! The data plane's snapshot from what the client holds: decode every
//! resource of the four data-plane types and convert them together.

use super::XdsState;
use crate::config::ConfigSnapshot;
use crate::xds::convert::{ClientOptions, XdsInput, decode, snapshot_from_xds};
use crate::xds::proto::amesh::{NamespaceEnrollment, PodEnrollment};
use crate::xds::proto::istio::security::Authorization;
use crate::xds::proto::istio::workload::Address;
use crate::xds::{
    ADDRESS_TYPE, AUTHORIZATION_TYPE, NAMESPACE_ENROLLMENT_TYPE, POD_ENROLLMENT_TYPE,
};

/// Builds the snapshot ztunnel (addresses, authorizations) or the node agent
/// (pod and namespace enrollments) serves from; types not subscribed are
/// simply empty. The error names the resource and field, for the NACK.
pub fn snapshot_from_state(
    state: &XdsState,
    options: &ClientOptions,
) -> Result<ConfigSnapshot, String> {
    let addresses = decode_all::<Address>(state, ADDRESS_TYPE)?;
    let authorizations = decode_all::<Authorization>(state, AUTHORIZATION_TYPE)?;
    let pods = decode_all::<PodEnrollment>(state, POD_ENROLLMENT_TYPE)?;
    let namespaces = decode_all::<NamespaceEnrollment>(state, NAMESPACE_ENROLLMENT_TYPE)?;
    let input = XdsInput {
        addresses: addresses.iter().collect(),
        authorizations: authorizations.iter().collect(),
        pods: pods.iter().collect(),
        namespaces: namespaces.iter().collect(),
    };
    snapshot_from_xds(input, options).map_err(|e| e.to_string())
}

fn decode_all<T: prost::Message + Default>(
    state: &XdsState,
    type_url: &str,
) -> Result<Vec<T>, String> {
    state
        .resources(type_url)
        .iter()
        .map(|(name, entry)| {
            decode::<T>(&entry.body, type_url).map_err(|e| {
                format!(
                    "resource {name:?} of type {type_url}: {}: {}",
                    e.field, e.message
                )
            })
        })
        .collect()
}
