#!/usr/bin/env bash
# The long soak / leak test (tests/soak/): allocation churn over UDP, TCP and TLS with
# traffic, deletions, closes and expiries for $1 seconds (default 600, i.e. 10 minutes),
# in a release build; then RSS, open fds, relay ports and connections must be back at
# their baseline. Prints the test's report (start, quarterly and end figures) last.
# `cargo test` runs the same test for 20 seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${1:-600}
if ! [[ $secs =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
SOAK_SECS=$secs cargo test --release --locked --test soak -- --nocapture 2>&1 | tee "$log" ||
    status=$?
echo
echo "soak report (${secs} s):"
grep '^soak:' "$log" || echo "  no figures: the test stopped before measuring"
if [ "$status" -eq 0 ]; then echo "soak: passed"; else echo "soak: FAILED"; fi
exit "$status"
