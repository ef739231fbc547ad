#!/usr/bin/env bash
# What the fleet's Redis costs an allocation setup: one ferroturn binary, with
# `user-quota` set in both runs, alone and with `redis` (every allocation then takes a
# lease in Redis, one script round trip, before its relay is bound), alternating:
#
#   bash benches/fleet-setup.sh [ROUNDS] [COUNT]
#
# The server is pinned to CPU 0, the load tool to CPU 1; redis-server (started here on
# a free loopback port, no persistence) is not pinned. Prints the medians and every
# run's figure, with the load tool's CPU (a row where it was above 80% busy says more
# about the tool than the server). Loopback only; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
count=${2:-5000}
bin=target/release/ferroturn
bench=target/release/ferroturn-bench
[ -x "$bin" ] && [ -x "$bench" ] || { echo "fleet-setup.sh: build first: cargo build --release --workspace --bins" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "fleet-setup.sh: redis-server is needed (apt-get install redis-server)" >&2; exit 2; }
command -v taskset >/dev/null || { echo "fleet-setup.sh: taskset is needed (util-linux)" >&2; exit 2; }
port=13578
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
results=$(mktemp)
redis_dir=$(mktemp -d)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" >/dev/null 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true; rm -rf "$results" "$redis_dir"' EXIT
sleep 0.5

run() { # label extra-flags...
    local label=$1
    shift
    taskset -c 0 "$bin" --listening-ip 127.0.0.1 --listening-port "$port" --realm bench \
        --static-auth-secret fleet-secret --allowed-peer-ip 127.0.0.1 --min-port 20000 \
        --max-port 51999 --log-level warn --relay-threads 1 --user-quota 1000000 "$@" \
        >/dev/null 2>&1 &
    local pid=$!
    sleep 0.5
    local out
    out=$(timeout 180 taskset -c 1 "$bench" setup --count "$count" --concurrency 64 \
        --server "127.0.0.1:$port" --secret fleet-secret --server-pid "$pid" --json \
        2>/dev/null | tail -n 1 || true)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "$label $out" >>"$results"
}

for round in $(seq 1 "$rounds"); do
    echo "== round $round of $rounds"
    run alone
    run redis --redis "redis://127.0.0.1:$redis_port/0"
done

python3 - "$results" <<'PY'
import collections, json, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, rest = (line.split(" ", 1) + [""])[:2]
    if not rest.strip().startswith("{"):
        print(f"no result: {line.strip()}")
        continue
    r = json.loads(rest)
    for metric in ("setups_per_s", "p99_ms", "server_cpu_us_per_setup", "gen_cpu_util", "failed"):
        if metric in r:
            runs[(metric, side)].append(r[metric])
print(f"{'metric':<26} {'alone':>10} {'redis':>10}  runs alone | redis")
for metric in ("setups_per_s", "p99_ms", "server_cpu_us_per_setup", "gen_cpu_util", "failed"):
    a, b = runs.get((metric, "alone"), []), runs.get((metric, "redis"), [])
    if a and b:
        fmt = lambda v: ", ".join(f"{x:.3g}" for x in v)
        print(f"{metric:<26} {statistics.median(a):>10.4g} {statistics.median(b):>10.4g}  {fmt(a)} | {fmt(b)}")
PY
