#!/usr/bin/env bash
# Stops the processes scripts/cluster-up.sh started in DIR (default $PT_CLUSTER_DIR):
# exactly the PIDs in DIR/pids, and only while each still runs the program it was
# started as (a PID the kernel gave to something else is left alone). SIGTERM, then
# SIGKILL after 10 s. packtrackd nodes go first (all at once), then the NATS servers.
#
#   scripts/cluster-down.sh [DIR] [--rm]     --rm also deletes DIR
set -uo pipefail

DIR=${1:-${PT_CLUSTER_DIR:-}}
[ -n "$DIR" ] && [ -d "$DIR/pids" ] || { echo "cluster-down: no cluster state in '${DIR}'" >&2; exit 1; }

# SIGTERM to every pid of one kind at once, then wait for all of them (each
# takes about 2 s to close its NATS connection or its JetStream store).
stop_group() { # program-name pidfile...
  local want=$1 f pid pids=() left
  shift
  for f in "$@"; do
    [ -e "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null) || continue
    rm -f "$f"
    [[ $pid =~ ^[0-9]+$ ]] || continue
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "$want"; then
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  for _ in $(seq 1 100); do
    left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ $left = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "cluster-down: $want $pid did not stop in 10 s; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  done
}

stop_group packtrackd "$DIR"/pids/packtrackd-*.pid
stop_group nats-server "$DIR"/pids/nats-*.pid
if [ "${2:-}" = "--rm" ]; then rm -rf "$DIR"; fi
exit 0
