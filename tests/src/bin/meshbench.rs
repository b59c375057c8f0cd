//! meshbench: amesh performance, each figure against the no-mesh baseline
//! measured in the same run.
//!
//!     meshbench <scenario> [--quick] [--json] [--only PREFIX]
//!     meshbench ztunnel [--policy] [--ztunnel-arg=ARG ...]

use amesh_tests::bench::{self, Scale};

use anyhow::{Result, bail};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "amesh benchmarks: mesh vs. no-mesh baseline, same run")]
struct Args {
    /// Scenario to run: hbone, crypto, ztunnel.
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
    /// Extra arguments for every ztunnel the `ztunnel` scenario starts
    /// (repeatable), e.g. `--ztunnel-arg=--worker-threads --ztunnel-arg=1`.
    #[arg(long, allow_hyphen_values = true)]
    ztunnel_arg: Vec<String>,
    /// `ztunnel` scenario: the config also carries an ALLOW AuthorizationPolicy
    /// with 10 rules selecting the server (only the last admits the bench
    /// client), so every connection evaluates all of them.
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
    if args.policy && args.scenario != "ztunnel" {
        bail!("--policy applies to the ztunnel scenario only");
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
            },
        )?,
        other => bail!("unknown scenario {other:?}; available: hbone, crypto, ztunnel"),
    };
    if args.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        writeln!(out, "crypto provider: {}", amesh_core::tls::provider_name())?;
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
