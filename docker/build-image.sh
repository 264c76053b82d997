#!/usr/bin/env bash
# Builds the Conclave Docker image from our own release binary, with no base image: the build
# context is staged here (the binary, every shared library `ldd` lists for it, the dynamic
# loader, /etc/passwd, /etc/group, /etc/nsswitch.conf) and `docker/Dockerfile` copies it into
# an image built `FROM scratch`. Nothing is pulled from a registry.
#
# Environment:
#   CONCLAVE_IMAGE    tag of the image [conclave:latest]
#   CONCLAVE_BIN      an already built `conclave` binary to package; without it the release
#                     binary is built (cargo, reusing CARGO_TARGET_DIR)
#   CARGO_TARGET_DIR  cargo's target directory [~/.cache/conclave/target, as scripts/test.sh]
set -euo pipefail
cd "$(dirname "$0")/.."

image="${CONCLAVE_IMAGE:-conclave:latest}"
command -v docker >/dev/null || { echo "docker not found: install Docker Engine first" >&2; exit 1; }

if [ -n "${CONCLAVE_BIN:-}" ]; then
  bin="$CONCLAVE_BIN"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/conclave/target}"
  cargo build --release -p conclave-node
  bin="$CARGO_TARGET_DIR/release/conclave"
fi
[ -x "$bin" ] || { echo "no executable conclave binary at $bin" >&2; exit 1; }

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc" "$stage/data"

# Debug information stays out of the image (function names stay, so backtraces still name them).
if command -v objcopy >/dev/null; then
  objcopy --strip-debug "$bin" "$root/usr/local/bin/conclave"
else
  cp "$bin" "$root/usr/local/bin/conclave"
fi

# Each library at the path the loader resolved it to, and the loader at the path the binary names.
ldd_out="$(ldd "$bin")"
if grep -q 'not found' <<<"$ldd_out"; then
  echo "$bin needs libraries this machine lacks:" >&2
  grep 'not found' <<<"$ldd_out" >&2
  exit 1
fi
while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out")
[ -n "$(find "$root" -name 'ld-linux*' -print -quit)" ] || { echo "ldd named no dynamic loader for $bin" >&2; exit 1; }

# Names for the unprivileged user the node runs as, and host lookups through /etc/hosts, then
# DNS (service names on a compose network).
echo 'root:x:0:0:root:/:/nonexistent' >"$root/etc/passwd"
echo 'conclave:x:10001:10001:Conclave:/data:/nonexistent' >>"$root/etc/passwd"
printf 'root:x:0:\nconclave:x:10001:\n' >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"

# The classic builder: no BuildKit or buildx needed, and its layer cache makes a rebuild of an
# unchanged binary instant.
if ! out="$(DOCKER_BUILDKIT=0 docker build --quiet -f docker/Dockerfile -t "$image" "$stage" 2>&1)"; then
  echo "$out" >&2
  exit 1
fi
size="$(docker image inspect --format '{{.Size}}' "$image")"
echo "built $image ($((size / 1024 / 1024)) MiB)"
