#!/usr/bin/env bash
# Installs what is missing, builds, and runs the demo: worker processes share
# one segment, then `shmstate dump` shows it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

SEG="shmstate-demo-$$"
CLI="$BUILD_DIR/tools/shmstate"
trap '"$CLI" rm "$SEG" >/dev/null 2>&1 || true' EXIT

"$BUILD_DIR/tools/shmstate-demo" "$SEG"
echo
echo "\$ shmstate dump $SEG"
"$CLI" dump "$SEG"
