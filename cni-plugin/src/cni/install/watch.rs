//! Keeping our entry in: primary CNIs rewrite their config (on start, on
//! upgrade, on a settings change) without it, and a new config file may
//! come to sort first.

use std::path::Path;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use super::atomic::is_temp_name;
use super::{ConfigChange, InstallConfig, install, install_config};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Writers touch the dir several times per change (temp file, rename,
    /// chmod); events within this window make one pass.
    pub debounce: Duration,
    /// A pass at least this often without events: covers events inotify
    /// lost (queue overflow) and a conf dir created or replaced later.
    pub resync: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            resync: Duration::from_secs(30),
        }
    }
}

/// [`watch_with`] the default options.
pub async fn watch(cfg: InstallConfig) {
    watch_with(cfg, WatchOptions::default()).await;
}

/// Installs (binary, then entry) and keeps the entry in: inserts it again
/// whenever the conf dir changes, until dropped. Never returns: errors (say,
/// a config the primary is halfway through writing) are logged and retried
/// on the next change or resync.
///
/// Stop it (drop the future) before [`super::uninstall`], or it puts the
/// entry straight back. Passes run inline, not on a blocking thread, so
/// that once dropped no write of ours is still in flight.
pub async fn watch_with(cfg: InstallConfig, options: WatchOptions) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        if is_relevant(&event) {
            let _ = events_tx.send(());
        }
    })
    .inspect_err(|err| warn!(%err, "cannot watch for CNI config changes; resyncing only"))
    .ok();
    info!(dir = %cfg.conf_dir.display(), "keeping the amesh-cni entry in the CNI config");
    let mut resync = tokio::time::interval_at(Instant::now() + options.resync, options.resync);
    resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut watching = true;
    let mut binary_installed = false;
    let mut last = Outcome::Written;
    loop {
        if let Some(watcher) = &mut watcher {
            watching = watch_dir(watcher, &cfg.conf_dir, watching);
        }
        last = pass(&cfg, &mut binary_installed, last);
        tokio::select! {
            // `None` (no watcher) disables this branch: resync only.
            Some(()) = events.recv() => {
                tokio::time::sleep(options.debounce).await;
                while events.try_recv().is_ok() {}
            }
            _ = resync.tick() => {}
        }
    }
}

/// (Re-)adds the inotify watch: after the conf dir is deleted and made
/// again, the old watch is gone. Re-adding a live one changes nothing.
/// Returns whether the dir is watched; logs only changes of that.
fn watch_dir(watcher: &mut RecommendedWatcher, dir: &Path, was_watching: bool) -> bool {
    match watcher.watch(dir, RecursiveMode::NonRecursive) {
        Ok(()) => true,
        Err(err) => {
            if was_watching {
                warn!(dir = %dir.display(), %err, "cannot watch the CNI conf dir; resyncing only");
            }
            false
        }
    }
}

/// The last outcome, so a steady state is logged once, not every resync.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Written,
    Unchanged,
    NoConfig,
    Failed(String),
}

/// One insert; the binary too until it is in place (once per run: it is
/// only ours to change).
fn pass(cfg: &InstallConfig, binary_installed: &mut bool, last: Outcome) -> Outcome {
    let result = if *binary_installed {
        install_config(cfg)
    } else {
        install(cfg).map(|report| {
            *binary_installed = true;
            report.config
        })
    };
    let outcome = match result {
        // `install` and `install_config` log every write.
        Ok(ConfigChange::Written { .. }) => Outcome::Written,
        Ok(ConfigChange::Unchanged { .. }) => Outcome::Unchanged,
        Ok(ConfigChange::NoConfig) => Outcome::NoConfig,
        Err(err) => Outcome::Failed(err.to_string()),
    };
    if outcome == last {
        debug!(?outcome, "CNI config pass");
        return outcome;
    }
    match &outcome {
        Outcome::Written | Outcome::Unchanged => {}
        Outcome::NoConfig => info!(
            dir = %cfg.conf_dir.display(),
            "no CNI config yet; waiting for the primary CNI to write one"
        ),
        Outcome::Failed(err) => {
            error!(error = %err, "cannot insert the amesh-cni entry; will retry")
        }
    }
    outcome
}

/// Whether an event may mean the config changed. Reads must not count: we
/// read the config on every pass (as do the runtimes), which would set us
/// off again, forever. Our own temp files do not count either.
fn is_relevant(event: &notify::Result<notify::Event>) -> bool {
    let Ok(event) = event else {
        return true;
    };
    let content = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    let not_ours = |path: &std::path::PathBuf| path.file_name().is_none_or(|n| !is_temp_name(n));
    content && (event.paths.is_empty() || event.paths.iter().any(not_ours))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use notify::event::{CreateKind, DataChange, ModifyKind, RenameMode};
    use notify::{Event, EventKind};

    use super::*;

    fn event(kind: EventKind, paths: &[&str]) -> notify::Result<Event> {
        let mut event = Event::new(kind);
        event.paths = paths.iter().map(PathBuf::from).collect();
        Ok(event)
    }

    #[test]
    fn reads_and_our_temp_files_do_not_trigger_a_pass() {
        let conf = "/etc/cni/net.d/10-calico.conflist";
        let tmp = "/etc/cni/net.d/.10-calico.conflist.7.0.amesh-tmp";
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let create = EventKind::Create(CreateKind::File);
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(!is_relevant(&event(open, &[conf])));
        assert!(!is_relevant(&event(read, &[conf])));
        assert!(!is_relevant(&event(create, &[tmp])));
        assert!(!is_relevant(&event(data, &[tmp])));
        assert!(is_relevant(&event(written, &[conf])));
        assert!(is_relevant(&event(data, &[conf])));
        assert!(is_relevant(&event(rename, &[tmp, conf])));
        // A queue overflow names no path.
        assert!(is_relevant(&event(EventKind::Other, &[])));
        assert!(is_relevant(&Err(notify::Error::generic("lost"))));
    }
}
