//! The runtime's operations on a plugin chain (libcni `*NetworkList`):
//! ADD in order feeding each result to the next, CHECK and DEL with the
//! cached final result, DEL in reverse, STATUS and GC for spec 1.1 lists.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::cache;
use super::config::{NetworkConfigList, active_config, version_at_least};
use super::error::CniError;
use super::exec::{PLUGIN_TIMEOUT, exec_plugin, find_plugin};

/// Where Debian's containernetworking-plugins installs the plugins
/// (upstream and most clusters use /opt/cni/bin).
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/cni";

/// containerd's loopback network (go-cni `WithLoNetwork`), set up in every
/// pod before the configured network.
const LOOPBACK_LIST: &str =
    r#"{"cniVersion":"0.3.1","name":"cni-loopback","plugins":[{"type":"loopback"}]}"#;

/// A pod sandbox to attach, as the kubelet describes it to the runtime.
#[derive(Debug, Clone)]
pub struct PodAttachment {
    pub container_id: String,
    /// The pod's netns (`CNI_NETNS`), e.g. /var/run/netns/NAME.
    pub netns_path: PathBuf,
    pub ifname: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The `ips` capability (requested addresses, e.g. "10.244.0.5/24");
    /// empty lets IPAM choose.
    pub ips: Vec<String>,
    /// Further capability arguments (`portMappings`, `bandwidth`, …); each
    /// reaches only plugins that declare it in `capabilities`.
    pub capability_args: Map<String, Value>,
}

impl PodAttachment {
    /// Pod `default/<container_id>` on eth0.
    pub fn new(container_id: &str, netns_path: impl Into<PathBuf>) -> Self {
        Self {
            container_id: container_id.into(),
            netns_path: netns_path.into(),
            ifname: "eth0".into(),
            namespace: "default".into(),
            name: container_id.into(),
            uid: format!("uid-{container_id}"),
            ips: Vec::new(),
            capability_args: Map::new(),
        }
    }

    pub fn pod(mut self, namespace: &str, name: &str) -> Self {
        self.namespace = namespace.into();
        self.name = name.into();
        self
    }

    pub fn ips<S: Into<String>>(mut self, ips: impl IntoIterator<Item = S>) -> Self {
        self.ips = ips.into_iter().map(Into::into).collect();
        self
    }

    pub fn capability(mut self, key: &str, value: Value) -> Self {
        self.capability_args.insert(key.into(), value);
        self
    }

    /// `CNI_ARGS` as kubelet-driven runtimes pass them. `IgnoreUnknown=1`
    /// first: plugins reject `K8S_POD_*` keys they do not know without it.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", &self.namespace),
            ("K8S_POD_NAME", &self.name),
            ("K8S_POD_INFRA_CONTAINER_ID", &self.container_id),
            ("K8S_POD_UID", &self.uid),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn attachment(&self) -> Attachment {
        let mut capability_args = self.capability_args.clone();
        if !self.ips.is_empty() {
            capability_args.insert("ips".into(), json!(self.ips));
        }
        Attachment {
            container_id: self.container_id.clone(),
            netns: self.netns_path.to_string_lossy().into_owned(),
            ifname: self.ifname.clone(),
            args: self.cni_args(),
            capability_args,
        }
    }
}

/// One invocation's runtime parameters (libcni `RuntimeConf`); also what
/// the cache keeps, so GC can DEL an attachment nobody describes any more.
#[derive(Debug, Clone)]
pub(super) struct Attachment {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
}

/// A container runtime's CNI side, on one node.
#[derive(Debug, Clone)]
pub struct CniRuntime {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    netns: Option<String>,
    timeout: Duration,
    loopback: bool,
}

impl CniRuntime {
    /// Plugins from [`DEFAULT_BIN_DIR`], run in this process's netns.
    pub fn new(conf_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            conf_dir: conf_dir.into(),
            bin_dirs: vec![PathBuf::from(DEFAULT_BIN_DIR)],
            cache_dir: cache_dir.into(),
            netns: None,
            timeout: PLUGIN_TIMEOUT,
            loopback: false,
        }
    }

    /// Plugin directories, searched in order (`CNI_PATH`).
    pub fn bin_dirs(mut self, dirs: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        self.bin_dirs = dirs.into_iter().map(Into::into).collect();
        self
    }

    /// Runs the plugins in named netns `netns`: the node's.
    pub fn in_netns(mut self, netns: &str) -> Self {
        self.netns = Some(netns.into());
        self
    }

    /// Bound on each plugin run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Also attach the `loopback` plugin to `lo` first, as containerd does.
    pub fn loopback(mut self, enabled: bool) -> Self {
        self.loopback = enabled;
        self
    }

    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The network pods get: the first config in the conf dir.
    pub fn active_config(&self) -> anyhow::Result<NetworkConfigList> {
        active_config(&self.conf_dir)
    }

    /// The cache file of `pod` on `network`.
    pub fn cache_path(&self, network: &str, pod: &PodAttachment) -> PathBuf {
        cache::path(&self.cache_dir, network, &pod.attachment())
    }

    /// The cached final ADD result of `pod` on the active network.
    pub fn cached_result(&self, pod: &PodAttachment) -> anyhow::Result<Option<Value>> {
        let list = self.active_config()?;
        cache::read_result(&self.cache_dir, &list.name, &pod.attachment())
    }

    /// ADD: each plugin in order, from the second on with the previous
    /// result as `prevResult`; the last result is the attachment's, cached
    /// and returned as printed (libcni would convert it to the list's
    /// cniVersion; plugins answer in it anyway). Like libcni, a failure
    /// part-way is not rolled back:
    /// the caller DELs (as containerd does), and the 1.1.1 bridge plugin
    /// does leave the pod's veth behind when its IPAM fails.
    pub fn add(&self, pod: &PodAttachment) -> Result<Value, CniError> {
        let list = self.load("ADD")?;
        let att = pod.attachment();
        validate(&list, &att, "ADD")?;
        if self.loopback {
            self.add_list(&loopback_list("ADD")?, &loopback(&att))?;
        }
        self.add_list(&list, &att)
    }

    /// CHECK: each plugin in order with the cached result as `prevResult`
    /// (none cached: no `prevResult`, and plugins complain as they see fit).
    pub fn check(&self, pod: &PodAttachment) -> Result<(), CniError> {
        let list = self.load("CHECK")?;
        let att = pod.attachment();
        validate(&list, &att, "CHECK")?;
        if !at_least(&list, "0.4.0", "CHECK")? {
            return Err(CniError::runtime(
                "",
                "CHECK",
                format!(
                    "configuration version {:?} does not support CHECK",
                    list.cni_version
                ),
            ));
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = cache::read_result(&self.cache_dir, &list.name, &att)
            .map_err(|e| CniError::runtime("", "CHECK", format!("{e:#}")))?;
        let inject = prev_result(cached.as_ref());
        for plugin in &list.plugins {
            self.invoke(&list, plugin, "CHECK", Some(&att), &inject)?;
        }
        Ok(())
    }

    /// DEL: each plugin in reverse order with the cached result as
    /// `prevResult`, then the cache entry goes. Without a cache entry every
    /// plugin still runs (DEL must clean up whatever a failed ADD left).
    pub fn del(&self, pod: &PodAttachment) -> Result<(), CniError> {
        let list = self.load("DEL")?;
        let att = pod.attachment();
        validate(&list, &att, "DEL")?;
        self.del_list(&list, &att)?;
        if self.loopback {
            self.del_list(&loopback_list("DEL")?, &loopback(&att))?;
        }
        Ok(())
    }

    /// STATUS: is the network ready for ADDs? Only spec 1.1 lists have it;
    /// for older ones there is nothing to ask and the answer is yes.
    pub fn status(&self) -> Result<(), CniError> {
        let list = self.load("STATUS")?;
        if !at_least(&list, "1.1.0", "STATUS")? {
            return Ok(());
        }
        for plugin in &list.plugins {
            self.invoke(&list, plugin, "STATUS", None, &Map::new())?;
        }
        Ok(())
    }

    /// GC: DELs every cached attachment of the network not in `valid`
    /// (container id, ifname), then, for spec 1.1 lists, sends GC with the
    /// valid attachments to every plugin. Every step runs; errors are joined.
    pub fn gc(&self, valid: &[(&str, &str)]) -> Result<(), CniError> {
        let list = self.load("GC")?;
        let mut lists = vec![(list, valid.to_vec())];
        if self.loopback {
            // The loopback network's attachments are the same containers' lo.
            let lo = valid.iter().map(|(id, _)| (*id, "lo")).collect();
            lists.push((loopback_list("GC")?, lo));
        }
        let mut errors = Vec::new();
        for (list, valid) in &lists {
            if list.disable_gc {
                continue;
            }
            errors.extend(self.gc_list(list, valid));
        }
        join_errors(errors)
    }

    fn load(&self, command: &'static str) -> Result<NetworkConfigList, CniError> {
        self.active_config()
            .map_err(|e| CniError::runtime("", command, format!("{e:#}")))
    }

    fn add_list(&self, list: &NetworkConfigList, att: &Attachment) -> Result<Value, CniError> {
        let mut result: Option<Value> = None;
        for plugin in &list.plugins {
            let inject = prev_result(result.as_ref());
            let stdout = self.invoke(list, plugin, "ADD", Some(att), &inject)?;
            let parsed = serde_json::from_slice(&stdout).map_err(|e| {
                CniError::runtime(
                    plugin_type(plugin),
                    "ADD",
                    format!(
                        "result is not JSON ({e}): {:?}",
                        String::from_utf8_lossy(&stdout)
                    ),
                )
            })?;
            result = Some(parsed);
        }
        let result = result.unwrap_or(Value::Null);
        cache::write(&self.cache_dir, list, att, &result).map_err(|e| {
            CniError::runtime(
                "",
                "ADD",
                format!("failed to set network {:?} cached result: {e:#}", list.name),
            )
        })?;
        Ok(result)
    }

    fn del_list(&self, list: &NetworkConfigList, att: &Attachment) -> Result<(), CniError> {
        // Cached results on DEL arrived with spec 0.4.0. An unreadable entry
        // is dropped, and the DEL goes ahead without it (libcni).
        let cached = if at_least(list, "0.4.0", "DEL")? {
            cache::read_result(&self.cache_dir, &list.name, att).unwrap_or_else(|_| {
                cache::remove(&self.cache_dir, &list.name, att);
                None
            })
        } else {
            None
        };
        let inject = prev_result(cached.as_ref());
        for plugin in list.plugins.iter().rev() {
            self.invoke(list, plugin, "DEL", Some(att), &inject)?;
        }
        cache::remove(&self.cache_dir, &list.name, att);
        Ok(())
    }

    fn gc_list(&self, list: &NetworkConfigList, valid: &[(&str, &str)]) -> Vec<CniError> {
        let keep: HashSet<(&str, &str)> = valid.iter().copied().collect();
        let mut errors = Vec::new();
        for stale in cache::attachments(&self.cache_dir, &list.name) {
            if keep.contains(&(stale.container_id.as_str(), stale.ifname.as_str())) {
                continue;
            }
            if let Err(mut e) = self.del_list(list, &stale) {
                e.msg = format!(
                    "failed to delete stale attachment {} {}: {}",
                    stale.container_id, stale.ifname, e.msg
                );
                errors.push(e);
            }
        }
        match at_least(list, "1.1.0", "GC") {
            Ok(true) => {
                let attachments: Vec<Value> = valid
                    .iter()
                    .map(|(id, ifname)| json!({ "containerID": id, "ifname": ifname }))
                    .collect();
                // libcni 1.2.3 sets both: the spec's name and the one it
                // first shipped with.
                let mut inject = Map::new();
                inject.insert("cni.dev/valid-attachments".into(), json!(attachments));
                inject.insert("cni.dev/attachments".into(), json!(attachments));
                for plugin in &list.plugins {
                    if let Err(e) = self.invoke(list, plugin, "GC", None, &inject) {
                        errors.push(e);
                    }
                }
            }
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
        errors
    }

    /// Runs one plugin of `list`: its config plus the list's name and
    /// version plus `inject` on stdin, `att` in the environment (empty
    /// container parameters for STATUS and GC, as libcni sends them).
    fn invoke(
        &self,
        list: &NetworkConfigList,
        plugin: &Map<String, Value>,
        command: &'static str,
        att: Option<&Attachment>,
        inject: &Map<String, Value>,
    ) -> Result<Vec<u8>, CniError> {
        let ty = plugin_type(plugin);
        let path = find_plugin(ty, &self.bin_dirs)
            .map_err(|e| CniError::runtime(ty, command, format!("{e:#}")))?;
        let mut conf = plugin.clone();
        conf.insert("name".into(), json!(list.name));
        conf.insert("cniVersion".into(), json!(list.cni_version));
        conf.extend(inject.clone());
        if let Some(att) = att
            && let Some(rc) = runtime_config(plugin, &att.capability_args)
        {
            conf.insert("runtimeConfig".into(), rc);
        }
        let stdin = serde_json::to_vec(&conf)
            .map_err(|e| CniError::runtime(ty, command, format!("encode config: {e}")))?;
        let cni_path = std::env::join_paths(&self.bin_dirs)
            .map_err(|e| CniError::runtime(ty, command, format!("CNI_PATH: {e}")))?;
        let (id, netns, ifname, args) = match att {
            Some(a) => (
                a.container_id.as_str(),
                a.netns.as_str(),
                a.ifname.as_str(),
                join_args(&a.args),
            ),
            None => ("", "", "", String::new()),
        };
        let env: [(&str, &std::ffi::OsStr); 6] = [
            ("CNI_COMMAND", command.as_ref()),
            ("CNI_CONTAINERID", id.as_ref()),
            ("CNI_NETNS", netns.as_ref()),
            ("CNI_IFNAME", ifname.as_ref()),
            ("CNI_ARGS", args.as_ref()),
            ("CNI_PATH", cni_path.as_ref()),
        ];
        let out = exec_plugin(&path, &env, &stdin, self.netns.as_deref(), self.timeout)
            .map_err(|e| CniError::runtime(ty, command, format!("{e:#}")))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(CniError::from_output(ty, command, &out))
        }
    }
}

/// `runtimeConfig` for a plugin: the capability arguments it declares
/// (`"capabilities": {"ips": true}`), and nothing if it declares none that
/// the runtime has, so a static `runtimeConfig` in its config survives.
fn runtime_config(plugin: &Map<String, Value>, args: &Map<String, Value>) -> Option<Value> {
    let declared = plugin.get("capabilities")?.as_object()?;
    let rc: Map<String, Value> = declared
        .iter()
        .filter(|(_, on)| on.as_bool() == Some(true))
        .filter_map(|(cap, _)| Some((cap.clone(), args.get(cap)?.clone())))
        .collect();
    (!rc.is_empty()).then_some(Value::Object(rc))
}

fn prev_result(result: Option<&Value>) -> Map<String, Value> {
    let mut inject = Map::new();
    if let Some(result) = result {
        inject.insert("prevResult".into(), result.clone());
    }
    inject
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn join_args(args: &[(String, String)]) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

fn at_least(list: &NetworkConfigList, min: &str, command: &'static str) -> Result<bool, CniError> {
    version_at_least(&list.cni_version, min)
        .map_err(|e| CniError::runtime("", command, format!("{e:#}")))
}

fn loopback_list(command: &'static str) -> Result<NetworkConfigList, CniError> {
    NetworkConfigList::from_bytes(LOOPBACK_LIST.as_bytes())
        .map_err(|e| CniError::runtime("loopback", command, format!("{e:#}")))
}

fn loopback(att: &Attachment) -> Attachment {
    Attachment {
        ifname: "lo".into(),
        ..att.clone()
    }
}

/// libcni's `ValidateContainerID`, `ValidateNetworkName` and
/// `ValidateInterfaceName`: these names end up in file names and links.
fn validate(
    list: &NetworkConfigList,
    att: &Attachment,
    command: &'static str,
) -> Result<(), CniError> {
    let fail = |msg: String| Err(CniError::runtime("", command, msg));
    let id_like = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    if !id_like(&att.container_id) {
        return fail(format!("invalid container ID {:?}", att.container_id));
    }
    if !id_like(&list.name) {
        return fail(format!("invalid network name {:?}", list.name));
    }
    let ifname = &att.ifname;
    if ifname.is_empty()
        || ifname.len() > 15
        || ifname == "."
        || ifname == ".."
        || ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return fail(format!("invalid interface name {ifname:?}"));
    }
    Ok(())
}

/// One error for several: the first, with the others' messages appended.
fn join_errors(errors: Vec<CniError>) -> Result<(), CniError> {
    let mut errors = errors.into_iter();
    let Some(mut first) = errors.next() else {
        return Ok(());
    };
    for other in errors {
        first.msg = format!("{}; {other}", first.msg);
    }
    Err(first)
}
