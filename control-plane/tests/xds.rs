//! Delta discovery as a client sees it, over the real TLS listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use amesh_control_plane::derive::Derived;
use amesh_control_plane::resources::{ResourceSet, XdsResource};
use amesh_core::xds::proto::amesh::NamespaceEnrollment;
use amesh_core::xds::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use amesh_core::xds::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node, Status as RpcStatus,
};
use amesh_core::xds::{ADDRESS_TYPE, POD_ENROLLMENT_TYPE};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

/// (type, name, content, node)
type Spec<'a> = (&'static str, &'a str, &'a str, Option<&'a str>);

fn derived(generation: u64, specs: &[Spec<'_>]) -> Arc<Derived> {
    let mut resources = ResourceSet::default();
    for (type_url, name, content, node) in specs {
        let message = NamespaceEnrollment {
            name: (*name).to_owned(),
            labels: [("content".to_owned(), (*content).to_owned())].into(),
            ambient: true,
        };
        let mut resource = XdsResource::new(type_url, *name, &message);
        if let Some(node) = node {
            resource = resource.for_node(*node);
        }
        resources.insert(type_url, resource);
    }
    Arc::new(Derived::with_model(
        generation,
        resources,
        Default::default(),
    ))
}

struct Plane {
    addr: SocketAddr,
    tokens: PathBuf,
    derived: watch::Sender<Arc<Derived>>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start(initial: Arc<Derived>) -> Plane {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let (tx, rx) = watch::channel(initial);
    let served = common::serve(dir.path().join("ca"), tokens.clone(), rx).await;
    let (addr, cancel) = (served.addr, served.cancel);
    Plane {
        addr,
        tokens,
        derived: tx,
        cancel,
        _dir: dir,
    }
}

async fn channel(addr: SocketAddr, tokens: &Path) -> Channel {
    let root = std::fs::read(tokens.join("root-cert.pem")).unwrap();
    common::tls_channel(addr, &root).await
}

struct Client {
    node: String,
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl Client {
    async fn connect(plane: &Plane, node: &str) -> Client {
        Self::try_connect(plane, node, node).await.unwrap()
    }

    async fn try_connect(
        plane: &Plane,
        token_node: &str,
        node: &str,
    ) -> Result<Client, tonic::Status> {
        let token = std::fs::read_to_string(plane.tokens.join(format!("{token_node}.token")))
            .unwrap_or_else(|_| "bogus".into());
        let channel = channel(plane.addr, &plane.tokens).await;
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel(16);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token.trim()).parse().unwrap(),
        );
        let rx = client
            .delta_aggregated_resources(request)
            .await?
            .into_inner();
        Ok(Client {
            node: node.to_owned(),
            tx,
            rx,
        })
    }

    async fn subscribe(&self, type_url: &str, initial: HashMap<String, String>) {
        self.send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: self.node.clone(),
                ..Default::default()
            }),
            type_url: type_url.to_owned(),
            initial_resource_versions: initial.into_iter().collect(),
            ..Default::default()
        })
        .await;
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.tx.send(request).await.unwrap();
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    async fn nack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "cannot apply".into(),
                details: Vec::new(),
            }),
            ..Default::default()
        })
        .await;
    }

    async fn next(&mut self) -> Result<DeltaDiscoveryResponse, tonic::Status> {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("no discovery response in time")
            .map(|m| m.expect("stream ended"))
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        self.next().await.unwrap()
    }

    /// One change, received in as many parts as it comes in (each part but
    /// the last ACKed, as the server waits for that before the next).
    async fn recv_whole(&mut self) -> Vec<DeltaDiscoveryResponse> {
        let mut parts = Vec::new();
        for _ in 0..10_000 {
            let part = self.recv().await;
            let more = is_partial(&part);
            if more {
                self.ack(&part).await;
            }
            parts.push(part);
            if !more {
                return parts;
            }
        }
        panic!("a change in more than 10,000 parts");
    }
}

fn is_partial(response: &DeltaDiscoveryResponse) -> bool {
    response
        .system_version_info
        .ends_with(amesh_core::xds::MORE_FOLLOWS_SUFFIX)
}

/// Encoded size of `response`'s resources, as the server budgets them.
fn resource_bytes(response: &DeltaDiscoveryResponse) -> usize {
    response
        .resources
        .iter()
        .map(|r| r.name.len() + r.resource.as_ref().map_or(0, |a| a.value.len()))
        .sum()
}

/// name → content label of each resource in a response.
fn contents(response: &DeltaDiscoveryResponse) -> BTreeMap<String, String> {
    use prost::Message;
    response
        .resources
        .iter()
        .map(|r| {
            let any = r.resource.as_ref().unwrap();
            let message = NamespaceEnrollment::decode(any.value.as_slice()).unwrap();
            (r.name.clone(), message.labels["content"].clone())
        })
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn versions(response: &DeltaDiscoveryResponse) -> HashMap<String, String> {
    response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

fn three(generation: u64, b: &str) -> Arc<Derived> {
    derived(
        generation,
        &[
            (ADDRESS_TYPE, "a", "1", None),
            (ADDRESS_TYPE, "b", b, None),
            (ADDRESS_TYPE, "c", "1", None),
        ],
    )
}

#[tokio::test]
async fn subscribe_gets_full_state_then_deltas_after_ack() {
    let plane = start(three(1, "1")).await;
    let mut client = Client::connect(&plane, "node-a").await;
    client.subscribe(ADDRESS_TYPE, HashMap::new()).await;
    let full = client.recv().await;
    assert_eq!(contents(&full), map(&[("a", "1"), ("b", "1"), ("c", "1")]));
    assert!(full.removed_resources.is_empty());
    client.ack(&full).await;

    // b changes, c goes away: only those travel.
    plane.derived.send_replace(derived(
        2,
        &[
            (ADDRESS_TYPE, "a", "1", None),
            (ADDRESS_TYPE, "b", "2", None),
        ],
    ));
    let delta = client.recv().await;
    assert_eq!(contents(&delta), map(&[("b", "2")]));
    assert_eq!(delta.removed_resources, vec!["c".to_owned()]);
    assert_ne!(delta.nonce, full.nonce);
}

#[tokio::test]
async fn nack_keeps_old_state_and_is_not_resent() {
    let plane = start(three(1, "1")).await;
    let mut client = Client::connect(&plane, "node-a").await;
    client.subscribe(ADDRESS_TYPE, HashMap::new()).await;
    let full = client.recv().await;
    client.ack(&full).await;

    plane.derived.send_replace(three(2, "bad"));
    let rejected = client.recv().await;
    assert_eq!(contents(&rejected), map(&[("b", "bad")]));
    client.nack(&rejected).await;

    // Another change: only it arrives; the rejected b is not resent.
    plane.derived.send_replace(derived(
        3,
        &[
            (ADDRESS_TYPE, "a", "2", None),
            (ADDRESS_TYPE, "b", "bad", None),
            (ADDRESS_TYPE, "c", "1", None),
        ],
    ));
    let next = client.recv().await;
    assert_eq!(contents(&next), map(&[("a", "2")]));
    client.ack(&next).await;

    // b fixed: it is sent again, against the state the client kept.
    plane.derived.send_replace(derived(
        4,
        &[
            (ADDRESS_TYPE, "a", "2", None),
            (ADDRESS_TYPE, "b", "good", None),
            (ADDRESS_TYPE, "c", "1", None),
        ],
    ));
    let fixed = client.recv().await;
    assert_eq!(contents(&fixed), map(&[("b", "good")]));
}

#[tokio::test]
async fn reconnect_resends_only_what_differs() {
    let plane = start(three(1, "1")).await;
    let mut client = Client::connect(&plane, "node-a").await;
    client.subscribe(ADDRESS_TYPE, HashMap::new()).await;
    let full = client.recv().await;
    client.ack(&full).await;
    let held = versions(&full);
    drop(client);

    // Same versions: an empty response says the client is current.
    let mut again = Client::connect(&plane, "node-a").await;
    again.subscribe(ADDRESS_TYPE, held.clone()).await;
    let current = again.recv().await;
    assert!(current.resources.is_empty(), "{current:?}");
    assert!(current.removed_resources.is_empty());
    drop(again);

    // One stale version and one name that no longer exists.
    let mut stale = held.clone();
    stale.insert("b".into(), "0000".into());
    stale.insert("gone".into(), "1234".into());
    let mut third = Client::connect(&plane, "node-a").await;
    third.subscribe(ADDRESS_TYPE, stale).await;
    let resumed = third.recv().await;
    assert_eq!(contents(&resumed), map(&[("b", "1")]));
    assert_eq!(resumed.removed_resources, vec!["gone".to_owned()]);
}

#[tokio::test]
async fn node_scoped_resources_reach_only_their_node() {
    let specs = [
        (POD_ENROLLMENT_TYPE, "pod-a", "1", Some("node-a")),
        (POD_ENROLLMENT_TYPE, "pod-b", "1", Some("node-b")),
        (POD_ENROLLMENT_TYPE, "shared", "1", None),
    ];
    let plane = start(derived(1, &specs)).await;
    let mut a = Client::connect(&plane, "node-a").await;
    let mut b = Client::connect(&plane, "node-b").await;
    a.subscribe(POD_ENROLLMENT_TYPE, HashMap::new()).await;
    b.subscribe(POD_ENROLLMENT_TYPE, HashMap::new()).await;
    let ra = a.recv().await;
    let rb = b.recv().await;
    assert_eq!(contents(&ra), map(&[("pod-a", "1"), ("shared", "1")]));
    assert_eq!(contents(&rb), map(&[("pod-b", "1"), ("shared", "1")]));
    a.ack(&ra).await;
    b.ack(&rb).await;

    // pod-a moves to node-b: removed from a, added to b.
    plane.derived.send_replace(derived(
        2,
        &[
            (POD_ENROLLMENT_TYPE, "pod-a", "1", Some("node-b")),
            (POD_ENROLLMENT_TYPE, "pod-b", "1", Some("node-b")),
            (POD_ENROLLMENT_TYPE, "shared", "1", None),
        ],
    ));
    let da = a.recv().await;
    assert!(da.resources.is_empty());
    assert_eq!(da.removed_resources, vec!["pod-a".to_owned()]);
    let db = b.recv().await;
    assert_eq!(contents(&db), map(&[("pod-a", "1")]));
}

#[tokio::test]
async fn slow_client_gets_coalesced_latest_state_after_ack() {
    let plane = start(three(1, "1")).await;
    let mut client = Client::connect(&plane, "node-a").await;
    client.subscribe(ADDRESS_TYPE, HashMap::new()).await;
    let full = client.recv().await;

    // Changes while the first response is not acknowledged.
    plane.derived.send_replace(three(2, "2"));
    plane.derived.send_replace(derived(
        3,
        &[
            (ADDRESS_TYPE, "a", "1", None),
            (ADDRESS_TYPE, "b", "3", None),
        ],
    ));
    plane.derived.send_replace(derived(
        4,
        &[
            (ADDRESS_TYPE, "a", "1", None),
            (ADDRESS_TYPE, "b", "4", None),
            (ADDRESS_TYPE, "d", "1", None),
        ],
    ));
    // Nothing else was in flight: after the ACK the client converges on
    // the latest state (one coalesced delta, unless the ACK overtook the
    // server's view of the changes), never on a wrong one.
    client.ack(&full).await;
    let mut state = contents(&full);
    let expected = map(&[("a", "1"), ("b", "4"), ("d", "1")]);
    let mut responses = 0;
    while state != expected {
        assert!(responses < 3, "no convergence: {state:?}");
        let delta = client.recv().await;
        responses += 1;
        for name in &delta.removed_resources {
            state.remove(name);
        }
        state.extend(contents(&delta));
        client.ack(&delta).await;
    }
}

#[tokio::test]
async fn stale_nonce_is_ignored() {
    let plane = start(three(1, "1")).await;
    let mut client = Client::connect(&plane, "node-a").await;
    client.subscribe(ADDRESS_TYPE, HashMap::new()).await;
    let full = client.recv().await;
    client
        .send(DeltaDiscoveryRequest {
            type_url: ADDRESS_TYPE.into(),
            response_nonce: "not-a-nonce".into(),
            ..Default::default()
        })
        .await;
    plane.derived.send_replace(three(2, "2"));
    client.ack(&full).await;
    let delta = client.recv().await;
    assert_eq!(contents(&delta), map(&[("b", "2")]));
}

#[tokio::test]
async fn bad_token_and_wrong_node_are_refused() {
    let plane = start(three(1, "1")).await;
    let err = Client::try_connect(&plane, "nobody", "node-a")
        .await
        .err()
        .expect("a bad token must be refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    let mut client = Client::try_connect(&plane, "node-a", "node-b")
        .await
        .unwrap();
    client.subscribe(ADDRESS_TYPE, HashMap::new()).await;
    let err = client.next().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("caller is node node-a"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_reaches_a_hundred_subscribers_of_ten_thousand_resources() {
    let names: Vec<String> = (0..10_000).map(|i| format!("pod-{i:05}")).collect();
    fn specs<'a>(names: &'a [String], changed: &'a str) -> Vec<Spec<'a>> {
        names
            .iter()
            .map(|n| {
                let content = if n == "pod-00042" { changed } else { "1" };
                (ADDRESS_TYPE, n.as_str(), content, None)
            })
            .collect()
    }
    let plane = start(derived(1, &specs(&names, "1"))).await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut client = Client::connect(&plane, "node-a").await;
        client.subscribe(ADDRESS_TYPE, HashMap::new()).await;
        let parts = client.recv_whole().await;
        let total: usize = parts.iter().map(|p| p.resources.len()).sum();
        assert_eq!(total, 10_000);
        client.ack(parts.last().unwrap()).await;
        clients.push(client);
    }
    let start = std::time::Instant::now();
    plane.derived.send_replace(derived(2, &specs(&names, "2")));
    for client in &mut clients {
        let delta = client.recv().await;
        assert_eq!(contents(&delta), map(&[("pod-00042", "2")]));
    }
    let elapsed = start.elapsed();
    // Generous: a smoke check that pushes do not re-walk 10k per subscriber.
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    eprintln!("delta to 100 subscribers: {elapsed:?}");
}

/// A full state larger than one response's budget comes in parts: each
/// within the budget, the next only after the ACK, every resource exactly
/// once, only the last part unmarked. A change made while the parts are
/// in flight is in the state the client ends with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_state_comes_in_bounded_parts_and_ends_current() {
    use amesh_control_plane::xds::MAX_RESPONSE_BYTES;
    let names: Vec<String> = (0..20_000).map(|i| format!("pod-{i:05}")).collect();
    let specs = |changed: &str| -> Arc<Derived> {
        let specs: Vec<Spec<'_>> = names
            .iter()
            .map(|n| {
                let content = if n == "pod-19999" { changed } else { "1" };
                (ADDRESS_TYPE, n.as_str(), content, None)
            })
            .collect();
        derived(if changed == "1" { 1 } else { 2 }, &specs)
    };
    let plane = start(specs("1")).await;
    let mut client = Client::connect(&plane, "node-a").await;
    client.subscribe(ADDRESS_TYPE, HashMap::new()).await;

    let first = client.recv().await;
    assert!(is_partial(&first), "20,000 resources fit one response");
    assert!(resource_bytes(&first) <= MAX_RESPONSE_BYTES);
    // Nothing more until the ACK.
    let early = tokio::time::timeout(Duration::from_millis(200), client.rx.message()).await;
    assert!(
        early.is_err(),
        "a second part came before the first was ACKed"
    );
    // The last resource changes while the rest is still to come.
    plane.derived.send_replace(specs("2"));
    client.ack(&first).await;
    let mut held = contents(&first);
    let mut parts = 1;
    loop {
        let part = client.recv().await;
        parts += 1;
        assert!(resource_bytes(&part) <= MAX_RESPONSE_BYTES);
        for (name, content) in contents(&part) {
            assert!(
                held.insert(name.clone(), content).is_none() || name == "pod-19999",
                "{name} sent twice"
            );
        }
        client.ack(&part).await;
        if !is_partial(&part) {
            break;
        }
    }
    assert!(parts > 2, "only {parts} parts");
    assert_eq!(held.len(), 20_000);
    assert_eq!(held["pod-19999"], "2");
    assert!(held.values().filter(|c| *c == "1").count() == 19_999);
}

/// A newer derivation that changes much of what a change in parts already
/// sent starts the change again, in shorter parts. What the client got
/// from the first attempt still counts: a resource it received there and
/// that is now gone is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_change_in_parts_removes_what_the_first_attempt_sent() {
    let names: Vec<String> = (0..20_000).map(|i| format!("pod-{i:05}")).collect();
    let big = "x".repeat(400);
    let plane = start(derived(
        1,
        &names
            .iter()
            .map(|n| (ADDRESS_TYPE, n.as_str(), "1", None))
            .collect::<Vec<_>>(),
    ))
    .await;
    let mut client = Client::connect(&plane, "node-a").await;
    client.subscribe(ADDRESS_TYPE, HashMap::new()).await;
    let first = client.recv().await;
    assert!(is_partial(&first));
    let mut held = contents(&first);
    let last_sent = held.keys().next_back().unwrap().clone();
    // Everything before the last name sent grows (so the new attempt's
    // first part ends before it), and the last name sent is removed.
    let now: Vec<Spec<'_>> = names
        .iter()
        .filter(|n| **n != last_sent)
        .map(|n| {
            let content = if *n < last_sent { big.as_str() } else { "1" };
            (ADDRESS_TYPE, n.as_str(), content, None)
        })
        .collect();
    plane.derived.send_replace(derived(2, &now));
    client.ack(&first).await;
    for _ in 0..10_000 {
        let part = client.recv().await;
        for name in &part.removed_resources {
            held.remove(name);
        }
        held.extend(contents(&part));
        client.ack(&part).await;
        if !is_partial(&part) {
            break;
        }
    }
    let expected: BTreeMap<String, String> = now
        .iter()
        .map(|(_, n, c, _)| ((*n).to_owned(), (*c).to_owned()))
        .collect();
    assert!(
        !held.contains_key(&last_sent),
        "{last_sent} was not removed"
    );
    assert_eq!(held.len(), expected.len());
    assert!(held == expected, "the client ends with another state");
}
