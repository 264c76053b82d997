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
# The MCP tests drive /mcp with the official Python MCP SDK, pinned, in a virtualenv of its own
# (its dependencies would clash with Schemathesis's), installed once.
mcp_venv="${CONCLAVE_MCP_VENV:-$HOME/.cache/conclave/venv-mcp}"
mcp_version="2.3.0"
if ! "$mcp_venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$mcp_version')" 2>/dev/null; then
  echo "installing mcp $mcp_version into $mcp_venv"
  python3 -m venv "$mcp_venv"
  "$mcp_venv/bin/pip" install -q --disable-pip-version-check "mcp==$mcp_version" "mcp-types==$mcp_version"
fi
export CONCLAVE_MCP_PYTHON="$mcp_venv/bin/python"
# The official A2A client (a2a-sdk, A2A v1.0 with 0.3 compatibility) drives the A2A tests; its
# own venv keeps its dependencies apart from Schemathesis'. Pinned, installed once.
a2a_venv="${CONCLAVE_A2A_VENV:-$HOME/.cache/conclave/venv-a2a}"
a2a_sdk_version="1.3.0"
if ! "$a2a_venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('a2a-sdk') != '$a2a_sdk_version')" 2>/dev/null; then
  echo "installing a2a-sdk $a2a_sdk_version into $a2a_venv"
  python3 -m venv "$a2a_venv"
  "$a2a_venv/bin/pip" install -q --disable-pip-version-check "a2a-sdk==$a2a_sdk_version" "httpx==0.28.1"
fi
export CONCLAVE_A2A_PYTHON="$a2a_venv/bin/python"
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
# The Docker test packages the release binary into an image; it is built only where a Docker
# engine answers (elsewhere that test skips, or fails under CI=true unless CONCLAVE_SKIP_DOCKER=1).
if [ -z "${CONCLAVE_SKIP_DOCKER:-}" ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  cargo build --release -p conclave-node
  export CONCLAVE_RELEASE_BIN="$CARGO_TARGET_DIR/release/conclave"
fi
# The deterministic simulation runs from its own, fully seeded build (scripts/simulate.sh).
cargo test --workspace --exclude conclave-cluster-tests -- --skip acknowledged_writes_survive
bash scripts/simulate.sh
cargo test -p conclave-cluster-tests -- --test-threads 1
