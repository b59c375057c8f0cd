//! L4 AuthorizationPolicy and PeerAuthentication end to end: the users'
//! Istio YAML in ztunnel's config, enforced by the destination ztunnel on
//! real connections between pods (and from a pod outside the mesh).
//!
//! Needs root (network namespaces, nftables), as CI has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;

use cases::backends;
use rstest_reuse::apply;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use amesh_tests::harness::{AppSpec, Capture, Mesh, MeshBuilder, PodSpec, poll_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const WHOAMI: u16 = 7000;
const ECHO: u16 = 7001;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

const AUTHZ_L4: &str = include_str!("../../testdata/shared-examples/authz-l4.yaml");
const PEER_AUTHN: &str = include_str!("../../testdata/shared-examples/peer-authentication.yaml");

/// Whether `from` can hold a conversation with `addr`: an echo answers, a
/// whoami server greets. A refused connection is closed or reset first.
async fn reaches(mesh: &Mesh, from: &str, addr: SocketAddr, whoami_port: u16) -> bool {
    let Ok(Ok(mut stream)) = timeout(IO_TIMEOUT, mesh.pod(from).connect(addr)).await else {
        return false;
    };
    if addr.port() == whoami_port {
        let mut line = String::new();
        return matches!(
            timeout(IO_TIMEOUT, stream.read_to_string(&mut line)).await,
            Ok(Ok(_))
        ) && line.contains("server=");
    }
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut back = [0_u8; 4];
    matches!(
        timeout(IO_TIMEOUT, stream.read_exact(&mut back)).await,
        Ok(Ok(_))
    ) && &back == b"ping"
}

fn applied_count(mesh: &Mesh, node: usize) -> usize {
    mesh.ztunnel_log(node).matches("config applied").count()
}

/// Writes the mesh's workloads plus `policies` (YAML documents) and waits
/// until every node's ztunnel has applied them.
fn apply(mesh: &Mesh, policies: &str) {
    let nodes: Vec<usize> = (0..mesh.nodes().len()).collect();
    let before: Vec<usize> = nodes.iter().map(|n| applied_count(mesh, *n)).collect();
    let text = format!("{}\n---\n{policies}", mesh.render_config());
    mesh.write_config_text(&text).unwrap();
    for (node, before) in nodes.iter().zip(before) {
        poll_until(APPLY_TIMEOUT, "ztunnel to apply the policies", || {
            let log = mesh.ztunnel_log(*node);
            assert!(
                !log.contains("config refused"),
                "config refused:\n{log}\n--- config ---\n{text}"
            );
            Ok(applied_count(mesh, *node) > before)
        })
        .unwrap();
    }
}

fn wait_log(mesh: &Mesh, node: usize, needles: &[&str]) {
    poll_until(
        Duration::from_secs(10),
        format!("a log line with {needles:?}"),
        || {
            Ok(mesh
                .ztunnel_log(node)
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n))))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.ztunnel_log(node)));
}

/// The setting the shared examples assume: `production` (ambient) with the
/// database and its clients, `sandbox` (ambient), and `legacy` outside the
/// mesh. The database listens on 3306 (echo) and 5432 (whoami).
fn examples_mesh() -> Mesh {
    let prod = |name: &str, node: usize| {
        PodSpec::new(name, node)
            .namespace("production")
            .service_account(name)
            .label("app", name)
            .label("version", "v1")
    };
    let mut mesh = MeshBuilder::new()
        .nodes(2)
        .pod(prod("database", 1))
        .pod(prod("web", 1))
        .pod(prod("order-service", 0))
        .pod(prod("payment-service", 0))
        .pod(prod("reports", 0))
        .pod(
            PodSpec::new("sandbox-app", 0)
                .namespace("sandbox")
                .service_account("sandbox-app"),
        )
        .pod(
            PodSpec::new("legacy-app", 0)
                .namespace("legacy")
                .mesh(false),
        )
        .build()
        .unwrap();
    mesh.start().unwrap();
    mesh.start_app("database", AppSpec::default().echo(3306).whoami(5432))
        .unwrap();
    mesh.start_app("web", AppSpec::default().echo(8080))
        .unwrap();
    mesh
}

#[tokio::test]
async fn shared_example_authz_l4_behaves_as_its_comments_say() {
    let mesh = examples_mesh();
    let db = |port| mesh.pod("database").addr(port);
    let web = mesh.pod("web").addr(8080);
    // Before: everything reaches everything.
    assert!(reaches(&mesh, "reports", db(3306), 5432).await);
    assert!(reaches(&mesh, "sandbox-app", web, 5432).await);
    apply(&mesh, AUTHZ_L4);

    // "The database accepts connections only from the order-service and
    // payment-service identities, and only on port 3306."
    assert!(reaches(&mesh, "order-service", db(3306), 5432).await);
    assert!(reaches(&mesh, "payment-service", db(3306), 5432).await);
    assert!(!reaches(&mesh, "order-service", db(5432), 5432).await);
    assert!(!reaches(&mesh, "reports", db(3306), 5432).await);
    assert!(!reaches(&mesh, "legacy-app", db(3306), 5432).await);
    wait_log(
        &mesh,
        1,
        &[
            "connection refused",
            "src.identity=spiffe://cluster.local/ns/production/sa/reports",
            "no ALLOW policy matched (production/database-clients)",
        ],
    );
    // "Nothing from the sandbox namespace may reach any production pod."
    assert!(!reaches(&mesh, "sandbox-app", web, 5432).await);
    assert!(!reaches(&mesh, "sandbox-app", db(3306), 5432).await);
    wait_log(
        &mesh,
        1,
        &[
            "connection refused",
            "sandbox-app",
            "denied by policy production/no-sandbox",
        ],
    );
    // Other production pods are not restricted by either policy.
    assert!(reaches(&mesh, "reports", web, 5432).await);
}

#[tokio::test]
async fn shared_example_peer_authentication_behaves_as_its_comments_say() {
    let mesh = examples_mesh();
    let db = |port| mesh.pod("database").addr(port);
    let web = mesh.pod("web").addr(8080);
    // PERMISSIVE by default: plaintext from outside the mesh is accepted.
    assert!(reaches(&mesh, "legacy-app", web, 5432).await);
    apply(&mesh, PEER_AUTHN);

    // "a plaintext connection from a pod outside the mesh to any production
    // pod is refused..."
    assert!(!reaches(&mesh, "legacy-app", web, 5432).await);
    assert!(!reaches(&mesh, "legacy-app", db(5432), 5432).await);
    wait_log(
        &mesh,
        1,
        &[
            "connection refused",
            "protocol=\"TCP\"",
            "plaintext refused: mTLS mode STRICT",
        ],
    );
    // "...except the database pods, which also accept plaintext on 3306"
    assert!(reaches(&mesh, "legacy-app", db(3306), 5432).await);
    // mTLS (HBONE) is accepted on every port.
    assert!(reaches(&mesh, "order-service", db(5432), 5432).await);
    assert!(reaches(&mesh, "order-service", web, 5432).await);
}

/// One policy document in namespace `ns`.
fn authz(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}\n"
    )
}

#[apply(backends)]
#[tokio::test]
async fn authorization_rules_are_evaluated_as_istio_does(#[case] capture: Capture) {
    let mut mesh = MeshBuilder::new()
        .capture(capture)
        .nodes(2)
        .pod(
            PodSpec::new("server", 1)
                .namespace("apps")
                .service_account("server")
                .label("app", "server"),
        )
        .pod(PodSpec::new("a", 0).namespace("apps").service_account("a"))
        .pod(PodSpec::new("b", 0).namespace("other").service_account("b"))
        .build()
        .unwrap();
    mesh.start().unwrap();
    mesh.start_app("server", AppSpec::default().echo(ECHO).whoami(WHOAMI))
        .unwrap();
    let echo = mesh.pod("server").addr(ECHO);
    let whoami = mesh.pod("server").addr(WHOAMI);
    let a_ip = mesh.pod("a").ip;
    let selector = "  selector:\n    matchLabels:\n      app: server\n";
    // Each case: the policies, then who reaches what.
    let cases: Vec<(&str, String, [bool; 3])> = vec![
        (
            "ALLOW by principal (written without spiffe://)",
            authz(
                "apps",
                "allow-a",
                &format!(
                    "{selector}  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/apps/sa/a\"]"
                ),
            ),
            [true, false, true],
        ),
        (
            "DENY by namespace",
            authz(
                "apps",
                "deny-other",
                "  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [\"other\"]",
            ),
            [true, false, true],
        ),
        (
            "DENY by ipBlocks",
            authz(
                "apps",
                "deny-a-ip",
                &format!(
                    "{selector}  action: DENY\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"{a_ip}/32\"]"
                ),
            ),
            [false, true, false],
        ),
        (
            "DENY to notPorts (everything but the echo port)",
            authz(
                "apps",
                "only-echo",
                &format!(
                    "{selector}  action: DENY\n  rules:\n  - to:\n    - operation:\n        notPorts: [\"{ECHO}\"]"
                ),
            ),
            [true, true, false],
        ),
        (
            "ALLOW to ports",
            authz(
                "apps",
                "whoami-only",
                &format!(
                    "{selector}  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        ports: [\"{WHOAMI}\"]"
                ),
            ),
            [false, false, true],
        ),
        (
            "DENY when source.principal and destination.port",
            authz(
                "apps",
                "when",
                &format!(
                    "{selector}  action: DENY\n  rules:\n  - when:\n    - key: source.principal\n      values: [\"cluster.local/ns/apps/sa/a\"]\n    - key: destination.port\n      values: [\"{ECHO}\"]"
                ),
            ),
            [false, true, true],
        ),
        (
            "DENY when source.namespace notValues",
            authz(
                "apps",
                "when-not",
                &format!(
                    "{selector}  action: DENY\n  rules:\n  - when:\n    - key: source.namespace\n      notValues: [\"apps\"]"
                ),
            ),
            [true, false, true],
        ),
        (
            "mesh-wide DENY from the root namespace",
            authz(
                "amesh-system",
                "mesh-deny-other",
                "  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [\"other\"]",
            ),
            [true, false, true],
        ),
        (
            "mesh-wide DENY from istio-system (accepted as root)",
            authz(
                "istio-system",
                "istio-deny-apps",
                "  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [\"apps\"]",
            ),
            [false, true, false],
        ),
        (
            "DENY before ALLOW",
            format!(
                "{}---\n{}",
                authz(
                    "apps",
                    "allow-all",
                    &format!("{selector}  action: ALLOW\n  rules:\n  - {{}}"),
                ),
                authz(
                    "apps",
                    "deny-a",
                    "  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/apps/sa/a\"]",
                ),
            ),
            [false, true, false],
        ),
        (
            "an empty spec denies all",
            authz("apps", "deny-all", "  {}"),
            [false, false, false],
        ),
        (
            "an L7 rule in an ALLOW policy fails closed",
            authz(
                "apps",
                "get-only",
                &format!(
                    "{selector}  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]"
                ),
            ),
            [false, false, false],
        ),
    ];
    for (what, policies, [a_echo, b_echo, a_whoami]) in cases {
        apply(&mesh, &policies);
        assert_eq!(
            reaches(&mesh, "a", echo, WHOAMI).await,
            a_echo,
            "{what}: a -> echo"
        );
        assert_eq!(
            reaches(&mesh, "b", echo, WHOAMI).await,
            b_echo,
            "{what}: b -> echo"
        );
        assert_eq!(
            reaches(&mesh, "a", whoami, WHOAMI).await,
            a_whoami,
            "{what}: a -> whoami"
        );
    }
    // The L7 case is reported as needing a waypoint.
    wait_log(&mesh, 1, &["connection refused", "need a waypoint"]);
}

#[apply(backends)]
#[tokio::test]
async fn a_policy_change_closes_a_now_denied_open_connection_within_a_second(
    #[case] capture: Capture,
) {
    let mut mesh = MeshBuilder::new()
        .capture(capture)
        .nodes(2)
        .pod(PodSpec::new("server", 1).service_account("server"))
        .pod(PodSpec::new("a", 0).service_account("a"))
        .pod(PodSpec::new("b", 0).service_account("b"))
        .build()
        .unwrap();
    mesh.start().unwrap();
    mesh.start_app("server", AppSpec::default().echo(ECHO))
        .unwrap();
    let echo = mesh.pod("server").addr(ECHO);
    let open = |from: &'static str| {
        let mesh = &mesh;
        async move {
            let mut stream = mesh.pod(from).connect(echo).await.unwrap();
            stream.write_all(b"ping").await.unwrap();
            let mut back = [0_u8; 4];
            timeout(IO_TIMEOUT, stream.read_exact(&mut back))
                .await
                .unwrap()
                .unwrap();
            stream
        }
    };
    let mut from_a = open("a").await;
    let mut from_b = open("b").await;
    let written = Instant::now();
    apply(
        &mesh,
        &authz(
            "default",
            "deny-a",
            "  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/default/sa/a\"]",
        ),
    );
    // a's open connection is closed by the server side...
    let mut rest = Vec::new();
    let closed = timeout(Duration::from_secs(1), from_a.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a's connection still open 1 s after the change"
    );
    assert!(
        written.elapsed() < Duration::from_secs(2),
        "closing took {:?}",
        written.elapsed()
    );
    // ...b's is still allowed and keeps working.
    from_b.write_all(b"pong").await.unwrap();
    let mut back = [0_u8; 4];
    timeout(IO_TIMEOUT, from_b.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"pong");
    wait_log(
        &mesh,
        1,
        &["open connection closed: the new config denies it"],
    );
}

#[apply(backends)]
#[tokio::test]
async fn ipv6_connections_get_the_same_policy_as_ipv4(#[case] capture: Capture) {
    let mut mesh = MeshBuilder::new()
        .capture(capture)
        .nodes(2)
        .pod(PodSpec::new("server", 1).service_account("server"))
        .pod(PodSpec::new("a", 0).service_account("a"))
        .pod(PodSpec::new("plain", 0).mesh(false))
        .build()
        .unwrap();
    mesh.start().unwrap();
    mesh.start_app("server", AppSpec::default().echo(ECHO))
        .unwrap();
    let v4 = mesh.pod("server").addr(ECHO);
    let v6 = mesh.pod("server").addr6(ECHO);
    let a6 = mesh.pod("a").ip6();
    assert!(reaches(&mesh, "a", v6, WHOAMI).await);
    // An IPv6 ipBlock denies a's IPv6 connections only.
    apply(
        &mesh,
        &authz(
            "default",
            "deny-a-v6",
            &format!(
                "  action: DENY\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"{a6}/128\"]"
            ),
        ),
    );
    assert!(!reaches(&mesh, "a", v6, WHOAMI).await);
    assert!(reaches(&mesh, "a", v4, WHOAMI).await);
    // STRICT refuses plaintext over IPv6 as over IPv4.
    assert!(reaches(&mesh, "plain", v6, WHOAMI).await);
    apply(
        &mesh,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\nspec:\n  mtls:\n    mode: STRICT\n",
    );
    assert!(!reaches(&mesh, "plain", v6, WHOAMI).await);
    assert!(!reaches(&mesh, "plain", v4, WHOAMI).await);
    assert!(reaches(&mesh, "a", v4, WHOAMI).await);
}
