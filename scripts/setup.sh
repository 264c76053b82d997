#!/usr/bin/env bash
# Installs what building and testing Conclave needs on a Debian machine (run as root): Debian's RocksDB,
# which the build links instead of compiling RocksDB from source, and libclang for bindgen.
# A Rust toolchain (cargo) must already be on PATH. Safe to run again: installs only what is missing.
set -euo pipefail

packages=(librocksdb-dev libclang-dev clang pkg-config python3 python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain first" >&2; exit 1; }

