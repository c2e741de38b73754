#!/usr/bin/env bash
# Installs every Debian package PackTrack's build, tests and benchmarks need,
# and only those that are missing. Needs root (or sudo) and apt-get.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libsodium-dev libssl-dev libuv1-dev libsqlite3-dev zlib1g-dev
  libinih-dev libutf8proc-dev libicu-dev
  libcmocka-dev libcjson-dev libolm-dev
  libsystemd-dev systemd  # sd_notify; systemd-analyze checks the shipped unit (tests/ops)
  man-db pandoc           # man -w finds the installed pages; make man (tests/ops)
  libncurses-dev tmux     # the terminal UI, and the tests that drive it
  libqrencode-dev         # QR codes of fingerprints and safety numbers in the terminal
  python3 python3-dissononce python3-libtorrent   # libtorrent: the MSE interop peer
  nats-server mosquitto   # peers of scripts/bench-loadgen.sh (started there, not as services)
  libnats-dev             # cluster mode (src/server/cluster_nats.c); nats-server runs the test cluster
  iproute2 procps         # ip netns / sysctl: the LAN tests build their own network (test_lan)
  spin                    # model check of the ack / resend / resume machine (make chaos)
  faketime                # libfaketime: the clock-skew campaigns (tests/chaos, chaos/env)
  fiu-utils               # fiu-run / fiu-ctrl + libfiu: the io-errors campaign (tests/chaos, chaos/env)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# Node.js + npm run the MTProto interop test; any install that provides them will do
# (Debian's npm conflicts with the NodeSource build some machines carry).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages used only by the interop tests (independent MTProto 2.0 code).
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$here/tests/interop/package.json" ] && [ ! -d "$here/tests/interop/node_modules" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "deps: npm install (tests/interop)"
    (cd "$here/tests/interop" && npm install --no-audit --no-fund --loglevel=error) \
      || echo "deps: npm install failed; the MTProto interop test will fail" >&2
  fi
fi
exit 0
