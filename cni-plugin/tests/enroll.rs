//! Enrollment end to end: config file → capture in the pod netns, probe SNAT
//! set on the "node", and pods handed to a ztunnel-side ZDS client.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use amesh_cni::capture::{Capture, CaptureConfig, NftablesCapture, NodeProbeSnat, PodNetns};
use amesh_cni::enroll::{EnrollConfig, Enroller};
use amesh_cni::node_netns::NetnsScanner;
use amesh_cni::uninstall::{Targets, uninstall};
use amesh_cni::zds_server::{ZdsRegistry, ZdsServer};
use amesh_core::config::{ConfigWatcher, WatchConfig, load_file};
use amesh_core::zds::proto::{
    Version, WorkloadRequest, WorkloadResponse, ZdsHello, workload_request::Payload,
};
use amesh_core::zds::{ZdsConnection, ZdsListener};
use common::*;
use tokio::time::{Instant, timeout};

const NODE: &str = "node-1";

struct Pod<'a> {
    uid: &'a str,
    netns: &'a str,
    ip: &'a str,
    node: &'a str,
    mesh: bool,
}

fn write_config(path: &Path, pods: &[Pod<'_>]) {
    let mut yaml = String::from("workloads:\n");
    for p in pods {
        let (ns, name) = p.uid.split_once('/').unwrap();
        yaml.push_str(&format!(
            "  - {{uid: {uid}, name: {name}, namespace: {ns}, serviceAccount: sa-{name}, node: {node}, ips: [{ip}], protocol: {proto}, netns: {netns}}}\n",
            uid = p.uid,
            node = p.node,
            ip = p.ip,
            proto = if p.mesh { "HBONE" } else { "TCP" },
            netns = p.netns,
        ));
    }
    // Atomic replace, as a config management tool would.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `check` until it holds, up to [`T`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// ztunnel's side: acks everything, returns the next Add/Del (skipping
/// SnapshotSent).
async fn next_change(conn: &ZdsConnection) -> (Payload, Option<std::os::fd::OwnedFd>) {
    loop {
        let (req, fd) = timeout(T, conn.recv::<WorkloadRequest>())
            .await
            .expect("no ZDS message in time")
            .expect("ZDS recv");
        conn.send(&WorkloadResponse::ack(""), None).await.unwrap();
        match req.payload {
            Some(Payload::SnapshotSent(_)) => continue,
            Some(payload) => return (payload, fd),
            None => panic!("empty request"),
        }
    }
}

fn pod_netns(ns: &TestNetns, ip: &str) -> PodNetns {
    PodNetns {
        name: ns.name.clone(),
        path: ns.path(),
        ips: vec![ip.parse().unwrap()],
    }
}

fn table_handle(ns: &TestNetns) -> String {
    let listing = ns.nft(&["-a", "list", "table", "inet", "amesh"]);
    listing.lines().next().unwrap_or_default().to_owned()
}

struct Agent {
    enroller: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
    _watcher: ConfigWatcher,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.enroller.abort();
        self.server.abort();
    }
}

fn start_agent(config: &Path, socket: &Path, node_ns: &TestNetns) -> Agent {
    let watcher = ConfigWatcher::start(WatchConfig::new(config, "cluster.local")).unwrap();
    let watcher_rx = watcher.subscribe();
    let registry = ZdsRegistry::new();
    let listener = ZdsListener::bind(socket).unwrap();
    let server = tokio::spawn(ZdsServer::new(listener, registry.clone(), T).run());
    let capture = Arc::new(NftablesCapture::new(CaptureConfig::default()));
    let probe = NodeProbeSnat::in_netns(node_ns.netns.clone(), CaptureConfig::default());
    let enroller = Enroller::new(
        EnrollConfig {
            node: NODE.into(),
            netns_dir: PathBuf::from("/var/run/netns"),
            // The config names every pod's netns: nothing to search for.
            scan_proc: false,
            recheck_interval: Duration::from_millis(100),
            zds_sync_timeout: T,
            serve_timeout: T,
            state_file: None,
            enrolled_file: None,
        },
        capture,
        probe,
        registry,
    );
    // No CNI plugin in these tests: the command channel stays idle.
    let (commands, command_rx) = tokio::sync::mpsc::channel(1);
    let enroller = tokio::spawn(async move {
        let _commands = commands;
        enroller.run(watcher_rx, command_rx).await;
    });
    Agent {
        enroller,
        server,
        _watcher: watcher,
    }
}

async fn connect(socket: &Path) -> ZdsConnection {
    let deadline = Instant::now() + T;
    loop {
        match ZdsConnection::connect(socket).await {
            Ok(conn) => {
                let hello = ZdsHello {
                    version: Version::V1 as i32,
                };
                conn.send(&hello, None).await.unwrap();
                return conn;
            }
            Err(err) => {
                assert!(Instant::now() < deadline, "cannot connect: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_enrolled_handed_over_and_released() {
    let node_ns = TestNetns::new("node");
    let pod_a = TestNetns::new("a");
    let other_node_pod = TestNetns::new("o");
    // Pod b's netns does not exist yet: it is enrolled once it appears.
    let b_name = unique_name("b");
    let dir = std::env::temp_dir().join(unique_name("enroll"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("workloads.yaml");
    let socket = dir.join("zds.sock");
    let capture = NftablesCapture::new(CaptureConfig::default());
    let probe = NodeProbeSnat::in_netns(node_ns.netns.clone(), CaptureConfig::default());

    let a = Pod {
        uid: "default/a",
        netns: &pod_a.name,
        ip: "10.88.0.2",
        node: NODE,
        mesh: true,
    };
    let b = Pod {
        uid: "default/b",
        netns: &b_name,
        ip: "10.88.0.3",
        node: NODE,
        mesh: true,
    };
    let o = Pod {
        uid: "default/o",
        netns: &other_node_pod.name,
        ip: "10.88.1.2",
        node: "node-2",
        mesh: true,
    };
    write_config(&config, &[a, b, o]);

    let agent = start_agent(&config, &socket, &node_ns);
    let conn = connect(&socket).await;
    match next_change(&conn).await {
        (Payload::Add(add), Some(fd)) => {
            assert_eq!(add.uid, "default/a");
            let info = add.workload_info.unwrap();
            assert_eq!(
                (
                    info.name.as_str(),
                    info.namespace.as_str(),
                    info.service_account.as_str()
                ),
                ("a", "default", "sa-a")
            );
            let file = std::fs::File::from(fd);
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                file.metadata().unwrap().ino(),
                pod_a.netns.id().unwrap().ino
            );
        }
        other => panic!("expected Add a, got {other:?}"),
    }
    assert!(
        capture
            .is_installed(&pod_netns(&pod_a, "10.88.0.2"))
            .unwrap()
    );
    let ip_a: IpAddr = "10.88.0.2".parse().unwrap();
    assert_eq!(probe.members().unwrap(), BTreeSet::from([ip_a]));
    // Not ours: another node's pod is left alone.
    assert!(!other_node_pod.nft(&["list", "tables"]).contains("amesh"));

    // b's netns appears: enrolled on a periodic re-check.
    let pod_b = TestNetns::named(b_name.clone());
    match next_change(&conn).await {
        (Payload::Add(add), Some(_)) => assert_eq!(add.uid, "default/b"),
        other => panic!("expected Add b, got {other:?}"),
    }
    let ip_b: IpAddr = "10.88.0.3".parse().unwrap();
    eventually("b in the probe set", || {
        probe.members().unwrap() == BTreeSet::from([ip_a, ip_b])
    })
    .await;

    // Agent restart: capture untouched (same table object), ztunnel gets the
    // snapshot again from the new agent.
    let handle_before = table_handle(&pod_a);
    drop(conn);
    drop(agent);
    let agent = start_agent(&config, &socket, &node_ns);
    let conn = connect(&socket).await;
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        match next_change(&conn).await {
            (Payload::Add(add), Some(_)) => seen.insert(add.uid),
            other => panic!("expected Adds after restart, got {other:?}"),
        };
    }
    assert_eq!(
        seen,
        BTreeSet::from(["default/a".to_owned(), "default/b".to_owned()])
    );
    assert_eq!(
        table_handle(&pod_a),
        handle_before,
        "restart reinstalled capture"
    );

    // a leaves the mesh: ztunnel is told, then capture goes.
    let a = Pod {
        uid: "default/a",
        netns: &pod_a.name,
        ip: "10.88.0.2",
        node: NODE,
        mesh: false,
    };
    let b = Pod {
        uid: "default/b",
        netns: &b_name,
        ip: "10.88.0.3",
        node: NODE,
        mesh: true,
    };
    write_config(&config, &[a, b]);
    match next_change(&conn).await {
        (Payload::Del(del), None) => assert_eq!(del.uid, "default/a"),
        other => panic!("expected Del a, got {other:?}"),
    }
    let a_ns = pod_netns(&pod_a, "10.88.0.2");
    // Removal ends with the table-100 route.
    eventually("a's capture removed", || {
        !pod_a
            .ip(&["route", "show", "table", "all"])
            .contains("table 100")
    })
    .await;
    assert!(!capture.is_installed(&a_ns).unwrap());
    assert!(!pod_a.nft(&["list", "tables"]).contains("amesh"));
    assert!(!pod_a.ip(&["rule", "show"]).contains("fwmark"));
    eventually("a out of the probe set", || {
        probe.members().unwrap() == BTreeSet::from([ip_b])
    })
    .await;

    // b's netns disappears (pod deleted): ztunnel is told.
    drop(pod_b);
    match next_change(&conn).await {
        (Payload::Del(del), None) => assert_eq!(del.uid, "default/b"),
        other => panic!("expected Del b, got {other:?}"),
    }
    eventually("empty probe set", || probe.members().unwrap().is_empty()).await;
    drop(agent);

    // A pod that left the mesh while no agent ran still has capture: the
    // next agent removes it at startup.
    let c_ns = TestNetns::new("c");
    let c_pod = pod_netns(&c_ns, "10.88.0.4");
    capture.install(&c_pod).unwrap();
    let c = Pod {
        uid: "default/c",
        netns: &c_ns.name,
        ip: "10.88.0.4",
        node: NODE,
        mesh: false,
    };
    write_config(&config, &[c]);
    let agent = start_agent(&config, &socket, &node_ns);
    eventually("c's stale capture removed", || {
        !c_ns
            .ip(&["route", "show", "table", "all"])
            .contains("table 100")
    })
    .await;
    assert!(!c_ns.nft(&["list", "tables"]).contains("amesh"));
    drop(agent);

    // Explicit uninstall removes what is left.
    let d_ns = TestNetns::new("d");
    capture.install(&pod_netns(&d_ns, "10.88.0.5")).unwrap();
    let d = Pod {
        uid: "default/d",
        netns: &d_ns.name,
        ip: "10.88.0.5",
        node: NODE,
        mesh: true,
    };
    write_config(&config, &[d]);
    let snapshot = load_file(&config, "cluster.local").unwrap();
    let scanner = NetnsScanner::new(Vec::new(), false);
    let report = uninstall(
        &Targets {
            snapshot: &snapshot,
            node: Some(NODE),
            netns_dir: Path::new("/var/run/netns"),
            record: &Default::default(),
            scanner: &scanner,
        },
        &capture,
        &probe,
    );
    assert_eq!((report.cleaned, report.failed), (1, 0));
    assert!(!d_ns.nft(&["list", "tables"]).contains("amesh"));
    assert!(!node_ns.nft(&["list", "tables"]).contains("amesh-node"));
    let _ = std::fs::remove_dir_all(&dir);
}
