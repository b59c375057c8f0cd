//! The control plane end to end: `amesh-control-plane` on the folder
//! source in the fabric netns; ztunnels and node agents get their config
//! over delta xDS and their certificates from its CA. Editing a file of the
//! folder changes what ztunnel enforces within a second.
//!
//! Needs root (network namespaces, capture), as CI has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use amesh_tests::harness::{AppSpec, Mesh, MeshBuilder, PodSpec, poll_until};
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

const WHOAMI: u16 = 7000;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound on a folder edit reaching enforcement.
const POLICY_DEADLINE: Duration = Duration::from_secs(1);
const AMBIENT: [(&str, &str); 1] = [("istio.io/dataplane-mode", "ambient")];

const DENY_CLIENT: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: production}
spec:
  action: DENY
  rules:
    - from: [{source: {principals: [cluster.local/ns/production/sa/client]}}]
";

fn mesh() -> Mesh {
    let mut mesh = MeshBuilder::new()
        .control_plane()
        .nodes(2)
        .namespace_labels("production", AMBIENT)
        .pod(
            PodSpec::new("client", 0)
                .namespace("production")
                .service_account("client")
                .follow_namespace(),
        )
        .pod(
            PodSpec::new("server", 1)
                .namespace("production")
                .service_account("server")
                .follow_namespace(),
        )
        .build()
        .unwrap();
    mesh.start()
        .unwrap_or_else(|e| panic!("{e:#}\n--- control plane ---\n{}", mesh.control_plane_log()));
    mesh.start_app("server", AppSpec::default().whoami(WHOAMI))
        .unwrap();
    mesh
}

/// Whether `client` gets the server's whoami greeting.
async fn reaches(mesh: &Mesh) -> bool {
    let addr = mesh.pod("server").addr(WHOAMI);
    let Ok(Ok(mut stream)) = timeout(IO_TIMEOUT, mesh.pod("client").connect(addr)).await else {
        return false;
    };
    let mut line = String::new();
    matches!(
        timeout(IO_TIMEOUT, stream.read_to_string(&mut line)).await,
        Ok(Ok(_))
    ) && line.contains("server=server")
}

/// Polls (bounded by `POLICY_DEADLINE`) until `reaches` is `want`; returns
/// how long it took.
async fn until_reaches(mesh: &Mesh, want: bool) -> Duration {
    let start = Instant::now();
    let mut attempts = 0;
    while start.elapsed() < POLICY_DEADLINE && attempts < 200 {
        attempts += 1;
        if reaches(mesh).await == want {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "client {} the server within {POLICY_DEADLINE:?} of the edit\n--- control plane ---\n{}\n--- node-1 ---\n{}",
        if want {
            "did not reach"
        } else {
            "still reached"
        },
        mesh.control_plane_log(),
        mesh.daemon_logs(1)
    );
}

fn metric(mesh: &Mesh, name: &str) -> f64 {
    let body = mesh
        .node(0)
        .http_get(mesh.control_plane_metrics_addr(), "/metrics")
        .unwrap()
        .body;
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn folder_edits_are_enforced_by_ztunnel_within_a_second() {
    let mesh = mesh();
    assert!(reaches(&mesh).await, "mesh traffic before any policy");
    // Both ztunnels hold certificates the control plane's CA issued.
    poll_until(
        Duration::from_secs(10),
        "certificates issued by the control plane",
        || Ok(metric(&mesh, "citadel_server_success_cert_issuance_count") >= 2.0),
    )
    .unwrap();

    let config = mesh.render_config();
    mesh.write_config_text(&format!("{config}---\n{DENY_CLIENT}"))
        .unwrap();
    let denied_after = until_reaches(&mesh, false).await;

    mesh.write_config_text(&config).unwrap();
    let allowed_after = until_reaches(&mesh, true).await;
    eprintln!("policy enforced after {denied_after:?}, lifted after {allowed_after:?}");

    // ztunnel's /config_dump says where its config comes from, and that it
    // took the pushes (the first state and both edits), refusing none.
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], 15000));
    let dump = mesh.node(0).http_get(admin, "/config_dump").unwrap();
    assert_eq!(dump.status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
    let source = &dump["configSource"];
    assert_eq!(source["kind"], "xds", "{source}");
    assert!(
        source["from"].as_str().unwrap().contains(":15012"),
        "{source}"
    );
    assert!(source["applied"].as_u64().unwrap() >= 3, "{source}");
    assert_eq!(source["refused"], 0, "{source}");
}

#[tokio::test]
async fn a_bad_document_is_reported_and_the_rest_applies() {
    let mesh = mesh();
    let config = mesh.render_config();
    let bad = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: production}
spec:
  action: DENY
  rules: [{from: [{source: {principalz: [x]}}]}]
";
    mesh.write_config_text(&format!("{config}---\n{bad}---\n{DENY_CLIENT}"))
        .unwrap();
    until_reaches(&mesh, false).await;
    poll_until(Duration::from_secs(5), "the bad document reported", || {
        let log = mesh.control_plane_log();
        Ok(log.contains("document") && log.contains("principalz"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.control_plane_log()));
}
