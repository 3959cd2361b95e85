#!/usr/bin/env bash
# The CMake package: tests/consumer/ (find_package(shmstate 0.2 CONFIG
# REQUIRED), shmstate::shmstate) configured and built by cmake against a
# `meson install --destdir` tree, then run. The tree is found through
# CMAKE_PREFIX_PATH only: the package's paths are relative to its own
# location, so a staged or moved prefix works.
# Usage: cmake_consumer_test.sh BUILD_ROOT SOURCE_ROOT CXX [CXX ARGS...]
set -euo pipefail
build_root=$1
source_root=$2
shift 2
source "$source_root/tests/support/stage_install.sh"
command -v cmake >/dev/null || fail "cmake is not installed (tools/setup.sh installs it)"
stage_install "$build_root"

# The compiler meson uses; a ccache in front becomes cmake's launcher.
compiler=()
if [ "$(basename "$1")" = ccache ]; then
  compiler+=(-DCMAKE_CXX_COMPILER_LAUNCHER="$1")
  shift
fi
compiler+=(-DCMAKE_CXX_COMPILER="$1")

# Ninja: tools/setup.sh installs ninja-build, not make.
cmake -G Ninja -S "$source_root/tests/consumer" -B "$WORK/build" "${compiler[@]}" \
  -DCMAKE_PREFIX_PATH="$STAGE$PREFIX" -DCMAKE_BUILD_TYPE=Release >"$WORK/configure.log" 2>&1 || {
  cat "$WORK/configure.log" >&2
  # What was installed and where cmake looked, so a failure on another
  # machine (the bare-machine check) can be understood from its log alone.
  echo "-- installed package files under $STAGE:" >&2
  find "$STAGE" -name '*.cmake' -o -name '*.pc' >&2
  echo "-- cmake --debug-find-pkg=shmstate:" >&2
  rm -rf "$WORK/build"
  cmake -G Ninja -S "$source_root/tests/consumer" -B "$WORK/build" "${compiler[@]}" --debug-find-pkg=shmstate \
    -DCMAKE_PREFIX_PATH="$STAGE$PREFIX" 2>&1 | grep -v '^$' | head -n 80 >&2 || true
  fail "cmake configure"
}
grep -- "-- shmstate " "$WORK/configure.log"
cmake --build "$WORK/build" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; fail "cmake --build"; }
# C++20 came from the target, not from the project.
grep -q -- "-std=\(gnu\|c\)++20" "$WORK/build/build.ninja" ||
  fail "cxx_std_20 did not reach the consumer's compile flags"
# The build tree's RPATH points into the staged prefix: no LD_LIBRARY_PATH.
"$WORK/build/consumer" || fail "the CMake-built consumer failed"
echo "ok: find_package(shmstate 0.2) from $STAGE$PREFIX built and ran the consumer; 0.1, 0.3, 1.0 refused"
