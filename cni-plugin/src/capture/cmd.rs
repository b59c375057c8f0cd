//! Runs `nft` and `ip` in a namespace and turns failures into [`CaptureError`]s.

use std::io::Write;
use std::process::{Command, Stdio};

use super::CaptureError;
use crate::netns::Netns;

/// Runs `program args…` (inside `netns`, or in the agent's own namespace when
/// `None`) with `stdin` fed to it; returns stdout.
pub(crate) fn run(
    netns: Option<&Netns>,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, CaptureError> {
    let command_line = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = match netns {
        Some(netns) => netns.command(program),
        None => Command::new(program),
    };
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_error = |source| CaptureError::Spawn {
        command: command_line.clone(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    // Dropping the pipe at the end of the statement sends EOF. A write
    // error (the program exited early) is reported only if the program
    // itself succeeded: otherwise its stderr says more.
    let written = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => pipe.write_all(input.as_bytes()),
        _ => Ok(()),
    };
    let output = child.wait_with_output().map_err(spawn_error)?;
    if !output.status.success() {
        return Err(CaptureError::Command {
            command: command_line,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    written.map_err(spawn_error)?;
    String::from_utf8(output.stdout).map_err(|err| CaptureError::Output {
        command: command_line,
        reason: err.to_string(),
    })
}

/// Runs `command` and parses its stdout as JSON (for `ip -j`).
pub(crate) fn run_json<T: serde::de::DeserializeOwned>(
    netns: Option<&Netns>,
    program: &str,
    args: &[&str],
) -> Result<T, CaptureError> {
    let stdout = run(netns, program, args, None)?;
    serde_json::from_str(&stdout).map_err(|err| CaptureError::Output {
        command: format!("{program} {}", args.join(" ")),
        reason: err.to_string(),
    })
}
