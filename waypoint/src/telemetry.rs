//! Istio's request metrics as a waypoint reports them (`reporter=
//! "waypoint"`): `istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes` and `istio_response_bytes`, with the standard labels
//! (the TCP metrics' set from `amesh_core::metrics`, plus the response code
//! and the gRPC status), and one JSON access-log line per request.

use std::sync::Arc;
use std::time::Duration;

use amesh_core::metrics::ConnectionLabels;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

/// Istio's default buckets for `istio_request_duration_milliseconds`.
const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];

/// Istio's default buckets for the byte-size histograms: 1 B to 1 GB.
const SIZE_BUCKETS: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// One request's labels: the connection's, then what the request ended as.
/// `request_protocol` in the connection labels is `http` or `grpc`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub connection: ConnectionLabels,
    /// The HTTP status sent to the client, as a string (`"200"`); `"0"`
    /// when none was (the client went away first), as Envoy.
    pub response_code: Arc<str>,
    /// The gRPC status for gRPC requests (`"0"` is OK), else `"-"`.
    pub grpc_response_status: Arc<str>,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

/// The four request series.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
}

impl RequestMetrics {
    /// Creates the series and registers them (names as Istio's; the
    /// registry adds `_total` to the counter).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(size_histogram),
            response_bytes: Family::new_with_constructor(size_histogram),
        };
        registry.register(
            "istio_requests",
            "Requests the waypoint handled",
            metrics.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Time from the request's first byte to the response's last",
            metrics.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request sizes (headers and body)",
            metrics.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response sizes (headers and body)",
            metrics.response_bytes.clone(),
        );
        metrics
    }

    /// Records one finished request.
    pub fn record(
        &self,
        labels: &RequestLabels,
        duration: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        self.requests.get_or_create(labels).inc();
        self.duration
            .get_or_create(labels)
            .observe(duration.as_secs_f64() * 1e3);
        self.request_bytes
            .get_or_create(labels)
            .observe(request_bytes as f64);
        self.response_bytes
            .get_or_create(labels)
            .observe(response_bytes as f64);
    }
}

/// What the access log says of one request.
#[derive(Clone, Debug, Default)]
pub struct AccessEntry<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    /// Envoy-style flags, `"-"` when none (e.g. `NR`: no route).
    pub response_flags: &'a str,
    pub duration: Duration,
    /// Time to the upstream's first response byte, when there was one.
    pub upstream_duration: Option<Duration>,
    /// `ip:port` of the endpoint that answered, when one did.
    pub upstream_host: Option<&'a str>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub request_id: &'a str,
    /// The route that matched (`VirtualService ns/name`), when one did.
    pub route: Option<&'a str>,
}

impl AccessEntry<'_> {
    /// The JSON line (without the newline).
    pub fn json(&self) -> Value {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        json!({
            "method": self.method,
            "path": self.path,
            "authority": self.authority,
            "protocol": self.protocol,
            "response_code": self.status,
            "response_flags": self.response_flags,
            "duration_ms": ms(self.duration),
            "upstream_duration_ms": self.upstream_duration.map(ms),
            "upstream_host": self.upstream_host,
            "bytes_received": self.request_bytes,
            "bytes_sent": self.response_bytes,
            "request_id": self.request_id,
            "route": self.route,
        })
    }
}

#[cfg(test)]
mod tests {
    use amesh_core::metrics::{Reporter, WorkloadFacts};
    use prometheus_client::encoding::text::encode;

    use super::*;

    fn labels(code: &str) -> RequestLabels {
        let src = WorkloadFacts::from_labels(
            "client",
            "shop",
            "spiffe://cluster.local/ns/shop/sa/client",
            &[("app".to_owned(), "client".to_owned())].into(),
        );
        let mut connection = ConnectionLabels::new(
            Reporter::Waypoint,
            Some(&src),
            None,
            Some(("reviews.shop.svc.cluster.local", "shop", "reviews")),
            true,
        );
        connection.request_protocol = "http";
        RequestLabels {
            connection,
            response_code: Arc::from(code),
            grpc_response_status: Arc::from("-"),
        }
    }

    #[test]
    fn requests_are_counted_with_istios_names_and_labels() {
        let mut registry = Registry::default();
        let metrics = RequestMetrics::register(&mut registry);
        metrics.record(&labels("200"), Duration::from_millis(3), 120, 2_000);
        metrics.record(&labels("200"), Duration::from_millis(7), 80, 10);
        metrics.record(&labels("404"), Duration::from_micros(300), 50, 0);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix) && l.contains("response_code=\"200\""))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .to_owned()
        };
        let total = line("istio_requests_total{");
        assert!(total.ends_with(" 2"), "{total}");
        for label in [
            "reporter=\"waypoint\"",
            "source_workload=\"client\"",
            "source_app=\"client\"",
            "destination_service=\"reviews.shop.svc.cluster.local\"",
            "request_protocol=\"http\"",
            "connection_security_policy=\"mutual_tls\"",
            "grpc_response_status=\"-\"",
        ] {
            assert!(total.contains(label), "{label} in {total}");
        }
        let count = line("istio_request_duration_milliseconds_count{");
        assert!(count.ends_with(" 2"), "{count}");
        let bucket = text
            .lines()
            .find(|l| {
                l.starts_with("istio_request_duration_milliseconds_bucket{")
                    && l.contains("le=\"5.0\"")
                    && l.contains("response_code=\"200\"")
            })
            .unwrap();
        assert!(bucket.ends_with(" 1"), "3 ms in le=5, 7 ms not: {bucket}");
        let bytes = line("istio_response_bytes_sum{");
        assert!(bytes.ends_with(" 2010.0"), "{bytes}");
        assert!(text.contains("response_code=\"404\""));
    }

    #[test]
    fn access_log_line_has_what_an_operator_looks_for() {
        let entry = AccessEntry {
            method: "GET",
            path: "/reviews/1",
            authority: "reviews.shop:9080",
            protocol: "HTTP/1.1",
            status: 503,
            response_flags: "UF",
            duration: Duration::from_millis(12),
            upstream_duration: None,
            upstream_host: Some("10.0.0.7:9080"),
            request_bytes: 0,
            response_bytes: 19,
            request_id: "4f1c-id",
            route: Some("VirtualService shop/reviews"),
        };
        let line = entry.json().to_string();
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["method"], "GET");
        assert_eq!(back["response_code"], 503);
        assert_eq!(back["response_flags"], "UF");
        assert_eq!(back["upstream_host"], "10.0.0.7:9080");
        assert_eq!(back["upstream_duration_ms"], Value::Null);
        assert_eq!(back["request_id"], "4f1c-id");
        assert_eq!(back["duration_ms"], 12.0);
        assert!(!line.contains('\n'));
    }
}
