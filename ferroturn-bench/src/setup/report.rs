//! What `setup` measured: setups and their latencies, the CPU both sides spent, the
//! server's memory at each step; printed as one line and, with `--json`, one object.

use super::Args;
use std::collections::BTreeMap;
use std::time::Duration;

/// CPU seconds spent during the setups, by the generator and by the server.
pub(super) struct Cpu {
    pub own: Option<f64>,
    pub server: Option<f64>,
}

/// The server's RSS at each step, and how the release went (released, failed).
pub(super) struct Memory {
    pub before: Option<u64>,
    pub after: Option<u64>,
    pub held: Option<u64>,
    pub released: Option<u64>,
    pub release: (u32, u32),
}

#[derive(Default)]
pub(super) struct Stats {
    pub ok: u32,
    pub latencies_us: Vec<u64>,
    pub failures: BTreeMap<String, u32>,
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

pub(super) fn report(args: &Args, stats: &Stats, elapsed: Duration, cpu: Cpu, mem: Memory) {
    let mut lat = stats.latencies_us.clone();
    lat.sort_unstable();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = f64::from(stats.ok) / secs;
    let (p50, p99, max) = (
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 1.0),
    );
    let failed: u32 = stats.failures.values().sum();
    let codes: Vec<String> = stats
        .failures
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    let peak = mem.held.or(mem.after);
    let per_alloc = match (mem.before, peak) {
        (Some(b), Some(p)) if stats.ok > 0 => Some((p as f64 - b as f64) / f64::from(stats.ok)),
        _ => None,
    };
    let server_us = cpu
        .server
        .filter(|_| stats.ok > 0)
        .map(|s| s * 1e6 / f64::from(stats.ok));
    let gen_util = cpu.own.map(|c| c / secs);
    let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0}"));
    println!(
        "setup: count={} ok={} setups_per_s={rate:.1} p50_ms={p50:.3} p99_ms={p99:.3} \
         failures={failed}{} rss_per_alloc_bytes={} server_cpu_us_per_setup={} gen_cpu_util={}",
        args.count,
        stats.ok,
        if codes.is_empty() {
            String::new()
        } else {
            format!(" ({})", codes.join(","))
        },
        opt(per_alloc),
        opt(server_us),
        gen_util.map_or("n/a".to_owned(), |u| format!("{u:.2}")),
    );
    if args.json {
        let json = serde_json::json!({
            "scenario": "setup",
            "server": args.server.to_string(),
            "count": args.count,
            "concurrency": args.concurrency,
            "ok": stats.ok,
            "failures": failed,
            "failure_codes": stats.failures,
            "elapsed_s": secs,
            "setups_per_s": rate,
            "latency_ms": { "p50": p50, "p99": p99, "max": max },
            "p50_ms": p50,
            "p99_ms": p99,
            "server_cpu_us_per_setup": server_us,
            "gen_cpu_util": gen_util,
            "hold_s": args.hold,
            "rss_before_bytes": mem.before,
            "rss_after_bytes": mem.after,
            "rss_held_bytes": mem.held,
            "rss_released_bytes": mem.released,
            "rss_per_alloc_bytes": per_alloc,
            "released": mem.release.0,
            "release_failures": mem.release.1,
        });
        println!("{json}");
    }
}
