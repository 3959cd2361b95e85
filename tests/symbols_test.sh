#!/usr/bin/env bash
# What the installed libshmstate.so exports (nm -D --defined-only, demangled):
# the public API and nothing else. No symbol of shmstate::detail, ::platform
# or ::testing (hidden by -fvisibility=hidden; the tests reach them through
# the internal static library), no weak std::/boost:: copies (lib/shmstate.map),
# and every public entry point the headers promise. Also: the SONAME is
# libshmstate.so.MAJOR.MINOR, and <shmstate/testing.hpp> is not installed.
# The same install tree holds the man page shmstate(1) (clean roff) and the
# bash completion (it sources and registers itself).
# Then what a default `meson setup` (no options) would install, configured
# but not built (the library's symbols with the default options are
# subproject_test's, which builds it): no test hooks (test_hooks false, no
# crash_point.cpp, SHMSTATE_TEST_HOOKS=0), and the library, CLI, man page and
# completion among the installed files.
# Usage: symbols_test.sh BUILD_ROOT SOURCE_ROOT
set -euo pipefail
build_root=$1
source_root=$2
source "$source_root/tests/support/stage_install.sh"
stage_install "$build_root"

so="$STAGE$LIBDIR/libshmstate.so.$VERSION"
[ -f "$so" ] || { echo "skipped: no shared library at $so (default_library=static?)"; exit 77; }
nm -D --defined-only -C "$so" | sed -E 's/^[0-9a-f]+ [A-Za-z] //' | sort -u >"$WORK/exports"
count=$(wc -l <"$WORK/exports")

if grep -E 'shmstate::(detail|platform|testing)::' "$WORK/exports"; then
  fail "internal symbols exported (above)"
fi
# Outside namespace shmstate only the type_info/vtable of shmstate classes.
if grep -vE '^(shmstate::|typeinfo for shmstate::|typeinfo name for shmstate::|vtable for shmstate::)' \
     "$WORK/exports"; then
  fail "symbols outside namespace shmstate exported (above)"
fi

missing=0
while IFS= read -r want; do
  [ -n "$want" ] || continue
  grep -qF -- "$want" "$WORK/exports" || { echo "not exported: $want" >&2; missing=1; }
done <<'WANT'
shmstate::Segment::create(
shmstate::Segment::open(
shmstate::Segment::objects() const
shmstate::Atomic<long> shmstate::Segment::atomic<long>(
shmstate::Atomic<double> shmstate::Segment::open_atomic<double>(
shmstate::Atomic<bool>::wait_while_equal(
shmstate::Atomic<long>::notify_slow()
shmstate::Atom::swap(
shmstate::Atom::deref() const
shmstate::AtomicReference::get() const
shmstate::FifoLock::acquire()
shmstate::LockModes::exclusive()
shmstate::Monitor::wait_until(
shmstate::Monitor::wait(shmstate::Monitor::Guard&, shmstate::Condition const&)
shmstate::Monitor::Guard::release()
shmstate::Segment::monitor(
shmstate::Store::open(
shmstate::json_format()
shmstate::error_code_name(
shmstate::kind_name(
shmstate::inspect::dump_json(
typeinfo for shmstate::Error
WANT
[ "$missing" -eq 0 ] || fail "public API not exported"

soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
want_soname="libshmstate.so.$(echo "$VERSION" | cut -d. -f1-2)"
[ "$soname" = "$want_soname" ] || fail "SONAME is '$soname', not $want_soname"

[ ! -e "$STAGE$INCLUDEDIR/shmstate/testing.hpp" ] || fail "<shmstate/testing.hpp> is installed"
[ -f "$STAGE$INCLUDEDIR/shmstate/version.hpp" ] || fail "<shmstate/version.hpp> is not installed"
grep -q "#define SHMSTATE_VERSION_STRING \"$VERSION\"" "$STAGE$INCLUDEDIR/shmstate/version.hpp" ||
  fail "version.hpp does not say $VERSION"
echo "ok: $count exported symbols, all public API; SONAME $soname; testing.hpp not installed"

# A hook-free build (as installed by default) has no hook symbol at all, not
# even a hidden one; a -Dtest_hooks=true build has them, so nm would see them.
nm -C "$so" >"$WORK/all.nm"
if [ "$TEST_HOOKS" = false ]; then
  if grep -E "$HOOK_SYMBOLS" "$WORK/all.nm"; then fail "test hooks in the installed hook-free library (above)"; fi
  echo "ok: the installed library (test_hooks=false) has no test hooks"
else
  grep -qE "$HOOK_SYMBOLS" "$WORK/all.nm" || fail "nm sees no hooks even in this -Dtest_hooks=true build"
fi

# The man page and the completion, where man and bash-completion look.
man_page="$STAGE$MANDIR/man1/shmstate.1"
[ -f "$man_page" ] || fail "no man page at $man_page"
grep -q '^\.TH SHMSTATE 1 ' "$man_page" || fail "$man_page is not shmstate(1)"
if command -v groff >/dev/null; then
  warnings=$(groff -man -Tutf8 -ww -z "$man_page" 2>&1) || fail "groff fails on $man_page: $warnings"
  [ -z "$warnings" ] || fail "groff warns about $man_page: $warnings"
fi
completion=$(find "$STAGE$PREFIX" -path '*/bash-completion/completions/shmstate' -type f)
[ -n "$completion" ] || fail "no bash completion under $STAGE$PREFIX/.../bash-completion/completions/"
bash -c 'source "$1" && complete -p shmstate' completion "$completion" >/dev/null ||
  fail "sourcing $completion does not register a completion for shmstate"
echo "ok: man page ${man_page#"$STAGE"} and completion ${completion#"$STAGE"} installed"

# A default `meson setup`, configured only: what it builds and installs.
meson setup "$WORK/default" "$source_root" >"$WORK/default-setup.log" 2>&1 ||
  { cat "$WORK/default-setup.log" >&2; fail "meson setup with the default options"; }
meson introspect --buildoptions --installed --targets "$WORK/default" | python3 -c '
import json, sys
info = json.load(sys.stdin)
problems = []
hooks = [o["value"] for o in info["buildoptions"] if o["name"] == "test_hooks"]
if hooks != [False]:
    problems.append(f"test_hooks is {hooks} by default, not false")
checked = 0
for t in info["targets"]:
    if t["name"] not in ("shmstate", "shmstate_internal") or not t["type"].endswith("library"):
        continue
    name = t["name"]
    for ts in t["target_sources"]:
        if not ts.get("sources"):
            continue  # the shared library is made of shmstate_internal objects
        checked += 1
        if any(s.endswith("crash_point.cpp") for s in ts.get("sources", [])):
            problems.append(f"{name} builds crash_point.cpp by default")
        if "-DSHMSTATE_TEST_HOOKS=0" not in ts.get("parameters", []):
            problems.append(f"{name} is not compiled with -DSHMSTATE_TEST_HOOKS=0 by default")
if checked == 0:
    problems.append("no library sources found in the introspection")
installed = list(info["installed"].values())
for want in ("/libshmstate.so." + sys.argv[1], "/bin/shmstate", "/man1/shmstate.1", "/bash-completion/completions/shmstate"):
    if not any(d.endswith(want) for d in installed):
        problems.append(f"a default install has no ...{want}: {installed}")
if any("testing.hpp" in d for d in installed):
    problems.append("a default install has testing.hpp")
for p in problems:
    print("FAIL:", p, file=sys.stderr)
sys.exit(1 if problems else 0)' "$VERSION" || fail "the default configuration (above)"
echo "ok: a default meson setup has no test hooks and installs the library, CLI, man page and completion"
