#!/usr/bin/env bash
# Issue 8's cluster benchmark (docs/BENCHMARKS.md, "Cluster mode (issue 8)").
#
# One run, the same load shape as issue 3's server benchmark (bench/loadgen:
# pairs of clients, 100-byte messages, a closed loop for the maximum rate, then
# an open loop at half that rate for the latencies), against:
#   local   1 packtrackd, local mode (SQLite, no NATS): issue 3's configuration
#   pt1     1 packtrackd node + a 3-server NATS JetStream cluster
#   pt3     3 packtrackd nodes + the 3-server NATS cluster; client i connects to
#           node i mod 3, so both clients of every pair are on different nodes
#   js      the NATS-only ceiling on the same 3-server cluster, no packtrackd:
#           JetStream as cluster mode uses it (stream with file storage, R3, a
#           publish with Nats-Msg-Id acked by JetStream, a durable push consumer
#           per recipient, explicit acks; bench/lg_jetstream.c)
#   nats    core NATS publish/subscribe on the same cluster, for reference
#   local0  with --local-before PATH: local mode with another packtrackd binary
#           (built from before issue 8), the A/B of "local mode unchanged"
# Each configuration is started here (scripts/cluster-up.sh, or packtrackd for
# local), measured, and stopped (scripts/cluster-down.sh: exactly the pids it
# started); the configurations are interleaved rep by rep and the table gives
# medians. Servers (packtrackd and nats-server) run on CPU $SRV_CPU, loadgen on
# CPU $LOAD_CPU (taskset), as in scripts/bench-loadgen.sh.
#
#   scripts/bench-cluster.sh [--quick] [--reps N] [--build DIR] [--out DIR]
#                            [--pairs N] [--window N] [--size N] [--duration S]
#                            [--configs "local pt1 pt3 js nats"] [--base-port P]
#                            [--local-before PATH/TO/packtrackd] [--profile]
#
# --build DIR uses the binaries there and builds nothing; without it build-lg is
# configured and built if its loadgen is missing (RelWithDebInfo, -DPT_BENCH=ON,
# -j2). --quick is a smoke run (well under a minute; figures not meaningful).
# --profile adds, after the table's runs, `perf record -C $SRV_CPU` (cpu-clock,
# call graphs; the whole server CPU, every process on it) for 4 s in the middle of
# a closed-loop pt3 run and of a js run: perf-pt3.txt and perf-js.txt give the
# share of each process and the top symbols (nats-server is stripped: kernel
# symbols only).
# The exit status is non-zero only when something failed to run, never because
# a target was missed.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BUILD=""
OUT=""
QUICK=0
REPS=2
PAIRS=100
WINDOW=8
SIZE=100
WARMUP=1
DURATION=5
CONFIGS="local pt1 pt3 js nats"
BASE=15700                      # NATS clients BASE+1.., packtrackd nodes BASE+301..
QUIET_WAIT=${QUIET_WAIT:-180}   # seconds to wait for other (not niced) work to stop before each run
SRV_CPU=${SRV_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
LOCAL_BEFORE=""
PROFILE=0
# docs/BENCHMARKS.md, "Server load (issue 3)", full run at bdf755e: packtrackd's
# closed-loop msgs/s and server µs/msg, the last figures recorded before cluster mode
LOCAL_ISSUE3=77867
LOCAL_ISSUE3_US=12.7

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --reps) REPS=$2; shift ;;
    --build) BUILD=$(cd "$2" && pwd); shift ;;
    --out) OUT=$2; shift ;;
    --pairs) PAIRS=$2; shift ;;
    --window) WINDOW=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --configs) CONFIGS=$2; shift ;;
    --base-port) BASE=$2; shift ;;
    --profile) PROFILE=1 ;;
    --local-before) LOCAL_BEFORE=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-cluster: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  REPS=1 PAIRS=10 WARMUP=0.2 DURATION=0.6 QUIET_WAIT=0
fi
if [ -n "$LOCAL_BEFORE" ]; then
  [ -x "$LOCAL_BEFORE" ] || { echo "bench-cluster: --local-before $LOCAL_BEFORE is not executable" >&2; exit 1; }
  [[ " $CONFIGS " == *" local0 "* ]] || CONFIGS="local0 $CONFIGS"
fi

if [ -z "$BUILD" ]; then
  BUILD="$here/build-lg"
  if [ ! -x "$BUILD/bench/loadgen" ] || [ ! -x "$BUILD/packtrackd" ]; then
    echo "bench-cluster: building $BUILD (RelWithDebInfo, PT_BENCH=ON)"
    cmake -S "$here" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPT_BENCH=ON -DPT_TESTS=OFF >/dev/null
    cmake --build "$BUILD" -j2 --target packtrackd loadgen >/dev/null
  fi
fi
LOADGEN="$BUILD/bench/loadgen"
PTD="$BUILD/packtrackd"
for b in "$LOADGEN" "$PTD"; do
  [ -x "$b" ] || { echo "bench-cluster: $b is missing; build with -DPT_BENCH=ON first" >&2; exit 1; }
done
"$LOADGEN" --help | grep -q jetstream ||
  { echo "bench-cluster: $LOADGEN has no jetstream target (built without libnats; scripts/deps.sh)" >&2; exit 1; }
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] ||
  { echo "bench-cluster: nats-server is missing (scripts/deps.sh installs it)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Data on the build directory's disk (not tmpfs): packtrackd's fsyncs and
# JetStream's file store cost what they cost.
[ -n "$OUT" ] || OUT="$BUILD/cluster-bench-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.txt"
: > "$RESULTS"
# every load client connects from 127.0.0.1: lift the per-address limits
PTD_ARGS="--max-connections 1000000 --max-conns-per-ip 1000000 --rate-limit 10000000 --ip-rate-limit 100000000 --ip-conn-rate 1000000 --log-level warn"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# The ports of cluster-up.sh -p BASE must be free (another cluster, another bench).
for _ in 1 2 3 4 5; do
  ok=1
  for p in $((BASE + 1)) $((BASE + 2)) $((BASE + 3)) $((BASE + 101)) $((BASE + 102)) $((BASE + 103)) \
           $((BASE + 201)) $((BASE + 202)) $((BASE + 203)) $((BASE + 301)) $((BASE + 302)) $((BASE + 303)); do
    port_free "$p" || { ok=0; break; }
  done
  [ $ok = 1 ] && break
  BASE=$((BASE + 1000))
done
[ $ok = 1 ] || { echo "bench-cluster: no free port range found near --base-port" >&2; exit 1; }

LPID=""       # the local-mode packtrackd
CDIR=""       # the cluster running now (cluster-up.sh's state directory)
stop_all() {
  if [ -n "$LPID" ]; then
    kill -TERM "$LPID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$LPID" 2>/dev/null || true
    wait "$LPID" 2>/dev/null || true
    LPID=""
  fi
  if [ -n "$CDIR" ]; then
    "$here/scripts/cluster-down.sh" "$CDIR" >/dev/null || true
    rm -rf "$CDIR"/nats-[0-9] "$CDIR"/node-[0-9] # the stores; the logs stay
    CDIR=""
  fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# Percent of a CPU used over 1 s by processes that are not niced (user + system +
# steal): niced work such as the fuzzers only takes CPU time nobody else wants.
unniced_busy() {
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  echo $(( (b[1] + b[3] + b[8] - a[1] - a[3] - a[8]) * 100 / $(getconf CLK_TCK) ))
}
quiet_wait() { # at most QUIET_WAIT s until other work (not niced) uses under 10 % of a CPU
  local i busy
  for ((i = 0; i < QUIET_WAIT; i++)); do
    busy=$(unniced_busy)
    [ "$busy" -lt 10 ] && return 0
    [ $((i % 30)) -eq 0 ] && echo "bench-cluster: other work uses ${busy}% of a CPU; waiting (up to ${QUIET_WAIT}s)"
  done
  [ "$QUIET_WAIT" -le 0 ] || echo "bench-cluster: warning: the machine stayed busy; measuring anyway"
}

list() { paste -sd, -; }
# Sets PORTS FPS SPIDS NPIDS for the configuration just started.
start_local() { # start_local TAG [BINARY]
  local dir="$OUT/local-$1" bin=${2:-$PTD}
  mkdir -p "$dir"
  taskset -c "$SRV_CPU" "$bin" --listen 127.0.0.1:0 --data "$dir/data" --ready-file "$dir/ready" \
    $PTD_ARGS 2>"$dir/server.log" &
  LPID=$!
  for _ in $(seq 100); do [ -s "$dir/ready" ] && break; kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
  [ -s "$dir/ready" ] || { echo "bench-cluster: packtrackd did not start; see $dir/server.log" >&2; exit 1; }
  PORTS=$(head -1 "$dir/ready" | cut -d: -f2)
  FPS=$(sed -n 2p "$dir/ready")
  SPIDS=$LPID
  NPIDS=""
}
start_cluster() { # start_cluster NODES TAG
  local n=$1 dir="$OUT/$2"
  CDIR=$dir
  if ! taskset -c "$SRV_CPU" "$here/scripts/cluster-up.sh" -d "$dir" -n "$n" -m 3 -p "$BASE" -b "$BUILD" \
         -x "$PTD_ARGS" > "$dir.env" 2> "$dir.err"; then
    CDIR=""
    cat "$dir.err" >&2
    echo "bench-cluster: cluster-up.sh failed; see $dir" >&2
    exit 1
  fi
  PORTS="" FPS="" SPIDS=""
  if [ "$n" -gt 0 ]; then
    PORTS=$(for i in $(seq "$n"); do echo $((BASE + 300 + i)); done | list)
    FPS=$(for i in $(seq "$n"); do sed -n 2p "$dir/node-$i.ready"; done | list)
    SPIDS=$(for i in $(seq "$n"); do cat "$dir/pids/packtrackd-$i.pid"; echo; done | grep . | list)
  fi
  NPIDS=$(for i in 1 2 3; do cat "$dir/pids/nats-$i.pid"; echo; done | grep . | list)
}

run_loadgen() { # run_loadgen CONFIG TARGET: one loadgen run against what was started last
  local cfg=$1 t=$2 args=()
  args=(--target "$t" --pairs "$PAIRS" --window "$WINDOW" --size "$SIZE" --warmup "$WARMUP"
        --duration "$DURATION" --half --prime)
  if [ "$t" = pt ]; then args+=(--port "$PORTS" --fingerprint "$FPS" --server-pid "$SPIDS")
  else args+=(--port "$((BASE + 1)),$((BASE + 2)),$((BASE + 3))"); fi
  [ -n "$NPIDS" ] && args+=(--nats-pid "$NPIDS")
  echo "+ taskset -c $LOAD_CPU loadgen ${args[*]}" >> "$OUT/commands.txt"
  local rc=0
  timeout 600 taskset -c "$LOAD_CPU" "$LOADGEN" "${args[@]}" > "$OUT/run.out" 2> "$OUT/run.err" || rc=$?
  cat "$OUT/run.out" >> "$OUT/loadgen.log"
  cat "$OUT/run.err" >> "$OUT/loadgen.err"
  if [ "$rc" -ne 0 ]; then
    cat "$OUT/run.err" >&2
    echo "bench-cluster: loadgen ($cfg) failed (exit $rc); see $OUT/loadgen.log and loadgen.err" >&2
    exit 1
  fi
  local ready prime
  ready=$(sed -n 's/.* clients ready in \([0-9.]*\) s.*/\1/p' "$OUT/run.err" | tail -1)
  prime=$(sed -n 's/.*one message per client through in \([0-9.]*\) s.*/\1/p' "$OUT/run.err" | tail -1)
  grep '^RESULT' "$OUT/run.out" | sed "s/^RESULT /RESULT config=$cfg setup_s=${ready:--1} prime_s=${prime:--1} /" >> "$RESULTS"
  grep -v '^RESULT' "$OUT/run.out" | sed "s/^/  $cfg: /"
  grep -E 'warning|prime:' "$OUT/run.err" | sed "s/^/  $cfg: /" || true
}

echo "bench-cluster: results in $OUT; servers on CPU $SRV_CPU, loadgen on CPU $LOAD_CPU; $(nproc) CPUs;" \
     "$PAIRS pairs, window $WINDOW, $SIZE-byte messages, ${DURATION}s per phase, $REPS rep(s)"
echo "bench-cluster: load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/loadavg.txt"
busy=$(ps -eo pcpu=,ni=,comm= --sort=-pcpu | awk '$1 > 20 {printf "%s(%s%%, nice %s) ", $3, $1, $2}')
[ -z "$busy" ] || echo "bench-cluster: note: busy processes: $busy"
t0=$(date +%s)
for rep in $(seq "$REPS"); do
  for cfg in $CONFIGS; do
    [ "$cfg" = nats ] && [[ " $CONFIGS " == *" js "* ]] && continue # measured on js's cluster
    quiet_wait
    case "$cfg" in
      local) start_local "$rep"; run_loadgen local pt ;;
      local0) [ -n "$LOCAL_BEFORE" ] || { echo "bench-cluster: local0 needs --local-before" >&2; exit 2; }
              start_local "before-$rep" "$LOCAL_BEFORE"; run_loadgen local0 pt ;;
      pt1) start_cluster 1 "pt1-$rep"; run_loadgen pt1 pt ;;
      pt3) start_cluster 3 "pt3-$rep"; run_loadgen pt3 pt ;;
      js) start_cluster 0 "nats-$rep"; run_loadgen js jetstream
          if [[ " $CONFIGS " == *" nats "* ]]; then run_loadgen nats nats; fi ;;
      nats) start_cluster 0 "nats-$rep"; run_loadgen nats nats ;;
      *) echo "bench-cluster: unknown configuration '$cfg' (local pt1 pt3 js nats)" >&2; exit 2 ;;
    esac
    stop_all
  done
done
profile_run() { # profile_run CONFIG TARGET NODES: perf of the server CPU during a closed loop
  local cfg=$1 t=$2 n=$3 pid
  quiet_wait
  start_cluster "$n" "profile-$cfg"
  local args=(--target "$t" --pairs "$PAIRS" --window "$WINDOW" --size "$SIZE" --warmup "$WARMUP"
              --duration 8 --prime)
  if [ "$t" = pt ]; then args+=(--port "$PORTS" --fingerprint "$FPS" --server-pid "$SPIDS")
  else args+=(--port "$((BASE + 1)),$((BASE + 2)),$((BASE + 3))"); fi
  args+=(--nats-pid "$NPIDS")
  timeout 600 taskset -c "$LOAD_CPU" "$LOADGEN" "${args[@]}" > "$OUT/profile-$cfg.out" 2> "$OUT/profile-$cfg.err" &
  pid=$!
  for _ in $(seq 1200); do grep -q 'one message per client' "$OUT/profile-$cfg.err" && break; sleep 0.5; done
  sleep "$WARMUP"; sleep 1
  perf record -q -e cpu-clock -g -C "$SRV_CPU" -o "$OUT/perf-$cfg.data" -- sleep 4 >/dev/null 2>&1 || true
  wait "$pid" || echo "bench-cluster: loadgen of the $cfg profile failed; see $OUT/profile-$cfg.err" >&2
  stop_all
  sed -n 's/^RESULT.*phase=closed.* msgs_per_s=\([0-9]*\).*srv_cpu_pct=\([-0-9.]*\).*nats_cpu_pct=\([-0-9.]*\).*/closed loop during the profile: \1 msgs\/s, packtrackd \2 % CPU, nats-server \3 %/p' \
    "$OUT/profile-$cfg.out" > "$OUT/perf-$cfg.txt"
  { echo; echo "share of CPU $SRV_CPU by process (cpu-clock samples):"
    { perf report -i "$OUT/perf-$cfg.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -12; } || true
    echo; echo "nats-server: user space (stripped binary) vs kernel, and its system calls (inclusive):"
    { perf report -i "$OUT/perf-$cfg.data" --no-children --comm nats-server --sort dso --stdio 2>/dev/null |
        grep -E '^ +[0-9]' | head -3; } || true
    { perf report -i "$OUT/perf-$cfg.data" --children --comm nats-server --sort sym --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | grep -E 'do_syscall_64|__x64_sys_|vfs_write|tcp_sendmsg|tcp_recvmsg' | head -12; } || true
    echo; echo "by process and symbol (self):"
    { perf report -i "$OUT/perf-$cfg.data" --no-children --sort comm,sym --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -40; } || true
  } >> "$OUT/perf-$cfg.txt"
  echo "bench-cluster: profile of $cfg in $OUT/perf-$cfg.txt"
}
if [ "$PROFILE" = 1 ]; then
  command -v perf >/dev/null 2>&1 || { echo "bench-cluster: --profile needs perf (linux-perf)" >&2; exit 1; }
  profile_run pt3 pt 3
  profile_run js jetstream 0
fi

echo "bench-cluster: load average after: $(cut -d' ' -f1-3 /proc/loadavg); $(( $(date +%s) - t0 )) s" |
  tee -a "$OUT/loadavg.txt"

python3 - "$RESULTS" "$QUICK" "$LOCAL_ISSUE3" "$LOCAL_ISSUE3_US" <<'EOF' | tee "$OUT/table.md"
import sys, statistics
rows = [dict(kv.split("=", 1) for kv in l.split()[1:]) for l in open(sys.argv[1]) if l.startswith("RESULT")]
quick, issue3, issue3_us = sys.argv[2] == "1", float(sys.argv[3]), float(sys.argv[4])
def med(cfg, phase, key):
    v = [float(r[key]) for r in rows if r["config"] == cfg and r["phase"] == phase and key in r]
    v = [x for x in v if x >= 0]
    return statistics.median(v) if v else None
def setup(cfg):  # connections, logins, consumers, until one message per client is through
    v = [float(r["setup_s"]) + float(r["prime_s"]) for r in rows if r["config"] == cfg and r["phase"] == "closed"]
    return statistics.median(v) if v else None
def f(v, fmt="{:,.0f}"):
    return "–" if v is None else fmt.format(v)
names = {"local0": "1 packtrackd, local mode, binary from before issue 8",
         "local": "1 packtrackd, local mode (SQLite)", "pt1": "1 packtrackd node + NATS (3 servers)",
         "pt3": "3 packtrackd nodes + NATS (3 servers)", "js": "NATS-only ceiling: JetStream R3",
         "nats": "NATS-only: core pub/sub"}
cfgs = [c for c in names if any(r["config"] == c for r in rows)]
reps = max([sum(1 for r in rows if r["config"] == c and r["phase"] == "closed") for c in cfgs] or [0])
print(f"\nCluster benchmark, median of {reps} run(s); closed loop, then open loop at half that rate")
print("\n| configuration | msgs/s (closed) | packtrackd CPU % | nats-server CPU % | CPU µs/msg (pt + nats) "
      "| delivery p50/p99 µs (half) | ack p99 µs (half) | half rate reached | setup s | loadgen CPU % | other CPU %, all / not niced (max) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for c in cfgs:
    spm = [m for m in (med(c, "closed", "srv_us_per_msg"), med(c, "closed", "nats_us_per_msg")) if m is not None]
    tgt, got = med(c, "half", "rate_target"), med(c, "half", "msgs_per_s")
    other = max([float(r.get("other_unniced_pct", -1)) for r in rows if r["config"] == c] or [-1])
    other_all = max([float(r.get("other_cpu_pct", -1)) for r in rows if r["config"] == c] or [-1])
    print(f"| {names[c]} | {f(med(c,'closed','msgs_per_s'))} | {f(med(c,'closed','srv_cpu_pct'))} | "
          f"{f(med(c,'closed','nats_cpu_pct'))} | {f(sum(spm) if spm else None, '{:.1f}')} | "
          f"{f(med(c,'half','dlv_p50_us'))} / {f(med(c,'half','dlv_p99_us'))} | {f(med(c,'half','ack_p99_us'))} | "
          f"{f(100 * got / tgt if tgt and got is not None else None, '{:.0f} %')} | "
          f"{f(setup(c), '{:.1f}')} | {f(med(c,'closed','lg_cpu_pct'))} | "
          f"{f(other_all if other_all >= 0 else None)} / {f(other if other >= 0 else None)} |")
bad = [r for r in rows if int(r.get("errors", 0)) or int(r.get("misrouted", 0)) or int(r.get("lost", 0))]
if bad:
    print("\nwarning: runs with errors, misrouted or lost messages:", [(r["config"], r["phase"]) for r in bad])
noisy = [r for r in rows if float(r.get("other_unniced_pct", 0)) > 10]
if noisy:
    print(f"\nwarning: {len(noisy)} phase(s) shared the machine with other (not niced) work above 10 % of a CPU")
# With sched_autogroup_enabled, nice only orders tasks within one session: fuzzers
# at nice 19 started from another session still get their session's fair share.
try:
    if open("/proc/sys/kernel/sched_autogroup_enabled").read().strip() == "1":
        print("note: sched_autogroup_enabled=1: niced work of other sessions (fuzzers) still takes its "
              "session's share of a CPU; see 'all' in the last column")
except OSError:
    pass
print("\n| target | measured | verdict |\n| --- | ---: | --- |")
js = med("js", "closed", "msgs_per_s")
for c in ("pt1", "pt3"):
    v = med(c, "closed", "msgs_per_s")
    if v is not None and js:
        print(f"| {names[c]}: ≥ 50 % of the JetStream ceiling | {100 * v / js:.0f} % ({v:,.0f} / {js:,.0f}) | "
              f"{'met' if v >= 0.5 * js else 'missed'} |")
v, v0 = med("local", "closed", "msgs_per_s"), med("local0", "closed", "msgs_per_s")
def within(x): return "within ±10 %" if abs(x - 1) <= 0.1 else "differs by more than 10 %"
if v is not None:
    print(f"| local mode unchanged: msgs/s against issue 3's recorded {issue3:,.0f} | {100 * v / issue3:.0f} % | "
          f"{within(v / issue3)} (another day's machine) |")
if v is not None and v0:
    print(f"| local mode unchanged: msgs/s against the binary from before issue 8, same run | "
          f"{100 * v / v0:.0f} % ({v:,.0f} / {v0:,.0f}) | {within(v / v0)} |")
# msgs/s follows the share of its core the server gets on a shared machine; the
# CPU it spends per message does not
u, u0 = med("local", "closed", "srv_us_per_msg"), med("local0", "closed", "srv_us_per_msg")
if u is not None:
    print(f"| local mode unchanged: server µs/msg against issue 3's recorded {issue3_us} | {u:.1f} | "
          f"{'not more' if u <= issue3_us * 1.1 else 'more than 10 % above'} |")
if u is not None and u0:
    print(f"| local mode unchanged: server µs/msg against the binary from before issue 8, same run | "
          f"{u:.1f} / {u0:.1f} | {within(u / u0)} |")
if quick:
    print("\n(--quick: a smoke run; its figures are not meaningful)")
EOF
