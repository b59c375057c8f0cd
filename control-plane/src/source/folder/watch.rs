//! Watching the config directory: notify events → batches of changed
//! paths, one batch per burst of writes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Editors write a file in several steps (truncate, write, rename): a
/// change applies once the folder has been quiet this long.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// Changed config files, or `None`: something unknown changed (the watcher
/// lost events), re-read everything.
pub type Change = Option<PathBuf>;

/// Starts watching `dir` (not recursively). Dropping the watcher stops it.
pub fn watch_dir(
    dir: &Path,
) -> notify::Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<Change>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if changes_content(&event.kind) => {
                for path in event.paths {
                    if super::is_config_file(&path) {
                        let _ = tx.send(Some(path));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "config folder watch error; re-reading every file");
                let _ = tx.send(None);
            }
        })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok((watcher, rx))
}

/// Opens and reads change nothing (and every reader of the folder causes
/// them).
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Calls `apply` once per burst of changes until `cancel` or the watcher
/// stops: with the changed paths, or `None` to re-read everything.
pub async fn apply_changes(
    mut events: mpsc::UnboundedReceiver<Change>,
    cancel: CancellationToken,
    mut apply: impl FnMut(Option<&HashSet<PathBuf>>),
) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            e = events.recv() => e,
        };
        let Some(first) = first else { return };
        let mut everything = first.is_none();
        let mut paths: HashSet<PathBuf> = first.into_iter().collect();
        // Wait until the writes stop for DEBOUNCE: each event restarts the
        // window, up to a bound so a file rewritten non-stop still applies.
        let give_up = tokio::time::Instant::now() + DEBOUNCE * 50;
        loop {
            let quiet_until = (tokio::time::Instant::now() + DEBOUNCE).min(give_up);
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                () = tokio::time::sleep_until(quiet_until) => break,
                next = events.recv() => next,
            };
            match next {
                Some(Some(p)) => {
                    paths.insert(p);
                }
                Some(None) => everything = true,
                None => break,
            }
            if tokio::time::Instant::now() >= give_up {
                break;
            }
        }
        apply((!everything).then_some(&paths));
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    use super::*;

    #[test]
    fn reads_are_not_changes() {
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::From
        ))));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
    }
}
