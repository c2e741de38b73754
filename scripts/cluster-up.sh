#!/usr/bin/env bash
# Starts a local PackTrack cluster: NATS_N nats-server processes (JetStream on, file
# storage, clustered over loopback routes) and NODES packtrackd processes pointed at
# all of them. Every process it starts leaves a pid file under DIR/pids; cluster-down.sh
# DIR stops exactly those processes, nothing else.
#
#   scripts/cluster-up.sh [-d DIR] [-n NODES] [-m NATS_N] [-p BASE_PORT] [-b BUILD_DIR] [-x ARGS]
#
#   -d DIR        state directory (created; default: a new mktemp -d)
#   -n NODES      packtrackd nodes, 0 for NATS only (default 3)
#   -m NATS_N     nats-server processes (default 3; 1 is a single JetStream server)
#   -p BASE_PORT  ports: NATS clients BASE+i, routes BASE+100+i, monitoring BASE+200+i,
#                 packtrackd BASE+300+i, for i = 1.. (default 14200)
#   -b BUILD_DIR  where packtrackd is (default: $PT_PACKTRACKD's directory, else ./build)
#   -x ARGS       more packtrackd options for every node, split at spaces
#                 (scripts/bench-cluster.sh lifts the per-address limits this way)
#
# Prints the cluster's variables (PT_CLUSTER_DIR, PT_CLUSTER_NATS, PT_CLUSTER_NODES) as
# shell assignments on stdout and writes them to DIR/cluster.env too.
# Durability: nats-server 2.10 and later accept `sync_interval: always` (fsync before
# every acknowledgement) and get it; 2.9 (Debian 12) does not know the key and
# fsyncs every 2 minutes, see docs/ARCHITECTURE.md "Cluster mode".
set -euo pipefail

DIR="" NODES=3 NATS_N=3 BASE=14200 BUILD="" EXTRA=""
while getopts "d:n:m:p:b:x:h" o; do
  case $o in
    d) DIR=$OPTARG ;; n) NODES=$OPTARG ;; m) NATS_N=$OPTARG ;; p) BASE=$OPTARG ;; b) BUILD=$OPTARG ;;
    x) EXTRA=$OPTARG ;;
    h) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) exit 1 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$NATS" ] || { echo "cluster-up: nats-server not found (scripts/deps.sh installs it)" >&2; exit 1; }
if [ -n "${PT_PACKTRACKD:-}" ]; then PTD=$PT_PACKTRACKD
else PTD=${BUILD:-$here/../build}/packtrackd; fi
if [ "$NODES" -gt 0 ] && [ ! -x "$PTD" ]; then
  echo "cluster-up: $PTD not found; build first or pass -b BUILD_DIR" >&2; exit 1
fi
[ -n "$DIR" ] || DIR=$(mktemp -d /tmp/pt-cluster.XXXXXX)
mkdir -p "$DIR/pids"
DIR=$(cd "$DIR" && pwd)

fail() { echo "cluster-up: $*" >&2; "$here/cluster-down.sh" "$DIR" >&2 || true; exit 1; }

# Does this nats-server know jetstream.sync_interval (2.10+)? `-t` checks a config.
sync_line=""
printf 'jetstream { store_dir: "%s/probe", sync_interval: always }\n' "$DIR" > "$DIR/probe.conf"
if "$NATS" -c "$DIR/probe.conf" -t >/dev/null 2>&1; then sync_line="sync_interval: always"; fi
rm -rf "$DIR/probe.conf" "$DIR/probe"

urls=() routes=()
for i in $(seq 1 "$NATS_N"); do
  urls+=("nats://127.0.0.1:$((BASE + i))")
  routes+=("\"nats-route://127.0.0.1:$((BASE + 100 + i))\"")
done
route_list=$(IFS=,; echo "${routes[*]}")
for i in $(seq 1 "$NATS_N"); do
  mkdir -p "$DIR/nats-$i"
  cluster_block=""
  if [ "$NATS_N" -gt 1 ]; then
    cluster_block="cluster { name: packtrack, listen: 127.0.0.1:$((BASE + 100 + i)), routes: [ $route_list ] }"
  fi
  cat > "$DIR/nats-$i.conf" <<EOF
server_name: pt-nats-$i
listen: 127.0.0.1:$((BASE + i))
http: 127.0.0.1:$((BASE + 200 + i))
pid_file: "$DIR/pids/nats-$i.pid"
jetstream { store_dir: "$DIR/nats-$i" $sync_line }
$cluster_block
EOF
  "$NATS" -c "$DIR/nats-$i.conf" >"$DIR/nats-$i.log" 2>&1 &
  echo $! > "$DIR/pids/nats-$i.pid" # the server rewrites the same pid once it runs
done

# Ready: every server's JetStream healthy (meta leader elected, it is current). A
# restart on existing data recovers every stream and consumer first: on a loaded
# 2-core machine that took over 15 s, hence 30.
http_ok() { curl -fsS --max-time 1 "$1" 2>/dev/null; }
for i in $(seq 1 "$NATS_N"); do
  ok=0
  for _ in $(seq 1 300); do
    if http_ok "http://127.0.0.1:$((BASE + 200 + i))/healthz" | grep -q '"ok"'; then ok=1; break; fi
    sleep 0.1
  done
  [ $ok = 1 ] || fail "nats-server $i not healthy after 30 s; see $DIR/nats-$i.log"
done
if [ "$NATS_N" -gt 1 ]; then
  ok=0
  for _ in $(seq 1 300); do
    if http_ok "http://127.0.0.1:$((BASE + 201))/jsz" | grep -q '"leader": *"pt-nats'; then ok=1; break; fi
    sleep 0.1
  done
  [ $ok = 1 ] || fail "no JetStream meta leader after 30 s; see $DIR/nats-*.log"
fi

# The servers that answered must be ours: a port another cluster holds (another run
# on this machine) makes our server exit at once while theirs answers the checks.
for i in $(seq 1 "$NATS_N"); do
  kill -0 "$(cat "$DIR/pids/nats-$i.pid")" 2>/dev/null ||
    fail "nats-server $i exited (are its ports $((BASE + i)), $((BASE + 100 + i)), $((BASE + 200 + i)) taken?); see $DIR/nats-$i.log"
done

nats_urls=$(IFS=,; echo "${urls[*]}")
nodes=()
for i in $(seq 1 "$NODES"); do
  port=$((BASE + 300 + i))
  rm -f "$DIR/node-$i.ready"
  "$PTD" --listen "127.0.0.1:$port" --data "$DIR/node-$i" --no-discovery \
    --cluster-nats "$nats_urls" --cluster-node-id "$i" --ready-file "$DIR/node-$i.ready" \
    --log-file "$DIR/node-$i.log" $EXTRA >>"$DIR/node-$i.stderr" 2>&1 &
  echo $! > "$DIR/pids/packtrackd-$i.pid"
  nodes+=("127.0.0.1:$port")
done
for i in $(seq 1 "$NODES"); do
  for _ in $(seq 1 150); do [ -s "$DIR/node-$i.ready" ] && break; sleep 0.1; done
  [ -s "$DIR/node-$i.ready" ] || fail "packtrackd node $i did not start; see $DIR/node-$i.log and .stderr"
done

{
  echo "PT_CLUSTER_DIR=$DIR"
  echo "PT_CLUSTER_NATS=$nats_urls"
  echo "PT_CLUSTER_NODES=$(IFS=,; echo "${nodes[*]}")"
  echo "PT_CLUSTER_SYNC_ALWAYS=$([ -n "$sync_line" ] && echo yes || echo no)"
} | tee "$DIR/cluster.env"
