//! Where a daemon's [`ConfigSnapshot`]s come from: a local file (standalone
//! use) or the control plane over delta xDS. Either way the daemon reads
//! one `watch` of snapshots; ztunnel and the node agent differ only in the
//! types they subscribe to and what they do with each push.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::client::{ClientConfig, XdsError, first_push, snapshot_from_state, watch_snapshot};
use super::convert::ClientOptions;
use crate::config::{ConfigError, ConfigSnapshot, ConfigWatcher, WatchConfig};

/// Told of every push: the snapshot built from it, or why it was NACKed.
pub type PushHook = Box<dyn Fn(&Result<ConfigSnapshot, String>) + Send + 'static>;

#[derive(Debug)]
pub enum ConfigSource {
    File {
        path: PathBuf,
        watcher: ConfigWatcher,
    },
    Xds {
        address: String,
        config: watch::Receiver<Arc<ConfigSnapshot>>,
        /// Stops the client when the source is dropped.
        _stop: DropGuard,
    },
}

impl ConfigSource {
    /// Watches the file `config` names.
    pub fn file(config: WatchConfig) -> Result<Self, ConfigError> {
        let path = config.path.clone();
        let watcher = ConfigWatcher::start(config)?;
        Ok(Self::File { path, watcher })
    }

    /// Subscribes to `client.types`; each push is built into a snapshot with
    /// `options` and shown to `on_push` (a refused one is NACKed).
    pub fn xds(
        client: ClientConfig,
        options: ClientOptions,
        on_push: PushHook,
    ) -> Result<Self, XdsError> {
        client.validate()?;
        let address = client.address.clone();
        let build = move |state: &_| {
            let snapshot = snapshot_from_state(state, &options);
            on_push(&snapshot);
            snapshot
        };
        let cancel = CancellationToken::new();
        let (config, _task) = watch_snapshot(client, build, cancel.clone());
        Ok(Self::Xds {
            address,
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

    /// Returns once there is a config to act on: at once for a file, at the
    /// control plane's first complete push for xDS.
    pub async fn loaded(&self) -> Result<(), XdsError> {
        match self {
            Self::File { .. } => Ok(()),
            Self::Xds { config, .. } => first_push(&mut config.clone(), None).await.map(drop),
        }
    }

    /// For startup log lines and errors.
    pub fn describe(&self) -> String {
        match self {
            Self::File { path, .. } => format!("file {}", path.display()),
            Self::Xds { address, .. } => format!("control plane {address}"),
        }
    }
}
