//! End to end: ztunnel's telemetry and operational endpoints, scraped and
//! called the way Prometheus, kubelet and an operator would, from the node
//! netns (where ztunnel runs) and from pods.
//!
//! - `/metrics` (15020): Istio's TCP series count exactly the bytes a
//!   connection carried, at both ends, with the identities that were proven;
//!   a workload that leaves the config takes its series with it.
//! - `/healthz/ready` (15021): 503 until the node agent's snapshot is applied.
//! - admin (127.0.0.1:15000): `/config_dump` (workloads, certificates,
//!   policies, never a private key) and `/logging`; not reachable from pods.
//!
//! Needs root (network namespaces, nftables), as CI has. Every test builds
//! its own mesh; dropping it removes everything, also on failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;

use cases::backends;
use rstest_reuse::apply;
use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amesh_tests::harness::{
    AppSpec, Capture, HTTP_TIMEOUT, HttpResponse, Mesh, MeshBuilder, Node, PodSpec, ServiceSpec,
    poll_until,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const METRICS_PORT: u16 = 15020;
const READINESS_PORT: u16 = 15021;
const ADMIN_PORT: u16 = 15000;
const ECHO: u16 = 7001;
/// The test's own server in test (a): reads the request, answers with a
/// different number of bytes.
const ASYMMETRIC: u16 = 7100;
/// How long metrics may take to show a closed connection (counted at close)
/// or to drop a removed workload's series (after the config reload).
const METRICS_TIMEOUT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

const OPENED: &str = "istio_tcp_connections_opened_total";
const CLOSED: &str = "istio_tcp_connections_closed_total";
const RECEIVED: &str = "istio_tcp_received_bytes_total";
const SENT: &str = "istio_tcp_sent_bytes_total";

fn identity(namespace: &str, sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{namespace}/sa/{sa}")
}

fn start(builder: MeshBuilder) -> Mesh {
    let mut mesh = builder.build().expect("mesh builds");
    mesh.start().expect("mesh daemons start");
    mesh
}

// ---------------------------------------------------------------------------
// OpenMetrics text

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses an OpenMetrics text exposition: `#` lines are metadata, every
/// other line a sample; the text must end with `# EOF`.
fn parse_openmetrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        if eof {
            return Err(format!("line {}: content after # EOF", n + 1));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        samples.push(parse_sample(line).map_err(|e| format!("line {}: {e}: {line:?}", n + 1))?);
    }
    if !eof {
        return Err("no # EOF at the end".into());
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid_name {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let close = loop {
            // Label name up to '='.
            let Some(&(start, c)) = chars.peek() else {
                return Err("unterminated label set".into());
            };
            if c == '}' {
                break start;
            }
            let mut key_end = start;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    key_end = i;
                    break;
                }
                if !(c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("bad label name char {c:?}"));
                }
            }
            let key = &after[start..key_end];
            if key.is_empty() {
                return Err("empty label name".into());
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key}: value not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, '\\')) => value.push('\\'),
                        other => return Err(format!("label {key}: bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("label {key}: unterminated value")),
                }
            }
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => break i,
                other => return Err(format!("after label {key}: {other:?}")),
            }
        };
        rest = &after[close + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or_else(|| "no value".to_string())?;
    let value: f64 = value.parse().map_err(|_| format!("bad value {value:?}"))?;
    if let Some(ts) = fields.next()
        && ts != "#"
    {
        ts.parse::<f64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[test]
fn openmetrics_parser_reads_names_labels_values_and_requires_eof() {
    let text = "# HELP x_total X.\n# TYPE x counter\n\
        x_total{a=\"1\",b=\"q\\\"u\\\\o\\nte,}\"} 42\n\
        up 1 1700000000\n\
        empty{} 0.5\n# EOF\n";
    let samples = parse_openmetrics(text).unwrap();
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].name, "x_total");
    assert_eq!(samples[0].labels["a"], "1");
    assert_eq!(samples[0].labels["b"], "q\"u\\o\nte,}");
    assert_eq!(samples[0].value, 42.0);
    assert_eq!((samples[1].name.as_str(), samples[1].value), ("up", 1.0));
    assert!(samples[1].labels.is_empty());
    assert_eq!(samples[2].value, 0.5);
    assert!(parse_openmetrics("up 1\n").is_err(), "no EOF");
    assert!(parse_openmetrics("up 1\n# EOF\nup 2\n").is_err());
    assert!(parse_openmetrics("up{a=1} 1\n# EOF\n").is_err());
    assert!(parse_openmetrics("up{a=\"1\" 1\n# EOF\n").is_err());
    assert!(parse_openmetrics("up{a=\"1\",a=\"2\"} 1\n# EOF\n").is_err());
    assert!(parse_openmetrics("up x\n# EOF\n").is_err());
    assert!(parse_openmetrics("9up 1\n# EOF\n").is_err());
}

// ---------------------------------------------------------------------------
// Scraping

fn metrics_addr(node: &Node) -> SocketAddr {
    SocketAddr::from((node.underlay_ip, METRICS_PORT))
}

fn admin_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT))
}

/// `GET /metrics` on `node`'s ztunnel, from the node netns: the raw text.
fn scrape_text(mesh: &Mesh, node: usize) -> anyhow::Result<String> {
    let resp = mesh
        .node(node)
        .http_get(metrics_addr(mesh.node(node)), "/metrics")?;
    anyhow::ensure!(
        resp.status == 200,
        "node-{node} /metrics: {} {}",
        resp.status,
        resp.body
    );
    let content_type = resp.header("content-type").unwrap_or_default();
    anyhow::ensure!(
        content_type.starts_with("application/openmetrics-text"),
        "node-{node} /metrics content-type {content_type:?}"
    );
    Ok(resp.body)
}

fn scrape(mesh: &Mesh, node: usize) -> anyhow::Result<Vec<Sample>> {
    let text = scrape_text(mesh, node)?;
    parse_openmetrics(&text).map_err(|e| anyhow::anyhow!("node-{node} /metrics: {e}"))
}

/// The four `istio_tcp_*` values of one series (a label set).
#[derive(Debug, Clone, Copy, PartialEq)]
struct TcpCounts {
    opened: f64,
    closed: f64,
    received: f64,
    sent: f64,
}

/// One series' labels and its four counts.
type Series = (BTreeMap<String, String>, TcpCounts);

/// The series `reporter` reported for connections `src` → `dst` (workload
/// names): its labels and counts. `Err` if any of the four metrics has
/// more than one such series; `Ok(None)` if there is none yet.
fn pair_series(
    samples: &[Sample],
    reporter: &str,
    src: &str,
    dst: &str,
) -> Result<Option<Series>, String> {
    let one = |name: &str| -> Result<Option<&Sample>, String> {
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == name
                    && s.labels.get("reporter").map(String::as_str) == Some(reporter)
                    && s.labels.get("source_workload").map(String::as_str) == Some(src)
                    && s.labels.get("destination_workload").map(String::as_str) == Some(dst)
            })
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [s] => Ok(Some(*s)),
            many => Err(format!(
                "{} series of {name} for {reporter} {src} -> {dst}: {many:#?}",
                many.len()
            )),
        }
    };
    let (Some(opened), Some(closed), Some(received), Some(sent)) =
        (one(OPENED)?, one(CLOSED)?, one(RECEIVED)?, one(SENT)?)
    else {
        return Ok(None);
    };
    for other in [closed, received, sent] {
        if other.labels != opened.labels {
            return Err(format!(
                "the four series disagree on labels: {:?} vs {:?}",
                opened.labels, other.labels
            ));
        }
    }
    Ok(Some((
        opened.labels.clone(),
        TcpCounts {
            opened: opened.value,
            closed: closed.value,
            received: received.value,
            sent: sent.value,
        },
    )))
}

/// Polls `node`'s metrics until the `reporter` series for `src` → `dst`
/// has counted `closed` closed connections; returns it.
fn wait_closed(
    mesh: &Mesh,
    node: usize,
    reporter: &str,
    src: &str,
    dst: &str,
    closed: f64,
) -> Series {
    let mut last = None;
    let waited = poll_until(
        METRICS_TIMEOUT,
        format!("node-{node}: {reporter} series {src} -> {dst} with {closed} closed"),
        || {
            let samples = scrape(mesh, node)?;
            let series = pair_series(&samples, reporter, src, dst).map_err(anyhow::Error::msg)?;
            let done = series.as_ref().is_some_and(|(_, c)| c.closed >= closed);
            last = series;
            Ok(done)
        },
    );
    if let Err(err) = waited {
        let text = scrape_text(mesh, node).unwrap_or_else(|e| format!("(scrape failed: {e})"));
        let tcp: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("istio_tcp"))
            .collect();
        panic!(
            "{err}\nlast seen: {last:?}\nistio_tcp lines:\n{}\n{}",
            tcp.join("\n"),
            mesh.daemon_logs(node)
        );
    }
    last.expect("a series when the wait succeeded")
}

// ---------------------------------------------------------------------------
// (a) metrics equal the bytes sent

/// Request bytes client → server and response bytes server → client:
/// different, so a swap of `sent` and `received` cannot pass.
const REQUEST_BYTES: usize = 100_000;
const RESPONSE_BYTES: usize = 37_123;

/// Accepts one connection on `listener`, reads the request to EOF, answers
/// with [`RESPONSE_BYTES`] and closes. Returns the request's length.
async fn serve_once(listener: TcpListener) -> std::io::Result<usize> {
    let (mut conn, _) = listener.accept().await?;
    let mut request = Vec::new();
    conn.read_to_end(&mut request).await?;
    conn.write_all(&vec![b'r'; RESPONSE_BYTES]).await?;
    conn.shutdown().await?;
    Ok(request.len())
}

#[apply(backends)]
#[tokio::test]
async fn tcp_metrics_count_the_bytes_each_way_with_proven_identities_at_both_ends(
    #[case] capture: Capture,
) {
    const NS: &str = "shop";
    let mesh = start(
        MeshBuilder::new()
            .capture(capture)
            .nodes(2)
            .pod(
                PodSpec::new("client", 0)
                    .namespace(NS)
                    .service_account("buyer")
                    .label("app", "client"),
            )
            .pod(
                PodSpec::new("server", 1)
                    .namespace(NS)
                    .service_account("seller")
                    .label("app", "server")
                    .label("version", "v1"),
            )
            .service(
                ServiceSpec::new("store")
                    .namespace(NS)
                    .vip("10.96.0.20")
                    .port(80, ASYMMETRIC)
                    .endpoints(["server"]),
            ),
    );
    let listener = mesh
        .pod("server")
        .bind_std(SocketAddr::from(([0, 0, 0, 0], ASYMMETRIC)))
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(listener).unwrap();
    let vip: SocketAddr = "10.96.0.20:80".parse().unwrap();

    let client = async {
        let mut stream = mesh.pod("client").connect(vip).await?;
        stream.write_all(&vec![b'q'; REQUEST_BYTES]).await?;
        stream.shutdown().await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(response.len())
    };
    let (got_response, got_request) = tokio::time::timeout(IO_TIMEOUT, async {
        tokio::join!(client, serve_once(listener))
    })
    .await
    .expect("exchange finishes in time");
    let got_response =
        got_response.unwrap_or_else(|e| panic!("client: {e}\n{}", mesh.daemon_logs(0)));
    let got_request =
        got_request.unwrap_or_else(|e| panic!("server: {e}\n{}", mesh.daemon_logs(1)));
    assert_eq!(
        got_request, REQUEST_BYTES,
        "the server got the whole request"
    );
    assert_eq!(
        got_response, RESPONSE_BYTES,
        "the client got the whole response"
    );

    let expected_labels: BTreeMap<&str, String> = [
        ("source_workload", "client".to_string()),
        ("source_workload_namespace", NS.into()),
        ("source_principal", identity(NS, "buyer")),
        ("source_app", "client".into()),
        ("source_canonical_service", "client".into()),
        ("destination_workload", "server".into()),
        ("destination_workload_namespace", NS.into()),
        ("destination_principal", identity(NS, "seller")),
        ("destination_app", "server".into()),
        ("destination_version", "v1".into()),
        ("destination_canonical_revision", "v1".into()),
        ("destination_service", "store.shop.svc.cluster.local".into()),
        ("destination_service_name", "store".into()),
        ("destination_service_namespace", NS.into()),
        ("request_protocol", "tcp".into()),
        ("response_flags", "-".into()),
        ("connection_security_policy", "mutual_tls".into()),
    ]
    .into_iter()
    .collect();

    // Bytes are counted when the connection closes: wait for that, at the
    // destination (node 1) and at the source (node 0).
    for (node, reporter) in [(1, "destination"), (0, "source")] {
        let (labels, counts) = wait_closed(&mesh, node, reporter, "client", "server", 1.0);
        assert_eq!(
            counts,
            TcpCounts {
                opened: 1.0,
                closed: 1.0,
                received: REQUEST_BYTES as f64,
                sent: RESPONSE_BYTES as f64,
            },
            "node-{node} reporter={reporter}: opened/closed/request/response"
        );
        assert_eq!(labels["reporter"], reporter);
        for (key, want) in &expected_labels {
            assert_eq!(
                labels.get(*key),
                Some(want),
                "node-{node} reporter={reporter}: label {key} in {labels:#?}"
            );
        }
        // Each node only reports its own end.
        let other = if reporter == "source" {
            "destination"
        } else {
            "source"
        };
        let samples = scrape(&mesh, node).unwrap();
        assert_eq!(
            pair_series(&samples, other, "client", "server").unwrap(),
            None,
            "node-{node} also reported as {other}"
        );
    }
}

// ---------------------------------------------------------------------------
// (b) a deleted workload's series disappear

/// Sends `bytes` from `pod` to the echo app at `addr` and reads them back.
async fn echo_through(mesh: &Mesh, pod: &str, addr: SocketAddr, bytes: usize) {
    let exchange = async {
        let mut stream = mesh.pod(pod).connect(addr).await?;
        stream.write_all(&vec![b'e'; bytes]).await?;
        stream.shutdown().await?;
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await?;
        std::io::Result::Ok(back.len())
    };
    let got = tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{pod} -> {addr}: timed out"))
        .unwrap_or_else(|e| panic!("{pod} -> {addr}: {e}\n{}", mesh.daemon_logs(0)));
    assert_eq!(got, bytes, "{pod}: echo returned everything");
}

#[apply(backends)]
#[tokio::test]
async fn a_deleted_workload_takes_its_series_with_it_and_others_stay(#[case] capture: Capture) {
    let mut mesh = start(
        MeshBuilder::new()
            .capture(capture)
            .nodes(2)
            .pod(PodSpec::new("doomed", 0).service_account("doomed"))
            .pod(PodSpec::new("keeper", 0).service_account("keeper"))
            .pod(PodSpec::new("server", 1).service_account("server")),
    );
    mesh.start_app("server", AppSpec::default().echo(ECHO))
        .expect("app starts");
    let echo = mesh.pod("server").addr(ECHO);
    echo_through(&mesh, "doomed", echo, 1000).await;
    echo_through(&mesh, "keeper", echo, 2000).await;

    let mut before = BTreeMap::new();
    for (node, reporter) in [(0, "source"), (1, "destination")] {
        for src in ["doomed", "keeper"] {
            let (_, counts) = wait_closed(&mesh, node, reporter, src, "server", 1.0);
            before.insert((node, src), counts);
        }
        let text = scrape_text(&mesh, node).unwrap();
        assert!(
            text.lines().any(|l| l.contains("doomed")),
            "node-{node}: doomed's series exist before it is deleted"
        );
    }
    assert!(
        scrape_text(&mesh, 0)
            .unwrap()
            .contains(&format!("identity=\"{}\"", identity("default", "doomed"))),
        "node-0 exports doomed's certificate expiry"
    );

    // The config without doomed; keeper and server stay.
    mesh.remove_pod("doomed").unwrap();
    assert!(!mesh.render_config().contains("doomed"));
    for node in [0, 1] {
        let mut lines = Vec::new();
        let gone = poll_until(
            METRICS_TIMEOUT,
            format!("node-{node}: no metrics line mentions doomed"),
            || {
                lines = scrape_text(&mesh, node)?
                    .lines()
                    .filter(|l| l.contains("doomed"))
                    .map(str::to_owned)
                    .collect();
                Ok(lines.is_empty())
            },
        );
        if let Err(err) = gone {
            panic!(
                "{err}\nstill there:\n{}\n{}",
                lines.join("\n"),
                mesh.daemon_logs(node)
            );
        }
    }

    // keeper's series are untouched, at both ends.
    for (node, reporter) in [(0, "source"), (1, "destination")] {
        let samples = scrape(&mesh, node).unwrap();
        let kept = pair_series(&samples, reporter, "keeper", "server")
            .unwrap()
            .unwrap_or_else(|| panic!("node-{node}: keeper's {reporter} series were dropped"));
        assert_eq!(kept.1, before[&(node, "keeper")], "node-{node}: keeper");
        assert_eq!(kept.1.received, 2000.0);
    }
    assert!(
        scrape_text(&mesh, 0)
            .unwrap()
            .contains(&format!("identity=\"{}\"", identity("default", "keeper"))),
        "node-0 still exports keeper's certificate expiry"
    );
}

// ---------------------------------------------------------------------------
// (c) config dump, readiness, logging

const POLICIES: &str = "\
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-allows-client, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
    - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
      to: [{operation: {ports: [\"7001\"]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default-strict, namespace: default}
spec:
  mtls: {mode: STRICT}
";

/// Polls node 0's readiness endpoint at `addr` until it answers 200
/// "ready".
fn wait_ready(mesh: &Mesh, addr: SocketAddr, timeout: Duration) {
    let mut last = None;
    let ready = poll_until(timeout, "readiness 200", || {
        let resp = mesh.node(0).http_get(addr, "/healthz/ready")?;
        let ok = resp.status == 200;
        last = Some(resp);
        Ok(ok)
    });
    if let Err(err) = ready {
        panic!("{err}: {last:?}\n{}", mesh.daemon_logs(0));
    }
    assert_eq!(last.unwrap().body, "ready\n");
}

fn get_admin(mesh: &Mesh, node: usize, path: &str) -> HttpResponse {
    mesh.node(node)
        .http_get(admin_addr(), path)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.daemon_logs(node)))
}

/// The base64 body of a PEM file, without header lines or whitespace.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect()
}

fn names(list: &serde_json::Value, key: &str) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|v| v[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[apply(backends)]
#[tokio::test]
async fn config_dump_has_workloads_certificates_and_policies_but_no_private_key(
    #[case] capture: Capture,
) {
    let mut mesh = MeshBuilder::new()
        .capture(capture)
        .pod(
            PodSpec::new("client", 0)
                .service_account("client")
                .label("app", "client"),
        )
        .pod(
            PodSpec::new("server", 0)
                .service_account("server")
                .label("app", "server"),
        )
        .build()
        .expect("mesh builds");
    mesh.write_config_text(&format!("{}{POLICIES}", mesh.render_config()))
        .unwrap();
    mesh.start().expect("mesh daemons start");

    // Ready once the mesh is up.
    let ready_addr = SocketAddr::from((mesh.node(0).underlay_ip, READINESS_PORT));
    wait_ready(&mesh, ready_addr, Duration::from_secs(10));

    // Both pods' certificates are issued when their listeners come up;
    // wait (bounded) for both in the dump.
    let (client_id, server_id) = (identity("default", "client"), identity("default", "server"));
    let mut dump_text = String::new();
    let complete = poll_until(
        Duration::from_secs(10),
        "config dump with both certificates",
        || {
            let resp = mesh.node(0).http_get(admin_addr(), "/config_dump")?;
            anyhow::ensure!(resp.status == 200, "config_dump: {}", resp.status);
            anyhow::ensure!(
                resp.header("content-type") == Some("application/json"),
                "content-type {:?}",
                resp.header("content-type")
            );
            let dump: serde_json::Value = serde_json::from_str(&resp.body)?;
            dump_text = resp.body;
            let ids = names(&dump["certificates"], "identity");
            Ok(ids.contains(&client_id) && ids.contains(&server_id))
        },
    );
    if let Err(err) = complete {
        panic!("{err}\n{dump_text}\n{}", mesh.daemon_logs(0));
    }
    let dump: serde_json::Value = serde_json::from_str(&dump_text).unwrap();

    assert_eq!(dump["node"], "node-0");
    assert_eq!(
        names(&dump["workloads"], "uid"),
        BTreeSet::from(["default/client".to_string(), "default/server".to_string()])
    );
    for w in dump["workloads"].as_array().unwrap() {
        let sa = w["serviceAccount"].as_str().unwrap();
        assert_eq!(w["identity"], identity("default", sa), "{w}");
        assert_eq!(w["protocol"], "HBONE", "{w}");
    }
    assert_eq!(
        names(&dump["pods"], "uid"),
        BTreeSet::from(["default/client".to_string(), "default/server".to_string()])
    );

    let root_pem = std::fs::read_to_string(mesh.ca_dir().join("root-cert.pem")).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let certificates = dump["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 2, "one per identity: {certificates:#?}");
    for cert in certificates {
        let chain = cert["chain"].as_array().expect("chain is a list");
        assert!(!chain.is_empty(), "empty chain: {cert}");
        for pem in chain {
            let pem = pem.as_str().unwrap();
            assert!(
                pem.starts_with("-----BEGIN CERTIFICATE-----")
                    && pem.trim_end().ends_with("-----END CERTIFICATE-----"),
                "chain entry is not one PEM certificate: {pem}"
            );
        }
        let roots = cert["roots"].as_str().expect("roots are PEM");
        assert!(roots.contains("-----BEGIN CERTIFICATE-----"));
        assert_eq!(
            pem_body(roots),
            pem_body(&root_pem),
            "roots are the mesh CA's root certificate"
        );
        let (not_before, not_after) = (
            cert["notBefore"].as_u64().unwrap(),
            cert["notAfter"].as_u64().unwrap(),
        );
        assert!(
            not_before <= now + 60 && now < not_after,
            "validity {not_before}..{not_after} around now {now}"
        );
    }

    let policies = &dump["policies"];
    let authz = &policies["authorizationPolicies"];
    assert_eq!(
        names(authz, "name"),
        BTreeSet::from(["server-allows-client".to_string()]),
        "{policies:#}"
    );
    assert_eq!(authz[0]["namespace"], "default");
    assert!(
        authz[0]["spec"]
            .to_string()
            .contains("cluster.local/ns/default/sa/client"),
        "{authz:#}"
    );
    let peer = &policies["peerAuthentications"];
    assert_eq!(
        names(peer, "name"),
        BTreeSet::from(["default-strict".to_string()]),
        "{policies:#}"
    );
    assert!(peer[0]["spec"].to_string().contains("STRICT"), "{peer:#}");

    // No private key, in any form that names itself, nor the CA's key.
    assert!(
        !dump_text.contains("PRIVATE KEY"),
        "the config dump shows a private key"
    );
    let root_key = std::fs::read_to_string(mesh.ca_dir().join("root-key.pem")).unwrap();
    for line in root_key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            line.len() < 16 || !dump_text.contains(line),
            "the config dump contains the CA key"
        );
    }
}

#[apply(backends)]
#[tokio::test]
async fn readiness_is_503_until_the_node_agent_snapshot_then_200(#[case] capture: Capture) {
    let mut mesh = MeshBuilder::new()
        .capture(capture)
        .pod(PodSpec::new("app", 0))
        .build()
        .expect("mesh builds");
    std::fs::create_dir_all(mesh.ca_dir()).unwrap();
    // ztunnel first, with no node agent to send it a snapshot.
    mesh.start_ztunnel(0).unwrap();
    let addr = SocketAddr::from((mesh.node(0).underlay_ip, READINESS_PORT));
    let mut first = None;
    let up = poll_until(
        Duration::from_secs(10),
        "readiness server to answer",
        || {
            mesh.ztunnel_running(0)
                .then_some(())
                .ok_or_else(|| anyhow::anyhow!("ztunnel exited"))?;
            first = mesh.node(0).http_get(addr, "/healthz/ready").ok();
            Ok(first.is_some())
        },
    );
    if let Err(err) = up {
        panic!("{err}\n{}", mesh.ztunnel_log(0));
    }
    let first = first.unwrap();
    assert_eq!(first.status, 503, "not ready without a snapshot: {first:?}");
    assert!(first.body.starts_with("not ready"), "{first:?}");

    mesh.start_agent(0).unwrap();
    wait_ready(&mesh, addr, Duration::from_secs(15));
    mesh.wait_pod_ready("app", Duration::from_secs(10)).unwrap();
    assert!(
        mesh.ztunnel_log(0).contains("node agent snapshot received"),
        "ready came with the snapshot"
    );
}

#[apply(backends)]
#[tokio::test]
async fn logging_level_is_shown_changed_and_bad_filters_are_refused(#[case] capture: Capture) {
    let mesh = start(
        MeshBuilder::new()
            .capture(capture)
            .pod(PodSpec::new("app", 0)),
    );
    let node = mesh.node(0);
    let initial = get_admin(&mesh, 0, "/logging");
    assert_eq!(initial.status, 200, "{initial:?}");
    assert_eq!(
        initial.body.trim(),
        "info",
        "the harness runs RUST_LOG=info"
    );

    let set = node
        .http("POST", admin_addr(), "/logging?level=debug")
        .unwrap();
    assert_eq!((set.status, set.body.trim()), (200, "debug"), "{set:?}");
    let now = get_admin(&mesh, 0, "/logging");
    assert_eq!((now.status, now.body.trim()), (200, "debug"));

    // `not[valid` URL-encoded, so the filter itself is judged (not the URI).
    let bad = node
        .http("POST", admin_addr(), "/logging?level=not%5Bvalid")
        .unwrap();
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body.contains("invalid log filter"), "{bad:?}");
    // Unencoded, as an operator might type it: refused too.
    let raw = node
        .http("POST", admin_addr(), "/logging?level=not[valid")
        .unwrap();
    assert_eq!(raw.status, 400, "{raw:?}");
    let after = get_admin(&mesh, 0, "/logging");
    assert_eq!(
        after.body.trim(),
        "debug",
        "a refused filter changes nothing"
    );

    // GET cannot change it.
    let get_set = node.http_get(admin_addr(), "/logging?level=warn").unwrap();
    assert_eq!(get_set.status, 200);
    assert_eq!(get_admin(&mesh, 0, "/logging").body.trim(), "debug");

    // The change is logged (at info, which debug includes).
    poll_until(Duration::from_secs(5), "log line about the change", || {
        Ok(mesh.ztunnel_log(0).contains("log filter changed"))
    })
    .unwrap();
}

// ---------------------------------------------------------------------------
// (d) admin only on the node's loopback

#[apply(backends)]
#[tokio::test]
async fn admin_is_unreachable_from_pods_while_metrics_is_reachable(#[case] capture: Capture) {
    let mesh = start(
        MeshBuilder::new()
            .capture(capture)
            .pod(PodSpec::new("app", 0))
            .pod(PodSpec::new("plain", 0).mesh(false)),
    );
    let node = mesh.node(0);
    // Both node addresses a pod can route to: the underlay and its gateway.
    let node_ips = [node.underlay_ip, node.pod_gateway];

    // On the node: metrics at the node IP, admin on loopback only.
    for ip in node_ips {
        let resp = node
            .http_get(SocketAddr::from((ip, METRICS_PORT)), "/metrics")
            .unwrap();
        assert_eq!(resp.status, 200);
        assert!(resp.body.contains("process_"), "metrics body");
        let err = node
            .connect_std(SocketAddr::from((ip, ADMIN_PORT)), HTTP_TIMEOUT)
            .expect_err("admin must not listen on the node's addresses");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{ip}: {err}");
    }
    assert_eq!(
        get_admin(&mesh, 0, "/config_dump").status,
        200,
        "admin is up"
    );

    for ip in node_ips {
        // A pod outside the mesh: routes to the node work (metrics answers),
        // the admin port is refused.
        let plain = mesh.pod("plain");
        let resp = plain
            .http_get(SocketAddr::from((ip, METRICS_PORT)), "/metrics")
            .unwrap_or_else(|e| panic!("plain pod -> {ip} metrics: {e:#}"));
        assert_eq!(resp.status, 200);
        let err = plain
            .connect_std(SocketAddr::from((ip, ADMIN_PORT)), HTTP_TIMEOUT)
            .expect_err("admin reachable from a pod");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{ip}: {err}");

        // A mesh pod: ztunnel captures the connection (so the TCP connect
        // itself succeeds in the pod), passes it through, and the node
        // refuses it: the request never gets an answer.
        let app = mesh.pod("app");
        let resp = app
            .http_get(SocketAddr::from((ip, METRICS_PORT)), "/metrics")
            .unwrap_or_else(|e| panic!("mesh pod -> {ip} metrics: {e:#}"));
        assert_eq!(resp.status, 200);
        let admin = app.http_get(SocketAddr::from((ip, ADMIN_PORT)), "/config_dump");
        assert!(
            admin.is_err(),
            "mesh pod got an admin answer from {ip}: {admin:?}"
        );
    }
}

#[apply(backends)]
#[tokio::test]
async fn an_open_connection_shows_its_bytes_before_it_closes(#[case] capture: Capture) {
    let mut mesh = start(
        MeshBuilder::new()
            .capture(capture)
            .nodes(2)
            .pod(PodSpec::new("client", 0).service_account("client"))
            .pod(PodSpec::new("server", 1).service_account("server")),
    );
    mesh.start_app("server", AppSpec::default().echo(ECHO))
        .expect("app starts");
    const BYTES: usize = 12_345;
    let mut stream = mesh
        .pod("client")
        .connect(mesh.pod("server").addr(ECHO))
        .await
        .unwrap();
    stream.write_all(&[b'l'; BYTES]).await.unwrap();
    let mut back = vec![0_u8; BYTES];
    tokio::time::timeout(IO_TIMEOUT, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    // Still open: both reporters already count what moved, none closed.
    for (node, reporter) in [(0, "source"), (1, "destination")] {
        let mut last = None;
        let counted = poll_until(
            METRICS_TIMEOUT,
            format!("{reporter} bytes while open"),
            || {
                let samples = scrape(&mesh, node)?;
                last = pair_series(&samples, reporter, "client", "server")
                    .map_err(anyhow::Error::msg)?;
                Ok(last
                    .as_ref()
                    .is_some_and(|(_, c)| c.received == BYTES as f64 && c.sent == BYTES as f64))
            },
        );
        counted.unwrap_or_else(|e| panic!("{e}: last seen {last:?}"));
        let (_, counts) = last.unwrap();
        assert_eq!((counts.opened, counts.closed), (1.0, 0.0), "{reporter}");
    }
    drop(stream);
}
