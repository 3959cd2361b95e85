#!/usr/bin/env bash
# What the installed libshmstate.so exports (nm -D --defined-only, demangled):
# the public API and nothing else. No symbol of shmstate::detail, ::platform
# or ::testing (hidden by -fvisibility=hidden; the tests reach them through
# the internal static library), no weak std::/boost:: copies (lib/shmstate.map),
# and every public entry point the headers promise. Also: the SONAME is
# libshmstate.so.MAJOR.MINOR, and <shmstate/testing.hpp> is not installed.
# Usage: symbols_test.sh BUILD_ROOT SOURCE_ROOT
set -euo pipefail
build_root=$1
source "$2/tests/support/stage_install.sh"
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
