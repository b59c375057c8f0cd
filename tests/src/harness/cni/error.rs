//! A failed CNI operation: the plugin's spec error (`{"code", "msg",
//! "details"}` on stdout with a non-zero exit), or a runtime-side failure
//! (bad config, plugin not found, timeout) with no code.

use std::fmt;

use serde::Deserialize;

use super::exec::PluginOutput;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The plugin's `type`; empty when the runtime failed before any plugin ran.
    pub plugin: String,
    /// `ADD`, `CHECK`, `DEL`, `STATUS`, `GC` (static: keeps the error small).
    pub command: &'static str,
    /// The spec error code: 1..=7, 11, 50.. are well-known; plugins built on
    /// the Go skel report most of their own failures as 999. `None` if no
    /// plugin reported one.
    pub code: Option<u32>,
    pub msg: String,
    pub details: String,
    /// The plugin's stderr, for diagnosis only (the spec gives it no meaning).
    pub stderr: String,
}

/// The spec's error object; every field optional so a partial one still parses.
#[derive(Deserialize)]
struct SpecError {
    code: Option<u32>,
    msg: Option<String>,
    details: Option<String>,
}

impl CniError {
    /// A failure of the runtime itself, not reported by a plugin.
    pub(super) fn runtime(plugin: &str, command: &'static str, msg: impl fmt::Display) -> Self {
        Self {
            plugin: plugin.to_string(),
            command,
            code: None,
            msg: msg.to_string(),
            details: String::new(),
            stderr: String::new(),
        }
    }

    /// The error of a plugin that exited non-zero, read as libcni's
    /// `pluginErr` does: the error JSON on stdout, else whatever it said.
    pub fn from_output(plugin: &str, command: &'static str, out: &PluginOutput) -> Self {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let mut err = Self::runtime(plugin, command, "");
        err.stderr.clone_from(&stderr);
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            err.msg = if stderr.is_empty() {
                format!("plugin failed with no error message ({})", out.status)
            } else {
                format!("plugin failed ({}): {stderr}", out.status)
            };
            return err;
        }
        match serde_json::from_slice::<SpecError>(&out.stdout) {
            Ok(spec) => {
                err.code = spec.code;
                err.msg = spec.msg.unwrap_or_default();
                err.details = spec.details.unwrap_or_default();
            }
            Err(e) => {
                err.msg = format!(
                    "plugin failed ({}) and its error is not JSON ({e}): {:?}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        err
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.plugin.is_empty() {
            write!(f, "CNI {}", self.command)?;
        } else {
            write!(f, "CNI {} plugin {:?}", self.command, self.plugin)?;
        }
        match self.code {
            Some(code) => write!(f, " failed with code {code}: {}", self.msg)?,
            None => write!(f, " failed: {}", self.msg)?,
        }
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        if !self.stderr.is_empty() {
            write!(f, " [stderr: {}]", self.stderr)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}
