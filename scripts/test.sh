#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, checks
# formatting and lints, then runs every test (unit, integration, meshbench
# smoke) in one build profile.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
# The eBPF crate is its own workspace (built for bpfel-unknown-none).
(cd ebpf && cargo fmt -- --check)

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo build --bins"
# End-to-end tests start ztunnel, the node agent and the test apps as real
# processes: build every binary in the profile the tests use.
cargo build --workspace --bins --locked

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --all-targets: unit, integration and binary tests (no doc-tests: there are none).
cargo test --workspace --all-targets --locked -- --test-threads 2 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
