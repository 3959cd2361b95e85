#!/usr/bin/env bash
# Usage: tools/fuzz.sh TARGET SECONDS [BUILD_DIR]
#   TARGET: fuzz_segment, fuzz_snapshot, fuzz_store or fuzz_cli (tests/fuzz/).
# Runs one libFuzzer target for SECONDS over a fresh copy of its seed corpus
# (tests/fuzz/corpus/TARGET, plus, for fuzz_segment, real segments made here
# with the build's own CLI, so the seeds always have the current layout).
# An input that crashes is saved as tests/fuzz/corpus/TARGET/crash-<hash>:
# commit it with the fix, and it stays a regression input. Exit status: 0 when
# nothing was found, else libFuzzer's. BUILD_DIR (default build-clang) must be
# a clang build configured with -Dfuzz=true (tools/test.sh makes one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 2 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  [ $# -ge 2 ] && exit 0 || exit 2
fi
target=$1 seconds=$2 build=${3:-$ROOT/build-clang}
case $target in fuzz_segment|fuzz_snapshot|fuzz_store|fuzz_cli) ;; *) echo "fuzz.sh: unknown target '$target'" >&2; exit 2;; esac
bin="$build/tests/fuzz/$target"
if [ ! -x "$bin" ]; then
  ninja -C "$build" "tests/fuzz/$target" "tools/shmstate" >/dev/null || {
    echo "fuzz.sh: cannot build $target in $build (configure it with CXX=clang++ -Dfuzz=true)" >&2; exit 1; }
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$ROOT/tests/fuzz/corpus/$target"
cp "$ROOT/tests/fuzz/corpus/$target/"* "$work/corpus/" 2>/dev/null || true
if [ "$target" = fuzz_segment ]; then
  cli="$build/tools/shmstate"
  seg="shmstate-fuzzseed-$$"
  for variant in empty atomics atoms all; do
    "$cli" rm "$seg" >/dev/null 2>&1 || true
    "$cli" create "$seg" --size 8192 --max-objects 4 >/dev/null
    case $variant in
      atomics) "$cli" new "$seg" bool b --init true && "$cli" new "$seg" int64 n --init 7 &&
               "$cli" new "$seg" double d --init 0.1 ;;
      atoms) "$cli" new "$seg" atom a --init '{"k":[1,2,"x"]}' && "$cli" set "$seg" a '[3]' &&
             "$cli" new "$seg" reference r --init '"v"' ;;
      all) "$cli" new "$seg" int64 n --init 1 && "$cli" new "$seg" atom a --init '{"x":1}' &&
           { "$cli" new "$seg" fifo_lock l --modes rw 2>/dev/null || true; } ;;
    esac >/dev/null
    cp "/dev/shm/$seg" "$work/corpus/seed-$variant"
  done
  "$cli" rm "$seg" >/dev/null
fi
echo "fuzz.sh: $target for ${seconds}s over $(ls "$work/corpus" | wc -l) seeds"
# Leak detection is off: the library keeps per-process caches (segment
# mappings, the watch dispatcher) for the process's lifetime by design.
# fuzz_segment: every input is a new /dev/shm file, and the library keeps each
# segment's mapping until the process exits (README, Limits), so one process
# runs out of mappings (vm.max_map_count, 65,530) after about 140,000 inputs
# ("Failed to mmap", seen in an 8-minute run). It runs in slices of at most
# 50,000 inputs, each a new process over the growing corpus.
runs=()
[ "$target" = fuzz_segment ] && runs=(-runs=50000)
end=$(( $(date +%s) + seconds ))
while :; do
  left=$(( end - $(date +%s) ))
  [ "$left" -gt 0 ] || exit 0
  rc=0
  "$bin" -max_total_time="$left" "${runs[@]}" -timeout=10 -rss_limit_mb=2048 -detect_leaks=0 -print_final_stats=1 \
    -artifact_prefix="$ROOT/tests/fuzz/corpus/$target/" "$work/corpus" >"$work/log" 2>&1 || rc=$?
  tail -n 12 "$work/log"
  [ "$rc" -eq 0 ] || exit "$rc"
  [ ${#runs[@]} -gt 0 ] || exit 0
done
