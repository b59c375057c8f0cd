#!/usr/bin/env bash
# Installs what amesh's build, tests and demo need, idempotently: a second run
# changes nothing. Safe on a fresh Debian 12 machine with rustup (as root).
set -euo pipefail

# Debian packages the suite uses. Each entry is installed only if missing.
APT_PACKAGES=(
  ca-certificates
  iproute2                    # ip: network namespaces, veth, routes, policy rules
  nftables                    # nft: in-pod traffic capture
  containernetworking-plugins # reference CNI plugins (bridge, host-local, ...)
  curl                        # HTTP client inside pods in tests and the demo
  nghttp2-client              # h2load
  # eBPF capture: bpf-linker links the programs against LLVM 22 (the
  # nightly toolchain's); it builds from source against these.
  llvm-22-dev
  libpolly-22-dev
  libzstd-dev
  zlib1g-dev
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # dpkg occasionally fails once with a transient "cannot stat" error; retry.
  apt-get install -y -qq "${missing[@]}" || apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup first" >&2
  exit 1
fi
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^${component}" || rustup component add "$component"
done

# The eBPF programs (ebpf/) build for bpfel-unknown-none with nightly's
# build-std and bpf-linker, from the node agent's build script.
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "setup: installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src' \
  || rustup component add rust-src --toolchain nightly
BPF_LINKER_VERSION=0.13.0
if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  echo "setup: building bpf-linker $BPF_LINKER_VERSION (about 2 minutes)"
  # Without LLVM_PREFIX it finds the image's LLVM 14 and fails to link.
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version "$BPF_LINKER_VERSION" \
    --no-default-features --features llvm-22
fi
