//! The CA as a node's ztunnel sees it, over the real TLS listener with the
//! tokens the control plane writes for its local nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use amesh_control_plane::derive::Derived;
use amesh_core::xds::proto::istio::ca::IstioCertificateRequest;
use amesh_core::xds::proto::istio::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";

const MODEL: &str = r"
namespaces:
  - name: default
    labels: {istio.io/dataplane-mode: ambient}
workloads:
  - uid: default/client
    name: client
    namespace: default
    serviceAccount: client
    node: node-a
    ips: [10.244.0.2]
  - uid: default/server
    name: server
    namespace: default
    serviceAccount: server
    node: node-b
    ips: [10.244.1.2]
";

struct Plane {
    addr: SocketAddr,
    tokens: PathBuf,
    registry: prometheus_client::registry::Registry,
    cancel: CancellationToken,
    _derived: watch::Sender<Arc<Derived>>,
    _dir: tempfile::TempDir,
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts the control plane; `ca_files` pre-populate its CA directory.
async fn start(ca_files: &[(&str, String)]) -> Plane {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    for (name, content) in ca_files {
        std::fs::write(ca_dir.join(name), content).unwrap();
    }
    let tokens = dir.path().join("tokens");
    let model = amesh_core::config::parse(MODEL, Path::new("model.yaml"), "cluster.local").unwrap();
    let derived = Arc::new(Derived::with_model(1, Default::default(), model));
    let (tx, rx) = watch::channel(derived);
    let common::Served {
        addr,
        registry,
        cancel,
    } = common::serve(ca_dir, tokens.clone(), rx).await;
    Plane {
        addr,
        tokens,
        registry,
        cancel,
        _derived: tx,
        _dir: dir,
    }
}

impl Plane {
    fn token(&self, node: &str) -> String {
        std::fs::read_to_string(self.tokens.join(format!("{node}.token")))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn root_pem(&self) -> String {
        std::fs::read_to_string(self.tokens.join("root-cert.pem")).unwrap()
    }

    async fn client(&self) -> IstioCertificateServiceClient<Channel> {
        let channel = common::tls_channel(self.addr, self.root_pem().as_bytes()).await;
        IstioCertificateServiceClient::new(channel)
    }

    /// CreateCertificate with `token`, a CSR naming `csr_san` (if any) and
    /// `impersonated` metadata (if any).
    async fn request(
        &self,
        token: Option<&str>,
        csr: String,
        impersonated: Option<&str>,
        validity: i64,
    ) -> Result<Vec<String>, tonic::Status> {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            subject_id: String::new(),
            validity_duration: validity,
        });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        if let Some(id) = impersonated {
            request
                .metadata_mut()
                .insert("impersonatedidentity", id.parse().unwrap());
        }
        let mut client = self.client().await;
        client
            .create_certificate(request)
            .await
            .map(|r| r.into_inner().cert_chain)
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

fn csr(san: Option<&str>) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    if let Some(san) = san {
        params.subject_alt_names = vec![SanType::URI(san.try_into().unwrap())];
    }
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    pem.contents
}

fn all_ders(pem_text: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem_text.as_bytes())
        .map(|p| p.unwrap().contents)
        .collect()
}

/// Each certificate is signed by the next; the last is self-signed.
fn assert_chain(ders: &[Vec<u8>]) {
    let certs: Vec<X509Certificate<'_>> = ders
        .iter()
        .map(|d| X509Certificate::from_der(d).unwrap().1)
        .collect();
    for pair in certs.windows(2) {
        assert_eq!(pair[0].issuer(), pair[1].subject());
        pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .expect("signed by the next certificate");
    }
    let root = certs.last().unwrap();
    root.verify_signature(None).expect("root is self-signed");
}

fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn not_after(der: &[u8]) -> SystemTime {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(cert.validity().not_after.timestamp().try_into().unwrap())
}

#[tokio::test]
async fn issues_identity_of_a_pod_on_the_callers_node() {
    let plane = start(&[]).await;
    let token = plane.token("node-a");
    let chain = plane
        .request(Some(&token), csr(Some(CLIENT)), Some(CLIENT), 3600)
        .await
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf then root");
    let ders: Vec<Vec<u8>> = chain.iter().map(|p| der(p)).collect();
    assert_chain(&ders);
    assert_eq!(ders[1], der(&plane.root_pem()));
    assert_eq!(uri_sans(&ders[0]), vec![CLIENT.to_owned()]);
    let left = not_after(&ders[0])
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        left <= Duration::from_secs(3600) && left > Duration::from_secs(3500),
        "{left:?}"
    );

    // The identity from the CSR alone; a longer validity is capped at 24 h.
    let chain = plane
        .request(Some(&token), csr(Some(CLIENT)), None, 30 * 24 * 3600)
        .await
        .unwrap();
    let left = not_after(&der(&chain[0]))
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left <= Duration::from_secs(24 * 3600), "{left:?}");

    let metrics = plane.metrics();
    assert!(metrics.contains("citadel_server_csr_count 2"), "{metrics}");
    assert!(
        metrics.contains("citadel_server_success_cert_issuance_count 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("citadel_server_root_cert_expiry_timestamp "),
        "{metrics}"
    );
}

#[tokio::test]
async fn refusals_name_what_was_wrong() {
    let plane = start(&[]).await;
    let a = plane.token("node-a");
    let b = plane.token("node-b");

    let err = plane
        .request(None, csr(Some(CLIENT)), None, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("missing `authorization"), "{err}");

    let err = plane
        .request(Some("0123"), csr(Some(CLIENT)), None, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("token is not valid"), "{err}");

    // The client pod runs on node-a, not node-b.
    let err = plane
        .request(Some(&b), csr(Some(CLIENT)), Some(CLIENT), 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        err.message(),
        format!("caller is node node-b but identity {CLIENT} runs only on node(s) node-a")
    );

    let nobody = "spiffe://cluster.local/ns/default/sa/nobody";
    let err = plane
        .request(Some(&a), csr(Some(nobody)), None, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        err.message(),
        format!("identity {nobody} has no pod on node node-a")
    );

    let err = plane
        .request(
            Some(&a),
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
            Some(CLIENT),
            0,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("malformed CSR: "), "{err}");

    // The CSR asks for another identity than the one impersonated.
    let err = plane
        .request(Some(&a), csr(Some(SERVER)), Some(CLIENT), 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        format!("the CSR names {SERVER} but the requested identity is {CLIENT}")
    );

    let metrics = plane.metrics();
    assert!(metrics.contains("citadel_server_csr_count 6"), "{metrics}");
    assert!(
        metrics.contains("citadel_server_authentication_failure_count 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("citadel_server_csr_parsing_err_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("citadel_server_success_cert_issuance_count 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("amesh_ca_refusals_total{reason=\"not_on_node\"} 2"),
        "{metrics}"
    );
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A self-signed root: (cert PEM, key PEM).
fn root(name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = ca_params(name).self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn plug_in_intermediate_chain() {
    let root_key = KeyPair::generate().unwrap();
    let root_cert = ca_params("user root").self_signed(&root_key).unwrap();
    let issuer = Issuer::new(ca_params("user root"), root_key);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params("user intermediate")
        .signed_by(&ca_key, &issuer)
        .unwrap();
    let plane = start(&[
        ("ca-cert.pem", ca_cert.pem()),
        ("ca-key.pem", ca_key.serialize_pem()),
        (
            "cert-chain.pem",
            format!("{}{}", ca_cert.pem(), root_cert.pem()),
        ),
        ("root-cert.pem", root_cert.pem()),
    ])
    .await;
    let chain = plane
        .request(
            Some(&plane.token("node-a")),
            csr(Some(CLIENT)),
            Some(CLIENT),
            0,
        )
        .await
        .unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    let ders: Vec<Vec<u8>> = chain.iter().map(|p| der(p)).collect();
    assert_eq!(ders[1], ca_cert.der().to_vec());
    assert_eq!(ders[2], root_cert.der().to_vec());
    assert_chain(&ders);
}

#[tokio::test]
async fn root_rotation_trusts_and_sends_both_roots() {
    let (old_cert, _old_key) = root("old root");
    let (new_cert, new_key) = root("new root");
    let plane = start(&[
        ("root-cert.pem", format!("{old_cert}{new_cert}")),
        ("root-key.pem", new_key),
    ])
    .await;
    let chain = plane
        .request(
            Some(&plane.token("node-a")),
            csr(Some(CLIENT)),
            Some(CLIENT),
            0,
        )
        .await
        .unwrap();
    assert_eq!(chain.len(), 3, "leaf then both roots");
    let ders: Vec<Vec<u8>> = chain.iter().map(|p| der(p)).collect();
    assert_eq!(ders[1], der(&old_cert));
    assert_eq!(ders[2], der(&new_cert));
    // Signed by the new root's key.
    assert_chain(&[ders[0].clone(), ders[2].clone()]);
    assert_eq!(
        all_ders(&plane.root_pem()),
        vec![ders[1].clone(), ders[2].clone()]
    );
}
