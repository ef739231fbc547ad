//! Measurements, from outside the server: resident memory, file descriptors, relay
//! sockets, connections, threads, and the gauges and counters the shards publish.

use super::*;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    pub(crate) rss_kib: u64,
    pub(crate) fds: usize,
    pub(crate) relay_sockets: usize,
    pub(crate) connections: usize,
    pub(crate) threads: u64,
    /// The shards' published gauges (`metrics()`, refreshed once a second).
    pub(crate) allocations: u64,
    pub(crate) permissions: u64,
    pub(crate) channels: u64,
    /// The shards' counters: allocations created, and ended by expiry or deletion.
    pub(crate) created: u64,
    pub(crate) ended: u64,
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rss={:.1} MiB ({} KiB) fds={} relay-ports={} connections={} threads={} \
             allocations={} permissions={} channels={} (created {}, ended {})",
            self.rss_kib as f64 / 1024.0,
            self.rss_kib,
            self.fds,
            self.relay_sockets,
            self.connections,
            self.threads,
            self.allocations,
            self.permissions,
            self.channels,
            self.created,
            self.ended,
        )
    }
}

/// The inodes of this process's sockets.
fn socket_inodes() -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd") {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse().ok())
        {
            inodes.insert(inode);
        }
    }
    inodes
}

/// This process's UDP sockets bound to a port in the relay range. /proc/self/net/udp
/// lists the whole network namespace, so sockets are matched to ours by inode.
fn relay_sockets() -> usize {
    let ours = socket_inodes();
    let mut n = 0;
    for table in ["/proc/self/net/udp", "/proc/self/net/udp6"] {
        // udp6 is absent when IPv6 is off.
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else {
                continue;
            };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let inode: Option<u64> = inode.parse().ok();
            if let (Some(port), Some(inode)) = (port, inode) {
                if (MIN_PORT..=MAX_PORT).contains(&port) && ours.contains(&inode) {
                    n += 1;
                }
            }
        }
    }
    n
}

fn open_fds() -> usize {
    // The directory's own descriptor is counted too, the same at every measurement.
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

fn snapshot(server: &TestServer) -> Snapshot {
    let m = server.handle.metrics();
    Snapshot {
        rss_kib: status_field("VmRSS:"),
        fds: open_fds(),
        relay_sockets: relay_sockets(),
        connections: server.handle.connection_count(),
        threads: status_field("Threads:"),
        allocations: m.gauges.allocations,
        permissions: m.gauges.permissions,
        channels: m.gauges.channels,
        created: m.stats.allocations_created,
        ended: m.stats.allocations_expired + m.stats.allocations_deleted,
    }
}

/// Waits (bounded) until no connection and no relay socket is left, then measures.
/// Past the limit it measures anyway, and the caller's assertions say what is left.
pub(crate) async fn drain(ctx: &Ctx) -> Snapshot {
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let idle = ctx.server.handle.connection_count() == 0
            && relay_sockets() == 0
            && ctx.server.handle.metrics().gauges.allocations == 0;
        if idle || Instant::now() >= deadline {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    // Every allocation is gone: the parked clients' ports may be reused now.
    if let Ok(mut parked) = ctx.parked.lock() {
        parked.clear();
    }
    // Every shard publishes its gauges and counters once more (once a second).
    sleep(Duration::from_millis(1300)).await;
    snapshot(&ctx.server)
}
