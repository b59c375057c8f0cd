//! The readiness probe endpoint (Istio's port 15021, `/healthz/ready`).

use http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::server::{is_get, method_not_allowed, not_found, serve, text};

/// Whether the process is ready, and if not, why (shown in the 503 body, so
/// that `kubectl describe` on a failing probe says what is missing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// Ready to serve traffic.
    pub ready: bool,
    /// What is still missing when not ready (e.g. "waiting for ZDS snapshot").
    pub reason: String,
}

impl Readiness {
    /// Ready.
    pub fn ready() -> Self {
        Readiness {
            ready: true,
            reason: String::new(),
        }
    }

    /// Not ready, because of `reason`.
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Readiness {
            ready: false,
            reason: reason.into(),
        }
    }
}

impl Default for Readiness {
    /// Not ready: a process starts out not ready.
    fn default() -> Self {
        Readiness::not_ready("starting")
    }
}

/// Serves `GET /healthz/ready` on `listener` until `cancel`: 200 `ready` when
/// `ready` says so, else 503 `not ready: <reason>`. Other paths are 404.
///
/// If the sender is dropped the last value keeps being served.
pub async fn serve_readiness(
    listener: TcpListener,
    ready: watch::Receiver<Readiness>,
    cancel: CancellationToken,
) {
    serve(listener, cancel, "readiness", move |req| {
        match req.uri().path() {
            "/healthz/ready" if is_get(req.method()) => {
                let state = ready.borrow();
                if state.ready {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {}\n", state.reason),
                    )
                }
            }
            "/healthz/ready" => method_not_allowed("GET, HEAD"),
            other => not_found(other),
        }
    })
    .await;
}
