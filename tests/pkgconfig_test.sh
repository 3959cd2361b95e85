#!/usr/bin/env bash
# pkg-config, as users of shmstate meet it:
#  1. the uninstalled .pc (meson-uninstalled/) builds and runs the consumer;
#  2. the installed .pc, in a `meson install --destdir` tree found through
#     PKG_CONFIG_SYSROOT_DIR (as a sysroot or staging build would), builds and
#     runs it;
#  3. its Libs, Libs.private and Requires name no absolute paths (Boost has no
#     .pc: it is -lboost_json, never /usr/lib/.../libboost_json.so.1.81.0);
#  4. compiling without C++20 stops at one clear #error, for the plain
#     `c++ $(pkg-config --cflags --libs shmstate)` (no -std flag) and for each
#     installed header on its own.
# Usage: pkgconfig_test.sh BUILD_ROOT SOURCE_ROOT CXX [CXX ARGS...]
set -euo pipefail
build_root=$1
source_root=$2
shift 2
source "$source_root/tests/support/stage_install.sh"
main="$source_root/tests/consumer/main.cpp"

# 1. Uninstalled.
# shellcheck disable=SC2046
"$@" -std=c++20 "$main" $(PKG_CONFIG_PATH="$build_root/meson-uninstalled" pkg-config --cflags --libs shmstate) \
  -Wl,-rpath,"$build_root/lib" -o "$WORK/uninstalled"
"$WORK/uninstalled" >/dev/null || fail "the consumer built from the uninstalled .pc failed"
echo "ok: uninstalled .pc builds and runs the consumer"

# 2. Installed, under a sysroot.
stage_install "$build_root"
pc_dir="$STAGE$LIBDIR/pkgconfig"
[ -f "$pc_dir/shmstate.pc" ] || fail "no shmstate.pc in $pc_dir"
pkgconf() { PKG_CONFIG_SYSROOT_DIR="$STAGE" PKG_CONFIG_LIBDIR="$pc_dir" pkg-config "$@"; }
flags=$(pkgconf --cflags --libs shmstate)
case " $flags " in *" -I$STAGE$INCLUDEDIR "*) ;; *) fail "cflags do not point into the sysroot: $flags" ;; esac
case " $flags " in *" -L$STAGE$LIBDIR "*) ;; *) fail "libs do not point into the sysroot: $flags" ;; esac
# shellcheck disable=SC2086
"$@" -std=c++20 "$main" $flags -o "$WORK/installed"
LD_LIBRARY_PATH="$STAGE$LIBDIR" "$WORK/installed" >/dev/null || fail "the consumer built from the installed .pc failed"
[ "$(pkgconf --modversion shmstate)" = "$VERSION" ] || fail "shmstate.pc has another version"
echo "ok: installed .pc works under PKG_CONFIG_SYSROOT_DIR ($flags)"

# 3. No absolute paths where pkg-config does not rewrite them.
if grep -E '^(Libs|Libs\.private|Requires|Requires\.private):.*(^|[[:space:]])/' "$pc_dir/shmstate.pc"; then
  fail "absolute path in shmstate.pc (above)"
fi
echo "ok: Libs/Libs.private/Requires name no absolute paths"

# 4. Not C++20: one clear message, then compilation stops.
# expect_cxx20_error LABEL COMPILER-COMMAND...: the command must fail, say that
# C++20 is needed, and report at most 2 errors (the #error and the stop).
expect_cxx20_error() {
  local label=$1 log="$WORK/cxx17.log" errors
  shift
  if "$@" >"$log" 2>&1; then fail "$label: compiled without C++20"; fi
  grep -q "shmstate needs C++20" "$log" || { cat "$log" >&2; fail "$label: no clear C++20 message"; }
  errors=$(grep -cE ": (fatal )?error:" "$log" || true)
  [ "$errors" -le 2 ] || { cat "$log" >&2; fail "$label: $errors error lines, not one clear message"; }
}
default_std=$("$@" -x c++ -dM -E /dev/null | sed -n 's/^#define __cplusplus \([0-9]*\)L$/\1/p')
if [ "$default_std" -lt 202002 ]; then
  # shellcheck disable=SC2086
  expect_cxx20_error "c++ \$(pkg-config --cflags --libs shmstate), no -std (default $default_std)" \
    "$@" "$main" $flags -o "$WORK/cxx17"
else
  echo "note: this compiler defaults to C++20 (__cplusplus $default_std): checking with -std=c++17 only"
fi
headers=0
while IFS= read -r h; do
  rel=${h#"$STAGE$INCLUDEDIR/"}
  printf '#include <%s>\n' "$rel" >"$WORK/one.cpp"
  # shellcheck disable=SC2086
  expect_cxx20_error "<$rel> with -std=c++17" "$@" -std=c++17 -fsyntax-only $(pkgconf --cflags shmstate) "$WORK/one.cpp"
  headers=$((headers + 1))
done < <(find "$STAGE$INCLUDEDIR/shmstate" -name '*.hpp' | sort)
[ "$headers" -ge 10 ] || fail "only $headers headers installed"
echo "ok: without C++20, every one of the $headers installed headers stops at one clear #error"
