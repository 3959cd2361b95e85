#!/usr/bin/env bash
# Builds and runs a program against shmstate using only the uninstalled
# pkg-config file, as an out-of-tree user of the build directory would.
# Usage: pkgconfig_test.sh BUILD_ROOT CXX [CXX ARGS...]
set -euo pipefail
build_root=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/user.cpp" <<'CPP'
#include <shmstate/shmstate.hpp>
#include <boost/json.hpp>
#include <string>
#include <unistd.h>
int main() {
  std::string name = "shmstate-pkgconfig-" + std::to_string(getpid());
  auto seg = shmstate::Segment::create(name);
  int rc = seg.atomic<std::int64_t>("n", 41).add_and_get(1) == 42 ? 0 : 1;
  if (*seg.atom("a", boost::json::parse("[1]")).deref() != boost::json::parse("[1]")) rc = 1;
  shmstate::Segment::remove(name);
  return rc;
}
CPP
flags=$(PKG_CONFIG_PATH="$build_root/meson-uninstalled" pkg-config --cflags --libs shmstate)
# shellcheck disable=SC2086
"$@" -std=c++20 "$work/user.cpp" $flags -Wl,-rpath,"$build_root/lib" -o "$work/user"
"$work/user"
echo "pkg-config (uninstalled): built and ran a program against shmstate"
