//! The plugin's failures, each with its CNI error code, and the error
//! object printed on stdout.

use serde_json::{Map, Value, json};

use crate::cni::protocol::{ErrorReply, codes};

use super::netconf::SUPPORTED_VERSIONS;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("failed to decode the network config on stdin: {0}")]
    Decode(String),
    #[error("reading the network config from stdin: {0}")]
    Stdin(String),
    #[error(
        "incompatible CNI version {version}: amesh-cni supports {}",
        SUPPORTED_VERSIONS.join(", ")
    )]
    IncompatibleVersion { version: String },
    #[error("CNI {command} needs cniVersion {since} or later; the network config has {version}")]
    CommandNeedsNewerVersion {
        command: &'static str,
        since: &'static str,
        version: String,
    },
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    #[error(
        "amesh-cni must be chained after a plugin that returns a result (the network config has no prevResult)"
    )]
    NotChained,
    #[error("environment variable {0} is missing or empty")]
    MissingEnv(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    InvalidEnv { name: &'static str, reason: String },
    #[error("CNI_ARGS lacks {}", .0.join(" and "))]
    MissingPodArgs(Vec<&'static str>),
    #[error("unknown CNI_COMMAND {0:?}")]
    UnknownCommand(String),
    /// The runtime should retry (code 11); `details` says why.
    #[error("{msg}")]
    TryAgain { msg: String, details: String },
    /// The agent said no; relayed as it is.
    #[error("{}", .0.msg)]
    Agent(ErrorReply),
    /// STATUS: the agent answered that it is not ready.
    #[error("amesh node agent is not available: {}", .0.msg)]
    NotAvailable(ErrorReply),
}

impl PluginError {
    pub fn code(&self) -> u32 {
        match self {
            Self::Decode(_) => codes::DECODE_FAILURE,
            Self::Stdin(_) => codes::IO_FAILURE,
            Self::IncompatibleVersion { .. } | Self::CommandNeedsNewerVersion { .. } => {
                codes::INCOMPATIBLE_VERSION
            }
            Self::InvalidConfig(_) | Self::NotChained => codes::INVALID_CONFIG,
            Self::MissingEnv(_)
            | Self::InvalidEnv { .. }
            | Self::MissingPodArgs(_)
            | Self::UnknownCommand(_) => codes::INVALID_ENV,
            Self::TryAgain { .. } => codes::TRY_AGAIN_LATER,
            Self::Agent(reply) => reply.code,
            Self::NotAvailable(_) => codes::NOT_AVAILABLE,
        }
    }

    pub fn details(&self) -> String {
        match self {
            Self::TryAgain { details, .. } => details.clone(),
            Self::Agent(reply) | Self::NotAvailable(reply) => reply.details.clone(),
            _ => String::new(),
        }
    }

    /// The spec's error object, in `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut object = Map::new();
        object.insert("cniVersion".into(), json!(cni_version));
        object.insert("code".into(), json!(self.code()));
        object.insert("msg".into(), json!(self.to_string()));
        let details = self.details();
        // `details` is optional in the spec; libcni omits it when empty.
        if !details.is_empty() {
            object.insert("details".into(), json!(details));
        }
        Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_shape() {
        let err = PluginError::TryAgain {
            msg: "later".into(),
            details: "connection refused".into(),
        };
        assert_eq!(
            err.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 11, "msg": "later", "details": "connection refused"})
        );
        let err = PluginError::MissingEnv("CNI_CONTAINERID");
        let value = err.to_json("1.1.0");
        assert_eq!(value["code"], 4);
        assert!(value["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
        assert!(value.get("details").is_none());
    }

    #[test]
    fn agent_errors_keep_their_code() {
        let err = PluginError::Agent(ErrorReply::new(codes::CAPTURE_FAILED, "no nft", "exit 1"));
        assert_eq!(
            err.to_json("1.1.0"),
            json!({"cniVersion": "1.1.0", "code": 102, "msg": "no nft", "details": "exit 1"})
        );
        let err = PluginError::NotAvailable(ErrorReply::new(codes::TRY_AGAIN_LATER, "syncing", ""));
        assert_eq!(err.code(), codes::NOT_AVAILABLE);
    }

    #[test]
    fn version_errors_name_the_supported_versions() {
        let msg = PluginError::IncompatibleVersion {
            version: "9.9.9".into(),
        }
        .to_string();
        assert!(msg.contains("9.9.9") && msg.contains("0.3.0") && msg.contains("1.1.0"));
    }
}
