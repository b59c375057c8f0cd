//! The harness's CNI runtime against the real reference plugins (Debian's
//! containernetworking-plugins 1.1.1 in /usr/lib/cni), and its exec
//! protocol against recording stub plugins.
//!
//! Needs root (network namespaces), as CI has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amesh_tests::harness::cni::{
    BridgeNetwork, CniError, CniRuntime, CniTestbed, DEFAULT_BIN_DIR, PLUGIN_TIMEOUT,
    PodAttachment, exec_plugin, result_addresses, result_interfaces, write_conflist,
};
use amesh_tests::harness::{poll_until, run_in};
use serde_json::{Value, json};

const NET: &str = "amt-pods";
const SUBNET_V4: &str = "10.244.0.0/24";
const SUBNET_V6: &str = "fd00:10:244::/64";
const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// The dual-stack primary network, with its IPAM store in the testbed.
fn network(bed: &CniTestbed) -> BridgeNetwork {
    BridgeNetwork::new(NET, "cni0", SUBNET_V4)
        .ipv6(SUBNET_V6)
        .ipam_data_dir(bed.ipam_dir())
}

/// A testbed with the dual-stack network as its only config.
fn testbed() -> CniTestbed {
    assert!(
        Path::new(DEFAULT_BIN_DIR).join("bridge").is_file(),
        "CNI reference plugins missing: apt-get install -y containernetworking-plugins"
    );
    let bed = CniTestbed::new().expect("testbed");
    network(&bed)
        .write(&bed.conf_dir(), "10-pods.conflist")
        .unwrap();
    bed
}

fn ip_json(netns: &str, args: &[&str]) -> Option<Value> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = run_in(netns, "ip", &all, CMD_TIMEOUT).unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Global addresses ("10.244.0.2/24") of `ifname` in `netns`; `None` if
/// there is no such link.
fn addresses(netns: &str, ifname: &str) -> Option<Vec<String>> {
    let links = ip_json(netns, &["addr", "show", "dev", ifname])?;
    let mut found: Vec<String> = links[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    found.sort();
    Some(found)
}

fn links(netns: &str) -> Vec<String> {
    let links = ip_json(netns, &["link", "show"]).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

fn link_is_up(netns: &str, ifname: &str) -> bool {
    let link = ip_json(netns, &["link", "show", "dev", ifname]).unwrap();
    link[0]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "UP")
}

/// host-local's reservations: address -> file content (container id, ifname).
fn reservations(bed: &CniTestbed) -> BTreeMap<String, String> {
    let Ok(dir) = std::fs::read_dir(bed.ipam_dir().join(NET)) else {
        return BTreeMap::new();
    };
    dir.map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .contains(['.', ':'])
        })
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("last_reserved_ip")
        })
        .map(|p| {
            let ip = p.file_name().unwrap().to_str().unwrap().to_string();
            (ip, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn netns_name(pod: &PodAttachment) -> String {
    pod.netns_path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn add_check_del_attach_and_detach_a_dual_stack_pod() {
    let mut bed = testbed();
    let rt = bed.runtime();
    let pod = bed.pod("web").unwrap();
    let ns = netns_name(&pod);

    let result = rt.add(&pod).expect("ADD");
    let ips = result_addresses(&result);
    assert_eq!(ips.len(), 2, "one address per family: {result:#}");
    assert!(
        ips[0].starts_with("10.244.0.") && ips[0].ends_with("/24"),
        "{ips:?}"
    );
    assert!(
        ips[1].starts_with("fd00:10:244::") && ips[1].ends_with("/64"),
        "{ips:?}"
    );
    let ifaces = result_interfaces(&result);
    assert_eq!(ifaces[0], "cni0");
    assert_eq!(ifaces[2], "eth0");
    assert_eq!(result["interfaces"][2]["sandbox"], json!(pod.netns_path));
    assert_eq!(result["ips"][0]["gateway"], "10.244.0.1");

    // The pod has what the result says; the node has the bridge and veth.
    assert_eq!(addresses(&ns, "eth0"), Some(sorted(ips.clone())));
    assert!(link_is_up(&ns, "eth0"));
    let host_veth = &ifaces[1];
    assert!(
        links(bed.node()).contains(host_veth),
        "{host_veth} on the node"
    );
    assert!(
        addresses(bed.node(), "cni0")
            .unwrap()
            .contains(&"10.244.0.1/24".to_string())
    );

    // Cached, and both addresses reserved for this container.
    assert_eq!(rt.cached_result(&pod).unwrap(), Some(result.clone()));
    let held = reservations(&bed);
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.values().all(|owner| owner.contains(&pod.container_id)));

    rt.check(&pod).expect("CHECK after ADD");

    rt.del(&pod).expect("DEL");
    assert_eq!(addresses(&ns, "eth0"), None, "eth0 gone from the pod");
    assert!(!links(bed.node()).contains(host_veth), "host veth gone");
    assert!(!rt.cache_path(NET, &pod).exists(), "cache entry gone");
    assert_eq!(reservations(&bed), BTreeMap::new(), "addresses released");

    // DEL is idempotent.
    rt.del(&pod).expect("second DEL");
}

#[test]
fn requested_ips_are_assigned_exclusively_and_released_on_del() {
    let mut bed = testbed();
    let rt = bed.runtime();
    let wanted = ["10.244.0.50/24", "fd00:10:244::50/64"];
    let first = bed.pod("first").unwrap().ips(wanted);
    let second = bed.pod("second").unwrap().ips(wanted);

    let result = rt.add(&first).expect("ADD with requested IPs");
    assert_eq!(result_addresses(&result), wanted);
    assert_eq!(
        addresses(&netns_name(&first), "eth0"),
        Some(sorted(wanted.map(String::from).to_vec()))
    );

    // Taken: host-local refuses, through the bridge plugin.
    let err = rt.add(&second).expect_err("same IPs twice");
    assert_eq!(err.plugin, "bridge");
    assert_eq!(err.command, "ADD");
    assert!(err.code.is_some(), "{err}");
    assert!(err.msg.contains("10.244.0.50"), "{err}");
    // A failed ADD is the runtime's to clean up.
    rt.del(&second).expect("DEL after failed ADD");

    rt.del(&first).expect("DEL");
    let result = rt.add(&second).expect("released IPs are free again");
    assert_eq!(result_addresses(&result), wanted);
    rt.del(&second).unwrap();
}

#[test]
fn check_compares_the_pod_with_the_cached_result() {
    let mut bed = testbed();
    let rt = bed.runtime();
    let pod = bed.pod("checked").unwrap();
    let result = rt.add(&pod).unwrap();
    rt.check(&pod).expect("CHECK right after ADD");

    // Take the IPv4 address away behind the plugin's back.
    let v4 = &result_addresses(&result)[0];
    run_in(
        &netns_name(&pod),
        "ip",
        &["addr", "del", v4, "dev", "eth0"],
        CMD_TIMEOUT,
    )
    .unwrap();
    let err = rt
        .check(&pod)
        .expect_err("CHECK notices the missing address");
    assert_eq!((err.plugin.as_str(), err.command), ("bridge", "CHECK"));
    assert_eq!(err.code, Some(999), "{err}");
    assert!(
        err.msg.contains(&format!("Failed to match addr {v4}")),
        "{err}"
    );

    // Nothing cached, so no prevResult: the bridge plugin checks IPAM
    // first, and host-local has nothing for this container.
    let never_added = bed.pod("never-added").unwrap();
    let err = rt.check(&never_added).expect_err("CHECK without ADD");
    assert_eq!(err.code, Some(999), "{err}");
    assert!(
        err.msg.contains(&format!(
            "Failed to find address added by container {}",
            never_added.container_id
        )),
        "{err}"
    );

    rt.del(&pod).unwrap();
}

#[test]
fn del_of_an_unknown_container_succeeds() {
    let mut bed = testbed();
    let rt = bed.runtime();
    // Its netns exists but was never attached.
    let unknown = bed.pod("unknown").unwrap();
    rt.del(&unknown).expect("DEL of a container never added");
    // Its netns is already gone (the runtime tore the sandbox down first).
    let gone = PodAttachment::new("gone-pod", bed.dir().join("no-such-netns"));
    rt.del(&gone).expect("DEL with a vanished netns");
}

#[test]
fn plugin_errors_carry_the_plugins_code_and_message() {
    let mut bed = testbed();
    let rt = bed.runtime();
    let pod = bed.pod("broken").unwrap();
    let write = |plugin: Value| {
        let list = json!({ "cniVersion": "1.0.0", "name": NET, "plugins": [plugin] });
        write_conflist(&bed.conf_dir(), "10-pods.conflist", &list).unwrap();
    };
    let mut bridge = network(&bed).to_json()["plugins"][0].clone();

    // A field of the wrong type: the bridge plugin cannot decode its config.
    bridge["mtu"] = json!("big");
    write(bridge.clone());
    let err = rt.add(&pod).expect_err("bad mtu");
    assert_eq!(err.plugin, "bridge");
    assert_eq!(err.command, "ADD");
    assert_eq!(err.code, Some(999), "{err}");
    assert!(err.msg.contains("failed to load netconf"), "{err}");
    let shown = err.to_string();
    assert!(
        ["bridge", "ADD", "999", "failed to load netconf"]
            .iter()
            .all(|part| shown.contains(part)),
        "{shown}"
    );

    // An IPAM plugin that does not exist fails only after the veth exists,
    // and the 1.1.1 bridge plugin leaves it there: DEL cleans it up.
    bridge.as_object_mut().unwrap().remove("mtu");
    bridge["ipam"]["type"] = json!("no-such-ipam");
    write(bridge.clone());
    let err = rt.add(&pod).expect_err("unknown IPAM type");
    assert!(err.code.is_some(), "{err}");
    assert!(err.msg.contains("no-such-ipam"), "{err}");
    assert!(links(&netns_name(&pod)).contains(&"eth0".to_string()));
    // DEL runs the same IPAM plugin, so it needs the config fixed first.
    let err = rt.del(&pod).expect_err("DEL with the broken config");
    assert!(err.msg.contains("no-such-ipam"), "{err}");
    bridge["ipam"]["type"] = json!("host-local");
    write(bridge.clone());
    rt.del(&pod).expect("DEL after failed ADD");
    assert!(!links(&netns_name(&pod)).contains(&"eth0".to_string()));

    // What the runtime rejects itself never reaches a plugin: no code.
    bridge.as_object_mut().unwrap().remove("type");
    write(bridge);
    let err = rt.add(&pod).expect_err("plugin without type");
    assert_eq!((err.plugin.as_str(), err.code), ("", None), "{err}");
    assert!(err.msg.contains("type"), "{err}");
    write(json!({ "type": "no-such-plugin" }));
    let err = rt.add(&pod).expect_err("plugin not installed");
    assert_eq!(
        (err.plugin.as_str(), err.code),
        ("no-such-plugin", None),
        "{err}"
    );
    assert!(err.msg.contains("failed to find plugin"), "{err}");
}

/// The raw protocol, env built by hand as a runtime would.
fn raw_env<'a>(command: &'a str, pod: &'a PodAttachment, args: &'a str) -> Vec<(&'a str, String)> {
    vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", pod.container_id.clone()),
        ("CNI_NETNS", pod.netns_path.display().to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_ARGS", args.to_string()),
        ("CNI_PATH", DEFAULT_BIN_DIR.to_string()),
    ]
}

#[test]
fn exec_plugin_shows_the_raw_protocol() {
    let mut bed = testbed();
    let pod = bed.pod("raw").unwrap();
    let bridge = Path::new(DEFAULT_BIN_DIR).join("bridge");
    let config = {
        let mut list = network(&bed).to_json();
        let mut conf = list["plugins"][0].take();
        conf["name"] = json!(NET);
        conf["cniVersion"] = json!("1.0.0");
        serde_json::to_vec(&conf).unwrap()
    };

    // Unparseable stdin: the spec's "failed to decode content" (6).
    let env = raw_env("ADD", &pod, "IgnoreUnknown=1");
    let out = exec_plugin(&bridge, &env, b"{", Some(bed.node()), PLUGIN_TIMEOUT).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = CniError::from_output("bridge", "ADD", &out);
    assert_eq!(err.code, Some(6), "{err}");
    assert!(err.msg.contains("unexpected end of JSON input"), "{err}");

    // K8S_POD_* without IgnoreUnknown=1: rejected (by host-local, which
    // the bridge plugin runs with the same CNI_ARGS).
    let env = raw_env("ADD", &pod, "K8S_POD_NAMESPACE=default;K8S_POD_NAME=raw");
    let out = exec_plugin(&bridge, &env, &config, Some(bed.node()), PLUGIN_TIMEOUT).unwrap();
    assert!(!out.status.success());
    let err = CniError::from_output("bridge", "ADD", &out);
    assert_eq!(err.code, Some(999), "{err}");
    assert!(err.msg.contains("unknown args"), "{err}");
    let out = exec_plugin(
        &bridge,
        &raw_env("DEL", &pod, "IgnoreUnknown=1"),
        &config,
        Some(bed.node()),
        PLUGIN_TIMEOUT,
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{:?}",
        CniError::from_output("bridge", "DEL", &out)
    );

    // VERSION needs no netns: the versions this build speaks.
    let out = exec_plugin(
        &bridge,
        &[("CNI_COMMAND", "VERSION")],
        br#"{"cniVersion":"1.0.0"}"#,
        None,
        PLUGIN_TIMEOUT,
    )
    .unwrap();
    assert!(out.status.success());
    let versions: Value = serde_json::from_slice(&out.stdout).unwrap();
    let supported = versions["supportedVersions"].as_array().unwrap();
    assert!(supported.contains(&json!("1.0.0")), "{versions}");
    assert!(!supported.contains(&json!("1.1.0")), "{versions}");
}

#[test]
fn status_and_gc_follow_the_list_version() {
    let mut bed = testbed();
    let rt = bed.runtime();

    // Spec 1.0 has no STATUS: ready without asking (not even a plugin lookup).
    let no_plugins = bed.dir().join("empty-bin");
    std::fs::create_dir_all(&no_plugins).unwrap();
    rt.clone()
        .bin_dirs([&no_plugins])
        .status()
        .expect("1.0.0: no STATUS");

    // GC on a 1.0 list: stale cached attachments get a DEL.
    let stale = bed.pod("stale").unwrap();
    let live = bed.pod("live").unwrap();
    rt.add(&stale).unwrap();
    rt.add(&live).unwrap();
    rt.gc(&[(&live.container_id, "eth0")]).expect("GC");
    assert_eq!(
        addresses(&netns_name(&stale), "eth0"),
        None,
        "stale pod detached"
    );
    assert!(!rt.cache_path(NET, &stale).exists());
    assert!(
        reservations(&bed)
            .values()
            .all(|owner| !owner.contains(&stale.container_id))
    );
    rt.check(&live).expect("live pod untouched");
    rt.del(&live).unwrap();

    // A 1.1 list gets STATUS and GC sent, which the 1.1.1 plugins predate.
    network(&bed)
        .cni_version("1.1.0")
        .write(&bed.conf_dir(), "10-pods.conflist")
        .unwrap();
    // libcni sends STATUS and GC without container parameters, and the
    // 1.1.1 skel wants CNI_CONTAINERID for every command but VERSION, so it
    // fails before it could say it does not know the command.
    let err = rt.status().expect_err("1.1.1 plugins predate STATUS");
    assert_eq!((err.plugin.as_str(), err.command), ("bridge", "STATUS"));
    assert_eq!(err.code, Some(3), "{err}");
    assert!(err.msg.contains("missing containerID"), "{err}");
    let err = rt.gc(&[]).expect_err("and GC");
    assert_eq!(
        (err.plugin.as_str(), err.code),
        ("bridge", Some(3)),
        "{err}"
    );
}

#[test]
fn loopback_network_brings_lo_up_first() {
    let mut bed = testbed();
    let rt = bed.runtime().loopback(true);
    let pod = bed.pod("lo").unwrap();
    let ns = netns_name(&pod);
    assert!(!link_is_up(&ns, "lo"));

    let result = rt.add(&pod).unwrap();
    assert_eq!(
        result_addresses(&result).len(),
        2,
        "the primary network's result"
    );
    assert!(link_is_up(&ns, "lo"));
    let lo = PodAttachment {
        ifname: "lo".into(),
        ..pod.clone()
    };
    assert!(rt.cache_path("cni-loopback", &lo).exists());

    rt.del(&pod).unwrap();
    assert!(!rt.cache_path("cni-loopback", &lo).exists());
    assert!(!rt.cache_path(NET, &pod).exists());
}

// ---- The exec protocol, observed by stub plugins ----

/// A stub plugin: records stdin and environment as `<seq>-<name>-<command>`
/// files in `log`, and answers ADD with a result naming itself.
fn stub_plugin(bin: &Path, name: &str, log: &Path) {
    let script = format!(
        r#"#!/bin/sh
log='{log}'
n=$(cat "$log/seq" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$log/seq"
cat > "$log/$n-{name}-$CNI_COMMAND.stdin"
env > "$log/$n-{name}-$CNI_COMMAND.env"
if [ "$CNI_COMMAND" = ADD ]; then
  printf '{{"cniVersion":"1.1.0","interfaces":[{{"name":"{name}"}}]}}'
fi
"#,
        log = log.display()
    );
    write_executable(&bin.join(name), &script);
}

fn write_executable(path: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[derive(Debug)]
struct Call {
    plugin: String,
    command: String,
    stdin: Value,
    env: BTreeMap<String, String>,
}

/// The calls recorded since the last `take`, in order.
fn take(log: &Path) -> Vec<Call> {
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "stdin"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            (stem.split('-').next().unwrap().parse().unwrap(), p)
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, stdin_path)| {
            let stem = stdin_path
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            // <seq>-<plugin>-<command>; plugin names contain '-'.
            let (_, rest) = stem.split_once('-').unwrap();
            let (plugin, command) = rest.rsplit_once('-').unwrap();
            let (plugin, command) = (plugin.to_string(), command.to_string());
            let env_path = stdin_path.with_extension("env");
            let env = std::fs::read_to_string(&env_path)
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let stdin = serde_json::from_slice(&std::fs::read(&stdin_path).unwrap()).unwrap();
            std::fs::remove_file(stdin_path).unwrap();
            std::fs::remove_file(env_path).unwrap();
            Call {
                plugin,
                command,
                stdin,
                env,
            }
        })
        .collect()
}

fn order(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| format!("{} {}", c.plugin, c.command))
        .collect()
}

/// Stub chain rec-a, rec-b; `shadow/` holds a rec-a that must never run.
struct Stubs {
    dir: tempfile::TempDir,
    rt: CniRuntime,
}

impl Stubs {
    fn new(cni_version: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let [bin, shadow, log, conf] = ["bin", "shadow", "log", "net.d"].map(|d| {
            let path = dir.path().join(d);
            std::fs::create_dir_all(&path).unwrap();
            path
        });
        stub_plugin(&bin, "rec-a", &log);
        stub_plugin(&bin, "rec-b", &log);
        write_executable(&shadow.join("rec-a"), "#!/bin/sh\nexit 7\n");
        let list = json!({
            "cniVersion": cni_version,
            "name": "stubs",
            "plugins": [
                { "type": "rec-a", "capabilities": { "ips": true } },
                { "type": "rec-b", "capabilities": { "portMappings": true, "ips": false },
                  "runtimeConfig": { "static": 1 } },
            ],
        });
        write_conflist(&conf, "10-stubs.conflist", &list).unwrap();
        let rt = CniRuntime::new(&conf, dir.path().join("cache")).bin_dirs([bin, shadow]);
        Self { dir, rt }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn pod(&self, id: &str) -> PodAttachment {
        PodAttachment::new(id, format!("/var/run/netns/{id}"))
            .pod("shop", "cart")
            .ips(["10.244.0.9/24"])
            .capability(
                "portMappings",
                json!([{ "hostPort": 80, "containerPort": 8080 }]),
            )
    }
}

#[test]
fn plugins_get_the_exec_protocol_libcni_speaks() {
    let stubs = Stubs::new("1.0.0");
    let pod = stubs.pod("c1");

    let result = stubs.rt.add(&pod).expect("ADD");
    assert_eq!(
        result["interfaces"][0]["name"], "rec-b",
        "the last result is final"
    );
    let calls = take(&stubs.log());
    assert_eq!(order(&calls), ["rec-a ADD", "rec-b ADD"]);
    let (a, b) = (&calls[0], &calls[1]);
    assert_eq!(a.stdin["name"], "stubs");
    assert_eq!(a.stdin["cniVersion"], "1.0.0");
    assert_eq!(a.stdin.get("prevResult"), None, "the first plugin has none");
    assert_eq!(
        a.stdin["runtimeConfig"],
        json!({ "ips": ["10.244.0.9/24"] })
    );
    assert_eq!(b.stdin["prevResult"]["interfaces"][0]["name"], "rec-a");
    assert_eq!(
        b.stdin["runtimeConfig"],
        json!({ "portMappings": [{ "hostPort": 80, "containerPort": 8080 }] }),
        "only declared capabilities, replacing the static runtimeConfig"
    );
    let env = &a.env;
    assert_eq!(env["CNI_COMMAND"], "ADD");
    assert_eq!(env["CNI_CONTAINERID"], "c1");
    assert_eq!(env["CNI_NETNS"], "/var/run/netns/c1");
    assert_eq!(env["CNI_IFNAME"], "eth0");
    assert_eq!(
        env["CNI_ARGS"],
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart;\
         K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=uid-c1"
    );
    let bin = stubs.dir.path().join("bin");
    let shadow = stubs.dir.path().join("shadow");
    assert_eq!(
        env["CNI_PATH"],
        format!("{}:{}", bin.display(), shadow.display())
    );
    assert!(env.contains_key("PATH"));
    assert!(
        !env.contains_key("HOME"),
        "the runtime's environment stays out"
    );

    // The cache is libcni's cniCacheV1 entry.
    let cached: Value =
        serde_json::from_slice(&std::fs::read(stubs.rt.cache_path("stubs", &pod)).unwrap())
            .unwrap();
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["containerId"], "c1");
    assert_eq!(cached["ifName"], "eth0");
    assert_eq!(cached["networkName"], "stubs");
    assert_eq!(cached["result"], result);
    assert_eq!(cached["cniArgs"][0], json!(["IgnoreUnknown", "1"]));

    stubs.rt.check(&pod).expect("CHECK");
    let calls = take(&stubs.log());
    assert_eq!(order(&calls), ["rec-a CHECK", "rec-b CHECK"]);
    assert!(calls.iter().all(|c| c.stdin["prevResult"] == result));

    stubs.rt.del(&pod).expect("DEL");
    let calls = take(&stubs.log());
    assert_eq!(order(&calls), ["rec-b DEL", "rec-a DEL"], "reverse order");
    assert!(calls.iter().all(|c| c.stdin["prevResult"] == result));
    assert!(!stubs.rt.cache_path("stubs", &pod).exists());

    // Nothing cached any more: every plugin still gets its DEL.
    stubs.rt.del(&pod).expect("DEL again");
    let calls = take(&stubs.log());
    assert_eq!(order(&calls), ["rec-b DEL", "rec-a DEL"]);
    assert!(calls.iter().all(|c| c.stdin.get("prevResult").is_none()));

    // Spec 1.0: STATUS and GC are never sent to plugins.
    stubs.rt.status().unwrap();
    stubs.rt.gc(&[]).unwrap();
    assert!(take(&stubs.log()).is_empty());
}

#[test]
fn spec_1_1_lists_get_status_and_gc() {
    let stubs = Stubs::new("1.1.0");
    stubs.rt.status().expect("STATUS");
    let calls = take(&stubs.log());
    assert_eq!(order(&calls), ["rec-a STATUS", "rec-b STATUS"]);
    assert_eq!(calls[0].env["CNI_CONTAINERID"], "");
    assert_eq!(calls[0].stdin.get("runtimeConfig"), None);

    let (stale, live) = (stubs.pod("stale"), stubs.pod("live"));
    stubs.rt.add(&stale).unwrap();
    stubs.rt.add(&live).unwrap();
    take(&stubs.log());
    stubs.rt.gc(&[("live", "eth0")]).expect("GC");
    let calls = take(&stubs.log());
    assert_eq!(
        order(&calls),
        ["rec-b DEL", "rec-a DEL", "rec-a GC", "rec-b GC"],
        "the stale attachment's DEL, then GC"
    );
    assert_eq!(calls[0].env["CNI_CONTAINERID"], "stale");
    assert_eq!(
        calls[0].env["CNI_ARGS"],
        stale
            .cni_args()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";"),
        "the DEL replays the cached CNI_ARGS"
    );
    let valid = json!([{ "containerID": "live", "ifname": "eth0" }]);
    assert_eq!(calls[2].stdin["cni.dev/valid-attachments"], valid);
    assert!(stubs.rt.cache_path("stubs", &live).exists());
    assert!(!stubs.rt.cache_path("stubs", &stale).exists());
}

#[test]
fn a_hung_plugin_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let hang = dir.path().join("hang");
    // The plugin's own child stands in for a delegated IPAM plugin.
    write_executable(
        &hang,
        &format!(
            "#!/bin/sh\nsleep 300 &\necho $! > '{}'\nwait\n",
            pid_file.display()
        ),
    );
    let start = Instant::now();
    let err = exec_plugin(
        &hang,
        &[("CNI_COMMAND", "ADD")],
        b"{}",
        None,
        Duration::from_millis(500),
    )
    .expect_err("timeout");
    assert!(err.to_string().contains("timed out"), "{err:#}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );

    let child = std::fs::read_to_string(&pid_file).unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", child.trim()));
    // Killed with the group; gone once init has reaped it.
    poll_until(Duration::from_secs(5), "the plugin's child to die", || {
        Ok(!proc_dir.exists()
            || std::fs::read_to_string(proc_dir.join("stat")).is_ok_and(|s| s.contains(") Z ")))
    })
    .unwrap();
}
