#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD/fuzz for SECONDS each, starting from its
# corpus (copied, so CI does not grow the repo's corpora). Long campaigns: raise SECONDS.
set -euo pipefail
build=${1:-build-fuzz}
secs=${2:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
shopt -s nullglob
n=0
for t in "$build"/fuzz/fuzz_*; do
  name=$(basename "$t")
  work=$(mktemp -d)
  [ -d "$here/fuzz/corpus/$name" ] && cp -r "$here/fuzz/corpus/$name/." "$work/"
  echo "fuzz-smoke: $name for ${secs}s"
  # Crash inputs go next to the log, not into the caller's working directory.
  "$t" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=0 \
    -artifact_prefix="$work.artifact-" "$work" >"$work.log" 2>&1 \
    || { tail -50 "$work.log"; ls "$work".artifact-* 2>/dev/null;
         echo "fuzz-smoke: $name FAILED"; exit 1; }
  rm -rf "$work" "$work.log"
  n=$((n + 1))
done
# No targets means a wrong BUILD directory or a build without -DPT_FUZZ=ON.
[ "$n" -gt 0 ] || { echo "fuzz-smoke: no fuzz targets in $build/fuzz"; exit 1; }
echo "fuzz-smoke: $n targets clean"
