//! ztunnel upgrades under load: a new ztunnel starts beside the old one on
//! every node, the old ones get SIGTERM; no new connection may fail and the
//! connections open before the upgrade must keep working until they close.
//!
//! Needs root (network namespaces, nftables), as CI has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;

use cases::backends;
use rstest_reuse::apply;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use amesh_tests::harness::{AppSpec, Capture, Mesh, MeshBuilder, Pod, PodSpec, poll_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ECHO: u16 = 7001;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const LONG_LIVED: usize = 50;
const NEW_CONN_WORKERS: usize = 50;
/// Bounds the load generator even if the test stalls.
const MAX_NEW_CONNS: u64 = 200_000;

/// Writes `msg` and reads its echo.
async fn echo_once(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    stream.write_all(msg).await?;
    let mut back = vec![0_u8; msg.len()];
    tokio::time::timeout(IO_TIMEOUT, stream.read_exact(&mut back))
        .await
        .map_err(|_| std::io::Error::other("echo timed out"))??;
    if back != msg {
        return Err(std::io::Error::other("echo differs"));
    }
    Ok(())
}

#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

/// `NEW_CONN_WORKERS` loops, each opening a connection, echoing once and
/// closing, until told to stop.
fn start_new_connections(client: Pod, dst: SocketAddr, load: Arc<Load>) {
    for worker in 0..NEW_CONN_WORKERS {
        let (client, load) = (client.clone(), load.clone());
        tokio::spawn(async move {
            let msg = format!("new-{worker}");
            while !load.stop.load(Ordering::Relaxed)
                && load.ok.load(Ordering::Relaxed) < MAX_NEW_CONNS
            {
                let result = async {
                    let mut stream = client.connect(dst).await?;
                    echo_once(&mut stream, msg.as_bytes()).await
                }
                .await;
                match result {
                    Ok(()) => load.ok.fetch_add(1, Ordering::Relaxed),
                    Err(err) => {
                        eprintln!("new connection failed: {err}");
                        load.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
    }
}

fn wait_old_exit(mesh: &mut Mesh, node: usize) {
    poll_until(Duration::from_secs(15), "the old ztunnel to exit", || {
        Ok(mesh.old_ztunnel_exit(node).is_some())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.old_ztunnel_log(node)));
    let status = mesh.old_ztunnel_exit(node).unwrap();
    assert!(status.success(), "old ztunnel on node-{node}: {status}");
}

#[apply(backends)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_keeps_every_new_connection_and_lets_old_ones_finish(#[case] capture: Capture) {
    let mut mesh = MeshBuilder::new()
        .capture(capture)
        .nodes(2)
        .pod(PodSpec::new("client", 0).service_account("client"))
        .pod(PodSpec::new("server", 1).service_account("server"))
        .ztunnel_arg("--drain-timeout-secs")
        .ztunnel_arg("60")
        .build()
        .unwrap();
    mesh.start().unwrap();
    mesh.start_app("server", AppSpec::default().echo(ECHO))
        .unwrap();
    let client = mesh.pod("client").clone();
    let dst = mesh.pod("server").addr(ECHO);

    let mut long_lived = Vec::with_capacity(LONG_LIVED);
    for i in 0..LONG_LIVED {
        let mut stream = client.connect(dst).await.unwrap();
        echo_once(&mut stream, format!("old-{i}").as_bytes())
            .await
            .unwrap();
        long_lived.push(stream);
    }
    let load = Arc::new(Load::default());
    start_new_connections(client.clone(), dst, load.clone());
    let ok_before = |load: &Load| load.ok.load(Ordering::Relaxed);
    poll_until(Duration::from_secs(10), "new connections flowing", || {
        Ok(ok_before(&load) >= 100)
    })
    .unwrap();

    // The rollout: both nodes' ztunnels, client side and server side.
    for node in 0..2 {
        mesh.start_new_ztunnel(node, Duration::from_secs(15))
            .unwrap();
    }
    for node in 0..2 {
        mesh.terminate_old_ztunnel(node).unwrap();
    }
    // The old ztunnels now drain: the long-lived connections still work
    // through them, and keep them running.
    for (i, stream) in long_lived.iter_mut().enumerate() {
        echo_once(stream, format!("old-{i}-after").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("long-lived connection {i} after SIGTERM: {e}"));
    }
    for node in 0..2 {
        assert!(
            mesh.old_ztunnel_exit(node).is_none(),
            "old ztunnel on node-{node} exited with connections open"
        );
    }
    // They close; the old ztunnels finish draining and exit cleanly.
    for mut stream in long_lived {
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut rest))
            .await
            .expect("close in time")
            .unwrap();
    }
    for node in 0..2 {
        wait_old_exit(&mut mesh, node);
    }
    // Only the new ztunnels are left, and they carry the new connections.
    let after_exit = ok_before(&load);
    poll_until(
        Duration::from_secs(10),
        "new connections through the new ztunnels",
        || Ok(ok_before(&load) >= after_exit + 100),
    )
    .unwrap();
    load.stop.store(true, Ordering::Relaxed);
    let failed = load.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "{failed} of {} new connections failed during the upgrade\n{}",
        ok_before(&load) + failed,
        mesh.old_ztunnel_log(0)
    );
}

#[apply(backends)]
#[tokio::test]
async fn sigterm_drains_until_the_deadline_then_closes_what_is_left(#[case] capture: Capture) {
    let mut mesh = MeshBuilder::new()
        .capture(capture)
        .nodes(1)
        .pod(PodSpec::new("client", 0).service_account("client"))
        .pod(PodSpec::new("server", 0).service_account("server"))
        .ztunnel_arg("--drain-timeout-secs")
        .ztunnel_arg("1")
        .build()
        .unwrap();
    mesh.start().unwrap();
    mesh.start_app("server", AppSpec::default().echo(ECHO))
        .unwrap();
    let dst = mesh.pod("server").addr(ECHO);
    let mut stream = mesh.pod("client").connect(dst).await.unwrap();
    echo_once(&mut stream, b"before").await.unwrap();
    mesh.start_new_ztunnel(0, Duration::from_secs(15)).unwrap();
    mesh.terminate_old_ztunnel(0).unwrap();
    // Still served while the old ztunnel drains...
    echo_once(&mut stream, b"draining").await.unwrap();
    // ...and closed once the deadline passes; the old ztunnel then exits.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "connection still open after the drain deadline"
    );
    wait_old_exit(&mut mesh, 0);
    assert!(mesh.old_ztunnel_log(0).contains("drain deadline passed"));
    // New connections go through the new ztunnel.
    let mut fresh = mesh.pod("client").connect(dst).await.unwrap();
    echo_once(&mut fresh, b"after").await.unwrap();
}
