//! Which file in the conf dir the container runtime uses.
//!
//! containerd and CRI-O list the dir with libcni's `ConfFiles` (regular
//! files and symlinks whose `filepath.Ext` is `.conf`, `.conflist` or
//! `.json`), sort the names bytewise and load the first. We must pick the
//! same file, or our entry sits in a config nobody reads.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use super::atomic::is_temp_name;
use super::error::InstallError;

const EXTENSIONS: [&[u8]; 3] = [b"conf", b"conflist", b"json"];

/// The config the runtime uses: the first config file by name. `None` when
/// there is none (or no dir) yet: the primary CNI has not written it.
pub fn active_config(conf_dir: &Path) -> Result<Option<PathBuf>, InstallError> {
    Ok(config_files(conf_dir)?.into_iter().next())
}

/// Every config file in `dir`, in the order the runtime considers them.
pub(super) fn config_files(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(InstallError::io(dir, "list")(err)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(InstallError::io(dir, "list"))?;
        // Not followed, as libcni: a symlink to a file counts.
        let file_type = entry
            .file_type()
            .map_err(InstallError::io(&entry.path(), "stat"))?;
        if !file_type.is_dir() && is_config_name(&entry.file_name()) {
            files.push(entry.path());
        }
    }
    // `OsStr` orders bytewise, as Go's `sort.Strings`.
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Whether libcni would load a file of this name. Hidden names count (libcni
/// does not skip them); our temp files never do, whatever they are for.
pub(super) fn is_config_name(name: &OsStr) -> bool {
    !is_temp_name(name) && EXTENSIONS.contains(&go_ext(name.as_bytes()))
}

/// Go's `filepath.Ext` without the dot: after the last `.`, even a leading
/// one (`.conf` has extension `conf`, unlike `Path::extension`).
fn go_ext(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'.') {
        Some(dot) => &name[dot + 1..],
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_follow_libcni() {
        for name in [
            "10-calico.conflist",
            "87-podman.conflist",
            "10-bridge.conf",
            "99-loopback.json",
            ".hidden.conflist",
            ".conf",
        ] {
            assert!(is_config_name(OsStr::new(name)), "{name}");
        }
        for name in [
            "calico-kubeconfig",
            "10-calico.conflist.bak",
            "10-calico.conflist.orig",
            ".10-calico.conflist.77.0.amesh-tmp",
            "10-x.conflist.swp",
            "README",
        ] {
            assert!(!is_config_name(OsStr::new(name)), "{name}");
        }
    }

    /// Removed on drop, also when the test fails.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_first_name_bytewise_is_active_and_dirs_do_not_count() {
        let guard =
            TempDir(std::env::temp_dir().join(format!("amesh-confdir-{}", std::process::id())));
        let dir = &guard.0;
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir.join("00-dir.conflist")).unwrap();
        for name in ["9-b.conf", "10-a.conflist", "README", "05-x.conflist.bak"] {
            fs::write(dir.join(name), "{}").unwrap();
        }
        let names: Vec<_> = config_files(dir)
            .unwrap()
            .into_iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["10-a.conflist", "9-b.conf"]);
        assert_eq!(active_config(dir).unwrap(), Some(dir.join("10-a.conflist")));
        assert_eq!(active_config(&dir.join("missing")).unwrap(), None);
    }
}
