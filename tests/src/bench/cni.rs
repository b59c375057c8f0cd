//! Scenario `cni`: what `amesh-cni` adds to creating and deleting a pod.
//!
//! One CNI node (bridge + host-local, node agent and ztunnel running). Pods
//! are added and deleted through the node's real chain, as a container
//! runtime does, taking turns:
//! - mesh: the node's chain with `amesh-cni` (inserted by the agent), for
//!   pods of an ambient namespace: ADD returns once capture is in place and
//!   ztunnel listens in the pod; DEL once both are gone;
//! - baseline: the same primary network without `amesh-cni`.
//!
//! The pods' netns are made before and removed after each timed call (the
//! runtime's part, the same for both). Every pod is in the config before its
//! ADD, as in a cluster, where the pod exists in the API before its node
//! runs it. Figures are p50 over all pods (at least 50 each in full mode).

use std::time::Instant;

use anyhow::{Context, Result};

use super::{Figure, Report, Scale, percentile};
use crate::harness::cni::{CniRuntime, DEFAULT_BIN_DIR, write_conflist};
use crate::harness::{Capture, Mesh, MeshBuilder, PodSpec};

const AMBIENT: [(&str, &str); 1] = [("istio.io/dataplane-mode", "ambient")];
const MESH_NAMESPACE: &str = "bench";
const PLAIN_NAMESPACE: &str = "plain";

/// Timings of one kind of pod, in milliseconds.
#[derive(Debug, Default)]
struct Timings {
    add: Vec<f64>,
    del: Vec<f64>,
}

pub fn run(scale: Scale, capture: Capture) -> Result<Report> {
    let pods = scale.pick(8, 60);
    let mut mesh = MeshBuilder::new()
        .cni()
        .capture(capture)
        .namespace_labels(MESH_NAMESPACE, AMBIENT)
        .daemon_env(
            "RUST_LOG",
            std::env::var("HACKLOG").unwrap_or("info".into()),
        )
        .build()
        .context("create the bench node")?;
    mesh.start().context("start the node agent and ztunnel")?;
    mesh.wait_plugin_installed(0)?;
    let baseline = baseline_runtime(&mesh)?;
    let specs = (0..pods).flat_map(|i| {
        [
            PodSpec::new(format!("m{i}"), 0)
                .namespace(MESH_NAMESPACE)
                .follow_namespace(),
            PodSpec::new(format!("b{i}"), 0)
                .namespace(PLAIN_NAMESPACE)
                .follow_namespace(),
        ]
    });
    mesh.declare_pods(specs)?;
    let chain = mesh.cni_runtime(0);
    let mut with = Timings::default();
    let mut without = Timings::default();
    for i in 0..pods {
        // Alternating which goes first spreads the machine's drift evenly.
        if i % 2 == 0 {
            time_pod(&mut mesh, &chain, &format!("m{i}"), &mut with)?;
            time_pod(&mut mesh, &baseline, &format!("b{i}"), &mut without)?;
        } else {
            time_pod(&mut mesh, &baseline, &format!("b{i}"), &mut without)?;
            time_pod(&mut mesh, &chain, &format!("m{i}"), &mut with)?;
        }
    }
    let p50 = |samples: &[f64]| {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        percentile(&sorted, 50.0)
    };
    let p90 = |samples: &[f64]| {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        percentile(&sorted, 90.0)
    };
    let add = (p50(&with.add), p50(&without.add));
    let del = (p50(&with.del), p50(&without.del));
    Ok(Report {
        scenario: "cni".into(),
        figures: vec![
            Figure::new("pod_add_ms", "ms", add.0, Some(add.1), false),
            Figure::new("pod_del_ms", "ms", del.0, Some(del.1), false),
            Figure::new(
                "pod_add_ms_p90",
                "ms",
                p90(&with.add),
                Some(p90(&without.add)),
                false,
            ),
            Figure::new("pod_add_added_ms", "ms", add.0 - add.1, None, false),
            Figure::new("pod_del_added_ms", "ms", del.0 - del.1, None, false),
            Figure::new("pods", "pods", pods as f64, None, true),
        ],
    })
}

/// The node's primary network alone, in a conf dir of its own.
fn baseline_runtime(mesh: &Mesh) -> Result<CniRuntime> {
    let dir = mesh.dir().join("baseline-cni");
    let conf_dir = dir.join("net.d");
    write_conflist(
        &conf_dir,
        "10-baseline.conflist",
        &mesh.primary_network(0).to_json(),
    )?;
    Ok(CniRuntime::new(conf_dir, dir.join("cache"))
        .bin_dirs([DEFAULT_BIN_DIR])
        .in_netns(&mesh.node(0).netns))
}

/// Creates pod `name`'s netns, times its ADD and DEL, removes the netns.
fn time_pod(mesh: &mut Mesh, runtime: &CniRuntime, name: &str, into: &mut Timings) -> Result<()> {
    let pod = mesh.prepare_pod_netns(name)?;
    let attachment = mesh.pod_attachment(&pod);
    let start = Instant::now();
    runtime
        .add(&attachment)
        .map_err(|e| anyhow::anyhow!("ADD {name}: {e}\n{}", mesh.daemon_logs(0)))?;
    into.add.push(start.elapsed().as_secs_f64() * 1e3);
    let start = Instant::now();
    runtime
        .del(&attachment)
        .map_err(|e| anyhow::anyhow!("DEL {name}: {e}"))?;
    into.del.push(start.elapsed().as_secs_f64() * 1e3);
    mesh.release_pod_netns(&pod)
}
