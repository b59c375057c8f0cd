//! A mesh on `amesh-control-plane`: the control plane runs in the fabric
//! netns on the folder source (the mesh's config dir), and every node's
//! ztunnel and agent take config over xDS and certificates from its CA,
//! authenticated by the per-node tokens it writes at start.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::listen::is_listening;
use super::netns;
use super::process::{Process, ProcessSpec, binary};
use super::topology::Mesh;
use super::wait::poll_until;

pub const CONTROL_PLANE_BIN: &str = "amesh-control-plane";
/// The control plane's address on the fabric bridge, reachable from every node.
pub const CONTROL_PLANE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 250);
pub(super) const CONFIG_DIR: &str = "cp-config";
const GRPC_PORT: u16 = 15012;
const METRICS_PORT: u16 = 15014;
const READY_PORT: u16 = 8080;
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The control plane process of a mesh.
#[derive(Debug, Default)]
pub struct ControlPlaneState {
    pub(super) process: Option<Process>,
}

impl Mesh {
    fn cp_dir(&self, what: &str) -> PathBuf {
        self.dir.join(format!("cp-{what}"))
    }

    /// Where the control plane writes node tokens and its root certificate.
    pub fn control_plane_token_dir(&self) -> PathBuf {
        self.cp_dir("tokens")
    }

    /// The control plane's folder source.
    pub fn control_plane_config_dir(&self) -> PathBuf {
        self.dir.join(CONFIG_DIR)
    }

    pub fn control_plane_metrics_addr(&self) -> SocketAddr {
        SocketAddr::from((CONTROL_PLANE_ADDR, METRICS_PORT))
    }

    /// Gives the fabric bridge the control plane's address and creates the
    /// folder.
    pub(super) fn prepare_control_plane(&mut self) -> Result<()> {
        std::fs::create_dir_all(self.control_plane_config_dir())
            .context("create control plane config dir")?;
        netns::ip_batch(
            Some(&self.fabric),
            &format!("addr add {CONTROL_PLANE_ADDR}/24 dev br0\n"),
        )
        .context("address the control plane on the fabric")
    }

    /// Where a daemon of `node` gets its config: the shared file, or the
    /// control plane.
    pub(super) fn config_source_args(&self, node: &str) -> Vec<OsString> {
        if self.control_plane.is_none() {
            return vec!["--config".into(), self.config_path.clone().into()];
        }
        let tokens = self.control_plane_token_dir();
        vec![
            "--xds-address".into(),
            format!("https://{CONTROL_PLANE_ADDR}:{GRPC_PORT}").into(),
            "--token-file".into(),
            tokens.join(format!("{node}.token")).into(),
            "--xds-root-cert".into(),
            tokens.join("root-cert.pem").into(),
        ]
    }

    /// Starts the control plane (when the mesh has one) and waits until it
    /// serves gRPC and has written every node's token.
    pub(super) fn start_control_plane(&mut self) -> Result<()> {
        if self.control_plane.is_none() {
            return Ok(());
        }
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let addr = |port: u16| format!("{CONTROL_PLANE_ADDR}:{port}");
        let args: Vec<OsString> = vec![
            "--source".into(),
            "folder".into(),
            "--config-dir".into(),
            self.control_plane_config_dir().into(),
            "--grpc-addr".into(),
            addr(GRPC_PORT).into(),
            "--metrics-addr".into(),
            addr(METRICS_PORT).into(),
            "--readiness-addr".into(),
            addr(READY_PORT).into(),
            "--admin-addr".into(),
            "127.0.0.1:9876".into(),
            "--ca-dir".into(),
            self.cp_dir("ca").into(),
            "--local-nodes".into(),
            nodes.join(",").into(),
            "--local-token-dir".into(),
            self.control_plane_token_dir().into(),
            "--tls-san".into(),
            CONTROL_PLANE_ADDR.to_string().into(),
        ];
        let spec = ProcessSpec {
            label: CONTROL_PLANE_BIN.to_owned(),
            binary: binary(CONTROL_PLANE_BIN)?,
            args,
            env: self
                .daemons
                .env
                .iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            netns: self.fabric.clone(),
            log: self.dir.join("control-plane.log"),
        };
        let process = Process::spawn(spec)?;
        let tokens = self.control_plane_token_dir();
        let fabric = self.fabric.clone();
        let state = self.control_plane.get_or_insert_with(Default::default);
        state.process = Some(process);
        let result = poll_until(START_TIMEOUT, "the control plane to serve", || {
            let running = self
                .control_plane
                .as_mut()
                .and_then(|s| s.process.as_mut())
                .is_some_and(Process::is_running);
            if !running {
                bail!("{CONTROL_PLANE_BIN} exited");
            }
            let tokens_written = nodes
                .iter()
                .all(|n| tokens.join(format!("{n}.token")).exists())
                && tokens.join("root-cert.pem").exists();
            Ok(tokens_written && is_listening(&fabric, GRPC_PORT)?)
        });
        result.map_err(|e| e.context(self.control_plane_log()))
    }

    /// The control plane's log so far (empty without one).
    pub fn control_plane_log(&self) -> String {
        self.control_plane
            .as_ref()
            .and_then(|s| s.process.as_ref())
            .map(Process::log)
            .unwrap_or_default()
    }
}
