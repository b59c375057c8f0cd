//! HBONE client and server over real mTLS on loopback: identities, refusals,
//! data integrity, half-close, resets, pooling and idle handling.

// Test helpers panic on failure: that is how a test fails.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amesh_core::hbone::{HboneError, HbonePool, PoolConfig, Rejection, ServerConfig};
use amesh_tests::fixtures::{
    ChannelHandler, EchoHandler, LOCALHOST, Pki, RejectHandler, eventually, identity, start_server,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn target() -> SocketAddr {
    (LOCALHOST, 8080).into()
}

/// One tunnel from shop/productpage to shop/reviews: (server, client side,
/// server side).
async fn tunnel() -> (
    amesh_tests::fixtures::TestServer,
    amesh_core::hbone::H2Stream,
    amesh_core::hbone::H2Stream,
) {
    let pki = Pki::new();
    let (handler, mut accepted) = ChannelHandler::new();
    let server = start_server(
        pki.cert("shop", "reviews").await,
        handler,
        ServerConfig::default(),
    )
    .await;
    let client = HbonePool::new(PoolConfig::default())
        .connect(server.request(pki.cert("shop", "productpage").await, target()))
        .await
        .expect("tunnel");
    let (_, server_side) = accepted.recv().await.expect("accepted");
    (server, client, server_side)
}

async fn echo_once<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    msg: &[u8],
) {
    stream.write_all(msg).await.expect("write");
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).await.expect("read echo");
    assert_eq!(back, msg);
}

#[tokio::test]
async fn handshake_carries_identities_and_request_headers() {
    let pki = Pki::new();
    let server_cert = pki.cert("shop", "reviews").await;
    let client_cert = pki.cert("shop", "productpage").await;
    let (handler, mut accepted) = ChannelHandler::new();
    let server = start_server(server_cert, handler, ServerConfig::default()).await;
    let pool = HbonePool::new(PoolConfig::default());

    let mut client = pool
        .connect(server.request(client_cert, target()))
        .await
        .expect("tunnel opens");
    let (request, mut server_side) = accepted.recv().await.expect("server accepted a stream");

    assert_eq!(
        request.peer,
        identity("shop", "productpage"),
        "server sees the client's verified identity"
    );
    assert_eq!(request.target, target(), ":authority carries the target");
    assert_eq!(request.forwarded_for, Some(LOCALHOST));
    let traceparent = request
        .headers
        .get("traceparent")
        .expect("traceparent sent");
    assert_eq!(traceparent.len(), 55);

    client.write_all(b"ping").await.expect("write");
    let mut buf = [0; 4];
    server_side.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn client_refuses_server_with_wrong_identity() {
    let pki = Pki::new();
    let impostor = pki.cert("shop", "impostor").await;
    let client_cert = pki.cert("shop", "productpage").await;
    let server = start_server(impostor, EchoHandler, ServerConfig::default()).await;
    let mut request = server.request(client_cert, target());
    request.expected = identity("shop", "reviews");

    let err = HbonePool::new(PoolConfig::default())
        .connect(request)
        .await
        .expect_err("identity mismatch must fail");
    match err {
        HboneError::IdentityMismatch { source, .. } => {
            assert_eq!(source.expected, "spiffe://cluster.local/ns/shop/sa/reviews");
            assert_eq!(source.actual, identity("shop", "impostor"));
        }
        other => panic!("expected IdentityMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn server_refuses_client_from_untrusted_root() {
    let pki = Pki::new();
    let rogue = Pki::new(); // another CA, same trust domain
    let server_cert = pki.cert("shop", "reviews").await;
    let rogue_client = rogue.cert("shop", "productpage").await;
    let server = start_server(server_cert.clone(), EchoHandler, ServerConfig::default()).await;

    // The rogue client trusts the real root so that only the server's check can fail.
    let mut request = server.request(rogue_client, target());
    request.source = Arc::new(rogue_with_trust(&rogue, &pki).await);
    let err = HbonePool::new(PoolConfig::default())
        .connect(request)
        .await
        .expect_err("untrusted client cert must fail");
    assert!(
        matches!(
            err,
            HboneError::Tls { .. } | HboneError::Http2 { .. } | HboneError::Connect { .. }
        ),
        "unexpected error {err:?}"
    );
    assert!(
        server.refused_handshakes_reach(1).await,
        "server counted the refused handshake"
    );
    assert_eq!(server.streams(), 0);
}

/// A certificate from `issuer` whose trust bundle also holds `trusted`'s root.
async fn rogue_with_trust(issuer: &Pki, trusted: &Pki) -> amesh_core::certs::WorkloadCertificate {
    use amesh_core::certs::{CertificateAuthority, CertificateRequest, IssuedCertificate};
    let id = identity("shop", "productpage");
    let req = CertificateRequest::new(&id).expect("csr");
    let issued = issuer
        .ca
        .sign(&id, req.csr(), Duration::from_secs(3600))
        .await
        .expect("sign");
    let roots = issued
        .roots
        .merged(trusted.ca.trust_bundle())
        .expect("merge");
    req.into_certificate(IssuedCertificate {
        chain: issued.chain,
        roots,
    })
    .expect("cert")
}

#[tokio::test]
async fn expired_certificates_are_refused_both_ways() {
    use amesh_core::certs::CertificateRequest;
    use std::time::SystemTime;
    let pki = Pki::new();
    let expired = |ns: &'static str, sa: &'static str| {
        let id = identity(ns, sa);
        let req = CertificateRequest::new(&id).expect("csr");
        let now = SystemTime::now();
        let issued = pki
            .ca
            .issue(
                &id,
                req.csr(),
                now - Duration::from_secs(7200),
                now - Duration::from_secs(3600),
            )
            .expect("issue expired");
        Arc::new(req.into_certificate(issued).expect("cert"))
    };

    // Expired server certificate: the client refuses it.
    let server = start_server(
        expired("shop", "reviews"),
        EchoHandler,
        ServerConfig::default(),
    )
    .await;
    let client_cert = pki.cert("shop", "productpage").await;
    let err = HbonePool::new(PoolConfig::default())
        .connect(server.request(client_cert, target()))
        .await
        .expect_err("expired server cert");
    match &err {
        HboneError::Tls { source, .. } => assert!(
            matches!(
                source,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                        | rustls::CertificateError::ExpiredContext { .. }
                )
            ),
            "expected an expiry error, got {source:?}"
        ),
        other => panic!("expected Tls error, got {other:?}"),
    }

    // Expired client certificate: the server refuses it.
    let server = start_server(
        pki.cert("shop", "reviews").await,
        EchoHandler,
        ServerConfig::default(),
    )
    .await;
    let err = HbonePool::new(PoolConfig::default())
        .connect(server.request(expired("shop", "productpage"), target()))
        .await
        .expect_err("expired client cert");
    assert!(
        !matches!(err, HboneError::IdentityMismatch { .. }),
        "{err:?}"
    );
    assert!(server.refused_handshakes_reach(1).await);
}

#[tokio::test]
async fn plaintext_and_certless_tls_are_refused() {
    let pki = Pki::new();
    let server = start_server(
        pki.cert("shop", "reviews").await,
        EchoHandler,
        ServerConfig::default(),
    )
    .await;

    // Plaintext HTTP/2 preface straight to the HBONE port.
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("server answers");
    // The server may answer with a TLS alert record but must then close.
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            assert_eq!(
                buf[0],
                0x15,
                "only a TLS alert may come back, got {:?}",
                &buf[..n]
            );
            let rest = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
                .await
                .expect("closes");
            assert!(matches!(rest, Ok(0) | Err(_)), "connection must close");
        }
    }

    // TLS 1.3 with ALPN h2 but no client certificate.
    let mut roots = rustls::RootCertStore::empty();
    for root in pki.ca.trust_bundle().roots() {
        roots.add(root.clone()).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(amesh_core::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let outcome = async {
        let mut tls = connector
            .connect(
                rustls::pki_types::ServerName::IpAddress(LOCALHOST.into()),
                tcp,
            )
            .await?;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        let mut buf = [0; 64];
        let n = tls.read(&mut buf).await?;
        Ok::<usize, std::io::Error>(n)
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .expect("server answers");
    assert!(
        matches!(outcome, Ok(0) | Err(_)),
        "server must not talk HTTP/2 without a client cert: {outcome:?}"
    );
    assert!(
        server.refused_handshakes_reach(2).await,
        "both attempts counted as refused handshakes"
    );
    assert_eq!(server.streams(), 0);
}

#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        amesh_core::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Deterministic pseudo-random bytes (xorshift), so each side can hash what it sends.
fn fill(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

async fn send_random<W: tokio::io::AsyncWrite + Unpin>(
    mut w: W,
    seed: u64,
    total: u64,
) -> blake3::Hash {
    let mut state = seed;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024 + 13]; // odd size: frames and records never line up
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        fill(&mut state, &mut buf[..n]);
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n]).await.expect("send");
        left -= n as u64;
    }
    w.shutdown().await.expect("shutdown");
    hasher.finalize()
}

async fn receive_hash<R: tokio::io::AsyncRead + Unpin>(mut r: R) -> (u64, blake3::Hash) {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 100_000];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await.expect("receive");
        if n == 0 {
            return (total, hasher.finalize());
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_at_once_arrives_intact() {
    const GIB: u64 = 1 << 30;
    let (_server, client, server_side) = tunnel().await;

    let (client_rd, client_wr) = tokio::io::split(client);
    let (server_rd, server_wr) = tokio::io::split(server_side);
    let up_sent = tokio::spawn(send_random(client_wr, 0x1234_5678, GIB));
    let down_sent = tokio::spawn(send_random(server_wr, 0x9abc_def0, GIB));
    let up_received = tokio::spawn(receive_hash(server_rd));
    let down_received = tokio::spawn(receive_hash(client_rd));

    let (up_sent, down_sent) = (up_sent.await.expect("task"), down_sent.await.expect("task"));
    let (up_len, up_hash) = up_received.await.expect("task");
    let (down_len, down_hash) = down_received.await.expect("task");
    assert_eq!(up_len, GIB, "client→server byte count");
    assert_eq!(down_len, GIB, "server→client byte count");
    assert_eq!(up_hash, up_sent, "client→server checksum");
    assert_eq!(down_hash, down_sent, "server→client checksum");
}

#[tokio::test]
async fn half_close_lets_the_server_keep_sending() {
    let (_server, mut client, mut server_side) = tunnel().await;

    client.write_all(b"request").await.expect("write");
    client.shutdown().await.expect("client half-close");

    // The server reads the request and EOF, then answers with 10 MiB while
    // the client reads.
    let mut request = Vec::new();
    server_side
        .read_to_end(&mut request)
        .await
        .expect("server reads to EOF");
    assert_eq!(request, b"request");
    let sender = tokio::spawn(send_random(server_side, 42, 10 << 20));

    let (len, hash) = receive_hash(client).await;
    let sent = sender.await.expect("sender");
    assert_eq!(len, 10 << 20);
    assert_eq!(hash, sent, "client read everything after its half-close");
}

#[tokio::test]
async fn resets_propagate_in_both_directions() {
    let pki = Pki::new();
    let (handler, mut accepted) = ChannelHandler::new();
    let server = start_server(
        pki.cert("shop", "reviews").await,
        handler,
        ServerConfig::default(),
    )
    .await;
    let pool = HbonePool::new(PoolConfig::default());
    let client_cert = pki.cert("shop", "productpage").await;

    // Client resets: the server's read fails with ConnectionReset.
    let mut client = pool
        .connect(server.request(client_cert.clone(), target()))
        .await
        .expect("tunnel");
    let (_, mut server_side) = accepted.recv().await.expect("accepted");
    client.write_all(b"x").await.expect("write");
    let mut one = [0; 1];
    server_side.read_exact(&mut one).await.expect("read");
    client.reset();
    let err = server_side
        .read(&mut one)
        .await
        .expect_err("reset must surface");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

    // Server resets: the client's read fails with ConnectionReset.
    let mut client = pool
        .connect(server.request(client_cert, target()))
        .await
        .expect("tunnel");
    let (_, server_side) = accepted.recv().await.expect("accepted");
    server_side.reset();
    let err = client.read(&mut one).await.expect_err("reset must surface");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    // The connection itself survives a stream reset.
    assert_eq!(pool.stats().opened, 1);
}

#[tokio::test]
async fn dropping_after_half_close_loses_nothing() {
    let (_server, mut client, server_side) = tunnel().await;
    // The client writes 4 MiB and closes before the server reads any of it.
    let payload = vec![7u8; 4 << 20];
    let writer = tokio::spawn(async move {
        client.write_all(&payload).await.expect("write");
        drop(client);
    });
    let (len, _) = receive_hash(server_side).await;
    writer.await.expect("writer");
    assert_eq!(len, 4 << 20, "every byte written before close arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_streams_share_pooled_connections() {
    let pki = Pki::new();
    let server = start_server(
        pki.cert("shop", "reviews").await,
        EchoHandler,
        ServerConfig::default(),
    )
    .await;
    let pool = HbonePool::new(PoolConfig::default()); // 100 streams per connection
    let request = server.request(pki.cert("shop", "productpage").await, target());

    let start = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000u32)
        .map(|i| {
            let pool = pool.clone();
            let request = request.clone();
            let start = start.clone();
            tokio::spawn(async move {
                let mut stream = pool.connect(request).await.expect("tunnel");
                // Hold every stream open until all 1000 exist.
                start.wait().await;
                echo_once(&mut stream, format!("stream {i}").as_bytes()).await;
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("stream task");
    }
    assert_eq!(
        pool.stats().opened,
        10,
        "1000 streams at 100 per connection need exactly 10 connections"
    );
    assert_eq!(server.streams(), 1000);
}

#[tokio::test]
async fn handler_refusals_reach_the_client_as_typed_errors() {
    let pki = Pki::new();
    let client_cert = pki.cert("shop", "productpage").await;
    for (rejection, status) in [
        (Rejection::Denied, 401),
        (Rejection::BadTarget, 400),
        (Rejection::TargetRefused, 503),
    ] {
        let server = start_server(
            pki.cert("shop", "reviews").await,
            RejectHandler(rejection),
            ServerConfig::default(),
        )
        .await;
        let err = HbonePool::new(PoolConfig::default())
            .connect(server.request(client_cert.clone(), target()))
            .await
            .expect_err("refused");
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status), "{err}");
        let typed = match rejection {
            Rejection::Denied => matches!(err, HboneError::Denied { .. }),
            Rejection::BadTarget => matches!(err, HboneError::BadTarget { .. }),
            Rejection::TargetRefused => matches!(err, HboneError::TargetRefused { .. }),
        };
        assert!(typed, "{rejection:?} gave {err:?}");
    }
}

#[tokio::test]
async fn idle_connection_closes_and_next_request_reconnects() {
    let pki = Pki::new();
    let server = start_server(
        pki.cert("shop", "reviews").await,
        EchoHandler,
        ServerConfig::default(),
    )
    .await;
    let pool = HbonePool::new(PoolConfig {
        idle_timeout: Duration::from_millis(300),
        ..PoolConfig::default()
    });
    let request = server.request(pki.cert("shop", "productpage").await, target());

    let mut stream = pool.connect(request.clone()).await.expect("tunnel");
    echo_once(&mut stream, b"one").await;
    stream.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("echo EOF");
    drop(stream);
    assert_eq!(pool.stats().connections, 1);

    assert!(
        eventually(Duration::from_secs(5), || pool.stats().connections == 0).await,
        "idle connection was not closed"
    );
    let mut stream = pool
        .connect(request)
        .await
        .expect("tunnel after idle close");
    echo_once(&mut stream, b"two").await;
    assert_eq!(
        pool.stats().opened,
        2,
        "the second request opened a new connection"
    );
}

#[tokio::test]
async fn goaway_drains_live_streams_and_takes_connection_out_of_pool() {
    let pki = Pki::new();
    let server = start_server(
        pki.cert("shop", "reviews").await,
        EchoHandler,
        ServerConfig::default(),
    )
    .await;
    let pool = HbonePool::new(PoolConfig::default());
    let mut stream = pool
        .connect(server.request(pki.cert("shop", "productpage").await, target()))
        .await
        .expect("tunnel");
    echo_once(&mut stream, b"before").await;

    server.drain.drain(); // stop accepting, GOAWAY on every connection
    echo_once(&mut stream, b"during drain").await;
    stream.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("clean EOF");
    drop(stream);

    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("server finished draining")
        .expect("server task");
    assert!(
        eventually(Duration::from_secs(5), || pool.stats().connections == 0).await,
        "drained connection left the pool"
    );
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_not_queued() {
    let pki = Pki::new();
    let server = start_server(
        pki.cert("shop", "reviews").await,
        EchoHandler,
        ServerConfig {
            max_connections: 1,
            ..ServerConfig::default()
        },
    )
    .await;
    let mut first = HbonePool::new(PoolConfig::default())
        .connect(server.request(pki.cert("shop", "a").await, target()))
        .await
        .expect("first connection");
    echo_once(&mut first, b"first").await;

    let err = HbonePool::new(PoolConfig {
        connect_timeout: Duration::from_secs(5),
        ..PoolConfig::default()
    })
    .connect(server.request(pki.cert("shop", "b").await, target()))
    .await
    .expect_err("second connection over the limit");
    assert!(
        !matches!(err, HboneError::Timeout { .. }),
        "refused, not queued: {err:?}"
    );
    assert_eq!(
        server
            .stats
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    echo_once(&mut first, b"still served").await;
}

#[tokio::test]
async fn mixing_byte_reads_and_chunk_reads_keeps_the_window_open() {
    let (_server, client, mut server_side) = tunnel().await;
    // Three stream windows' worth (1 MiB each): a leaked window would stall.
    let sender = tokio::spawn(send_random(client, 7, 3 << 20));
    // Alternate: one byte through AsyncRead, then the rest of that frame as a
    // chunk. A window leaked per frame throttles this to tens of seconds.
    let (total, hash) = tokio::time::timeout(Duration::from_secs(5), async {
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        let mut byte = [0u8; 1];
        while total < 3 << 20 {
            server_side.read_exact(&mut byte).await.expect("byte read");
            hasher.update(&byte);
            total += 1;
            let chunk = std::future::poll_fn(|cx| server_side.poll_read_chunk(cx))
                .await
                .expect("chunk read");
            let Some(chunk) = chunk else { break };
            total += chunk.len() as u64;
            hasher.update(&chunk);
        }
        (total, hasher.finalize())
    })
    .await
    .expect("3 MiB of mixed reads within 5 s");
    assert_eq!(total, 3 << 20);
    assert_eq!(hash, sender.await.expect("sender"));
}

/// A TCP connection whose far end is `relay`ed into the client side of a
/// tunnel: (the app's end of the TCP connection, the relay task, the
/// server side of the tunnel).
async fn relayed() -> (
    amesh_tests::fixtures::TestServer,
    tokio::net::TcpStream,
    tokio::task::JoinHandle<amesh_core::hbone::RelayOutcome>,
    amesh_core::hbone::H2Stream,
) {
    let (server, mut client_side, server_side) = tunnel().await;
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let app = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (mut proxied, _) = listener.accept().await.unwrap();
    let relay =
        tokio::spawn(async move { amesh_core::hbone::relay(&mut proxied, &mut client_side).await });
    (server, app, relay, server_side)
}

#[tokio::test]
async fn relay_carries_both_directions_and_passes_half_closes_on() {
    let (_server, mut app, relay, mut far) = relayed().await;
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    app.write_all(&big).await.unwrap();
    app.shutdown().await.unwrap();
    let mut got = Vec::new();
    far.read_to_end(&mut got).await.unwrap();
    assert!(
        got == big,
        "tunnel side got {} of {} bytes, intact",
        got.len(),
        big.len()
    );
    // The other direction still works after the first half-closed.
    far.write_all(b"world").await.unwrap();
    far.shutdown().await.unwrap();
    let mut back = Vec::new();
    app.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"world");
    let outcome = tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("relay ends once both sides closed")
        .unwrap();
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(
        (outcome.to_tunnel, outcome.from_tunnel),
        (big.len() as u64, 5)
    );
}

#[tokio::test]
async fn relay_ends_with_an_error_when_the_tunnel_is_reset() {
    let (_server, _app, relay, far) = relayed().await;
    far.reset();
    let outcome = tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("relay ends on reset")
        .unwrap();
    let err = outcome.error.expect("a reset is an error");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}
