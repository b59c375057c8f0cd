use super::labels::labels;
use super::*;

fn facts(ns: &str, name: &str, sa: &str) -> WorkloadFacts {
    WorkloadFacts::from_labels(
        name,
        ns,
        &format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"),
        &labels(&[("app", name), ("version", "v1")]),
    )
}

/// Sample lines (not comments) of `text` whose metric name is `name`.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .collect()
}

fn value(line: &str) -> f64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn tcp_series_have_istio_names_and_labels() {
    let m = Metrics::new();
    let fe = facts("default", "frontend", "frontend");
    let be = facts("default", "backend", "backend");
    let l = ConnectionLabels::new(
        Reporter::Source,
        Some(&fe),
        Some(&be),
        Some(("backend.default.svc.cluster.local", "default", "backend")),
        true,
    );
    m.tcp().opened(&l);
    m.tcp().add_sent(&l, 100);
    m.tcp().add_received(&l, 7);
    m.tcp().add_sent(&l, 23);
    m.tcp().closed(&l);
    let text = m.encode();

    for (name, want) in [
        ("istio_tcp_connections_opened_total", 1.0),
        ("istio_tcp_connections_closed_total", 1.0),
        ("istio_tcp_sent_bytes_total", 123.0),
        ("istio_tcp_received_bytes_total", 7.0),
    ] {
        let s = samples(&text, name);
        assert_eq!(s.len(), 1, "{name} in\n{text}");
        assert_eq!(value(s[0]), want, "{}", s[0]);
    }
    // No doubled suffixes, and nothing else under the istio_ prefix.
    assert!(!text.contains("_total_total"), "{text}");
    assert!(!text.contains("bytes_bytes"), "{text}");
    let istio: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_"))
        .filter_map(|l| l.split('{').next())
        .collect();
    assert_eq!(istio.len(), 4, "{istio:?}");

    let line = samples(&text, "istio_tcp_connections_opened_total")[0];
    for label in [
        r#"reporter="source""#,
        r#"source_workload="frontend""#,
        r#"source_canonical_service="frontend""#,
        r#"source_canonical_revision="v1""#,
        r#"source_workload_namespace="default""#,
        r#"source_principal="spiffe://cluster.local/ns/default/sa/frontend""#,
        r#"source_app="frontend""#,
        r#"source_version="v1""#,
        r#"destination_workload="backend""#,
        r#"destination_workload_namespace="default""#,
        r#"destination_principal="spiffe://cluster.local/ns/default/sa/backend""#,
        r#"destination_app="backend""#,
        r#"destination_version="v1""#,
        r#"destination_service="backend.default.svc.cluster.local""#,
        r#"destination_service_namespace="default""#,
        r#"destination_service_name="backend""#,
        r#"destination_canonical_service="backend""#,
        r#"destination_canonical_revision="v1""#,
        r#"request_protocol="tcp""#,
        r#"response_flags="-""#,
        r#"connection_security_policy="mutual_tls""#,
    ] {
        assert!(line.contains(label), "{label} missing from {line}");
    }
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn connection_handle_counts_bytes_and_close() {
    let m = Metrics::new();
    let l = ConnectionLabels::new(
        Reporter::Destination,
        None,
        Some(&facts("a", "b", "c")),
        None,
        false,
    );
    {
        let c = m.tcp().open_connection(&l);
        c.add_received(10);
        c.add_sent(5);
        let text = m.encode();
        assert_eq!(
            value(samples(&text, "istio_tcp_connections_closed_total")[0]),
            0.0
        );
    }
    let text = m.encode();
    assert_eq!(
        value(samples(&text, "istio_tcp_connections_opened_total")[0]),
        1.0
    );
    assert_eq!(
        value(samples(&text, "istio_tcp_connections_closed_total")[0]),
        1.0
    );
    assert_eq!(
        value(samples(&text, "istio_tcp_received_bytes_total")[0]),
        10.0
    );
    assert_eq!(value(samples(&text, "istio_tcp_sent_bytes_total")[0]), 5.0);
}

#[test]
fn forget_workload_drops_its_series_and_index_entries() {
    let m = Metrics::new();
    let fe = facts("default", "frontend", "frontend");
    let be = facts("default", "backend", "backend");
    let gone = facts("jobs", "batch-7f9c", "batch");
    let keep = ConnectionLabels::new(Reporter::Source, Some(&fe), Some(&be), None, true);
    let drop_src = ConnectionLabels::new(Reporter::Source, Some(&gone), Some(&be), None, true);
    let drop_dst =
        ConnectionLabels::new(Reporter::Destination, Some(&fe), Some(&gone), None, false);
    for l in [&keep, &drop_src, &drop_dst] {
        m.tcp().opened(l);
        m.tcp().add_sent(l, 1);
    }
    let before = m.encode();
    assert!(before.contains("batch-7f9c"));
    // Three label sets, each indexed under its two workloads:
    // frontend(2) backend(2) batch(2).
    assert_eq!(m.tcp().index_sizes(), (3, 6));

    assert_eq!(m.forget_workload("jobs", "batch-7f9c"), 2);
    let after = m.encode();
    assert!(
        !after.lines().any(|l| l.contains("batch-7f9c")),
        "forgotten workload still exported:\n{after}"
    );
    for name in [
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
    ] {
        let s = samples(&after, name);
        assert_eq!(s.len(), 1, "{name}: {s:?}");
        assert!(s[0].contains(r#"source_workload="frontend""#));
        assert!(s[0].contains(r#"destination_workload="backend""#));
    }
    // Index shrank with the series: only the frontend→backend set remains.
    assert_eq!(m.tcp().index_sizes(), (2, 2));
    // Forgetting twice, or an unknown workload, is harmless.
    assert_eq!(m.forget_workload("jobs", "batch-7f9c"), 0);
    assert_eq!(m.forget_workload("default", "nope"), 0);

    // Same name in another namespace is another workload.
    assert_eq!(m.forget_workload("other", "frontend"), 0);
    assert!(m.encode().contains(r#"source_workload="frontend""#));

    m.forget_workload("default", "frontend");
    assert_eq!(m.tcp().index_sizes(), (0, 0));
    assert!(samples(&m.encode(), "istio_tcp_connections_opened_total").is_empty());

    // Series come back (and are indexed again) if traffic resumes.
    m.tcp().closed(&keep);
    assert_eq!(m.tcp().index_sizes(), (2, 2));
    let text = m.encode();
    assert_eq!(
        value(samples(&text, "istio_tcp_connections_closed_total")[0]),
        1.0
    );
    assert_eq!(
        value(samples(&text, "istio_tcp_connections_opened_total")[0]),
        0.0
    );
}

#[test]
fn forget_races_with_traffic_leave_no_unindexed_series() {
    let m = Metrics::new();
    let be = facts("default", "backend", "backend");
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let m = m.clone();
            let be = be.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let src = facts("churn", &format!("w{}", (t * 7 + i) % 5), "sa");
                    let l = ConnectionLabels::new(
                        Reporter::Destination,
                        Some(&src),
                        Some(&be),
                        None,
                        true,
                    );
                    m.tcp().opened(&l);
                    m.tcp().add_received(&l, 3);
                    m.tcp().closed(&l);
                }
            })
        })
        .collect();
    for i in 0..500 {
        m.forget_workload("churn", &format!("w{}", i % 5));
    }
    for w in workers {
        w.join().unwrap();
    }
    for i in 0..5 {
        m.forget_workload("churn", &format!("w{i}"));
    }
    let text = m.encode();
    assert!(!text.contains("churn"), "{text}");
    assert_eq!(m.tcp().index_sizes(), (0, 0));
}

#[test]
fn cert_expiry_gauge() {
    let m = Metrics::new();
    let id = "spiffe://cluster.local/ns/default/sa/backend";
    m.set_cert_expiry(id, 1_900_000_000);
    m.set_cert_expiry(
        "spiffe://cluster.local/ns/default/sa/frontend",
        1_800_000_000,
    );
    m.set_cert_expiry(id, 1_900_000_600);
    let text = m.encode();
    let s = samples(&text, "amesh_workload_certificate_expiry_timestamp_seconds");
    assert_eq!(s.len(), 2, "{text}");
    assert!(s.contains(
        &r#"amesh_workload_certificate_expiry_timestamp_seconds{identity="spiffe://cluster.local/ns/default/sa/backend"} 1900000600"#
    ));
    m.forget_cert(id);
    let text = m.encode();
    assert!(!text.contains("sa/backend"), "{text}");
    assert!(text.contains("sa/frontend"));
}

#[test]
fn control_counters_are_bounded() {
    let m = Metrics::new();
    let text = m.encode();
    // Exported at zero before any event.
    assert!(
        text.contains("amesh_zds_messages_total{type=\"add\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("amesh_config_reloads_total{result=\"rejected\"} 0\n"));
    assert!(text.contains("amesh_connections_denied_total{reason=\"strict_mtls\"} 0\n"));

    m.zds_message("add");
    m.zds_message("add");
    m.zds_message("snapshot_sent");
    m.zds_message("something-new");
    m.zds_message("another");
    m.config_reload(true);
    m.config_reload(false);
    m.config_reload(true);
    m.denied(DenyReason::Policy);
    m.denied(DenyReason::BadTarget);
    let text = m.encode();
    for want in [
        "amesh_zds_messages_total{type=\"add\"} 2\n",
        "amesh_zds_messages_total{type=\"keep\"} 0\n",
        "amesh_zds_messages_total{type=\"snapshot_sent\"} 1\n",
        "amesh_zds_messages_total{type=\"other\"} 2\n",
        "amesh_config_reloads_total{result=\"applied\"} 2\n",
        "amesh_config_reloads_total{result=\"rejected\"} 1\n",
        "amesh_connections_denied_total{reason=\"policy\"} 1\n",
        "amesh_connections_denied_total{reason=\"bad_target\"} 1\n",
        "amesh_connections_denied_total{reason=\"strict_mtls\"} 0\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("something-new"));
    assert_eq!(samples(&text, "amesh_zds_messages_total").len(), 5);
}

#[test]
fn process_metrics_are_exported() {
    let text = Metrics::new().encode();
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
    ] {
        let s = samples(&text, name);
        assert_eq!(s.len(), 1, "{name} in\n{text}");
        assert!(value(s[0]) >= 0.0);
    }
    assert!(
        text.contains("# TYPE process_cpu_seconds counter\n"),
        "{text}"
    );
}

#[test]
fn extra_metrics_can_be_registered() {
    let c = Counter::<u64>::default();
    let m = Metrics::new_with(|r| r.register("ztunnel_test_things", "things", c.clone()));
    c.inc();
    assert!(m.encode().contains("ztunnel_test_things_total 1\n"));
}
