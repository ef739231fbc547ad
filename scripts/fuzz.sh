#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS seconds (default 60) and prints the executions
# of each. Exits non-zero if any target finds a crash (the input lands in
# fuzz/artifacts/<target>/). Needs a nightly toolchain and cargo-fuzz.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
set -euo pipefail

seconds="${1:-60}"
cd "$(dirname "$0")/../fuzz"

targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build

failed=()
for target in $targets; do
    # The corpus directory is ignored by git; the committed seeds start it.
    mkdir -p "corpus/$target"
    if [ -d "seeds/$target" ]; then
        cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
    fi
    log=$(mktemp)
    status=0
    cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$status" -ne 0 ]; then
        echo "$target: CRASH after ${execs:-?} executions"
        grep -E "panicked at|^SUMMARY|Test unit written to" "$log" || tail -n 30 "$log"
        failed+=("$target")
    else
        echo "$target: ${execs:-?} executions in ${seconds}s, no crash"
    fi
    rm -f "$log"
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "crashes in: ${failed[*]}" >&2
    exit 1
fi
