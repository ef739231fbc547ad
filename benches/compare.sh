#!/usr/bin/env bash
# ferroturn and coturn side by side on loopback, with ferroturn's kernel fast path
# (`--kernel-offload on`, the "kernel" rows, as root) and the user-space floor (a raw UDP
# forwarder) where they apply. From a clean clone, as root on Debian:
#
#   bash benches/compare.sh [--quick] [--rounds N] [--scenarios a,b,...] [--out DIR]
#
# Every scenario runs once per round against a freshly started server, ferroturn and
# coturn in turn (A B A B ...), the server pinned to CPU 0 and the load generator
# (ferroturn-bench) to CPU 1. Both servers get one relay thread, the same REST secret,
# relay port ranges of the same size and loopback peers allowed; TCP listeners only for
# the TCP scenario (TURN over TCP to the server, UDP to the peer). Each run's JSON line is
# kept in DIR/results.jsonl (default target/bench-results/<timestamp>/); the medians are
# printed and written to DIR/summary.md. All traffic stays on 127.0.0.0/8, or with --netns
# inside the two network namespaces the script creates (and deletes at exit).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash benches/compare.sh [--quick] [--netns] [--rounds N] [--scenarios LIST] [--out DIR]
  --quick           1 round, 2 s per relay scenario, smaller counts
  --netns           server and generator in two network namespaces of their own, joined
                    by a veth pair, each side's receive work steered to its own CPU (RPS),
                    as between two hosts; needs root. The echo peer is then a TC program
                    in the generator's namespace (benches/echo.bpf.c) where clang and tc
                    can load it
  --user-echo       with --netns, keep the echo peer in user space (a thread of the
                    generator, as on loopback)
  --rounds N        rounds (default 5; 1 with --quick)
  --scenarios LIST  comma-separated subset of: relay-1x200 relay-64x200 relay-2x
                    relay-1x1200 relay-64x1200 relay-cpu relay-half relay-tcp-64x200
                    setup idle-10k idle-30k flood flood-ips
  --out DIR         results directory (default target/bench-results/<timestamp>)
EOF
}

rounds=5
rounds_set=0
netns=0
user_echo=0
quick=0
only=""
out=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1 ;;
    --netns) netns=1 ;;
    --user-echo) user_echo=1 ;;
    --rounds) rounds="${2:?--rounds needs a number}"; rounds_set=1; shift ;;
    --scenarios) only="${2:?--scenarios needs a list}"; shift ;;
    --out) out="${2:?--out needs a directory}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive number" >&2; exit 2; }

if [ "$quick" = 1 ]; then
    [ "$rounds_set" = 1 ] || rounds=1
    duration=2 warmup=1 hold=2 setup_count=3000 flood_requests=40000
else
    duration=6 warmup=2 hold=5 setup_count=10000 flood_requests=100000
fi
# Unauthenticated Allocates per second: both servers keep up, so the answers show what
# each server sends back rather than how much its socket buffer drops.
flood_rate=20000
secret="compare-secret"
realm="bench"
threads=1
# Relay ranges of the same size (32000 ports) for both servers; the load generator binds
# 127.0.0.2, so its own ports never collide with them.
min_port=20000
max_port=51999

cd "$(dirname "$0")/.."
die() { echo "compare.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is needed (apt-get install -y python3)"
command -v taskset >/dev/null || die "taskset is needed (apt-get install -y util-linux)"
command -v ss >/dev/null || die "ss is needed (apt-get install -y iproute2)"
if ! command -v turnserver >/dev/null; then
    [ "$(id -u)" = 0 ] || die "coturn is not installed: apt-get install -y coturn (as root)"
    echo "== installing coturn"
    apt-get install -y coturn || { apt-get update && apt-get install -y coturn; }
fi

# Where the server listens and relays, and where the generator and its echo peer live.
srv_ip=127.0.0.1 gen_ip=127.0.0.1
in_srv=() in_gen=() gen_addrs=()
cleanup_ns() { :; }
if [ "$netns" = 1 ]; then
    [ "$(id -u)" = 0 ] || die "--netns needs root"
    command -v ip >/dev/null || die "ip is needed (apt-get install -y iproute2)"
    if ! command -v ethtool >/dev/null; then
        echo "== installing ethtool"
        apt-get install -y ethtool || { apt-get update && apt-get install -y ethtool; }
    fi
    ns_srv="ftbench-srv-$$" ns_gen="ftbench-gen-$$"
    srv_ip=10.77.0.1 gen_ip=10.77.0.2
    cleanup_ns() { ip netns del "$ns_srv" 2>/dev/null || true; ip netns del "$ns_gen" 2>/dev/null || true; }
    trap cleanup_ns EXIT
    ip netns add "$ns_srv" && ip netns add "$ns_gen" || die "cannot create network namespaces"
    ip -n "$ns_srv" link set lo up
    ip -n "$ns_gen" link set lo up
    ip -n "$ns_srv" link add vs type veth peer name vg netns "$ns_gen"
    ip -n "$ns_srv" addr add "$srv_ip/24" dev vs
    ip -n "$ns_gen" addr add "$gen_ip/24" dev vg
    ip -n "$ns_srv" link set vs up
    ip -n "$ns_gen" link set vg up
    # A veth delivers on the sending CPU; RPS moves each side's receive work to the CPU
    # of that side (the server's on 0, the generator's on 1), as on two hosts.
    ip netns exec "$ns_srv" sh -c 'echo 1 > /sys/class/net/vs/queues/rx-0/rps_cpus'
    ip netns exec "$ns_gen" sh -c 'echo 2 > /sys/class/net/vg/queues/rx-0/rps_cpus'
    # Each UDP datagram leaves a veth as a datagram of its own, as on a wire: a GSO train
    # is cut in the sender's namespace (software segmentation, charged to the sender)
    # rather than crossing the pair whole and being cut by the receiver.
    ip netns exec "$ns_srv" ethtool -K vs tx-udp-segmentation off >/dev/null &&
        ip netns exec "$ns_gen" ethtool -K vg tx-udp-segmentation off >/dev/null ||
        die "ethtool could not turn off UDP segmentation offload on the veth pair"
    # The kernel fast path forwards to the generator's namespace through bpf_fib_lookup,
    # which needs forwarding on lo (the server's namespace routes nothing itself).
    ip netns exec "$ns_srv" sh -c 'echo 1 > /proc/sys/net/ipv4/conf/lo/forwarding'
    in_srv=(ip netns exec "$ns_srv")
    in_gen=(ip netns exec "$ns_gen")
    gen_addrs=(--bind "$gen_ip" --peer-ip "$gen_ip")
fi

echo "== building (cargo build --release --workspace --bins)"
cargo build --release --workspace --bins
ft=target/release/ferroturn
bench=target/release/ferroturn-bench

# Held allocations need one descriptor each in the server and in the generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit=$(ulimit -n)
[ "$fd_limit" = unlimited ] && fd_limit=1048576

if [ -z "$out" ]; then
    out="target/bench-results/$(date +%Y%m%d-%H%M%S)"
fi
mkdir -p "$out/raw"
out=$(cd "$out" && pwd)
results="$out/results.jsonl"
: >"$results"
: >"$out/skipped.txt"
py="$out/compare.py"

cat >"$py" <<'PYEOF'
"""compare.sh's bookkeeping: record one run's JSON result, read a value back, and
summarize the medians per scenario. Standard library only."""
import json
import statistics
import sys

# (scenario, what, key in the result JSON, which way is better)
METRICS = [
    # Media-like paced load first: what a server costs per relayed packet, and the tail
    # latency a call sees, with the generator far from busy.
    # The server's CPU, all of it: its process and the kernel's work there (softirq
    # included, which RPS steers to it in the namespace bed), charged to any process or
    # none. The fair figure for user space and the kernel path alike; with --netns only
    # (on loopback a datagram's receive work runs on the sender's CPU).
    ("relay-cpu", "server core CPU us/round trip, 200 flows x 50 pps", "server_core_cpu_us_per_round_trip", "lower"),
    ("relay-cpu", "server CPU us/round trip, 200 flows x 50 pps", "server_cpu_us_per_round_trip", "lower"),
    # Every CPU's busy time: the only fair figure for the kernel path, whose work no
    # process is charged for (it includes the generator and the echo peer for everyone).
    ("relay-cpu", "machine CPU us/round trip, 200 flows x 50 pps", "machine_cpu_us_per_round_trip", "lower"),
    ("relay-cpu", "RTT p50 us, 200 flows x 50 pps", "rtt_us.p50", "lower"),
    ("relay-cpu", "RTT p99 us, 200 flows x 50 pps", "rtt_us.p99", "lower"),
    # The same round trips timed to the reply's kernel receive time (SO_TIMESTAMPNS)
    # instead of the generator's read: the generator's own wake-up (tens of us at paced
    # load) left out.
    ("relay-cpu", "RTT p50 us to arrival, 200 flows x 50 pps", "rtt_arrival_us.p50", "lower"),
    ("relay-cpu", "RTT p99 us to arrival, 200 flows x 50 pps", "rtt_arrival_us.p99", "lower"),
    ("relay-half", "RTT p99 us at half ferroturn's max", "rtt_us.p99", "lower"),
    ("relay-half", "RTT p50 us at half ferroturn's max", "rtt_us.p50", "lower"),
    ("relay-half", "RTT p99 us to arrival at half ferroturn's max", "rtt_arrival_us.p99", "lower"),
    ("relay-half", "RTT p50 us to arrival at half ferroturn's max", "rtt_arrival_us.p50", "lower"),
    ("relay-1x200", "round trips/s, 1 flow, 200 B", "round_trips_per_s", "higher"),
    ("relay-1x200", "server core CPU us/round trip, 1 flow, 200 B", "server_core_cpu_us_per_round_trip", "lower"),
    ("relay-1x200", "server CPU us/round trip, 1 flow, 200 B", "server_cpu_us_per_round_trip", "lower"),
    ("relay-1x200", "machine CPU us/round trip, 1 flow, 200 B", "machine_cpu_us_per_round_trip", "lower"),
    ("relay-64x200", "round trips/s, 64 flows, 200 B", "round_trips_per_s", "higher"),
    ("relay-64x200", "server core CPU us/round trip, 64 flows, 200 B", "server_core_cpu_us_per_round_trip", "lower"),
    ("relay-64x200", "server CPU us/round trip, 64 flows, 200 B", "server_cpu_us_per_round_trip", "lower"),
    ("relay-64x200", "machine CPU us/round trip, 64 flows, 200 B", "machine_cpu_us_per_round_trip", "lower"),
    # 64 flows offered 2.2 times coturn's 64-flow flood rate of the same round (paced,
    # bursts of 16): a server that keeps up relays it all with the generator below 80%
    # busy, which a flood row cannot show once a server outruns the generator.
    # The ratio of the first row is to coturn's relay-64x200 rate of the same round.
    ("relay-2x", "round trips/s relayed, offered 2.2x coturn's 64-flow max", "round_trips_per_s", "higher", "relay-64x200"),
    ("relay-2x", "loss, offered 2.2x coturn's 64-flow max", "loss_ratio", "lower"),
    ("relay-2x", "RTT p99 us, offered 2.2x coturn's 64-flow max", "rtt_us.p99", "lower"),
    ("relay-1x1200", "round trips/s, 1 flow, 1200 B", "round_trips_per_s", "higher"),
    ("relay-64x1200", "round trips/s, 64 flows, 1200 B", "round_trips_per_s", "higher"),
    ("relay-tcp-64x200", "round trips/s over TCP, 64 flows, 200 B", "round_trips_per_s", "higher"),
    ("relay-tcp-64x200", "server CPU us/round trip over TCP, 64 flows", "server_cpu_us_per_round_trip", "lower"),
    ("setup", "allocation setups/s", "setups_per_s", "higher"),
    ("setup", "setup latency p99 ms", "p99_ms", "lower"),
    ("setup", "server CPU us per setup", "server_cpu_us_per_setup", "lower"),
    ("idle-10k", "RSS bytes per idle allocation, 10k", "rss_per_alloc_bytes", "lower"),
    ("idle-30k", "RSS bytes per idle allocation, 30k", "rss_per_alloc_bytes", "lower"),
    ("flood", "unauth flood, 1 IP: bytes out / bytes in", "amplification", "lower"),
    ("flood", "unauth flood, 1 IP: responses / requests", "response_ratio", "info"),
    ("flood", "unauth flood, 1 IP: RSS growth per port, B", "rss_delta_per_source_bytes", "lower"),
    ("flood", "unauth flood, 1 IP: server CPU us/request", "server_cpu_us_per_request", "lower"),
    ("flood-ips", "unauth flood, 2000 IPs: bytes out / in", "amplification", "lower"),
    ("flood-ips", "unauth flood, 2000 IPs: responses / requests", "response_ratio", "info"),
    ("flood-ips", "unauth flood, 2000 IPs: RSS growth per IP, B", "rss_delta_per_source_bytes", "lower"),
]

# Above this share of its core the load generator, not the server, may set the pace: a
# ratio taken there compares generators, so none is given.
GEN_BUSY_LIMIT = 0.8


def lookup(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj if isinstance(obj, (int, float)) and not isinstance(obj, bool) else None


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def bed_is_netns(results):
    try:
        with open(f"{results.rsplit('/', 1)[0]}/machine.json") as f:
            return bool(json.load(f).get("netns"))
    except (OSError, ValueError):
        return False


def record(results, rnd, impl, scenario, rc, outfile):
    result = None
    with open(outfile, errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    result = json.loads(line)
                except ValueError:
                    pass
    netns = bed_is_netns(results)
    if result is not None and not netns:
        # On loopback a datagram's receive work runs on the sender's CPU: the server's
        # CPU also does the generator's, so its busy time is not the server's.
        result.pop("server_core_cpu_us_per_round_trip", None)
    if result is not None:
        # How busy the generator was: its process, or in the namespace bed its CPU as a
        # whole (its receive work and the echo program's softirq run there too),
        # whichever is higher. On loopback the generator's CPU also does the server's
        # receive work, so only the process counts there.
        keys = ("gen_cpu_util", "gen_cores_busy") if netns else ("gen_cpu_util",)
        busy = [result.get(k) for k in keys]
        busy = [b for b in busy if isinstance(b, (int, float))]
        if busy:
            result["gen_busy"] = max(busy)
    entry = {"round": int(rnd), "impl": impl, "scenario": scenario, "rc": int(rc), "result": result}
    with open(results, "a") as f:
        f.write(json.dumps(entry) + "\n")
    if result is None:
        print(f"  {impl:9} no result (exit {rc}); see {outfile[:-4]}.err")
        return
    shown = [f"{key}={fmt(lookup(result, key))}" for s, _, key, *_ in METRICS if s == scenario]
    for key in ("loss_ratio", "gen_busy", "failures", "closed_connections"):
        value = lookup(result, key)
        if value is not None and (value or key != "closed_connections"):
            shown.append(f"{key}={fmt(value)}")
    print(f"  {impl:9} " + " ".join(shown))


def get(results, rnd, impl, scenario, key):
    for e in load(results):
        if (e["round"], e["impl"], e["scenario"]) == (int(rnd), impl, scenario) and e["result"]:
            v = lookup(e["result"], key)
            if v is not None:
                print(v)
                return


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def medians(entries, scenario, impl, key):
    vals = [lookup(e["result"], key) for e in entries
            if e["scenario"] == scenario and e["impl"] == impl and e["result"]]
    vals = [v for v in vals if v is not None]
    return (statistics.median(vals) if vals else None), len(vals)


def notes_for(entries, scenario):
    notes = []
    for impl in ("ferroturn", "kernel", "coturn", "forwarder"):
        loss, _ = medians(entries, scenario, impl, "loss_ratio")
        if loss is not None and loss > 0.01:
            notes.append(f"{impl} loss {loss:.1%}")
        fails, _ = medians(entries, scenario, impl, "failures")
        if fails:
            notes.append(f"{impl} {fails:.0f} failed setups")
        closed, _ = medians(entries, scenario, impl, "closed_connections")
        if closed:
            notes.append(f"{impl} closed {closed:.0f} connections")
        bad = sum(1 for e in entries if e["scenario"] == scenario and e["impl"] == impl
                  and (e["rc"] != 0 or not e["result"]))
        if bad:
            notes.append(f"{impl}: {bad} run(s) failed")
    return "; ".join(notes)


def summarize(outdir):
    entries = load(f"{outdir}/results.jsonl")
    with open(f"{outdir}/machine.json") as f:
        machine = json.load(f)
    rows = []
    noted = set()
    for scenario, what, key, better, *reference in METRICS:
        f, nf = medians(entries, scenario, "ferroturn", key)
        k, nk = medians(entries, scenario, "kernel", key)
        c, nc = medians(entries, scenario, "coturn", key)
        w, _ = medians(entries, scenario, "forwarder", key)
        if f is None and c is None:
            continue
        gens = [medians(entries, scenario, impl, "gen_busy")[0]
                for impl in ("ferroturn", "kernel", "coturn")]
        ref_gen = gens[2]
        if reference:
            ref_gen = medians(entries, reference[0], "coturn", "gen_busy")[0]

        def ratio(x, gx, impl):
            if x is None or not c:
                return "-"
            busy = max((g for g in (gx, ref_gen) if g is not None), default=None)
            if busy is not None and busy > GEN_BUSY_LIMIT:
                return f"none (generator {busy:.0%})"
            r = x / c
            if reference:
                # Median over rounds of this round's value over coturn's in the
                # reference scenario of the same round.
                per_round = []
                for e in entries:
                    if (e["scenario"], e["impl"]) != (scenario, impl) or not e["result"]:
                        continue
                    v = lookup(e["result"], key)
                    base = [lookup(b["result"], key) for b in entries
                            if (b["scenario"], b["impl"], b["round"]) == (reference[0], "coturn", e["round"])
                            and b["result"]]
                    if v is not None and base and base[0]:
                        per_round.append(v / base[0])
                if not per_round:
                    return "-"
                r = statistics.median(per_round)
            return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"

        gen_txt = " / ".join("-" if g is None else f"{g:.0%}" for g in gens)
        better_txt = {"higher": "higher is better", "lower": "lower is better"}.get(better, "")
        notes = notes_for(entries, scenario) if scenario not in noted else ""
        noted.add(scenario)
        rows.append([what, fmt(f), fmt(k) if k is not None else "", fmt(c),
                     ratio(f, gens[0], "ferroturn"),
                     ratio(k, gens[1], "kernel") if k is not None else "",
                     fmt(w) if w is not None else "", gen_txt, better_txt,
                     f"{nf}/{nk}/{nc}", notes])
    head = ["scenario", "ferroturn", "ferroturn kernel", "coturn", "ferroturn/coturn",
            "kernel/coturn", "forwarder (floor)", "generator busy f/k/c", "better",
            "runs f/k/c", "notes"]
    with open(f"{outdir}/skipped.txt") as fh:
        skipped = [line.strip() for line in fh if line.strip()]
    title = (f"ferroturn vs coturn, medians of {machine['rounds']} round(s) "
             f"({'quick' if machine['quick'] else 'full'} mode)")
    info = (f"{machine['nproc']} CPUs ({machine['cpu']}), kernel {machine['kernel']}, "
            f"coturn {machine['coturn']}, ferroturn {machine['ferroturn']}; server on CPU "
            f"{machine['server_cpu']}, generator on CPU {machine['gen_cpu']}, "
            f"{machine['threads']} relay thread(s), fd limit {machine['fd_limit']}; "
            + ("server and generator in two network namespaces over veth, receive work "
               "steered to each side's CPU (RPS)" if machine.get("netns") else "loopback")
            + f"; echo peer: {machine.get('echo', 'user space')}")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print(f"\n{title}\n{info}\n")
    for r in [head] + rows:
        cells = [str(x).rjust(widths[i]) if 0 < i < 8 else str(x).ljust(widths[i])
                 for i, x in enumerate(r)]
        print("  ".join(cells).rstrip())
    for s in skipped:
        print(f"skipped: {s}")
    with open(f"{outdir}/summary.md", "w") as md:
        md.write(f"### {title}\n\n{info}. No ratio is given where the load generator was "
                 f"above {GEN_BUSY_LIMIT:.0%} busy in either server's runs.\n\n")
        md.write("| " + " | ".join(head) + " |\n")
        md.write("|" + "|".join(["---"] + ["---:"] * 7 + ["---"] * 3) + "|\n")
        for r in rows:
            md.write("| " + " | ".join(str(x) for x in r) + " |\n")
        if skipped:
            md.write("\nSkipped:\n\n" + "".join(f"- {s}\n" for s in skipped))
    print(f"\nresults: {outdir}/results.jsonl\nmarkdown: {outdir}/summary.md")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"record": record, "get": get, "summarize": summarize}[cmd](*args)
PYEOF

# The machine, printed and kept with the results.
nproc_n=$(nproc)
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
kernel=$(uname -r)
coturn_version=$(turnserver --version 2>/dev/null | head -n1 || echo unknown)
ft_version="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo -dirty)"
if [ "$nproc_n" -ge 2 ]; then
    server_cpu=0 gen_cpu=1
else
    server_cpu=0 gen_cpu=0
    echo "warning: one CPU only; server and generator share it" >&2
fi
echo "== machine: $nproc_n CPUs, $cpu_model, kernel $kernel, fd limit $fd_limit"
echo "== coturn $coturn_version, ferroturn $ft_version, $rounds round(s), results in $out"

# One port free for UDP and TCP for every server in turn (one runs at a time), one UDP
# port for the echo peer (a thread of the generator, or the TC program); both below the
# relay range.
read -r lport peer_port < <(python3 - <<'EOF'
import socket
def free(port, kinds):
    for kind in kinds:
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True
found = []
for port in range(13478, 19999):
    kinds = [socket.SOCK_DGRAM] + ([socket.SOCK_STREAM] if not found else [])
    if free(port, kinds):
        found.append(port)
    if len(found) == 2:
        break
print(*found)
EOF
)
[ -n "${peer_port:-}" ] || die "no free UDP port between 13478 and 19999"

# With --netns the echo peer is a TC program on the generator's veth: each datagram to
# its port goes straight back, so the generator's one CPU is not spent on a second thread
# receiving and sending every datagram again. It is the same for every server, and its
# work (softirq on the generator's CPU) counts in the generator's busy figure.
echo_mode="user space"
if [ "$netns" = 1 ] && [ "$user_echo" = 0 ]; then
    if ! command -v clang >/dev/null || [ ! -e /usr/include/bpf/bpf_helpers.h ]; then
        echo "== installing clang and libbpf-dev (the echo program)"
        apt-get install -y clang libbpf-dev || { apt-get update && apt-get install -y clang libbpf-dev; }
    fi
    multiarch=$(gcc -print-multiarch 2>/dev/null || true)
    if ! clang -O2 -g -Wall -Werror -target bpf -DECHO_PORT="$peer_port" \
        ${multiarch:+-I "/usr/include/$multiarch"} -c benches/echo.bpf.c -o "$out/echo.bpf.o" 2>"$out/echo.bpf.err"; then
        echo "note: benches/echo.bpf.c did not build (see $out/echo.bpf.err), the echo peer stays in user space"
    elif ! { "${in_gen[@]}" tc qdisc add dev vg clsact &&
        "${in_gen[@]}" tc filter add dev vg ingress bpf direct-action obj "$out/echo.bpf.o" sec tc; } 2>"$out/echo.bpf.err"; then
        echo "note: tc could not attach the echo program (see $out/echo.bpf.err), the echo peer stays in user space"
    else
        echo_mode="TC program on the generator's veth"
    fi
fi
echo "== echo peer: $echo_mode"
M_NPROC=$nproc_n M_CPU=$cpu_model M_KERNEL=$kernel M_COTURN=$coturn_version \
    M_FERROTURN=$ft_version M_ROUNDS=$rounds M_QUICK=$quick M_SERVER_CPU=$server_cpu \
    M_GEN_CPU=$gen_cpu M_THREADS=$threads M_FD_LIMIT=$fd_limit M_NETNS=$netns M_ECHO="$echo_mode" \
    python3 - "$out/machine.json" <<'EOF'
import json, os, sys
e = os.environ
json.dump({"nproc": int(e["M_NPROC"]), "cpu": e["M_CPU"], "kernel": e["M_KERNEL"],
           "coturn": e["M_COTURN"], "ferroturn": e["M_FERROTURN"],
           "rounds": int(e["M_ROUNDS"]), "quick": e["M_QUICK"] == "1",
           "server_cpu": int(e["M_SERVER_CPU"]), "gen_cpu": int(e["M_GEN_CPU"]),
           "threads": int(e["M_THREADS"]), "fd_limit": int(e["M_FD_LIMIT"]),
           "netns": e["M_NETNS"] == "1", "echo": e["M_ECHO"]},
          open(sys.argv[1], "w"))
EOF

ft_threads=()
if "$ft" --help | grep -q -- --relay-threads; then
    ft_threads=(--relay-threads "$threads")
else
    echo "note: this ferroturn has no --relay-threads; it runs its default (one shard)"
fi

relay_ok=0
if "$bench" relay --help 2>/dev/null | grep -q -- --flows; then
    relay_ok=1
fi
# The generator and its echo peer send one datagram per buffer, as clients and peers on
# a network do, to every server alike: a UDP GSO train crosses loopback as one packet as
# far as the receiving socket, which would flatter batching servers and hide every
# datagram from the kernel fast path.
no_gso=()
if "$bench" relay --help 2>/dev/null | grep -q -- --no-gso; then
    no_gso=(--no-gso)
fi
# TURN over TCP needs a generator with --transport and a ferroturn with TCP listeners.
tcp_why=""
if ! "$bench" relay --help 2>/dev/null | grep -q -- --transport; then
    tcp_why="\`ferroturn-bench relay\` has no --transport in this build"
elif ! "$ft" --help | grep -q -- --no-tcp; then
    tcp_why="this ferroturn does not serve TURN over TCP"
fi
# The forwarder's flags, read from its help (it is written separately).
fwd_args=()
fwd_help=$("$bench" forwarder --help 2>/dev/null || true)
if grep -q -- --listen <<<"$fwd_help"; then
    fwd_args=(--listen "$srv_ip:$lport")
    if grep -q -- --peer-port <<<"$fwd_help"; then
        fwd_args+=(--peer-port "$peer_port")
    elif grep -q -- --peer <<<"$fwd_help"; then
        fwd_args+=(--peer "$gen_ip:$peer_port")
    fi
fi

skip() {
    echo "skipped: $*"
    grep -qxF -- "$*" "$out/skipped.txt" || echo "$*" >>"$out/skipped.txt"
}

selected() {
    [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]
}

# The server being measured: started by us, stopped by its pid only.
server_pid=""
# Whether the next server also listens on TCP (the TCP scenario sets it).
server_tcp=0

alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ "$state" != Z* ]]
}

stop_server() {
    [ -n "$server_pid" ] || return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do
        alive "$server_pid" || break
        sleep 0.1
    done
    alive "$server_pid" && kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}
trap 'stop_server; cleanup_ns' EXIT
trap 'exit 130' INT TERM

# Starts a fresh `impl` pinned to the server CPU and waits until it listens.
start_server() {
    local impl=$1 log=$2
    case "$impl" in
    ferroturn | kernel)
        # "kernel": the same, with channels relayed by the eBPF program.
        local offload=()
        [ "$impl" = kernel ] && offload=(--kernel-offload on)
        "${in_srv[@]}" taskset -c "$server_cpu" "$ft" --listening-ip "$srv_ip" --listening-port "$lport" \
            --realm "$realm" --static-auth-secret "$secret" --allowed-peer-ip "$gen_ip" \
            --min-port "$min_port" --max-port "$max_port" --log-level warn --max-bps 0 \
            "${offload[@]}" "${ft_threads[@]}" >"$log" 2>&1 &
        ;;
    coturn)
        local listeners=(--no-tls --no-dtls)
        [ "$server_tcp" = 1 ] || listeners+=(--no-tcp)
        # coturn 4.6 has no log level: its per-session lines go to /dev/null.
        "${in_srv[@]}" taskset -c "$server_cpu" turnserver -n --no-cli --listening-ip="$srv_ip" \
            --listening-port="$lport" --relay-ip="$srv_ip" --realm="$realm" \
            --use-auth-secret --static-auth-secret="$secret" --allow-loopback-peers \
            --min-port="$min_port" --max-port="$max_port" --relay-threads="$threads" \
            "${listeners[@]}" --pidfile="$out/coturn.pid" \
            --no-stdout-log --log-file=/dev/null --simple-log >"$log" 2>&1 &
        ;;
    forwarder)
        "${in_srv[@]}" taskset -c "$server_cpu" "$bench" forwarder "${fwd_args[@]}" >"$log" 2>&1 &
        ;;
    esac
    server_pid=$!
    for _ in $(seq 100); do
        alive "$server_pid" || return 1
        if "${in_srv[@]}" ss -Hlun "sport = :$lport" 2>/dev/null | grep -q . &&
            { [ "$server_tcp" = 0 ] || "${in_srv[@]}" ss -Hltn "sport = :$lport" 2>/dev/null | grep -q .; }; then
            sleep 0.2
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# run ROUND IMPL SCENARIO TIME_LIMIT ferroturn-bench-args...: one measurement against a
# fresh server; the result goes to results.jsonl.
run() {
    local round=$1 impl=$2 scenario=$3 limit=$4
    shift 4
    local tag="$out/raw/r$round-$scenario-$impl"
    local target=(--server "$srv_ip:$lport")
    [ "$1" = flood ] || target+=(--secret "$secret")
    if [ "$impl" = forwarder ]; then
        target+=(--raw "$srv_ip:$lport")
    fi
    local rc=0
    if start_server "$impl" "$tag.server.log"; then
        timeout -k 5 "$limit" "${in_gen[@]}" taskset -c "$gen_cpu" "$bench" "$@" "${target[@]}" \
            --server-pid "$server_pid" --json >"$tag.out" 2>"$tag.err" || rc=$?
    else
        rc=1
        echo "$impl did not start; see $tag.server.log" >"$tag.err"
        : >"$tag.out"
    fi
    stop_server
    python3 "$py" record "$results" "$round" "$impl" "$scenario" "$rc" "$tag.out"
}

relay_time=$((duration + warmup + 30))
# Round trips timed to the reply's kernel receive time as well, on the paced rows (the
# stamps cost the generator CPU a flood cannot spare).
arrival=()
relay_help=$("$bench" relay --help 2>/dev/null || true)
grep -q -- --arrival-times <<<"$relay_help" && arrival=(--arrival-times)
relay_impls=(ferroturn)
# The kernel fast path: root, the bpf system call and a build with the eBPF program.
kernel_why=""
if ! "$ft" --help | grep -q -- --kernel-offload; then
    kernel_why="this ferroturn has no --kernel-offload"
elif [ "$(id -u)" != 0 ]; then
    kernel_why="kernel offload needs root (CAP_BPF, CAP_NET_ADMIN)"
fi
if [ -z "$kernel_why" ]; then
    relay_impls+=(kernel)
else
    skip "ferroturn kernel rows: $kernel_why"
fi
relay_impls+=(coturn)
if [ "$relay_ok" = 1 ]; then
    if [ ${#fwd_args[@]} -gt 0 ]; then
        relay_impls+=(forwarder)
    else
        skip "forwarder (kernel floor): \`ferroturn-bench forwarder\` takes no --listen yet"
    fi
fi

relay_scenario() {
    local round=$1 scenario=$2
    shift 2
    selected "$scenario" || return 0
    if [ "$relay_ok" = 0 ]; then
        skip "$scenario: \`ferroturn-bench relay\` is not implemented in this build (no --flows)"
        return 0
    fi
    echo "[round $round] $scenario"
    for impl in "${relay_impls[@]}"; do
        run "$round" "$impl" "$scenario" "$relay_time" relay "$@" \
            --duration "$duration" --warmup "$warmup" "${no_gso[@]}" "${gen_addrs[@]}" \
            --peer-port "$peer_port"
    done
}

# TURN over TCP between generator and server (each flow one connection, ChannelData
# padded), UDP to the echo peer; ferroturn and coturn, both listening on TCP.
tcp_scenario() {
    local round=$1 scenario=$2
    shift 2
    selected "$scenario" || return 0
    if [ -n "$tcp_why" ]; then
        skip "$scenario: $tcp_why"
        return 0
    fi
    echo "[round $round] $scenario"
    server_tcp=1
    for impl in ferroturn coturn; do
        run "$round" "$impl" "$scenario" "$relay_time" relay --transport tcp "$@" \
            --duration "$duration" --warmup "$warmup" "${gen_addrs[@]}" --peer-port "$peer_port"
    done
    server_tcp=0
}

server_scenario() {
    local round=$1 scenario=$2 limit=$3
    shift 3
    selected "$scenario" || return 0
    if [ "$netns" = 1 ]; then
        skip "$scenario: relay scenarios only with --netns (the setup and flood tools use loopback source addresses)"
        return 0
    fi
    echo "[round $round] $scenario"
    for impl in ferroturn coturn; do
        run "$round" "$impl" "$scenario" "$limit" "$@"
    done
}

held_scenario() {
    local round=$1 scenario=$2 count=$3
    selected "$scenario" || return 0
    if [ "$fd_limit" -lt $((count + 1000)) ]; then
        skip "$scenario: RLIMIT_NOFILE is $fd_limit, below $count + 1000 (the server and the generator each hold one socket per allocation; raising the hard limit needs CAP_SYS_RESOURCE)"
        return 0
    fi
    server_scenario "$round" "$scenario" $((hold + 180)) setup --count "$count" --hold "$hold"
}

setup_count=$((setup_count < fd_limit - 1000 ? setup_count : fd_limit - 1000))
for round in $(seq "$rounds"); do
    echo "== round $round of $rounds"
    relay_scenario "$round" relay-1x200 --flows 1 --size 200 --mode flood
    relay_scenario "$round" relay-64x200 --flows 64 --size 200 --mode flood
    if selected relay-2x && [ "$relay_ok" = 1 ]; then
        # 2.2 times coturn's 64-flow 200 B flood rate of this round, per flow, in bursts
        # of 16 (the generator's cost per datagram then stays near a flood's).
        cmax=$(python3 "$py" get "$results" "$round" coturn relay-64x200 round_trips_per_s)
        if [ -n "$cmax" ]; then
            pps=$(python3 -c "print(max(16, int(2.2 * $cmax / 64)))")
            relay_scenario "$round" relay-2x --flows 64 --size 200 --mode paced --pps "$pps" --burst 16
        else
            skip "relay-2x: needs coturn's relay-64x200 result of the same round"
        fi
    fi
    relay_scenario "$round" relay-1x1200 --flows 1 --size 1200 --mode flood
    relay_scenario "$round" relay-64x1200 --flows 64 --size 1200 --mode flood
    relay_scenario "$round" relay-cpu --flows 200 --size 200 --mode paced --pps 50 "${arrival[@]}"
    if selected relay-half && [ "$relay_ok" = 1 ]; then
        # Half of ferroturn's 64-flow 200 B flood rate of this round, per flow.
        max=$(python3 "$py" get "$results" "$round" ferroturn relay-64x200 round_trips_per_s)
        if [ -n "$max" ]; then
            pps=$(python3 -c "print(max(1, int($max / 2 / 64)))")
            relay_scenario "$round" relay-half --flows 64 --size 200 --mode paced --pps "$pps" --burst 4 "${arrival[@]}"
        else
            skip "relay-half: needs ferroturn's relay-64x200 result of the same round"
        fi
    elif selected relay-half; then
        skip "relay-half: \`ferroturn-bench relay\` is not implemented in this build (no --flows)"
    fi
    tcp_scenario "$round" relay-tcp-64x200 --flows 64 --size 200 --mode flood
    server_scenario "$round" setup 180 setup --count "$setup_count" --concurrency 64
    held_scenario "$round" idle-10k 10000
    held_scenario "$round" idle-30k 30000
    # 2000 source ports on one address, then 2000 addresses (what spoofed sources look
    # like to a per-IP limit).
    server_scenario "$round" flood 120 flood --requests "$flood_requests" --rate "$flood_rate" \
        --sources 2000
    server_scenario "$round" flood-ips 120 flood --requests "$flood_requests" \
        --rate "$flood_rate" --sources 2000 --source-ips 2000
done

python3 "$py" summarize "$out"
echo "== done in ${SECONDS} s"
