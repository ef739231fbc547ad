#!/usr/bin/env bash
# The whole test suite: installs what the interop tests need (coturn, Chromium,
# playwright-core), then runs every test. Extra arguments go to `cargo test`.
# Ends with one line totalling every test binary's results.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-test-deps.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i+1) ~ /^passed;/) p += $i
            if ($(i+1) ~ /^failed;/) f += $i
        }
     }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
