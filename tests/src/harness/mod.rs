//! A local multi-node ambient mesh in network namespaces, for end-to-end
//! tests and benchmarks.
//!
//! Layout (all names start with the mesh's prefix `amt<pid>x<n>-`, so meshes
//! of parallel tests and of separate test binaries never collide):
//!
//! ```text
//!  fabric netns: bridge br0 ── veth ── node-i netns: eth0 10.0.0.(i+1)/24
//!                                       bridge cni0 10.244.i.1/24 ── veth ── pod netns:
//!                                                                     eth0 10.244.i.(j+2)/24
//! ```
//!
//! Nodes forward (`ip_forward=1`) and route every other node's pod range via
//! that node's underlay address. The daemons (`amesh-node-agent`, `ztunnel`)
//! run in the node netns and share one YAML config written by [`Mesh`].
//! Dropping a [`Mesh`] kills its processes and deletes its namespaces, also
//! while a panic unwinds.

mod apps;
mod capture;
mod client;
pub mod cni;
mod cni_pods;
mod config;
mod control_plane;
mod daemons;
pub mod fake_kube;
mod http;
mod listen;
mod naming;
pub mod netns;
mod network;
mod proc_stats;
mod process;
mod spawn;
mod teardown;
mod topology;
mod upgrade;
mod wait;

pub use apps::AppSpec;
pub use capture::{BPF_TEST_ROOT, Capture, pin_dir};
pub use config::write_atomic;
pub use control_plane::{CONTROL_PLANE_ADDR, CONTROL_PLANE_BIN};
pub use daemons::{AGENT_BIN, HBONE_PORT, ZTUNNEL_BIN};
pub use http::{HTTP_TIMEOUT, HttpResponse};
pub use listen::{is_listening, listening_ports};
pub use naming::{NETNS_PREFIX, leftovers};
pub use proc_stats::{cpu_seconds, vm_rss_mib};
pub use process::{Process, ProcessSpec, binary};
pub use spawn::{command_in, run_in, spawn_in};
pub use topology::{Mesh, MeshBuilder, Node, Pod, PodSpec, Service, ServiceSpec};
pub use wait::poll_until;
