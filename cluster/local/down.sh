#!/usr/bin/env bash
# Stop the local cluster that up.sh started: signal exactly the process groups it recorded in
# <state>/nodes.tsv (worker nodes first, then the head), and any process still in their sessions.
# Never `ray stop`: it would kill every Ray instance on the machine, not only this cluster.
#
# Knobs (environment): FINADAPT_CLUSTER_DIR (as for up.sh), FINADAPT_CLUSTER_STOP_GRACE (seconds
# between SIGTERM and SIGKILL, default 30), FINADAPT_CLUSTER_KEEP_TEMP=1 keeps the nodes' temp dirs
# (Ray's session logs); the state dir keeps each node's `ray start` log either way.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${FINADAPT_CLUSTER_DIR:-$ROOT/runs/local-cluster}"
GRACE="${FINADAPT_CLUSTER_STOP_GRACE:-30}"

if [[ ! -f "$STATE/nodes.tsv" ]]; then
  echo "no local cluster recorded in $STATE (nothing to stop)"
  exit 0
fi

mapfile -t NAMES < <(tac "$STATE/nodes.tsv" | cut -f1)
mapfile -t GROUPS_ < <(tac "$STATE/nodes.tsv" | cut -f2)

# Live processes of those sessions (setsid made each node's pid its session and process group id);
# zombies have exited and wait for their (adoptive) parent to reap them, so they do not count.
session_pids() {
  local sids
  sids=" ${GROUPS_[*]} "
  ps -e -o pid=,sid=,stat= | while read -r pid sid stat; do
    if [[ "$sids" == *" $sid "* && "$stat" != Z* ]]; then echo "$pid"; fi
  done
}

t0=$SECONDS
for i in "${!GROUPS_[@]}"; do
  kill -TERM -- "-${GROUPS_[i]}" 2>/dev/null || true
  echo "sent SIGTERM to node ${NAMES[i]} (process group ${GROUPS_[i]})"
done

deadline=$(( SECONDS + GRACE ))
while [[ -n "$(session_pids)" && $SECONDS -lt $deadline ]]; do
  sleep 0.5
done
left="$(session_pids)"
if [[ -n "$left" ]]; then
  echo "still running after ${GRACE} s, sending SIGKILL: $(echo "$left" | tr '\n' ' ')"
  # shellcheck disable=SC2086  # one pid per word
  kill -KILL $left 2>/dev/null || true
  sleep 1
  left="$(session_pids)"
  if [[ -n "$left" ]]; then
    echo "cluster/local/down.sh: processes survived SIGKILL: $(echo "$left" | tr '\n' ' ')" >&2
    exit 1
  fi
fi

if [[ -f "$STATE/temp_root" ]]; then
  temp_root="$(cat "$STATE/temp_root")"
  if [[ "${FINADAPT_CLUSTER_KEEP_TEMP:-0}" != 1 && "$temp_root" == /tmp/fc-* ]]; then
    rm -rf -- "$temp_root"
  fi
fi
rm -f "$STATE/nodes.tsv" "$STATE/cluster.env" "$STATE/cluster.json" "$STATE/temp_root"
echo "local Ray cluster stopped in $(( SECONDS - t0 )) s (${#GROUPS_[@]} nodes); logs kept in $STATE"
