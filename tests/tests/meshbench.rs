//! `meshbench <scenario> --quick --json` runs end to end and keeps its
//! output contract: one JSON object with every figure of the scenario, each
//! measured (finite, positive) and carrying its baseline and ratio where it
//! has one. The mesh scenarios (`ztunnel`, `redirect`, `cni`) need root.

// Test helpers panic on failure: that is how a test fails.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

/// Runs `meshbench <scenario> --quick --json`; returns its figures and their names.
fn quick_json(scenario: &str) -> (Vec<serde_json::Value>, Vec<String>) {
    quick_json_with(scenario, &[])
}

/// As [`quick_json`], with `extra` arguments.
fn quick_json_with(scenario: &str, extra: &[&str]) -> (Vec<serde_json::Value>, Vec<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args([scenario, "--quick", "--json"])
        .args(extra)
        .output()
        .expect("run meshbench");
    assert!(
        out.status.success(),
        "meshbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("exactly one JSON object");
    assert_eq!(report["scenario"], scenario);
    let figures = report["figures"].as_array().expect("figures array").clone();
    let names = figures
        .iter()
        .map(|f| f["name"].as_str().expect("name").to_owned())
        .collect();
    (figures, names)
}

/// A measured figure (finite, positive) with a unit and a direction; with
/// `has_baseline`, a positive baseline and the ratio mesh / baseline,
/// otherwise neither.
fn check_figure(figure: &serde_json::Value, has_baseline: bool) {
    let name = figure["name"].as_str().expect("name");
    let mesh = figure["mesh"].as_f64().expect("mesh is a number");
    assert!(mesh.is_finite() && mesh > 0.0, "{name}: mesh {mesh}");
    assert!(
        figure["unit"].as_str().is_some_and(|u| !u.is_empty()),
        "{name}: unit"
    );
    assert!(
        figure["higher_is_better"].is_boolean(),
        "{name}: higher_is_better"
    );
    if !has_baseline {
        assert!(figure["baseline"].is_null(), "{name}: baseline");
        assert!(figure["ratio"].is_null(), "{name}: ratio");
        return;
    }
    let baseline = figure["baseline"].as_f64().expect("baseline");
    let ratio = figure["ratio"].as_f64().expect("ratio");
    assert!(
        baseline.is_finite() && baseline > 0.0,
        "{name}: baseline {baseline}"
    );
    assert!(
        (ratio - mesh / baseline).abs() < 0.01 * ratio.max(1.0),
        "{name}: ratio {ratio} != {mesh}/{baseline}"
    );
}

#[test]
fn hbone_quick_json_reports_every_figure_against_its_baseline() {
    let (figures, names) = quick_json("hbone");
    assert_eq!(
        names,
        [
            "throughput_1conn",
            "throughput_8conn",
            "latency_p50",
            "latency_p99",
            "connect_rate_pooled",
            "connect_rate_handshake",
            "peak_rss"
        ]
    );
    for figure in &figures {
        // Every hbone figure has a no-mesh baseline.
        check_figure(figure, true);
    }
}

#[test]
fn unknown_scenario_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .arg("nosuch")
        .output()
        .expect("run meshbench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown scenario \"nosuch\""), "{stderr}");
}

/// The figures of the `ztunnel` scenario, in order.
const ZTUNNEL_FIGURES: [&str; 8] = [
    "throughput_1conn",
    "cpu_s_per_gib",
    "latency_p50",
    "latency_p99",
    "cpu_us_per_rr",
    "connect_rate",
    "peak_rss_connect",
    "rss_idle_20pods",
];

fn check_ztunnel_figures(figures: &[serde_json::Value], names: &[String]) {
    assert_eq!(names, ZTUNNEL_FIGURES);
    for figure in figures {
        // Figures about ztunnel alone have no no-mesh counterpart.
        let name = figure["name"].as_str().expect("name");
        let ztunnel_only = [
            "cpu_s_per_gib",
            "cpu_us_per_rr",
            "peak_rss_connect",
            "rss_idle_20pods",
        ];
        check_figure(figure, !ztunnel_only.contains(&name));
        if name.contains("rss") {
            assert_eq!(figure["unit"], "MiB", "{name}");
            assert_eq!(figure["higher_is_better"], false, "{name}");
        }
    }
}

#[test]
fn ztunnel_quick_json_reports_every_figure() {
    let (figures, names) = quick_json("ztunnel");
    check_ztunnel_figures(&figures, &names);
}

#[test]
fn ztunnel_quick_json_with_policy_reports_every_figure() {
    // Every connection to the server is authorized against 10 ALLOW rules
    // (the client matches the last): the bench fails if the policy is not
    // loaded or refuses the client.
    let (figures, names) = quick_json_with("ztunnel", &["--policy"]);
    check_ztunnel_figures(&figures, &names);
}

/// `redirect`'s figures against nftables capture: the `ztunnel` scenario's,
/// then the CPU of apps and ztunnels together per round trip.
fn redirect_figures() -> Vec<String> {
    ZTUNNEL_FIGURES
        .iter()
        .copied()
        .chain(["cpu_total_us_per_rr"])
        .map(str::to_owned)
        .collect()
}

/// The figures that exist without ztunnels, for the `_nomesh` comparisons.
const NO_MESH_FIGURES: [&str; 5] = [
    "throughput_1conn",
    "latency_p50",
    "latency_p99",
    "connect_rate",
    "cpu_total_us_per_rr",
];

fn suffixed(names: &[&str], suffix: &str) -> Vec<String> {
    names.iter().map(|n| format!("{n}{suffix}")).collect()
}

#[test]
fn redirect_quick_json_compares_ebpf_with_nftables_no_mesh_and_the_short_circuit() {
    let (figures, names) = quick_json("redirect");
    let against_nftables = redirect_figures();
    let all: Vec<&str> = against_nftables.iter().map(String::as_str).collect();
    let expected: Vec<String> = against_nftables
        .iter()
        .cloned()
        .chain(suffixed(&NO_MESH_FIGURES, "_nomesh"))
        // Both sides of the short-circuit comparison are eBPF meshes.
        .chain(suffixed(&all, "_sockmap"))
        .chain(suffixed(&NO_MESH_FIGURES, "_sockmap_nomesh"))
        .collect();
    assert_eq!(names, expected);
    for figure in &figures {
        // Every figure has a baseline here and a finite ratio.
        check_figure(figure, true);
        let name = figure["name"].as_str().expect("name");
        let ratio = figure["ratio"].as_f64().expect("ratio");
        assert!(ratio.is_finite() && ratio > 0.0, "{name}: ratio {ratio}");
    }
    // One measurement per route: the default eBPF mesh is the mesh side of
    // the plain and `_nomesh` figures and the baseline of `_sockmap`.
    let field = |name: &str, side: &str| {
        figures
            .iter()
            .find(|f| f["name"] == name)
            .and_then(|f| f[side].as_f64())
            .expect(name)
    };
    for base in ["throughput_1conn", "latency_p50", "connect_rate"] {
        let ebpf = field(base, "mesh");
        assert_eq!(ebpf, field(&format!("{base}_nomesh"), "mesh"), "{base}");
        assert_eq!(
            ebpf,
            field(&format!("{base}_sockmap"), "baseline"),
            "{base}"
        );
        assert_eq!(
            field(&format!("{base}_sockmap"), "mesh"),
            field(&format!("{base}_sockmap_nomesh"), "mesh"),
            "{base}"
        );
    }
}

#[test]
fn redirect_only_filters_every_comparison() {
    let (figures, names) = quick_json_with("redirect", &["--only", "latency_p50"]);
    assert_eq!(
        names,
        [
            "latency_p50",
            "latency_p99",
            "cpu_us_per_rr",
            "cpu_total_us_per_rr",
            "latency_p50_nomesh",
            "latency_p99_nomesh",
            "cpu_total_us_per_rr_nomesh",
            "latency_p50_sockmap",
            "latency_p99_sockmap",
            "cpu_us_per_rr_sockmap",
            "cpu_total_us_per_rr_sockmap",
            "latency_p50_sockmap_nomesh",
            "latency_p99_sockmap_nomesh",
            "cpu_total_us_per_rr_sockmap_nomesh",
        ]
    );
    for figure in &figures {
        check_figure(figure, true);
    }
}

#[test]
fn policy_flag_is_refused_outside_the_ztunnel_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args(["crypto", "--quick", "--policy"])
        .output()
        .expect("run meshbench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--policy"), "{stderr}");
}

#[test]
fn ztunnel_capture_flag_takes_only_known_backends() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshbench"))
        .args(["ztunnel", "--quick", "--capture", "iptables"])
        .output()
        .expect("run meshbench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("iptables"), "{stderr}");
}

#[test]
fn cni_quick_json_times_pod_add_and_del_against_the_plain_chain() {
    let (figures, names) = quick_json("cni");
    assert_eq!(
        names,
        [
            "pod_add_ms",
            "pod_del_ms",
            "pod_add_ms_p90",
            "pod_add_added_ms",
            "pod_del_added_ms",
            "pods"
        ]
    );
    for figure in &figures[..3] {
        check_figure(figure, true);
    }
    // Differences of medians: finite, and of either sign on a noisy run.
    for figure in &figures[3..5] {
        let added = figure["mesh"].as_f64().expect("a number");
        assert!(added.is_finite(), "{figure}");
        assert!(figure["baseline"].is_null(), "{figure}");
    }
    assert_eq!(
        figures[5]["mesh"].as_f64(),
        Some(8.0),
        "quick mode: 8 pods each"
    );
}
