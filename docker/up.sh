#!/usr/bin/env bash
# Builds the Conclave image and starts a three-node cluster with docker-compose, on a fresh
# Debian machine with Docker Engine, docker-compose and a Rust toolchain (run as root, or as a
# user of the docker group once `scripts/setup.sh` has run as root).
#
# The first run writes docker/.env (mode 0600): the cluster's peer secret and the compose
# project name. Clients reach the nodes on 127.0.0.1:7070, :7080 and :7090 (CONCLAVE_PORT_1..3
# change them). The admin key: `docker-compose -f docker/docker-compose.yml exec -T node1
# conclave admin-credentials`. Stop with `docker-compose -f docker/docker-compose.yml down`
# (add `-v` to delete the data volumes too).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v docker >/dev/null || { echo "docker not found: install Docker Engine (apt-get install docker.io)" >&2; exit 1; }
command -v docker-compose >/dev/null || { echo "docker-compose not found (apt-get install docker-compose)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "the Docker engine is not reachable (is dockerd running, may this user use it?)" >&2; exit 1; }

# Build tools (Debian's RocksDB, libclang) are installed only when missing; that needs root.
if [ "$(id -u)" = 0 ]; then
  bash scripts/setup.sh
fi
bash docker/build-image.sh

env_file=docker/.env
if [ ! -f "$env_file" ]; then
  secret="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
  (umask 077 && printf 'COMPOSE_PROJECT_NAME=conclave\nCONCLAVE_CLUSTER_SECRET=%s\n' "$secret" >"$env_file")
  echo "wrote $env_file (the cluster secret; keep it with the data volumes)"
fi

compose=(docker-compose -f docker/docker-compose.yml)
# `up` returns once node1 and node2 are healthy (node2 and node3 start after them); then node3.
"${compose[@]}" up -d
for node in node1 node2 node3; do
  id="$("${compose[@]}" ps -q "$node")"
  for _ in $(seq 120); do
    state="$(docker inspect --format '{{.State.Health.Status}}' "$id")"
    [ "$state" = healthy ] && break
    sleep 1
  done
  [ "$state" = healthy ] || { echo "$node is $state; its log:" >&2; "${compose[@]}" logs --tail 50 "$node" >&2; exit 1; }
done

"${compose[@]}" ps
echo
echo "Conclave is up; client APIs:"
for node in node1 node2 node3; do
  echo "  $node  http://$("${compose[@]}" port "$node" 7070)"
done
cat <<'MSG'
  admin key:  docker-compose -f docker/docker-compose.yml exec -T node1 conclave admin-credentials
  status:     docker-compose -f docker/docker-compose.yml exec -T node1 conclave status
  stop:       docker-compose -f docker/docker-compose.yml down      (-v deletes the data too)
MSG
