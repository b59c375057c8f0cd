//! Where the agent learns which pods to enroll: a local file, or the
//! control plane's enrollment decisions over delta xDS. Either way the
//! enroller and the CNI server read one `watch` of [`ConfigSnapshot`]s.

use std::path::PathBuf;
use std::sync::Arc;

use amesh_core::config::{ConfigSnapshot, ConfigWatcher, WatchConfig};
use amesh_core::xds::client::{
    CancellationToken, ClientConfig, first_push, snapshot_from_state, watch_snapshot,
};
use amesh_core::xds::convert::ClientOptions;
use amesh_core::xds::{NAMESPACE_ENROLLMENT_TYPE, POD_ENROLLMENT_TYPE};
use anyhow::Context;
use tokio::sync::watch;

/// The control plane connection's settings (agent flags).
#[derive(Debug)]
pub struct XdsSettings {
    pub address: String,
    pub node: String,
    pub token_file: Option<PathBuf>,
    pub root_cert: Option<PathBuf>,
    pub trust_domain: String,
}

#[derive(Debug)]
pub enum ConfigSource {
    File {
        path: PathBuf,
        watcher: ConfigWatcher,
    },
    Xds {
        address: String,
        config: watch::Receiver<Arc<ConfigSnapshot>>,
        /// Stops the client when the agent exits.
        _stop: StopOnDrop,
    },
}

/// Cancels the xDS client when dropped.
#[derive(Debug)]
pub struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl ConfigSource {
    pub fn file(path: PathBuf, trust_domain: &str) -> anyhow::Result<Self> {
        let watcher = ConfigWatcher::start(WatchConfig::new(&path, trust_domain))
            .with_context(|| format!("loading {}", path.display()))?;
        Ok(Self::File { path, watcher })
    }

    /// Subscribes to pod and namespace enrollment decisions.
    pub fn xds(settings: XdsSettings) -> anyhow::Result<Self> {
        let mut client = ClientConfig::new(
            &settings.address,
            &settings.node,
            "node-agent",
            vec![POD_ENROLLMENT_TYPE, NAMESPACE_ENROLLMENT_TYPE],
        );
        client.token_file = settings.token_file;
        client.root_cert = settings.root_cert;
        client
            .validate()
            .context("--xds-address / --xds-root-cert")?;
        let options = ClientOptions {
            trust_domain: settings.trust_domain,
            ..ClientOptions::default()
        };
        let build = move |state: &_| snapshot_from_state(state, &options);
        let cancel = CancellationToken::new();
        let (config, _task) = watch_snapshot(client, build, cancel.clone());
        Ok(Self::Xds {
            address: settings.address,
            config,
            _stop: StopOnDrop(cancel),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<ConfigSnapshot>> {
        match self {
            Self::File { watcher, .. } => watcher.subscribe(),
            Self::Xds { config, .. } => config.clone(),
        }
    }

    /// Returns once there is a config to enroll from: at once for a file,
    /// at the control plane's first complete push for xDS. Enrolling from
    /// an empty config would release every captured pod.
    pub async fn loaded(&self) -> anyhow::Result<()> {
        match self {
            Self::File { .. } => Ok(()),
            Self::Xds {
                address, config, ..
            } => {
                first_push(&mut config.clone(), None)
                    .await
                    .with_context(|| format!("enrollment from {address}"))?;
                Ok(())
            }
        }
    }

    /// For the startup log line.
    pub fn describe(&self) -> String {
        match self {
            Self::File { path, .. } => format!("file {}", path.display()),
            Self::Xds { address, .. } => format!("control plane {address}"),
        }
    }
}
