//! Policy tests through the config file, as ztunnel reads them.

mod authz;
mod errors;
mod examples;
mod peer_auth;

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::config::{ConfigError, ConfigSnapshot, ParseOptions, Workload, parse_with};

/// production: database (app=database, version=v1), order-service,
/// payment-service; sandbox: toy; legacy: a pod outside the mesh; plus an
/// IPv6 pod in production and a pod in amesh-system.
const WORKLOADS: &str = "\
workloads:
  - {uid: production/database, name: database, namespace: production, serviceAccount: database,
     ips: [10.0.1.1], labels: {app: database, version: v1}, protocol: HBONE}
  - {uid: production/order-service, name: order-service, namespace: production,
     serviceAccount: order-service, ips: [10.0.1.2], labels: {app: order-service}, protocol: HBONE}
  - {uid: production/payment-service, name: payment-service, namespace: production,
     serviceAccount: payment-service, ips: [10.0.1.3], labels: {app: payment-service}, protocol: HBONE}
  - {uid: sandbox/toy, name: toy, namespace: sandbox, ips: [10.0.2.1], labels: {app: toy}, protocol: HBONE}
  - {uid: legacy/old, name: old, namespace: legacy, ips: [10.0.3.1], labels: {app: old}}
  - {uid: production/v6, name: v6, namespace: production, serviceAccount: v6,
     ips: [\"fd00:1::5\"], labels: {app: v6}, protocol: HBONE}
  - {uid: amesh-system/ctl, name: ctl, namespace: amesh-system, serviceAccount: ctl,
     ips: [10.0.9.1], labels: {app: ctl}, protocol: HBONE}
";

struct Mesh {
    snap: ConfigSnapshot,
}

fn parse_text(text: &str, options: &ParseOptions) -> Result<ConfigSnapshot, ConfigError> {
    parse_with(text, Path::new("mesh.yaml"), options)
}

impl Mesh {
    fn new(policies: &str) -> Self {
        Self::with_options(policies, &ParseOptions::default())
    }

    fn with_options(policies: &str, options: &ParseOptions) -> Self {
        let text = format!("{WORKLOADS}---\n{policies}");
        match parse_text(&text, options) {
            Ok(snap) => Self { snap },
            Err(err) => panic!("{err}"),
        }
    }

    fn policies(&self) -> &PolicySet {
        self.snap.policies()
    }

    fn workload(&self, uid: &str) -> Arc<Workload> {
        self.snap
            .workload_by_uid(uid)
            .unwrap_or_else(|| panic!("no workload {uid}"))
            .clone()
    }

    /// `from` workload → `to` workload on `port`; a client outside the mesh
    /// connects in plaintext (no identity).
    fn decide(&self, from: &str, to: &str, port: u16) -> Decision {
        let src = self.workload(from);
        let dst = self.workload(to);
        let conn = Connection {
            src_ip: src.ips[0],
            src_identity: src.in_mesh().then_some(&src.identity),
            dst_ip: dst.ips[0],
            dst_port: port,
        };
        self.policies().authorize(&conn, &dst)
    }

    fn allowed(&self, from: &str, to: &str, port: u16) -> bool {
        self.decide(from, to, port).is_allowed()
    }

    fn mtls(&self, to: &str, port: u16) -> MtlsMode {
        self.policies().mtls_mode(&self.workload(to), port)
    }
}

fn policy(ns: &str, name: &str) -> PolicyRef {
    PolicyRef::new(ns, name)
}

/// An AuthorizationPolicy document.
fn authz(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}\n---\n"
    )
}

/// A PeerAuthentication document.
fn peer(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\n\
         metadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}\n---\n"
    )
}

const DB: &str = "production/database";
const ORDERS: &str = "production/order-service";
const PAYMENTS: &str = "production/payment-service";
const TOY: &str = "sandbox/toy";
const LEGACY: &str = "legacy/old";
const V6: &str = "production/v6";
const CTL: &str = "amesh-system/ctl";
