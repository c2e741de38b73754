#!/usr/bin/env bash
# Issue 3's server-load benchmark (docs/BENCHMARKS.md, "Server load (issue 3)").
#
# Runs bench/loadgen against packtrackd and, with the same load shape, against
# the raw relay (bench/raw_relay, the ceiling), nats-server (core pub/sub) and
# mosquitto (MQTT QoS 1). Each server is started here, pinned to core $SRV_CPU,
# and stopped after its run; loadgen runs pinned to core $LOAD_CPU. The targets
# are interleaved rep by rep so that all of them see the same machine, and the
# table gives medians. Everything stays on 127.0.0.1; every loop is bounded.
#
#   scripts/bench-loadgen.sh [--quick] [--reps N] [--build DIR] [--out DIR]
#                            [--pairs N] [--window N] [--duration S] [--idle N]
#                            [--targets "raw pt nats mqtt"] [--profile]
#                            [--rates "1000 2000 ..."]
#
# --rates adds open-loop runs at those total rates (latency versus load).
# --idle 0 skips the idle-connection runs. PACKTRACKD=/path/to/packtrackd measures
# another build of the server against the same loadgen (A/B of a server change);
# PTD_ARGS adds packtrackd flags (PTD_ARGS="--workers 2" SRV_CPU=0,1: worker loops).
#
# --quick is the CI smoke (under 20 s, numbers not gated). --profile adds a
# perf record (cpu-clock, call graphs) of packtrackd during one closed-loop run.
# The exit status is non-zero only when something failed to run, never because
# a target was missed.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$here/build-lg"
OUT=""
QUICK=0
REPS=3
PAIRS=100
WINDOW=8
WARMUP=1
DURATION=5
IDLE=10000
IDLE_WARM=100
TARGETS="raw pt nats mqtt"
RATES=""            # open-loop rates (msgs/s) for a latency-versus-rate table
PROFILE=0
QUIET_WAIT=${QUIET_WAIT:-300}   # seconds to wait for other work to finish before each run
TRIES=3                         # runs disturbed by other work are repeated, up to this many times
SRV_CPU=${SRV_CPU:-0}
PTD_ARGS=${PTD_ARGS:-}   # more packtrackd flags, e.g. PTD_ARGS="--workers 2" SRV_CPU=0,1
LOAD_CPU=${LOAD_CPU:-1}

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --reps) REPS=$2; shift ;;
    --build) BUILD=$(cd "$2" && pwd); shift ;;
    --out) OUT=$2; shift ;;
    --pairs) PAIRS=$2; shift ;;
    --window) WINDOW=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --idle) IDLE=$2; shift ;;
    --targets) TARGETS=$2; shift ;;
    --profile) PROFILE=1 ;;
    --rates) RATES=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench-loadgen: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  REPS=1 WARMUP=0.2 DURATION=0.6 IDLE=200 IDLE_WARM=20 QUIET_WAIT=0 TRIES=1
fi

LOADGEN="$BUILD/bench/loadgen"
RELAY="$BUILD/bench/raw_relay"
PTD="${PACKTRACKD:-$BUILD/packtrackd}"   # PACKTRACKD=path measures another build
for b in "$LOADGEN" "$RELAY" "$PTD"; do
  [ -x "$b" ] || { echo "bench-loadgen: $b is missing; build with -DPT_BENCH=ON first" >&2; exit 1; }
done

# The peers are Debian packages (scripts/deps.sh lists them).
need=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench-loadgen: installing ${need[*]} (Debian packages) for the peer measurements"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { echo "bench-loadgen: cannot install ${need[*]}; run scripts/deps.sh" >&2; exit 1; }
fi
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
MOSQ=$(command -v mosquitto || echo /usr/sbin/mosquitto)

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge $((IDLE + IDLE_WARM + 200)) ] || {
  echo "bench-loadgen: open files limit $(ulimit -n) is below --idle $IDLE + $IDLE_WARM" >&2; exit 1; }

# Server data lives on the build directory's disk (not tmpfs), so that
# packtrackd's fsync per group commit costs what it costs.
[ -n "$OUT" ] || OUT="$BUILD/loadgen-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: > "$RESULTS"
SPID=""
SPORT=""
SFP=""

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # wait_port PORT PID: up to 10 s until something accepts on PORT
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

wait_ready_file() { # wait_ready_file FILE PID
  for _ in $(seq 100); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

start_server() { # start_server TARGET TAG: sets SPID, SPORT, SFP
  local t=$1 dir="$OUT/$1-$2"
  rm -rf "$dir"; mkdir -p "$dir"
  SFP=""
  case "$t" in
    pt)
      # every load client connects from 127.0.0.1: lift the per-address limits
      taskset -c "$SRV_CPU" "$PTD" --listen 127.0.0.1:0 --data "$dir/data" --ready-file "$dir/ready" \
        --max-connections 100000 --max-conns-per-ip 1000000 --rate-limit 10000000 \
        --ip-rate-limit 100000000 --ip-conn-rate 1000000 \
        --log-level warn $PTD_ARGS 2>"$dir/server.log" &
      SPID=$!
      wait_ready_file "$dir/ready" "$SPID" || { echo "bench-loadgen: packtrackd did not start; see $dir/server.log" >&2; return 1; }
      SPORT=$(head -1 "$dir/ready" | cut -d: -f2)
      SFP=$(sed -n 2p "$dir/ready") ;;
    raw)
      taskset -c "$SRV_CPU" "$RELAY" --listen 127.0.0.1:0 --ready-file "$dir/ready" 2>"$dir/server.log" &
      SPID=$!
      wait_ready_file "$dir/ready" "$SPID" || { echo "bench-loadgen: raw_relay did not start" >&2; return 1; }
      SPORT=$(head -1 "$dir/ready" | cut -d: -f2) ;;
    nats)
      SPORT=$(free_port)
      taskset -c "$SRV_CPU" "$NATS" -a 127.0.0.1 -p "$SPORT" >"$dir/server.log" 2>&1 &
      SPID=$!
      wait_port "$SPORT" "$SPID" || { echo "bench-loadgen: nats-server did not start; see $dir/server.log" >&2; return 1; } ;;
    mqtt)
      SPORT=$(free_port)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\n' \
        "$SPORT" > "$dir/mosquitto.conf"
      taskset -c "$SRV_CPU" "$MOSQ" -c "$dir/mosquitto.conf" >"$dir/server.log" 2>&1 &
      SPID=$!
      wait_port "$SPORT" "$SPID" || { echo "bench-loadgen: mosquitto did not start; see $dir/server.log" >&2; return 1; } ;;
  esac
}

stop_server() {
  [ -n "$SPID" ] || return 0
  kill -TERM "$SPID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=""
}
trap stop_server EXIT

machine_busy() { # percent of one CPU used by processes (or stolen) over 1 s, whole machine
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  echo $(( (b[1]+b[2]+b[3]+b[8] - a[1]-a[2]-a[3]-a[8]) * 100 / $(getconf CLK_TCK) ))
}

quiet_wait() { # waits (at most QUIET_WAIT s) until other work uses under 10 % of a CPU
  local i busy
  [ "$QUIET_WAIT" -gt 0 ] || return 0
  for ((i = 0; i < QUIET_WAIT; i += 1)); do
    busy=$(machine_busy)
    [ "$busy" -lt 10 ] && return 0
    [ $((i % 30)) -eq 0 ] && echo "bench-loadgen: machine busy (${busy}% of a CPU); waiting up to ${QUIET_WAIT}s"
  done
  echo "bench-loadgen: warning: the machine stayed busy; measuring anyway"
}

LAST="$OUT/last-run.txt"
loadgen() { # loadgen TARGET ARGS...: one run against the server started last, RESULT lines in $LAST;
            # fails when loadgen fails, returns 1 when other work disturbed the measurement
  local t=$1; shift
  local fp=()
  [ -n "$SFP" ] && fp=(--fingerprint "$SFP")
  echo "+ taskset -c $LOAD_CPU loadgen --target $t --port $SPORT --server-pid $SPID ${fp[*]} $*" >> "$OUT/commands.txt"
  set +e
  timeout 300 taskset -c "$LOAD_CPU" "$LOADGEN" --target "$t" --port "$SPORT" --server-pid "$SPID" "${fp[@]}" "$@" \
    > "$OUT/run.out"
  local rc=$?
  set -e
  cat "$OUT/run.out" >> "$OUT/loadgen.log"
  grep '^RESULT' "$OUT/run.out" > "$LAST" || true
  if [ "$rc" -ne 0 ]; then
    echo "bench-loadgen: loadgen --target $t failed (exit $rc); see $OUT/loadgen.log" >&2
    exit 1
  fi
  ! awk '{for (i = 2; i <= NF; i++) if ($i ~ /^other_cpu_pct=/ && substr($i, 15) + 0 > 10) bad = 1}
         END {exit !bad}' "$LAST"
}

run_load() { # run_load TARGET TAG ARGS...: a fresh server, one loadgen run, retried if disturbed
  local t=$1 tag=$2 try; shift 2
  for try in $(seq "$TRIES"); do
    quiet_wait
    start_server "$t" "$tag"
    if loadgen "$t" "$@"; then
      stop_server
      break
    fi
    stop_server
    [ "$try" -lt "$TRIES" ] && echo "bench-loadgen: $t $tag was disturbed by other work; running it again"
  done
  cat "$LAST" >> "$RESULTS" # after $TRIES disturbed tries, kept and flagged in the table
}

echo "bench-loadgen: results in $OUT; server on CPU $SRV_CPU, load on CPU $LOAD_CPU; $(nproc) CPUs"
echo "bench-loadgen: load average $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine distorts the figures)"
busy=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 > 20 {printf "%s(%s%%) ", $2, $1}')
[ -z "$busy" ] || echo "bench-loadgen: warning: busy processes: $busy"

for rep in $(seq "$REPS"); do
  for t in $TARGETS; do
    run_load "$t" "load$rep" --pairs "$PAIRS" --window "$WINDOW" --warmup "$WARMUP" --duration "$DURATION" --half
  done
done
# The raw relay and nats-server again, in the open loop at packtrackd's half rate
# (the median of its runs above): the latency targets' baseline, the same offered
# load on the same machine (mosquitto's closed loop is below that rate: left out).
PT_HALF=$(awk '$1 == "RESULT" && / target=pt / && / phase=half / {
                 for (i = 2; i <= NF; i++) if ($i ~ /^rate_target=/) print substr($i, 13) }' "$RESULTS" |
          sort -n | awk '{v[NR] = $1} END {if (NR) printf "%.0f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
if [ -n "$PT_HALF" ] && [ "$PT_HALF" -gt 0 ]; then
  for rep in $(seq "$REPS"); do
    for t in $TARGETS; do
      case "$t" in raw|nats) ;; *) continue ;; esac
      run_load "$t" "atpthalf$rep" --pairs "$PAIRS" --warmup "$WARMUP" --duration "$DURATION" --rate "$PT_HALF"
    done
  done
fi
for rep in $(seq "$REPS"); do
  for rate in $RATES; do
    for t in $TARGETS; do
      run_load "$t" "rate$rate-$rep" --pairs "$PAIRS" --warmup "$WARMUP" --duration "$DURATION" --rate "$rate"
    done
  done
done
# PackTrack's connection secrets live in a secure heap (src/crypto, pt_secure_heap_init)
# on both sides, so the idle run needs no more than Linux's default vm.max_map_count
# (65,530); before that heap, about 11 mappings per connection stopped both near 5,500.
for t in $TARGETS; do
  [ "$IDLE" -gt 0 ] || break
  quiet_wait
  start_server "$t" idle
  loadgen "$t" --idle "$IDLE" --idle-warm "$IDLE_WARM" --duration "$DURATION" || true
  cat "$LAST" >> "$RESULTS"
  stop_server
done

if [ "$PROFILE" = 1 ]; then
  command -v perf >/dev/null 2>&1 || { echo "bench-loadgen: --profile needs perf (linux-perf)" >&2; exit 1; }
  # perf attaches (cpu-clock: this VM has no hardware counters; DWARF call
  # graphs, since libsqlite3 has no frame pointers) for 3 s in the middle of a
  # closed-loop run; the figures of that run are not in the table.
  quiet_wait
  start_server pt profile
  ( sleep "$WARMUP"; sleep 1
    timeout 60 taskset -c "$LOAD_CPU" perf record -q -e cpu-clock --call-graph dwarf,16384 -p "$SPID" \
      -o "$OUT/perf-pt.data" -- sleep 3 >/dev/null 2>&1 ) &
  perfjob=$!
  loadgen pt --pairs "$PAIRS" --window "$WINDOW" --warmup "$WARMUP" --duration 6 || true
  cat "$LAST" > "$OUT/profile-results.txt" # not in the table: perf was attached
  wait "$perfjob" || true
  stop_server
  perf script -i "$OUT/perf-pt.data" -F tid,ip,sym 2>/dev/null > "$OUT/perf-pt.stacks" || true
  python3 - "$OUT/perf-pt.stacks" > "$OUT/perf-pt.txt" <<'PYEOF'
import sys, collections
samples, cur, tid = [], [], None
for line in open(sys.argv[1]):
    line = line.rstrip()
    if not line:
        if cur: samples.append((tid, cur))
        cur = []
        continue
    if not line.startswith("\t"):  # " TID" heads a sample, a tab each frame
        tid, cur = line.split()[0], []
        continue
    f = line.split(None, 1)
    cur.append(f[1] if len(f) > 1 else "?")
if cur: samples.append((tid, cur))
n = len(samples) or 1
print(f"packtrackd, {len(samples)} cpu-clock samples; share of the server's CPU time")
print("\nby thread:")
for t, c in collections.Counter(t for t, _ in samples).most_common():
    under = lambda f: sum(1 for tt, s in samples if tt == t and any(f in x for x in s))
    kind = "SQLite writer (src/store/db.c writer_main)" if under("writer_main") else "event loop (libuv)"
    print(f"  {100 * c / n:5.1f}%  tid {t}: {kind}")
print("\ninclusive (the function and everything it calls):")
for f in ["writer_main", "run_batch", "received_apply", "send_apply", "pt_srv_item_store", "pt_db_exec",
          "on_read", "pt_chan_input", "pt_srv_rpc", "rpc_send", "pt_srv_blocked", "pt_srv_user_devices",
          "pt_srv_queues_full", "pt_srv_push_item", "send_done", "rpc_received", "pt_srv_reply",
          "sqlite3_prepare_v2", "sqlite3_step", "sqlite3_finalize", "pt_conn_flush", "__libc_write",
          "uv__read", "pt_aead", "pt_sess_salt_valid", "pt_sess_flush", "malloc", "free"]:
    k = sum(1 for _, s in samples if any(f in x for x in s))
    print(f"  {100 * k / n:5.1f}%  {f}")
print("\nself (leaf functions):")
for f, k in collections.Counter(s[0] for _, s in samples if s).most_common(20):
    print(f"  {100 * k / n:5.1f}%  {f}")
PYEOF
  echo "bench-loadgen: packtrackd profile in $OUT/perf-pt.txt"
fi

python3 - "$RESULTS" "$QUICK" <<'EOF'
import sys, statistics
rows = [dict(kv.split("=", 1) for kv in l.split()[1:]) for l in open(sys.argv[1]) if l.startswith("RESULT")]
quick = sys.argv[2] == "1"
def med(target, phase, key):
    v = [float(r[key]) for r in rows if r["target"] == target and r["phase"] == phase and key in r]
    return statistics.median(v) if v else None
def f(v, fmt="{:.0f}"):
    return "–" if v is None or v < 0 else fmt.format(v)
names = {"pt": "packtrackd", "raw": "raw relay", "nats": "nats-server", "mqtt": "mosquitto QoS 1"}
targets = [t for t in ["pt", "raw", "nats", "mqtt"] if any(r["target"] == t for r in rows)]
reps = max([sum(1 for r in rows if r["target"] == t and r["phase"] == "closed") for t in targets] or [0])
print(f"\nServer load, median of {reps} run(s) per target; closed loop, then open loop at half that rate")
print("\n| server | msgs/s (closed) | server CPU % | server µs/msg | delivery p50/p99/p99.9 µs (half rate) | sender ack p50/p99/p99.9 µs (half rate) | RSS KiB | idle KiB/conn | loadgen CPU % | other CPU % (max) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for t in targets:
    ack = "/".join(f(med(t, "half", k)) for k in ("ack_p50_us", "ack_p99_us", "ack_p999_us"))
    print(f"| {names[t]} | {f(med(t,'closed','msgs_per_s'))} | {f(med(t,'closed','srv_cpu_pct'))} | "
          f"{f(med(t,'closed','srv_us_per_msg'),'{:.2f}')} | "
          + "/".join(f(med(t, "half", k)) for k in ("dlv_p50_us", "dlv_p99_us", "dlv_p999_us"))
          + f" | {ack if ack != '–/–/–' else '–'} | {f(med(t,'closed','srv_rss_kib'))} | "
          f"{f(med(t,'idle','kib_per_conn'),'{:.1f}')} | {f(med(t,'closed','lg_cpu_pct'))} | "
          f"{f(max([float(r.get('other_cpu_pct', -1)) for r in rows if r['target'] == t] or [-1]))} |")
noisy = [r for r in rows if float(r.get("other_cpu_pct", 0)) > 10]
if noisy:
    print(f"\nwarning: {len(noisy)} run(s) shared the machine with other work (other CPU > 10 %): "
          "their figures are disturbed; rerun when the machine is quiet")
bad = [r for r in rows if int(r.get("errors", 0)) or int(r.get("misrouted", 0)) or int(r.get("lost", 0))]
if bad:
    print("\nwarning: runs with errors, misrouted or lost messages:", [(r["target"], r["phase"]) for r in bad])
pt = lambda p, k: med("pt", p, k)
checks = []
def ratio(a, b): return None if a is None or b is None or b == 0 else a / b
if "pt" in targets:
    for peer, need, what in (("raw", 0.40, "of the raw relay"), ("nats", 1.0, "x nats-server"), ("mqtt", 2.0, "x mosquitto QoS 1")):
        r_ = ratio(pt("closed", "msgs_per_s"), med(peer, "closed", "msgs_per_s"))
        if r_ is not None:
            checks.append((f"msgs/s >= {need:.2f} {what}", f"{r_:.2f}", r_ >= need))
    v = pt("closed", "srv_us_per_msg"); checks.append(("server CPU <= 3 µs/msg", f(v, "{:.1f}"), v is not None and 0 <= v <= 3))
    v = pt("half", "dlv_p99_us"); checks.append(("half rate: delivery p99 < 1 ms", f(v) + " µs", v is not None and 0 <= v < 1000))
    v = pt("half", "ack_p99_us"); checks.append(("half rate: sender ack p99 < 5 ms", f(v) + " µs", v is not None and 0 <= v < 5000))
    v = pt("half", "lg_cpu_pct")
    if v is not None and v >= 95:
        checks.append(("half rate: the load generator kept up", f(v) + " % of its CPU", False))
    v = pt("idle", "kib_per_conn"); checks.append(("idle: RSS growth <= 4 KiB/conn", f(v, "{:.1f}") + " KiB", v is not None and v <= 4))
    print("\n| target | measured | verdict |\n| --- | ---: | --- |")
    for name, val, ok in checks:
        print(f"| {name} | {val} | {'met' if ok else 'missed'} |")
opens = sorted({float(r["rate_target"]) for r in rows if r["phase"] == "open"})
half = pt("half", "rate_target")
half = round(half) if half else half
if half and half > 0:
    opens = sorted(set(opens) | {half})
if opens:
    print("\nOpen loop at fixed rates: delivery and sender-ack latency p50/p99/p99.9 µs, server and loadgen CPU %;")
    print("loadgen's own delay, a part of both latencies: its send lag (intended send time -> written) and")
    print("the busy part of its loop's turns (what an arrived message waits at most to be read), p50/p99 µs")
    if half and half > 0:
        print(f"({half:.0f} msgs/s is packtrackd's half rate: its row is the half-rate phase above, the "
              "others ran at that rate after it)")
    print("\n| server | msgs/s asked | msgs/s done | delivery | sender ack | server CPU % | server µs/msg | loadgen CPU % | loadgen send lag | loadgen turn |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in targets:
        for rate in opens:
            sel = [r for r in rows if r["target"] == t and r["phase"] == "open" and float(r["rate_target"]) == rate]
            if t == "pt" and rate == half:
                sel = [r for r in rows if r["target"] == "pt" and r["phase"] == "half"]
            if not sel: continue
            m = lambda k: statistics.median(float(r[k]) for r in sel) if all(k in r for r in sel) else None
            ack = "/".join(f(m(k)) for k in ("ack_p50_us", "ack_p99_us", "ack_p999_us"))
            print(f"| {names[t]} | {rate:.0f} | {f(m('msgs_per_s'))} | "
                  + "/".join(f(m(k)) for k in ("dlv_p50_us", "dlv_p99_us", "dlv_p999_us"))
                  + f" | {ack if ack != '–/–/–' else '–'} | {f(m('srv_cpu_pct'))} | {f(m('srv_us_per_msg'), '{:.1f}')}"
                  f" | {f(m('lg_cpu_pct'))} | {f(m('lag_p50_us'))}/{f(m('lag_p99_us'))}"
                  f" | {f(m('turn_p50_us'))}/{f(m('turn_p99_us'))} |")
if quick:
    print("\n(--quick: a smoke run; its figures are not meaningful)")
EOF
