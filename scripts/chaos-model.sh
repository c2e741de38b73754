#!/usr/bin/env bash
# Checks tests/chaos/outbox.pml (the ack / resend / resume machine) with spin:
# "no accepted message lost, none delivered twice" under loss, duplication,
# reordering, disconnects and crashes, MAXF faults per run (default 2; 3 takes
# ~40 s and ~2.4 GB). Then checks a mutant without the receiver's envelope-hash
# check, which must fail. Prints one table row per check; exit 1 on a surprise.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
maxf=${MAXF:-2}
command -v spin >/dev/null || { echo "chaos-model: spin is not installed (scripts/deps.sh)"; exit 2; }
work=$(mktemp -d /tmp/pt-spin-XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$here/tests/chaos/outbox.pml" "$work/"
cd "$work"

check() { # name, expected errors (0 or 1), spin -D flags...
  local name=$1 want=$2; shift 2
  spin "$@" -a outbox.pml >/dev/null
  gcc -w -O2 -DSAFETY -o pan pan.c
  local start=$(date +%s)
  ./pan -m1000000 > pan.out 2>&1 || true
  local states errors
  states=$(awk '/states, stored/ {print $1; exit}' pan.out)
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.out | head -1)
  printf '| %s | %s | %s | %s | %ss |\n' "$name" "$maxf" "$states" "$errors" "$(( $(date +%s) - start ))"
  [ "${errors:-x}" = "$want" ] || { echo "chaos-model: $name: expected $want error(s), see $work/pan.out"; trap - EXIT; return 1; }
}

echo "| spin model | faults per run | states stored | violations | time |"
echo "|---|---|---|---|---|"
ok=0
check "outbox.pml (ack/resend/resume)" 0 -DMAXF="$maxf" || ok=1
check "mutant: no envelope-hash dedup (must fail)" 1 -DMAXF="$maxf" -DMUTANT_NO_HASH_DEDUP || ok=1
exit $ok
