//! What only the eBPF capture backend has: pinned programs that the
//! explicit uninstall removes, capture scoped to enrolled pods' network
//! namespaces (one set of programs for the whole node), and `auto`
//! choosing it. The behaviour both backends share is in `mesh.rs`.
//!
//! Needs root (network namespaces, bpffs, cgroup v2), as CI has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use amesh_tests::harness::{
    AGENT_BIN, AppSpec, Capture, Mesh, MeshBuilder, PodSpec, binary, run_in,
};
use tokio::io::AsyncReadExt;

const WHOAMI: u16 = 7000;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn start(builder: MeshBuilder, apps: &[&str]) -> Mesh {
    let mut mesh = builder.build().expect("mesh builds");
    mesh.start().expect("mesh daemons start");
    for name in apps {
        mesh.start_app(name, AppSpec::default().whoami(WHOAMI))
            .expect("app starts");
    }
    mesh
}

/// The whoami line `from` gets from `addr`, or why not.
async fn whoami(mesh: &Mesh, from: &str, addr: SocketAddr) -> Result<String, String> {
    let mut stream = mesh
        .pod(from)
        .connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    match tokio::time::timeout(IO_TIMEOUT, stream.read_to_string(&mut line)).await {
        Ok(Ok(_)) if !line.is_empty() => Ok(line),
        Ok(Ok(_)) => Err("closed without a greeting".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// A mesh with its ztunnel killed: enrolled pods' connections are captured
/// into nothing, anything else goes straight through.
async fn mesh_without_ztunnel() -> Mesh {
    let mut mesh = start(
        MeshBuilder::new()
            .capture(Capture::Ebpf)
            .pod(PodSpec::new("enrolled", 0))
            .pod(PodSpec::new("outside", 0).mesh(false))
            .pod(PodSpec::new("plain", 0).mesh(false)),
        &["plain"],
    );
    let plain = mesh.pod("plain").addr(WHOAMI);
    assert!(whoami(&mesh, "enrolled", plain).await.is_ok());
    mesh.kill_ztunnel(0).unwrap();
    mesh.wait_pod_not_listening("enrolled", IO_TIMEOUT).unwrap();
    mesh
}

#[tokio::test]
async fn only_enrolled_pods_are_captured_by_the_node_wide_programs() {
    let mesh = mesh_without_ztunnel().await;
    let plain = mesh.pod("plain").addr(WHOAMI);
    let captured = whoami(&mesh, "enrolled", plain).await;
    assert!(
        captured.is_err(),
        "an enrolled pod reached an app with ztunnel down: {captured:?}"
    );
    let line = whoami(&mesh, "outside", plain).await.unwrap_or_else(|e| {
        panic!(
            "a pod outside the mesh was caught by the eBPF programs: {e}\n{}",
            mesh.daemon_logs(0)
        )
    });
    assert!(line.contains(&mesh.pod("outside").ip.to_string()), "{line}");
}

#[tokio::test]
async fn uninstall_removes_every_pin_and_capture_with_them() {
    let mut mesh = mesh_without_ztunnel().await;
    let pins = mesh.bpf_pin_dir(0);
    for pin in [
        "links/connect4",
        "links/getsockopt",
        "links/tcp_events",
        "maps/AMESH_PODS",
    ] {
        assert!(
            pins.join(pin).exists(),
            "{pin} pinned under {}",
            pins.display()
        );
    }
    let pod_links = std::fs::read_dir(pins.join("pods")).unwrap().count();
    assert_eq!(pod_links, 1, "the enrolled pod's sk_lookup link is pinned");
    // The agent would put capture back: stop it, as an operator
    // uninstalling the mesh does.
    mesh.kill_agent(0).unwrap();
    let agent = binary(AGENT_BIN).unwrap();
    let config = mesh.config_path().to_str().unwrap().to_owned();
    let pin_arg = pins.to_str().unwrap().to_owned();
    let out = run_in(
        &mesh.node(0).netns,
        agent.to_str().unwrap(),
        &["uninstall", "--config", &config, "--bpf-pin-dir", &pin_arg],
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "uninstall failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!pins.exists(), "{} removed", pins.display());
    // Nothing captures the pod any more: it reaches the app directly.
    let plain = mesh.pod("plain").addr(WHOAMI);
    let line = whoami(&mesh, "enrolled", plain)
        .await
        .unwrap_or_else(|e| panic!("still captured after uninstall: {e}"));
    assert!(
        line.contains(&mesh.pod("enrolled").ip.to_string()),
        "{line}"
    );
}

#[tokio::test]
async fn auto_chooses_ebpf_here_and_says_why() {
    let mesh = start(
        MeshBuilder::new()
            .capture(Capture::Auto)
            .pod(PodSpec::new("client", 0))
            .pod(PodSpec::new("server", 0)),
        &["server"],
    );
    let log = mesh.agent_log(0);
    assert!(
        log.contains("capture backend: eBPF (auto: the kernel has every feature it needs)"),
        "{log}"
    );
    assert!(mesh.bpf_pin_dir(0).join("links/connect4").exists());
    let line = whoami(&mesh, "client", mesh.pod("server").addr(WHOAMI))
        .await
        .unwrap();
    assert!(line.contains("server"), "{line}");
}

#[tokio::test]
async fn the_opt_in_short_circuit_carries_bytes_intact_both_ways() {
    use tokio::io::AsyncWriteExt;
    const ECHO: u16 = 7001;
    const TOTAL: usize = 32 << 20;
    let mut mesh = MeshBuilder::new()
        .capture(Capture::Ebpf)
        .agent_arg("--short-circuit")
        .agent_arg("true")
        .nodes(2)
        .pod(PodSpec::new("client", 0))
        .pod(PodSpec::new("server", 1))
        .build()
        .unwrap();
    mesh.start().unwrap();
    mesh.start_app("server", AppSpec::default().echo(ECHO))
        .unwrap();
    assert!(mesh.agent_log(0).contains("short_circuit=true"));
    let stream = mesh
        .pod("client")
        .connect(mesh.pod("server").addr(ECHO))
        .await
        .unwrap();
    let (mut rx, mut tx) = stream.into_split();
    let sent: Vec<u8> = (0..TOTAL).map(|i| (i * 31 % 251) as u8).collect();
    let expected = sent.clone();
    let writer = tokio::spawn(async move {
        tx.write_all(&sent).await.unwrap();
        tx.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(TOTAL);
    tokio::time::timeout(Duration::from_secs(60), rx.read_to_end(&mut back))
        .await
        .expect("echo within 60 s")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), TOTAL);
    assert!(back == expected, "echoed bytes differ");
}
