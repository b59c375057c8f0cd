//! Keeps a [`ConfigSnapshot`] in step with its file: a valid change is
//! published to subscribers; an invalid one is logged with file, line and
//! field, and the last good snapshot stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use super::error::ConfigError;
use super::parse::{ParseOptions, load_file_with, parse_with};
use super::snapshot::ConfigSnapshot;

/// Told of every reload attempt: `true` applied, `false` refused.
pub type ReloadHook = Arc<dyn Fn(bool) + Send + Sync>;

#[derive(Clone)]
pub struct WatchConfig {
    pub path: PathBuf,
    pub trust_domain: String,
    /// Policies here (and in `istio-system`) apply mesh-wide.
    pub root_namespace: String,
    /// Editors write in several steps; changes within this window apply once.
    pub debounce: Duration,
    /// For counting reloads (metrics).
    pub on_reload: Option<ReloadHook>,
}

impl std::fmt::Debug for WatchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchConfig")
            .field("path", &self.path)
            .field("trust_domain", &self.trust_domain)
            .field("root_namespace", &self.root_namespace)
            .field("debounce", &self.debounce)
            .finish_non_exhaustive()
    }
}

impl WatchConfig {
    pub fn new(path: impl Into<PathBuf>, trust_domain: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            trust_domain: trust_domain.into(),
            root_namespace: crate::policy::DEFAULT_ROOT_NAMESPACE.to_owned(),
            debounce: Duration::from_millis(20),
            on_reload: None,
        }
    }

    /// Calls `hook` after every reload attempt with whether it applied.
    pub fn on_reload(mut self, hook: impl Fn(bool) + Send + Sync + 'static) -> Self {
        self.on_reload = Some(Arc::new(hook));
        self
    }

    /// Sets the root namespace (default `amesh-system`).
    pub fn root_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.root_namespace = namespace.into();
        self
    }

    fn parse_options(&self) -> ParseOptions {
        ParseOptions::new(&self.trust_domain).root_namespace(&self.root_namespace)
    }
}

/// Watches one config file. Dropping it stops watching.
#[derive(Debug)]
pub struct ConfigWatcher {
    current: watch::Receiver<Arc<ConfigSnapshot>>,
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConfigWatcher {
    /// Loads the file (it must be valid) and starts watching it. Must be
    /// called inside a tokio runtime.
    pub fn start(config: WatchConfig) -> Result<Self, ConfigError> {
        let initial = load_file_with(&config.path, &config.parse_options())?;
        let initial_text = std::fs::read(&config.path).unwrap_or_default();
        let (tx, current) = watch::channel(Arc::new(initial));
        let (events_tx, events) = mpsc::unbounded_channel();
        let file_name = config.path.file_name().map(|n| n.to_owned());
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(event) => {
                        changes_content(&event.kind)
                            && event
                                .paths
                                .iter()
                                .any(|p| p.file_name().map(|n| n.to_owned()) == file_name)
                    }
                    Err(_) => true,
                };
                if relevant {
                    let _ = events_tx.send(());
                }
            })
            .map_err(|err| watch_error(&config.path, &err))?;
        // The parent, not the file: an atomic rename replaces the file's inode.
        let dir = parent_dir(&config.path);
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|err| watch_error(&config.path, &err))?;
        let task = tokio::spawn(reload_loop(config, events, tx, initial_text));
        Ok(Self {
            current,
            _watcher: watcher,
            task,
        })
    }

    pub fn current(&self) -> Arc<ConfigSnapshot> {
        self.current.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<ConfigSnapshot>> {
        self.current.clone()
    }
}

/// Whether an event can change what the file holds. Opens and reads must
/// not count: every process watching the file reads it on a change, and
/// would otherwise set off the others' watchers, forever.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn watch_error(path: &Path, err: &notify::Error) -> ConfigError {
    ConfigError {
        file: path.to_owned(),
        line: None,
        column: None,
        field: String::new(),
        message: format!("cannot watch for changes: {err}"),
    }
}

async fn reload_loop(
    config: WatchConfig,
    mut events: mpsc::UnboundedReceiver<()>,
    tx: watch::Sender<Arc<ConfigSnapshot>>,
    mut last_text: Vec<u8>,
) {
    let options = config.parse_options();
    while events.recv().await.is_some() {
        tokio::time::sleep(config.debounce).await;
        while events.try_recv().is_ok() {}
        let text = match tokio::fs::read(&config.path).await {
            Ok(text) => text,
            Err(err) => {
                error!(file = %config.path.display(), %err, "config unreadable; keeping the last good config");
                continue;
            }
        };
        if text == last_text {
            continue;
        }
        let parsed = std::str::from_utf8(&text)
            .map_err(|err| ConfigError {
                file: config.path.clone(),
                line: None,
                column: None,
                field: String::new(),
                message: format!("not UTF-8: {err}"),
            })
            .and_then(|text| parse_with(text, &config.path, &options));
        last_text = text;
        if let Some(hook) = &config.on_reload {
            hook(parsed.is_ok());
        }
        match parsed {
            Ok(snapshot) => {
                info!(
                    file = %config.path.display(),
                    workloads = snapshot.workloads().count(),
                    services = snapshot.services().count(),
                    policies = snapshot.policies().len(),
                    "config applied"
                );
                tx.send_replace(Arc::new(snapshot));
            }
            Err(err) => {
                error!(error = %err, "config refused; keeping the last good config");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, ModifyKind, RenameMode};

    use super::*;

    #[test]
    fn reads_of_the_file_are_not_changes() {
        // Other processes watching the same file read it on every change.
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
    }

    #[tokio::test]
    async fn the_root_namespace_applies_to_loads_and_reloads() {
        let dir = std::env::temp_dir().join(format!("amesh-watch-root-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mesh.yaml");
        let policy = |name: &str| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
                 metadata: {{name: {name}, namespace: mesh-root}}\nspec: {{mtls: {{mode: STRICT}}}}\n"
            )
        };
        std::fs::write(&path, policy("a")).unwrap();
        let config = WatchConfig::new(&path, "cluster.local").root_namespace("mesh-root");
        let watcher = ConfigWatcher::start(config).unwrap();
        assert_eq!(watcher.current().policies().root_namespace(), "mesh-root");
        let mut rx = watcher.subscribe();
        let tmp = dir.join(".mesh.yaml.tmp");
        std::fs::write(&tmp, format!("{}---\n{}", policy("a"), policy("b"))).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let current = watcher.current();
        assert_eq!(current.policies().len(), 2);
        assert_eq!(current.policies().root_namespace(), "mesh-root");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_valid_change_applies_without_a_restart() {
        let dir = std::env::temp_dir().join(format!("amesh-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mesh.yaml");
        let write = |text: &str| {
            let tmp = dir.join(".mesh.yaml.tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        let one = "workloads:\n  - {uid: d/a, name: a, namespace: d, ips: [10.0.0.1]}\n";
        write(one);
        let watcher = ConfigWatcher::start(WatchConfig::new(&path, "cluster.local")).unwrap();
        let mut rx = watcher.subscribe();
        write(&format!(
            "{one}  - {{uid: d/b, name: b, namespace: d, ips: [10.0.0.2]}}\n"
        ));
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(watcher.current().workloads().count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
