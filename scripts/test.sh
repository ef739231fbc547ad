#!/usr/bin/env bash
# The whole test suite: installs what the interop tests and the fuzz stage need (coturn,
# Chromium, playwright-core, cargo-fuzz), then runs every test. Extra arguments go to
# `cargo test`. Then runs every fuzz target for FUZZ_SECONDS seconds (default 30; 0 skips
# it) through scripts/fuzz.sh, on nightly or else with RUSTC_BOOTSTRAP=1; a crash, or
# targets that do not build, fail the suite.
# Every test binary runs even after one fails (--no-fail-fast); the suite ends with one
# line totalling their results.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzz_seconds="${FUZZ_SECONDS:-30}"
if ! [[ "$fuzz_seconds" =~ ^[0-9]+$ ]]; then
    echo "FUZZ_SECONDS must be a number of seconds (0 skips fuzzing), not '$fuzz_seconds'" >&2
    exit 2
fi
bash scripts/install-test-deps.sh
# clang and libbpf-dev are installed now: the kernel fast path's program must be built
# (a build without it would skip the offload tests; this makes it a build error).
export FERROTURN_BPF=required
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

fuzz_status=0
if [ "$fuzz_seconds" -eq 0 ]; then
    echo "fuzz: skipped (FUZZ_SECONDS=0)"
else
    fuzz_start=$SECONDS
    bash scripts/fuzz.sh "$fuzz_seconds" || fuzz_status=$?
    if [ "$fuzz_status" -eq 0 ]; then
        echo "fuzz: every target ran ${fuzz_seconds}s without a crash ($((SECONDS - fuzz_start))s in all)"
    else
        echo "fuzz: FAILED ($((SECONDS - fuzz_start))s in all)"
    fi
fi

awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i+1) ~ /^passed;/) p += $i
            if ($(i+1) ~ /^failed;/) f += $i
        }
     }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
if [ "$status" -ne 0 ]; then
    exit "$status"
fi
exit "$fuzz_status"
