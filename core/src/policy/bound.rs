//! A [`PolicySet`] from Istio's `istio.security.Authorization` resources,
//! as ztunnel receives them over xDS: already compiled, scoped by the
//! control plane (see [`crate::xds::convert`]).
//!
//! - GLOBAL: every workload of the mesh;
//! - NAMESPACE: every workload of the policy's namespace;
//! - WORKLOAD_SELECTOR: the workloads whose `authorization_policies` name
//!   it (`namespace/name`), of its namespace, or of any namespace when it
//!   is in a root namespace.
//!
//! There are no PeerAuthentications: the control plane sends them as DENY
//! policies for connections without a principal (as Istio does), so
//! [`PolicySet::mtls_mode`] says PERMISSIVE and [`PolicySet::authorize`]
//! refuses plaintext where STRICT applies.

use std::collections::HashSet;
use std::sync::Arc;

use super::model::Action;
use super::set::{AuthzEntry, Inner, PolicyRef, PolicySet, Selection};
use crate::xds::convert::{ConvertError, compiled_from_proto};
use crate::xds::proto::istio::security::{self as proto, Scope};

impl PolicySet {
    /// Validates and indexes `auths`; an error names the resource and field.
    pub fn from_authorizations(
        auths: Vec<proto::Authorization>,
        root_namespace: &str,
    ) -> Result<PolicySet, ConvertError> {
        let mut inner = Inner {
            root_namespace: root_namespace.to_owned(),
            ..Inner::default()
        };
        let mut seen = HashSet::new();
        for auth in auths {
            let resource = format!("Authorization {}/{}", auth.namespace, auth.name);
            let err = |field: &str, message: String| ConvertError {
                resource: resource.clone(),
                field: field.to_owned(),
                message,
            };
            if auth.name.is_empty() {
                return Err(err("name", "must not be empty".into()));
            }
            if auth.namespace.is_empty() {
                return Err(err("namespace", "must not be empty".into()));
            }
            if !seen.insert((auth.namespace.clone(), auth.name.clone())) {
                return Err(err("name", "sent twice".into()));
            }
            let scope = Scope::try_from(auth.scope)
                .map_err(|_| err("scope", format!("unknown scope {}", auth.scope)))?;
            let action = match proto::Action::try_from(auth.action) {
                // A dry run is reported, never enforced: our AUDIT.
                Ok(_) if auth.dry_run => Action::Audit,
                Ok(proto::Action::Allow) => Action::Allow,
                Ok(proto::Action::Deny) => Action::Deny,
                Err(_) => return Err(err("action", format!("unknown action {}", auth.action))),
            };
            let compiled = compiled_from_proto(&auth.rules, &resource)?;
            let root = inner.is_root(&auth.namespace);
            let (selection, mesh_wide, scope_name) = match scope {
                Scope::Global => (Selection::All, true, "GLOBAL"),
                Scope::Namespace => (Selection::All, false, "NAMESPACE"),
                Scope::WorkloadSelector => (Selection::Bound, root, "WORKLOAD_SELECTOR"),
            };
            let index = inner.authorization_policies.len();
            if mesh_wide {
                inner.mesh_wide.push(index);
            } else {
                let local = inner.by_namespace.entry(auth.namespace.clone());
                local.or_default().push(index);
            }
            inner.authorization_policies.push(AuthzEntry {
                policy: PolicyRef::new(&auth.namespace, &auth.name),
                namespace: auth.namespace,
                name: auth.name,
                mesh_wide,
                skipped: None,
                action,
                selection,
                compiled,
                spec: None,
                scope: Some(scope_name),
            });
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }
}
