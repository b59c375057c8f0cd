//! Plugin ↔ node agent: one JSON request line, one JSON reply line, over a
//! unix stream socket in a root-only directory on the node (pods never see
//! it: it is not in any pod's mount namespace).
//!
//! The plugin is exec'd for every pod, so the protocol is plain std I/O:
//! no runtime to start, a connect and two lines.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the agent listens by default.
pub const DEFAULT_SOCKET: &str = "/var/run/amesh/cni.sock";
/// Where the agent keeps the state file by default.
pub const DEFAULT_STATE_FILE: &str = "/var/run/amesh/cni-state.json";
/// Longest request or reply line accepted (a GC list of many attachments
/// is the largest).
pub const MAX_LINE: usize = 4 << 20;

/// The pod, as CNI_ARGS name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// K8S_POD_UID; empty when the runtime did not pass one.
    #[serde(default)]
    pub uid: String,
}

impl PodRef {
    /// `<namespace>/<name>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One container attachment (CNI_CONTAINERID + CNI_IFNAME).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "UPPERCASE")]
pub enum Request {
    /// Enroll the pod if it is ambient; reply only when capture is in place
    /// and ztunnel listens in the pod.
    Add(PodAttachment),
    /// Un-enroll; succeeds for unknown or half-created pods.
    Del(PodAttachment),
    /// Report drift between what the pod should have and what it has.
    Check(PodAttachment),
    /// Forget every attachment not in the list (CNI 1.1 GC).
    Gc { valid: Vec<Attachment> },
    /// Is the agent there?
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAttachment {
    #[serde(flatten)]
    pub attachment: Attachment,
    /// CNI_NETNS (a path); may be empty on DEL.
    #[serde(default)]
    pub netns: PathBuf,
    pub pod: PodRef,
    /// The pod's addresses from the previous plugin's result.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Reply {
    /// ADD: capture is in place and ztunnel serves the pod.
    Enrolled,
    /// ADD: the pod is not in the mesh; the plugin passes it through.
    Skipped { reason: String },
    /// DEL, CHECK, GC, STATUS: done, nothing wrong.
    Ok,
    /// Failure, in the CNI spec's error shape; the plugin prints it as is.
    Error(ErrorReply),
}

/// The CNI spec's error object (`code`, `msg`, `details`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// CNI spec error codes (1-99 reserved by the spec; 100+ are ours).
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (CNI_COMMAND, CNI_ARGS, …).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (stdin JSON).
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: the runtime retries the operation.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The plugin is not available (STATUS).
    pub const NOT_AVAILABLE: u32 = 50;
    /// CHECK: the pod's capture is not what it should be.
    pub const CAPTURE_DRIFT: u32 = 100;
    /// CHECK: ztunnel does not serve the pod.
    pub const ZTUNNEL_DRIFT: u32 = 101;
    /// ADD: capture could not be installed in the pod.
    pub const CAPTURE_FAILED: u32 = 102;
}

impl ErrorReply {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let add = Request::Add(PodAttachment {
            attachment: Attachment {
                container_id: "abc".into(),
                ifname: "eth0".into(),
            },
            netns: "/var/run/netns/cni-1".into(),
            pod: PodRef {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u-1".into(),
            },
            ips: vec!["10.244.0.5".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))],
        });
        let line = serde_json::to_string(&add).unwrap_or_default();
        assert!(!line.contains('\n'));
        assert!(line.contains("\"command\":\"ADD\""), "{line}");
        assert!(line.contains("\"containerId\":\"abc\""), "{line}");
        let back: Request = serde_json::from_str(&line).unwrap_or(Request::Status);
        assert_eq!(back, add);
        let reply = Reply::Error(ErrorReply::new(codes::TRY_AGAIN_LATER, "later", ""));
        let line = serde_json::to_string(&reply).unwrap_or_default();
        assert_eq!(line, r#"{"outcome":"error","code":11,"msg":"later"}"#);
    }
}
