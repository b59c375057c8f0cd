//! Scenario `redirect`: the `ztunnel` scenario once per capture backend, in
//! the same run. Three meshes of the `ztunnel` scenario's shape run side by
//! side: eBPF capture as the agent runs it by default (no short circuit),
//! eBPF capture with the opt-in sockmap short circuit, and nftables capture.
//! Four routes are measured, taking turns run by run so drift in the
//! machine's speed hits all alike: client → server through each mesh, and
//! the eBPF mesh's non-mesh pods.
//!
//! Each figure is the median of 9 runs (3 with `--quick`).
//!
//! Figures keep the `ztunnel` scenario's names: mesh = eBPF (default), the
//! baseline nftables; `_nomesh`: mesh = eBPF, baseline no mesh;
//! `_sockmap`: mesh = eBPF with the short circuit, baseline eBPF without;
//! `_sockmap_nomesh`: mesh = eBPF with the short circuit, baseline no mesh.
//! Only figures with a baseline appear under the suffixes. One figure is added:
//! `cpu_total_us_per_rr`, the CPU of the bench process and the ztunnels
//! together per round trip, because the backends differ mostly in kernel
//! work that runs in the apps' context (conntrack and NAT against map
//! lookups and the sockmap), which ztunnel's own CPU does not show.
//!
//! The eBPF meshes' programs attach at the cgroup root, so while they are
//! loaded every socket on the machine passes through them; sockets outside
//! their pods only pay the map lookups that tell them apart. The nftables
//! and no-mesh routes pay that too, as pods next to an eBPF mesh would.

use anyhow::{Result, ensure};

use super::ztunnel::{self, Bench, Samples, Setup, figures, total_cpu_figure};
use super::{Figure, Report, Scale};
use crate::harness::Capture;

/// How the `redirect` scenario runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Run only the figures whose name starts with this (before the suffix).
    pub only: Option<String>,
    /// Passed to every ztunnel.
    pub ztunnel_args: Vec<String>,
    /// Passed to every node agent (after the backend's own flags).
    pub agent_args: Vec<String>,
    /// The `ztunnel` scenario's 10-rule ALLOW policy in every mesh.
    pub policy: bool,
}

/// Runs per figure in full mode. The differences between backends are small
/// next to this VM's drift: with five runs, two full runs gave eBPF (with
/// the short circuit) / nftables throughput ratios of 1.20 and 1.55. Each
/// extra run costs about 30 s on 2 cores (all four routes, every figure).
const FULL_RUNS: usize = 9;

/// What the columns mean, for the table.
pub const LEGEND: &str = "mesh: eBPF capture (default, no short circuit); baseline: \
nftables capture; _nomesh: baseline no mesh; _sockmap: mesh eBPF with the opt-in sockmap \
short circuit, baseline eBPF without; _sockmap_nomesh: mesh eBPF with the short circuit, \
baseline no mesh";

/// The backend each mesh's agents run, with the short circuit set
/// explicitly so a change of the agent's default cannot change the figures.
fn mesh_options(options: &Options, capture: Capture, short_circuit: bool) -> ztunnel::Options {
    let mut agent_args = Vec::new();
    if capture == Capture::Ebpf {
        agent_args.extend(["--short-circuit".to_owned(), short_circuit.to_string()]);
    }
    agent_args.extend(options.agent_args.iter().cloned());
    ztunnel::Options {
        only: options.only.clone(),
        ztunnel_args: options.ztunnel_args.clone(),
        policy: options.policy,
        capture,
        agent_args,
    }
}

/// Both agents of `setup` loaded the eBPF programs with the short circuit
/// as asked: otherwise the eBPF figures would measure something else.
fn check_ebpf_loaded(setup: &Setup, short_circuit: bool) -> Result<()> {
    let mesh = setup.mesh();
    ensure!(mesh.capture() == Capture::Ebpf, "not an eBPF mesh");
    let expected = format!("short_circuit={short_circuit}");
    for node in 0..mesh.nodes().len() {
        let log = mesh.agent_log(node);
        ensure!(
            log.lines()
                .any(|l| l.contains("eBPF capture loaded") && l.contains(&expected)),
            "node {node}'s agent did not load eBPF capture with {expected}; its log:\n{log}"
        );
    }
    Ok(())
}

/// [`figures`] plus [`total_cpu_figure`], `mesh` against `baseline`; with a
/// `suffix`, only those that have a baseline, renamed.
fn compare(only: Option<&str>, mesh: &Samples, baseline: &Samples, suffix: &str) -> Vec<Figure> {
    let mut out = figures(only, mesh, baseline);
    out.extend(total_cpu_figure(only, mesh, baseline));
    if !suffix.is_empty() {
        out.retain(|f| f.baseline.is_some());
        for figure in &mut out {
            figure.name.push_str(suffix);
        }
    }
    out
}

pub fn run(scale: Scale, options: &Options) -> Result<Report> {
    let only = options.only.as_deref();
    let ebpf = Setup::build(&mesh_options(options, Capture::Ebpf, false))?;
    check_ebpf_loaded(&ebpf, false)?;
    let sockmap = Setup::build(&mesh_options(options, Capture::Ebpf, true))?;
    check_ebpf_loaded(&sockmap, true)?;
    let nftables = Setup::build(&mesh_options(options, Capture::Nftables, false))?;

    let mut bench = Bench::new()?;
    for setup in [&ebpf, &sockmap, &nftables] {
        bench.serve(setup)?;
    }
    let routes = [
        ebpf.meshed()?,
        nftables.meshed()?,
        ebpf.plain()?,
        sockmap.meshed()?,
    ];
    let runs = scale.pick(scale.runs(), FULL_RUNS);
    let samples = bench.measure(scale, runs, only, &routes)?;
    let [ebpf_s, nftables_s, nomesh_s, sockmap_s] = samples.as_slice() else {
        anyhow::bail!("measured {} routes, not {}", samples.len(), routes.len());
    };
    let mut figures = compare(only, ebpf_s, nftables_s, "");
    figures.extend(compare(only, ebpf_s, nomesh_s, "_nomesh"));
    figures.extend(compare(only, sockmap_s, ebpf_s, "_sockmap"));
    figures.extend(compare(only, sockmap_s, nomesh_s, "_sockmap_nomesh"));

    drop(routes);
    drop(bench);
    drop((ebpf, sockmap, nftables));
    Ok(Report {
        scenario: "redirect".into(),
        figures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebpf_meshes_set_the_short_circuit_explicitly_and_keep_user_args() {
        let options = Options {
            agent_args: vec!["--trust-domain".into(), "example.org".into()],
            ..Options::default()
        };
        let on = mesh_options(&options, Capture::Ebpf, true);
        assert_eq!(
            on.agent_args,
            ["--short-circuit", "true", "--trust-domain", "example.org"]
        );
        assert_eq!(on.capture, Capture::Ebpf);
        let off = mesh_options(&options, Capture::Ebpf, false);
        assert_eq!(off.agent_args[..2], ["--short-circuit", "false"]);
        let nft = mesh_options(&options, Capture::Nftables, false);
        assert_eq!(nft.agent_args, ["--trust-domain", "example.org"]);
        assert_eq!(nft.capture, Capture::Nftables);
    }
}
