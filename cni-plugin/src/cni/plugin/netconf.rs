//! The network config the runtime passes on stdin: the spec's keys, ours,
//! the version checks, and the pod's addresses in `prevResult`.
//!
//! Unknown keys are ignored: runtimes add their own (`runtimeConfig`,
//! `args`, `cni.dev/…`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::cni::protocol::{Attachment, DEFAULT_SOCKET, DEFAULT_STATE_FILE};

use super::PluginError;

/// Every result version whose `ips[].address` we read (0.2.0 results had
/// `ip4`/`ip6` instead, and CNI 0.2.0 has no chaining).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// What VERSION and error objects say when the config names no usable
/// version.
pub const DEFAULT_VERSION: &str = "1.1.0";
pub const DEFAULT_ADD_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// The GC list's key; libcni also sets the spec's earlier misspelling.
const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";
const LEGACY_ATTACHMENTS: &str = "cni.dev/attachments";

#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    /// The previous plugin's result, in `cni_version`.
    pub prev_result: Option<Map<String, Value>>,
    pub socket: PathBuf,
    pub state_file: PathBuf,
    /// How long ADD waits for the agent's reply.
    pub add_timeout: Duration,
    pub log: LogSettings,
    /// The whole config, for keys only one command reads.
    raw: Map<String, Value>,
}

/// Our keys, and the spec's that we read besides `cniVersion`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Keys {
    #[serde(default)]
    name: String,
    #[serde(default)]
    prev_result: Option<Value>,
    socket: Option<PathBuf>,
    state_file: Option<PathBuf>,
    add_timeout_secs: Option<u64>,
    #[serde(flatten)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    log_file: Option<PathBuf>,
    log_level: Option<String>,
}

impl NetConf {
    /// Decodes (code 6), checks the version (code 1), then reads the keys
    /// (code 7).
    pub fn parse(stdin: &[u8]) -> Result<Self, PluginError> {
        let raw = decode_object(stdin)?;
        let cni_version = check_version(raw.get("cniVersion"))?;
        let keys = Keys::deserialize(Value::Object(raw.clone()))
            .map_err(|err| PluginError::InvalidConfig(err.to_string()))?;
        let prev_result = match keys.prev_result {
            None | Some(Value::Null) => None,
            Some(Value::Object(result)) => Some(result),
            Some(_) => {
                return Err(PluginError::InvalidConfig(
                    "prevResult is not an object".into(),
                ));
            }
        };
        Ok(Self {
            cni_version,
            name: keys.name,
            prev_result,
            socket: keys.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            state_file: keys.state_file.unwrap_or_else(|| DEFAULT_STATE_FILE.into()),
            // Zero would mean "no timeout" to std sockets: at least a second.
            add_timeout: Duration::from_secs(
                keys.add_timeout_secs
                    .unwrap_or(DEFAULT_ADD_TIMEOUT_SECS)
                    .max(1),
            ),
            log: LogSettings::from_raw(keys.log),
            raw,
        })
    }

    /// The previous result, required by ADD and CHECK.
    pub fn require_prev_result(&self) -> Result<&Map<String, Value>, PluginError> {
        self.prev_result.as_ref().ok_or(PluginError::NotChained)
    }

    /// GC's list of attachments still in use; `None` when the runtime sent
    /// none (which is not the same as an empty list).
    pub fn valid_attachments(&self) -> Result<Option<Vec<Attachment>>, PluginError> {
        #[derive(Deserialize)]
        struct GcAttachment {
            #[serde(rename = "containerID")]
            container_id: String,
            #[serde(default)]
            ifname: String,
        }
        let Some(list) = self
            .raw
            .get(VALID_ATTACHMENTS)
            .or_else(|| self.raw.get(LEGACY_ATTACHMENTS))
            .filter(|list| !list.is_null())
        else {
            return Ok(None);
        };
        let list = Vec::<GcAttachment>::deserialize(list)
            .map_err(|err| PluginError::InvalidConfig(format!("{VALID_ATTACHMENTS}: {err}")))?;
        Ok(Some(
            list.into_iter()
                .map(|a| Attachment {
                    container_id: a.container_id,
                    ifname: a.ifname,
                })
                .collect(),
        ))
    }
}

/// Where and how much to log, read before anything else can fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub file: Option<PathBuf>,
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self::from_raw(RawLog::default())
    }
}

impl LogSettings {
    /// From the raw config; defaults (stderr, info) when it does not parse.
    pub fn from_config(stdin: &[u8]) -> Self {
        serde_json::from_slice::<RawLog>(stdin)
            .map(Self::from_raw)
            .unwrap_or_default()
    }

    fn from_raw(raw: RawLog) -> Self {
        Self {
            file: raw.log_file.filter(|path| !path.as_os_str().is_empty()),
            level: raw
                .log_level
                .filter(|level| !level.is_empty())
                .unwrap_or_else(|| DEFAULT_LOG_LEVEL.into()),
        }
    }
}

fn decode_object(stdin: &[u8]) -> Result<Map<String, Value>, PluginError> {
    match serde_json::from_slice(stdin) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(PluginError::Decode("not a JSON object".into())),
        Err(err) => Err(PluginError::Decode(err.to_string())),
    }
}

/// The config's `cniVersion`, if it is one we speak.
pub fn check_version(value: Option<&Value>) -> Result<String, PluginError> {
    let version = match value {
        Some(Value::String(version)) => version.clone(),
        Some(other) => other.to_string(),
        None => "(none)".into(),
    };
    if SUPPORTED_VERSIONS.contains(&version.as_str()) {
        Ok(version)
    } else {
        Err(PluginError::IncompatibleVersion { version })
    }
}

/// Whether `version` is `min` or later (both `X.Y.Z`).
pub fn at_least(version: &str, min: &str) -> bool {
    match (parse_version(version), parse_version(min)) {
        (Some(version), Some(min)) => version >= min,
        _ => false,
    }
}

fn parse_version(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    let triple = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(triple)
}

/// The version VERSION answers with: the one on stdin, else the default.
/// Stdin may be empty.
pub fn requested_version(stdin: &[u8]) -> Result<String, PluginError> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Ok(DEFAULT_VERSION.into());
    }
    let object = decode_object(stdin)?;
    Ok(match object.get("cniVersion") {
        Some(Value::String(version)) if !version.is_empty() => version.clone(),
        _ => DEFAULT_VERSION.into(),
    })
}

/// The version error objects are written in: the config's when it is one
/// we speak (whether or not the rest of the config parses), else the
/// default.
pub fn reply_version(stdin: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Version {
        #[serde(rename = "cniVersion")]
        cni_version: Option<Value>,
    }
    serde_json::from_slice::<Version>(stdin)
        .ok()
        .and_then(|v| check_version(v.cni_version.as_ref()).ok())
        .unwrap_or_else(|| DEFAULT_VERSION.into())
}

/// The pod's addresses: `ips[].address` (CIDR notation) in results from
/// 0.3.0 on. A result without `ips` has none.
pub fn result_ips(result: &Map<String, Value>) -> Result<Vec<IpAddr>, PluginError> {
    let invalid = |what: String| PluginError::InvalidConfig(format!("prevResult: {what}"));
    let ips = match result.get("ips") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(ips)) => ips,
        Some(_) => return Err(invalid("ips is not a list".into())),
    };
    let mut out = Vec::with_capacity(ips.len());
    for entry in ips {
        let address = entry
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{entry} has no address")))?;
        let ip_text = address.split_once('/').map_or(address, |(ip, _)| ip);
        let ip: IpAddr = ip_text
            .parse()
            .map_err(|_| invalid(format!("address {address:?} is not an IP address")))?;
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// The previous result as this plugin's output: unchanged, but in the
/// config's version, as the spec asks of every plugin's result.
pub fn pass_through(result: &Map<String, Value>, cni_version: &str) -> Value {
    let mut result = result.clone();
    result.insert("cniVersion".into(), Value::String(cni_version.into()));
    Value::Object(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn reads_ips_from_a_0_4_0_result() {
        let result = object(json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
            "ips": [
                {"version": "4", "address": "10.244.0.5/24", "gateway": "10.244.0.1", "interface": 0},
                {"version": "6", "address": "fd00::5/64", "interface": 0}
            ]
        }));
        let ips = result_ips(&result).unwrap();
        assert_eq!(
            ips,
            vec![
                "10.244.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
    }

    #[test]
    fn reads_ips_from_a_1_0_0_result() {
        let result = object(json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "10.244.1.9/24", "gateway": "10.244.1.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0"}]
        }));
        assert_eq!(
            result_ips(&result).unwrap(),
            vec!["10.244.1.9".parse::<IpAddr>().unwrap()]
        );
        assert!(
            result_ips(&object(json!({"cniVersion": "1.0.0"})))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn rejects_garbage_addresses() {
        let err = result_ips(&object(json!({"ips": [{"address": "nope/24"}]}))).unwrap_err();
        assert_eq!(err.code(), 7);
        let err = result_ips(&object(json!({"ips": [{"gateway": "10.0.0.1"}]}))).unwrap_err();
        assert_eq!(err.code(), 7);
        let err = result_ips(&object(json!({"ips": "10.0.0.1"}))).unwrap_err();
        assert_eq!(err.code(), 7);
    }

    #[test]
    fn version_checks() {
        for version in SUPPORTED_VERSIONS {
            assert_eq!(check_version(Some(&json!(version))).unwrap(), version);
        }
        for bad in [json!("9.9.9"), json!("0.2.0"), json!(1), json!("")] {
            assert_eq!(check_version(Some(&bad)).unwrap_err().code(), 1, "{bad}");
        }
        assert_eq!(check_version(None).unwrap_err().code(), 1);
        assert!(at_least("1.1.0", "1.1.0"));
        assert!(at_least("1.2.0", "1.1.0"));
        assert!(at_least("1.0.0", "0.4.0"));
        assert!(!at_least("1.0.0", "1.1.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("1.1", "1.1.0"));
        assert!(!at_least("x", "0.4.0"));
    }

    #[test]
    fn version_request_may_be_empty() {
        assert_eq!(requested_version(b"").unwrap(), "1.1.0");
        assert_eq!(requested_version(b" \n").unwrap(), "1.1.0");
        assert_eq!(
            requested_version(br#"{"cniVersion":"0.4.0"}"#).unwrap(),
            "0.4.0"
        );
        assert_eq!(requested_version(b"{").unwrap_err().code(), 6);
    }

    #[test]
    fn parses_our_keys_and_ignores_unknown_ones() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"k8s","type":"amesh-cni",
                "socket":"/run/a.sock","stateFile":"/run/s.json","addTimeoutSecs":0,
                "logLevel":"debug","runtimeConfig":{"x":1},"somethingNew":true,
                "prevResult":{"cniVersion":"1.0.0","ips":[]}}"#,
        )
        .unwrap();
        assert_eq!(conf.cni_version, "1.0.0");
        assert_eq!(conf.socket, PathBuf::from("/run/a.sock"));
        assert_eq!(conf.state_file, PathBuf::from("/run/s.json"));
        assert_eq!(conf.add_timeout, Duration::from_secs(1));
        assert_eq!(conf.log.level, "debug");
        assert!(conf.prev_result.is_some());

        let conf = NetConf::parse(br#"{"cniVersion":"0.3.1","name":"k8s"}"#).unwrap();
        assert_eq!(conf.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(conf.add_timeout, Duration::from_secs(30));
        assert_eq!(conf.require_prev_result().unwrap_err().code(), 7);
    }

    #[test]
    fn config_errors_have_their_codes() {
        assert_eq!(NetConf::parse(b"not json").unwrap_err().code(), 6);
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code(), 6);
        assert_eq!(NetConf::parse(br#"{"name":"x"}"#).unwrap_err().code(), 1);
        let err = NetConf::parse(br#"{"cniVersion":"1.0.0","addTimeoutSecs":"x"}"#).unwrap_err();
        assert_eq!(err.code(), 7);
        let err = NetConf::parse(br#"{"cniVersion":"1.0.0","prevResult":[]}"#).unwrap_err();
        assert_eq!(err.code(), 7);
    }

    #[test]
    fn reply_version_falls_back_to_the_default() {
        assert_eq!(reply_version(br#"{"cniVersion":"0.4.0","x":"#), "1.1.0");
        assert_eq!(reply_version(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(reply_version(br#"{"cniVersion":"9.9.9"}"#), "1.1.0");
    }

    #[test]
    fn gc_list_is_read_from_either_key() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.1.0","cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        let list = conf.valid_attachments().unwrap().unwrap();
        assert_eq!(list[0].container_id, "c1");
        let conf = NetConf::parse(br#"{"cniVersion":"1.1.0"}"#).unwrap();
        assert!(conf.valid_attachments().unwrap().is_none());
        let conf =
            NetConf::parse(br#"{"cniVersion":"1.1.0","cni.dev/valid-attachments":[1]}"#).unwrap();
        assert_eq!(conf.valid_attachments().unwrap_err().code(), 7);
    }

    #[test]
    fn log_settings_survive_a_bad_config() {
        assert_eq!(LogSettings::from_config(b"{"), LogSettings::default());
        let settings =
            LogSettings::from_config(br#"{"logFile":"/tmp/x.log","logLevel":"warn","y":1}"#);
        assert_eq!(settings.file, Some(PathBuf::from("/tmp/x.log")));
        assert_eq!(settings.level, "warn");
    }

    #[test]
    fn pass_through_sets_the_config_version() {
        let result = object(json!({"cniVersion": "1.0.0", "ips": []}));
        assert_eq!(
            pass_through(&result, "1.1.0"),
            json!({"cniVersion": "1.1.0", "ips": []})
        );
    }
}
