//! Taking our entry out again: the original bytes back where nobody else
//! touched the file since, else only our entry removed.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::atomic::{mode_of, read_optional, remove_synced, replace_if_unchanged};
use super::backup::{Backup, Backups};
use super::chain::{self, Shape};
use super::confdir::config_files;
use super::error::InstallError;
use super::{InstallConfig, UninstallReport, binary, retry};

/// What became of one file.
enum Undone {
    Restored(PathBuf),
    Stripped(PathBuf),
    /// Gone, or no entry of ours left in it.
    Nothing,
}

pub(super) fn uninstall(cfg: &InstallConfig) -> Result<UninstallReport, InstallError> {
    let mut report = UninstallReport::default();
    let backups = Backups::new(&cfg.backup_dir);
    for backup in backups.list()? {
        let file = cfg.conf_dir.join(&backup.name);
        let undone = retry(&file, || undo(&cfg.conf_dir, &backup))?;
        report.record(undone);
        // Only once the file is dealt with: on an error, a retry still has it.
        backups.remove(&backup)?;
    }
    // Entries with no backup: the backup dir was lost (a tmpfs, after a
    // reboot), or written by an older agent.
    for file in config_files(&cfg.conf_dir)? {
        report.record(retry(&file, || strip_if_ours(&file))?);
    }
    // The binary last: a config must never name a plugin that is gone.
    report.binary_removed = binary::remove(&cfg.bin_dir)?;
    if report.binary_removed {
        info!(dir = %cfg.bin_dir.display(), "amesh-cni binary removed");
    }
    backups.remove_dir_if_empty();
    Ok(report)
}

impl UninstallReport {
    fn record(&mut self, undone: Undone) {
        match undone {
            Undone::Restored(file) => self.restored.push(file),
            Undone::Stripped(file) => self.stripped.push(file),
            Undone::Nothing => {}
        }
    }
}

/// One backed-up file; `Ok(None)` when it changed under us.
fn undo(conf_dir: &Path, backup: &Backup) -> Result<Option<Undone>, InstallError> {
    let Some(original_bytes) = read_optional(&backup.path)? else {
        return Ok(Some(Undone::Nothing));
    };
    let original_path = conf_dir.join(&backup.name);
    let original = chain::parse(&backup.path, &original_bytes)?;
    let converted = chain::shape(&backup.path, &original)? == Shape::Single;
    let written = if converted {
        original_path.with_extension("conflist")
    } else {
        original_path.clone()
    };
    let Some(current_bytes) = read_optional(&written)? else {
        info!(file = %written.display(), "CNI config gone since install: nothing to undo");
        return Ok(Some(Undone::Nothing));
    };
    let current = chain::parse(&written, &current_bytes)?;
    let Some(stripped) = chain::without_entry(&current) else {
        // Rewritten without our entry: the content is someone else's now.
        return Ok(Some(Undone::Nothing));
    };
    let expected = if converted {
        chain::to_list(&original)
    } else {
        original
    };
    let mode = mode_of(&written)?;
    // Only our entry differs from what we started from: put the exact bytes
    // back. (A `.conf` written again since is newer than our backup.)
    let untouched = stripped == expected && !(converted && original_path.exists());
    if !untouched {
        warn!(
            file = %written.display(),
            "CNI config changed since install: removing only the amesh-cni entry"
        );
        return strip(&written, &current_bytes);
    }
    let restored_from = if converted {
        None
    } else {
        Some(current_bytes.as_slice())
    };
    if !replace_if_unchanged(&original_path, restored_from, &original_bytes, mode)? {
        return Ok(None);
    }
    if converted {
        // The `.conf` is back and sorts first; the list is ours alone.
        remove_synced(&written)?;
    }
    info!(file = %original_path.display(), "CNI config restored to its original bytes");
    Ok(Some(Undone::Restored(original_path)))
}

/// Removes our entries from `file`, if it has any.
fn strip_if_ours(file: &Path) -> Result<Option<Undone>, InstallError> {
    let Some(bytes) = read_optional(file)? else {
        return Ok(Some(Undone::Nothing));
    };
    // A file we cannot parse is not one we wrote: not ours to touch.
    if chain::parse(file, &bytes).is_err() {
        return Ok(Some(Undone::Nothing));
    }
    strip(file, &bytes)
}

/// Removes our entries from `file`, which held `bytes`.
fn strip(file: &Path, bytes: &[u8]) -> Result<Option<Undone>, InstallError> {
    let doc = chain::parse(file, bytes)?;
    let Some(stripped) = chain::without_entry(&doc) else {
        return Ok(Some(Undone::Nothing));
    };
    let mode = mode_of(file)?;
    if !replace_if_unchanged(file, Some(bytes), &chain::render(&stripped), mode)? {
        return Ok(None);
    }
    info!(file = %file.display(), "amesh-cni entry removed from the CNI config");
    Ok(Some(Undone::Stripped(file.to_owned())))
}
