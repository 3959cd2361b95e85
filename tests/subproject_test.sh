#!/usr/bin/env bash
# shmstate as a meson subproject of a user's project (tests/subproject_consumer/):
#  - the parent builds and runs tests/consumer/main.cpp with
#    dependency('shmstate') (meson.override_dependency);
#  - nothing of shmstate is installed into the parent or added to its tests,
#    and its CLI, bench and torture tools are not built;
#  - the library built with shmstate's default options has no test hooks:
#    no crash point or shmstate::testing symbol at all (nm, not only nm -D).
# The parent's source and build trees are kept in BUILD_ROOT/subproject-consumer/
# so later runs rebuild only what changed (the first run compiles the library
# once more, with the default options).
# Usage: subproject_test.sh BUILD_ROOT SOURCE_ROOT
set -euo pipefail
build_root=$1
source_root=$2
source "$source_root/tests/support/stage_install.sh"

top="$build_root/subproject-consumer"
src="$top/src"
build="$top/build"
mkdir -p "$src/subprojects"
# Copy only what changed: an unchanged meson.build keeps the build configured.
for f in "$source_root/tests/subproject_consumer/meson.build" "$source_root/tests/consumer/main.cpp"; do
  cmp -s "$f" "$src/$(basename "$f")" || cp "$f" "$src/"
done
ln -sfn "$source_root" "$src/subprojects/shmstate"

if [ ! -f "$build/build.ninja" ]; then
  # buildtype plain (no -O, no -g): this test is about how the parent sees
  # shmstate, not about its code, and the library's second compilation at
  # debugoptimized cost 147 s of the bare-machine check's 20 minutes.
  meson setup --buildtype=plain "$build" "$src" >"$WORK/setup.log" 2>&1 ||
    { cat "$WORK/setup.log" >&2; fail "meson setup of the parent"; }
fi
ninja -C "$build" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; fail "building the parent"; }
"$build/consumer" || fail "the parent's consumer failed"

installed=$(meson introspect --installed "$build")
[ "$installed" = "{}" ] || fail "the parent would install shmstate files: $installed"
tests=$(meson introspect --tests "$build" | python3 -c 'import json, sys; print(" ".join(sorted(t["name"] for t in json.load(sys.stdin))))')
[ "$tests" = "consumer" ] || fail "the parent's tests are '$tests', not just its own 'consumer'"
programs=$(meson introspect --targets "$build" |
  python3 -c 'import json, sys; print(" ".join(sorted(t["name"] for t in json.load(sys.stdin) if t["type"] == "executable")))')
[ "$programs" = "consumer" ] || fail "the parent builds the programs '$programs', not just its own 'consumer'"

# Default options: no hooks. A hook build's library has them (checked on
# BUILD_ROOT when it is one), so this nm would see them if they were there.
hooks=$HOOK_SYMBOLS
lib=$(find "$build/subprojects/shmstate/lib" -maxdepth 1 -name 'libshmstate.so.*.*.*' -type f | head -n1)
[ -n "$lib" ] || fail "no libshmstate.so in $build/subprojects/shmstate/lib"
nm -C "$lib" >"$WORK/default.nm"
if grep -E "$hooks" "$WORK/default.nm"; then fail "the default-options library has test hooks (above)"; fi
main_options=$(meson introspect --buildoptions "$build_root")
if grep -q '"name": "test_hooks", "value": true' <<<"$main_options"; then
  nm -C "$build_root/lib/libshmstate.so" >"$WORK/hooks.nm"
  grep -qE "$hooks" "$WORK/hooks.nm" || fail "nm sees no hooks even in the -Dtest_hooks=true build"
fi
echo "ok: parent project built and ran the consumer; nothing installed or tested; default-options library has no test hooks"
