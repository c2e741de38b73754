#!/usr/bin/env bash
# A fuzzing campaign (issue 11), outside CI: every libFuzzer target in BUILD/fuzz for
# SECONDS each (default 600: ten minutes), starting from its committed corpus. It
# records executions, coverage (libFuzzer's cov/ft counters at the end), corpus size
# before and after, and crashes; the inputs that add coverage are merged back into
# fuzz/corpus/<target> (minimised with -merge=1), so the repository's corpora grow
# and ctest/CI keep replaying them. Crash inputs are kept next to the log and the
# script exits 1.
#
#   scripts/fuzz-campaign.sh [BUILD] [SECONDS] [TARGET...]
#   (build first: make fuzz, or CC=clang cmake -B build-fuzz -DPT_FUZZ=ON -DPT_TESTS=OFF)
set -euo pipefail
build=${1:-build-fuzz}
secs=${2:-600}
shift $(( $# > 2 ? 2 : $# )) || true
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d /tmp/pt-fuzz-campaign-XXXXXX)
shopt -s nullglob
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for t in "$build"/fuzz/fuzz_*; do targets+=("$(basename "$t")"); done
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz-campaign: no targets in $build/fuzz"; exit 1; }
echo "fuzz-campaign: ${#targets[@]} targets, ${secs}s each; logs in $out"
echo
echo "| target | seconds | executions | exec/s | cov | ft | corpus before | corpus after | crashes |"
echo "|---|---|---|---|---|---|---|---|---|"
bad=0
for name in "${targets[@]}"; do
  bin="$build/fuzz/$name"
  [ -x "$bin" ] || { echo "| $name | - | missing | | | | | | |"; bad=1; continue; }
  corpus="$here/fuzz/corpus/$name"
  mkdir -p "$corpus"
  work="$out/$name"
  mkdir -p "$work/new"
  before=$(find "$corpus" -type f | wc -l)
  log="$work/fuzz.log"
  rc=0
  "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/crash-" "$work/new" "$corpus" >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  crashes=$(find "$work" -maxdepth 1 -name 'crash-*' | wc -l)
  # keep only what adds coverage to the committed corpus
  if [ "$rc" -eq 0 ] && [ "$(find "$work/new" -type f | wc -l)" -gt 0 ]; then
    "$bin" -merge=1 -rss_limit_mb=2048 "$corpus" "$work/new" >"$work/merge.log" 2>&1 || true
  fi
  after=$(find "$corpus" -type f | wc -l)
  [ "$rc" -eq 0 ] && [ "$crashes" -eq 0 ] || bad=1
  echo "| $name | $secs | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $before | $after | $crashes$([ "$rc" -ne 0 ] && echo " (exit $rc: $log)") |"
done
echo
[ "$bad" -eq 0 ] && echo "fuzz-campaign: clean" || echo "fuzz-campaign: FINDINGS (see $out)"
exit "$bad"
