#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite; then builds
# again with AddressSanitizer + UndefinedBehaviorSanitizer and runs the unit and
# multiprocess suites there (docs/design.md: sanitizers on every change).
# Exit status: 0 when every test passed, non-zero otherwise.
#   tools/test.sh                   everything
#   tools/test.sh --suite unit      extra arguments go to `meson test` (main build only)
#   SHMSTATE_SANITIZE=0 tools/test.sh   skip the sanitizer build
#   SHMSTATE_CLANG=0 tools/test.sh      skip the clang build
#   SHMSTATE_FUZZ=0 tools/test.sh       skip the libFuzzer runs (SHMSTATE_FUZZ_SECONDS: per target, default 20)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

status=0
meson test -C "$BUILD_DIR" --print-errorlogs --num-processes 2 "$@" || status=$?
logs=("$BUILD_DIR/meson-logs/testlog.json")

if [ "${SHMSTATE_SANITIZE:-1}" != 0 ] && [ $# -eq 0 ]; then
  SAN_DIR="$ROOT/build-sanitize"
  if [ ! -f "$SAN_DIR/build.ninja" ]; then
    setup_step "meson setup $SAN_DIR (ASan+UBSan)" meson setup "$SAN_DIR" "$ROOT" -Dwerror=true -Dtest_hooks=true \
      -Db_sanitize=address,undefined -Db_lundef=false -Dcpp_args=-fno-sanitize-recover=all
  else
    ensure_test_hooks "$SAN_DIR" true
  fi
  echo "== ASan+UBSan: unit and multiprocess suites"
  setup_step "build ($SAN_DIR)" ninja -C "$SAN_DIR"
  meson test -C "$SAN_DIR" --print-errorlogs --num-processes 2 --suite unit --suite multiprocess || status=$?
  logs+=("$SAN_DIR/meson-logs/testlog.json")
fi

# clang (Debian 12's clang 14) must build everything warnings-clean; the unit
# suite runs there too (the multiprocess suites already ran twice above). It
# is the hook-free build (-Dtest_hooks=false, as installed): this proves the
# library and every test compile without the test hooks; the tests that need
# hooks are all in the multiprocess suite, which ran above with them.
if [ "${SHMSTATE_CLANG:-1}" != 0 ] && [ $# -eq 0 ]; then
  CLANG_DIR="$ROOT/build-clang"
  if [ ! -f "$CLANG_DIR/build.ninja" ]; then
    setup_step "meson setup $CLANG_DIR (clang)" env CXX=clang++ meson setup "$CLANG_DIR" "$ROOT" -Dwerror=true \
      -Dtest_hooks=false ${MESON_ARGS:-}
  else
    ensure_test_hooks "$CLANG_DIR" false
  fi
  echo "== clang: build everything, run the unit suite"
  setup_step "build ($CLANG_DIR)" ninja -C "$CLANG_DIR"
  meson test -C "$CLANG_DIR" --print-errorlogs --num-processes 2 --suite unit || status=$?
  logs+=("$CLANG_DIR/meson-logs/testlog.json")
fi

# The plain closing line CI reads: count results from meson's JSON logs.
if [ "${SHMSTATE_FUZZ:-1}" != 0 ] && [ $# -eq 0 ]; then
  # libFuzzer targets (tests/fuzz), each for a bounded time: clang, ASan+UBSan,
  # coverage instrumentation over the library. Only the targets are built.
  FUZZ_DIR="$ROOT/build-fuzz"
  if [ ! -f "$FUZZ_DIR/build.ninja" ]; then
    setup_step "meson setup $FUZZ_DIR (clang, libFuzzer)" env CXX=clang++ meson setup "$FUZZ_DIR" "$ROOT" \
      -Dwerror=true -Dtest_hooks=true -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
      -Dcpp_args="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all"
  fi
  echo "== fuzz: each target for ${SHMSTATE_FUZZ_SECONDS:-20} s"
  setup_step "build ($FUZZ_DIR fuzz targets)" ninja -C "$FUZZ_DIR" tests/fuzz/fuzz_segment tests/fuzz/fuzz_snapshot \
    tests/fuzz/fuzz_store tools/shmstate
  for target in fuzz_segment fuzz_snapshot fuzz_store; do
    if "$ROOT/tools/fuzz.sh" "$target" "${SHMSTATE_FUZZ_SECONDS:-20}" "$FUZZ_DIR"; then
      echo "fuzz $target: no crash"
      fuzz_passed=$(( ${fuzz_passed:-0} + 1 ))
    else
      echo "fuzz $target: FOUND A CRASH (input saved in tests/fuzz/corpus/$target/)"
      status=1
      fuzz_failed=$(( ${fuzz_failed:-0} + 1 ))
    fi
  done
fi

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
