//! The `amesh-cni` binary in the host's CNI bin dir.

use std::fs;
use std::path::Path;

use super::PLUGIN_TYPE;
use super::atomic::{mode_of, read_optional, remove_synced, write_atomic};
use super::error::InstallError;

const MODE: u32 = 0o755;

/// Copies `source` to `<bin_dir>/amesh-cni`; `Ok(false)` when it was there
/// already, same bytes and mode (an agent restart).
pub(super) fn install(source: &Path, bin_dir: &Path) -> Result<bool, InstallError> {
    let bytes = fs::read(source).map_err(InstallError::io(source, "read"))?;
    let target = bin_dir.join(PLUGIN_TYPE);
    if read_optional(&target)?.is_some_and(|old| old == bytes) && mode_of(&target)? == MODE {
        return Ok(false);
    }
    // A rename, never a write in place: runtimes may be executing the old
    // binary (ETXTBSY), and must never run a half-copied one.
    write_atomic(&target, &bytes, MODE)?;
    Ok(true)
}

/// `Ok(false)` when it was not there.
pub(super) fn remove(bin_dir: &Path) -> Result<bool, InstallError> {
    remove_synced(&bin_dir.join(PLUGIN_TYPE))
}
