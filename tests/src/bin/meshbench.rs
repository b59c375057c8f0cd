//! meshbench: amesh performance, each figure against the no-mesh baseline
//! measured in the same run.
//!
//!     meshbench <scenario> [--quick] [--json] [--only PREFIX]
//!     meshbench ztunnel [--policy] [--capture ebpf|nftables] [--ztunnel-arg=ARG ...] [--agent-arg=ARG ...]
//!     meshbench redirect [--policy] [--ztunnel-arg=ARG ...] [--agent-arg=ARG ...]
//!     meshbench cni [--capture ebpf|nftables]
//!     meshbench controlplane

use amesh_tests::bench::{self, Scale};
use amesh_tests::harness::Capture;

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};

/// `--capture`: the node agents' backend in the `ztunnel` scenario.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum CaptureArg {
    Nftables,
    Ebpf,
}

impl From<CaptureArg> for Capture {
    fn from(arg: CaptureArg) -> Self {
        match arg {
            CaptureArg::Nftables => Capture::Nftables,
            CaptureArg::Ebpf => Capture::Ebpf,
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "amesh benchmarks: mesh vs. no-mesh baseline, same run")]
struct Args {
    /// Scenario to run: hbone, crypto, ztunnel, redirect, cni, controlplane.
    scenario: String,
    /// Shorter runs (under a minute), for smoke tests.
    #[arg(long)]
    quick: bool,
    /// Print exactly one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Run only the figures whose name starts with this (e.g. `throughput`).
    #[arg(long)]
    only: Option<String>,
    /// Extra arguments for every ztunnel the `ztunnel` and `redirect`
    /// scenarios start (repeatable), e.g.
    /// `--ztunnel-arg=--worker-threads --ztunnel-arg=1`.
    #[arg(long, allow_hyphen_values = true)]
    ztunnel_arg: Vec<String>,
    /// Extra arguments for every node agent the `ztunnel` and `redirect`
    /// scenarios start (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    agent_arg: Vec<String>,
    /// `ztunnel` and `cni` scenarios: the node agents' capture backend.
    #[arg(long, value_enum, default_value = "nftables")]
    capture: CaptureArg,
    /// `ztunnel` and `redirect` scenarios: the config also carries an ALLOW
    /// AuthorizationPolicy with 10 rules selecting the server (only the last
    /// admits the bench client), so every connection evaluates all of them.
    #[arg(long)]
    policy: bool,
    /// Internal: run only the 8-connection transfer and print VmHWM (KiB).
    #[arg(long, hide = true)]
    rss_child: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scale = if args.quick {
        Scale::Quick
    } else {
        Scale::Full
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    use std::io::Write;
    if let Some(kind) = &args.rss_child {
        let kib = bench::hbone::rss_child(kind, scale)?;
        writeln!(out, "{kib}")?;
        return Ok(());
    }
    let mesh_scenario = matches!(args.scenario.as_str(), "ztunnel" | "redirect");
    if args.policy && !mesh_scenario {
        bail!("--policy applies to the ztunnel and redirect scenarios only");
    }
    if !args.agent_arg.is_empty() && !mesh_scenario {
        bail!("--agent-arg applies to the ztunnel and redirect scenarios only");
    }
    let report = match args.scenario.as_str() {
        "hbone" => bench::hbone::run(scale, args.only.as_deref())?,
        "crypto" => bench::crypto::run(scale)?,
        "ztunnel" => bench::ztunnel::run(
            scale,
            &bench::ztunnel::Options {
                only: args.only.clone(),
                ztunnel_args: args.ztunnel_arg.clone(),
                policy: args.policy,
                capture: args.capture.into(),
                agent_args: args.agent_arg.clone(),
            },
        )?,
        "redirect" => bench::redirect::run(
            scale,
            &bench::redirect::Options {
                only: args.only.clone(),
                ztunnel_args: args.ztunnel_arg.clone(),
                agent_args: args.agent_arg.clone(),
                policy: args.policy,
            },
        )?,
        "cni" => bench::cni::run(scale, args.capture.into())?,
        "controlplane" => bench::controlplane::run(scale)?,
        other => {
            bail!(
                "unknown scenario {other:?}; available: hbone, crypto, ztunnel, redirect, cni, controlplane"
            )
        }
    };
    if args.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        writeln!(out, "crypto provider: {}", amesh_core::tls::provider_name())?;
        if matches!(args.scenario.as_str(), "ztunnel" | "cni") {
            writeln!(out, "capture: {}", Capture::from(args.capture).as_arg())?;
        }
        if args.scenario == "redirect" {
            writeln!(out, "{}", bench::redirect::LEGEND)?;
        }
        if args.policy {
            writeln!(
                out,
                "policy: {} ALLOW rules on the server (the client matches the last)",
                bench::ztunnel::POLICY_RULES
            )?;
        }
        write!(out, "{}", report.to_table())?;
    }
    Ok(())
}
