//! Where ztunnel's workloads, services and policies come from: a local file
//! (standalone use) or the control plane over delta xDS. Either way the
//! proxy reads one `watch` of [`ConfigSnapshot`]s.

use std::path::PathBuf;
use std::sync::Arc;

use amesh_core::config::{ConfigSnapshot, ConfigWatcher, WatchConfig};
use amesh_core::metrics::Metrics;
use amesh_core::xds::client::{
    CancellationToken, ClientConfig, first_push, snapshot_from_state, watch_snapshot,
};
use amesh_core::xds::convert::ClientOptions;
use amesh_core::xds::{ADDRESS_TYPE, AUTHORIZATION_TYPE};
use anyhow::Context;
use tokio::sync::watch;

/// The control plane connection's settings (ztunnel flags).
#[derive(Debug)]
pub struct XdsSettings {
    pub address: String,
    pub node: String,
    pub token_file: Option<PathBuf>,
    pub root_cert: Option<PathBuf>,
    pub trust_domain: String,
    pub root_namespace: String,
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
        /// Stops the client when ztunnel exits.
        _stop: tokio_util::sync::DropGuard,
    },
}

impl ConfigSource {
    pub fn file(
        path: PathBuf,
        trust_domain: &str,
        root_namespace: &str,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let watch_config = WatchConfig::new(&path, trust_domain)
            .root_namespace(root_namespace)
            .on_reload({
                let metrics = metrics.clone();
                move |applied| metrics.config_reload(applied)
            });
        let watcher = ConfigWatcher::start(watch_config)
            .map_err(|err| anyhow::anyhow!("invalid config: {err}"))?;
        Ok(Self::File { path, watcher })
    }

    /// Subscribes to workloads (addresses) and authorizations; every push
    /// counts as a config reload, applied or rejected (NACKed).
    pub fn xds(settings: XdsSettings, metrics: &Metrics) -> anyhow::Result<Self> {
        let mut client = ClientConfig::new(
            &settings.address,
            &settings.node,
            "ztunnel",
            vec![ADDRESS_TYPE, AUTHORIZATION_TYPE],
        );
        client.token_file = settings.token_file;
        client.root_cert = settings.root_cert;
        client
            .validate()
            .context("--xds-address / --xds-root-cert")?;
        let options = ClientOptions {
            trust_domain: settings.trust_domain,
            root_namespace: settings.root_namespace,
        };
        let metrics = metrics.clone();
        let build = move |state: &_| {
            let snapshot = snapshot_from_state(state, &options);
            metrics.config_reload(snapshot.is_ok());
            // The same lines as a file reload, for operators and tests.
            match &snapshot {
                Ok(s) => tracing::info!(
                    workloads = s.workloads().count(),
                    services = s.services().count(),
                    policies = s.policies().len(),
                    "config applied"
                ),
                Err(error) => tracing::warn!(%error, "config refused: the push was NACKed"),
            }
            snapshot
        };
        let cancel = CancellationToken::new();
        let (config, _task) = watch_snapshot(client, build, cancel.clone());
        Ok(Self::Xds {
            address: settings.address,
            config,
            _stop: cancel.drop_guard(),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<ConfigSnapshot>> {
        match self {
            Self::File { watcher, .. } => watcher.subscribe(),
            Self::Xds { config, .. } => config.clone(),
        }
    }

    /// What readiness waits for first (None: the config is already loaded).
    pub fn pending(&self) -> Option<&'static str> {
        match self {
            Self::File { .. } => None,
            Self::Xds { .. } => Some("waiting for the control plane's first push"),
        }
    }

    /// Returns once there is a config to serve: at once for a file, at the
    /// control plane's first complete push for xDS.
    pub async fn loaded(&self) -> anyhow::Result<()> {
        match self {
            Self::File { .. } => Ok(()),
            Self::Xds {
                address, config, ..
            } => {
                first_push(&mut config.clone(), None)
                    .await
                    .with_context(|| format!("configuration from {address}"))?;
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
