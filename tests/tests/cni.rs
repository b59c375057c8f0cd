//! Pod enrollment through the CNI chain, end to end: the harness plays the
//! container runtime and runs each node's real chain (Debian's reference
//! `bridge` + `host-local`, then `amesh-cni`, which the node agent inserted)
//! through the CNI exec protocol; the node agent and ztunnel run as real
//! processes.
//!
//! Needs root (network namespaces, nftables, bpffs), as CI has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use amesh_tests::harness::cni::{PluginOutput, exec_plugin};
use amesh_tests::harness::{
    AGENT_BIN, AppSpec, Capture, Mesh, MeshBuilder, PodSpec, binary, is_listening, poll_until,
    run_in,
};
use cases::backends;
use rstest_reuse::apply;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WHOAMI: u16 = 7000;
const ECHO: u16 = 7001;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(20);
const AMBIENT: [(&str, &str); 1] = [("istio.io/dataplane-mode", "ambient")];

fn app() -> AppSpec {
    AppSpec::default().whoami(WHOAMI).echo(ECHO)
}

/// A one-node CNI mesh: namespace `default` ambient, a `server` pod.
fn mesh_with_server(capture: Capture) -> Mesh {
    let mut mesh = MeshBuilder::new()
        .cni()
        .capture(capture)
        .namespace_labels("default", AMBIENT)
        .pod(PodSpec::new("server", 0).service_account("server"))
        .build()
        .unwrap();
    mesh.start().unwrap();
    mesh.start_app("server", app()).unwrap();
    mesh
}

async fn whoami(mesh: &Mesh, pod: &str, target: &str) -> std::io::Result<String> {
    let mut stream = mesh.pod(pod).connect(mesh.pod(target).addr(WHOAMI)).await?;
    let mut line = String::new();
    tokio::time::timeout(IO_TIMEOUT, stream.read_to_string(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "whoami timed out"))??;
    Ok(line)
}

/// Whether node `node`'s ztunnel logged an outbound HBONE connection from
/// `pod` (so the pod's traffic was captured).
fn tunnelled_from(mesh: &Mesh, node: usize, pod: &str) -> bool {
    let workload = format!("src.workload={}", mesh.pod(pod).uid);
    mesh.ztunnel_log(node).lines().any(|l| {
        l.contains("direction=\"outbound\"")
            && l.contains("protocol=\"HBONE\"")
            && l.contains(&workload)
    })
}

fn wait_tunnelled_from(mesh: &Mesh, node: usize, pod: &str) {
    let found = poll_until(WAIT, format!("outbound HBONE from {pod}"), || {
        Ok(tunnelled_from(mesh, node, pod))
    });
    if let Err(err) = found {
        panic!("{err}\n{}", mesh.daemon_logs(node));
    }
}

/// The fwmark policy rule every capture backend installs in a pod.
fn has_capture_rule(netns: &str) -> bool {
    let out = run_in(netns, "ip", &["rule", "show"], IO_TIMEOUT).unwrap();
    String::from_utf8_lossy(&out.stdout).contains("fwmark 0x111/0xfff")
}

fn nft_ruleset(netns: &str) -> String {
    let out = run_in(netns, "nft", &["list", "ruleset"], IO_TIMEOUT).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `amesh-cni` directly, as a runtime would, with `stdin`.
fn exec_amesh_cni(mesh: &Mesh, env: &[(&str, &str)], stdin: &[u8]) -> PluginOutput {
    let plugin = mesh.cni_bin_dir(0).join("amesh-cni");
    let mut vars: Vec<(String, String)> =
        vec![("CNI_PATH".into(), mesh.cni_bin_dir(0).display().to_string())];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    exec_plugin(
        &plugin,
        &vars,
        stdin,
        Some(&mesh.node(0).netns),
        IO_TIMEOUT * 3,
    )
    .unwrap()
}

/// The amesh-cni entry of node 0's chain, as the runtime passes it.
fn amesh_netconf(mesh: &Mesh, prev_result: Option<&Value>) -> Value {
    let list = mesh.cni_runtime(0).active_config().unwrap();
    let mut conf = list
        .plugins
        .iter()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("amesh-cni"))
        .cloned()
        .map(Value::Object)
        .expect("amesh-cni in the chain");
    conf["cniVersion"] = json!(list.cni_version);
    conf["name"] = json!(list.name);
    if let Some(prev) = prev_result {
        conf["prevResult"] = prev.clone();
    }
    conf
}

fn stdout_json(out: &PluginOutput) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {out:?}"))
}

#[apply(backends)]
#[tokio::test]
async fn a_pod_is_captured_from_its_first_connection_and_del_removes_everything(capture: Capture) {
    let mut mesh = mesh_with_server(capture);
    // CNI ADD returns only once capture is in place and ztunnel listens:
    // the very first connection, made at once, goes through the mesh.
    mesh.add_pod(PodSpec::new("client", 0).service_account("client"))
        .unwrap();
    let line = whoami(&mesh, "client", "server").await.unwrap();
    assert!(line.starts_with("server=server"), "{line}");
    wait_tunnelled_from(&mesh, 0, "client");

    // ADD again (the runtime retrying): same result, nothing doubled.
    let client = mesh.pod("client").clone();
    let attachment = mesh.pod_attachment(&client);
    let cached = mesh
        .cni_runtime(0)
        .cached_result(&attachment)
        .unwrap()
        .unwrap();
    let netns_path = attachment.netns_path.display().to_string();
    let args = attachment
        .cni_args()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let env = |command: &'static str| {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", attachment.container_id.as_str()),
            ("CNI_NETNS", netns_path.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", args.as_str()),
        ]
    };
    let stdin = serde_json::to_vec(&amesh_netconf(&mesh, Some(&cached))).unwrap();
    let again = exec_amesh_cni(&mesh, &env("ADD"), &stdin);
    assert!(again.status.success(), "second ADD: {again:?}");
    assert_eq!(
        stdout_json(&again)["ips"],
        cached["ips"],
        "result passed through"
    );
    assert_eq!(
        mesh.ztunnel_log(0).matches("pod removed").count(),
        0,
        "ztunnel kept the pod"
    );
    if capture == Capture::Nftables {
        assert_eq!(
            nft_ruleset(&client.netns)
                .matches("table inet amesh")
                .count(),
            1
        );
    }
    let line = whoami(&mesh, "client", "server").await.unwrap();
    assert!(line.starts_with("server=server"), "{line}");

    // CHECK passes, then reports drift once the capture is tampered with.
    mesh.cni_runtime(0).check(&attachment).unwrap();
    let out = run_in(
        &client.netns,
        "ip",
        &["rule", "del", "fwmark", "0x111/0xfff"],
        IO_TIMEOUT,
    )
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let drift = mesh.cni_runtime(0).check(&attachment).unwrap_err();
    assert_eq!(drift.code, Some(100), "{drift}");
    assert!(drift.msg.contains("capture is not in place"), "{drift}");

    // DEL: capture, ztunnel's listeners and the agent's records all go,
    // while the runtime still has the netns.
    mesh.cni_runtime(0).del(&attachment).unwrap();
    assert!(
        !is_listening(&client.netns, 15008).unwrap(),
        "ztunnel left the pod"
    );
    assert!(!has_capture_rule(&client.netns));
    assert!(!nft_ruleset(&client.netns).contains("table inet amesh"));
    let enrolled = std::fs::read_to_string(mesh.agent_state_dir(0).join("enrolled.json")).unwrap();
    assert!(!enrolled.contains("default/client"), "{enrolled}");
    // DEL again (unknown pod now) and DEL of a sandbox that never got as
    // far as a netns both succeed.
    mesh.cni_runtime(0).del(&attachment).unwrap();
    let half = exec_amesh_cni(
        &mesh,
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "never-created"),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=ghost",
            ),
        ],
        &serde_json::to_vec(&amesh_netconf(&mesh, None)).unwrap(),
    );
    assert!(half.status.success(), "{half:?}");
    assert!(half.stdout.is_empty(), "DEL prints nothing");
}

/// What is wrong, the environment, stdin, and the error code expected.
type BadInput<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u64);

#[tokio::test]
async fn bad_input_gets_the_spec_error_codes() {
    let mesh = mesh_with_server(Capture::Nftables);
    let server = mesh.pod("server").clone();
    let netns_path = mesh
        .pod_attachment(&server)
        .netns_path
        .display()
        .to_string();
    let good_args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=server";
    let base = |args: &'static str| {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", netns_path.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", args),
        ]
    };
    let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": format!("{}/24", server.ip)}]});
    let conf = amesh_netconf(&mesh, Some(&prev));
    let cases: Vec<BadInput> = vec![
        (
            "malformed stdin",
            base(good_args),
            b"{\"cniVersion\": ".to_vec(),
            6,
        ),
        (
            "unknown version",
            base(good_args),
            serde_json::to_vec(&{
                let mut c = conf.clone();
                c["cniVersion"] = json!("9.9.9");
                c
            })
            .unwrap(),
            1,
        ),
        (
            "missing pod name in CNI_ARGS",
            base("IgnoreUnknown=1;K8S_POD_NAMESPACE=default"),
            serde_json::to_vec(&conf).unwrap(),
            4,
        ),
        (
            "no CNI_ARGS at all",
            base("")
                .into_iter()
                .filter(|(k, _)| *k != "CNI_ARGS")
                .collect(),
            serde_json::to_vec(&conf).unwrap(),
            4,
        ),
    ];
    for (what, env, stdin, code) in cases {
        let out = exec_amesh_cni(&mesh, &env, &stdin);
        assert!(!out.status.success(), "{what}: {out:?}");
        let error = stdout_json(&out);
        assert_eq!(error["code"], json!(code), "{what}: {error}");
        assert!(
            !error["msg"].as_str().unwrap_or("").is_empty(),
            "{what}: {error}"
        );
    }
    // The node's own netns is never a pod's.
    let node_netns = format!("/var/run/netns/{}", mesh.node(0).netns);
    let env = vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c2"),
        ("CNI_NETNS", node_netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", good_args),
    ];
    let out = exec_amesh_cni(&mesh, &env, &serde_json::to_vec(&conf).unwrap());
    let error = stdout_json(&out);
    assert_eq!(error["code"], json!(7), "{error}");
    assert!(
        error["msg"].as_str().unwrap().contains("node's own netns"),
        "{error}"
    );
}

#[tokio::test]
async fn with_the_agent_down_ambient_pods_wait_and_others_start() {
    let mut mesh = mesh_with_server(Capture::Nftables);
    mesh.stop_agent(0).unwrap();
    // The state file says `default` is ambient: the pod must not start
    // uncaptured, and says so.
    let err = mesh
        .add_pod(PodSpec::new("blocked", 0))
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(err.contains("failed with code 11"), "{err}");
    assert!(err.contains("must not start uncaptured"), "{err}");
    // As the runtime would after a failed ADD.
    let blocked = mesh.pod("blocked").clone();
    mesh.cni_runtime(0)
        .del(&mesh.pod_attachment(&blocked))
        .unwrap();
    // A pod of a namespace outside the mesh starts.
    mesh.add_pod(
        PodSpec::new("outside", 0)
            .namespace("plain")
            .follow_namespace(),
    )
    .unwrap();
    assert!(!has_capture_rule(&mesh.pod("outside").netns));

    // Without any state file the plugin cannot know: it lets the pod start,
    // and the agent enrolls it when it comes back (finding its netns by IP).
    std::fs::remove_file(mesh.state_file(0)).unwrap();
    mesh.add_pod(PodSpec::new("early", 0)).unwrap();
    assert!(!has_capture_rule(&mesh.pod("early").netns));
    mesh.start_agent(0).unwrap();
    mesh.wait_pod_ready("early", WAIT).unwrap();
    assert!(has_capture_rule(&mesh.pod("early").netns));
    assert!(
        !has_capture_rule(&mesh.pod("outside").netns),
        "opted out stays out"
    );
    let line = whoami(&mesh, "early", "server").await.unwrap();
    assert!(line.starts_with("server=server"), "{line}");
    wait_tunnelled_from(&mesh, 0, "early");
}

#[tokio::test]
async fn running_pods_follow_their_namespace_label_and_old_connections_are_reset() {
    let mut mesh = MeshBuilder::new()
        .cni()
        .capture(Capture::from_env())
        .namespace_labels("late", BTreeMap::<String, String>::new())
        .pod(PodSpec::new("a", 0).namespace("late").follow_namespace())
        .pod(PodSpec::new("b", 0).namespace("late").follow_namespace())
        .build()
        .unwrap();
    mesh.start().unwrap();
    mesh.start_app("b", app()).unwrap();
    let line = whoami(&mesh, "a", "b").await.unwrap();
    assert!(line.starts_with("server=b"), "{line}");
    for pod in ["a", "b"] {
        assert!(
            !has_capture_rule(&mesh.pod(pod).netns),
            "{pod} starts outside"
        );
    }
    // A connection made before the namespace joins the mesh.
    let mut old = mesh
        .pod("a")
        .connect(mesh.pod("b").addr(ECHO))
        .await
        .unwrap();
    old.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    old.read_exact(&mut buf).await.unwrap();

    mesh.set_namespace_labels("late", AMBIENT).unwrap();
    for pod in ["a", "b"] {
        mesh.wait_pod_ready(pod, WAIT).unwrap();
    }
    // It never went through ztunnel, so it is reset rather than left to
    // bypass mTLS and policy for as long as it lasts.
    let reset = tokio::time::timeout(IO_TIMEOUT, async {
        let _ = old.write_all(b"ping").await;
        old.read(&mut buf).await
    })
    .await
    .expect("the old connection is closed, not left hanging");
    assert!(
        matches!(reset, Ok(0) | Err(_)),
        "old connection still open: {reset:?}"
    );
    assert!(
        mesh.agent_log(0).contains("pre-mesh connections reset"),
        "{}",
        mesh.agent_log(0)
    );
    let mut new = mesh
        .pod("a")
        .connect(mesh.pod("b").addr(ECHO))
        .await
        .unwrap();
    new.write_all(b"pong").await.unwrap();
    new.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    // ztunnel logs a connection when it ends: a short one shows the path.
    let line = whoami(&mesh, "a", "b").await.unwrap();
    assert!(line.starts_with("server=b"), "{line}");
    wait_tunnelled_from(&mesh, 0, "a");

    // Label gone: released; ztunnel closes what it carried.
    mesh.set_namespace_labels("late", BTreeMap::<String, String>::new())
        .unwrap();
    for pod in ["a", "b"] {
        mesh.wait_pod_not_listening(pod, WAIT).unwrap();
    }
    poll_until(WAIT, "capture removed from a", || {
        Ok(!has_capture_rule(&mesh.pod("a").netns))
    })
    .unwrap();
    let closed = tokio::time::timeout(IO_TIMEOUT, new.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
    let mut direct = mesh
        .pod("a")
        .connect(mesh.pod("b").addr(ECHO))
        .await
        .unwrap();
    direct.write_all(b"done").await.unwrap();
    direct.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"done");
}

#[tokio::test]
async fn an_agent_restart_recovers_pods_from_their_netns_without_touching_them() {
    let mut mesh = mesh_with_server(Capture::from_env());
    mesh.add_pod(PodSpec::new("client", 0)).unwrap();
    let mut conn = mesh
        .pod("client")
        .connect(mesh.pod("server").addr(ECHO))
        .await
        .unwrap();
    let mut buf = [0u8; 4];
    conn.write_all(b"one!").await.unwrap();
    conn.read_exact(&mut buf).await.unwrap();
    let installs_before = mesh.agent_log(0).matches("capture installed").count();

    mesh.restart_agent(0).unwrap();
    poll_until(WAIT, "the restarted agent to serve the pods again", || {
        let log = mesh.agent_log(0);
        Ok(log.matches("node agent started").count() == 2
            && log.rsplit("node agent started").next().is_some_and(|tail| {
                tail.contains("pod enrolled") && tail.matches("pod enrolled").count() >= 2
            }))
    })
    .unwrap();
    let log = mesh.agent_log(0);
    assert_eq!(
        log.matches("capture installed").count(),
        installs_before,
        "nothing re-installed:\n{log}"
    );
    assert!(!log.contains("pre-mesh connections reset"), "{log}");
    // The mesh connection made before the restart lives on.
    conn.write_all(b"two!").await.unwrap();
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"two!");
    // And the agent knows the pods again: CHECK passes, DEL cleans.
    let client = mesh.pod("client").clone();
    mesh.cni_runtime(0)
        .check(&mesh.pod_attachment(&client))
        .unwrap();
    mesh.remove_pod("client").unwrap();
    assert!(mesh.try_pod("client").is_none());
}

#[tokio::test]
async fn the_plugin_goes_back_into_a_rewritten_chain() {
    let mut mesh = mesh_with_server(Capture::Nftables);
    assert!(mesh.cni_bin_dir(0).join("amesh-cni").exists());
    let conf_dir = mesh.cni_conf_dir(0);
    let file = only_file(&conf_dir);
    // The primary CNI rewrites its config, as Calico or Flannel do.
    let mut rewritten: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let plugins = rewritten["plugins"].as_array_mut().unwrap();
    plugins.retain(|p| p["type"] != "amesh-cni");
    assert_eq!(plugins.len(), 1);
    amesh_tests::harness::write_atomic(&file, &serde_json::to_string_pretty(&rewritten).unwrap())
        .unwrap();
    mesh.wait_plugin_installed(0).unwrap();
    // And a pod added now is captured.
    mesh.add_pod(PodSpec::new("later", 0)).unwrap();
    assert!(has_capture_rule(&mesh.pod("later").netns));
}

#[tokio::test]
async fn a_host_network_pod_is_never_captured() {
    let mesh = mesh_with_server(Capture::Nftables);
    let node = mesh.node(0).clone();
    let before = nft_ruleset(&node.netns);
    // A hostNetwork pod in the ambient namespace, with the node's address.
    let extra = format!(
        "  - {{uid: default/hostpod, name: hostpod, namespace: default, node: node-0, \
         ips: [{}], hostNetwork: true}}\n",
        node.underlay_ip
    );
    let config = mesh
        .render_config()
        .replacen("workloads:\n", &format!("workloads:\n{extra}"), 1);
    mesh.write_config_text(&config).unwrap();
    poll_until(
        WAIT,
        "the state file to list the hostNetwork pod as out",
        || {
            let state = std::fs::read_to_string(mesh.state_file(0)).unwrap_or_default();
            Ok(state.contains("\"default/hostpod\": \"out\""))
        },
    )
    .unwrap();
    assert_eq!(
        nft_ruleset(&node.netns),
        before,
        "the node's ruleset is untouched"
    );
    assert!(!has_capture_rule(&node.netns));
    assert!(
        !mesh.agent_log(0).contains("hostpod"),
        "{}",
        mesh.agent_log(0)
    );
}

#[apply(backends)]
#[tokio::test]
async fn uninstall_leaves_the_node_as_it_was(capture: Capture) {
    let mesh = MeshBuilder::new()
        .cni()
        .capture(capture)
        .namespace_labels("default", AMBIENT)
        .pod(PodSpec::new("server", 0))
        .build()
        .unwrap();
    uninstall_restores(mesh);
}

/// An agent on the control plane has no config file: uninstall works from
/// its record of enrolled pods alone.
#[tokio::test]
async fn uninstall_without_a_config_file_on_the_control_plane() {
    let mesh = MeshBuilder::new()
        .control_plane()
        .namespace_labels("default", AMBIENT)
        .pod(PodSpec::new("server", 0))
        .build()
        .unwrap();
    uninstall_restores(mesh);
}

fn uninstall_restores(mut mesh: amesh_tests::harness::Mesh) {
    let node = mesh.node(0).netns.clone();
    let before = NodeView::take(&mesh, &node);
    mesh.start().unwrap();
    mesh.add_pod(PodSpec::new("client", 0)).unwrap();
    assert!(has_capture_rule(&mesh.pod("client").netns));
    assert_ne!(NodeView::take(&mesh, &node), before, "installed");

    // An operator removing the mesh: the agent stops, uninstall runs.
    mesh.stop_agent(0).unwrap();
    mesh.stop_ztunnel(0).unwrap();
    let agent = binary(AGENT_BIN).unwrap();
    let args = mesh.uninstall_args(0).unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_in(
        &node,
        agent.to_str().unwrap(),
        &args,
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(NodeView::take(&mesh, &node), before);
    for pod in ["server", "client"] {
        let netns = &mesh.pod(pod).netns;
        assert!(!has_capture_rule(netns), "{pod} released");
        assert!(!nft_ruleset(netns).contains("amesh"), "{pod} released");
    }
    assert!(
        !mesh.agent_state_dir(0).exists(),
        "the agent's state is gone"
    );
}

/// What uninstall must restore: the CNI dirs byte for byte, the node's
/// nftables ruleset, and the eBPF pins.
#[derive(Debug, PartialEq, Eq)]
struct NodeView {
    cni_files: BTreeMap<PathBuf, Vec<u8>>,
    ruleset: String,
    pins: bool,
}

impl NodeView {
    fn take(mesh: &Mesh, node: &str) -> Self {
        let mut cni_files = BTreeMap::new();
        for dir in [mesh.cni_conf_dir(0), mesh.cni_bin_dir(0)] {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                cni_files.insert(entry.path(), std::fs::read(entry.path()).unwrap());
            }
        }
        Self {
            cni_files,
            ruleset: nft_ruleset(node),
            pins: mesh.bpf_pin_dir(0).exists(),
        }
    }
}

fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}
