#!/usr/bin/env bash
# Runs the whole test suite: unit and storage-conformance tests of every crate, then the
# process-level cluster tests (real `conclave` processes on loopback, one cluster at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Schemathesis checks the running API against its own OpenAPI document in the test suite; it
# lives in a virtualenv outside the checkout, pinned, installed once.
venv="${CONCLAVE_VENV:-$HOME/.cache/conclave/venv}"
schemathesis_version="4.32.5"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$schemathesis_version"; then
  echo "installing schemathesis $schemathesis_version into $venv"
  python3 -m venv "$venv"
  # Hypothesis pinned too: its releases have broken the JSON Schema generator before.
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$schemathesis_version" "hypothesis==6.170.15"
fi
export CONCLAVE_SCHEMATHESIS="$venv/bin/schemathesis"
# The realtime tests drive the WebSocket with `websockets`, a client nobody here wrote; it gets
# its own virtualenv so its dependencies never clash with Schemathesis'. Pinned, installed once.
ws_venv="${CONCLAVE_WS_VENV:-$HOME/.cache/conclave/venv-websockets}"
websockets_version="17.4"
if ! "$ws_venv/bin/python" -c "import websockets, sys; sys.exit(websockets.__version__ != '$websockets_version')" 2>/dev/null; then
  echo "installing websockets $websockets_version into $ws_venv"
  python3 -m venv "$ws_venv"
  "$ws_venv/bin/pip" install -q --disable-pip-version-check "websockets==$websockets_version"
fi
export CONCLAVE_WS_PYTHON="$ws_venv/bin/python"
# Builds are cached outside the checkout so repeated runs (and CI) stay fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/conclave/target}"
cargo build -p conclave-node
export CONCLAVE_BIN="$CARGO_TARGET_DIR/debug/conclave"
cargo test --workspace --exclude conclave-cluster-tests
cargo test -p conclave-cluster-tests -- --test-threads 1
