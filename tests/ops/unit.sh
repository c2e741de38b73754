#!/usr/bin/env bash
# The shipped unit must score 2.5 or better on systemd-analyze security (offline:
# systemd 252 on Debian 12 supports --offline=yes; --threshold=25 means 2.5).
# Usage: unit.sh SOURCE_DIR
set -euo pipefail
unit=$1/dist/packtrackd.service
command -v systemd-analyze >/dev/null || { echo "FAIL: systemd-analyze missing (scripts/deps.sh installs systemd)"; exit 1; }
out=$(systemd-analyze security --offline=yes --threshold=25 --no-pager "$unit" 2>&1) \
  || { echo "$out" | tail -25; echo "FAIL: systemd-analyze security over 2.5 (or failed)"; exit 1; }
score=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { echo "$out" | tail -5; echo "FAIL: no score"; exit 1; }
awk -v s="$score" 'BEGIN { exit !(s <= 2.5) }' || { echo "FAIL: score $score > 2.5"; exit 1; }
grep -q '^Type=notify$' "$unit" || { echo "FAIL: not Type=notify"; exit 1; }
echo "systemd-analyze security --offline=yes: $score"
echo "1 passed, 0 failed"
