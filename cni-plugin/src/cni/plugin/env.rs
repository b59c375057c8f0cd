//! The `CNI_*` environment the runtime sets for each call, and the pod
//! identity in `CNI_ARGS`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use crate::cni::protocol::PodRef;

use super::PluginError;

pub const CNI_COMMAND: &str = "CNI_COMMAND";
pub const CNI_CONTAINERID: &str = "CNI_CONTAINERID";
pub const CNI_NETNS: &str = "CNI_NETNS";
pub const CNI_IFNAME: &str = "CNI_IFNAME";
pub const CNI_ARGS: &str = "CNI_ARGS";

const VARS: [&str; 5] = [
    CNI_COMMAND,
    CNI_CONTAINERID,
    CNI_NETNS,
    CNI_IFNAME,
    CNI_ARGS,
];

const POD_NAMESPACE: &str = "K8S_POD_NAMESPACE";
const POD_NAME: &str = "K8S_POD_NAME";
const POD_UID: &str = "K8S_POD_UID";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            _ => return None,
        })
    }

    /// The first spec version with this command, when it is not 0.3.0.
    pub fn since(self) -> Option<&'static str> {
        match self {
            Self::Check => Some("0.4.0"),
            Self::Status | Self::Gc => Some("1.1.0"),
            Self::Add | Self::Del | Self::Version => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }
}

/// The variables the plugin reads, as the runtime set them.
#[derive(Debug, Clone, Default)]
pub struct CniEnv {
    vars: BTreeMap<&'static str, OsString>,
}

impl CniEnv {
    pub fn from_process() -> Self {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        let vars = VARS
            .iter()
            .filter_map(|name| lookup(name).map(|value| (*name, value)))
            .collect();
        Self { vars }
    }

    pub fn command(&self) -> Result<Command, PluginError> {
        let text = self.required(CNI_COMMAND)?;
        Command::parse(&text).ok_or(PluginError::UnknownCommand(text))
    }

    /// A variable the spec requires for this command: present, non-empty,
    /// UTF-8.
    pub fn required(&self, name: &'static str) -> Result<String, PluginError> {
        let value = self
            .vars
            .get(name)
            .filter(|value| !value.is_empty())
            .ok_or(PluginError::MissingEnv(name))?;
        value
            .to_str()
            .map(str::to_owned)
            .ok_or(PluginError::InvalidEnv {
                name,
                reason: "not valid UTF-8".into(),
            })
    }

    /// CNI_NETNS; empty when absent (DEL may come after the netns is gone).
    pub fn netns(&self) -> PathBuf {
        self.vars
            .get(CNI_NETNS)
            .map(PathBuf::from)
            .unwrap_or_default()
    }

    /// CNI_ARGS as text; empty when absent.
    fn args_text(&self) -> String {
        self.vars
            .get(CNI_ARGS)
            .map(|value| value.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The pod, for ADD and CHECK: namespace and name are required, and a
    /// malformed CNI_ARGS is an error.
    pub fn pod(&self) -> Result<PodRef, PluginError> {
        CniArgs::parse_strict(&self.args_text())?.pod()
    }

    /// The pod, for DEL: whatever CNI_ARGS has, empty strings for the rest.
    pub fn pod_or_empty(&self) -> PodRef {
        let args = CniArgs::parse_lenient(&self.args_text());
        PodRef {
            namespace: args.namespace.unwrap_or_default(),
            name: args.name.unwrap_or_default(),
            uid: args.uid.unwrap_or_default(),
        }
    }
}

/// The keys of `CNI_ARGS` (`K=V;K=V`) the plugin uses; others (for example
/// `IgnoreUnknown`, `K8S_POD_INFRA_CONTAINER_ID`) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

impl CniArgs {
    /// Fails on a segment without `=`.
    pub fn parse_strict(text: &str) -> Result<Self, PluginError> {
        let mut args = Self::default();
        for pair in pairs(text) {
            let (key, value) = pair.map_err(|segment| PluginError::InvalidEnv {
                name: CNI_ARGS,
                reason: format!("{segment:?} is not KEY=VALUE"),
            })?;
            args.set(key, value);
        }
        Ok(args)
    }

    /// Skips malformed segments.
    pub fn parse_lenient(text: &str) -> Self {
        let mut args = Self::default();
        for (key, value) in pairs(text).flatten() {
            args.set(key, value);
        }
        args
    }

    fn set(&mut self, key: &str, value: &str) {
        // An empty value is as good as none.
        let value = (!value.is_empty()).then(|| value.to_owned());
        match key {
            POD_NAMESPACE => self.namespace = value,
            POD_NAME => self.name = value,
            POD_UID => self.uid = value,
            _ => {}
        }
    }

    pub fn pod(self) -> Result<PodRef, PluginError> {
        match (self.namespace, self.name) {
            (Some(namespace), Some(name)) => Ok(PodRef {
                namespace,
                name,
                uid: self.uid.unwrap_or_default(),
            }),
            (namespace, name) => {
                let mut missing = Vec::new();
                if namespace.is_none() {
                    missing.push(POD_NAMESPACE);
                }
                if name.is_none() {
                    missing.push(POD_NAME);
                }
                Err(PluginError::MissingPodArgs(missing))
            }
        }
    }
}

/// `K=V` pairs; `Err(segment)` for a segment without `=`. Empty segments
/// (a trailing `;`) are skipped.
fn pairs(text: &str) -> impl Iterator<Item = Result<(&str, &str), &str>> {
    text.split(';')
        .map(str::trim)
        .filter(|segment| !segment.is_empty())
        .map(|segment| segment.split_once('=').ok_or(segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> CniEnv {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        CniEnv::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn parses_kubelet_cni_args() {
        let args = CniArgs::parse_strict(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
        )
        .unwrap();
        assert_eq!(
            args.pod().unwrap(),
            PodRef {
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: "u-1".into()
            }
        );
    }

    #[test]
    fn uid_is_optional_and_trailing_separator_is_fine() {
        let pod = CniArgs::parse_strict("K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;")
            .unwrap()
            .pod()
            .unwrap();
        assert_eq!(pod.uid, "");
        assert_eq!(pod.key(), "a/b");
    }

    #[test]
    fn missing_pod_keys_are_named() {
        let err = CniArgs::parse_strict("K8S_POD_NAMESPACE=a;K8S_POD_NAME=")
            .unwrap()
            .pod()
            .unwrap_err();
        assert_eq!(err.code(), 4);
        assert!(err.to_string().contains("K8S_POD_NAME"), "{err}");
        let err = CniArgs::parse_strict("").unwrap().pod().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("K8S_POD_NAMESPACE") && msg.contains("K8S_POD_NAME"));
    }

    #[test]
    fn malformed_pairs_fail_strict_and_are_skipped_lenient() {
        let text = "K8S_POD_NAMESPACE=a;garbage;K8S_POD_NAME=b";
        assert_eq!(CniArgs::parse_strict(text).unwrap_err().code(), 4);
        let args = CniArgs::parse_lenient(text);
        assert_eq!(args.name.as_deref(), Some("b"));
    }

    #[test]
    fn required_variables_are_named_when_missing() {
        let env = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "")]);
        assert_eq!(env.command().unwrap(), Command::Add);
        let err = env.required(CNI_CONTAINERID).unwrap_err();
        assert!(err.to_string().contains("CNI_CONTAINERID"));
        assert_eq!(env.netns(), PathBuf::new());
        let err = CniEnv::default().command().unwrap_err();
        assert_eq!(err.code(), 4);
        let err = self::env(&[("CNI_COMMAND", "FROB")]).command().unwrap_err();
        assert!(matches!(err, PluginError::UnknownCommand(_)));
    }

    #[test]
    fn del_takes_whatever_pod_names_there_are() {
        let pod = env(&[("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web")]).pod_or_empty();
        assert_eq!((pod.namespace.as_str(), pod.name.as_str()), ("", "web"));
    }
}
