#!/usr/bin/env bash
# Stops the processes scripts/cluster-up.sh started in DIR (default $PT_CLUSTER_DIR):
# exactly the PIDs in DIR/pids, and only while each still runs the program it was
# started as (a PID the kernel gave to something else is left alone). SIGTERM, then
# SIGKILL after 10 s. packtrackd nodes go first, then the NATS servers.
#
#   scripts/cluster-down.sh [DIR] [--rm]     --rm also deletes DIR
set -uo pipefail

DIR=${1:-${PT_CLUSTER_DIR:-}}
[ -n "$DIR" ] && [ -d "$DIR/pids" ] || { echo "cluster-down: no cluster state in '${DIR}'" >&2; exit 1; }

stop_pid() { # pidfile program-name
  local f=$1 want=$2 pid
  pid=$(cat "$f" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] || { rm -f "$f"; return 0; }
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "$want"; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "cluster-down: $want $pid did not stop in 10 s; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -f "$f"
}

for f in "$DIR"/pids/packtrackd-*.pid; do [ -e "$f" ] && stop_pid "$f" packtrackd; done
for f in "$DIR"/pids/nats-*.pid; do [ -e "$f" ] && stop_pid "$f" nats-server; done
if [ "${2:-}" = "--rm" ]; then rm -rf "$DIR"; fi
exit 0
