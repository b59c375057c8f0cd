//! The workload model: the workloads and services a ztunnel and node agent
//! act on, in the shapes the control plane will push later. Today they come
//! from a local YAML file ([`load_file`], [`ConfigWatcher`]).
//!
//! ```yaml
//! namespaces:
//!   - name: default
//!     labels: {istio.io/dataplane-mode: ambient}   # every pod in it is in the mesh
//! workloads:
//!   - uid: default/client            # unique; "<namespace>/<name>" by convention
//!     name: client
//!     namespace: default
//!     serviceAccount: client         # default "default"
//!     node: node-0
//!     ips: [10.244.0.2]              # may be empty until the pod has its IPs
//!     labels: {app: client}          # istio.io/dataplane-mode: ambient|none overrides the namespace
//!     hostNetwork: false             # true: never captured
//!     protocol: HBONE                # optional: states enrollment instead of deriving it
//!     netns: cni-1234                # optional: netns name under the agent's netns dir
//!     status: Healthy                # Unhealthy endpoints are skipped by load balancing
//!     waypoint: {address: 10.244.0.9, port: 15008}
//! services:
//!   - name: echo
//!     namespace: default
//!     hostname: echo.default.svc.cluster.local   # default <name>.<namespace>.svc.cluster.local
//!     vips: [10.96.0.10]
//!     ports: [{port: 80, targetPort: 8080}]     # targetPort defaults to port
//!     endpoints: [default/echo-0, default/echo-1]
//! ```
//!
//! The file may hold more YAML documents (`---`): Istio resources,
//! `security.istio.io/v1` (or `v1beta1`) `AuthorizationPolicy` and
//! `PeerAuthentication`, exactly as users apply them to Kubernetes
//! (`metadata.namespace` is required). At most one document has no `kind`:
//! the workloads and services above. Policies in the root namespace
//! ([`ParseOptions::root_namespace`], default `amesh-system`) or in
//! `istio-system` apply mesh-wide. See [`crate::policy`].
//!
//! ```yaml
//! workloads: [...]
//! services: [...]
//! ---
//! apiVersion: security.istio.io/v1
//! kind: AuthorizationPolicy
//! metadata: {name: no-sandbox, namespace: production}
//! spec:
//!   action: DENY
//!   rules:
//!     - from: [{source: {namespaces: [sandbox]}}]
//! ---
//! apiVersion: security.istio.io/v1
//! kind: PeerAuthentication
//! metadata: {name: default, namespace: production}
//! spec:
//!   mtls: {mode: STRICT}
//! ```

pub mod enrollment;
mod error;
mod model;
mod parse;
mod snapshot;
mod watch;

pub use error::ConfigError;
pub use model::{HealthStatus, Namespace, Protocol, Service, ServicePort, WaypointRef, Workload};
pub use parse::{ParseOptions, load_file, load_file_with, parse, parse_with};
pub use snapshot::{ConfigSnapshot, ModelParts, ServiceEntry};
pub use watch::{ConfigWatcher, WatchConfig};
