#!/usr/bin/env bash
# Shared set-up for tools/demo.sh and tools/test.sh: installs the Debian 12
# packages shmstate needs (only those missing), then configures and builds.
# Idempotent: on a machine that is already set up it only runs ninja.
#
# Every step's output goes to a log; when a step fails, the step's name and its
# log reach stderr and the script stops with that step's exit status. Quiet
# when all is well, never silent when it is not.
#
# Usage: source tools/setup.sh   (sets ROOT, BUILD_DIR; honours BUILD_DIR and MESON_ARGS;
#                                 defines setup_step for the scripts that source it)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
# cmake: Debian 12's doctest-dev ships only CMake package files, so meson finds
#        doctest through cmake; the CMake-consumer test builds with it too.
# clang: tools/test.sh builds a clang variant (build-clang/).
# libclang-rt-14-dev: libFuzzer and clang's sanitizer runtimes, for the fuzz targets
#        (in build-clang/); clang only recommends it, so a bare machine lacks it.
# jq:    the CLI tests run the README's `shmstate swap ... -- jq` example with the real filter.
# dpkg-dev: meson asks its dpkg-architecture for Debian's libdir (lib/x86_64-linux-gnu);
#        without it meson picks lib64, which Debian's ld.so, pkg-config and CMake never
#        search (the bare-machine check's CMake consumer failed on it).
PACKAGES=(g++ clang libclang-rt-14-dev libboost1.81-dev libboost-json1.81-dev doctest-dev meson ninja-build cmake
          pkg-config python3 jq binutils dpkg-dev)

# setup_step NAME CMD...: runs CMD with its output in a log; on failure prints
# the step's name and the log's last 200 lines, then exits with CMD's status.
setup_step() {
  local name=$1
  shift
  local log
  log=$(mktemp "${TMPDIR:-/tmp}/shmstate-setup.XXXXXX")
  local rc=0
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    {
      echo "setup: step '$name' failed (exit $rc): $*"
      echo "---- output (last 200 lines; whole log: $log) ----"
      tail -n 200 "$log"
      echo "---- end of output of step '$name' ----"
    } >&2
    exit "$rc"
  fi
  rm -f "$log"
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
  fi
  setup_step "apt-get update" "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  setup_step "apt-get install ${missing[*]}" "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# ensure_test_hooks DIR true|false: a build directory made before the
# test_hooks option existed (or with the other value) is switched over, so
# every test build runs the crash-point tests (they are only defined with
# hooks on). A no-op when the value is already right.
ensure_test_hooks() {
  local dir=$1 want=$2 have
  have=$(meson introspect --buildoptions "$dir" |
         python3 -c 'import json, sys; print(next((str(o["value"]).lower() for o in json.load(sys.stdin) if o["name"] == "test_hooks"), "none"))')
  if [ "$have" != "$want" ]; then
    # --reconfigure (not `meson configure`): it also reads options added since.
    setup_step "meson setup --reconfigure $dir -Dtest_hooks=$want" \
      meson setup --reconfigure "$dir" "$ROOT" -Dtest_hooks="$want"
  fi
}

# This is the test build: crash points and <shmstate/testing.hpp> on
# (-Dtest_hooks=true). `meson install` of a default build has neither.
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # shellcheck disable=SC2086
  setup_step "meson setup $BUILD_DIR" meson setup "$BUILD_DIR" "$ROOT" -Dwerror=true -Dtest_hooks=true \
    ${MESON_ARGS:-}
else
  ensure_test_hooks "$BUILD_DIR" true
fi
setup_step "build ($BUILD_DIR)" ninja -C "$BUILD_DIR"
