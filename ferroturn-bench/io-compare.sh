#!/usr/bin/env bash
# The raw forwarder on recvmmsg/sendmmsg + epoll against the same forwarder on io_uring,
# under the same load, on loopback. From the workspace root, as root or not:
#
#   bash ferroturn-bench/io-compare.sh [--rounds N] [--rows a,b,...] [--duration S] [--out DIR]
#
# Every row runs once per round against a freshly started forwarder of each kind, the
# order alternating from round to round (A B, B A, ...), the forwarder pinned to CPU 0
# and the generator (`ferroturn-bench relay --raw`, with its echo peer) to CPU 1. Each
# run's relay JSON and the forwarder's closing counts (turns, system calls) go to
# DIR/results.jsonl; medians, ranges and the generator's CPU to DIR/summary.md. A row
# where the generator was above 80% busy gets no ratio. All traffic stays on 127.0.0.1.
set -euo pipefail

rounds=7
rows="flood1,flood64,paced200,paced64,paced64hi"
duration=6
warmup=2
out=""
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds="${2:?}"; shift ;;
    --rows) rows="${2:?}"; shift ;;
    --duration) duration="${2:?}"; shift ;;
    --out) out="${2:?}"; shift ;;
    -h | --help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive number" >&2; exit 2; }
[[ "$duration" =~ ^[1-9][0-9]*$ && "$duration" -le 60 ]] || { echo "--duration: 1 to 60 s" >&2; exit 2; }

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ferroturn-bench
bench="$target/release/ferroturn-bench"
out="${out:-$target/io-compare/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out/raw"
results="$out/results.jsonl"
: >"$results"

lport=34780
pport=14780
fwd_pid=""
stop_fwd() {
    [ -n "$fwd_pid" ] || return 0
    kill -TERM "$fwd_pid" 2>/dev/null || true
    wait "$fwd_pid" 2>/dev/null || true
    fwd_pid=""
}
trap stop_fwd EXIT
trap 'exit 130' INT TERM

row_args() {
    case "$1" in
    flood1) echo "--flows 1 --size 200 --mode flood --inflight 16" ;;
    flood64) echo "--flows 64 --size 200 --mode flood --inflight 16" ;;
    paced200) echo "--flows 200 --size 200 --mode paced --pps 50" ;;
    # The same mid load for both (32k round trips/s): CPU per round trip at equal load.
    paced64) echo "--flows 64 --size 200 --mode paced --pps 500 --burst 4" ;;
    # Same, at 128k round trips/s: about half of what either carries at most.
    paced64hi) echo "--flows 64 --size 200 --mode paced --pps 2000 --burst 16" ;;
    *) echo "unknown row $1" >&2; return 1 ;;
    esac
}

# Busy CPU ticks of the whole machine (all CPUs), and of one process.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
proc_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# This machine may be shared: before a run, wait (at most 10 minutes) until it has been
# idle for a second (under 5% of one CPU busy), so no one else's build is measured too.
wait_quiet() {
    local a b
    for _ in $(seq 600); do
        a=$(machine_ticks); sleep 1; b=$(machine_ticks)
        [ $((b - a)) -le 5 ] && return 0
    done
    echo "  (machine still busy after 10 minutes; measuring anyway)"
}

run() {
    local round=$1 io=$2 row=$3
    local tag="$out/raw/r$round-$row-$io"
    # An io_uring forwarder's sockets close a moment after it exits (the ring is torn
    # down asynchronously): wait for the port.
    for _ in $(seq 100); do
        ss -Huan "sport = :$lport" | grep -q . || break
        sleep 0.05
    done
    wait_quiet
    taskset -c 0 "$bench" forwarder --listen "127.0.0.1:$lport" --peer "127.0.0.1:$pport" \
        --io "$io" --duration $((duration + warmup + 30)) >"$tag.fwd" 2>"$tag.fwd.err" &
    fwd_pid=$!
    for _ in $(seq 50); do
        ss -Hlun "sport = :$lport" | grep -q . && break
        sleep 0.1
    done
    local rc=0 m0 m1 f1=0 g1=0 gen_pid
    m0=$(machine_ticks)
    local t0=$SECONDS
    # shellcheck disable=SC2046
    timeout -k 5 $((duration + warmup + 30)) taskset -c 1 "$bench" relay \
        --raw "127.0.0.1:$lport" --peer-port "$pport" $(row_args "$row") \
        --duration "$duration" --warmup "$warmup" --server-pid "$fwd_pid" --json \
        >"$tag.out" 2>"$tag.err" &
    gen_pid=$!
    # The generator's CPU, read until it exits (timeout's child is the generator).
    while kill -0 "$gen_pid" 2>/dev/null; do
        local child
        child=$(pgrep -P "$gen_pid" | head -1 || true)
        [ -n "$child" ] && g1=$(proc_ticks "$child")
        f1=$(proc_ticks "$fwd_pid")
        sleep 0.2
    done
    wait "$gen_pid" || rc=$?
    m1=$(machine_ticks)
    # CPU used by anything but the two (ticks): another session's work on this machine.
    echo "$(( (m1 - m0) - f1 - g1 )) $((SECONDS - t0))" >"$tag.others"
    stop_fwd
    python3 - "$results" "$round" "$io" "$row" "$rc" "$tag" <<'EOF'
import json, sys
results, rnd, io, row, rc, tag = sys.argv[1:]
rel = None
for line in open(tag + ".out"):
    if line.startswith("{"):
        rel = json.loads(line)
fwd = {}
for line in open(tag + ".fwd"):
    if line.startswith("forwarder:"):
        fwd = dict(kv.split("=") for kv in line.split()[1:])
ticks, wall = open(tag + ".others").read().split()
others = int(ticks) / 100
entry = {"round": int(rnd), "io": io, "row": row, "rc": int(rc), "relay": rel,
         "forwarder": {k: float(v) for k, v in fwd.items()}, "others_cpu_s": others,
         "wall_s": int(wall)}
open(results, "a").write(json.dumps(entry) + "\n")
if rel:
    print(f"  {io:6} rt/s={rel['round_trips_per_s']:>9,.0f} cpu/rt={rel['server_cpu_us_per_round_trip']:.2f}us"
          f" p50={rel['rtt_us']['p50']:.0f} p99={rel['rtt_us']['p99']:.0f} gen={rel['gen_cpu_util']:.0%}"
          f" loss={rel['loss_ratio']:.2%} others={others:.2f}s")
else:
    print(f"  {io:6} no result (exit {rc}), see {tag}.err")
EOF
}

IFS=, read -ra row_list <<<"$rows"
for round in $(seq "$rounds"); do
    echo "== round $round of $rounds"
    if [ $((round % 2)) = 1 ]; then order=(mmsg uring); else order=(uring mmsg); fi
    for row in "${row_list[@]}"; do
        echo "[$row]"
        for io in "${order[@]}"; do
            run "$round" "$io" "$row"
        done
    done
done

python3 - "$results" "$out/summary.md" <<'EOF'
import json, statistics, sys
entries = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
# Runs during which everything else (this script's own polling included, about 5%) used
# more than 15% of one CPU are left out: another session was busy on the machine.
OTHERS_LIMIT = 0.15
def noisy(e):
    return e.get("others_cpu_s", 0) > OTHERS_LIMIT * max(e.get("wall_s", 1), 1)
left_out = [e for e in entries if noisy(e)]
entries = [e for e in entries if not noisy(e)]
METRICS = [
    ("round trips/s", lambda r, f: r["round_trips_per_s"], "higher"),
    ("server CPU us/round trip", lambda r, f: r["server_cpu_us_per_round_trip"], "lower"),
    ("RTT p50 us", lambda r, f: r["rtt_us"]["p50"], "lower"),
    ("RTT p99 us", lambda r, f: r["rtt_us"]["p99"], "lower"),
    ("generator busy", lambda r, f: r["gen_cpu_util"], "info"),
    ("datagrams per system call", lambda r, f: (f["up"] + f["down"]) / f["calls"], "info"),
    ("datagrams per loop turn", lambda r, f: (f["up"] + f["down"]) / f["turns"], "info"),
]
rows = []
for e in entries:
    if e["row"] not in rows:
        rows.append(e["row"])
lines = ["| row | metric | mmsg median [min-max] | io_uring median [min-max] | uring/mmsg | runs |",
         "|---|---|---:|---:|---:|---:|"]
def fmt(v):
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
for row in rows:
    busy = max((e["relay"]["gen_cpu_util"] for e in entries
                if e["row"] == row and e["relay"]), default=0)
    for name, get, better in METRICS:
        cells, meds, n = [], [], []
        for io in ("mmsg", "uring"):
            vals = []
            for e in entries:
                if e["row"] == row and e["io"] == io and e["relay"] and e["forwarder"].get("calls"):
                    vals.append(get(e["relay"], e["forwarder"]))
            if not vals:
                cells.append("-"); meds.append(None); n.append(0); continue
            m = statistics.median(vals)
            meds.append(m); n.append(len(vals))
            cells.append(f"{fmt(m)} [{fmt(min(vals))}-{fmt(max(vals))}]" if name != "generator busy"
                         else f"{m:.0%} [{min(vals):.0%}-{max(vals):.0%}]")
        ratio = "-"
        if better != "info" and meds[0] and meds[1] is not None:
            ratio = f"{meds[1] / meds[0]:.2f}"
            gen = [statistics.median([e["relay"]["gen_cpu_util"] for e in entries
                    if e["row"] == row and e["io"] == io and e["relay"]]) for io in ("mmsg", "uring")]
            if max(gen) > 0.8:
                ratio = f"none (generator {max(gen):.0%})"
        lines.append(f"| {row} | {name} | {cells[0]} | {cells[1]} | {ratio} | {n[0]}/{n[1]} |")
lines.append("")
lines.append(f"{len(left_out)} run(s) left out: something else used over {OTHERS_LIMIT:.0%} of a CPU during them"
             + "".join(f"; r{e['round']} {e['row']} {e['io']} ({e['others_cpu_s']:.1f} s)" for e in left_out))
text = "\n".join(lines)
open(sys.argv[2], "w").write(text + "\n")
print(text)
EOF
echo "results: $out"
