//! Scenario `crypto`: the compiled-in crypto provider on its own, to choose
//! between aws-lc-rs and ring by measurement (build each with
//! `--no-default-features --features ring|aws-lc`). No baseline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use amesh_core::tls::{self, ServerConfigBuilder};
use anyhow::Result;
use rustls::pki_types::ServerName;

use super::{Figure, Report, Scale, median};
use crate::fixtures::{Pki, identity};

pub fn run(scale: Scale) -> Result<Report> {
    let window = Duration::from_millis(scale.pick(300, 1000));
    let (mut seal, mut handshakes) = (Vec::new(), Vec::new());
    for _ in 0..scale.runs() {
        seal.push(tls::measure_seal_gbps(window));
        handshakes.push(handshake_rate(window)?);
    }
    Ok(Report {
        scenario: "crypto".into(),
        figures: vec![
            Figure::new("aes128gcm_seal_16k", "Gbit/s", median(seal), None, true),
            Figure::new(
                "mtls_handshake_rate",
                "handshakes/s",
                median(handshakes),
                None,
                true,
            ),
        ],
    })
}

/// Full mTLS handshakes (both sides, one thread) over an in-memory pipe.
fn handshake_rate(window: Duration) -> Result<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let pki = Pki::new();
        let server_cert = pki.cert("bench", "server").await;
        let client_cert = pki.cert("bench", "client").await;
        let server_config = ServerConfigBuilder::build(Arc::new(server_cert));
        let start = Instant::now();
        let mut done = 0u64;
        while start.elapsed() < window {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            let client_config = tls::client_config(&client_cert, vec![identity("bench", "server")]);
            let name = ServerName::try_from("127.0.0.1")?;
            let (client, server) = tokio::join!(
                tls::connect(client_config, name, client_io),
                tls::accept(server_config.clone(), server_io)
            );
            client?;
            server?;
            done += 1;
        }
        Ok(done as f64 / start.elapsed().as_secs_f64())
    })
}
