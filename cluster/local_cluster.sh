#!/usr/bin/env bash
# A real multi-node Ray cluster on one machine: a head plus N worker nodes, each its own `ray start`.
#
#   cluster/local_cluster.sh start N     start the head and N worker nodes (N >= 0)
#   cluster/local_cluster.sh stop        stop exactly the nodes this script started
#   cluster/local_cluster.sh status      show the cluster's nodes and resources
#   cluster/local_cluster.sh restart-node K  (re)start worker node K (1..N) with the settings `start` used,
#                                        e.g. after it was killed; stops what is left of it first
#   source "$EVOPLAT_CLUSTER_DIR/env.sh" client settings for `ray job submit` / `ray status`
#
# Why it looks like this:
# - Token authentication stays on (RAY_AUTH_MODE=token, as Ray ships it). The token is a private file
#   in the state directory (mode 600) unless RAY_AUTH_TOKEN_PATH / RAY_AUTH_TOKEN is already set.
# - Everything binds to 127.0.0.1: the dashboard / job API is never reachable from another machine.
# - Non-default ports and a private --temp-dir: other Ray instances on this machine (ray.init() in
#   tests, someone's `ray start`) neither see this cluster nor collide with its ports. `ray.init()`
#   without an address looks for <temp-dir>/ray_current_cluster, so a default temp dir would make
#   other people's drivers connect here.
# - Each node runs `ray start --block` in the background and its pid is recorded; `stop` signals those
#   pids only. `ray stop` is never used: it kills every Ray process of the machine, other people's too.
#
# Settings (environment): EVOPLAT_CLUSTER_DIR (state dir, default /tmp/evoplat-cluster-$USER),
# EVOPLAT_RAY_PORT (GCS, 6390), EVOPLAT_DASHBOARD_PORT (8290), EVOPLAT_PORT_BASE (21000: per-node
# ports), EVOPLAT_HEAD_CPUS (0: the head only hosts the driver), EVOPLAT_WORKER_CPUS (1),
# EVOPLAT_OBJECT_STORE_BYTES (200000000 per node), RAY (the ray executable).
set -euo pipefail

STATE=${EVOPLAT_CLUSTER_DIR:-/tmp/evoplat-cluster-${USER:-$(id -un)}}
GCS_PORT=${EVOPLAT_RAY_PORT:-6390}
DASH_PORT=${EVOPLAT_DASHBOARD_PORT:-8290}
PORT_BASE=${EVOPLAT_PORT_BASE:-21000}
HEAD_CPUS=${EVOPLAT_HEAD_CPUS:-0}
WORKER_CPUS=${EVOPLAT_WORKER_CPUS:-1}
STORE_BYTES=${EVOPLAT_OBJECT_STORE_BYTES:-200000000}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RAY=${RAY:-$(command -v ray || echo "$HERE/../.venv/bin/ray")}
IP=127.0.0.1

export RAY_AUTH_MODE=token
# One temp dir per node ($STATE/t0 head, t1.. workers), kept short: Ray's unix socket paths must stay
# under 108 characters. Shared temp dirs break `--working-dir`: every node unpacks the job's files into
# <temp-dir>/session_*/runtime_resources, and a worker node re-unpacking them deletes the driver's cwd.

node_ports() {  # distinct ports per node index $1, so several nodes share one machine
  local b=$((PORT_BASE + $1 * 20)) w=$((PORT_BASE + 2000 + $1 * 200))
  echo "--node-manager-port $b --object-manager-port $((b + 1)) \
--dashboard-agent-grpc-port $((b + 2)) --dashboard-agent-listen-port $((b + 3)) \
--runtime-env-agent-port $((b + 4)) --metrics-export-port $((b + 5)) \
--min-worker-port $w --max-worker-port $((w + 199))"
}

wait_started() {  # until node $1's `ray start` reports success (cheap: reads its log, no RPC)
  local name=$1 i
  for i in $(seq 1 240); do
    grep -q "Ray runtime started" "$STATE/$name.log" 2>/dev/null && return 0
    if ! kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
      echo "local_cluster: node $name failed to start; see $STATE/$name.log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "local_cluster: node $name did not start within 120 s; see $STATE/$name.log" >&2
  return 1
}

launch() {  # launch NAME ARGS...: one `ray start --block` in its own session, pid recorded
  local name=$1; shift
  setsid "$RAY" start --block "$@" >"$STATE/$name.log" 2>&1 < /dev/null &
  echo $! >"$STATE/$name.pid"
}

write_env() {
  # A token given as RAY_AUTH_TOKEN stays in the caller's environment: it is not written to a file.
  local token_line="# RAY_AUTH_TOKEN: set in your environment, as when the cluster was started"
  [ -n "${RAY_AUTH_TOKEN_PATH:-}" ] && token_line="export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"
  cat >"$STATE/env.sh" <<EOF
# Client settings for the evoplat local cluster (source this file).
export RAY_AUTH_MODE=token
$token_line
export RAY_API_SERVER_ADDRESS=http://$IP:$DASH_PORT   # ray job submit/logs/status
export EVOPLAT_GCS_ADDRESS=$IP:$GCS_PORT              # ray.init(address=...), ray status --address
EOF
}

start_worker() {  # start_worker I: worker node I joins the head
  # One node at a time: several raylets registering at once can time out on a small machine. Ray
  # gives a raylet 30 s to register; on a heavily loaded machine that can run out, so retry.
  local i=$1 attempt
  for attempt in 1 2 3; do
    # shellcheck disable=SC2046
    launch "worker$i" --address "$IP:$GCS_PORT" --node-ip-address "$IP" --temp-dir "$STATE/t$i" \
      --num-cpus "$WORKER_CPUS" --num-gpus 0 --object-store-memory "$STORE_BYTES" \
      --disable-usage-stats $(node_ports "$i")
    wait_started "worker$i" && return 0
    [ "$attempt" = 3 ] && return 1
    echo "local_cluster: retrying worker$i" >&2
    sleep 2
  done
}

start() {
  local n=${1:?usage: local_cluster.sh start N}
  if ls "$STATE"/*.pid >/dev/null 2>&1; then
    echo "local_cluster: already running (state in $STATE); stop it first" >&2
    exit 1
  fi
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ]; then
    export RAY_AUTH_TOKEN_PATH="$STATE/auth_token"
    [ -s "$RAY_AUTH_TOKEN_PATH" ] || (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' \
      >"$RAY_AUTH_TOKEN_PATH")
  fi
  write_env
  # shellcheck disable=SC2046
  launch head --head --node-ip-address "$IP" --port "$GCS_PORT" --temp-dir "$STATE/t0" \
    --include-dashboard true --dashboard-host "$IP" --dashboard-port "$DASH_PORT" \
    --ray-client-server-port $((PORT_BASE + 19)) --num-cpus "$HEAD_CPUS" --num-gpus 0 \
    --object-store-memory "$STORE_BYTES" --disable-usage-stats $(node_ports 0)
  wait_started head || { stop; exit 1; }
  local i
  for i in $(seq 1 "$n"); do
    start_worker "$i" || { stop; exit 1; }
  done
  echo "local_cluster: head + $n worker node(s) up; GCS $IP:$GCS_PORT, jobs http://$IP:$DASH_PORT"
  echo "local_cluster: client settings: source $STATE/env.sh"
}

stop_node() {  # stop_node PIDFILE: the node started with that pid, if still running
  local f=$1 pid
  [ -e "$f" ] || return 0
  pid=$(cat "$f")
  # SIGTERM lets `ray start --block` shut its node's processes down; its reaper covers the rest.
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
}

stop() {
  local f
  for f in "$STATE"/worker*.pid "$STATE"/head.pid; do  # workers first, then the head
    stop_node "$f"
  done
  echo "local_cluster: stopped"
}

restart_node() {
  local i=${1:?usage: local_cluster.sh restart-node K}
  [[ "$i" =~ ^[1-9][0-9]*$ ]] || { echo "local_cluster: restart-node needs a worker number >= 1" >&2; exit 2; }
  if [ ! -f "$STATE/head.pid" ] || [ ! -f "$STATE/env.sh" ]; then
    echo "local_cluster: no cluster started from $STATE" >&2
    exit 1
  fi
  . "$STATE/env.sh"                  # the token `start` chose
  stop_node "$STATE/worker$i.pid"
  # A killed node leaves its session dir (sockets, logs) behind: keep the last one for a post-mortem,
  # and start the new node in a clean temp dir, as a replacement machine would.
  rm -rf "$STATE/t$i.old"
  [ -d "$STATE/t$i" ] && mv "$STATE/t$i" "$STATE/t$i.old"
  [ -f "$STATE/worker$i.log" ] && mv "$STATE/worker$i.log" "$STATE/worker$i.log.old"
  start_worker "$i" || exit 1
  echo "local_cluster: worker$i up again"
}

status() {
  "$RAY" status --address "$IP:$GCS_PORT"
}

case "${1:-}" in
  start) start "${2:-1}" ;;
  stop) stop ;;
  status) [ -f "$STATE/env.sh" ] && . "$STATE/env.sh"; status ;;
  restart-node) restart_node "${2:-}" ;;
  *) echo "usage: $0 start N | stop | status | restart-node K" >&2; exit 2 ;;
esac
