//! The result: one summary line, and with `--json` one JSON object line, on stdout.

use super::stats::Outcome;
use std::fmt::Write;

pub struct Labels {
    pub mode: &'static str,
    pub path: &'static str,
    /// "udp" or "tcp" between the generator and the server.
    pub transport: &'static str,
    pub flows: usize,
    pub size: usize,
}

/// Derived figures; `None` where unknown (no window, no server pid, no replies).
struct Figures {
    loss_ratio: Option<f64>,
    rt_per_s: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    p999: Option<f64>,
    max: Option<f64>,
    /// Round-trip time to the reply's kernel receive time (UDP).
    arrival_p50: Option<f64>,
    arrival_p99: Option<f64>,
    arrival_p999: Option<f64>,
    server_us_per_rt: Option<f64>,
    gen_util: Option<f64>,
    /// Every CPU's busy time per round trip: server, generator, echo peer and kernel.
    machine_us_per_rt: Option<f64>,
    gen_cores_busy: Option<f64>,
    /// The server's CPUs' busy time per round trip, softirq included.
    server_cores_us_per_rt: Option<f64>,
}

fn figures(o: &Outcome) -> Figures {
    let us = |ns: Option<u64>| ns.map(|v| v as f64 / 1000.0);
    let rt_per_s = (o.window_s > 0.0).then(|| o.window_replies as f64 / o.window_s);
    Figures {
        loss_ratio: (o.sent > 0).then(|| o.lost as f64 / o.sent as f64),
        rt_per_s,
        p50: us(o.rtt.quantile(0.50)),
        p99: us(o.rtt.quantile(0.99)),
        p999: us(o.rtt.quantile(0.999)),
        max: us(o.rtt.max()),
        arrival_p50: us(o.rtt_arrival.quantile(0.50)),
        arrival_p99: us(o.rtt_arrival.quantile(0.99)),
        arrival_p999: us(o.rtt_arrival.quantile(0.999)),
        server_us_per_rt: match (o.server_cpu_s, o.window_replies) {
            (Some(s), n) if n > 0 => Some(s * 1e6 / n as f64),
            _ => None,
        },
        gen_util: (o.window_s > 0.0).then(|| o.gen_cpu_s / o.window_s),
        machine_us_per_rt: match (o.machine_cpu_s, o.window_replies) {
            (Some(s), n) if n > 0 => Some(s * 1e6 / n as f64),
            _ => None,
        },
        gen_cores_busy: o.gen_cores_busy.map(|(busy, _)| busy),
        server_cores_us_per_rt: match (o.server_cores_cpu_s, o.window_replies) {
            (Some(s), n) if n > 0 => Some(s * 1e6 / n as f64),
            _ => None,
        },
    }
}

fn text(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "n/a".into(),
    }
}

fn json(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "null".into(),
    }
}

pub fn summary(l: &Labels, o: &Outcome) -> String {
    let f = figures(o);
    format!(
        "relay: flows={} size={} mode={} transport={} rt_per_s={} loss={}% p50_us={} p99_us={} p999_us={} \
         arrival_p50_us={} arrival_p99_us={} server_cpu_us_per_rt={} gen_cpu={}%",
        l.flows,
        l.size,
        l.mode,
        l.transport,
        text(f.rt_per_s, 0),
        text(f.loss_ratio.map(|r| r * 100.0), 2),
        text(f.p50, 0),
        text(f.p99, 0),
        text(f.p999, 0),
        text(f.arrival_p50, 0),
        text(f.arrival_p99, 0),
        text(f.server_us_per_rt, 2),
        text(f.gen_util.map(|u| u * 100.0), 0),
    )
}

pub fn json_line(l: &Labels, o: &Outcome) -> String {
    let f = figures(o);
    let mut s = String::with_capacity(512);
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "{{\"mode\":\"{}\",\"flows\":{},\"size\":{},\"duration_s\":{},\"sent\":{},\"received\":{},\
         \"lost\":{},\"loss_ratio\":{},\"round_trips_per_s\":{},\"rtt_us\":{{\"p50\":{},\"p99\":{},\
         \"p999\":{},\"max\":{}}},\"rtt_arrival_us\":{{\"p50\":{},\"p99\":{},\"p999\":{}}},\
         \"server_cpu_s\":{},\"server_cpu_us_per_round_trip\":{},\
         \"gen_cpu_s\":{},\"gen_cpu_util\":{},\"gen_cores_busy\":{},\"machine_cpu_s\":{},\
         \"machine_cpu_us_per_round_trip\":{},\"server_core_cpu_us_per_round_trip\":{},\"path\":\"{}\",\"transport\":\"{}\",\
         \"closed_connections\":{}}}",
        l.mode,
        l.flows,
        l.size,
        json(Some(o.window_s), 3),
        o.sent,
        o.received,
        o.lost,
        json(f.loss_ratio, 6),
        json(f.rt_per_s, 1),
        json(f.p50, 1),
        json(f.p99, 1),
        json(f.p999, 1),
        json(f.max, 1),
        json(f.arrival_p50, 1),
        json(f.arrival_p99, 1),
        json(f.arrival_p999, 1),
        json(o.server_cpu_s, 3),
        json(f.server_us_per_rt, 3),
        json(Some(o.gen_cpu_s), 3),
        json(f.gen_util, 3),
        json(f.gen_cores_busy, 3),
        json(o.machine_cpu_s, 3),
        json(f.machine_us_per_rt, 3),
        json(f.server_cores_us_per_rt, 3),
        l.path,
        l.transport,
        o.closed,
    );
    s
}

/// What limited the generator, for stderr: its thread and process CPU over the window,
/// how busy its cores were (softirq included), and the events worth a look.
pub fn diagnostics(o: &Outcome) -> String {
    let share = |s: f64| 100.0 * s / o.window_s.max(1e-9);
    let cores = o.gen_cores_busy.map_or(String::new(), |(busy, softirq)| {
        format!(
            "; its cores busy {:.0}% (softirq {:.0}%)",
            100.0 * busy,
            100.0 * softirq
        )
    });
    format!(
        "relay: generator thread cpu {:.0}% of the window, whole process {:.0}%{cores}; \
         icmp refused {}, schedule slips {}, connections closed {}, refreshes {} ok {} failed, \
         arrival times misplaced {}",
        share(o.gen_thread_cpu_s),
        share(o.gen_cpu_s),
        o.refused,
        o.slips,
        o.closed,
        o.refreshes,
        o.refresh_failures,
        o.arrival_misplaced
    )
}
