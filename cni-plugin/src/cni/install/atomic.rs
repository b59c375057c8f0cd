//! Crash-safe file replacement: a temp file in the same directory, fsynced,
//! renamed over the target, then the directory fsynced. Readers (container
//! runtimes, a running `amesh-cni`) see the old file or the new one, never
//! a partial one, and renaming never writes into a binary being executed.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::InstallError;

/// Temp files end with this: no runtime takes it for a CNI config extension
/// (`.conf`, `.conflist`, `.json`), and the leading dot hides them.
pub(super) const TEMP_SUFFIX: &str = ".amesh-tmp";

static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

pub(super) fn is_temp_name(name: &OsStr) -> bool {
    name.as_bytes().ends_with(TEMP_SUFFIX.as_bytes())
}

/// `None` when the file does not exist.
pub(super) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(InstallError::io(path, "read")(err)),
    }
}

/// The permission bits of an existing file.
pub(super) fn mode_of(path: &Path) -> Result<u32, InstallError> {
    let meta = fs::metadata(path).map_err(InstallError::io(path, "stat"))?;
    Ok(meta.permissions().mode() & 0o7777)
}

/// Replaces (or creates) `path` with `bytes` and permission bits `mode`.
pub(super) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    replace_if(path, bytes, mode, || Ok(true)).map(drop)
}

/// Like [`write_atomic`], but gives up (`Ok(false)`, nothing changed) when,
/// right before the rename, `path` no longer holds `expected` (`None`:
/// absent). Narrows the read-modify-write race with another writer, such as
/// the primary CNI rewriting its config, to the rename itself.
pub(super) fn replace_if_unchanged(
    path: &Path,
    expected: Option<&[u8]>,
    bytes: &[u8],
    mode: u32,
) -> Result<bool, InstallError> {
    replace_if(path, bytes, mode, || {
        Ok(read_optional(path)?.as_deref() == expected)
    })
}

fn replace_if(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    still_ok: impl FnOnce() -> Result<bool, InstallError>,
) -> Result<bool, InstallError> {
    let dir = parent_dir(path);
    let tmp = temp_path(path);
    let result = write_temp(&tmp, path, bytes, mode).and_then(|()| {
        if !still_ok()? {
            return Ok(false);
        }
        fs::rename(&tmp, path).map_err(InstallError::io(path, "rename a temp file over"))?;
        Ok(true)
    });
    if !matches!(result, Ok(true)) {
        let _ = fs::remove_file(&tmp);
    }
    if result? {
        sync_dir(&dir)?;
        return Ok(true);
    }
    Ok(false)
}

fn write_temp(tmp: &Path, target: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    // Errors name the target: the temp file's name means nothing to a reader.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(InstallError::io(target, "create a temp file for"))?;
    file.write_all(bytes)
        .map_err(InstallError::io(target, "write a temp file for"))?;
    // The umask may have cleared bits of `mode`.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(InstallError::io(target, "chmod a temp file for"))?;
    file.sync_all()
        .map_err(InstallError::io(target, "fsync a temp file for"))
}

/// Removes `path` durably; `Ok(false)` when it was already gone.
pub(super) fn remove_synced(path: &Path) -> Result<bool, InstallError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(InstallError::io(path, "remove")(err)),
    }
    sync_dir(&parent_dir(path))?;
    Ok(true)
}

/// Makes a rename or removal in `dir` survive a power loss.
fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(InstallError::io(dir, "fsync"))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `.<name>.<pid>.<n>.amesh-tmp`, next to `path`: unique per process and
/// write, so concurrent writers never share one.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or(OsStr::new("file"));
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.{n}{TEMP_SUFFIX}", std::process::id()));
    parent_dir(path).join(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_hidden_and_never_config_files() {
        let tmp = temp_path(Path::new("/etc/cni/net.d/10-calico.conflist"));
        let name = tmp.file_name().unwrap();
        assert!(name.as_bytes().starts_with(b".10-calico.conflist."));
        assert!(is_temp_name(name));
        assert_eq!(tmp.extension().unwrap(), "amesh-tmp");
        assert_ne!(
            tmp,
            temp_path(Path::new("/etc/cni/net.d/10-calico.conflist"))
        );
    }
}
