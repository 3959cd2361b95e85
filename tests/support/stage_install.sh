# Sourced by the packaging tests: `stage_install BUILD_ROOT` runs
# `meson install --destdir` of that (already built) build into a fresh
# directory, removed when the test exits, and sets
#   STAGE       the DESTDIR
#   PREFIX      the configured prefix (/usr/local unless -Dprefix=...)
#   LIBDIR      the configured libdir, absolute (without STAGE)
#   INCLUDEDIR  the configured includedir, absolute (without STAGE)
#   MANDIR      the configured mandir, absolute (without STAGE)
#   TEST_HOOKS  the build's test_hooks option: true or false
#   VERSION     project(version:), e.g. 0.2.0
# so that "$STAGE$LIBDIR/libshmstate.so" is the installed library.
# Also sets WORK, a scratch directory removed on exit.
set -euo pipefail

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmstate-packaging.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

stage_install() {
  local build_root=$1
  STAGE="$WORK/stage"
  # One introspection (each costs a second): prefix, dirs, version, hooks.
  {
    read -r PREFIX
    read -r LIBDIR
    read -r INCLUDEDIR
    read -r MANDIR
    read -r VERSION
    read -r TEST_HOOKS
  } < <(meson introspect --buildoptions --projectinfo "$build_root" | python3 -c '
import json, sys
info = json.load(sys.stdin)
opts = {o["name"]: o["value"] for o in info["buildoptions"]}
prefix = opts["prefix"]
for name in ("libdir", "includedir", "mandir"):
    opts[name] = opts[name] if opts[name].startswith("/") else prefix + "/" + opts[name]
print(prefix, opts["libdir"], opts["includedir"], opts["mandir"], info["projectinfo"]["version"],
      str(opts["test_hooks"]).lower(), sep="\n")')
  # --no-rebuild: meson test has built everything; --destdir: nothing outside $STAGE.
  meson install -C "$build_root" --no-rebuild --quiet --destdir "$STAGE" >"$WORK/install.log" 2>&1 || {
    cat "$WORK/install.log" >&2
    echo "meson install --destdir $STAGE failed" >&2
    return 1
  }
}

# What nm shows of the test hooks (crash points, <shmstate/testing.hpp>'s
# functions) in a library built with them; nothing of it may be in one built
# with the default options.
HOOK_SYMBOLS='crash_point|shmstate::testing::|slow_notify_count'

# fail MESSAGE...: prints the message and exits 1.
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
