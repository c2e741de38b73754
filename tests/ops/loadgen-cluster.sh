#!/usr/bin/env bash
# Smoke test of issue 8's cluster benchmark pieces (about 15 s): one nats-server
# with JetStream and two packtrackd nodes (scripts/cluster-up.sh), then
#   bench/loadgen --target pt over both nodes (every pair spans the two nodes),
#   bench/loadgen --target jetstream on the nats-server (the ceiling's driver),
# each a few pairs for under a second. Passes when messages flowed and none was
# lost, duplicated or misrouted; no rate or latency is checked (the machine is
# shared). Exit 77 (skipped) without nats-server or a loadgen built with libnats.
# Usage: loadgen-cluster.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
loadgen=$build/bench/loadgen
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] ||
  { echo "SKIP: nats-server is not installed (scripts/deps.sh installs it)"; exit 77; }
"$loadgen" --help | grep -q jetstream || { echo "SKIP: loadgen built without libnats"; exit 77; }

# a free range of ports for cluster-up.sh -p BASE (BASE+1, +101, +201, +301..302)
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
base=""
for _ in $(seq 20); do
  b=$((20000 + RANDOM % 12000)) # below 32768: not a port the kernel hands out to connect()
  if port_free $((b + 1)) && port_free $((b + 101)) && port_free $((b + 201)) &&
     port_free $((b + 301)) && port_free $((b + 302)); then base=$b; break; fi
done
[ -n "$base" ] || { echo "FAIL: no free ports"; exit 1; }

dir=$(mktemp -d "$build/loadgen-cluster.XXXXXX")
trap '"$src/scripts/cluster-down.sh" "$dir" --rm >/dev/null 2>&1 || true' EXIT
"$src/scripts/cluster-up.sh" -d "$dir" -n 2 -m 1 -p "$base" -b "$build" \
  -x "--max-conns-per-ip 1000 --ip-rate-limit 100000000 --ip-conn-rate 1000000 --log-level warn" > "$dir/env" ||
  { tail -n 20 "$dir"/nats-*.log "$dir"/node-*.log "$dir"/node-*.stderr 2>/dev/null || true; echo "FAIL: cluster-up.sh"; exit 1; }
fps=$(for i in 1 2; do sed -n 2p "$dir/node-$i.ready"; done | paste -sd, -)

fail=0
check() { # check NAME OUTPUT: msgs > 0 in both phases, nothing lost, duplicated or misrouted
  local name=$1 out=$2 n
  n=$(grep -c '^RESULT' <<<"$out" || true)
  if [ "$n" -ne 2 ]; then echo "FAIL: $name: $n RESULT lines, 2 expected"; fail=1; return; fi
  if ! awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                        if (v["msgs"] + 0 < 1 || v["lost"] + 0 || v["dups"] + 0 || v["misrouted"] + 0 ||
                            v["errors"] + 0) bad = 1 }
            END { exit bad }' <<<"$out"; then
    echo "FAIL: $name: no messages, or some lost, duplicated, misrouted or failed"; fail=1; return
  fi
  echo "ok: $name: $(grep '^RESULT' <<<"$out" | sed 's/.*phase=\([a-z]*\).* msgs=\([0-9]*\) .*lost=\([0-9]*\).*/\1 \2 msgs, \3 lost/' | paste -sd';' -)"
}
common=(--pairs 4 --window 4 --warmup 0.2 --duration 0.5 --half --prime)
out=$(timeout 120 "$loadgen" --target pt --port $((base + 301)),$((base + 302)) --fingerprint "$fps" \
        "${common[@]}") || { echo "$out"; echo "FAIL: loadgen --target pt (exit $?)"; exit 1; }
check "pt over 2 nodes" "$out"
out=$(timeout 120 "$loadgen" --target jetstream --port $((base + 1)) "${common[@]}") ||
  { echo "$out"; echo "FAIL: loadgen --target jetstream (exit $?)"; exit 1; }
check "jetstream" "$out"
[ $fail = 0 ] && echo "2 passed, 0 failed"
exit $fail
