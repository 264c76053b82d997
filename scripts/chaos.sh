#!/usr/bin/env bash
# Builds Conclave and runs the chaos harness for as long as asked, then writes its report.
#
#   scripts/chaos.sh [SECONDS] [NODES] [SEED] [OUT] [FLAGS...]
#
# SECONDS of faults (default 600) on a cluster of NODES (default 3) with the schedule of SEED
# (default: from the clock; it is printed, and the same seed replays the same schedule). The
# report (operations, faults injected, each checker's verdict) goes to OUT (default
# chaos-report.md; a name ending in .json gets JSON) and the recorded history next to it
# (OUT with .history.json). Exits non-zero when a checker fails. Debug builds by default;
# CHAOS_PROFILE=release measures the optimized build. FLAGS go to the harness as they are
# (`--shards N`, `--snapshot-after N`, `--dead-node-timeout SECS`).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
nodes="${2:-3}"
seed="${3:-$(date +%s%N)}"
out="${4:-chaos-report.md}"
shift $(($# < 4 ? $# : 4))
profile="${CHAOS_PROFILE:-debug}"
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/conclave/target}"
flags=()
[ "$profile" = release ] && flags+=(--release)
cargo build "${flags[@]}" -p conclave-node -p conclave-cluster-tests --bin conclave --bin chaos
export CONCLAVE_BIN="$CARGO_TARGET_DIR/$profile/conclave"
exec "$CARGO_TARGET_DIR/$profile/chaos" --seconds "$seconds" --nodes "$nodes" --seed "$seed" \
  --out "$out" --history "${out%.*}.history.json" "$@"
