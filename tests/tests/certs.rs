//! Certificates: issuance by the local CA, renewal under live connections,
//! persistence of the root, and root rotation.

// Test helpers panic on failure: that is how a test fails.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use amesh_core::certs::{
    CertError, CertStore, CertStoreConfig, CertificateAuthority, CertificateRequest, LocalCa,
    TrustBundle,
};
use amesh_core::hbone::{HbonePool, PoolConfig, ServerConfig};
use amesh_core::tls::peer::parse_leaf;
use amesh_tests::fixtures::{EchoHandler, LOCALHOST, Pki, identity, start_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn issued_certificate_carries_identity_and_default_lifetime() {
    let pki = Pki::new();
    let cert = pki.cert("shop", "reviews").await;
    assert_eq!(cert.identity(), &identity("shop", "reviews"));
    let info = parse_leaf(&cert.certified_key().cert[0]).expect("parse leaf");
    assert_eq!(info.identity, identity("shop", "reviews"));
    let lifetime = info
        .not_after
        .duration_since(std::time::SystemTime::now())
        .expect("valid");
    let day = Duration::from_secs(24 * 3600);
    assert!(
        lifetime <= day && lifetime > day - Duration::from_secs(60),
        "24 h lifetime, got {lifetime:?}"
    );
    // Renewal is due half-way through.
    let half = cert
        .refresh_at()
        .duration_since(std::time::SystemTime::now())
        .expect("future");
    assert!(
        half > Duration::from_secs(11 * 3600) && half <= Duration::from_secs(12 * 3600),
        "{half:?}"
    );
}

#[tokio::test]
async fn ca_refuses_csr_for_another_identity() {
    let ca = LocalCa::generate("cluster.local").expect("ca");
    let csr_for = CertificateRequest::new(&identity("shop", "admin")).expect("csr");
    let err = ca
        .sign(
            &identity("shop", "reviews"),
            csr_for.csr(),
            Duration::from_secs(60),
        )
        .await
        .expect_err("CSR naming another identity");
    assert!(
        matches!(err, CertError::IdentityNotAllowed { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("spiffe://cluster.local/ns/shop/sa/reviews"),
        "{err}"
    );

    let garbage =
        rustls::pki_types::CertificateSigningRequestDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    let err = ca
        .sign(
            &identity("shop", "reviews"),
            &garbage,
            Duration::from_secs(60),
        )
        .await
        .expect_err("garbage CSR");
    assert!(matches!(err, CertError::BadCsr(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_at_half_life_keeps_live_connections_working() {
    // 2 s certificates: renewal is due after about 1 s.
    let pki = Pki::with_config(CertStoreConfig {
        ttl: Duration::from_secs(2),
        ..CertStoreConfig::default()
    });
    let server_id = identity("shop", "reviews");
    let mut watch = pki.store.watch(&server_id);
    let first = pki.store.get(&server_id).await.expect("first cert");

    // The server reads its certificate live from the store.
    let listener_source = Arc::new(watch.clone());
    let server = {
        let listener = tokio::net::TcpListener::bind((LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tls = amesh_core::tls::ServerConfigBuilder::build(listener_source);
        let server = amesh_core::hbone::HboneServer::new(
            ServerConfig::default(),
            tls,
            Arc::new(EchoHandler),
        );
        let (drain, drain_watch) = amesh_core::hbone::drain_channel();
        tokio::spawn(server.serve(listener, drain_watch));
        (addr, drain)
    };
    let client_cert = pki.cert("shop", "productpage").await;
    let request = amesh_core::hbone::HboneRequest {
        source: client_cert,
        source_ip: LOCALHOST,
        hbone_addr: server.0,
        expected: server_id.clone(),
        target: (LOCALHOST, 80).into(),
        dialer: None,
    };
    let pool = HbonePool::new(PoolConfig::default());
    let mut live = pool
        .connect(request.clone())
        .await
        .expect("tunnel before renewal");
    live.write_all(b"before").await.expect("write");
    let mut buf = [0u8; 6];
    live.read_exact(&mut buf).await.expect("echo");

    // Wait (bounded) for the renewal event.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            assert!(watch.changed().await, "store stopped");
            if watch
                .current()
                .is_some_and(|c| c.leaf_der() != first.leaf_der())
            {
                break;
            }
        }
    })
    .await
    .expect("certificate renewed within 10 s");
    let renewed = pki.store.get(&server_id).await.expect("renewed");
    assert_ne!(
        renewed.leaf_der(),
        first.leaf_der(),
        "a new certificate was issued"
    );
    assert!(renewed.not_after() > first.not_after());

    // The connection opened before renewal keeps working...
    live.write_all(b"after!")
        .await
        .expect("write after renewal");
    live.read_exact(&mut buf).await.expect("echo after renewal");
    assert_eq!(&buf, b"after!");
    // ...and a new connection handshakes against the renewed certificate.
    let fresh = HbonePool::new(PoolConfig::default());
    let mut stream = fresh.connect(request).await.expect("tunnel after renewal");
    stream.write_all(b"fresh!").await.expect("write");
    stream.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"fresh!");
    drop(server.1);
}

#[tokio::test]
async fn root_is_created_once_and_reloaded_from_pem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = LocalCa::load_or_create(dir.path(), "cluster.local").expect("create");
    let key_mode = std::fs::metadata(dir.path().join("root-key.pem")).expect("key file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        key_mode.permissions().mode() & 0o777,
        0o600,
        "root key readable by owner only"
    );
    let second = LocalCa::load_or_create(dir.path(), "cluster.local").expect("reload");
    assert_eq!(
        first.trust_bundle().roots(),
        second.trust_bundle().roots(),
        "same root after reload"
    );

    // A certificate from the reloaded CA verifies against the original bundle.
    let store = CertStore::new(Arc::new(second), CertStoreConfig::default());
    let cert = store
        .get(&identity("shop", "reviews"))
        .await
        .expect("issue");
    let server = start_server(cert, EchoHandler, ServerConfig::default()).await;
    let client = CertStore::new(Arc::new(first), CertStoreConfig::default())
        .get(&identity("shop", "productpage"))
        .await
        .expect("client cert");
    HbonePool::new(PoolConfig::default())
        .connect(server.request(client, (LOCALHOST, 80).into()))
        .await
        .expect("handshake across the reloaded root");

    let bad = LocalCa::from_pem(b"not pem", b"not pem", None).expect_err("garbage PEM");
    assert!(bad.to_string().contains("CA certificate"), "{bad}");
}

#[tokio::test]
async fn root_rotation_trusts_old_and_new_roots_at_once() {
    let old = Pki::new();
    let mut new_ca = LocalCa::generate("cluster.local").expect("new root");
    // During rotation the new CA hands out a bundle holding both roots.
    new_ca
        .add_trusted_roots(old.ca.trust_bundle())
        .expect("merge");
    assert_eq!(new_ca.trust_bundle().roots().len(), 2);
    let new_store = CertStore::new(Arc::new(new_ca), CertStoreConfig::default());

    // Server already on the new root; client still on the old one.
    let server = start_server(
        new_store
            .get(&identity("shop", "reviews"))
            .await
            .expect("server cert"),
        EchoHandler,
        ServerConfig::default(),
    )
    .await;
    let old_client = {
        // The old client learns the new root too (bundle distribution happens first).
        let id = identity("shop", "productpage");
        let req = CertificateRequest::new(&id).expect("csr");
        let issued = old
            .ca
            .sign(&id, req.csr(), Duration::from_secs(3600))
            .await
            .expect("sign");
        let both = TrustBundle::new(
            issued
                .roots
                .roots()
                .iter()
                .chain(server_roots(&new_store).await.roots())
                .cloned(),
        )
        .expect("bundle");
        Arc::new(
            req.into_certificate(amesh_core::certs::IssuedCertificate {
                chain: issued.chain,
                roots: both,
            })
            .expect("cert"),
        )
    };
    let mut stream = HbonePool::new(PoolConfig::default())
        .connect(server.request(old_client, (LOCALHOST, 80).into()))
        .await
        .expect("old-root client talks to new-root server");
    stream.write_all(b"ok").await.expect("write");
    let mut buf = [0u8; 2];
    stream.read_exact(&mut buf).await.expect("echo");
}

async fn server_roots(store: &CertStore) -> TrustBundle {
    store
        .get(&identity("shop", "reviews"))
        .await
        .expect("cert")
        .roots()
        .clone()
}
