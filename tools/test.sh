#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite; then builds
# again with AddressSanitizer + UndefinedBehaviorSanitizer and runs the unit and
# multiprocess suites there (docs/design.md: sanitizers on every change).
# Exit status: 0 when every test passed, non-zero otherwise.
#   tools/test.sh                   everything
#   tools/test.sh --suite unit      extra arguments go to `meson test` (main build only)
#   SHMSTATE_SANITIZE=0 tools/test.sh   skip the sanitizer build
#   SHMSTATE_TSAN=0 tools/test.sh       skip the ThreadSanitizer build
#   SHMSTATE_CLANG=0 tools/test.sh      skip the clang build (and with it the libFuzzer runs)
#   SHMSTATE_FUZZ=0 tools/test.sh       skip the libFuzzer runs (SHMSTATE_FUZZ_SECONDS: per target, default 20)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

status=0
meson test -C "$BUILD_DIR" --print-errorlogs --num-processes 2 "$@" || status=$?
logs=("$BUILD_DIR/meson-logs/testlog.json")

# suite_targets DIR SUITE...: the executables DIR's tests of those suites run
# (paths for ninja), plus the CLI, which the multiprocess tests call. Building
# only these keeps the extra builds to what they run (no bench, torture, demo).
suite_targets() {
  local dir=$1
  shift
  meson introspect --tests "$dir" | python3 -c '
import json, os, sys
build, suites = os.path.realpath(sys.argv[1]), set(sys.argv[2:])
out = {"tools/shmstate"}
for t in json.load(sys.stdin):
    exe = os.path.realpath(t["cmd"][0])
    if suites & set(s.split(":")[-1] for s in t["suite"]) and exe.startswith(build + os.sep):
        out.add(os.path.relpath(exe, build))
print(" ".join(sorted(out)))' "$dir" "$@"
}

if [ "${SHMSTATE_SANITIZE:-1}" != 0 ] && [ $# -eq 0 ]; then
  SAN_DIR="$ROOT/build-sanitize"
  if [ ! -f "$SAN_DIR/build.ninja" ]; then
    setup_step "meson setup $SAN_DIR (ASan+UBSan)" meson setup "$SAN_DIR" "$ROOT" -Dwerror=true -Dtest_hooks=true \
      -Db_sanitize=address,undefined -Db_lundef=false -Dcpp_args=-fno-sanitize-recover=all
  else
    ensure_test_hooks "$SAN_DIR" true
  fi
  echo "== ASan+UBSan: unit and multiprocess suites"
  # shellcheck disable=SC2046
  setup_step "build ($SAN_DIR)" ninja -C "$SAN_DIR" $(suite_targets "$SAN_DIR" unit multiprocess)
  meson test -C "$SAN_DIR" --no-rebuild --print-errorlogs --num-processes 2 --suite unit --suite multiprocess || status=$?
  logs+=("$SAN_DIR/meson-logs/testlog.json")
fi

# ThreadSanitizer (GCC's) over the tests whose threads share one process: the
# unit suite, and the signal, monitor and wait tests (dispatcher and waiter
# threads; their children are forked before any thread starts). Tests that
# start threads in a fork()ed child of a threaded parent are left out: TSan
# does not support that. Hook-free and at -O1 -g1, to keep its build short.
if [ "${SHMSTATE_TSAN:-1}" != 0 ] && [ $# -eq 0 ]; then
  TSAN_DIR="$ROOT/build-tsan"
  TSAN_TESTS=(signal_test monitor_test wait_till_test)
  if [ ! -f "$TSAN_DIR/build.ninja" ]; then
    setup_step "meson setup $TSAN_DIR (TSan)" meson setup "$TSAN_DIR" "$ROOT" -Dwerror=true -Dtest_hooks=false \
      -Dbuildtype=plain -Dcpp_args="-O1 -g1" -Db_sanitize=thread -Db_lundef=false
  else
    ensure_test_hooks "$TSAN_DIR" false
  fi
  echo "== TSan: unit suite and ${TSAN_TESTS[*]}"
  # shellcheck disable=SC2046
  setup_step "build ($TSAN_DIR)" ninja -C "$TSAN_DIR" $(suite_targets "$TSAN_DIR" unit) "${TSAN_TESTS[@]/#/tests/}"
  export TSAN_OPTIONS="${TSAN_OPTIONS:-second_deadlock_stack=1}"
  meson test -C "$TSAN_DIR" --no-rebuild --print-errorlogs --num-processes 2 --suite unit || status=$?
  cp "$TSAN_DIR/meson-logs/testlog.json" "$TSAN_DIR/meson-logs/testlog-unit.json"
  meson test -C "$TSAN_DIR" --no-rebuild --print-errorlogs --num-processes 2 "${TSAN_TESTS[@]}" || status=$?
  logs+=("$TSAN_DIR/meson-logs/testlog-unit.json" "$TSAN_DIR/meson-logs/testlog.json")
fi

# clang (Debian 12's clang 14) must build everything warnings-clean: library,
# tests, tools and the libFuzzer targets, in one build (one build, not two,
# keeps CI under its 20 minutes). It is the hook-free build (-Dtest_hooks=false,
# as installed): this proves the library and every test compile without the
# test hooks (the tests that need hooks are all in the multiprocess suite,
# which ran above with them). ASan+UBSan and libFuzzer's coverage
# instrumentation are on, so its unit suite runs under the sanitizers too and
# the fuzz targets run from the same build.
if [ "${SHMSTATE_CLANG:-1}" != 0 ] && [ $# -eq 0 ]; then
  CLANG_DIR="$ROOT/build-clang"
  if [ -f "$CLANG_DIR/build.ninja" ] &&
     ! meson introspect --buildoptions "$CLANG_DIR" | grep -q '"name": "fuzz", "value": true'; then
    rm -rf "$CLANG_DIR"  # made before the clang and fuzz builds were one
  fi
  if [ ! -f "$CLANG_DIR/build.ninja" ]; then
    setup_step "meson setup $CLANG_DIR (clang, ASan+UBSan, libFuzzer)" env CXX=clang++ meson setup "$CLANG_DIR" "$ROOT" \
      -Dwerror=true -Dtest_hooks=false -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
      -Dcpp_args="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all" ${MESON_ARGS:-}
  else
    ensure_test_hooks "$CLANG_DIR" false
  fi
  echo "== clang: build everything, run the unit suite"
  setup_step "build ($CLANG_DIR)" ninja -C "$CLANG_DIR"
  meson test -C "$CLANG_DIR" --no-rebuild --print-errorlogs --num-processes 2 --suite unit || status=$?
  logs+=("$CLANG_DIR/meson-logs/testlog.json")

  if [ "${SHMSTATE_FUZZ:-1}" != 0 ]; then
    echo "== fuzz: each target for ${SHMSTATE_FUZZ_SECONDS:-20} s"
    for target in $(cd "$ROOT/tests/fuzz" && ls fuzz_*.cpp | sed 's/\.cpp$//'); do
      if "$ROOT/tools/fuzz.sh" "$target" "${SHMSTATE_FUZZ_SECONDS:-20}" "$CLANG_DIR"; then
        echo "fuzz $target: no crash"
        fuzz_passed=$(( ${fuzz_passed:-0} + 1 ))
      else
        echo "fuzz $target: FOUND A CRASH (input saved in tests/fuzz/corpus/$target/)"
        status=1
        fuzz_failed=$(( ${fuzz_failed:-0} + 1 ))
      fi
    done
  fi
fi

# The plain closing line CI reads: count results from meson's JSON logs.
python3 - "${logs[@]}" <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"): passed += 1
        elif r == "SKIP": skipped += 1
        else: failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
[ -n "${fuzz_passed:-}${fuzz_failed:-}" ] && echo "fuzz: ${fuzz_passed:-0} targets clean, ${fuzz_failed:-0} found a crash"
exit $status
