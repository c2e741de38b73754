#!/usr/bin/env bash
# make install DESTDIR=... PREFIX=/usr from an existing build, then: every file is
# there, `man -w` finds every page (MANPATH), `pkg-config --cflags --libs packtrack`
# works and a program built with it links and runs against the installed library.
# Usage: install.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
stage=$(mktemp -d /tmp/pt-install-XXXXXX)
trap 'rm -rf "$stage"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

make -s -C "$src" install BUILD="$build" PREFIX=/usr DESTDIR="$stage" JOBS=2 >"$stage.log" 2>&1 \
  || { cat "$stage.log"; rm -f "$stage.log"; fail "make install"; }
rm -f "$stage.log"
root=$stage/usr
for f in bin/packtrackd bin/packtrackctl bin/packtrack bin/packtrack-mse include/packtrack.h \
         lib/systemd/system/packtrackd.service share/doc/packtrack/examples/packtrackd.conf; do
  [ -e "$root/$f" ] || fail "missing $f"
done
lib=$(find "$root" -name 'libpacktrack.so' | head -n1)
[ -n "$lib" ] || fail "missing libpacktrack.so"
pc=$(find "$root" -name packtrack.pc | head -n1)
[ -n "$pc" ] || fail "missing packtrack.pc"
grep -q '^prefix=/usr$' "$pc" || fail "packtrack.pc prefix is not the install prefix: $(head -1 "$pc")"
grep -q "ExecStart=/usr/bin/packtrackd" "$root/lib/systemd/system/packtrackd.service" \
  || fail "the unit's ExecStart does not follow the prefix"

n=0
for page in packtrackd.8 packtrackd.conf.5 packtrackctl.8 packtrack.1 libpacktrack.3; do
  name=${page%.*} sec=${page##*.}
  found=$(MANPATH="$root/share/man" man -w "$sec" "$name" 2>/dev/null) || fail "man -w $sec $name"
  case $found in "$root"/*) ;; *) fail "man -w $sec $name found $found, not the installed page" ;; esac
  n=$((n + 1))
done

flags=$(PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$stage pkg-config --cflags --libs packtrack) \
  || fail "pkg-config --cflags --libs packtrack"
cat >"$stage/hello.c" <<'C'
#include <packtrack.h>
#include <stdio.h>
#include <string.h>
int main(void) { if (pt_init() != 0) return 1; printf("%s\n", pt_version()); return strcmp(pt_version(), PT_VERSION_STRING) != 0; }
C
san=""  # a sanitizer build installs an instrumented library: the program must be too
grep -q '^PT_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" && san="-fsanitize=address,undefined"
# shellcheck disable=SC2086
cc $san -std=c17 -Wall -Werror -o "$stage/hello" "$stage/hello.c" $flags || fail "building against the installed library"
LD_LIBRARY_PATH=$(dirname "$lib") "$stage/hello" >/dev/null || fail "running against the installed library"
echo "install: $n man pages found by man -w, pkg-config: $flags"
echo "1 passed, 0 failed"
