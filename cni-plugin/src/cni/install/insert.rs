//! Putting our entry into the active config.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tracing::{debug, info};

use super::atomic::{mode_of, read_optional, remove_synced, replace_if_unchanged};
use super::backup::Backups;
use super::chain::{self, Doc, Shape};
use super::confdir::config_files;
use super::error::InstallError;
use super::{ConfigChange, InstallConfig, retry};

pub(super) fn insert(cfg: &InstallConfig) -> Result<ConfigChange, InstallError> {
    let entry = cfg.entry_value();
    let backups = Backups::new(&cfg.backup_dir);
    retry(&cfg.conf_dir, || try_insert(&cfg.conf_dir, &entry, backups))
}

/// One read-modify-write; `Ok(None)` when a file changed under us.
fn try_insert(
    conf_dir: &Path,
    entry: &Value,
    backups: Backups<'_>,
) -> Result<Option<ConfigChange>, InstallError> {
    let files = config_files(conf_dir)?;
    let Some(active) = files.first() else {
        return Ok(Some(ConfigChange::NoConfig));
    };
    let Some(bytes) = read_optional(active)? else {
        return Ok(None);
    };
    let doc = chain::parse(active, &bytes)?;
    let original = Original {
        path: active,
        bytes: &bytes,
        doc: &doc,
    };
    match chain::shape(active, &doc)? {
        Shape::List => insert_into_list(original, entry, backups),
        Shape::Single => convert(original, &files[1..], entry, backups),
    }
}

/// The active file as read.
#[derive(Clone, Copy)]
struct Original<'a> {
    path: &'a PathBuf,
    bytes: &'a [u8],
    doc: &'a Doc,
}

fn insert_into_list(
    file: Original<'_>,
    entry: &Value,
    backups: Backups<'_>,
) -> Result<Option<ConfigChange>, InstallError> {
    let Some(new) = chain::with_entry(file.doc, entry) else {
        debug!(file = %file.path.display(), "CNI config already has our entry");
        return Ok(Some(ConfigChange::Unchanged {
            file: file.path.clone(),
        }));
    };
    // Without our entry the content is the primary CNI's own: the backup.
    // With it, the backup from when we first added it still holds.
    if !chain::has_entry(file.doc) {
        backups.save(file_name(file.path)?, file.bytes)?;
    }
    let mode = mode_of(file.path)?;
    if !replace_if_unchanged(file.path, Some(file.bytes), &chain::render(&new), mode)? {
        return Ok(None);
    }
    info!(file = %file.path.display(), "amesh-cni entry written into the CNI config");
    Ok(Some(ConfigChange::Written {
        file: file.path.clone(),
        converted_from: None,
    }))
}

/// A lone plugin config cannot chain: it becomes `<stem>.conflist`, which
/// must then be the active file in its place.
fn convert(
    conf: Original<'_>,
    others: &[PathBuf],
    entry: &Value,
    backups: Backups<'_>,
) -> Result<Option<ConfigChange>, InstallError> {
    let target = conf.path.with_extension("conflist");
    if let Some(first) = others
        .iter()
        .find(|other| **other != target && other.file_name() < target.file_name())
    {
        return Err(InstallError::Conflict {
            path: conf.path.clone(),
            reason: format!(
                "cannot convert to {}: {} would sort before it and become the active config",
                target.display(),
                first.display()
            ),
        });
    }
    // Only a leftover of ours (a conversion interrupted before the `.conf`
    // went, or the `.conf` rewritten since) may be overwritten.
    let existing = read_optional(&target)?;
    if let Some(existing) = &existing {
        let ours = chain::parse(&target, existing).is_ok_and(|doc| chain::has_entry(&doc));
        if !ours {
            return Err(InstallError::Conflict {
                path: conf.path.clone(),
                reason: format!(
                    "cannot convert to {}: that file exists and is not ours",
                    target.display()
                ),
            });
        }
    }
    let list = chain::to_list(conf.doc);
    let list = chain::with_entry(&list, entry).unwrap_or(list);
    backups.save(file_name(conf.path)?, conf.bytes)?;
    let mode = mode_of(conf.path)?;
    if !replace_if_unchanged(&target, existing.as_deref(), &chain::render(&list), mode)? {
        return Ok(None);
    }
    // A `.conf` rewritten meanwhile stays: it still sorts first, and the
    // next pass converts the new content.
    if read_optional(conf.path)?.as_deref() != Some(conf.bytes) {
        return Ok(None);
    }
    remove_synced(conf.path)?;
    info!(
        from = %conf.path.display(),
        file = %target.display(),
        "CNI config converted to a plugin list with the amesh-cni entry"
    );
    Ok(Some(ConfigChange::Written {
        file: target,
        converted_from: Some(conf.path.clone()),
    }))
}

fn file_name(path: &Path) -> Result<&std::ffi::OsStr, InstallError> {
    path.file_name().ok_or_else(|| InstallError::Invalid {
        path: path.to_owned(),
        reason: "not a file name".to_owned(),
    })
}
