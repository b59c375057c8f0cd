//! What a mesh is made of (nodes, pods, services) and the builder that
//! creates it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use super::capture::Capture;
use super::process::Process;
use super::{config, naming, netns, network};

/// Most pods one node can hold: its /24 minus network, gateway, broadcast.
const MAX_PODS_PER_NODE: u16 = 253;
/// Nodes share one /24 underlay.
const MAX_NODES: usize = 250;

/// A pod to create.
#[derive(Debug, Clone)]
pub struct PodSpec {
    name: String,
    namespace: String,
    node: usize,
    mesh: bool,
    service_account: String,
    labels: BTreeMap<String, String>,
    follows_namespace: bool,
}

impl PodSpec {
    /// A mesh pod in namespace `default` with service account `default`.
    pub fn new(name: impl Into<String>, node: usize) -> Self {
        Self {
            name: name.into(),
            namespace: "default".into(),
            node,
            mesh: true,
            service_account: "default".into(),
            labels: BTreeMap::new(),
            follows_namespace: false,
        }
    }

    /// In a CNI mesh: no `istio.io/dataplane-mode` label of its own, so the
    /// pod is in the mesh exactly when its namespace is.
    pub fn follow_namespace(mut self) -> Self {
        self.follows_namespace = true;
        self
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// `false` makes a non-mesh pod (protocol TCP, not captured; in a CNI
    /// mesh, labelled `istio.io/dataplane-mode=none`).
    pub fn mesh(mut self, mesh: bool) -> Self {
        self.mesh = mesh;
        self
    }

    pub fn service_account(mut self, service_account: impl Into<String>) -> Self {
        self.service_account = service_account.into();
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.labels
            .extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }
}

/// A service to put in the config.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    name: String,
    namespace: String,
    vips: Vec<String>,
    ports: Vec<(u16, u16)>,
    endpoints: Vec<String>,
}

impl ServiceSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: "default".into(),
            vips: Vec::new(),
            ports: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// An IPv4 VIP; checked by `build()`.
    pub fn vip(mut self, vip: impl Into<String>) -> Self {
        self.vips.push(vip.into());
        self
    }

    /// Service port → pod (target) port.
    pub fn port(mut self, port: u16, target_port: u16) -> Self {
        self.ports.push((port, target_port));
        self
    }

    /// Endpoints: pod names of this mesh, or `<namespace>/<name>` uids.
    pub fn endpoints<S: Into<String>>(mut self, endpoints: impl IntoIterator<Item = S>) -> Self {
        self.endpoints.extend(endpoints.into_iter().map(Into::into));
        self
    }
}

/// A node: its own netns, where the daemons run and pods are routed.
#[derive(Debug, Clone)]
pub struct Node {
    /// `node-<index>`.
    pub name: String,
    pub index: usize,
    pub netns: String,
    /// `10.0.0.(index+1)` on the fabric.
    pub underlay_ip: Ipv4Addr,
    /// `10.<pod octet>.index.1` on cni0, the pods' default gateway.
    pub pod_gateway: Ipv4Addr,
}

/// A pod: a netns with one veth (`eth0`) to its node's cni0 bridge.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    /// `<namespace>/<name>`.
    pub uid: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// Node index.
    pub node: usize,
    pub node_name: String,
    pub ip: Ipv4Addr,
    pub netns: String,
    /// Mesh (HBONE) pod, or a non-mesh (plain TCP) one.
    pub mesh: bool,
    /// CNI mesh: `mesh` is ignored, the namespace's label decides.
    pub follows_namespace: bool,
    /// Index within its node: address `.index+2`, node-side veth `vp<index>`.
    pub(super) index: u16,
}

impl Pod {
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// The pod's IPv6 address (every pod is dual-stack):
    /// `fd00:10:244:<node>::<host>`, mirroring `10.244.<node>.<host>`.
    pub fn ip6(&self) -> Ipv6Addr {
        let [_, range, node, host] = self.ip.octets();
        Ipv6Addr::new(
            0xfd00,
            0x10,
            v6_hextet(range),
            node.into(),
            0,
            0,
            0,
            host.into(),
        )
    }

    pub fn addr6(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip6(), port))
    }
}

impl Node {
    /// `fd00:10::(index+1)` on the fabric.
    pub fn underlay_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            0x10,
            0,
            0,
            0,
            0,
            0,
            self.underlay_ip.octets()[3].into(),
        )
    }

    /// `fd00:10:244:<index>::1` on cni0.
    pub fn pod_gateway6(&self) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            0x10,
            v6_hextet(self.pod_gateway.octets()[1]),
            self.pod_gateway.octets()[2].into(),
            0,
            0,
            0,
            1,
        )
    }
}

/// The IPv6 hextet that reads like the IPv4 octet (244 → `:244:`), so
/// addresses of both families look alike in logs.
pub(super) fn v6_hextet(octet: u8) -> u16 {
    u16::from_str_radix(&octet.to_string(), 16).unwrap_or(u16::from(octet))
}

/// A service as written to the config.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// `<name>.<namespace>.svc.cluster.local`.
    pub hostname: String,
    pub vips: Vec<Ipv4Addr>,
    /// (port, targetPort).
    pub ports: Vec<(u16, u16)>,
    /// Workload uids.
    pub endpoints: Vec<String>,
}

/// Settings for the daemons started by `Mesh::start`.
#[derive(Debug, Clone)]
pub(super) struct DaemonSettings {
    pub env: Vec<(String, String)>,
    pub ztunnel_args: Vec<String>,
    pub agent_args: Vec<String>,
    pub ready_timeout: Duration,
    pub capture: Capture,
}

/// Per node: the two daemons, once started.
#[derive(Debug, Default)]
pub(super) struct NodeDaemons {
    pub agent: Option<Process>,
    pub ztunnel: Option<Process>,
    /// The previous ztunnel during an upgrade, until it has drained.
    pub old_ztunnel: Option<Process>,
}

/// Describes a mesh; `build()` creates its namespaces and config.
#[derive(Debug, Clone)]
pub struct MeshBuilder {
    nodes: usize,
    pods: Vec<PodSpec>,
    services: Vec<ServiceSpec>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    cni: bool,
    control_plane: bool,
    pod_range: Option<u8>,
    daemons: DaemonSettings,
}

impl Default for MeshBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MeshBuilder {
    /// One node, no pods, daemons with `RUST_LOG=info`, 30 s to get ready.
    pub fn new() -> Self {
        Self {
            nodes: 1,
            pods: Vec::new(),
            services: Vec::new(),
            namespaces: BTreeMap::new(),
            cni: false,
            control_plane: false,
            pod_range: None,
            daemons: DaemonSettings {
                env: vec![("RUST_LOG".into(), "info".into())],
                ztunnel_args: Vec::new(),
                agent_args: Vec::new(),
                ready_timeout: Duration::from_secs(30),
                capture: Capture::from_env(),
            },
        }
    }

    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    pub fn pod(mut self, pod: PodSpec) -> Self {
        self.pods.push(pod);
        self
    }

    pub fn pods(mut self, pods: impl IntoIterator<Item = PodSpec>) -> Self {
        self.pods.extend(pods);
        self
    }

    pub fn service(mut self, service: ServiceSpec) -> Self {
        self.services.push(service);
        self
    }

    /// Pods are created the way a node creates them: each node runs the CNI
    /// chain (bridge + host-local, with `amesh-cni` that the node agent
    /// inserts) after its daemons start; the config lists namespaces and
    /// labels instead of each pod's protocol and netns. The mesh gets a pod
    /// range of its own (`10.<n>.<node>.0/24`), since the agent finds
    /// running pods' netns by IP among all of the machine's namespaces.
    /// Config and certificates come from `amesh-control-plane` (folder
    /// source, run in the fabric netns) over xDS and its CA, instead of a
    /// shared file and CA dir. Implies [`MeshBuilder::cni`]: enrollment
    /// follows labels, as the control plane derives it.
    pub fn control_plane(mut self) -> Self {
        self.control_plane = true;
        self.cni()
    }

    pub fn cni(mut self) -> Self {
        self.cni = true;
        self
    }

    /// The second octet of the pods' addresses (`10.<octet>.<node>.x`),
    /// for a mesh that runs alone (the demo); tests leave the default.
    pub fn pod_range(mut self, octet: u8) -> Self {
        self.pod_range = Some(octet);
        self
    }

    /// A namespace's labels (e.g. `istio.io/dataplane-mode: ambient`).
    pub fn namespace_labels<K: Into<String>, V: Into<String>>(
        mut self,
        namespace: impl Into<String>,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.namespaces.insert(
            namespace.into(),
            labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// An environment variable for both daemons (overrides `RUST_LOG=info`).
    pub fn daemon_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.daemons.env.retain(|(k, _)| *k != key);
        self.daemons.env.push((key, value.into()));
        self
    }

    /// An extra command-line argument for every ztunnel.
    pub fn ztunnel_arg(mut self, arg: impl Into<String>) -> Self {
        self.daemons.ztunnel_args.push(arg.into());
        self
    }

    /// An extra command-line argument for every node agent.
    pub fn agent_arg(mut self, arg: impl Into<String>) -> Self {
        self.daemons.agent_args.push(arg.into());
        self
    }

    /// The node agents' capture backend (default: `AMESH_TEST_CAPTURE`,
    /// else nftables).
    pub fn capture(mut self, capture: Capture) -> Self {
        self.daemons.capture = capture;
        self
    }

    /// How long `Mesh::start` waits for every mesh pod's HBONE listener.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.daemons.ready_timeout = timeout;
        self
    }

    /// Creates the namespaces, links, routes and the config file. On error
    /// everything created so far is removed again.
    pub fn build(self) -> Result<Mesh> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            bail!("a mesh has 1..={MAX_NODES} nodes, not {}", self.nodes);
        }
        naming::remove_stale();
        let prefix = naming::new_prefix();
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir()
            .context("create mesh temp dir")?;
        let dir = tmp.path().to_path_buf();
        let pod_range = match self.pod_range {
            Some(octet) => octet,
            None if self.cni => naming::cni_pod_range(),
            None => DEFAULT_POD_RANGE,
        };
        let nodes: Vec<Node> = (0..self.nodes)
            .map(|i| {
                let octet = i as u8;
                Node {
                    name: format!("node-{i}"),
                    index: i,
                    netns: format!("{prefix}node-{i}"),
                    underlay_ip: Ipv4Addr::new(10, 0, 0, octet + 1),
                    pod_gateway: Ipv4Addr::new(10, pod_range, octet, 1),
                }
            })
            .collect();
        // From here on, Drop cleans up whatever a failing step left behind.
        let mut mesh = Mesh {
            fabric: format!("{prefix}fabric"),
            prefix,
            config_path: if self.control_plane {
                dir.join(super::control_plane::CONFIG_DIR).join("mesh.yaml")
            } else {
                dir.join("mesh.yaml")
            },
            dir,
            tmp: Some(tmp),
            daemon_state: nodes.iter().map(|_| NodeDaemons::default()).collect(),
            next_pod_index: vec![0; nodes.len()],
            nodes,
            pods: Vec::new(),
            services: Vec::new(),
            created_netns: Vec::new(),
            apps: BTreeMap::new(),
            namespaces: self.namespaces,
            cni: self.cni,
            control_plane: self.control_plane.then(Default::default),
            pod_range,
            daemons: self.daemons,
        };
        for spec in self.pods {
            let pod = mesh.allocate_pod(spec)?;
            mesh.pods.push(pod);
        }
        network::create_nodes(&mut mesh.created_netns, &mesh.fabric, &mesh.nodes)?;
        if mesh.control_plane.is_some() {
            mesh.prepare_control_plane()?;
        }
        if mesh.cni {
            // Pods come after the daemons, through the CNI chain (`start`).
            mesh.write_cni_configs()?;
        } else {
            network::create_pods(&mut mesh.created_netns, &mesh.nodes, &mesh.pods)?;
        }
        for spec in self.services {
            let service = mesh.resolve_service(spec)?;
            mesh.services.push(service);
        }
        mesh.write_config()?;
        Ok(mesh)
    }
}

/// A running mesh in network namespaces. Dropping it kills its processes
/// and removes its namespaces and temp dir (see `teardown`).
#[derive(Debug)]
pub struct Mesh {
    pub(super) prefix: String,
    pub(super) dir: PathBuf,
    pub(super) tmp: Option<TempDir>,
    pub(super) config_path: PathBuf,
    pub(super) fabric: String,
    pub(super) nodes: Vec<Node>,
    pub(super) pods: Vec<Pod>,
    pub(super) services: Vec<Service>,
    /// Every netns this mesh created and has not deleted yet.
    pub(super) created_netns: Vec<String>,
    next_pod_index: Vec<u16>,
    pub(super) daemons: DaemonSettings,
    pub(super) daemon_state: Vec<NodeDaemons>,
    /// testapp per pod name.
    pub(super) apps: BTreeMap<String, Process>,
    /// Namespace labels (rendered in CNI meshes).
    pub(super) namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Pods are created through the CNI chain (see [`MeshBuilder::cni`]).
    pub(super) cni: bool,
    /// Set when the mesh runs on a control plane (its process, once started).
    pub(super) control_plane: Option<super::control_plane::ControlPlaneState>,
    /// Second octet of the pods' addresses.
    pub(super) pod_range: u8,
}

/// Pod addresses of meshes whose pods are not created through CNI.
const DEFAULT_POD_RANGE: u8 = 244;

impl Mesh {
    /// `amt<pid>x<n>-`: every netns of this mesh starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The mesh's temp dir: config, CA, sockets, logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn capture(&self) -> Capture {
        self.daemons.capture
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn fabric_netns(&self) -> &str {
        &self.fabric
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `index`; panics if there is none (a test bug).
    pub fn node(&self, index: usize) -> &Node {
        self.nodes
            .get(index)
            .unwrap_or_else(|| panic!("mesh has no node {index}"))
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    pub fn try_pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// Pod `name`; panics if there is none (a test bug).
    pub fn pod(&self, name: &str) -> &Pod {
        self.try_pod(name)
            .unwrap_or_else(|| panic!("mesh has no pod {name}"))
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The config for the current pods and services.
    pub fn render_config(&self) -> String {
        if self.control_plane.is_some() {
            config::render_k8s(&self.namespaces, &self.pods, &self.services)
        } else if self.cni {
            config::render_cni(&self.namespaces, &self.pods, &self.services)
        } else {
            config::render(&self.pods, &self.services)
        }
    }

    /// Whether the mesh's pods are created through the CNI chain.
    pub fn is_cni(&self) -> bool {
        self.cni
    }

    /// Whether `pod` should be in the mesh: its own setting, or in a CNI
    /// mesh its namespace's label when it follows its namespace.
    pub fn pod_in_mesh(&self, pod: &Pod) -> bool {
        if self.cni && pod.follows_namespace {
            self.namespace_is_ambient(&pod.namespace)
        } else {
            pod.mesh
        }
    }

    pub fn namespace_is_ambient(&self, namespace: &str) -> bool {
        self.namespaces
            .get(namespace)
            .and_then(|l| l.get(amesh_core::config::enrollment::DATAPLANE_MODE_LABEL))
            .is_some_and(|v| v == amesh_core::config::enrollment::DATAPLANE_MODE_AMBIENT)
    }

    /// Replaces a namespace's labels and rewrites the config; the agents
    /// act on the change (enrolling or releasing running pods).
    pub fn set_namespace_labels<K: Into<String>, V: Into<String>>(
        &mut self,
        namespace: &str,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        self.namespaces.insert(
            namespace.to_owned(),
            labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self.write_config()
    }

    /// (Re)writes the config file from the current pods and services.
    pub fn write_config(&self) -> Result<()> {
        self.write_config_text(&self.render_config())
    }

    /// Replaces the config file with `text` (e.g. malformed YAML), atomically.
    pub fn write_config_text(&self, text: &str) -> Result<()> {
        config::write_atomic(&self.config_path, text)
    }

    /// Adds a pod to the running mesh: its netns and links first, then the
    /// config (the agent acts on the config, so the netns must exist).
    pub fn add_pod(&mut self, spec: PodSpec) -> Result<&Pod> {
        let pod = self.allocate_pod(spec)?;
        if self.cni {
            // As in a cluster: the pod is known (with the addresses it will
            // get) before its node's runtime runs the CNI chain.
            let name = pod.name.clone();
            self.pods.push(pod);
            self.write_config()?;
            self.create_pod_via_cni(&name)?;
            return Ok(&self.pods[self.pods.len() - 1]);
        }
        network::create_pods(
            &mut self.created_netns,
            &self.nodes,
            std::slice::from_ref(&pod),
        )?;
        self.pods.push(pod);
        self.write_config()?;
        Ok(&self.pods[self.pods.len() - 1])
    }

    /// Removes a pod: its app is killed, it leaves the config (and service
    /// endpoints) first so the agent sees it go, then its netns is deleted.
    pub fn remove_pod(&mut self, name: &str) -> Result<()> {
        let Some(pos) = self.pods.iter().position(|p| p.name == name) else {
            bail!("mesh has no pod {name}");
        };
        if let Some(mut app) = self.apps.remove(name) {
            app.kill()?;
        }
        let pod = self.pods.remove(pos);
        if self.cni {
            // The runtime tears the sandbox down (CNI DEL), then the pod
            // leaves the cluster's records.
            self.delete_pod_via_cni(&pod)?;
        }
        for service in &mut self.services {
            service.endpoints.retain(|uid| *uid != pod.uid);
        }
        self.write_config()?;
        if !self.cni {
            netns::delete_all(std::slice::from_ref(&pod.netns))?;
            self.created_netns.retain(|n| *n != pod.netns);
        }
        Ok(())
    }

    /// Enrolls a pod in the mesh (`true`: protocol HBONE) or takes it out
    /// (`false`: TCP), rewriting the config; the agent acts on the change.
    pub fn set_mesh(&mut self, pod: &str, mesh: bool) -> Result<()> {
        let Some(p) = self.pods.iter_mut().find(|p| p.name == pod) else {
            bail!("mesh has no pod {pod}");
        };
        p.mesh = mesh;
        self.write_config()
    }

    /// Adds a service and rewrites the config.
    pub fn add_service(&mut self, spec: ServiceSpec) -> Result<()> {
        let service = self.resolve_service(spec)?;
        self.services
            .retain(|s| !(s.name == service.name && s.namespace == service.namespace));
        self.services.push(service);
        self.write_config()
    }

    pub(super) fn allocate_pod(&mut self, spec: PodSpec) -> Result<Pod> {
        let Some(node) = self.nodes.get(spec.node) else {
            bail!(
                "pod {}: no node {} in a {}-node mesh",
                spec.name,
                spec.node,
                self.nodes.len()
            );
        };
        if self.pods.iter().any(|p| p.name == spec.name) {
            bail!(
                "pod name {} is used twice (pod names are unique per mesh)",
                spec.name
            );
        }
        // The name is the netns suffix, next to `fabric` and `node-<i>`.
        let reserved = spec.name == "fabric" || spec.name.starts_with("node-");
        let valid = !spec.name.is_empty()
            && spec.name.len() <= 200
            && spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if reserved || !valid {
            bail!(
                "pod name {:?} cannot name a netns (reserved or not [A-Za-z0-9._-])",
                spec.name
            );
        }
        let index = self.next_pod_index[spec.node];
        if index >= MAX_PODS_PER_NODE {
            bail!("node {} is full ({MAX_PODS_PER_NODE} pods)", node.name);
        }
        self.next_pod_index[spec.node] = index + 1;
        let node_octet = spec.node as u8;
        Ok(Pod {
            uid: format!("{}/{}", spec.namespace, spec.name),
            netns: format!("{}{}", self.prefix, spec.name),
            ip: Ipv4Addr::new(10, self.pod_range, node_octet, (index + 2) as u8),
            node_name: node.name.clone(),
            node: spec.node,
            name: spec.name,
            namespace: spec.namespace,
            service_account: spec.service_account,
            labels: spec.labels,
            mesh: spec.mesh,
            follows_namespace: spec.follows_namespace,
            index,
        })
    }

    fn resolve_service(&self, spec: ServiceSpec) -> Result<Service> {
        let vips = spec
            .vips
            .iter()
            .map(|v| {
                v.parse::<Ipv4Addr>()
                    .with_context(|| format!("service {}: VIP {v:?}", spec.name))
            })
            .collect::<Result<Vec<_>>>()?;
        let endpoints = spec
            .endpoints
            .iter()
            .map(|e| {
                if e.contains('/') {
                    Ok(e.clone())
                } else {
                    self.try_pod(e)
                        .map(|p| p.uid.clone())
                        .with_context(|| format!("service {}: no pod {e}", spec.name))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let unique: BTreeSet<&String> = endpoints.iter().collect();
        if unique.len() != endpoints.len() {
            bail!("service {}: an endpoint is listed twice", spec.name);
        }
        Ok(Service {
            hostname: format!("{}.{}.svc.cluster.local", spec.name, spec.namespace),
            name: spec.name,
            namespace: spec.namespace,
            vips,
            ports: spec.ports,
            endpoints,
        })
    }
}
