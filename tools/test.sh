#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite.
# Exit status: 0 when every test passed, non-zero otherwise.
#   tools/test.sh                 all suites (unit, multiprocess, cli, bench smoke)
#   tools/test.sh --suite unit    extra arguments go to `meson test`
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

status=0
meson test -C "$BUILD_DIR" --print-errorlogs --num-processes 2 "$@" || status=$?

# The plain closing line CI reads: count results from meson's JSON log.
python3 - "$BUILD_DIR/meson-logs/testlog.json" <<'PY'
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"): passed += 1
    elif r == "SKIP": skipped += 1
    else: failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
