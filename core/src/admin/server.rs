//! The HTTP/1 accept loop shared by the admin servers, and response helpers.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Response type of every admin route: small, fully built bodies.
pub(crate) type AdminResponse = Response<Full<Bytes>>;

/// Connections served at once; more wait in the listen backlog. These ports
/// only see probes, scrapes and operators, so a small cap is plenty and keeps
/// a misbehaving client from costing more than a few tasks.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this, or is disconnected
/// (so idle or slow connections cannot hold the slots above).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After cancellation, how long in-flight responses get to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves HTTP/1.1 on `listener`, answering each request with `route`, until
/// `cancel` is cancelled. Then stops accepting, closes idle connections, lets
/// in-flight responses finish for up to [`DRAIN_TIMEOUT`] and returns.
///
/// A panic in `route` becomes a 500 for that request only.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    cancel: CancellationToken,
    server: &'static str,
    route: F,
) where
    F: Fn(&Request<Incoming>) -> AdminResponse + Send + Sync + 'static,
{
    let route = Arc::new(route);
    let local = listener.local_addr().ok();
    tracing::debug!(server, addr = ?local, "serving");
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        if conns.len() >= MAX_CONNECTIONS {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = conns.join_next() => continue,
            }
        }
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!(server, error = %e, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let route = route.clone();
        let cancel = cancel.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = std::panic::catch_unwind(AssertUnwindSafe(|| route(&req)))
                    .unwrap_or_else(|_| {
                        tracing::error!(server, path = req.uri().path(), "admin route panicked");
                        text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
                    });
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(server, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(server, left = conns.len(), "closing connections still open");
    }
    conns.shutdown().await;
    tracing::debug!(server, addr = ?local, "stopped");
}

/// A response with `status`, a body and its content type.
pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A `text/plain` response.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> AdminResponse {
    response(status, "text/plain; charset=utf-8", body)
}

pub(crate) fn not_found(path: &str) -> AdminResponse {
    text(StatusCode::NOT_FOUND, format!("not found: {path}\n"))
}

/// 405 with the `Allow` header listing what the route accepts.
pub(crate) fn method_not_allowed(allow: &'static str) -> AdminResponse {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; allowed: {allow}\n"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// GET, or HEAD (hyper leaves the body out).
pub(crate) fn is_get(method: &http::Method) -> bool {
    method == http::Method::GET || method == http::Method::HEAD
}
