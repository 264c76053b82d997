#!/usr/bin/env bash
# Runs the whole test suite: unit and storage-conformance tests of every crate, then the
# process-level cluster tests (real `conclave` processes on loopback, one cluster at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Test clients nobody here wrote, each pinned in a virtualenv of its own outside the checkout
# (their dependencies would clash), installed once: `pinned_venv DIR DIST VERSION [EXTRA...]`
# makes sure DIR has DIST at VERSION, installing it with the pinned EXTRA packages if not.
pinned_venv() {
  local dir="$1" dist="$2" version="$3"
  shift 3
  if ! "$dir/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$dist') != '$version')" 2>/dev/null; then
    echo "installing $dist $version into $dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$dist==$version" "$@"
  fi
}
# Schemathesis checks the running API against its own OpenAPI document. Hypothesis is pinned
# too: its releases have broken the JSON Schema generator before.
venv="${CONCLAVE_VENV:-$HOME/.cache/conclave/venv}"
pinned_venv "$venv" schemathesis 4.32.5 "hypothesis==6.170.15"
export CONCLAVE_SCHEMATHESIS="$venv/bin/schemathesis"
# The MCP tests drive /mcp with the official Python MCP SDK.
mcp_venv="${CONCLAVE_MCP_VENV:-$HOME/.cache/conclave/venv-mcp}"
pinned_venv "$mcp_venv" mcp 2.3.0 "mcp-types==2.3.0"
export CONCLAVE_MCP_PYTHON="$mcp_venv/bin/python"
# The official A2A client (a2a-sdk, A2A v1.0 with 0.3 compatibility) drives the A2A tests.
a2a_venv="${CONCLAVE_A2A_VENV:-$HOME/.cache/conclave/venv-a2a}"
pinned_venv "$a2a_venv" a2a-sdk 1.3.0 "httpx==0.28.1"
export CONCLAVE_A2A_PYTHON="$a2a_venv/bin/python"
# The realtime tests drive the WebSocket with `websockets`.
ws_venv="${CONCLAVE_WS_VENV:-$HOME/.cache/conclave/venv-websockets}"
pinned_venv "$ws_venv" websockets 17.4
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
