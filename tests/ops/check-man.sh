#!/usr/bin/env bash
# --help and the man pages say the same: every long option of each program's
# --help is in its page; the roff pages are what scripts/man.py makes of their
# markdown sources and of include/packtrack.h.
# Usage: check-man.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
bad=0
check() { # program page
  local help opts
  help=$("$1" --help)
  opts=$(printf '%s\n' "$help" | grep -o -- '--[a-z][a-z-]*' | sort -u)
  text=$(sed 's/\\-/-/g' "$2")
  for o in $opts; do
    grep -q -- "$o" <<<"$text" || { echo "FAIL: $(basename "$1") $o is not in $(basename "$2")"; bad=1; }
  done
}
check "$build/packtrackd" "$src/docs/man/packtrackd.8"
check "$build/packtrackctl" "$src/docs/man/packtrackctl.8"
check "$build/packtrack" "$src/docs/man/packtrack.1"
command -v pandoc >/dev/null || { echo "FAIL: pandoc missing (scripts/deps.sh installs it)"; exit 1; }
python3 "$src/scripts/man.py" --check || bad=1
[ $bad -eq 0 ] || exit 1
echo "1 passed, 0 failed"
