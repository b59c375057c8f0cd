//! The control plane's CA in Kubernetes mode: the real `amesh-control-plane`
//! binary against the fake API server, called as a node's ztunnel calls it
//! (`RemoteCa`: TLS trusting the CA root, bearer token, impersonated
//! identity). The root lives in the CA Secret, created on first start and
//! reused after a restart; callers are authenticated by TokenReview, and a
//! node's ztunnel obtains only identities of pods on its own node.
//!
//! Everything runs on loopback: no root or network namespaces needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use amesh_core::certs::{
    CertError, CertificateAuthority, CertificateRequest, IssuedCertificate, RemoteCa,
    RemoteCaConfig, TrustBundle,
};
use amesh_core::identity::Identity;
use amesh_core::tls::ServerIdentityVerifier;
use amesh_tests::harness::fake_kube::{FakeApiServer, TokenUser};
use amesh_tests::harness::{CONTROL_PLANE_BIN, Process, ProcessSpec, binary};
use k8s_openapi::api::core::v1::Secret;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use serde_json::json;
use tokio::time::Instant;

/// Generous: a debug build starting, listing and deriving on 2 cores.
const TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
const CA_SECRET: (&str, &str) = ("amesh-system", "amesh-ca");
const NAMESPACE: &str = "bookinfo";
const REVIEWS: &str = "spiffe://cluster.local/ns/bookinfo/sa/reviews";
const TTL: Duration = Duration::from_secs(3600);

/// The control plane process and where its CA listens.
struct ControlPlane {
    process: Process,
    grpc: SocketAddr,
}

/// A loopback port free right now (the control plane binds it next).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts the control plane on the fake API server and waits (bounded)
/// until its CA listener accepts connections. `--ca-dir` points into `dir`
/// only to prove Kubernetes mode keeps no key material on disk.
async fn start_control_plane(api: &FakeApiServer, dir: &Path, run: &str) -> ControlPlane {
    let grpc = free_addr();
    let loopback_any = "127.0.0.1:0";
    let secret = format!("{}/{}", CA_SECRET.0, CA_SECRET.1);
    let args: Vec<OsString> = [
        "--source",
        "kubernetes",
        "--kube-api-url",
        &api.url,
        "--grpc-addr",
        &grpc.to_string(),
        "--metrics-addr",
        loopback_any,
        "--readiness-addr",
        loopback_any,
        "--admin-addr",
        loopback_any,
        "--ca-secret",
        &secret,
        "--ca-dir",
        &dir.join("ca-dir").display().to_string(),
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let mut process = Process::spawn(ProcessSpec {
        label: format!("{CONTROL_PLANE_BIN} {run}"),
        binary: binary(CONTROL_PLANE_BIN).unwrap(),
        args,
        env: Vec::new(),
        netns: String::new(),
        log: dir.join(format!("control-plane-{run}.log")),
    })
    .unwrap();
    // The listener is bound only after the CA Secret is loaded or created.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(
            process.is_running(),
            "{CONTROL_PLANE_BIN} exited: {:?}\n{}",
            process.exit_status(),
            process.log()
        );
        if tokio::net::TcpStream::connect(grpc).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for the CA on {grpc}\n{}",
            process.log()
        );
        tokio::time::sleep(POLL).await;
    }
    ControlPlane { process, grpc }
}

impl ControlPlane {
    /// A ztunnel's CA client: trusts only `root` (PEM file), sends the
    /// token in `token_file`.
    fn ca(&self, root: &Path, token_file: &Path) -> RemoteCa {
        RemoteCa::connect(RemoteCaConfig {
            address: format!("https://{}", self.grpc),
            token_file: Some(token_file.to_path_buf()),
            root_cert: Some(root.to_path_buf()),
            server_name: None,
        })
        .unwrap()
    }

    /// CreateCertificate for `identity` with a fresh key, as ztunnel asks.
    async fn request(
        &self,
        root: &Path,
        token_file: &Path,
        identity: &str,
    ) -> Result<IssuedCertificate, CertError> {
        let identity: Identity = identity.parse().unwrap();
        let request = CertificateRequest::new(&identity).unwrap();
        self.ca(root, token_file)
            .sign(&identity, request.csr(), TTL)
            .await
    }

    /// Requests `identity` until the control plane knows the pod holding it
    /// (the derivation from the Kubernetes lists is asynchronous); any
    /// refusal other than "no pod on this node yet" fails at once.
    async fn request_once_known(
        &self,
        root: &Path,
        token_file: &Path,
        identity: &str,
    ) -> IssuedCertificate {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.request(root, token_file, identity).await {
                Ok(issued) => return issued,
                Err(CertError::Refused { code, message })
                    if code == "permission denied" && message.contains("has no pod on node") =>
                {
                    assert!(
                        Instant::now() < deadline,
                        "timed out after {TIMEOUT:?} waiting for the control plane to know \
                         the pod of {identity}: {message}\n{}",
                        self.process.log()
                    );
                }
                Err(e) => panic!(
                    "certificate for {identity} failed: {e}\n{}",
                    self.process.log()
                ),
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// An ambient namespace with one `reviews` pod on node-a, and ztunnel
/// tokens for node-a and node-b (bound to the ztunnel pod of each node, as
/// projected tokens are).
fn seed(api: &FakeApiServer, dir: &Path) -> (PathBuf, PathBuf) {
    api.apply(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"istio.io/dataplane-mode": "ambient"}},
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "reviews-v1", "namespace": NAMESPACE, "uid": "uid-reviews-v1",
                     "labels": {"app": "reviews"}},
        "spec": {"nodeName": "node-a", "serviceAccountName": "reviews",
                 "containers": [{"name": "app", "image": "reviews"}]},
        "status": {"phase": "Running", "podIP": "10.244.0.7"},
    }));
    let token = |node: &str| {
        let token = format!("token-ztunnel-{node}");
        api.set_token(
            &token,
            TokenUser::service_account("amesh-system", "ztunnel")
                .bound_to_pod(&format!("ztunnel-{node}"), &format!("uid-{node}"), node)
                .with_audiences(&["istio-ca"]),
        );
        let path = dir.join(format!("{node}.token"));
        std::fs::write(&path, token).unwrap();
        path
    };
    (token("node-a"), token("node-b"))
}

fn ca_secret(api: &FakeApiServer) -> Option<Secret> {
    api.get("v1", "Secret", CA_SECRET.0, CA_SECRET.1)
        .map(|v| serde_json::from_value(v).expect("the CA Secret is a Secret"))
}

/// Writes the Secret's root certificate where a client reads it.
fn write_root(secret: &Secret, path: &Path) -> TrustBundle {
    let pem = &secret.data.as_ref().unwrap()["root-cert.pem"].0;
    std::fs::write(path, pem).unwrap();
    TrustBundle::from_pem(pem).unwrap()
}

/// The leaf comes first, names `identity`, and chains to `roots`; the
/// response's roots are exactly `roots`.
fn assert_issued_by(issued: &IssuedCertificate, roots: &TrustBundle, identity: &str) {
    let leaf = issued.chain.first().expect("the chain holds a leaf");
    assert_eq!(
        amesh_core::tls::peer::identity_from_der(leaf)
            .unwrap()
            .to_string(),
        identity,
        "the leaf's URI SAN is the identity asked for"
    );
    assert_eq!(
        issued.roots.roots(),
        roots.roots(),
        "the response carries the CA Secret's root"
    );
    // The verifier HBONE peers use: webpki chain check, then the SPIFFE
    // identity (it ignores the server name).
    ServerIdentityVerifier::new(roots.clone(), vec![identity.parse().unwrap()])
        .verify_server_cert(
            leaf,
            &issued.chain[1..],
            &ServerName::try_from("unused").unwrap(),
            &[],
            UnixTime::now(),
        )
        .expect("the leaf chains to the CA Secret's root");
}

fn secret_creates(requests: &[String]) -> usize {
    let path = format!("/api/v1/namespaces/{}/secrets", CA_SECRET.0);
    requests
        .iter()
        .filter(|r| r.starts_with(&format!("POST {path}")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_secret_is_created_on_first_start_and_reused_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let api = FakeApiServer::start().await;
    let (node_a, _) = seed(&api, dir.path());
    assert!(ca_secret(&api).is_none());

    // First start: no Secret yet, so the control plane creates one with a
    // new root.
    let first = start_control_plane(&api, dir.path(), "first").await;
    let secret = ca_secret(&api).expect("the CA Secret exists once the CA listens");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let data = secret.data.as_ref().expect("the CA Secret has data");
    assert_eq!(
        data.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["root-cert.pem", "root-key.pem"]),
        "a new root: certificate and key"
    );
    let key = String::from_utf8(data["root-key.pem"].0.clone()).unwrap();
    assert!(
        key.contains("-----BEGIN PRIVATE KEY-----"),
        "root-key.pem is a PEM private key"
    );
    let root_path = dir.path().join("root-cert.pem");
    let root = write_root(&secret, &root_path);
    assert_eq!(root.roots().len(), 1);
    assert!(
        !dir.path().join("ca-dir").join("root-key.pem").exists(),
        "Kubernetes mode keeps the root key in the Secret, not in --ca-dir"
    );
    assert_eq!(secret_creates(&api.requests()), 1);

    // It serves (TLS verified against the Secret's root) and signs with it.
    let issued = first.request_once_known(&root_path, &node_a, REVIEWS).await;
    assert_issued_by(&issued, &root, REVIEWS);

    // Restart: the Secret is read, not recreated, and the new process
    // serves and signs with the same root.
    let version = secret.metadata.resource_version.clone();
    drop(first);
    let second = start_control_plane(&api, dir.path(), "second").await;
    let issued = second
        .request_once_known(&root_path, &node_a, REVIEWS)
        .await;
    assert_issued_by(&issued, &root, REVIEWS);
    let after = ca_secret(&api).unwrap();
    assert_eq!(
        after.metadata.resource_version, version,
        "the restart leaves the CA Secret untouched"
    );
    assert_eq!(after.data, secret.data);
    assert_eq!(
        secret_creates(&api.requests()),
        1,
        "the restart creates no Secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_review_lets_a_node_obtain_only_its_pods_identities() {
    let dir = tempfile::tempdir().unwrap();
    let api = FakeApiServer::start().await;
    let (node_a, node_b) = seed(&api, dir.path());
    let cp = start_control_plane(&api, dir.path(), "tokenreview").await;
    let root_path = dir.path().join("root-cert.pem");
    let root = write_root(&ca_secret(&api).expect("the CA Secret exists"), &root_path);

    // node-a's ztunnel obtains the identity of the reviews pod on node-a.
    let issued = cp.request_once_known(&root_path, &node_a, REVIEWS).await;
    assert_issued_by(&issued, &root, REVIEWS);
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("POST /apis/authentication.k8s.io/v1/tokenreviews")),
        "the caller was authenticated by TokenReview"
    );

    // node-b's ztunnel is refused: the pod does not run on its node.
    match cp.request(&root_path, &node_b, REVIEWS).await {
        Err(CertError::Refused { code, message }) => {
            assert_eq!(code, "permission denied", "{message}");
            assert!(
                message.contains("node-b") && message.contains("node-a"),
                "the refusal names the caller's node and the pod's: {message}"
            );
        }
        other => panic!("node-b obtained {REVIEWS}: {other:?}"),
    }

    // A token the API server does not know is unauthenticated.
    let unknown = dir.path().join("unknown.token");
    std::fs::write(&unknown, "not-a-token").unwrap();
    match cp.request(&root_path, &unknown, REVIEWS).await {
        Err(CertError::Refused { code, message }) => {
            assert_eq!(code, "unauthenticated", "{message}");
        }
        other => panic!("an unknown token obtained {REVIEWS}: {other:?}"),
    }
}
