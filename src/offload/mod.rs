//! The kernel fast path for channel traffic over UDP (issue 11, item 2).
//!
//! Once a UDP client has bound a channel, an eBPF program on TC ingress (`bpf/relay.bpf.c`)
//! rewrites ChannelData from the client into the bare payload from the relayed address
//! to the peer, and the peer's datagrams to the relayed address into ChannelData from the
//! listening address to the client, without waking user space. User space stays the only
//! authority: [`Offload::install`] adds a channel after the peer policy and quotas have
//! said yes, [`Offload::remove`] takes it away; whatever has no entry (Send and Data
//! indications, TCP and TLS clients, fragments, IP options, IPv6 extension headers,
//! padded ChannelData, unknown channels) reaches the sockets as before.
//!
//! `max-bps` and `bps-capacity` hold in the kernel too ([`Offload::set_allocation_rate`],
//! [`Offload::set_capacity`]), and the counters come back per channel
//! ([`Offload::counters`]) and in total ([`Offload::totals`]).
//!
//! The loader is [aya] rather than libbpf-rs: aya is pure Rust (it parses the object,
//! relocates maps and speaks the bpf(2) and netlink system calls itself), so no C library
//! has to be built or linked, and the server still builds on a machine without clang,
//! libelf or libbpf; only the program's object file needs clang, and build.rs leaves it
//! out when clang is missing.

mod error;
mod host;
mod maps;

pub use error::OffloadError;
pub use maps::MAX_PAYLOAD;

use crate::config::KernelOffload;
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use ferroturn_core::proto::data::{CHANNEL_MAX, CHANNEL_MIN};
use maps::{
    BPF_F_LOCK, BPF_NOEXIST, ChanDown, ChanKey, ChanUp, DELIVER_LOCAL, PeerKey, RateKey, RateState,
    ip_words, port, stat,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Map sizes (fixed when the program loads) and the server-wide rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Channels the kernel relays at once (each a client -> peer and a peer -> client
    /// entry); installing more fails with [`OffloadError::Full`].
    pub channels: u32,
    /// Allocations with a `max-bps` rate at once.
    pub allocations: u32,
    /// `bps-capacity`: bytes per second per direction for the whole server, 0 unlimited.
    pub bps_capacity: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            channels: 65_536,
            allocations: 65_536,
            bps_capacity: 0,
        }
    }
}

/// Rates above this (bytes per second, 72 Gbit/s) are capped so the program's
/// nano-byte arithmetic stays within 64 bits.
pub const MAX_RATE: u64 = 9_000_000_000;

/// A channel as the kernel relays it: ChannelData `channel` from `client` to the
/// listening address `server` goes from `relay` (the allocation's relayed transport
/// address) to `peer`, and back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OffloadedChannel {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub channel: u16,
    pub relay: SocketAddr,
    pub peer: SocketAddr,
}

/// Datagrams and payload bytes (ChannelData header not counted, as user space counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub packets: u64,
    pub bytes: u64,
}

/// What the kernel relayed on one channel since it was installed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelCounters {
    /// Client to peer.
    pub up: Flow,
    /// Peer to client.
    pub down: Flow,
}

/// One direction's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionTotals {
    pub relayed: Flow,
    /// Dropped over an allocation's `max-bps`.
    pub dropped_rate: u64,
    /// Dropped over `bps-capacity`.
    pub dropped_capacity: u64,
}

/// Datagrams of installed channels the kernel left to user space, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassedToUserSpace {
    /// The ChannelData length did not fill the UDP payload exactly (padding).
    pub malformed: u64,
    /// Payload over [`MAX_PAYLOAD`].
    pub too_big: u64,
    /// A local destination, but the datagram arrived on an interface other than lo.
    pub not_loopback: u64,
    /// No unicast route to the destination.
    pub no_route: u64,
    /// Over the route's MTU.
    pub frag_needed: u64,
    /// Forwarding off on lo.
    pub forwarding_disabled: u64,
}

/// Everything the program counted, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadTotals {
    pub up: DirectionTotals,
    pub down: DirectionTotals,
    pub passed: PassedToUserSpace,
    /// Dropped because a helper failed half way through a rewrite.
    pub dropped_errors: u64,
}

/// The loaded and attached program and its maps. Shared by every shard (`Send + Sync`;
/// map updates take a short lock each). Dropping it detaches the program everywhere.
pub struct Offload {
    ebpf: Mutex<Ebpf>,
    up: Mutex<HashMap<MapData, ChanKey, ChanUp>>,
    down: Mutex<HashMap<MapData, PeerKey, ChanDown>>,
    rates: Mutex<HashMap<MapData, RateKey, RateState>>,
    capacity: Mutex<Array<MapData, RateState>>,
    stats: PerCpuArray<MapData, u64>,
    local: Mutex<host::LocalAddrs>,
    interfaces: Vec<String>,
    installed: AtomicU64,
}

// Shards share one Offload.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Offload>();
};

/// The object file build.rs compiled, if it could.
#[cfg(ferroturn_bpf)]
fn object() -> Result<&'static [u8], OffloadError> {
    Ok(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/relay.bpf.o"
    )))
}

#[cfg(not(ferroturn_bpf))]
fn object() -> Result<&'static [u8], OffloadError> {
    Err(OffloadError::NotBuilt(env!("FERROTURN_BPF_MISSING")))
}

/// Whether this binary carries the eBPF program (build.rs found clang and libbpf's
/// headers).
pub fn built_with_program() -> bool {
    cfg!(ferroturn_bpf)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves the map itself consistent (the
    // kernel owns it), so the poison flag carries no information.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Offload {
    /// Loads the program and attaches it to TC ingress of every interface that carries
    /// one of `addrs` (listening and relayed addresses, wildcards for every interface of
    /// their family) and of lo, in the calling thread's network namespace.
    ///
    /// `Off` returns `Ok(None)`. `Auto` returns `Ok(None)` after one log line when the
    /// build, the kernel or the capabilities do not allow it; `On` returns that as the
    /// error.
    pub fn start(
        mode: KernelOffload,
        addrs: &[IpAddr],
        limits: Limits,
    ) -> Result<Option<Offload>, OffloadError> {
        let result = match mode {
            KernelOffload::Off => return Ok(None),
            KernelOffload::Auto | KernelOffload::On => Self::load(addrs, limits),
        };
        match (result, mode) {
            (Ok(offload), _) => {
                let fwd = |ip: IpAddr| {
                    if host::lo_forwarding(ip) { "on" } else { "off" }
                };
                tracing::info!(
                    "kernel offload on: TC ingress of {}; lo forwarding ipv4 {}, ipv6 {} \
                     (off: channels to other hosts stay in user space)",
                    offload.interfaces.join(", "),
                    fwd(IpAddr::from([127, 0, 0, 1])),
                    fwd(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])),
                );
                Ok(Some(offload))
            }
            (Err(e), KernelOffload::Auto) => {
                tracing::warn!("kernel offload unavailable: {e}");
                Ok(None)
            }
            (Err(e), _) => Err(e),
        }
    }

    fn load(addrs: &[IpAddr], limits: Limits) -> Result<Offload, OffloadError> {
        let object = object()?;
        let mut ebpf = EbpfLoader::new()
            .set_max_entries("chan_up", limits.channels.max(1))
            .set_max_entries("chan_down", limits.channels.max(1))
            .set_max_entries("alloc_rate", limits.allocations.max(1))
            .load(object)
            .map_err(|e| OffloadError::Load(Box::new(e)))?;
        let map = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(OffloadError::Missing(name))
        };
        let convert = |name: &'static str| move |source| OffloadError::Map { map: name, source };
        let up = HashMap::try_from(map(&mut ebpf, "chan_up")?).map_err(convert("chan_up"))?;
        let down = HashMap::try_from(map(&mut ebpf, "chan_down")?).map_err(convert("chan_down"))?;
        let rates =
            HashMap::try_from(map(&mut ebpf, "alloc_rate")?).map_err(convert("alloc_rate"))?;
        let capacity = Array::try_from(map(&mut ebpf, "capacity")?).map_err(convert("capacity"))?;
        let stats = PerCpuArray::try_from(map(&mut ebpf, "stats")?).map_err(convert("stats"))?;

        let (interfaces, skipped) = host::interfaces(addrs).map_err(OffloadError::Interfaces)?;
        if !skipped.is_empty() {
            tracing::info!(
                "kernel offload: {} not Ethernet; their traffic stays in user space",
                skipped.join(", ")
            );
        }
        attach(&mut ebpf, &interfaces)?;
        let offload = Offload {
            ebpf: Mutex::new(ebpf),
            up: Mutex::new(up),
            down: Mutex::new(down),
            rates: Mutex::new(rates),
            capacity: Mutex::new(capacity),
            stats,
            local: Mutex::new(host::LocalAddrs::default()),
            interfaces,
            installed: AtomicU64::new(0),
        };
        offload.set_capacity(limits.bps_capacity)?;
        Ok(offload)
    }

    /// Interfaces the program is attached to.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// Relays `ch` in the kernel from now on, both ways. Installing a channel that is
    /// installed already with the same addresses keeps its counters. An error leaves
    /// nothing installed; the channel then stays in user space.
    pub fn install(&self, ch: &OffloadedChannel) -> Result<(), OffloadError> {
        validate(ch)?;
        let (peer_local, client_local) = {
            let mut local = lock(&self.local);
            (local.contains(ch.peer.ip()), local.contains(ch.client.ip()))
        };
        let all_local = peer_local && client_local;
        if !all_local && !host::lo_forwarding(ch.client.ip()) {
            return Err(OffloadError::ForwardingDisabled {
                family: host::sysctl_family(ch.client.ip()),
            });
        }
        let flag = |local: bool| if local { DELIVER_LOCAL } else { 0 };
        let (up_key, up_value) = up_entry(ch, flag(peer_local));
        let (down_key, down_value) = down_entry(ch, flag(client_local) as u16);
        let fresh = install_entry(&self.up, "chan_up", up_key, up_value, |a, b| {
            ChanUp {
                packets: 0,
                bytes: 0,
                ..*a
            } == ChanUp {
                packets: 0,
                bytes: 0,
                ..*b
            }
        })?;
        let down = install_entry(&self.down, "chan_down", down_key, down_value, |a, b| {
            ChanDown {
                packets: 0,
                bytes: 0,
                ..*a
            } == ChanDown {
                packets: 0,
                bytes: 0,
                ..*b
            }
        });
        if let Err(e) = down {
            // Nothing stays installed, whether it was before or not.
            if lock(&self.up).remove(&up_key).is_ok() && !fresh {
                self.installed.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(e);
        }
        if fresh {
            self.installed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Channels installed now.
    pub fn installed(&self) -> u64 {
        self.installed.load(Ordering::Relaxed)
    }

    /// Stops relaying `ch` in the kernel, both ways: from the next datagram on, it
    /// reaches user space. Removing what is not installed is not an error.
    pub fn remove(&self, ch: &OffloadedChannel) -> Result<(), OffloadError> {
        let up = remove_entry(&self.up, "chan_up", &up_entry(ch, 0).0);
        let down = remove_entry(&self.down, "chan_down", &down_entry(ch, 0).0);
        if up.as_ref().is_ok_and(|was| *was) {
            self.installed.fetch_sub(1, Ordering::Relaxed);
        }
        up.and(down).map(|_| ())
    }

    /// `max-bps` for the allocation whose relayed address is `relay`: bytes per second
    /// in each direction, shared by its channels, with a second's worth of burst; 0
    /// removes the limit. Setting it refills the buckets.
    pub fn set_allocation_rate(&self, relay: SocketAddr, max_bps: u64) -> Result<(), OffloadError> {
        let key = RateKey::new(relay);
        let mut rates = lock(&self.rates);
        if max_bps == 0 {
            return remove_missing_ok(rates.remove(&key), "alloc_rate").map(|_| ());
        }
        rates
            .insert(key, RateState::new(max_bps.min(MAX_RATE)), BPF_F_LOCK)
            .map_err(|e| OffloadError::update("insert", "alloc_rate", e))
    }

    /// Forgets the rate state of the allocation whose relayed address is `relay` (its
    /// channels are removed with [`Offload::remove`]).
    pub fn remove_allocation(&self, relay: SocketAddr) -> Result<(), OffloadError> {
        remove_missing_ok(lock(&self.rates).remove(&RateKey::new(relay)), "alloc_rate").map(|_| ())
    }

    /// `bps-capacity`: bytes per second in each direction for everything the kernel
    /// relays, 0 unlimited. Setting it refills the buckets.
    pub fn set_capacity(&self, bps_capacity: u64) -> Result<(), OffloadError> {
        lock(&self.capacity)
            .set(0, RateState::new(bps_capacity.min(MAX_RATE)), BPF_F_LOCK)
            .map_err(|e| OffloadError::update("set", "capacity", e))
    }

    /// What the kernel relayed on `ch` since it was installed; `None` when it is not.
    pub fn counters(&self, ch: &OffloadedChannel) -> Option<ChannelCounters> {
        let up = lock(&self.up).get(&up_entry(ch, 0).0, 0).ok()?;
        let down = lock(&self.down).get(&down_entry(ch, 0).0, 0).ok()?;
        Some(ChannelCounters {
            up: Flow {
                packets: up.packets,
                bytes: up.bytes,
            },
            down: Flow {
                packets: down.packets,
                bytes: down.bytes,
            },
        })
    }

    /// Totals since the program loaded (each CPU's counters summed).
    pub fn totals(&self) -> OffloadTotals {
        let n = |index: u32| -> u64 {
            self.stats
                .get(&index, 0)
                .map(|per_cpu| per_cpu.iter().fold(0u64, |sum, v| sum.wrapping_add(*v)))
                .unwrap_or(0)
        };
        OffloadTotals {
            up: DirectionTotals {
                relayed: Flow {
                    packets: n(stat::UP_PACKETS),
                    bytes: n(stat::UP_BYTES),
                },
                dropped_rate: n(stat::UP_DROP_RATE),
                dropped_capacity: n(stat::UP_DROP_CAPACITY),
            },
            down: DirectionTotals {
                relayed: Flow {
                    packets: n(stat::DOWN_PACKETS),
                    bytes: n(stat::DOWN_BYTES),
                },
                dropped_rate: n(stat::DOWN_DROP_RATE),
                dropped_capacity: n(stat::DOWN_DROP_CAPACITY),
            },
            passed: PassedToUserSpace {
                malformed: n(stat::PASS_MALFORMED),
                too_big: n(stat::PASS_TOO_BIG),
                not_loopback: n(stat::PASS_NOT_LOOPBACK),
                no_route: n(stat::PASS_NO_ROUTE),
                frag_needed: n(stat::PASS_FRAG_NEEDED),
                forwarding_disabled: n(stat::PASS_FWD_DISABLED),
            },
            dropped_errors: n(stat::DROP_ERROR),
        }
    }
}

impl Drop for Offload {
    fn drop(&mut self) {
        // Detached explicitly so a failure is logged; aya would detach on drop too.
        let mut ebpf = lock(&self.ebpf);
        if let Some(program) = ebpf.program_mut(PROGRAM) {
            if let Ok(classifier) = <&mut SchedClassifier>::try_from(program) {
                if let Err(e) = classifier.unload() {
                    tracing::warn!("kernel offload: detaching: {e}");
                }
            }
        }
    }
}

const PROGRAM: &str = "ferroturn_relay";

/// What the kernel path can take at all: a channel number the server accepts
/// (0x4000-0x7FFF, RFC 5766's range, as in the core: coturn's clients pick from all of
/// it; the program takes ChannelData by its first two bits, 01, the same range), one
/// address family throughout, unicast destinations.
fn validate(ch: &OffloadedChannel) -> Result<(), OffloadError> {
    if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&ch.channel) {
        return Err(OffloadError::InvalidChannel(ch.channel));
    }
    let v4 = ch.client.is_ipv4();
    if [ch.server, ch.relay, ch.peer]
        .iter()
        .any(|a| a.is_ipv4() != v4)
    {
        return Err(OffloadError::FamilyMismatch);
    }
    for ip in [ch.client.ip(), ch.peer.ip()] {
        if !host::is_unicast(ip) {
            return Err(OffloadError::NotUnicast(ip));
        }
    }
    Ok(())
}

/// Loads the classifier and attaches it to TC ingress of each interface: a TCX link on
/// kernels from 6.6 on (detached when the process exits, however it exits), else a
/// clsact qdisc and a direct-action filter.
fn attach(ebpf: &mut Ebpf, interfaces: &[String]) -> Result<(), OffloadError> {
    use aya::programs::links::LinkOrder;
    use aya::programs::tc::{NlOptions, TcAttachOptions};
    use aya::util::KernelVersion;

    let tcx = KernelVersion::current().map_err(|e| OffloadError::KernelVersion(e.to_string()))?
        >= KernelVersion::new(6, 6, 0);
    let program: &mut SchedClassifier = ebpf
        .program_mut(PROGRAM)
        .ok_or(OffloadError::Missing(PROGRAM))?
        .try_into()
        .map_err(OffloadError::Program)?;
    program.load().map_err(OffloadError::Program)?;
    for interface in interfaces {
        let options = if tcx {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        } else {
            // An existing clsact qdisc (another program's) is fine.
            let _ = aya::programs::tc::qdisc_add_clsact(interface);
            TcAttachOptions::Netlink(NlOptions::default())
        };
        program
            .attach_with_options(interface, TcAttachType::Ingress, options)
            .map_err(|source| OffloadError::Attach {
                interface: interface.clone(),
                source,
            })?;
    }
    Ok(())
}

fn up_entry(ch: &OffloadedChannel, flags: u32) -> (ChanKey, ChanUp) {
    let key = ChanKey {
        family: maps::family(&ch.client),
        pad: 0,
        channel: ch.channel.to_be(),
        client_port: port(&ch.client),
        server_port: port(&ch.server),
        client_ip: ip_words(ch.client.ip()),
        server_ip: ip_words(ch.server.ip()),
    };
    let value = ChanUp {
        relay_ip: ip_words(ch.relay.ip()),
        peer_ip: ip_words(ch.peer.ip()),
        relay_port: port(&ch.relay),
        peer_port: port(&ch.peer),
        flags,
        packets: 0,
        bytes: 0,
    };
    (key, value)
}

fn down_entry(ch: &OffloadedChannel, flags: u16) -> (PeerKey, ChanDown) {
    let key = PeerKey {
        family: maps::family(&ch.peer),
        pad: [0; 3],
        peer_port: port(&ch.peer),
        relay_port: port(&ch.relay),
        peer_ip: ip_words(ch.peer.ip()),
        relay_ip: ip_words(ch.relay.ip()),
    };
    let value = ChanDown {
        client_ip: ip_words(ch.client.ip()),
        server_ip: ip_words(ch.server.ip()),
        client_port: port(&ch.client),
        server_port: port(&ch.server),
        channel: ch.channel.to_be(),
        flags,
        packets: 0,
        bytes: 0,
    };
    (key, value)
}

/// Inserts `value` under `key` unless an entry `same` as it is there (whose counters
/// then go on).
fn install_entry<K: aya::Pod, V: aya::Pod>(
    map: &Mutex<HashMap<MapData, K, V>>,
    name: &'static str,
    key: K,
    value: V,
    same: impl Fn(&V, &V) -> bool,
) -> Result<bool, OffloadError> {
    let mut map = lock(map);
    match map.insert(key, value, BPF_NOEXIST) {
        Ok(()) => return Ok(true),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(OffloadError::update("insert", name, e)),
    }
    if map.get(&key, 0).is_ok_and(|old| same(&old, &value)) {
        return Ok(false);
    }
    map.insert(key, value, 0)
        .map(|()| false)
        .map_err(|e| OffloadError::update("replace", name, e))
}

/// Whether the entry was there.
fn remove_entry<K: aya::Pod, V: aya::Pod>(
    map: &Mutex<HashMap<MapData, K, V>>,
    name: &'static str,
    key: &K,
) -> Result<bool, OffloadError> {
    remove_missing_ok(lock(map).remove(key), name)
}

/// Whether the entry was there.
fn remove_missing_ok(
    result: Result<(), aya::maps::MapError>,
    name: &'static str,
) -> Result<bool, OffloadError> {
    match result {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(false)
        }
        Err(e) => Err(OffloadError::update("remove", name, e)),
    }
}

#[cfg(test)]
mod tests;
