//! The local folder source: every `*.yaml`/`*.yml` file of one directory
//! (multi-document, read in name order) fills the store, and the directory
//! is watched so edits, new, removed and renamed files apply at once.
//!
//! An object defined twice (in two files, or twice in one) is taken from the
//! last definition in file and document order, and the others are reported.
//! Reports go to the store under the source name [`SOURCE`].

mod parse;
mod watch;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::store::{Object, ObjectKey, Origin, Report, Severity, Store};

pub use parse::{DEFAULT_NAMESPACE, Entry, FileContents, ORIGIN_ANNOTATION, parse_file};

/// The name the folder source's reports are filed under.
pub const SOURCE: &str = "folder";

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("config directory {dir}: {source}")]
    Read {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config directory {dir}: cannot watch for changes: {source}")]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// One file as last read.
#[derive(Debug)]
struct LoadedFile {
    hash: blake3::Hash,
    contents: FileContents,
}

/// What the folder source has put in the store, by file.
#[derive(Debug)]
pub struct Folder {
    dir: PathBuf,
    files: BTreeMap<PathBuf, LoadedFile>,
    /// Reports of files that could not be read at all.
    unreadable: BTreeMap<PathBuf, Report>,
    /// What the store holds from this source: key → the file that won and
    /// the object it gave.
    owners: BTreeMap<ObjectKey, (PathBuf, Object)>,
    last_reports: Vec<Report>,
}

/// Whether `path` is a config file: `*.yaml` or `*.yml`, not hidden (editors'
/// swap and temporary files are).
pub fn is_config_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e == "yaml" || e == "yml");
    yaml && !hidden
}

/// Loads every config file of `dir` into `store` (one generation for the
/// objects, one for the reports). Returns the state [`Folder::refresh`]
/// continues from.
pub fn load_dir(dir: &Path, store: &Store) -> Result<Folder, FolderError> {
    let mut folder = Folder {
        dir: dir.to_owned(),
        files: BTreeMap::new(),
        unreadable: BTreeMap::new(),
        owners: BTreeMap::new(),
        last_reports: Vec::new(),
    };
    folder.refresh(store, None)?;
    if folder.files.is_empty() && folder.unreadable.is_empty() {
        // An empty folder is a loaded one too: bump the generation so
        // readers (readiness) see that the first load happened.
        store.set_reports(SOURCE, Vec::new());
    }
    Ok(folder)
}

/// Loads `dir`, then applies every change to it until `cancel`.
pub async fn run(dir: PathBuf, store: Arc<Store>, cancel: CancellationToken) -> anyhow::Result<()> {
    start(&dir, &store)?.run(store, cancel).await;
    Ok(())
}

/// Starts watching `dir` and loads it into `store` (synchronously: the
/// store holds the folder when this returns); [`Watching::run`] then keeps
/// the store in step.
pub fn start(dir: &Path, store: &Store) -> Result<Watching, FolderError> {
    // Watch before the first load, so nothing written in between is missed.
    let (watcher, events) = watch::watch_dir(dir).map_err(|source| FolderError::Watch {
        dir: dir.to_owned(),
        source,
    })?;
    let folder = load_dir(dir, store)?;
    tracing::info!(
        dir = %dir.display(),
        files = folder.files.len(),
        objects = folder.owners.len(),
        "config folder loaded"
    );
    Ok(Watching {
        folder,
        _watcher: watcher,
        events,
    })
}

/// A loaded folder being watched.
#[derive(Debug)]
pub struct Watching {
    folder: Folder,
    _watcher: notify::RecommendedWatcher,
    events: tokio::sync::mpsc::UnboundedReceiver<watch::Change>,
}

impl Watching {
    /// Applies every change to the folder until `cancel`.
    pub async fn run(self, store: Arc<Store>, cancel: CancellationToken) {
        let Watching {
            mut folder,
            _watcher,
            events,
        } = self;
        watch::apply_changes(events, cancel, |changed| {
            if let Err(e) = folder.refresh(&store, changed) {
                tracing::error!(error = %e, "config folder unreadable; keeping what was loaded");
            }
        })
        .await;
    }
}

impl Folder {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the directory listing and the files in `changed` (all files
    /// when `None`), then replaces in the store exactly the objects whose
    /// winner changed.
    pub fn refresh(
        &mut self,
        store: &Store,
        changed: Option<&HashSet<PathBuf>>,
    ) -> Result<(), FolderError> {
        let listing = self.list()?;
        let mut touched = false;
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .chain(self.unreadable.keys())
            .filter(|p| !listing.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            tracing::info!(file = %path.display(), "config file removed");
            touched |= self.files.remove(&path).is_some();
            touched |= self.unreadable.remove(&path).is_some();
        }
        for path in &listing {
            let known = self.files.contains_key(path) || self.unreadable.contains_key(path);
            // By file name: notify and read_dir may spell the directory apart.
            let named = |c: &HashSet<PathBuf>| c.iter().any(|p| p.file_name() == path.file_name());
            if known && changed.is_some_and(|c| !named(c)) {
                continue;
            }
            touched |= self.read_file(path);
        }
        if touched {
            let started = std::time::Instant::now();
            self.publish(store);
            tracing::debug!(
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "config folder published"
            );
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<PathBuf>, FolderError> {
        let read_err = |source| FolderError::Read {
            dir: self.dir.clone(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if is_config_file(&path) && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        Ok(paths)
    }

    /// Reads one file; whether anything changed.
    fn read_file(&mut self, path: &Path) -> bool {
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Removed between listing and reading: the next event says so.
                let removed = self.files.remove(path).is_some();
                return self.unreadable.remove(path).is_some() || removed;
            }
            Err(e) => return self.set_unreadable(path, format!("cannot read: {e}")),
        };
        let hash = blake3::hash(&text);
        if self.files.get(path).is_some_and(|f| f.hash == hash) {
            return false;
        }
        let text = match String::from_utf8(text) {
            Ok(text) => text,
            Err(e) => return self.set_unreadable(path, format!("not UTF-8: {e}")),
        };
        let contents = parse_file(path, &text);
        tracing::info!(
            file = %path.display(),
            objects = contents.entries.len(),
            problems = contents.reports.len(),
            "config file read"
        );
        self.unreadable.remove(path);
        self.files
            .insert(path.to_owned(), LoadedFile { hash, contents });
        true
    }

    fn set_unreadable(&mut self, path: &Path, message: String) -> bool {
        self.files.remove(path);
        let report = Report {
            severity: Severity::Error,
            origin: path.display().to_string(),
            object: String::new(),
            field: String::new(),
            message,
        };
        self.unreadable.insert(path.to_owned(), report);
        true
    }

    /// Writes what changed to the store: the objects whose winning
    /// definition changed in one generation, then the reports if they did.
    fn publish(&mut self, store: &Store) {
        let mut winners: BTreeMap<&ObjectKey, (&Path, &Entry)> = BTreeMap::new();
        let mut reports = Vec::new();
        for (path, file) in &self.files {
            reports.extend(file.contents.reports.iter().cloned());
            for entry in &file.contents.entries {
                if let Some((lost_path, lost)) = winners.insert(&entry.key, (path, entry)) {
                    reports.push(duplicate_report(lost_path, lost, path, entry));
                }
            }
        }
        reports.extend(self.unreadable.values().cloned());

        let removed: Vec<ObjectKey> = self
            .owners
            .keys()
            .filter(|k| !winners.contains_key(k))
            .cloned()
            .collect();
        for key in &removed {
            self.owners.remove(key);
        }
        // Only what differs from what was published: an unchanged file
        // keeps its objects' Arcs, and at 20,000 objects cloning them all
        // per edit would cost more than the rest of the edit.
        let mut upserts = Vec::new();
        for (key, (path, entry)) in &winners {
            let same = self
                .owners
                .get(*key)
                .is_some_and(|(p, o)| p == path && *o == entry.object);
            if !same {
                let owner = (path.to_path_buf(), entry.object.clone());
                self.owners.insert((*key).clone(), owner);
                upserts.push(((*key).clone(), entry.object.clone()));
            }
        }
        store.apply_batch(removed, upserts);

        // The derivation logs new reports, for every source alike.
        if reports != self.last_reports {
            store.set_reports(SOURCE, reports.clone());
            self.last_reports = reports;
        }
    }
}

fn duplicate_report(lost_path: &Path, lost: &Entry, won_path: &Path, won: &Entry) -> Report {
    let origin = Origin::File {
        path: lost_path.to_owned(),
        document: lost.document,
    };
    let winner = Origin::File {
        path: won_path.to_owned(),
        document: won.document,
    };
    Report {
        severity: Severity::Error,
        origin: origin.to_string(),
        object: lost.key.to_string(),
        field: String::new(),
        message: format!("also defined in {winner}, which wins: ignored"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::store::{Kind, Object};

    fn ns_doc(name: &str, label: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{x: {label}}}\n"
        )
    }

    fn ns_label(store: &Store, name: &str) -> Option<String> {
        let snap = store.snapshot();
        match snap.get(&ObjectKey::new(Kind::Namespace, "", name))? {
            Object::Namespace(n) => n.metadata.labels.as_ref()?.get("x").cloned(),
            _ => None,
        }
    }

    #[test]
    fn the_last_file_wins_and_removing_it_restores_the_other() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), ns_doc("n", "a")).unwrap();
        std::fs::write(dir.path().join("b.yml"), ns_doc("n", "b")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not: config").unwrap();
        let store = Store::new();
        let mut folder = load_dir(dir.path(), &store).unwrap();
        assert_eq!(ns_label(&store, "n").as_deref(), Some("b"));
        let reports = store.snapshot().reports[SOURCE].clone();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].origin.ends_with("a.yaml (document 0)"));
        assert!(reports[0].message.contains("b.yml (document 0)"));

        std::fs::remove_file(dir.path().join("b.yml")).unwrap();
        folder.refresh(&store, None).unwrap();
        assert_eq!(ns_label(&store, "n").as_deref(), Some("a"));
        assert!(store.snapshot().reports[SOURCE].is_empty());

        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        folder.refresh(&store, None).unwrap();
        assert_eq!(ns_label(&store, "n"), None);
    }

    #[test]
    fn unchanged_files_do_not_bump_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), ns_doc("n", "a")).unwrap();
        let store = Store::new();
        let mut folder = load_dir(dir.path(), &store).unwrap();
        let generation = store.snapshot().generation;
        folder.refresh(&store, None).unwrap();
        assert_eq!(store.snapshot().generation, generation);
    }

    #[test]
    fn a_missing_directory_is_named() {
        let err = load_dir(Path::new("/nonexistent/amesh-config"), &Store::new()).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/amesh-config"),
            "{err}"
        );
    }
}
