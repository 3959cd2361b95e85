#!/usr/bin/env bash
# Tries the README's quick start on a bare Debian 12, as a new user would:
# a minbase debootstrap root (git, ca-certificates, sudo and nothing else), a
# clean clone of this repository's committed HEAD, then `tools/demo.sh` and
# `tools/test.sh` inside it with chroot. Prints how long each step took.
#
# Not part of CI: it needs root, the Debian archive and several minutes.
#   sudo tools/fresh-check.sh            uses the cached bare root, or makes it
#   FRESH_CACHE=/some/dir tools/fresh-check.sh
#   FRESH_MIRROR=http://deb.debian.org/debian tools/fresh-check.sh
# The bare root is made once and kept (as a tarball) in $FRESH_CACHE
# (default /var/cache/shmstate-fresh); each run unpacks a new copy of it, so
# every run starts bare. Mounts are undone and the copy is removed on exit.
# Exit status: 0 when both commands succeeded, else the first failure's status.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FRESH_CACHE:-/var/cache/shmstate-fresh}"
MIRROR="${FRESH_MIRROR:-http://deb.debian.org/debian}"
TARBALL="$CACHE/bookworm-minbase.tar"

[ "$(id -u)" -eq 0 ] || { echo "fresh-check: needs root (debootstrap, chroot, mount)" >&2; exit 1; }

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f} s')" "$1" "$2"; }

if ! command -v debootstrap >/dev/null; then
  echo "fresh-check: installing debootstrap" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
fi

mkdir -p "$CACHE"
if [ ! -f "$TARBALL" ]; then
  echo "== debootstrap bookworm (minbase + git, ca-certificates, sudo) into the cache"
  t0=$(now)
  stage=$(mktemp -d "$CACHE/stage.XXXXXX")
  debootstrap --variant=minbase --include=git,ca-certificates,sudo bookworm "$stage" "$MIRROR"
  tar -C "$stage" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$stage"
  echo "debootstrap: $(elapsed "$t0" "$(now)")"
fi

CHROOT=$(mktemp -d "${TMPDIR:-/tmp}/shmstate-fresh.XXXXXX")
mounted=()
cleanup() {
  local m
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    m=${mounted[i]}
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || echo "fresh-check: could not unmount $m" >&2
  done
  # Only remove the copy when nothing is mounted under it any more.
  if ! grep -q " $CHROOT/" /proc/mounts; then rm -rf "$CHROOT"; else echo "fresh-check: left $CHROOT" >&2; fi
}
trap cleanup EXIT

tar -C "$CHROOT" -xf "$TARBALL"
# mktemp -d makes it 0700, and tar restores "." to the staging directory's
# 0700 too; as the chroot's "/" it must be 0755 like any root, or tests that
# drop to nobody cannot reach /dev/shm or /usr/bin (so: after extracting).
chmod 0755 "$CHROOT"
cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"
# Debian 12's default sources, as a fresh install has them.
if [ ! -s "$CHROOT/etc/apt/sources.list" ]; then
  echo "deb $MIRROR bookworm main" > "$CHROOT/etc/apt/sources.list"
fi

for m in proc dev dev/shm; do
  mkdir -p "$CHROOT/$m"
  case $m in
    proc) mount -t proc proc "$CHROOT/proc" ;;
    dev) mount --bind /dev "$CHROOT/dev" ;;
    dev/shm) mount -t tmpfs -o mode=1777 shm "$CHROOT/dev/shm" ;;
  esac
  mounted+=("$CHROOT/$m")
done

# The committed HEAD, not the working tree: what a clone gets.
git clone -q "$ROOT" "$CHROOT/root/shmstate"
echo "== checking $(git -C "$ROOT" rev-parse --short HEAD) on a bare Debian 12 ($CHROOT)"

status=0
times=()
for cmd in tools/demo.sh tools/test.sh; do
  echo "== $cmd"
  t0=$(now)
  rc=0
  chroot "$CHROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    TERM="${TERM:-dumb}" LANG=C.UTF-8 bash -c "cd /root/shmstate && $cmd" || rc=$?
  t=$(elapsed "$t0" "$(now)")
  times+=("$cmd: $t, exit $rc")
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
done

echo "== fresh-check summary ($(git -C "$ROOT" rev-parse --short HEAD))"
printf '%s\n' "${times[@]}"
exit $status
