//! Builds the eBPF programs (`../ebpf`, crate `amesh-ebpf`) for
//! `bpfel-unknown-none` with aya-build, the aya-template way, so one stable
//! `cargo build` builds both sides. Needs the nightly toolchain with
//! `rust-src` and `bpf-linker` (scripts/setup.sh installs them).

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .join("../ebpf")
        .canonicalize()
        .context("locating ../ebpf")?;
    let common_dir = manifest_dir.join("../ebpf-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // aya-build runs `cargo build --package amesh-ebpf` in the current
    // directory, and the eBPF crate is a workspace of its own (a member of
    // ours would be built for the host by `cargo clippy --workspace`).
    std::env::set_current_dir(&ebpf_dir).context("entering ../ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "amesh-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
