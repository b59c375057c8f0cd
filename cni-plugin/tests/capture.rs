//! The nftables capture backend in real network namespaces (needs root).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use amesh_cni::capture::{
    Capture, CaptureConfig, DEFAULT_PROBE_SNAT_V4, NftablesCapture, NodeProbeSnat, ZTUNNEL_MARK,
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn capture() -> NftablesCapture {
    NftablesCapture::new(CaptureConfig::default())
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn install_is_idempotent_and_remove_cleans_up() {
    let topo = Topology::new();
    let pod = topo.pod_netns();
    let capture = capture();
    let pristine = topo.pod.state();
    assert!(!capture.is_installed(&pod).unwrap());

    capture.install(&pod).unwrap();
    let table = topo.pod.nft(&["list", "table", "inet", "amesh"]);
    for (rule, times) in [
        ("meta mark & 0x00000fff == 0x00000539 ct mark set", 1),
        ("iifname \"lo\" accept", 1),
        ("ip saddr 169.254.7.127 meta l4proto tcp accept", 1),
        ("tcp dport != 15008 redirect to :15006", 1),
        (
            "ct mark & 0x00000fff == 0x00000111 meta mark set ct mark",
            1,
        ),
        ("oifname \"lo\" accept", 1),
        ("meta mark & 0x00000fff == 0x00000111 accept", 1),
        // In prerouting and in output.
        ("meta mark & 0x00000fff == 0x00000539 accept", 2),
        ("meta l4proto tcp redirect to :15001", 1),
    ] {
        assert_eq!(count(&table, rule), times, "{rule:?} {times}x in:\n{table}");
    }
    let rules = topo.pod.ip(&["-4", "rule", "show"]);
    assert_eq!(count(&rules, "fwmark 0x111/0xfff lookup 100"), 1, "{rules}");
    let rules6 = topo.pod.ip(&["-6", "rule", "show"]);
    assert_eq!(
        count(&rules6, "fwmark 0x111/0xfff lookup 100"),
        1,
        "{rules6}"
    );
    assert!(
        topo.pod
            .ip(&["route", "show", "table", "100"])
            .contains("local default dev lo")
    );
    assert!(capture.is_installed(&pod).unwrap());
    let once = topo.pod.state();

    capture.install(&pod).unwrap();
    capture.install(&pod).unwrap();
    assert_eq!(topo.pod.state(), once, "installing again changed something");

    // Something deleted the rule: not "installed", and install repairs it.
    topo.pod.ip(&[
        "rule",
        "del",
        "fwmark",
        "0x111/0xfff",
        "pref",
        "32764",
        "lookup",
        "100",
    ]);
    assert!(!capture.is_installed(&pod).unwrap());
    capture.install(&pod).unwrap();
    assert_eq!(topo.pod.state(), once);

    // Different settings: not "installed", and reinstalling replaces the table.
    let other = NftablesCapture::new(CaptureConfig {
        outbound_port: 25001,
        ..CaptureConfig::default()
    });
    assert!(!other.is_installed(&pod).unwrap());
    other.install(&pod).unwrap();
    let table = topo.pod.nft(&["list", "table", "inet", "amesh"]);
    assert_eq!(count(&table, "redirect to :25001"), 1, "{table}");
    assert_eq!(count(&table, "redirect to :15001"), 0, "{table}");

    capture.remove(&pod).unwrap();
    assert!(!capture.is_installed(&pod).unwrap());
    assert_eq!(topo.pod.state(), pristine, "remove left something behind");
    capture.remove(&pod).unwrap();
    assert_eq!(topo.pod.state(), pristine);
}

#[tokio::test]
async fn inbound_is_redirected_with_original_destination() {
    let topo = Topology::new();
    capture().install(&topo.pod_netns()).unwrap();
    let ztunnel = topo.pod.listen("0.0.0.0:15006".parse().unwrap());
    let app = topo.pod.listen("0.0.0.0:80".parse().unwrap());

    let dst = SocketAddr::from((POD_V4, 80));
    let mut client = topo.client.connect(dst).await.expect("connect");
    let (mut conn, peer) = accept(&ztunnel).await;
    assert_eq!(original_dst(&conn), dst);
    // The client's own address: ztunnel sees who is calling.
    assert_eq!(peer, client.local_addr().unwrap());
    assert!(!has_pending(&app), "the app must not see captured traffic");

    // Bytes flow both ways through the redirected connection.
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(T, conn.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn inbound_ipv6_is_redirected_with_original_destination() {
    let topo = Topology::new();
    capture().install(&topo.pod_netns()).unwrap();
    let ztunnel = topo.pod.listen("[::]:15006".parse().unwrap());
    let dst = SocketAddr::from((POD_V6, 8080));
    let _client = topo.client.connect(dst).await.expect("connect");
    let (conn, _) = accept(&ztunnel).await;
    assert_eq!(original_dst(&conn), dst);
}

#[tokio::test]
async fn hbone_port_is_not_redirected() {
    let topo = Topology::new();
    capture().install(&topo.pod_netns()).unwrap();
    let plaintext = topo.pod.listen("0.0.0.0:15006".parse().unwrap());
    let hbone = topo.pod.listen("0.0.0.0:15008".parse().unwrap());
    let _client = topo
        .client
        .connect((POD_V4, 15008).into())
        .await
        .expect("connect");
    let (conn, _) = accept(&hbone).await;
    assert_eq!(
        conn.local_addr().unwrap(),
        SocketAddr::from((POD_V4, 15008))
    );
    assert!(!has_pending(&plaintext));
}

#[tokio::test]
async fn without_ztunnel_inbound_is_refused_not_delivered() {
    let topo = Topology::new();
    capture().install(&topo.pod_netns()).unwrap();
    let app = topo.pod.listen("0.0.0.0:80".parse().unwrap());

    let err = topo
        .client
        .connect((POD_V4, 80).into())
        .await
        .expect_err("nothing listens on 15006: the connection must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(!has_pending(&app), "captured traffic went around ztunnel");
}

#[tokio::test]
async fn outbound_is_redirected_to_ztunnel() {
    let topo = Topology::new();
    capture().install(&topo.pod_netns()).unwrap();
    let ztunnel = topo.pod.listen("0.0.0.0:15001".parse().unwrap());
    let server = topo.client.listen("0.0.0.0:9999".parse().unwrap());

    let dst = SocketAddr::from((CLIENT_V4, 9999));
    let _app = topo.pod.connect(dst).await.expect("connect");
    let (conn, _) = accept(&ztunnel).await;
    assert_eq!(original_dst(&conn), dst);
    // REDIRECT in the nat OUTPUT hook rewrites the destination to loopback.
    assert_eq!(
        conn.local_addr().unwrap(),
        SocketAddr::from(([127, 0, 0, 1], 15001))
    );
    assert!(
        !has_pending(&server),
        "outbound traffic went around ztunnel"
    );
}

#[tokio::test]
async fn loopback_is_not_captured() {
    let topo = Topology::new();
    capture().install(&topo.pod_netns()).unwrap();
    let outbound = topo.pod.listen("0.0.0.0:15001".parse().unwrap());
    let inbound = topo.pod.listen("0.0.0.0:15006".parse().unwrap());
    let app = topo.pod.listen("0.0.0.0:80".parse().unwrap());
    // To 127.0.0.1 and to the pod's own IP: both stay on `lo`.
    for dst in [
        SocketAddr::from(([127, 0, 0, 1], 80)),
        SocketAddr::from((POD_V4, 80)),
    ] {
        let _c = topo.pod.connect(dst).await.expect("connect");
        let (conn, _) = accept(&app).await;
        assert_eq!(conn.local_addr().unwrap().port(), 80);
    }
    assert!(!has_pending(&outbound) && !has_pending(&inbound));
}

#[tokio::test]
async fn ztunnel_marked_sockets_are_not_redirected() {
    let topo = Topology::new();
    capture().install(&topo.pod_netns()).unwrap();
    let ztunnel = topo.pod.listen("0.0.0.0:15001".parse().unwrap());
    let server = topo.client.listen("0.0.0.0:9999".parse().unwrap());

    let socket = topo.pod.socket(false, |s| s.set_mark(ZTUNNEL_MARK));
    let _upstream = tokio::time::timeout(T, socket.connect((CLIENT_V4, 9999).into()))
        .await
        .unwrap()
        .expect("connect");
    let (conn, peer) = accept(&server).await;
    assert_eq!(peer.ip(), IpAddr::V4(POD_V4), "the pod's IP is the source");
    assert_eq!(
        conn.local_addr().unwrap(),
        SocketAddr::from((CLIENT_V4, 9999))
    );
    assert!(!has_pending(&ztunnel), "a marked socket was captured");
}

/// What ztunnel does for inbound: connect to the app from the client's
/// address (IP_TRANSPARENT, mark 0x539). The app's replies must come back to
/// ztunnel through the connmark + policy routing, not go out to the client.
#[tokio::test]
async fn transparent_connection_to_app_gets_replies() {
    let topo = Topology::new();
    capture().install(&topo.pod_netns()).unwrap();
    let app = topo.pod.listen("0.0.0.0:80".parse().unwrap());
    let spoofed = SocketAddr::from((CLIENT_V4, 40000));
    let socket = topo.pod.socket(false, |s| {
        s.set_mark(ZTUNNEL_MARK)?;
        s.set_ip_transparent_v4(true)?;
        s.bind(&spoofed.into())
    });
    let mut upstream = tokio::time::timeout(T, socket.connect((POD_V4, 80).into()))
        .await
        .unwrap()
        .expect("connect to the app with the client's address");
    let (mut conn, peer) = accept(&app).await;
    assert_eq!(peer, spoofed, "the app sees the real client");
    conn.write_all(b"pong").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(T, upstream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"pong");
}

/// Kubelet probes: the node SNATs its own connections to enrolled pods to
/// the probe address, which the pod lets through uncaptured.
#[tokio::test]
async fn kubelet_probes_bypass_capture() {
    let topo = Topology::new();
    // The client netns plays the node.
    let node = NodeProbeSnat::in_netns(topo.client.netns.clone(), CaptureConfig::default());
    capture().install(&topo.pod_netns()).unwrap();
    let app = topo.pod.listen("0.0.0.0:80".parse().unwrap());
    let ztunnel = topo.pod.listen("0.0.0.0:15006".parse().unwrap());

    let pods: BTreeSet<IpAddr> = [IpAddr::V4(POD_V4)].into();
    node.sync(&pods).unwrap();
    let before = topo.client.state();
    node.sync(&pods).unwrap();
    assert_eq!(topo.client.state(), before, "sync is idempotent");
    assert_eq!(node.members().unwrap(), pods);

    let _probe = topo
        .client
        .connect((POD_V4, 80).into())
        .await
        .expect("probe connects");
    let (_conn, peer) = accept(&app).await;
    assert_eq!(peer.ip(), IpAddr::V4(DEFAULT_PROBE_SNAT_V4));
    assert!(!has_pending(&ztunnel));

    // Once the pod leaves the set, the node's connections are captured.
    node.sync(&BTreeSet::new()).unwrap();
    assert!(node.members().unwrap().is_empty());
    let _c = topo
        .client
        .connect((POD_V4, 80).into())
        .await
        .expect("connect");
    let (_conn, peer) = accept(&ztunnel).await;
    assert_eq!(peer.ip(), IpAddr::V4(CLIENT_V4));
    assert!(!has_pending(&app));

    node.remove().unwrap();
    assert!(!topo.client.nft(&["list", "tables"]).contains("amesh-node"));
}
