//! What can go wrong installing into a node's CNI config. Every error names
//! the file (or directory) it is about.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The file is not JSON. It is left untouched.
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Valid JSON, but not a CNI config we can chain into. Left untouched.
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// Writing would harm another file in the conf dir: nothing was written.
    #[error("{}: {reason}", path.display())]
    Conflict { path: PathBuf, reason: String },
    /// Someone else kept rewriting the file between our read and our write.
    #[error("{}: changed while being updated, {attempts} times in a row", path.display())]
    Contended { path: PathBuf, attempts: u32 },
}

impl InstallError {
    /// For `map_err`: an I/O error on `path` while doing `action`.
    pub(super) fn io(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io {
            path,
            action,
            source,
        }
    }
}
