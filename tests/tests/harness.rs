//! The network-namespace harness itself, without the mesh daemons: topology,
//! reachability, the test app, config writing, teardown.
//!
//! Needs root (network namespaces), as CI has.

// Test helpers panic on failure: that is how a test fails.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use amesh_tests::harness::{
    AppSpec, Mesh, MeshBuilder, PodSpec, ServiceSpec, binary, is_listening, leftovers, netns,
    poll_until,
};
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WHOAMI: u16 = 7000;
const ECHO: u16 = 7001;
const HTTP: u16 = 7080;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn app() -> AppSpec {
    AppSpec::default().whoami(WHOAMI).echo(ECHO).http(HTTP)
}

/// Connects from `pod` to `addr` and reads the whoami line.
async fn whoami(mesh: &Mesh, pod: &str, addr: SocketAddr) -> String {
    let mut stream = mesh.pod(pod).connect(addr).await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(IO_TIMEOUT, stream.read_to_string(&mut line))
        .await
        .expect("whoami answers in time")
        .unwrap();
    line
}

fn stdout_of(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_on_one_node_and_across_nodes() {
    let mut mesh = MeshBuilder::new()
        .nodes(2)
        .pod(
            PodSpec::new("server", 0)
                .service_account("server")
                .label("app", "server"),
        )
        .pod(PodSpec::new("near", 0))
        .pod(PodSpec::new("far", 1).mesh(false))
        .build()
        .unwrap();
    mesh.start_app("server", app()).unwrap();
    let server = mesh.pod("server").clone();
    assert_eq!(server.ip.to_string(), "10.244.0.2");
    assert_eq!(mesh.pod("near").ip.to_string(), "10.244.0.3");
    assert_eq!(mesh.pod("far").ip.to_string(), "10.244.1.2");
    assert_eq!(mesh.node(1).underlay_ip.to_string(), "10.0.0.2");

    // Across nodes: the app sees the client pod's own address.
    let line = whoami(&mesh, "far", server.addr(WHOAMI)).await;
    assert!(line.starts_with("server=server peer=10.244.1.2:"), "{line}");
    assert!(line.ends_with('\n'));
    // Same node, through cni0.
    let line = whoami(&mesh, "near", server.addr(WHOAMI)).await;
    assert!(line.starts_with("server=server peer=10.244.0.3:"), "{line}");

    // Echo, half-closed by the client: everything comes back, then EOF.
    let mut stream = mesh.pod("far").connect(server.addr(ECHO)).await.unwrap();
    stream.write_all(b"ping over the fabric").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, b"ping over the fabric");

    // HTTP/1.1 from the other node's netns (source: its underlay address)
    // and from the own node (source: the cni0 gateway).
    let url = format!("http://{}/", server.addr(HTTP));
    let body = stdout_of(mesh.node(1).run("curl", &["-sS", "-m", "5", &url]).unwrap());
    assert!(body.starts_with("server=server peer=10.0.0.2:"), "{body}");
    let body = stdout_of(mesh.node(0).run("curl", &["-sS", "-m", "5", &url]).unwrap());
    assert!(body.starts_with("server=server peer=10.244.0.1:"), "{body}");
    // h2c with prior knowledge, from a pod.
    let body = stdout_of(
        mesh.pod("far")
            .run(
                "curl",
                &[
                    "-sS",
                    "-m",
                    "5",
                    "--http2-prior-knowledge",
                    "-o",
                    "-",
                    "-w",
                    "%{http_version}",
                    &url,
                ],
            )
            .unwrap(),
    );
    assert!(body.starts_with("server=server peer=10.244.1.2:"), "{body}");
    assert!(body.ends_with("\n2"), "HTTP/2 was used: {body}");

    // Sysctls the benchmarks rely on.
    let far = mesh.pod("far");
    assert_eq!(
        netns::sysctl(&far.netns, "net.ipv4.tcp_tw_reuse").unwrap(),
        "1"
    );
    assert_eq!(
        netns::sysctl(&far.netns, "net.ipv4.ip_local_port_range").unwrap(),
        "1024\t65000"
    );
    assert_eq!(
        netns::sysctl(&mesh.node(0).netns, "net.ipv4.ip_forward").unwrap(),
        "1"
    );
    assert!(server.listening_ports().unwrap().contains(&WHOAMI));
    // The pod's app is not listening in the node netns.
    assert!(!mesh.node(0).listening_ports().unwrap().contains(&WHOAMI));
}

#[test]
fn config_file_follows_pods_and_services() {
    let mut mesh = MeshBuilder::new()
        .nodes(2)
        .pod(
            PodSpec::new("client", 0)
                .service_account("client")
                .label("app", "client"),
        )
        .pod(PodSpec::new("echo-0", 0))
        .pod(PodSpec::new("echo-1", 1))
        .pod(PodSpec::new("legacy", 1).mesh(false).namespace("old"))
        .service(
            ServiceSpec::new("echo")
                .vip("10.96.0.10")
                .port(80, 8080)
                .endpoints(["echo-0", "echo-1"]),
        )
        .build()
        .unwrap();
    let read = |mesh: &Mesh| std::fs::read_to_string(mesh.config_path()).unwrap();
    let config = read(&mesh);
    let client_entry = format!(
        "  - uid: default/client\n    name: client\n    namespace: default\n    serviceAccount: client\n    \
         node: node-0\n    ips: [10.244.0.2, fd00:10:244::2]\n    labels: {{app: client}}\n    protocol: HBONE\n    netns: {}client\n",
        mesh.prefix()
    );
    assert!(config.contains(&client_entry), "{config}");
    assert!(config.contains("  - uid: old/legacy\n"), "{config}");
    assert!(config.contains("    protocol: TCP\n"), "{config}");
    assert!(config.contains(
        "    hostname: echo.default.svc.cluster.local\n    vips: [10.96.0.10]\n    \
         ports: [{port: 80, targetPort: 8080}]\n    endpoints: [default/echo-0, default/echo-1]\n"
    ));

    // Removing a pod: out of the workloads and the service, netns gone.
    let echo1_netns = mesh.pod("echo-1").netns.clone();
    mesh.remove_pod("echo-1").unwrap();
    let config = read(&mesh);
    assert!(!config.contains("echo-1"), "{config}");
    assert!(config.contains("endpoints: [default/echo-0]"), "{config}");
    assert!(!Path::new("/var/run/netns").join(&echo1_netns).exists());

    // Adding one: a fresh address (never reused), reachable at once.
    let pod = mesh.add_pod(PodSpec::new("late", 1)).unwrap().clone();
    assert_eq!(pod.ip.to_string(), "10.244.1.4");
    assert!(read(&mesh).contains("uid: default/late"));
    let listener = pod.bind_std(pod.addr(9000)).unwrap();
    let client = mesh.pod("client");
    let _conn = client
        .connect_std(pod.addr(9000), Duration::from_secs(5))
        .unwrap();
    assert_eq!(listener.accept().unwrap().1.ip(), client.ip);

    // Arbitrary text for tests of malformed configs; the write is atomic.
    mesh.write_config_text("workloads: [\n").unwrap();
    assert_eq!(read(&mesh), "workloads: [\n");
    let stray: Vec<_> = std::fs::read_dir(mesh.dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(stray.is_empty(), "temp files left: {stray:?}");
    mesh.write_config().unwrap();
    assert!(read(&mesh).starts_with("workloads:\n  - uid: default/client\n"));

    // Bad specs are errors, not panics.
    assert!(
        MeshBuilder::new()
            .pod(PodSpec::new("x", 3))
            .build()
            .is_err()
    );
    assert!(
        MeshBuilder::new()
            .pod(PodSpec::new("x", 0))
            .pod(PodSpec::new("x", 0))
            .build()
            .is_err()
    );
    assert!(
        MeshBuilder::new()
            .service(ServiceSpec::new("s").vip("nope"))
            .build()
            .is_err()
    );
}

#[test]
fn app_processes_stop_restart_and_log() {
    let mut mesh = MeshBuilder::new()
        .pod(PodSpec::new("app", 0))
        .build()
        .unwrap();
    let first = mesh
        .start_app("app", AppSpec::default().whoami(WHOAMI))
        .unwrap();
    let netns = mesh.pod("app").netns.clone();
    let process = mesh.app_mut("app").unwrap();
    assert!(process.is_running());
    assert_eq!(process.pid(), Some(first));
    // SIGTERM: testapp exits cleanly.
    let status = process.stop(Duration::from_secs(5)).unwrap().unwrap();
    assert!(status.success(), "{status}");
    assert!(!process.is_running());
    process.restart().unwrap();
    let second = process.pid().unwrap();
    assert_ne!(first, second);
    poll_until(
        Duration::from_secs(10),
        "restarted testapp to listen",
        || is_listening(&netns, WHOAMI),
    )
    .unwrap();
    // SIGKILL: reaped, not a zombie.
    process.kill().unwrap();
    assert!(!process_exists(second));
    let log = process.log();
    assert_eq!(log.matches("testapp listening").count(), 2, "{log}");

    let err = binary("no-such-amesh-binary").unwrap_err().to_string();
    assert!(err.contains("cargo build --workspace --bins"), "{err}");
    assert!(binary("testapp").is_ok());
}

#[test]
fn dropping_the_mesh_removes_namespaces_and_processes() {
    let mut mesh = MeshBuilder::new()
        .nodes(2)
        .pod(PodSpec::new("a", 0))
        .pod(PodSpec::new("b", 1))
        .build()
        .unwrap();
    mesh.start_app("a", app()).unwrap();
    mesh.start_app("b", app()).unwrap();
    let prefix = mesh.prefix().to_string();
    let dir = mesh.dir().to_path_buf();
    let pids = mesh.pids();
    assert_eq!(pids.len(), 2);
    // fabric, 2 nodes, 2 pods.
    assert_eq!(leftovers(&prefix).len(), 5, "{:?}", leftovers(&prefix));
    drop(mesh);
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
    for pid in pids {
        assert!(!process_exists(pid), "pid {pid} survived");
    }
    assert!(!dir.exists());
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let seen: Mutex<Option<(String, Vec<u32>, PathBuf)>> = Mutex::new(None);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut mesh = MeshBuilder::new()
            .nodes(2)
            .pod(PodSpec::new("victim", 1))
            .build()
            .unwrap();
        mesh.start_app("victim", app()).unwrap();
        *seen.lock().unwrap() = Some((
            mesh.prefix().to_string(),
            mesh.pids(),
            mesh.dir().to_path_buf(),
        ));
        panic!("deliberate panic with a live mesh");
    }));
    assert!(result.is_err());
    let (prefix, pids, dir) = seen.lock().unwrap().take().unwrap();
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
    assert_eq!(pids.len(), 1);
    for pid in pids {
        assert!(!process_exists(pid), "pid {pid} survived");
    }
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_through_echo_across_nodes_intact() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 100;
    let mut mesh = MeshBuilder::new()
        .nodes(2)
        .pod(PodSpec::new("sink", 0))
        .pod(PodSpec::new("source", 1))
        .build()
        .unwrap();
    mesh.start_app("sink", AppSpec::default().echo(ECHO))
        .unwrap();
    let stream = mesh
        .pod("source")
        .connect(mesh.pod("sink").addr(ECHO))
        .await
        .unwrap();
    let (mut rx, mut tx) = stream.into_split();

    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut chunk = vec![0u8; CHUNK];
        let mut hasher = blake3::Hasher::new();
        for _ in 0..CHUNKS {
            rng.fill_bytes(&mut chunk);
            hasher.update(&chunk);
            tx.write_all(&chunk).await.unwrap();
        }
        tx.shutdown().await.unwrap();
        hasher.finalize()
    });
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut hasher = blake3::Hasher::new();
        let mut total = 0usize;
        loop {
            let n = rx.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n;
        }
        (total, hasher.finalize())
    });
    let (sent, (received, got)) = tokio::time::timeout(Duration::from_secs(60), async {
        (writer.await.unwrap(), reader.await.unwrap())
    })
    .await
    .expect("100 MiB echoed within 60 s");
    assert_eq!(received, CHUNK * CHUNKS);
    assert_eq!(sent, got, "echoed bytes differ");
    eprintln!("100 MiB echoed across nodes in {:?}", started.elapsed());
}

#[test]
fn twenty_pods_build_quickly() {
    let started = Instant::now();
    let mesh = MeshBuilder::new()
        .nodes(2)
        .pods((0..20).map(|i| PodSpec::new(format!("p{i}"), i % 2)))
        .build()
        .unwrap();
    let built = started.elapsed();
    let last = mesh.pod("p19");
    // A pod on node 1 reaches one on node 0.
    let first = mesh.pod("p0").clone();
    let listener = first.bind_std(first.addr(9000)).unwrap();
    let conn = last
        .connect_std(first.addr(9000), Duration::from_secs(5))
        .unwrap();
    let (_accepted, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), last.ip);
    drop(conn);
    let prefix = mesh.prefix().to_string();
    drop(mesh);
    eprintln!(
        "2 nodes, 20 pods: built in {built:?}, whole test {:?}",
        started.elapsed()
    );
    // Generous against a loaded CI machine; typically well under 1 s.
    assert!(built < Duration::from_secs(10), "build took {built:?}");
    assert!(leftovers(&prefix).is_empty());
}

#[test]
fn namespaces_of_dead_processes_are_removed_on_build() {
    // A pid above pid_max can never be alive: its namespaces are stale.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Unique per test process (the counter part carries our pid): another
    // test binary running at once may delete it (rightly) but never re-adds it.
    let stale = format!("amt{}x{}-stale", pid_max + 1, std::process::id());
    netns::add_all(std::slice::from_ref(&stale)).unwrap();
    let mesh = MeshBuilder::new().build().unwrap();
    assert!(leftovers(&stale).is_empty(), "stale netns survived a build");
    // Our own (live) mesh is untouched.
    assert_eq!(leftovers(mesh.prefix()).len(), 2);
}
