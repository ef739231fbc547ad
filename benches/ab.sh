#!/usr/bin/env bash
# Two ferroturn server binaries side by side, driven by the same load tool, to tell
# whether a change moved the server's own figures:
#
#   bash benches/ab.sh BEFORE_BIN AFTER_BIN [ROUNDS]
#
# e.g. a worktree of the old commit built with its own target directory:
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release --bins)
#   cargo build --release --workspace --bins
#   bash benches/ab.sh /tmp/old/target/release/ferroturn target/release/ferroturn 4
#
# Each round starts a fresh server per binary and row (alternating, so drifts of the
# machine fall on both), pinned to CPU 0, with target/release/ferroturn-bench on CPU 1:
# paced relay (200 flows x 50 pps), a one-flow flood and allocation setups. Prints the
# medians and every run's figure. Loopback only; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

before=${1:?usage: bash benches/ab.sh BEFORE_BIN AFTER_BIN [ROUNDS]}
after=${2:?usage: bash benches/ab.sh BEFORE_BIN AFTER_BIN [ROUNDS]}
rounds=${3:-4}
bench=target/release/ferroturn-bench
[ -x "$bench" ] || { echo "ab.sh: build the load tool first: cargo build --release --workspace --bins" >&2; exit 2; }
command -v taskset >/dev/null || { echo "ab.sh: taskset is needed (util-linux)" >&2; exit 2; }
port=13478
results=$(mktemp)
trap 'rm -f "$results"' EXIT

run() { # label binary args...
    local label=$1 bin=$2
    shift 2
    taskset -c 0 "$bin" --listening-ip 127.0.0.1 --listening-port "$port" --realm bench \
        --static-auth-secret ab-secret --allowed-peer-ip 127.0.0.1 --min-port 20000 \
        --max-port 51999 --log-level warn --max-bps 0 --relay-threads 1 >/dev/null 2>&1 &
    local pid=$!
    sleep 0.5
    local out
    out=$(timeout 180 taskset -c 1 "$bench" "$@" --server "127.0.0.1:$port" \
        --secret ab-secret --server-pid "$pid" --json 2>/dev/null | tail -n 1 || true)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "$label $1 $out" >>"$results"
}

for round in $(seq 1 "$rounds"); do
    echo "== round $round of $rounds"
    for side in before after; do
        bin=$before
        [ "$side" = after ] && bin=$after
        run "$side" "$bin" relay --flows 200 --size 200 --mode paced --pps 50 --duration 6 --warmup 2
        run "$side" "$bin" relay --flows 1 --size 200 --mode flood --duration 4 --warmup 1
        run "$side" "$bin" setup --count 15000 --concurrency 64
    done
done

python3 - "$results" <<'EOF'
import collections, json, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, tool, rest = (line.split(" ", 2) + ["", ""])[:3]
    if not rest.strip().startswith("{"):
        print(f"no result: {line.strip()}")
        continue
    r = json.loads(rest)
    for q, v in (r.get("rtt_us") or {}).items():
        r[f"rtt_{q}_us"] = v
    row = f"{tool} {r.get('mode', '')} {r.get('flows', '')}".strip()
    for metric in ("server_cpu_us_per_round_trip", "round_trips_per_s", "rtt_p50_us", "rtt_p99_us",
                   "setups_per_s", "server_cpu_us_per_setup", "p99_ms", "gen_cpu_util"):
        if metric in r:
            runs[(row, metric, side)].append(r[metric])
keys = sorted({(row, metric) for row, metric, _ in runs})
print(f"{'row':<18} {'metric':<30} {'before':>12} {'after':>12}  runs before | after")
for row, metric in keys:
    b, a = runs.get((row, metric, "before"), []), runs.get((row, metric, "after"), [])
    if b and a:
        fmt = lambda v: ", ".join(f"{x:.3g}" for x in v)
        print(f"{row:<18} {metric:<30} {statistics.median(b):>12.4g} "
              f"{statistics.median(a):>12.4g}  {fmt(b)} | {fmt(a)}")
EOF
