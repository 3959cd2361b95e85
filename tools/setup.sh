#!/usr/bin/env bash
# Shared set-up for tools/demo.sh and tools/test.sh: installs the Debian 12
# packages shmstate needs (only those missing), then configures and builds.
# Idempotent: on a machine that is already set up it only runs ninja.
#
# Usage: source tools/setup.sh   (sets BUILD_DIR; honours BUILD_DIR and MESON_ARGS)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
# jq: the CLI tests run the README's `shmstate swap ... -- jq` example with the real filter.
PACKAGES=(g++ libboost1.81-dev libboost-json1.81-dev doctest-dev meson ninja-build pkg-config python3 jq)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # shellcheck disable=SC2086
  meson setup "$BUILD_DIR" "$ROOT" -Dwerror=true ${MESON_ARGS:-} >/dev/null
fi
ninja -C "$BUILD_DIR" >/dev/null
