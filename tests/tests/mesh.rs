//! End to end: ztunnel and the node agent as real processes, pods as network
//! namespaces, capture by nftables or eBPF in each pod (every test runs with
//! both), HBONE between nodes.
//!
//! Needs root (network namespaces, nftables), as CI has. Every test builds
//! its own mesh; dropping it removes everything, also on failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;

use cases::backends;
use rstest_reuse::apply;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use amesh_tests::harness::{
    AppSpec, Capture, Mesh, MeshBuilder, PodSpec, ServiceSpec, cpu_seconds, poll_until,
};
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WHOAMI: u16 = 7000;
const ECHO: u16 = 7001;
const HTTP: u16 = 7080;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_SOURCE: &str = "169.254.7.127";

fn app() -> AppSpec {
    AppSpec::default().whoami(WHOAMI).echo(ECHO).http(HTTP)
}

fn identity(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
}

/// Connects from `pod` to `addr` and reads the app's whoami line.
async fn whoami(mesh: &Mesh, pod: &str, addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = mesh.pod(pod).connect(addr).await?;
    let mut line = String::new();
    tokio::time::timeout(IO_TIMEOUT, stream.read_to_string(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "whoami timed out"))??;
    Ok(line)
}

/// The `peer=` IP and `server=` name of a whoami line.
fn parse_whoami(line: &str) -> (String, String) {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .to_owned()
    };
    let peer = field("peer=");
    let ip = peer
        .rsplit_once(':')
        .map(|(ip, _)| ip.to_owned())
        .unwrap_or(peer);
    (field("server="), ip)
}

/// Waits until `node`'s ztunnel log has a line containing every needle.
fn wait_ztunnel_log(mesh: &Mesh, node: usize, needles: &[&str]) {
    let found = poll_until(
        LOG_TIMEOUT,
        format!("ztunnel log line with {needles:?}"),
        || {
            Ok(mesh
                .ztunnel_log(node)
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n))))
        },
    );
    if let Err(err) = found {
        panic!("{err}\n{}", mesh.daemon_logs(node));
    }
}

fn pod(name: &str, node: usize) -> PodSpec {
    PodSpec::new(name, node).service_account(name)
}

/// Two nodes, a mesh pod `client` on node 0.
fn two_nodes_with_client(capture: Capture) -> MeshBuilder {
    MeshBuilder::new()
        .capture(capture)
        .nodes(2)
        .pod(pod("client", 0))
}

fn start(builder: MeshBuilder, apps: &[&str]) -> Mesh {
    let mut mesh = builder.build().expect("mesh builds");
    mesh.start().expect("mesh daemons start");
    for name in apps {
        mesh.start_app(name, app()).expect("app starts");
    }
    mesh
}

#[apply(backends)]
#[tokio::test]
async fn pod_to_pod_on_one_node_and_across_nodes_goes_over_hbone(#[case] capture: Capture) {
    let mesh = start(
        two_nodes_with_client(capture)
            .pod(pod("near", 0))
            .pod(pod("far", 1)),
        &["near", "far"],
    );
    let client_ip = mesh.pod("client").ip.to_string();
    for (target, node) in [("near", 0), ("far", 1)] {
        let line = whoami(&mesh, "client", mesh.pod(target).addr(WHOAMI))
            .await
            .unwrap_or_else(|e| panic!("client -> {target}: {e}\n{}", mesh.daemon_logs(node)));
        let (server, peer) = parse_whoami(&line);
        assert_eq!(server, target);
        assert_eq!(peer, client_ip, "the app sees the client pod's IP");
        // The destination ztunnel authenticated the client over mutual TLS.
        let dst = mesh.pod(target).addr(WHOAMI).to_string();
        wait_ztunnel_log(
            &mesh,
            node,
            &[
                "direction=\"inbound\"",
                "protocol=\"HBONE\"",
                &format!("src.identity={}", identity("client")),
                &format!("dst.addr={dst}"),
            ],
        );
        // And the source ztunnel tunnelled it, expecting the server's identity.
        wait_ztunnel_log(
            &mesh,
            0,
            &[
                "direction=\"outbound\"",
                "protocol=\"HBONE\"",
                &format!("dst.identity=\"{}\"", identity(target)),
            ],
        );
    }
}

#[apply(backends)]
#[tokio::test]
async fn the_app_sees_the_address_it_dialled_and_the_server_sees_the_client(
    #[case] capture: Capture,
) {
    let mesh = start(
        two_nodes_with_client(capture)
            .pod(pod("near", 0))
            .pod(pod("far", 1)),
        &["near", "far"],
    );
    let client = mesh.pod("client").clone();
    for target in ["near", "far"] {
        let server = mesh.pod(target);
        for dst in [server.addr(WHOAMI), server.addr6(WHOAMI)] {
            let mut stream = client.connect(dst).await.unwrap();
            // getpeername: what the app dialled, not ztunnel's listener.
            assert_eq!(
                stream.peer_addr().unwrap(),
                dst,
                "peer address seen by the app"
            );
            let local = stream.local_addr().unwrap().ip();
            let expected_local: std::net::IpAddr = if dst.is_ipv4() {
                client.ip.into()
            } else {
                client.ip6().into()
            };
            assert_eq!(local, expected_local, "the app's own address");
            let mut line = String::new();
            tokio::time::timeout(IO_TIMEOUT, stream.read_to_string(&mut line))
                .await
                .unwrap()
                .unwrap();
            let (name, peer) = parse_whoami(&line);
            assert_eq!(name, target);
            assert_eq!(
                peer,
                expected_local.to_string(),
                "client address seen by the server"
            );
        }
    }
}

#[apply(backends)]
#[tokio::test]
async fn service_vip_spreads_connections_across_endpoints(#[case] capture: Capture) {
    let mesh = start(
        two_nodes_with_client(capture)
            .pod(pod("echo-0", 0))
            .pod(pod("echo-1", 1))
            .service(
                ServiceSpec::new("echo")
                    .vip("10.96.0.10")
                    .port(80, WHOAMI)
                    .endpoints(["echo-0", "echo-1"]),
            ),
        &["echo-0", "echo-1"],
    );
    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..10 {
        let line = whoami(&mesh, "client", vip).await.expect("VIP answers");
        *seen.entry(parse_whoami(&line).0).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both endpoints served: {seen:?}");
    assert!(
        seen.values().all(|n| *n >= 3),
        "round robin is even: {seen:?}"
    );
    wait_ztunnel_log(
        &mesh,
        0,
        &["dst.service=\"echo.default.svc.cluster.local\""],
    );
}

#[apply(backends)]
#[tokio::test]
async fn mesh_to_non_mesh_passes_through_and_non_mesh_to_mesh_reaches_the_app(
    #[case] capture: Capture,
) {
    let mesh = start(
        two_nodes_with_client(capture)
            .pod(pod("meshed", 1))
            .pod(PodSpec::new("plain", 1).mesh(false)),
        &["meshed", "plain"],
    );
    // Mesh → non-mesh: plain TCP from the client's own IP.
    let line = whoami(&mesh, "client", mesh.pod("plain").addr(WHOAMI))
        .await
        .unwrap();
    let (server, peer) = parse_whoami(&line);
    assert_eq!(
        (server.as_str(), peer),
        ("plain", mesh.pod("client").ip.to_string())
    );
    wait_ztunnel_log(
        &mesh,
        0,
        &[
            "direction=\"outbound\"",
            "protocol=\"TCP\"",
            &format!("dst.addr={}", mesh.pod("plain").addr(WHOAMI)),
        ],
    );

    // Non-mesh → mesh: plaintext captured on 15006, delivered with the source IP kept.
    let line = whoami(&mesh, "plain", mesh.pod("meshed").addr(WHOAMI))
        .await
        .unwrap();
    let (server, peer) = parse_whoami(&line);
    assert_eq!(
        (server.as_str(), peer),
        ("meshed", mesh.pod("plain").ip.to_string())
    );
    wait_ztunnel_log(
        &mesh,
        1,
        &[
            "direction=\"inbound\"",
            "protocol=\"TCP\"",
            &format!("src.addr={}", mesh.pod("plain").ip),
        ],
    );
}

#[apply(backends)]
#[tokio::test]
async fn kubelet_probe_from_the_node_reaches_the_app_uncaptured(#[case] capture: Capture) {
    let mut mesh = start(
        MeshBuilder::new().capture(capture).pod(pod("app", 0)),
        &["app"],
    );
    let addr = mesh.pod("app").addr(WHOAMI);
    let mut stream = mesh.node(0).connect(addr).await.expect("probe connects");
    let mut line = String::new();
    tokio::time::timeout(IO_TIMEOUT, stream.read_to_string(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        parse_whoami(&line).1,
        PROBE_SOURCE,
        "probes arrive SNATed to {PROBE_SOURCE}"
    );
    // Uncaptured: it works with ztunnel gone, and ztunnel never saw it.
    mesh.kill_ztunnel(0).unwrap();
    mesh.wait_pod_not_listening("app", IO_TIMEOUT).unwrap();
    let mut stream = mesh
        .node(0)
        .connect(addr)
        .await
        .expect("probe connects without ztunnel");
    let mut line = String::new();
    tokio::time::timeout(IO_TIMEOUT, stream.read_to_string(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parse_whoami(&line).0, "app");
    assert!(
        !mesh.ztunnel_log(0).contains(PROBE_SOURCE),
        "ztunnel saw a probe"
    );
}

#[apply(backends)]
#[tokio::test]
async fn hundred_mib_each_way_arrive_intact(#[case] capture: Capture) {
    let mesh = start(
        two_nodes_with_client(capture).pod(pod("server", 1)),
        &["server"],
    );
    const TOTAL: usize = 100 * 1024 * 1024;
    let stream = mesh
        .pod("client")
        .connect(mesh.pod("server").addr(ECHO))
        .await
        .unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut hash = blake3::Hasher::new();
        let mut chunk = vec![0u8; 256 * 1024];
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(chunk.len());
            rng.fill_bytes(&mut chunk[..n]);
            hash.update(&chunk[..n]);
            wr.write_all(&chunk[..n]).await?;
            left -= n;
        }
        wr.shutdown().await?;
        std::io::Result::Ok(hash.finalize())
    });
    let reader = async {
        let mut hash = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0;
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            total += n;
        }
        std::io::Result::Ok((total, hash.finalize()))
    };
    let (received, back) = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("echo in time")
        .unwrap();
    let sent = writer.await.unwrap().unwrap();
    assert_eq!(received, TOTAL);
    assert_eq!(sent, back, "echoed bytes match what was sent");
    wait_ztunnel_log(
        &mesh,
        1,
        &[
            "direction=\"inbound\"",
            &format!("bytes_recv={TOTAL}"),
            &format!("bytes_sent={TOTAL}"),
        ],
    );
}

/// A connection attempt that must not reach the app: refused, reset, or
/// closed without the app's greeting.
async fn assert_no_app(mesh: &Mesh, from: &str, addr: SocketAddr) {
    if let Ok(line) = whoami(mesh, from, addr).await {
        assert!(
            line.is_empty(),
            "{from} reached the app around ztunnel: {line:?}"
        );
    }
}

#[apply(backends)]
#[tokio::test]
async fn ztunnel_restart_never_bypasses_capture_and_recovers_quickly(#[case] capture: Capture) {
    let mut mesh = start(
        two_nodes_with_client(capture)
            .pod(pod("server", 1))
            .pod(PodSpec::new("plain", 1).mesh(false)),
        &["server", "plain"],
    );
    let server = mesh.pod("server").addr(WHOAMI);
    assert!(whoami(&mesh, "client", server).await.is_ok());
    for node in [1, 0] {
        mesh.kill_ztunnel(node).unwrap();
        for pod in mesh
            .pods()
            .iter()
            .filter(|p| p.mesh && p.node == node)
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
        {
            mesh.wait_pod_not_listening(&pod, IO_TIMEOUT).unwrap();
        }
        // The gap: meshed and plaintext clients alike get nothing from the app.
        assert_no_app(&mesh, "client", server).await;
        if node == 1 {
            // Plaintext into the server's node is captured on 15006, and refused.
            assert_no_app(&mesh, "plain", server).await;
        } else {
            // Outbound from the client is captured too: even a non-mesh target is not reached.
            assert_no_app(&mesh, "client", mesh.pod("plain").addr(WHOAMI)).await;
        }
        let restarted = Instant::now();
        mesh.start_ztunnel(node).unwrap();
        let mut works = None;
        for _ in 0..500 {
            if whoami(&mesh, "client", server)
                .await
                .is_ok_and(|l| !l.is_empty())
            {
                works = Some(restarted.elapsed());
                break;
            }
            if restarted.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = works.unwrap_or_else(|| {
            panic!(
                "no recovery after ztunnel restart on node {node}\n{}",
                mesh.daemon_logs(node)
            )
        });
        assert!(
            took <= Duration::from_secs(2),
            "recovered after {took:?} (node {node})"
        );
    }
}

/// What capture put in the pod's netns (and, for eBPF, the agent's pins).
fn capture_state(mesh: &Mesh, pod: &str) -> String {
    let p = mesh.pod(pod);
    let stdout = |program: &str, args: &[&str]| {
        String::from_utf8_lossy(&p.run(program, args).unwrap().stdout).into_owned()
    };
    let backend = match mesh.capture() {
        Capture::Nftables => stdout("nft", &["list", "ruleset"]),
        Capture::Ebpf | Capture::Auto => {
            let cookie = amesh_tests::harness::netns::cookie(&p.netns).unwrap();
            let pin = mesh
                .bpf_pin_dir(p.node)
                .join("pods")
                .join(format!("c{cookie}"));
            format!(
                "sk_lookup link pinned: {}\ntcp_fwmark_accept={}",
                pin.exists(),
                stdout("sysctl", &["-n", "net.ipv4.tcp_fwmark_accept"]).trim()
            )
        }
    };
    format!(
        "{backend}\n{}\n{}",
        stdout("ip", &["rule", "list"]),
        stdout("ip", &["route", "list", "table", "100"])
    )
}

/// Whether `state` (from [`capture_state`]) shows the redirects in place.
fn redirects_installed(mesh: &Mesh, state: &str) -> bool {
    match mesh.capture() {
        Capture::Nftables => state.contains("15006") && state.contains("15001"),
        Capture::Ebpf | Capture::Auto => {
            state.contains("sk_lookup link pinned: true") && state.contains("tcp_fwmark_accept=1")
        }
    }
}

#[apply(backends)]
#[tokio::test]
async fn agent_restart_keeps_capture_and_adds_nothing_twice(#[case] capture: Capture) {
    let mut mesh = start(
        MeshBuilder::new()
            .capture(capture)
            .pod(pod("client", 0))
            .pod(pod("server", 0)),
        &["server"],
    );
    let before = capture_state(&mesh, "server");
    assert!(
        redirects_installed(&mesh, &before),
        "capture installed:\n{before}"
    );
    mesh.restart_agent(0).unwrap();
    // ztunnel reconnects and gets the snapshot again.
    poll_until(LOG_TIMEOUT, "second ZDS snapshot", || {
        Ok(mesh
            .ztunnel_log(0)
            .matches("node agent snapshot received")
            .count()
            >= 2)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.daemon_logs(0)));
    assert_eq!(
        capture_state(&mesh, "server"),
        before,
        "capture unchanged by the agent restart"
    );
    let enrolled = mesh.ztunnel_log(0).matches("pod enrolled").count();
    assert_eq!(
        enrolled,
        2,
        "each pod enrolled once:\n{}",
        mesh.ztunnel_log(0)
    );
    let line = whoami(&mesh, "client", mesh.pod("server").addr(WHOAMI))
        .await
        .unwrap();
    assert_eq!(parse_whoami(&line).0, "server");
}

#[apply(backends)]
#[tokio::test]
async fn removed_pod_loses_its_rules_and_listeners(#[case] capture: Capture) {
    let mut mesh = start(
        MeshBuilder::new()
            .capture(capture)
            .pod(pod("client", 0))
            .pod(pod("leaving", 0)),
        &["leaving"],
    );
    assert!(
        mesh.pod("leaving")
            .listening_ports()
            .unwrap()
            .contains(&15001)
    );
    // Out of the mesh (as when its namespace loses the ambient label): the
    // pod stays, capture and listeners go.
    mesh.set_mesh("leaving", false).unwrap();
    mesh.wait_pod_not_listening("leaving", IO_TIMEOUT).unwrap();
    poll_until(LOG_TIMEOUT, "capture removed", || {
        let state = capture_state(&mesh, "leaving");
        Ok(!redirects_installed(&mesh, &state) && !state.contains("lookup 100"))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            capture_state(&mesh, "leaving"),
            mesh.daemon_logs(0)
        )
    });
    let ports = mesh.pod("leaving").listening_ports().unwrap();
    assert!(
        !ports.contains(&15001) && !ports.contains(&15006),
        "listeners gone: {ports:?}"
    );
    wait_ztunnel_log(&mesh, 0, &["pod removed", "default/leaving"]);
    // Deleted outright: ztunnel forgets it too.
    mesh.remove_pod("client").unwrap();
    wait_ztunnel_log(&mesh, 0, &["pod removed", "default/client"]);
}

#[apply(backends)]
#[tokio::test]
async fn config_changes_apply_live_and_a_malformed_config_is_refused(#[case] capture: Capture) {
    let mut mesh = start(
        two_nodes_with_client(capture).pod(pod("server", 1)),
        &["server"],
    );
    // A valid change applies to new connections without a restart.
    mesh.add_service(
        ServiceSpec::new("web")
            .vip("10.96.0.20")
            .port(80, WHOAMI)
            .endpoints(["server"]),
    )
    .unwrap();
    let vip: SocketAddr = "10.96.0.20:80".parse().unwrap();
    let mut answered = None;
    for _ in 0..200 {
        if let Ok(line) = whoami(&mesh, "client", vip).await
            && !line.is_empty()
        {
            answered = Some(line);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        parse_whoami(&answered.expect("new service reachable")).0,
        "server"
    );

    // A malformed one is refused with file, line and field; the last good config stays.
    let good = mesh.render_config();
    let bad_line = good
        .lines()
        .position(|l| l.contains("10.244.1."))
        .expect("server IP line")
        + 1;
    let bad = good.replacen("10.244.1.", "10.244.1.999.", 1);
    mesh.write_config_text(&bad).unwrap();
    let path = mesh.config_path().display().to_string();
    for node in [0, 1] {
        wait_ztunnel_log(
            &mesh,
            node,
            &["config refused", &format!("{path}:{bad_line}:"), "ips[0]"],
        );
    }
    let line = whoami(&mesh, "client", vip)
        .await
        .expect("old config still serves");
    assert_eq!(parse_whoami(&line).0, "server");
}

#[apply(backends)]
#[tokio::test]
async fn ipv6_is_captured_and_tunnelled_like_ipv4(#[case] capture: Capture) {
    let mesh = start(
        two_nodes_with_client(capture)
            .pod(pod("server", 1))
            .pod(PodSpec::new("plain", 1).mesh(false)),
        &["server"],
    );
    let server = mesh.pod("server").addr6(WHOAMI);
    let line = whoami(&mesh, "client", server)
        .await
        .unwrap_or_else(|e| panic!("client -> server over IPv6: {e}\n{}", mesh.daemon_logs(1)));
    let (name, peer) = parse_whoami(&line);
    assert_eq!(name, "server");
    // whoami prints IPv6 peers as [addr]:port.
    let client6 = mesh.pod("client").ip6().to_string();
    assert_eq!(peer.trim_matches(|c| c == '[' || c == ']'), client6);
    wait_ztunnel_log(
        &mesh,
        1,
        &[
            "direction=\"inbound\"",
            "protocol=\"HBONE\"",
            &format!("src.identity={}", identity("client")),
            &format!("dst.addr={server}"),
        ],
    );
    // Plaintext over IPv6 is captured on the server side too.
    let line = whoami(&mesh, "plain", server).await.unwrap();
    let plain6 = mesh.pod("plain").ip6().to_string();
    assert_eq!(
        parse_whoami(&line).1.trim_matches(|c| c == '[' || c == ']'),
        plain6
    );
    wait_ztunnel_log(
        &mesh,
        1,
        &[
            "direction=\"inbound\"",
            "protocol=\"TCP\"",
            &format!("src.addr=[{plain6}]"),
        ],
    );
}

/// Dials HBONE from inside a pod's netns (a non-mesh pod: nothing captures it).
#[derive(Debug)]
struct FromPod(amesh_tests::harness::Pod);

impl amesh_core::hbone::Dialer for FromPod {
    fn dial(&self, dst: SocketAddr) -> amesh_core::hbone::DialFuture<'_> {
        Box::pin(async move { self.0.tcp_socket(dst)?.connect(dst).await })
    }
}

#[apply(backends)]
#[tokio::test]
async fn inbound_hbone_refuses_targets_that_are_not_the_pod_with_400(#[case] capture: Capture) {
    use std::sync::Arc;

    use amesh_core::certs::{CertStore, CertStoreConfig, LocalCa};
    use amesh_core::hbone::{HboneError, HbonePool, HboneRequest, PoolConfig};

    let mesh = start(
        MeshBuilder::new()
            .capture(capture)
            .nodes(2)
            .pod(pod("server", 1))
            .pod(pod("other", 1))
            .pod(PodSpec::new("prober", 0).mesh(false)),
        &["server", "other"],
    );
    // A client holding a certificate from the mesh's CA, as a peer ztunnel would.
    let ca = LocalCa::load_or_create(&mesh.ca_dir(), "cluster.local").unwrap();
    let certs = CertStore::new(Arc::new(ca), CertStoreConfig::default());
    let me: amesh_core::Identity = identity("prober").parse().unwrap();
    let cert = certs.get(&me).await.unwrap();
    let server = mesh.pod("server");
    let request = |target: SocketAddr| HboneRequest {
        source: cert.clone(),
        source_ip: mesh.pod("prober").ip.into(),
        hbone_addr: server.addr(15008),
        expected: identity("server").parse().unwrap(),
        target,
        dialer: Some(Arc::new(FromPod(mesh.pod("prober").clone()))),
    };
    let pool = HbonePool::new(PoolConfig::default());

    let mut ok = pool
        .connect(request(server.addr(WHOAMI)))
        .await
        .expect("the pod itself: 200");
    let mut line = String::new();
    ok.read_to_string(&mut line).await.unwrap();
    assert_eq!(parse_whoami(&line).0, "server");

    for bad in [
        mesh.pod("other").addr(WHOAMI),
        server.addr(15001),
        server.addr(15008),
    ] {
        match pool.connect(request(bad)).await {
            Err(err @ HboneError::BadTarget { .. }) => {
                assert_eq!(err.status(), Some(http::StatusCode::BAD_REQUEST))
            }
            other => panic!("target {bad}: expected 400, got {other:?}"),
        }
    }
    wait_ztunnel_log(
        &mesh,
        1,
        &["inbound HBONE refused: 400", "the target is not this pod"],
    );
    wait_ztunnel_log(
        &mesh,
        1,
        &["inbound HBONE refused: 400", "the target is a ztunnel port"],
    );
}

/// Both ztunnels' CPU seconds.
fn ztunnels_cpu(mesh: &Mesh) -> f64 {
    (0..2)
        .map(|n| cpu_seconds(mesh.ztunnel_pid(n).expect("ztunnel runs")).unwrap())
        .sum()
}

/// True if both ztunnels together used under 10% of a CPU over `window`
/// and no worker is runnable at its end.
fn ztunnels_idle(mesh: &Mesh, window: Duration) -> bool {
    let before = ztunnels_cpu(mesh);
    // A measuring interval, not a wait for an event.
    std::thread::sleep(window);
    let asleep = (0..2).all(|n| {
        mesh.ztunnel_pid(n)
            .is_some_and(|pid| !worker_states(pid).contains(&'R'))
    });
    asleep && ztunnels_cpu(mesh) - before < window.as_secs_f64() * 0.1
}

/// The scheduler states (`R`, `S`, …) of ztunnel `pid`'s worker threads.
fn worker_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.starts_with("worker-"))
        })
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            stat.rsplit_once(") ")?.1.chars().next()
        })
        .collect()
}

#[apply(backends)]
#[tokio::test]
async fn busy_polling_spins_only_after_work_and_carries_traffic(#[case] capture: Capture) {
    // Long enough to observe the spin after the traffic stops.
    const WINDOW: Duration = Duration::from_secs(2);
    let mesh = start(
        two_nodes_with_client(capture)
            .pod(pod("server", 1))
            .ztunnel_arg("--busy-poll-us")
            .ztunnel_arg(WINDOW.as_micros().to_string()),
        &["server"],
    );
    let idle = Duration::from_millis(300);
    poll_until(Duration::from_secs(10), "ztunnels idle after start", || {
        Ok(ztunnels_idle(&mesh, idle))
    })
    .unwrap();

    let mut stream = mesh
        .pod("client")
        .connect(mesh.pod("server").addr(ECHO))
        .await
        .unwrap();
    for i in 0..50_u8 {
        stream.write_all(&[i]).await.unwrap();
        let mut byte = [0_u8; 1];
        tokio::time::timeout(IO_TIMEOUT, stream.read_exact(&mut byte))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(byte[0], i);
    }
    // Each worker that carried the traffic keeps polling for WINDOW after
    // it: runnable (state R) although no packet is moving. Measured by state,
    // not CPU time: the spin yields to other threads, so on a busy machine
    // it may get little CPU. Without busy polling a worker sleeps (S) as
    // soon as the echo is relayed.
    for node in 0..2 {
        let pid = mesh.ztunnel_pid(node).unwrap();
        // Runnable in 10 samples in a row (~100 ms): not a passing blip.
        let mut in_a_row = 0;
        poll_until(
            WINDOW,
            format!("a busy-polling worker on node-{node}"),
            || {
                in_a_row = if worker_states(pid).contains(&'R') {
                    in_a_row + 1
                } else {
                    0
                };
                Ok(in_a_row >= 10)
            },
        )
        .unwrap();
    }
    // With the connection idle (still open), the spin stops.
    poll_until(
        Duration::from_secs(10),
        "ztunnels idle after traffic",
        || Ok(ztunnels_idle(&mesh, idle)),
    )
    .unwrap();
    drop(stream);
}

/// Bytes a writer gets into a connection whose reader never reads, before
/// its writes stop being accepted (bounded by the test's budget).
async fn bytes_accepted_before_backpressure(mesh: &Mesh, from: &str, to: SocketAddr) -> u64 {
    const CHUNK: usize = 1 << 20;
    const BUDGET: u64 = 1 << 30;
    let mut stream = mesh.pod(from).connect(to).await.unwrap();
    let chunk = vec![7u8; CHUNK];
    let mut written = 0u64;
    while written < BUDGET {
        match tokio::time::timeout(Duration::from_millis(500), stream.write(&chunk)).await {
            Ok(Ok(n)) => written += n as u64,
            Ok(Err(err)) => panic!("write failed after {written} bytes: {err}"),
            // Blocked: the path pushes back.
            Err(_) => break,
        }
    }
    written
}

#[apply(backends)]
#[tokio::test]
async fn a_reader_that_stops_reading_pushes_back_on_the_writer(#[case] capture: Capture) {
    let mesh = start(two_nodes_with_client(capture).pod(pod("server", 1)), &[]);
    // A server that accepts and never reads.
    let listener = mesh
        .pod("server")
        .bind_std(SocketAddr::from(([0, 0, 0, 0], 7100)))
        .unwrap();
    let _held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let written =
        bytes_accepted_before_backpressure(&mesh, "client", mesh.pod("server").addr(7100)).await;
    // Socket buffers, ztunnel's and the HBONE stream's windows: megabytes,
    // never the budget.
    assert!(
        written < 256 << 20,
        "{written} bytes accepted with nobody reading"
    );
}
