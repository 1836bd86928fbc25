#!/usr/bin/env bash
# Start a multi-node Ray cluster on this machine: one head node and N worker nodes, each a
# `ray start --block` in its own process group with its own temp dir and ports, token auth on.
#
# Why: multi-node behaviour (Ray Data tasks spread over nodes, Ray Train workers placed on distinct
# nodes, one Prometheus endpoint per node) can then be run and tested without a second machine.
# The nodes share this machine's CPUs: keep --num-cpus small. Stop the cluster with down.sh (never
# `ray stop`, which kills every Ray instance on the machine).
#
# Knobs (environment):
#   FINADAPT_CLUSTER_DIR      state dir: pids, logs, cluster.env, cluster.json (default runs/local-cluster)
#   FINADAPT_RAY              the `ray` executable (default .venv/bin/ray of this repository)
#   FINADAPT_CLUSTER_WORKERS  worker nodes (default 1)
#   FINADAPT_HEAD_CPUS        --num-cpus of the head (default 1)
#   FINADAPT_WORKER_CPUS      --num-cpus of each worker node (default 2)
#   FINADAPT_OBJECT_STORE_MB  object store per node, MiB (default 300)
#   FINADAPT_HEAD_PORT        GCS port (default: a free port)
#   FINADAPT_DASHBOARD_PORT   dashboard / job API port on 127.0.0.1 (default: a free port)
#   FINADAPT_CLUSTER_TIMEOUT  seconds to wait for every node and the job API (default 300)
#   RAY_AUTH_TOKEN_PATH       token file; created if missing (default: Ray's ~/.ray/auth_token,
#                             created with `ray get-auth-token --generate` if missing)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RAY_BIN="${FINADAPT_RAY:-$ROOT/.venv/bin/ray}"
STATE="${FINADAPT_CLUSTER_DIR:-$ROOT/runs/local-cluster}"
WORKERS="${FINADAPT_CLUSTER_WORKERS:-1}"
HEAD_CPUS="${FINADAPT_HEAD_CPUS:-1}"
WORKER_CPUS="${FINADAPT_WORKER_CPUS:-2}"
OBJECT_STORE_BYTES=$(( ${FINADAPT_OBJECT_STORE_MB:-300} * 1024 * 1024 ))
TIMEOUT="${FINADAPT_CLUSTER_TIMEOUT:-300}"

die() { echo "cluster/local/up.sh: $*" >&2; exit 2; }

[[ -x "$RAY_BIN" ]] || die "no ray executable at $RAY_BIN (set FINADAPT_RAY or create the venv)"
BIN_DIR="$(cd "$(dirname "$RAY_BIN")" && pwd)"
PY="$BIN_DIR/python"
[[ -x "$PY" ]] || die "no python beside $RAY_BIN"
[[ "$WORKERS" =~ ^[0-9]+$ ]] || die "FINADAPT_CLUSTER_WORKERS=$WORKERS is not a number"

mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
if [[ -f "$STATE/nodes.tsv" ]]; then
  while IFS=$'\t' read -r name pid _; do
    if kill -0 -- "-$pid" 2>/dev/null; then
      die "a cluster is already running from $STATE ($name, process group $pid): run cluster/local/down.sh first"
    fi
  done <"$STATE/nodes.tsv"
fi
rm -f "$STATE/nodes.tsv" "$STATE/cluster.env" "$STATE/cluster.json"

# The entrypoint of a job runs in the head's environment and every node starts its workers with
# the python that runs `ray`: put the venv first so both are this project's.
export PATH="$BIN_DIR:$PATH"
export RAY_AUTH_MODE=token
# On SIGTERM a node first asks the GCS to drain it (for Serve replicas), for up to 30 s, which times
# out when down.sh stops the head's GCS at the same moment: nothing here needs draining.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}"
if [[ -z "${RAY_AUTH_TOKEN:-}" ]]; then
  if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
    if [[ ! -s "$RAY_AUTH_TOKEN_PATH" ]]; then
      (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$RAY_AUTH_TOKEN_PATH")
    fi
  else
    "$RAY_BIN" get-auth-token --generate >/dev/null 2>&1 || die "could not create a token with ray get-auth-token"
  fi
fi

# Distinct free ports, all drawn at once so none repeats (other Ray instances hold the defaults):
# 3 for the head (GCS, dashboard, client server) and 4 per node (agent HTTP and gRPC, runtime-env
# agent, metrics export).
read -r -a PORTS <<<"$("$PY" -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' $(( 3 + 4 * (WORKERS + 1) )))"
NEXT_PORT=3

# AF_UNIX socket paths must stay under 108 bytes: the nodes' temp dirs live under a short /tmp path.
TEMP_ROOT="$(mktemp -d /tmp/fc-XXXXXX)"
echo "$TEMP_ROOT" >"$STATE/temp_root"

# start_node NAME NUM_CPUS ARGS...: `ray start --block` as a session (and process group) leader, so
# down.sh can signal it and every process it started, and nothing else.
start_node() {
  local name=$1 cpus=$2
  shift 2
  local agent_http=${PORTS[NEXT_PORT]} agent_grpc=${PORTS[NEXT_PORT + 1]} runtime_env=${PORTS[NEXT_PORT + 2]}
  local metrics=${PORTS[NEXT_PORT + 3]}
  NEXT_PORT=$(( NEXT_PORT + 4 ))
  mkdir -p "$TEMP_ROOT/$name"
  setsid "$RAY_BIN" start --block "$@" --num-cpus="$cpus" --num-gpus=0 \
    --object-store-memory="$OBJECT_STORE_BYTES" --temp-dir="$TEMP_ROOT/$name" \
    --labels="finadapt-node=$name" --metrics-export-port="$metrics" \
    --dashboard-agent-listen-port="$agent_http" --dashboard-agent-grpc-port="$agent_grpc" \
    --runtime-env-agent-port="$runtime_env" --min-worker-port=0 --max-worker-port=0 \
    --disable-usage-stats </dev/null >"$STATE/$name.log" 2>&1 &
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$!" "$cpus" "$metrics" "$TEMP_ROOT/$name" "$STATE/$name.log" \
    >>"$STATE/nodes.tsv"
}

GCS_PORT="${FINADAPT_HEAD_PORT:-${PORTS[0]}}"
DASH_PORT="${FINADAPT_DASHBOARD_PORT:-${PORTS[1]}}"
GCS="127.0.0.1:$GCS_PORT"
DASHBOARD="http://127.0.0.1:$DASH_PORT"

t0=$SECONDS
start_node head "$HEAD_CPUS" --head --node-ip-address=127.0.0.1 --port="$GCS_PORT" \
  --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT" \
  --ray-client-server-port="${PORTS[2]}"
# A worker node needs the head's GCS up before it can join.
"$PY" "$ROOT/cluster/local/ready.py" gcs --address "$GCS" --timeout "$TIMEOUT" --log "$STATE/head.log" \
  --pgid "$(cut -f2 "$STATE/nodes.tsv")" \
  || { "$ROOT/cluster/local/down.sh" >/dev/null 2>&1 || true; die "the head did not start; see $STATE/head.log"; }
for i in $(seq 1 "$WORKERS"); do
  start_node "worker-$i" "$WORKER_CPUS" --address="$GCS" --node-ip-address=127.0.0.1
done

cat >"$STATE/cluster.env" <<EOF
# source this file: the ray CLI (ray job submit/list/logs) then talks to the local cluster
export RAY_ADDRESS=$DASHBOARD
export RAY_AUTH_MODE=token
${RAY_AUTH_TOKEN_PATH:+export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH}
export FINADAPT_CLUSTER_DIR=$STATE
EOF

# Every node alive and a trivial job run through the job API (its agent registers well after the
# dashboard answers), then cluster.json with the node ids.
if ! "$PY" "$ROOT/cluster/local/ready.py" cluster --dashboard "$DASHBOARD" --gcs "$GCS" --state "$STATE" \
    --timeout "$TIMEOUT"; then
  "$ROOT/cluster/local/down.sh" >/dev/null 2>&1 || true
  die "the cluster did not come up; node logs: $STATE/*.log"
fi

echo "local Ray cluster up in $(( SECONDS - t0 )) s: head + $WORKERS worker node(s), token auth on"
echo "dashboard and job API: $DASHBOARD"
echo "GCS address:           $GCS"
while IFS=$'\t' read -r name _ cpus metrics temp _; do
  echo "node $name: $cpus CPU, metrics on 127.0.0.1:$metrics, temp dir $temp"
done <"$STATE/nodes.tsv"
echo "state: $STATE/cluster.json; for the ray CLI:"
grep '^export' "$STATE/cluster.env"
