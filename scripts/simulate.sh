#!/usr/bin/env bash
# Runs the deterministic simulation (raft/tests/simulation.rs) with every source of randomness
# seeded, so a seed replays exactly.
#   scripts/simulate.sh               the fixed seeds CI runs, and the replay check
#   scripts/simulate.sh SEED [SECS]   one seed, printing every event of its run
#   SEEDS=N scripts/simulate.sh       seeds 1..N
set -euo pipefail
cd "$(dirname "$0")/.."
# tokio's own randomness (watch wake order, select! branch order) is seeded through its
# unstable API, which needs its own build, kept apart from the regular one.
export RUSTFLAGS="--cfg tokio_unstable"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/conclave/target}/sim"
if [ $# -ge 1 ]; then
  export CONCLAVE_SIM_SEED="$1" CONCLAVE_SIM_TRACE=1
  [ $# -ge 2 ] && export CONCLAVE_SIM_SECS="$2"
  exec cargo test -p conclave-raft --test simulation acknowledged -- --nocapture
fi
[ -n "${SEEDS:-}" ] && export CONCLAVE_SIM_SEEDS="$SEEDS"
exec cargo test -p conclave-raft --test simulation -- --nocapture --test-threads 1
