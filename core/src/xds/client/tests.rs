//! The client against a scripted delta ADS server on loopback: what it
//! subscribes with, ACK/NACK, the state a NACK keeps, resuming after a
//! reconnect, the bearer token, TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prost_types::value::Kind;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codegen::tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::config::ConfigSnapshot;
use crate::xds::proto::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use crate::xds::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use crate::xds::{ADDRESS_TYPE, AUTHORIZATION_TYPE};

const DEADLINE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// One stream a client opened, for the test to drive.
struct Opened {
    metadata: MetadataMap,
    requests: Streaming<DeltaDiscoveryRequest>,
    responses: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

impl Opened {
    async fn recv(&mut self) -> DeltaDiscoveryRequest {
        within("a request", self.requests.message())
            .await
            .expect("request stream failed")
            .expect("request stream ended")
    }

    /// The first request of each type, by type.
    async fn subscriptions(&mut self, n: usize) -> HashMap<String, DeltaDiscoveryRequest> {
        let mut by_type = HashMap::new();
        for _ in 0..n {
            let request = self.recv().await;
            by_type.insert(request.type_url.clone(), request);
        }
        by_type
    }

    async fn push(&self, response: DeltaDiscoveryResponse) {
        self.responses.send(Ok(response)).await.unwrap();
    }

    fn bearer(&self) -> Option<String> {
        self.metadata
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

struct Ads {
    opened: mpsc::UnboundedSender<Opened>,
}

#[tonic::codegen::async_trait]
impl AggregatedDiscoveryService for Ads {
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (responses, rx) = mpsc::channel(16);
        let (metadata, _, requests) = request.into_parts();
        self.opened
            .send(Opened {
                metadata,
                requests,
                responses,
            })
            .map_err(|_| Status::unavailable("test finished"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A scripted ADS server; streams the clients open arrive on the receiver.
struct TestServer {
    port: u16,
    opened: mpsc::UnboundedReceiver<Opened>,
    _stop: tokio_util::sync::DropGuard,
}

impl TestServer {
    async fn next_stream(&mut self) -> Opened {
        within("the client to open a stream", self.opened.recv())
            .await
            .expect("server stopped")
    }
}

async fn serve<IO, S>(incoming: S) -> (mpsc::UnboundedReceiver<Opened>, tokio_util::sync::DropGuard)
where
    S: Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    let (opened, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(Ads { opened }))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
            .unwrap();
    });
    (rx, stop.drop_guard())
}

async fn plaintext_server() -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (opened, stop) = serve(TcpListenerStream::new(listener)).await;
    TestServer {
        port,
        opened,
        _stop: stop,
    }
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "amesh-xds-client-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn resource(name: &str, version: &str, value: &str) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(prost_types::Any {
            type_url: ADDRESS_TYPE.into(),
            value: value.as_bytes().to_vec(),
        }),
        ..Default::default()
    }
}

fn push(
    type_url: &str,
    nonce: &str,
    resources: Vec<Resource>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: nonce.into(),
        resources,
        removed_resources: removed.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// Name → version of one type, as a handler saw it.
fn versions(state: &XdsState, type_url: &str) -> Vec<(String, String)> {
    state
        .resources(type_url)
        .iter()
        .map(|(name, entry)| (name.clone(), entry.version.clone()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn config(address: String, token_file: Option<PathBuf>) -> ClientConfig {
    ClientConfig {
        token_file,
        reconnect_max: Duration::from_millis(200),
        ..ClientConfig::new(
            address,
            "node-a",
            "ztunnel",
            vec![ADDRESS_TYPE, AUTHORIZATION_TYPE],
        )
    }
}

/// A handler that refuses any resource whose body is `bad`, and reports
/// every state it is shown.
fn recording_handler() -> (impl XdsHandler, mpsc::UnboundedReceiver<XdsState>) {
    let (seen, rx) = mpsc::unbounded_channel();
    let handler = move |state: &XdsState| {
        seen.send(state.clone()).unwrap();
        match state
            .resources(ADDRESS_TYPE)
            .iter()
            .find(|(_, e)| e.body.value == b"bad")
        {
            Some((name, _)) => Err(format!("address {name} is invalid")),
            None => Ok(()),
        }
    };
    (handler, rx)
}

fn metadata_text(request: &DeltaDiscoveryRequest, key: &str) -> String {
    let node = request
        .node
        .as_ref()
        .expect("first request carries the node");
    let value = node.metadata.as_ref().unwrap().fields.get(key).unwrap();
    match &value.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        other => panic!("metadata {key} is {other:?}"),
    }
}

#[tokio::test]
async fn subscribes_acks_nacks_and_resumes_after_reconnect() {
    let mut server = plaintext_server().await;
    let token = temp_file("token", b"first-token\n");
    let (handler, mut seen) = recording_handler();
    let cancel = CancellationToken::new();
    let client = tokio::spawn(run(
        config(
            format!("http://127.0.0.1:{}", server.port),
            Some(token.clone()),
        ),
        handler,
        cancel.clone(),
    ));

    // Subscription: one wildcard request per type, with node and role.
    let mut stream = server.next_stream().await;
    assert_eq!(stream.bearer().as_deref(), Some("Bearer first-token"));
    let subs = stream.subscriptions(2).await;
    assert_eq!(
        subs.keys().cloned().collect::<BTreeSet<_>>(),
        [ADDRESS_TYPE.to_owned(), AUTHORIZATION_TYPE.to_owned()].into()
    );
    for request in subs.values() {
        let node = request.node.as_ref().unwrap();
        assert_eq!(node.id, "node-a");
        assert_eq!(node.cluster, "ztunnel");
        assert_eq!(metadata_text(request, "NODE_NAME"), "node-a");
        assert_eq!(metadata_text(request, "ROLE"), "ztunnel");
        assert!(request.resource_names_subscribe.is_empty());
        assert!(request.initial_resource_versions.is_empty());
        assert!(request.response_nonce.is_empty());
        assert!(request.error_detail.is_none());
    }

    // A push is applied and ACKed with its nonce.
    stream
        .push(push(
            ADDRESS_TYPE,
            "n1",
            vec![resource("a", "1", "good"), resource("b", "1", "good")],
            &[],
        ))
        .await;
    let ack = stream.recv().await;
    assert_eq!(ack.type_url, ADDRESS_TYPE);
    assert_eq!(ack.response_nonce, "n1");
    assert!(ack.error_detail.is_none(), "{ack:?}");
    let state = within("handler", seen.recv()).await.unwrap();
    assert_eq!(
        versions(&state, ADDRESS_TYPE),
        pairs(&[("a", "1"), ("b", "1")])
    );

    // A refused push is NACKed with the handler's reason...
    stream
        .push(push(
            ADDRESS_TYPE,
            "n2",
            vec![resource("a", "2", "bad")],
            &["b"],
        ))
        .await;
    let nack = stream.recv().await;
    assert_eq!(nack.response_nonce, "n2");
    let detail = nack.error_detail.expect("NACK carries error_detail");
    assert_eq!(detail.code, 3);
    assert_eq!(detail.message, "address a is invalid");
    let tentative = within("handler", seen.recv()).await.unwrap();
    assert_eq!(versions(&tentative, ADDRESS_TYPE), pairs(&[("a", "2")]));

    // ...and the state stays as before it: the next push builds on that.
    stream
        .push(push(
            ADDRESS_TYPE,
            "n3",
            vec![resource("c", "1", "good")],
            &[],
        ))
        .await;
    let ack = stream.recv().await;
    assert_eq!(ack.response_nonce, "n3");
    assert!(ack.error_detail.is_none());
    let state = within("handler", seen.recv()).await.unwrap();
    assert_eq!(
        versions(&state, ADDRESS_TYPE),
        pairs(&[("a", "1"), ("b", "1"), ("c", "1")])
    );
    assert!(!state.complete(), "authorizations have not been pushed yet");

    stream
        .push(push(
            AUTHORIZATION_TYPE,
            "n4",
            vec![resource("p", "7", "good")],
            &[],
        ))
        .await;
    let ack = stream.recv().await;
    assert_eq!(
        (ack.type_url.as_str(), ack.response_nonce.as_str()),
        (AUTHORIZATION_TYPE, "n4")
    );
    let state = within("handler", seen.recv()).await.unwrap();
    assert!(state.complete());

    // The server drops the stream: the client comes back with what it
    // holds, and the token as the file says now.
    std::fs::write(&token, "rotated-token").unwrap();
    drop(stream);
    let mut stream = server.next_stream().await;
    assert_eq!(stream.bearer().as_deref(), Some("Bearer rotated-token"));
    let subs = stream.subscriptions(2).await;
    let held = |type_url: &str| {
        let mut v: Vec<_> = subs[type_url]
            .initial_resource_versions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        held(ADDRESS_TYPE),
        pairs(&[("a", "1"), ("b", "1"), ("c", "1")])
    );
    assert_eq!(held(AUTHORIZATION_TYPE), pairs(&[("p", "7")]));

    // A removal after the resume applies to the kept state.
    stream.push(push(ADDRESS_TYPE, "n5", vec![], &["a"])).await;
    assert_eq!(stream.recv().await.response_nonce, "n5");
    let state = within("handler", seen.recv()).await.unwrap();
    assert_eq!(
        versions(&state, ADDRESS_TYPE),
        pairs(&[("b", "1"), ("c", "1")])
    );

    cancel.cancel();
    within("the client to stop", client).await.unwrap().unwrap();
}

#[tokio::test]
async fn unsubscribed_type_is_nacked() {
    let mut server = plaintext_server().await;
    let (handler, _seen) = recording_handler();
    let cancel = CancellationToken::new();
    let _guard = cancel.clone().drop_guard();
    tokio::spawn(run(
        config(format!("http://127.0.0.1:{}", server.port), None),
        handler,
        cancel,
    ));
    let mut stream = server.next_stream().await;
    assert_eq!(stream.bearer(), None);
    stream.subscriptions(2).await;
    stream
        .push(push("type.googleapis.com/other.Thing", "x1", vec![], &[]))
        .await;
    let nack = stream.recv().await;
    assert_eq!(nack.response_nonce, "x1");
    assert!(
        nack.error_detail
            .unwrap()
            .message
            .contains("not subscribed"),
    );
}

#[tokio::test]
async fn snapshot_is_published_once_every_type_has_arrived() {
    let mut server = plaintext_server().await;
    let cancel = CancellationToken::new();
    let _guard = cancel.clone().drop_guard();
    let build = |state: &XdsState| {
        if state.bodies(ADDRESS_TYPE).any(|a| a.value == b"bad") {
            return Err("bad address".to_owned());
        }
        Ok(ConfigSnapshot::default())
    };
    let (mut rx, _task) = watch_snapshot(
        config(format!("http://127.0.0.1:{}", server.port), None),
        build,
        cancel.clone(),
    );
    let mut stream = server.next_stream().await;
    stream.subscriptions(2).await;

    // Addresses alone: checked (a bad one is NACKed) but not published.
    stream
        .push(push(
            ADDRESS_TYPE,
            "n1",
            vec![resource("a", "1", "bad")],
            &[],
        ))
        .await;
    assert!(stream.recv().await.error_detail.is_some());
    stream
        .push(push(
            ADDRESS_TYPE,
            "n2",
            vec![resource("a", "2", "good")],
            &[],
        ))
        .await;
    assert!(stream.recv().await.error_detail.is_none());
    assert!(matches!(
        first_push(&mut rx, Some(Duration::ZERO)).await,
        Err(XdsError::FirstPushTimeout(_))
    ));

    stream
        .push(push(AUTHORIZATION_TYPE, "n3", vec![], &[]))
        .await;
    assert!(stream.recv().await.error_detail.is_none());
    within("first push", first_push(&mut rx, None))
        .await
        .unwrap();
    // Any clone of the receiver sees it too.
    let mut clone = rx.clone();
    first_push(&mut clone, Some(Duration::ZERO)).await.unwrap();
}

#[test]
fn unusable_addresses_are_named() {
    let check = |address: &str, root: Option<&str>| {
        let mut config = ClientConfig::new(address, "n", "ztunnel", vec![ADDRESS_TYPE]);
        config.root_cert = root.map(PathBuf::from);
        config.validate().unwrap_err().to_string()
    };
    let err = check("https://cp:15012", None);
    assert!(
        err.contains("https://cp:15012") && err.contains("root certificate"),
        "{err}"
    );
    let err = check("http://cp:15010", Some("/ca.pem"));
    assert!(err.contains("plaintext"), "{err}");
    let err = check("cp:15010", None);
    assert!(err.contains("\"cp:15010\""), "{err}");
    let err = check("http://cp", None);
    assert!(err.contains("no port"), "{err}");
    let err = check("https://cp:15012", Some("/nonexistent/ca.pem"));
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

/// A TLS server stream tonic can serve (tonic implements `Connected` for
/// rustls streams only with its own TLS features).
struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn connects_over_tls_verifying_the_control_plane() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["cp.amesh.test".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let root = temp_file("cp-root.pem", cert.pem().as_bytes());
    let mut server_config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    server_config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = TcpListenerStream::new(listener).then(move |tcp| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(tcp?).await.map(TlsIo) }
    });
    let (opened, stop) = serve(Box::pin(incoming)).await;
    let mut server = TestServer {
        port,
        opened,
        _stop: stop,
    };

    let cancel = CancellationToken::new();
    let _guard = cancel.clone().drop_guard();
    let mut config = config(format!("https://127.0.0.1:{}", server.port), None);
    config.root_cert = Some(root);
    config.server_name = Some("cp.amesh.test".into());
    let (handler, mut seen) = recording_handler();
    tokio::spawn(run(config, handler, cancel));
    let mut stream = server.next_stream().await;
    stream.subscriptions(2).await;
    stream
        .push(push(
            ADDRESS_TYPE,
            "t1",
            vec![resource("a", "1", "good")],
            &[],
        ))
        .await;
    assert_eq!(stream.recv().await.response_nonce, "t1");
    let state = within("handler", seen.recv()).await.unwrap();
    assert_eq!(versions(&state, ADDRESS_TYPE), pairs(&[("a", "1")]));
}

#[test]
fn undecodable_resource_is_named_in_the_refusal() {
    let mut state = XdsState::new(&[ADDRESS_TYPE, AUTHORIZATION_TYPE]);
    let mut wrong = resource("default/echo", "1", "x");
    wrong.resource.as_mut().unwrap().type_url = "type.googleapis.com/other.Thing".into();
    state.apply(&push(ADDRESS_TYPE, "n1", vec![wrong], &[]), false);
    state.apply(&push(AUTHORIZATION_TYPE, "n2", vec![], &[]), false);
    let options = crate::xds::convert::ClientOptions::default();
    let err = snapshot_from_state(&state, &options).unwrap_err();
    assert!(
        err.starts_with("resource \"default/echo\" of type type.googleapis.com/istio.workload.Address: type_url:"),
        "{err}"
    );

    // Nothing pushed is an empty, valid snapshot.
    let empty = XdsState::new(&[ADDRESS_TYPE]);
    let snapshot = snapshot_from_state(&empty, &options).unwrap();
    assert_eq!(snapshot.workloads().count(), 0);
}

/// A change in parts: each part is ACKed as it comes, the data plane sees
/// the state once, whole, after the last part; until then the type does
/// not count as received.
#[tokio::test]
async fn a_change_in_parts_reaches_the_handler_once_whole() {
    let mut server = plaintext_server().await;
    let (handler, mut seen) = recording_handler();
    let cancel = CancellationToken::new();
    let client = tokio::spawn(run(
        config(format!("http://127.0.0.1:{}", server.port), None),
        handler,
        cancel.clone(),
    ));
    let mut stream = server.next_stream().await;
    stream.subscriptions(2).await;
    let part = |nonce: &str, name: &str, more: bool| DeltaDiscoveryResponse {
        system_version_info: if more {
            format!("7{}", crate::xds::MORE_FOLLOWS_SUFFIX)
        } else {
            "7".into()
        },
        ..push(ADDRESS_TYPE, nonce, vec![resource(name, "1", "good")], &[])
    };
    for (nonce, name) in [("p1", "a"), ("p2", "b")] {
        stream.push(part(nonce, name, true)).await;
        let ack = stream.recv().await;
        assert_eq!(ack.response_nonce, nonce);
        assert!(ack.error_detail.is_none(), "{ack:?}");
    }
    assert!(
        seen.try_recv().is_err(),
        "the handler saw a change before its last part"
    );
    stream.push(part("p3", "c", false)).await;
    let ack = stream.recv().await;
    assert_eq!(ack.response_nonce, "p3");
    let state = within("handler", seen.recv()).await.unwrap();
    assert_eq!(
        versions(&state, ADDRESS_TYPE),
        pairs(&[("a", "1"), ("b", "1"), ("c", "1")])
    );
    assert!(state.received(ADDRESS_TYPE));
    assert!(!state.received(AUTHORIZATION_TYPE));
    cancel.cancel();
    client.await.unwrap().unwrap();
}
