//! The `amesh-cni` binary run as a runtime runs it (env + stdin), against
//! an in-test stand-in for the node agent's socket.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use amesh_cni::cni::protocol::{
    Attachment, ErrorReply, PodAttachment, PodRef, Reply, Request, codes,
};
use amesh_cni::cni::state::{NodeState, PodMode, STATE_VERSION};
use serde_json::{Value, json};
use socket2::{Domain, SockAddr, Socket, Type};
use tempfile::TempDir;

/// Bounds every wait of the stand-in agent, so a plugin that never
/// connects fails the test instead of hanging it.
const AGENT_TIMEOUT: Duration = Duration::from_secs(20);

const POD_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u-1";

/// What the stand-in does after reading the request line.
enum Script {
    Reply(Reply),
    /// Close without replying.
    Close,
}

/// One accepted connection; joins to the request line it read (`None`
/// when no plugin connected within [`AGENT_TIMEOUT`]).
struct Agent(JoinHandle<Option<String>>);

impl Agent {
    fn start(socket: &Path, script: Script) -> Self {
        let listener = listen(socket);
        Self(std::thread::spawn(move || {
            let (stream, _) = listener.accept().ok()?;
            stream.set_read_timeout(Some(AGENT_TIMEOUT)).ok()?;
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            if let Script::Reply(reply) = script {
                let mut out = serde_json::to_vec(&reply).ok()?;
                out.push(b'\n');
                reader.get_mut().write_all(&out).ok()?;
            }
            Some(line)
        }))
    }

    /// The request the plugin sent.
    fn request(self) -> Request {
        let line = self.0.join().unwrap().expect("the plugin never connected");
        assert!(line.ends_with('\n'), "{line:?}");
        serde_json::from_str(&line).unwrap()
    }
}

/// A listener whose `accept` gives up after [`AGENT_TIMEOUT`] (SO_RCVTIMEO
/// applies to accept on Linux).
fn listen(path: &Path) -> UnixListener {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    socket.bind(&SockAddr::unix(path).unwrap()).unwrap();
    socket.listen(8).unwrap();
    socket.set_read_timeout(Some(AGENT_TIMEOUT)).unwrap();
    UnixListener::from(OwnedFd::from(socket))
}

struct Node {
    dir: TempDir,
}

impl Node {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("cni.sock")
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join("cni-state.json")
    }

    fn agent(&self, script: Script) -> Agent {
        Agent::start(&self.socket(), script)
    }

    /// `shop` is ambient; `misc/special` is ambient on its own.
    fn write_state(&self) {
        NodeState {
            version: STATE_VERSION,
            node: "n1".into(),
            mesh_namespace: "amesh-system".into(),
            ambient_namespaces: BTreeSet::from(["shop".to_owned()]),
            pods: BTreeMap::from([("misc/special".to_owned(), PodMode::Ambient)]),
        }
        .write(&self.state_file())
        .unwrap();
    }

    /// The network config as the runtime passes it to the chained plugin.
    fn config(&self, version: &str, prev_result: Option<Value>) -> String {
        let mut config = json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "amesh-cni",
            "socket": self.socket(),
            "stateFile": self.state_file(),
            "addTimeoutSecs": 10,
            "logLevel": "debug",
            "runtimeConfig": {"portMappings": []},
            "someFutureKey": {"x": 1},
        });
        if let Some(prev) = prev_result {
            config["prevResult"] = prev;
        }
        config.to_string()
    }
}

fn result_1_0_0() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/var/run/netns/cni-1"}
        ],
        "ips": [
            {"address": "10.244.0.5/24", "gateway": "10.244.0.1", "interface": 2},
            {"address": "fd00:10:244::5/64", "gateway": "fd00:10:244::1", "interface": 2}
        ],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    })
}

fn result_0_4_0() -> Value {
    json!({
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/cni-1"}],
        "ips": [{"version": "4", "address": "10.244.0.7/24", "gateway": "10.244.0.1", "interface": 0}],
        "dns": {}
    })
}

fn pod_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/cni-1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", POD_ARGS),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

fn without(env: &[(&'static str, &'static str)], name: &str) -> Vec<(&'static str, &'static str)> {
    env.iter().copied().filter(|(k, _)| *k != name).collect()
}

/// Runs the plugin with exactly `env` (plus CNI_COMMAND) and `stdin`.
fn plugin(command: &str, env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_amesh-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not JSON ({err}): {:?}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The error object, after checking exit status 1 and the spec's shape.
fn error_of(output: &Output) -> Value {
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(output));
    let error = stdout_json(output);
    assert!(error["cniVersion"].is_string(), "{error}");
    assert!(error["code"].is_u64(), "{error}");
    assert!(error["msg"].is_string(), "{error}");
    error
}

fn assert_passed_through(output: &Output, prev: &Value, version: &str) {
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(output));
    let mut expected = prev.clone();
    expected["cniVersion"] = json!(version);
    assert_eq!(stdout_json(output), expected);
}

fn web_pod() -> PodRef {
    PodRef {
        namespace: "shop".into(),
        name: "web".into(),
        uid: "u-1".into(),
    }
}

#[test]
fn version_lists_supported_versions() {
    let expected = json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
    let output = plugin("VERSION", &[], r#"{"cniVersion": "1.0.0"}"#);
    assert_eq!(output.status.code(), Some(0));
    let out = stdout_json(&output);
    assert_eq!(out["cniVersion"], "1.0.0");
    assert_eq!(out["supportedVersions"], expected);

    let output = plugin("VERSION", &[], "");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout_json(&output)["cniVersion"], "1.1.0");
}

#[test]
fn add_enrolled_passes_the_previous_result_through() {
    let node = Node::new();
    let agent = node.agent(Script::Reply(Reply::Enrolled));
    let prev = result_1_0_0();
    let output = plugin("ADD", &pod_env(), &node.config("1.0.0", Some(prev.clone())));
    assert_passed_through(&output, &prev, "1.0.0");
    assert_eq!(
        agent.request(),
        Request::Add(PodAttachment {
            attachment: Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            netns: "/var/run/netns/cni-1".into(),
            pod: web_pod(),
            ips: vec![
                "10.244.0.5".parse().unwrap(),
                "fd00:10:244::5".parse().unwrap()
            ],
        })
    );
}

#[test]
fn add_skipped_passes_a_0_4_0_result_through() {
    let node = Node::new();
    let agent = node.agent(Script::Reply(Reply::Skipped {
        reason: "namespace not ambient".into(),
    }));
    let prev = result_0_4_0();
    let output = plugin("ADD", &pod_env(), &node.config("0.4.0", Some(prev.clone())));
    assert_passed_through(&output, &prev, "0.4.0");
    let Request::Add(add) = agent.request() else {
        panic!("not an ADD");
    };
    assert_eq!(
        add.ips,
        vec!["10.244.0.7".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn add_relays_the_agent_error() {
    let node = Node::new();
    let agent = node.agent(Script::Reply(Reply::Error(ErrorReply::new(
        codes::CAPTURE_FAILED,
        "capture of shop/web failed",
        "nft: exit status 1",
    ))));
    let output = plugin(
        "ADD",
        &pod_env(),
        &node.config("1.1.0", Some(result_1_0_0())),
    );
    assert_eq!(
        error_of(&output),
        json!({
            "cniVersion": "1.1.0",
            "code": 102,
            "msg": "capture of shop/web failed",
            "details": "nft: exit status 1"
        })
    );
    agent.request();
}

#[test]
fn add_without_a_reply_is_try_again() {
    let node = Node::new();
    let agent = node.agent(Script::Close);
    let output = plugin(
        "ADD",
        &pod_env(),
        &node.config("1.0.0", Some(result_1_0_0())),
    );
    let error = error_of(&output);
    assert_eq!(error["code"], 11, "{error}");
    assert!(
        error["msg"].as_str().unwrap().contains("shop/web"),
        "{error}"
    );
    assert!(
        error["details"]
            .as_str()
            .unwrap()
            .contains("without a reply"),
        "{error}"
    );
    agent.request();
}

#[test]
fn add_without_agent_or_state_file_lets_the_pod_start() {
    let node = Node::new();
    let prev = result_1_0_0();
    let output = plugin("ADD", &pod_env(), &node.config("1.0.0", Some(prev.clone())));
    assert_passed_through(&output, &prev, "1.0.0");
    assert!(
        stderr(&output).contains("no state file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn add_without_agent_fails_ambient_pods() {
    let node = Node::new();
    node.write_state();
    let output = plugin(
        "ADD",
        &pod_env(),
        &node.config("1.0.0", Some(result_1_0_0())),
    );
    let error = error_of(&output);
    assert_eq!(error["code"], 11, "{error}");
    assert_eq!(error["cniVersion"], "1.0.0");
    let msg = error["msg"].as_str().unwrap();
    assert!(msg.contains("shop/web"), "{msg}");
    assert!(msg.contains(&node.socket().display().to_string()), "{msg}");
    assert!(!error["details"].as_str().unwrap().is_empty(), "{error}");
}

#[test]
fn add_without_agent_lets_non_ambient_pods_start() {
    let node = Node::new();
    node.write_state();
    let env = [
        without(&pod_env(), "CNI_ARGS"),
        vec![("CNI_ARGS", "K8S_POD_NAMESPACE=misc;K8S_POD_NAME=other")],
    ]
    .concat();
    let prev = result_1_0_0();
    let output = plugin("ADD", &env, &node.config("1.0.0", Some(prev.clone())));
    assert_passed_through(&output, &prev, "1.0.0");

    // A pod ambient on its own in a non-ambient namespace still fails.
    let env = [
        without(&pod_env(), "CNI_ARGS"),
        vec![("CNI_ARGS", "K8S_POD_NAMESPACE=misc;K8S_POD_NAME=special")],
    ]
    .concat();
    let output = plugin("ADD", &env, &node.config("1.0.0", Some(prev)));
    assert_eq!(error_of(&output)["code"], 11);
}

#[test]
fn add_without_agent_and_a_corrupt_state_file_fails() {
    let node = Node::new();
    std::fs::write(node.state_file(), "{not json").unwrap();
    let env = [
        without(&pod_env(), "CNI_ARGS"),
        vec![("CNI_ARGS", "K8S_POD_NAMESPACE=misc;K8S_POD_NAME=other")],
    ]
    .concat();
    let output = plugin("ADD", &env, &node.config("1.0.0", Some(result_1_0_0())));
    let error = error_of(&output);
    assert_eq!(error["code"], 11, "{error}");
    assert!(
        error["details"].as_str().unwrap().contains("is not valid"),
        "{error}"
    );
}

#[test]
fn add_needs_a_previous_result() {
    let node = Node::new();
    let output = plugin("ADD", &pod_env(), &node.config("1.0.0", None));
    let error = error_of(&output);
    assert_eq!(error["code"], 7, "{error}");
    assert!(
        error["msg"].as_str().unwrap().contains("chained"),
        "{error}"
    );
}

#[test]
fn malformed_stdin_is_code_6() {
    let output = plugin("ADD", &pod_env(), "{\"cniVersion\": \"1.0.0\",");
    let error = error_of(&output);
    assert_eq!(error["code"], 6, "{error}");
    assert_eq!(error["cniVersion"], "1.1.0");
}

#[test]
fn unknown_version_is_code_1() {
    let node = Node::new();
    let output = plugin(
        "ADD",
        &pod_env(),
        &node.config("9.9.9", Some(result_1_0_0())),
    );
    let error = error_of(&output);
    assert_eq!(error["code"], 1, "{error}");
    let msg = error["msg"].as_str().unwrap();
    assert!(msg.contains("9.9.9") && msg.contains("1.1.0"), "{msg}");
}

#[test]
fn missing_container_id_is_code_4() {
    let node = Node::new();
    let env = without(&pod_env(), "CNI_CONTAINERID");
    let output = plugin("ADD", &env, &node.config("1.0.0", Some(result_1_0_0())));
    let error = error_of(&output);
    assert_eq!(error["code"], 4, "{error}");
    assert!(
        error["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{error}"
    );
}

#[test]
fn missing_pod_name_is_code_4() {
    let node = Node::new();
    let env = [
        without(&pod_env(), "CNI_ARGS"),
        vec![("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop")],
    ]
    .concat();
    let output = plugin("ADD", &env, &node.config("1.0.0", Some(result_1_0_0())));
    let error = error_of(&output);
    assert_eq!(error["code"], 4, "{error}");
    assert!(
        error["msg"].as_str().unwrap().contains("K8S_POD_NAME"),
        "{error}"
    );
}

#[test]
fn del_without_netns_or_agent_succeeds_silently() {
    let node = Node::new();
    node.write_state();
    let env = [without(&pod_env(), "CNI_NETNS"), vec![("CNI_NETNS", "")]].concat();
    let output = plugin("DEL", &env, &node.config("1.0.0", None));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
}

#[test]
fn del_reaches_the_agent_with_what_it_has() {
    let node = Node::new();
    let agent = node.agent(Script::Reply(Reply::Ok));
    let env = [("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")];
    let output = plugin("DEL", &env, &node.config("1.1.0", None));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(output.stdout.is_empty());
    assert_eq!(
        agent.request(),
        Request::Del(PodAttachment {
            attachment: Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            netns: PathBuf::new(),
            pod: PodRef {
                namespace: String::new(),
                name: String::new(),
                uid: String::new(),
            },
            ips: Vec::new(),
        })
    );
}

#[test]
fn check_relays_the_agent_error() {
    let node = Node::new();
    let agent = node.agent(Script::Reply(Reply::Error(ErrorReply::new(
        codes::CAPTURE_DRIFT,
        "pod shop/web: capture rules missing",
        "",
    ))));
    let output = plugin(
        "CHECK",
        &pod_env(),
        &node.config("1.0.0", Some(result_1_0_0())),
    );
    let error = error_of(&output);
    assert_eq!(error["code"], 100, "{error}");
    assert_eq!(error["msg"], "pod shop/web: capture rules missing");
    assert!(matches!(agent.request(), Request::Check(_)));
}

#[test]
fn check_succeeds_when_the_agent_says_ok() {
    let node = Node::new();
    let agent = node.agent(Script::Reply(Reply::Ok));
    let output = plugin(
        "CHECK",
        &pod_env(),
        &node.config("1.0.0", Some(result_1_0_0())),
    );
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(output.stdout.is_empty());
    agent.request();
}

#[test]
fn check_without_agent_fails_ambient_pods_only() {
    let node = Node::new();
    node.write_state();
    let output = plugin(
        "CHECK",
        &pod_env(),
        &node.config("1.0.0", Some(result_1_0_0())),
    );
    assert_eq!(error_of(&output)["code"], 11);
    let env = [
        without(&pod_env(), "CNI_ARGS"),
        vec![("CNI_ARGS", "K8S_POD_NAMESPACE=misc;K8S_POD_NAME=other")],
    ]
    .concat();
    let output = plugin("CHECK", &env, &node.config("1.0.0", Some(result_1_0_0())));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
}

#[test]
fn status_needs_1_1_0() {
    let node = Node::new();
    let output = plugin("STATUS", &[], &node.config("1.0.0", None));
    let error = error_of(&output);
    assert_eq!(error["code"], 1, "{error}");
    assert!(error["msg"].as_str().unwrap().contains("STATUS"), "{error}");
}

#[test]
fn status_succeeds_without_agent_and_fails_with_50_on_its_error() {
    let node = Node::new();
    let output = plugin("STATUS", &[], &node.config("1.1.0", None));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(output.stdout.is_empty());

    let agent = node.agent(Script::Reply(Reply::Error(ErrorReply::new(
        codes::TRY_AGAIN_LATER,
        "config not loaded yet",
        "",
    ))));
    let output = plugin("STATUS", &[], &node.config("1.1.0", None));
    let error = error_of(&output);
    assert_eq!(error["code"], 50, "{error}");
    assert!(
        error["msg"]
            .as_str()
            .unwrap()
            .contains("config not loaded yet"),
        "{error}"
    );
    assert_eq!(agent.request(), Request::Status);
}

#[test]
fn gc_forwards_the_valid_attachments() {
    let node = Node::new();
    let agent = node.agent(Script::Reply(Reply::Ok));
    let mut config: Value = serde_json::from_str(&node.config("1.1.0", None)).unwrap();
    config["cni.dev/valid-attachments"] = json!([
        {"containerID": "c1", "ifname": "eth0"},
        {"containerID": "c2", "ifname": "eth0"}
    ]);
    config["cni.dev/attachments"] = config["cni.dev/valid-attachments"].clone();
    let output = plugin("GC", &[("CNI_PATH", "/opt/cni/bin")], &config.to_string());
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(output.stdout.is_empty());
    let attachment = |id: &str| Attachment {
        container_id: id.into(),
        ifname: "eth0".into(),
    };
    assert_eq!(
        agent.request(),
        Request::Gc {
            valid: vec![attachment("c1"), attachment("c2")]
        }
    );

    let output = plugin("GC", &[], &node.config("1.0.0", None));
    assert_eq!(error_of(&output)["code"], 1);
}

#[test]
fn logs_go_to_the_log_file() {
    let node = Node::new();
    let log = node.dir.path().join("amesh-cni.log");
    let mut config: Value =
        serde_json::from_str(&node.config("1.0.0", Some(result_1_0_0()))).unwrap();
    config["logFile"] = json!(log);
    let output = plugin("ADD", &pod_env(), &config.to_string());
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(output.stderr.is_empty(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("no state file") && text.contains("c1"),
        "{text}"
    );
}
