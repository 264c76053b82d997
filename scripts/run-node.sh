#!/usr/bin/env bash
# Sets up a fresh Debian machine, builds the release binary and starts a one-node cluster with
# its data in ./data (clients on 127.0.0.1:7070, peers on 127.0.0.1:7071). Extra arguments go to
# `conclave start` (see `conclave start --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/conclave/target}"
cargo build --release -p conclave-node
exec "$CARGO_TARGET_DIR/release/conclave" start "$@"
