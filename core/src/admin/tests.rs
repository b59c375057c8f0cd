use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::metrics::{ConnectionLabels, Metrics, Reporter};

const TIMEOUT: Duration = Duration::from_secs(5);

struct Server {
    addr: std::net::SocketAddr,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    async fn start<F, Fut>(serve: F) -> Server
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, cancel.clone()));
        Server { addr, cancel, task }
    }

    /// Cancels and checks that the server stops and stops listening.
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("server did not stop after cancel")
            .unwrap();
        assert!(
            TcpStream::connect(self.addr).await.is_err(),
            "still accepting after cancel"
        );
    }
}

#[derive(Debug)]
struct Reply {
    status_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes, reads until the server closes, parses status and body.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> Reply {
    tokio::time::timeout(TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("no header end");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap().to_owned();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        Reply {
            status_line,
            headers,
            body: body.to_owned(),
        }
    })
    .await
    .expect("request timed out")
}

async fn request(addr: std::net::SocketAddr, method: &str, target: &str) -> Reply {
    let req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

#[tokio::test]
async fn metrics_endpoint() {
    let metrics = Metrics::new();
    let l = ConnectionLabels::new(Reporter::Source, None, None, None, false);
    metrics.tcp().opened(&l);
    let m = metrics.clone();
    let srv = Server::start(move |lis, c| serve_metrics(lis, m, c)).await;

    let r = request(srv.addr, "GET", "/metrics").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(
        r.body.contains("istio_tcp_connections_opened_total{"),
        "{}",
        r.body
    );
    assert!(r.body.contains("process_cpu_seconds_total"));
    assert!(r.body.ends_with("# EOF\n"));

    // Live: a second scrape sees new counts.
    metrics.tcp().opened(&l);
    let r = request(srv.addr, "GET", "/metrics").await;
    let line = r
        .body
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .unwrap();
    assert!(line.ends_with(" 2"), "{line}");

    let r = request(srv.addr, "GET", "/nope").await;
    assert_eq!(r.status_line, "HTTP/1.1 404 Not Found");
    assert_eq!(r.body, "not found: /nope\n");
    let r = request(srv.addr, "POST", "/metrics").await;
    assert_eq!(r.status_line, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = request(srv.addr, "HEAD", "/metrics").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, "");
    srv.stop().await;
}

#[tokio::test]
async fn readiness_endpoint_follows_the_watch() {
    let (tx, rx) = watch::channel(Readiness::default());
    let srv = Server::start(move |lis, c| serve_readiness(lis, rx, c)).await;

    let r = request(srv.addr, "GET", "/healthz/ready").await;
    assert_eq!(r.status_line, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(r.body, "not ready: starting\n");

    tx.send(Readiness::not_ready("waiting for ZDS snapshot"))
        .unwrap();
    let r = request(srv.addr, "GET", "/healthz/ready").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.body, "not ready: waiting for ZDS snapshot\n");

    tx.send(Readiness::ready()).unwrap();
    let r = request(srv.addr, "GET", "/healthz/ready").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.body, "ready\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    // The last value stays served once the sender is gone.
    drop(tx);
    assert_eq!(
        request(srv.addr, "GET", "/healthz/ready").await.status(),
        200
    );

    let r = request(srv.addr, "GET", "/healthz").await;
    assert_eq!(r.status(), 404);
    let r = request(srv.addr, "DELETE", "/healthz/ready").await;
    assert_eq!(r.status(), 405);
    srv.stop().await;
}

#[derive(Debug)]
struct FakeAdmin {
    level: Mutex<String>,
}

impl AdminHandler for FakeAdmin {
    fn config_dump(&self) -> serde_json::Value {
        serde_json::json!({"workloads": [{"name": "backend-0", "namespace": "default"}]})
    }

    fn log_level(&self) -> String {
        self.level.lock().unwrap().clone()
    }

    fn set_log_level(&self, filter: &str) -> Result<(), String> {
        if filter.contains("bogus") {
            return Err(format!("unknown level in {filter:?}"));
        }
        if filter == "panic" {
            panic!("handler bug");
        }
        *self.level.lock().unwrap() = filter.to_owned();
        Ok(())
    }
}

#[tokio::test]
async fn admin_endpoint_routes() {
    let admin = Arc::new(FakeAdmin {
        level: Mutex::new("info".to_owned()),
    });
    let a: Arc<dyn AdminHandler> = admin.clone();
    let srv = Server::start(move |lis, c| serve_admin(lis, a, c)).await;

    let r = request(srv.addr, "GET", "/").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    for route in ["/config_dump", "/logging", "/logging?level="] {
        assert!(r.body.contains(route), "{}", r.body);
    }

    let r = request(srv.addr, "GET", "/config_dump").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["workloads"][0]["name"], "backend-0");
    assert!(r.body.contains("\n  "), "not pretty: {}", r.body);

    let r = request(srv.addr, "GET", "/logging").await;
    assert_eq!((r.status(), r.body.as_str()), (200, "info\n"));

    let r = request(srv.addr, "POST", "/logging?level=debug").await;
    assert_eq!((r.status(), r.body.as_str()), (200, "debug\n"));
    assert_eq!(*admin.level.lock().unwrap(), "debug");

    // URL-encoded and raw forms of a filter with '=' and ','.
    let r = request(srv.addr, "POST", "/logging?level=ztunnel%3Ddebug%2Cinfo").await;
    assert_eq!((r.status(), r.body.as_str()), (200, "ztunnel=debug,info\n"));
    let r = request(srv.addr, "POST", "/logging?level=amesh=trace,warn").await;
    assert_eq!((r.status(), r.body.as_str()), (200, "amesh=trace,warn\n"));

    // Refused by the handler: 400 with its reason; level unchanged.
    let r = request(srv.addr, "POST", "/logging?level=bogus").await;
    assert_eq!(r.status_line, "HTTP/1.1 400 Bad Request");
    assert!(r.body.contains("unknown level in \"bogus\""), "{}", r.body);
    assert_eq!(*admin.level.lock().unwrap(), "amesh=trace,warn");

    for bad in [
        "/logging",
        "/logging?level=",
        "/logging?x=1",
        "/logging?level=%zz",
        "/logging?level=%ff",
    ] {
        let r = request(srv.addr, "POST", bad).await;
        assert_eq!(r.status(), 400, "{bad}: {r:?}");
        assert!(!r.body.is_empty());
    }

    let r = request(srv.addr, "PUT", "/logging?level=debug").await;
    assert_eq!(r.status_line, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    assert_eq!(
        request(srv.addr, "POST", "/config_dump").await.status(),
        405
    );
    assert_eq!(request(srv.addr, "DELETE", "/").await.status(), 405);
    let r = request(srv.addr, "GET", "/stats").await;
    assert_eq!(r.status_line, "HTTP/1.1 404 Not Found");

    // A panicking handler costs one 500, not the server.
    let r = request(srv.addr, "POST", "/logging?level=panic").await;
    assert_eq!(r.status_line, "HTTP/1.1 500 Internal Server Error");
    assert_eq!(request(srv.addr, "GET", "/logging").await.status(), 200);

    srv.stop().await;
}

#[tokio::test]
async fn garbage_requests_get_errors_not_panics() {
    let srv = Server::start(|lis, c| serve_metrics(lis, Metrics::new(), c)).await;
    let r = raw(srv.addr, b"this is not http\r\n\r\n").await;
    assert_eq!(r.status(), 400, "{r:?}");
    // Absurdly long target: refused, server still fine.
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20));
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let _ = s.write_all(long.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 4"),
        "{:?}",
        &buf.get(..40)
    );
    assert_eq!(request(srv.addr, "GET", "/metrics").await.status(), 200);
    srv.stop().await;
}

#[tokio::test]
async fn cancel_closes_idle_keepalive_connections() {
    let srv = Server::start(|lis, c| serve_metrics(lis, Metrics::new(), c)).await;
    // A keep-alive client that made one request and stays connected.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("# EOF\n") {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let started = std::time::Instant::now();
    srv.stop().await;
    // Idle connections are closed at once, not left to the drain timeout.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "connection still open after shutdown");
}

#[tokio::test]
async fn listener_from_std_serves() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listener = listener_from_std(std_listener).unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let (_tx, rx) = watch::channel(Readiness::ready());
    let task = tokio::spawn(serve_readiness(listener, rx, cancel.clone()));
    assert_eq!(request(addr, "GET", "/healthz/ready").await.status(), 200);
    cancel.cancel();
    tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
}
