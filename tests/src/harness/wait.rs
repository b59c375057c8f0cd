//! Bounded polling: the only way the harness waits for something to happen.

use std::fmt::Display;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often conditions are re-checked: short, so tests do not idle.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Ok(true)`, fails
/// with its error, or `timeout` passes. Bounded in time and in iterations.
pub fn poll_until(
    timeout: Duration,
    what: impl Display,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    let max_rounds = timeout.as_millis() / POLL_INTERVAL.as_millis() + 2;
    for _ in 0..max_rounds {
        if check()? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}
