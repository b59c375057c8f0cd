//! The `amesh-cni` plugin on the node: its binary in the host's CNI bin
//! dir, and its entry chained last into the config the container runtime
//! uses, put in by the agent and taken out by an explicit uninstall.
//!
//! - [`install`]: binary, then entry; a no-op when both are in place (an
//!   agent restart is never an uninstall).
//! - [`watch`]: installs, then re-inserts the entry whenever the primary
//!   CNI rewrites its config or a new config comes to sort first.
//! - [`uninstall`]: entry, then binary; the conf dir back byte for byte
//!   where nobody else touched it since.
//!
//! Every write is atomic (temp file and rename in the same dir) and skipped
//! when the content is already right, so our own writes never set the
//! watcher off again. A config that is not valid JSON is never touched.

mod atomic;
mod backup;
mod binary;
mod chain;
mod confdir;
mod error;
mod insert;
mod remove;
mod watch;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use confdir::active_config;
pub use error::InstallError;
pub use watch::{WatchOptions, watch, watch_with};

/// Our plugin's `type` in a CNI config, and its binary's name.
pub const PLUGIN_TYPE: &str = "amesh-cni";

#[derive(Debug, Clone, PartialEq)]
pub struct InstallConfig {
    /// The host's CNI bin dir, e.g. `/opt/cni/bin`.
    pub bin_dir: PathBuf,
    /// The host's CNI conf dir, e.g. `/etc/cni/net.d`.
    pub conf_dir: PathBuf,
    /// The `amesh-cni` binary to copy into `bin_dir`.
    pub plugin_binary: PathBuf,
    /// Our plugin entry; its `type` is always [`PLUGIN_TYPE`].
    pub entry: Map<String, Value>,
    /// Where the configs' original bytes are kept until uninstall: the
    /// agent's state dir (e.g. `/var/run/amesh/cni-backup`), never the conf
    /// dir.
    pub backup_dir: PathBuf,
}

impl InstallConfig {
    fn entry_value(&self) -> Value {
        let mut entry = self.entry.clone();
        entry.insert("type".to_owned(), Value::from(PLUGIN_TYPE));
        Value::Object(entry)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// Whether the binary was copied (else it was there, identical).
    pub binary_updated: bool,
    pub config: ConfigChange,
}

/// What an insert did to the CNI config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Our entry was there, as configured: nothing written.
    Unchanged { file: PathBuf },
    /// Our entry added or updated in `file`; `converted_from` is the lone
    /// plugin config that `file` replaced.
    Written {
        file: PathBuf,
        converted_from: Option<PathBuf>,
    },
    /// No CNI config yet: the primary CNI has not written one. Not an
    /// error: [`watch`] inserts once it does.
    NoConfig,
}

impl ConfigChange {
    /// The config file holding our entry, unless there is none yet.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Unchanged { file } | Self::Written { file, .. } => Some(file),
            Self::NoConfig => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UninstallReport {
    /// Configs put back to their original bytes (a converted `.conf`
    /// under its own name again).
    pub restored: Vec<PathBuf>,
    /// Configs changed by someone else since install: only our entry went.
    pub stripped: Vec<PathBuf>,
    pub binary_removed: bool,
}

/// Copies the binary, then inserts the entry: a config must never name a
/// plugin that is not there yet.
pub fn install(cfg: &InstallConfig) -> Result<InstallReport, InstallError> {
    let binary_updated = binary::install(&cfg.plugin_binary, &cfg.bin_dir)?;
    if binary_updated {
        tracing::info!(dir = %cfg.bin_dir.display(), "amesh-cni binary installed");
    }
    let config = install_config(cfg)?;
    Ok(InstallReport {
        binary_updated,
        config,
    })
}

/// Inserts (or updates) our entry in the active config; the binary is left
/// alone. What [`watch`] runs on every change once the binary is in.
pub fn install_config(cfg: &InstallConfig) -> Result<ConfigChange, InstallError> {
    insert::insert(cfg)
}

/// Removes the entry from every config holding it (restoring original
/// bytes where it can), then the binary and the backups. A no-op success
/// where nothing is installed. Stop [`watch`] first.
pub fn uninstall(cfg: &InstallConfig) -> Result<UninstallReport, InstallError> {
    remove::uninstall(cfg)
}

/// Read-modify-write attempts before giving up on a file someone keeps
/// rewriting.
const ATTEMPTS: u32 = 3;

/// Runs `attempt` until it is not cut short (`Ok(None)`) by a concurrent
/// change to `path`.
fn retry<T>(
    path: &Path,
    mut attempt: impl FnMut() -> Result<Option<T>, InstallError>,
) -> Result<T, InstallError> {
    for _ in 0..ATTEMPTS {
        if let Some(done) = attempt()? {
            return Ok(done);
        }
        tracing::debug!(path = %path.display(), "changed while being updated; again");
    }
    Err(InstallError::Contended {
        path: path.to_owned(),
        attempts: ATTEMPTS,
    })
}
