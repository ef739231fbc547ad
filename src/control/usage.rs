//! Usage records on the operator side: each ended allocation's record (the core's
//! [`Usage`] with what the kernel fast path relayed added) is logged under the target
//! `ferroturn::usage` and, with `usage-webhook`, handed to the webhook's bounded queue
//! with `try_send`: a shard never waits for it, and a full queue drops the record and
//! counts it. The webhook itself (HTTP, retries) runs on a thread of its own
//! (`crate::webhook`); the counters both sides keep are here, for `/metrics`.

use ferroturn_core::server::stats::Traffic;
use ferroturn_core::server::{Deletion, Usage};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc::{Sender, error::TrySendError};

/// One ended allocation, as logged and as POSTed to the webhook (the JSON schema of
/// README.md's "Usage records").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    /// Unique per record (this process's random prefix and a counter): a receiver
    /// dedupes retried deliveries by it.
    pub id: String,
    pub user: String,
    pub username: String,
    pub realm: String,
    pub client: SocketAddr,
    /// The client's transport: `udp`, `tcp`, `tls` or `dtls`.
    pub transport: &'static str,
    /// What the relay speaks to peers: `udp`, or `tcp` for an RFC 6062 allocation.
    pub relay_transport: &'static str,
    pub relayed: SocketAddr,
    /// A dual allocation's IPv6 relayed address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_relayed: Option<SocketAddr>,
    /// RFC 3339, UTC, whole seconds.
    pub start: String,
    pub start_unix: u64,
    pub duration_ms: u64,
    pub client_to_peer_packets: u64,
    pub client_to_peer_bytes: u64,
    pub peer_to_client_packets: u64,
    pub peer_to_client_bytes: u64,
    /// Why it ended: `expired`, `client`, `connection_closed`, `operator`, `revoked`,
    /// `shutdown`.
    pub reason: &'static str,
    #[serde(skip)]
    pub why: Deletion,
}

impl UsageRecord {
    /// The record of `u`, whose client came over `transport`, with `kernel` (client to
    /// peer, peer to client) relayed by the kernel fast path added. `id` is set when the
    /// record is written.
    pub fn new(u: &Usage, transport: &'static str, kernel: [Traffic; 2]) -> Self {
        let mut traffic = u.traffic;
        for (t, k) in traffic.iter_mut().zip(kernel) {
            t.add(k);
        }
        let start = UNIX_EPOCH + Duration::from_secs(u.start_unix);
        Self {
            id: String::new(),
            user: u.user.clone(),
            username: u.username.clone(),
            realm: u.realm.clone(),
            client: u.five_tuple.client,
            transport,
            relay_transport: if u.tcp { "tcp" } else { "udp" },
            relayed: u.relays.first.relayed,
            additional_relayed: u.relays.second.map(|r| r.relayed),
            start: humantime::format_rfc3339_seconds(start).to_string(),
            start_unix: u.start_unix,
            duration_ms: u64::try_from(u.duration.as_millis()).unwrap_or(u64::MAX),
            client_to_peer_packets: traffic[0].packets,
            client_to_peer_bytes: traffic[0].bytes,
            peer_to_client_packets: traffic[1].packets,
            peer_to_client_bytes: traffic[1].bytes,
            reason: u.reason.name(),
            why: u.reason,
        }
    }
}

/// Why a record did not reach the webhook (the `reason` label of
/// `ferroturn_usage_records_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageDrop {
    /// The queue was full: the webhook has not kept up or does not answer.
    QueueFull,
    /// The receiver refused the batch (a 4xx other than 408 and 429): not retried.
    Rejected,
    /// Still queued or unsent when the server stopped and its flush time was up.
    Shutdown,
}

impl UsageDrop {
    pub const ALL: [UsageDrop; 3] = [Self::QueueFull, Self::Rejected, Self::Shutdown];

    pub fn name(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Rejected => "rejected",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What happened to usage records, counted by the shards and the webhook.
#[derive(Debug, Default)]
pub struct UsageCounters {
    /// Written, by reason (indexed like [`Deletion::ALL`]).
    written: [AtomicU64; Deletion::ALL.len()],
    /// Acknowledged by the webhook (a 2xx answer to their batch).
    delivered: AtomicU64,
    /// Webhook requests that failed and were tried again.
    retries: AtomicU64,
    /// Not delivered, by reason (indexed like [`UsageDrop::ALL`]).
    dropped: [AtomicU64; UsageDrop::ALL.len()],
}

/// A snapshot of [`UsageCounters`] for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub written: [u64; Deletion::ALL.len()],
    pub delivered: u64,
    pub retries: u64,
    pub dropped: [u64; UsageDrop::ALL.len()],
    /// Records waiting for the webhook now; `None` without a webhook.
    pub queued: Option<u64>,
}

impl UsageTotals {
    /// Records not delivered for `reason`.
    pub fn dropped_for(&self, reason: UsageDrop) -> u64 {
        let i = UsageDrop::ALL.iter().position(|r| *r == reason);
        i.map_or(0, |i| self.dropped[i])
    }

    /// Records written for `why`.
    pub fn written_for(&self, why: Deletion) -> u64 {
        let i = Deletion::ALL.iter().position(|r| *r == why);
        i.map_or(0, |i| self.written[i])
    }
}

impl UsageCounters {
    pub fn delivered(&self, n: usize) {
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: UsageDrop, n: usize) {
        if let Some(i) = UsageDrop::ALL.iter().position(|r| *r == reason) {
            self.dropped[i].fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn written(&self, why: Deletion) {
        if let Some(i) = Deletion::ALL.iter().position(|r| *r == why) {
            self.written[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> UsageTotals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UsageTotals {
            written: self.written.each_ref().map(load),
            delivered: load(&self.delivered),
            retries: load(&self.retries),
            dropped: self.dropped.each_ref().map(load),
            queued: None,
        }
    }
}

/// Where the shards write usage records: the log, and the webhook's queue if there is
/// one. Shared by every shard and the control side.
pub struct UsageSink {
    queue: Option<Sender<UsageRecord>>,
    counters: std::sync::Arc<UsageCounters>,
    /// This process's record id prefix (random), and the records written so far.
    prefix: u64,
    seq: AtomicU64,
}

impl UsageSink {
    /// Records go to the log, and to `queue` when there is a webhook; `prefix` makes
    /// their ids unique beyond this process.
    pub fn new(
        queue: Option<Sender<UsageRecord>>,
        counters: std::sync::Arc<UsageCounters>,
        prefix: u64,
    ) -> Self {
        Self {
            queue,
            counters,
            prefix,
            seq: AtomicU64::new(0),
        }
    }

    /// Logs `record` and hands it to the webhook's queue without waiting: a full queue
    /// drops it (counted).
    pub fn write(&self, mut record: UsageRecord) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        record.id = format!("{:016x}-{seq}", self.prefix);
        self.counters.written(record.why);
        log(&record);
        let Some(queue) = &self.queue else {
            return;
        };
        match queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.counters.dropped(UsageDrop::QueueFull, 1),
            Err(TrySendError::Closed(_)) => self.counters.dropped(UsageDrop::Shutdown, 1),
        }
    }

    /// The counters, and how many records wait for the webhook now.
    pub fn totals(&self) -> UsageTotals {
        let mut t = self.counters.snapshot();
        t.queued = self
            .queue
            .as_ref()
            .map(|q| (q.max_capacity() - q.capacity()) as u64);
        t
    }
}

/// The record as one log line (with `--log-format json`, one object with these fields).
fn log(r: &UsageRecord) {
    tracing::info!(
        target: "ferroturn::usage",
        id = %r.id,
        user = %r.user,
        username = %r.username,
        realm = %r.realm,
        client = %r.client,
        transport = r.transport,
        relay_transport = r.relay_transport,
        relayed = %r.relayed,
        additional_relayed = r.additional_relayed.map(tracing::field::display),
        start = %r.start,
        start_unix = r.start_unix,
        duration_ms = r.duration_ms,
        client_to_peer_packets = r.client_to_peer_packets,
        client_to_peer_bytes = r.client_to_peer_bytes,
        peer_to_client_packets = r.peer_to_client_packets,
        peer_to_client_bytes = r.peer_to_client_bytes,
        reason = r.reason,
        "allocation {}",
        r.why.describe()
    );
}
