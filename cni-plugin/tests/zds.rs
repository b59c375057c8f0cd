//! The agent's ZDS server against a hand-written ztunnel-side client.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amesh_cni::netns::NetnsId;
use amesh_cni::zds_server::{ZdsPod, ZdsRegistry, ZdsServer};
use amesh_core::zds::proto::{
    Version, WorkloadInfo, WorkloadRequest, WorkloadResponse, ZdsHello, workload_request::Payload,
};
use amesh_core::zds::{ZdsConnection, ZdsError, ZdsListener};
use common::*;
use tokio::time::timeout;

struct Fixture {
    dir: PathBuf,
    socket: PathBuf,
    registry: ZdsRegistry,
    server: tokio::task::JoinHandle<()>,
}

impl Fixture {
    fn start(tag: &str, ack_timeout: Duration) -> Self {
        let dir = std::env::temp_dir().join(unique_name(tag));
        let socket = dir.join("zds.sock");
        let listener = ZdsListener::bind(&socket).unwrap();
        let registry = ZdsRegistry::new();
        let server = tokio::spawn(ZdsServer::new(listener, registry.clone(), ack_timeout).run());
        Self {
            dir,
            socket,
            registry,
            server,
        }
    }

    async fn connect(&self) -> ZdsConnection {
        let conn = ZdsConnection::connect(&self.socket).await.unwrap();
        let hello = ZdsHello {
            version: Version::V1 as i32,
        };
        conn.send(&hello, None).await.unwrap();
        conn
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pod(uid: &str, netns: &TestNetns) -> Arc<ZdsPod> {
    Arc::new(ZdsPod {
        uid: uid.into(),
        info: WorkloadInfo {
            name: uid.into(),
            namespace: "default".into(),
            service_account: format!("sa-{uid}"),
        },
        netns: netns.netns.clone(),
    })
}

fn set(pods: &[&Arc<ZdsPod>]) -> BTreeMap<String, Arc<ZdsPod>> {
    pods.iter()
        .map(|p| (p.uid.clone(), Arc::clone(p)))
        .collect()
}

fn fd_id(fd: &OwnedFd) -> NetnsId {
    let file = std::fs::File::from(fd.try_clone().unwrap());
    let meta = file.metadata().unwrap();
    use std::os::unix::fs::MetadataExt;
    NetnsId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// Receives the next request (bounded) and acks it with `error`.
async fn next(conn: &ZdsConnection, error: &str) -> (Payload, Option<OwnedFd>) {
    let (req, fd) = timeout(T, conn.recv::<WorkloadRequest>())
        .await
        .expect("request timed out")
        .expect("request");
    conn.send(&WorkloadResponse::ack(error), None)
        .await
        .unwrap();
    (req.payload.expect("payload"), fd)
}

async fn expect_add(conn: &ZdsConnection, pod: &ZdsPod) {
    match next(conn, "").await {
        (Payload::Add(add), Some(fd)) => {
            assert_eq!(add.uid, pod.uid);
            assert_eq!(add.workload_info.as_ref(), Some(&pod.info));
            assert_eq!(fd_id(&fd), pod.netns.id().unwrap(), "the pod's own netns");
        }
        other => panic!("expected Add {} with fd, got {other:?}", pod.uid),
    }
}

async fn expect_del(conn: &ZdsConnection, uid: &str) {
    match next(conn, "").await {
        (Payload::Del(del), None) => assert_eq!(del.uid, uid),
        other => panic!("expected Del {uid}, got {other:?}"),
    }
}

async fn expect_snapshot_sent(conn: &ZdsConnection) {
    match next(conn, "").await {
        (Payload::SnapshotSent(_), None) => {}
        other => panic!("expected SnapshotSent, got {other:?}"),
    }
}

async fn expect_closed(conn: &ZdsConnection) {
    match timeout(T, conn.recv::<WorkloadRequest>())
        .await
        .expect("close timed out")
    {
        Err(ZdsError::Closed) => {}
        other => panic!("expected the agent to close, got {other:?}"),
    }
}

#[tokio::test]
async fn snapshot_then_deltas_and_again_after_reconnect() {
    let (ns_a, ns_b, ns_c) = (
        TestNetns::new("a"),
        TestNetns::new("b"),
        TestNetns::new("c"),
    );
    let (a, b, c) = (pod("a", &ns_a), pod("b", &ns_b), pod("c", &ns_c));
    let fx = Fixture::start("zds1", T);
    fx.registry.publish(set(&[&a, &b]));

    let conn = fx.connect().await;
    expect_add(&conn, &a).await;
    expect_add(&conn, &b).await;
    expect_snapshot_sent(&conn).await;

    // Deltas: one leaves, one arrives; the agent learns when they applied.
    let generation = fx.registry.publish(set(&[&b, &c]));
    expect_del(&conn, "a").await;
    expect_add(&conn, &c).await;
    assert!(fx.registry.wait_synced(generation, T).await);

    // A second ztunnel starts beside the first (an upgrade): it gets the
    // whole snapshot, and both are served from then on.
    let again = fx.connect().await;
    expect_add(&again, &b).await;
    expect_add(&again, &c).await;
    expect_snapshot_sent(&again).await;
    let generation = fx.registry.publish(set(&[&c]));
    expect_del(&conn, "b").await;
    expect_del(&again, "b").await;
    assert!(fx.registry.wait_synced(generation, T).await);

    // The old one leaves; the new one is still served.
    drop(conn);
    let generation = fx.registry.publish(set(&[&b, &c]));
    expect_add(&again, &b).await;
    assert!(fx.registry.wait_synced(generation, T).await);

    // A ztunnel that goes away does not block removals.
    drop(again);
    let mut status = fx.registry.status();
    timeout(T, status.wait_for(|s| s.connection.is_none()))
        .await
        .unwrap()
        .unwrap();
    let generation = fx.registry.publish(set(&[]));
    assert!(
        fx.registry
            .wait_synced(generation, Duration::from_millis(1))
            .await
    );

    // Reconnecting after that gets the current (empty) snapshot.
    let third = fx.connect().await;
    expect_snapshot_sent(&third).await;
}

/// Just after an agent restart the enrolled set is not known yet: ztunnel
/// must not get an (empty) snapshot that would make it drop every pod.
#[tokio::test]
async fn no_snapshot_before_the_first_publish() {
    let ns = TestNetns::new("a");
    let a = pod("a", &ns);
    let fx = Fixture::start("zds5", T);
    let conn = fx.connect().await;
    let mut status = fx.registry.status();
    timeout(T, status.wait_for(|s| s.connection.is_some()))
        .await
        .unwrap()
        .unwrap();
    fx.registry.publish(set(&[&a]));
    expect_add(&conn, &a).await;
    expect_snapshot_sent(&conn).await;
}

#[tokio::test]
async fn error_acks_are_logged_not_fatal() {
    let ns = TestNetns::new("a");
    let (a, b) = (pod("a", &ns), pod("b", &ns));
    let fx = Fixture::start("zds2", T);
    fx.registry.publish(set(&[&a, &b]));
    let conn = fx.connect().await;
    let (first, _) = next(&conn, "cannot enter netns").await;
    assert!(matches!(first, Payload::Add(ref add) if add.uid == "a"));
    expect_add(&conn, &b).await;
    expect_snapshot_sent(&conn).await;
}

#[tokio::test]
async fn missing_ack_drops_the_connection() {
    let ns = TestNetns::new("a");
    let a = pod("a", &ns);
    let fx = Fixture::start("zds3", Duration::from_millis(300));
    fx.registry.publish(set(&[&a]));
    let conn = fx.connect().await;
    let (req, fd) = timeout(T, conn.recv::<WorkloadRequest>())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(req.payload, Some(Payload::Add(_))) && fd.is_some());
    // No ack: after the timeout the agent hangs up; ztunnel reconnects.
    expect_closed(&conn).await;
    let conn = fx.connect().await;
    expect_add(&conn, &a).await;
    expect_snapshot_sent(&conn).await;
}

#[tokio::test]
async fn wrong_version_or_silence_is_refused() {
    let fx = Fixture::start("zds4", Duration::from_millis(300));
    let conn = ZdsConnection::connect(&fx.socket).await.unwrap();
    conn.send(&ZdsHello { version: 7 }, None).await.unwrap();
    expect_closed(&conn).await;
    // No hello at all: dropped after the timeout.
    let silent = ZdsConnection::connect(&fx.socket).await.unwrap();
    expect_closed(&silent).await;
}

#[tokio::test]
async fn wait_synced_without_ztunnel_returns_at_once() {
    let registry = ZdsRegistry::new();
    let generation = registry.publish(BTreeMap::new());
    assert!(
        registry
            .wait_synced(generation, Duration::from_millis(1))
            .await
    );
}
