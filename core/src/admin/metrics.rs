//! The Prometheus scrape endpoint (Istio's port 15020).

use http::StatusCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::server::{is_get, method_not_allowed, not_found, response, serve};
use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};

/// Serves `GET /metrics` (OpenMetrics text) on `listener` until `cancel`.
/// Other paths are 404.
pub async fn serve_metrics(listener: TcpListener, metrics: Metrics, cancel: CancellationToken) {
    serve(listener, cancel, "metrics", move |req| {
        match req.uri().path() {
            "/metrics" if is_get(req.method()) => {
                response(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, metrics.encode())
            }
            "/metrics" => method_not_allowed("GET, HEAD"),
            other => not_found(other),
        }
    })
    .await;
}
