#!/usr/bin/env bash
# Runs the whole test suite: unit and storage-conformance tests of every crate, then the
# process-level cluster tests (real `conclave` processes on loopback, one cluster at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Builds are cached outside the checkout so repeated runs (and CI) stay fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/conclave/target}"
cargo build -p conclave-node
export CONCLAVE_BIN="$CARGO_TARGET_DIR/debug/conclave"
cargo test --workspace --exclude conclave-cluster-tests
cargo test -p conclave-cluster-tests -- --test-threads 1
