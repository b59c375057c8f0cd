//! The HBONE TLS stream on its own: rustls handshake, then our record layer.

// Test helpers panic on failure: that is how a test fails.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use amesh_core::tls::{self, ServerConfigBuilder};
use amesh_tests::fixtures::{Pki, identity};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn key_updates_both_ways_keep_data_flowing() {
    let pki = Pki::new();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (mut client, mut server) = handshake(&pki, client_io, server_io).await;
    assert_eq!(
        tls::peer::identity_from_der(&server.peer_certificates()[0]).expect("client identity"),
        identity("shop", "productpage")
    );

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for round in 0..3 {
        // Each round both sides rotate their sending keys first.
        client.refresh_traffic_keys();
        server.refresh_traffic_keys();
        let (mut got_at_server, mut got_at_client) =
            (vec![0; payload.len()], vec![0; payload.len()]);
        let (a, b) = tokio::join!(
            async {
                client.write_all(&payload).await?;
                client.flush().await
            },
            server.read_exact(&mut got_at_server),
        );
        a.expect("client write");
        b.expect("server read");
        let (e, f) = tokio::join!(
            async {
                server.write_all(&payload).await?;
                server.flush().await
            },
            client.read_exact(&mut got_at_client)
        );
        e.expect("server write");
        f.expect("client read");
        assert_eq!(
            got_at_server, payload,
            "round {round}: client→server intact after KeyUpdate"
        );
        assert_eq!(
            got_at_client, payload,
            "round {round}: server→client intact after KeyUpdate"
        );
    }

    // close_notify ends the stream cleanly.
    client.shutdown().await.expect("client close_notify");
    let mut rest = Vec::new();
    server
        .read_to_end(&mut rest)
        .await
        .expect("clean EOF at server");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn tampered_record_is_rejected() {
    let pki = Pki::new();
    let (client_io, relay_client) = tokio::io::duplex(64 * 1024);
    let (relay_server, server_io) = tokio::io::duplex(64 * 1024);
    // A relay that forwards the handshake faithfully, then flips one bit in
    // everything the client sends afterwards.
    let tamper = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tampering = tamper.clone();
    tokio::spawn(async move {
        let (mut cr, mut cw) = tokio::io::split(relay_client);
        let (mut sr, mut sw) = tokio::io::split(relay_server);
        let down = tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if tampering.load(std::sync::atomic::Ordering::SeqCst) {
                buf[n - 1] ^= 0x01;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = down.await;
    });
    let (mut client, mut server) = handshake(&pki, client_io, server_io).await;
    tamper.store(true, std::sync::atomic::Ordering::SeqCst);
    client.write_all(&[7u8; 1000]).await.expect("write");
    client.flush().await.expect("flush");
    let mut buf = [0u8; 1000];
    let err = server
        .read_exact(&mut buf)
        .await
        .expect_err("tampered record must not decrypt");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

type Duplex = tokio::io::DuplexStream;

/// shop/productpage (client) and shop/reviews (server) handshake over the pipes.
async fn handshake(
    pki: &Pki,
    client_io: Duplex,
    server_io: Duplex,
) -> (
    tls::TlsStream<rustls::client::ClientConnectionData, Duplex>,
    tls::TlsStream<rustls::server::ServerConnectionData, Duplex>,
) {
    let server_config = ServerConfigBuilder::build(Arc::new(pki.cert("shop", "reviews").await));
    let client_cert = pki.cert("shop", "productpage").await;
    let client_config = tls::client_config(&client_cert, vec![identity("shop", "reviews")]);
    let server = tokio::spawn(tls::accept(server_config, server_io));
    let name = ServerName::try_from("10.0.0.1").expect("name");
    let client = tls::connect(client_config, name, client_io)
        .await
        .expect("client handshake");
    let server = server.await.expect("task").expect("server handshake");
    (client, server)
}
