//! The primary CNI's config bytes from before we changed them, so uninstall
//! can put the conf dir back byte for byte.
//!
//! `<backup dir>/<config file name>.orig`, keyed by the name the file had
//! (for a converted `.conf`, the `.conf`). Kept out of the conf dir: it is
//! the agent's to lose (a tmpfs after a reboot), never the runtime's to read.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use super::atomic::{is_temp_name, read_optional, remove_synced, write_atomic};
use super::error::InstallError;

const SUFFIX: &str = ".orig";

#[derive(Debug, Clone, Copy)]
pub(super) struct Backups<'a> {
    dir: &'a Path,
}

/// One saved original.
#[derive(Debug)]
pub(super) struct Backup {
    /// The config file's name in the conf dir.
    pub name: OsString,
    pub path: PathBuf,
}

impl<'a> Backups<'a> {
    pub fn new(dir: &'a Path) -> Self {
        Self { dir }
    }

    fn path_of(&self, name: &OsStr) -> PathBuf {
        let mut file = name.to_owned();
        file.push(SUFFIX);
        self.dir.join(file)
    }

    /// Records `bytes` as the original of config file `name`, replacing an
    /// older original (the primary rewrote the file since).
    pub fn save(&self, name: &OsStr, bytes: &[u8]) -> Result<(), InstallError> {
        let path = self.path_of(name);
        if read_optional(&path)?.as_deref() == Some(bytes) {
            return Ok(());
        }
        // Configs can carry credentials: only root reads the copies.
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.dir)
            .map_err(InstallError::io(self.dir, "create"))?;
        write_atomic(&path, bytes, 0o600)
    }

    pub fn list(&self) -> Result<Vec<Backup>, InstallError> {
        let entries = match fs::read_dir(self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(InstallError::io(self.dir, "list")(err)),
        };
        let mut backups = Vec::new();
        for entry in entries {
            let entry = entry.map_err(InstallError::io(self.dir, "list"))?;
            let file = entry.file_name();
            let bytes = file.as_bytes();
            if is_temp_name(&file) || !bytes.ends_with(SUFFIX.as_bytes()) {
                continue;
            }
            let name = &bytes[..bytes.len() - SUFFIX.len()];
            backups.push(Backup {
                name: OsStr::from_bytes(name).to_owned(),
                path: entry.path(),
            });
        }
        backups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(backups)
    }

    pub fn remove(&self, backup: &Backup) -> Result<(), InstallError> {
        remove_synced(&backup.path).map(drop)
    }

    /// Removes the backup dir once it holds nothing; it is ours to make and
    /// to take away.
    pub fn remove_dir_if_empty(&self) {
        let _ = fs::remove_dir(self.dir);
    }
}
