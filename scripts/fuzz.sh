#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS seconds (default 60) and prints the executions
# of each. Exits non-zero if a target does not build or any target finds a crash (the
# input lands in fuzz/artifacts/<target>/). Needs cargo-fuzz (scripts/install-test-deps.sh
# installs it). scripts/test.sh runs it with FUZZ_SECONDS (default 30) after the tests.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# Each target starts from the committed seeds (fuzz/seeds/<target>/, always run in full,
# so a crash once found stays a failing seed until fixed) and the corpus grown by earlier
# runs (fuzz/corpus/<target>/, ignored by git). An input that runs longer than
# FUZZ_UNIT_TIMEOUT seconds (default 30) counts as a crash (a hang).
#
# The toolchain: nightly where rustup has it, else the default toolchain with
# RUSTC_BOOTSTRAP=1, which lets a stable compiler take the -Z flags cargo-fuzz passes
# (-Zsanitizer=address and the coverage instrumentation).
set -euo pipefail

seconds="${1:-60}"
unit_timeout="${FUZZ_UNIT_TIMEOUT:-30}"
cd "$(dirname "$0")/../fuzz"

if RUSTUP_AUTO_INSTALL=0 cargo +nightly --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
    toolchain=()
fi
fuzz() { cargo "${toolchain[@]}" fuzz "$@"; }
if ! fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is not installed (bash scripts/install-test-deps.sh installs it)" >&2
    exit 1
fi
echo "fuzz: $(fuzz --version) on $(rustc "${toolchain[@]}" --version)${RUSTC_BOOTSTRAP:+ with RUSTC_BOOTSTRAP=1}"

targets=$(fuzz list)
start=$SECONDS
if ! fuzz build; then
    echo "fuzz: the fuzz targets do not build" >&2
    exit 1
fi
echo "fuzz: built $(echo $targets | wc -w) targets in $((SECONDS - start))s"

failed=()
for target in $targets; do
    mkdir -p "corpus/$target" "seeds/$target"
    log=$(mktemp)
    status=0
    fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout="$unit_timeout" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$status" -ne 0 ]; then
        echo "$target: CRASH after ${execs:-?} executions"
        grep -E -A1 "panicked at" "$log" || true
        grep -E "^SUMMARY|Test unit written to|ERROR: libFuzzer" "$log" || tail -n 30 "$log"
        failed+=("$target")
    else
        echo "$target: ${execs:-?} executions in ${seconds}s, no crash"
    fi
    rm -f "$log"
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: crashes in: ${failed[*]} (reproduce: cd fuzz && ${RUSTC_BOOTSTRAP:+RUSTC_BOOTSTRAP=1 }cargo ${toolchain[*]:+${toolchain[*]} }fuzz run TARGET artifacts/TARGET/FILE)" >&2
    exit 1
fi
