//! Command dispatch: from stdin and the environment to what the plugin
//! prints and its exit status.

use serde_json::{Value, json};
use tracing::{debug, error};

use super::PluginError;
use super::commands;
use super::env::{CniEnv, Command};
use super::netconf::{self, NetConf, SUPPORTED_VERSIONS};

/// What the process prints on stdout and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Option<Vec<u8>>,
    pub exit_code: u8,
}

impl Outcome {
    fn success(output: Option<Value>) -> Self {
        Self {
            stdout: output.map(encode),
            exit_code: 0,
        }
    }

    /// The spec's error object on stdout, exit status 1.
    pub fn failure(err: &PluginError, cni_version: &str) -> Self {
        Self {
            stdout: Some(encode(err.to_json(cni_version))),
            exit_code: 1,
        }
    }
}

fn encode(value: Value) -> Vec<u8> {
    let mut out = value.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// Runs one CNI call. Never panics on input: every failure becomes the
/// spec's error object.
pub fn run(stdin: &[u8], env: &CniEnv) -> Outcome {
    match dispatch(stdin, env) {
        Ok(output) => Outcome::success(output),
        Err(err) => {
            error!(code = err.code(), details = %err.details(), "{err}");
            Outcome::failure(&err, &netconf::reply_version(stdin))
        }
    }
}

fn dispatch(stdin: &[u8], env: &CniEnv) -> Result<Option<Value>, PluginError> {
    let command = env.command()?;
    if command == Command::Version {
        let version = netconf::requested_version(stdin)?;
        return Ok(Some(
            json!({"cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS}),
        ));
    }
    let conf = NetConf::parse(stdin)?;
    debug!(
        command = command.as_str(),
        network = %conf.name,
        cni_version = %conf.cni_version,
        "amesh-cni called"
    );
    if let Some(since) = command.since()
        && !netconf::at_least(&conf.cni_version, since)
    {
        return Err(PluginError::CommandNeedsNewerVersion {
            command: command.as_str(),
            since,
            version: conf.cni_version.clone(),
        });
    }
    match command {
        Command::Add => commands::add(&conf, env).map(Some),
        Command::Del => commands::del(&conf, env).map(|()| None),
        Command::Check => commands::check(&conf, env).map(|()| None),
        Command::Status => commands::status(&conf).map(|()| None),
        Command::Gc => commands::gc(&conf).map(|()| None),
        // Answered above, without a network config.
        Command::Version => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env(command: &str) -> CniEnv {
        let command = OsString::from(command);
        CniEnv::from_lookup(|name| (name == "CNI_COMMAND").then(|| command.clone()))
    }

    fn json_out(outcome: &Outcome) -> Value {
        serde_json::from_slice(outcome.stdout.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn version_answers_without_a_config() {
        let outcome = run(b"", &env("VERSION"));
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(
            json_out(&outcome),
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
        );
        let outcome = run(br#"{"cniVersion":"0.4.0"}"#, &env("VERSION"));
        assert_eq!(json_out(&outcome)["cniVersion"], "0.4.0");
    }

    #[test]
    fn errors_are_printed_in_the_config_version() {
        let outcome = run(br#"{"cniVersion":"1.0.0","name":"k8s"}"#, &env("STATUS"));
        assert_eq!(outcome.exit_code, 1);
        let out = json_out(&outcome);
        assert_eq!(out["cniVersion"], "1.0.0");
        assert_eq!(out["code"], 1);
        assert!(out["msg"].as_str().unwrap().contains("STATUS"));
        // CHECK came with 0.4.0.
        let outcome = run(br#"{"cniVersion":"0.3.1","name":"k8s"}"#, &env("CHECK"));
        let out = json_out(&outcome);
        assert_eq!(
            (out["code"].as_u64(), out["cniVersion"].as_str()),
            (Some(1), Some("0.3.1"))
        );
        assert!(out["msg"].as_str().unwrap().contains("0.4.0"));
    }

    #[test]
    fn unknown_or_missing_command_is_code_4() {
        for outcome in [run(b"{}", &env("FROB")), run(b"{}", &CniEnv::default())] {
            assert_eq!(outcome.exit_code, 1);
            assert_eq!(json_out(&outcome)["code"], 4);
        }
    }
}
