#!/usr/bin/env bash
# The main job: a local two-node amesh mesh in network namespaces with sample
# apps and live traffic over HBONE, showing the identities it carried; Ctrl-C
# removes everything it created. From a fresh Debian 12 machine with Rust:
# installs what it needs, builds the release binaries, then runs `localmesh`.
# Arguments pass through: --once, --rounds N, --interval-ms MS.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: must run as root (it creates network namespaces and nftables rules):" >&2
  echo "      sudo scripts/demo.sh $*" >&2
  exit 1
fi

# sudo's secure_path leaves out rustup's bin directory.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
  export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "demo: cargo not found for root; install Rust for root with rustup (https://rustup.rs)" >&2
  exit 1
fi

scripts/setup.sh

echo "demo: building the release binaries (a few minutes the first time)"
cargo build --release --workspace --bins --locked

# exec: Ctrl-C and SIGTERM go straight to localmesh, which removes the mesh.
exec target/release/localmesh "$@"
