//! Everything on lo of a fresh namespace: the kernel delivers locally, and the sockets
//! standing in for the server's listener and relay socket must see nothing of an
//! installed channel.

use crate::netns::{Namespaces, Unavailable};
use crate::packet::{ABSENT, ARRIVES, bind, channel_between, channel_data, recv, send_raw};
use crate::{skip_unless_available, start, unavailable};
use ferroturn::offload::{Limits, Offload, OffloadedChannel};
use std::net::{IpAddr, SocketAddr, UdpSocket};

const CHANNEL: u16 = 0x4000;

/// A client, the server's listening socket, an allocation's relay socket and a peer, on
/// lo of a namespace of their own, and the fast path attached there.
struct Lo {
    ns: Namespaces,
    offload: Offload,
    client: UdpSocket,
    server: UdpSocket,
    relay: UdpSocket,
    peer: UdpSocket,
    ch: OffloadedChannel,
}

impl Lo {
    fn new(v6: bool) -> Result<Lo, Unavailable> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        let ns = Namespaces::new(&["lo"])?;
        // Four distinct addresses over IPv4 (all of 127/8 is local); ::1 is the only
        // loopback address of IPv6, so there the ports tell them apart.
        let ip = |n: u8| -> IpAddr {
            if v6 {
                "::1".parse().unwrap()
            } else {
                IpAddr::from([127, 0, 0, n])
            }
        };
        let (offload, client, server, relay, peer) = ns.run("lo", || {
            let offload = start(&[ip(1), ip(2)], Limits::default())?;
            let sock = |n| bind(SocketAddr::new(ip(n), 0));
            Ok::<_, Unavailable>((offload, sock(3), sock(1), sock(2), sock(4)))
        })?;
        let ch = channel_between(&client, &server, &relay, &peer, CHANNEL);
        Ok(Lo {
            ns,
            offload,
            client,
            server,
            relay,
            peer,
            ch,
        })
    }

    fn install(&self) {
        self.ns
            .run("lo", || self.offload.install(&self.ch))
            .expect("install");
    }

    /// ChannelData from the client reaches the peer from the relayed address, and the
    /// listener sees nothing.
    fn relays_up(&self, payload: &[u8]) {
        self.client
            .send_to(&channel_data(self.ch.channel, payload), self.ch.server)
            .expect("send");
        let got = recv(&self.peer, ARRIVES).expect("the peer receives the payload");
        assert_eq!(got, (payload.to_vec(), self.ch.relay));
        assert_eq!(recv(&self.server, ABSENT), None, "the listener saw it");
    }

    /// The peer's datagram reaches the client as ChannelData from the listening
    /// address, and the relay socket sees nothing.
    fn relays_down(&self, payload: &[u8]) {
        self.peer.send_to(payload, self.ch.relay).expect("send");
        let got = recv(&self.client, ARRIVES).expect("the client receives ChannelData");
        assert_eq!(
            got,
            (channel_data(self.ch.channel, payload), self.ch.server)
        );
        assert_eq!(recv(&self.relay, ABSENT), None, "the relay socket saw it");
    }

    /// Both directions reach the user-space sockets unchanged.
    fn reaches_user_space(&self, message: &[u8], payload: &[u8]) {
        self.client.send_to(message, self.ch.server).expect("send");
        let got = recv(&self.server, ARRIVES).expect("the listener receives it");
        assert_eq!(got, (message.to_vec(), self.ch.client));
        self.peer.send_to(payload, self.ch.relay).expect("send");
        let got = recv(&self.relay, ARRIVES).expect("the relay socket receives it");
        assert_eq!(got, (payload.to_vec(), self.ch.peer));
        assert_eq!(recv(&self.peer, ABSENT), None);
        assert_eq!(recv(&self.client, ABSENT), None);
    }
}

fn both_ways_then_removed(v6: bool) {
    let lo = skip_unless_available!(Lo::new(v6));
    lo.install();
    lo.relays_up(b"hello");
    lo.relays_up(&[0x5a; 1200]);
    lo.relays_down(b"world!");
    lo.relays_down(b"");
    let counters = lo.offload.counters(&lo.ch).expect("installed");
    assert_eq!((counters.up.packets, counters.up.bytes), (2, 1205));
    assert_eq!((counters.down.packets, counters.down.bytes), (2, 6));
    let totals = lo.offload.totals();
    assert_eq!(totals.up.relayed.packets, 2);
    assert_eq!(totals.down.relayed.bytes, 6);
    assert_eq!(totals.dropped_errors, 0);

    // Installing it again keeps its counters.
    lo.install();
    assert_eq!(lo.offload.counters(&lo.ch), Some(counters));

    lo.offload.remove(&lo.ch).expect("remove");
    assert_eq!(lo.offload.counters(&lo.ch), None);
    lo.reaches_user_space(&channel_data(CHANNEL, b"again"), b"back");
    assert_eq!(lo.offload.totals().up.relayed.packets, 2);
}

#[test]
fn ipv4_channel_relayed_both_ways_then_removed() {
    both_ways_then_removed(false);
}

#[test]
fn ipv6_channel_relayed_both_ways_then_removed() {
    both_ways_then_removed(true);
}

/// The server accepts RFC 5766's channel numbers, up to 0x7FFF (coturn's clients pick
/// from all of them); the kernel relays those too.
#[test]
fn channel_numbers_up_to_0x7fff_relayed_both_ways() {
    let mut lo = skip_unless_available!(Lo::new(false));
    for channel in [0x4fff, 0x5000, 0x7fff] {
        lo.ch.channel = channel;
        lo.install();
        lo.relays_up(b"up");
        lo.relays_down(b"down");
        lo.offload.remove(&lo.ch).expect("remove");
    }
}

#[test]
fn padded_channel_data_and_unknown_channels_reach_user_space() {
    let lo = skip_unless_available!(Lo::new(false));
    lo.install();
    // RFC 8656 section 12.5 pads ChannelData over TCP; over UDP the kernel leaves a
    // padded message to user space.
    let mut padded = channel_data(CHANNEL, b"abcde");
    padded.extend_from_slice(&[0, 0, 0]);
    lo.client.send_to(&padded, lo.ch.server).expect("send");
    assert_eq!(recv(&lo.server, ARRIVES).map(|g| g.0), Some(padded));
    let mut short = channel_data(CHANNEL, b"abcde");
    short.truncate(7);
    lo.client.send_to(&short, lo.ch.server).expect("send");
    assert_eq!(recv(&lo.server, ARRIVES).map(|g| g.0), Some(short));
    let unknown = channel_data(CHANNEL + 1, b"abcde");
    lo.client.send_to(&unknown, lo.ch.server).expect("send");
    assert_eq!(recv(&lo.server, ARRIVES).map(|g| g.0), Some(unknown));
    // A peer without a channel, and another port of the same peer.
    let stranger = lo.ns.run("lo", || bind("127.0.0.4:0".parse().unwrap()));
    stranger.send_to(b"x", lo.ch.relay).expect("send");
    assert!(recv(&lo.relay, ARRIVES).is_some());
    assert_eq!(recv(&lo.peer, ABSENT), None);
    assert_eq!(recv(&lo.client, ABSENT), None);

    let totals = lo.offload.totals();
    assert_eq!(totals.passed.malformed, 2);
    assert_eq!(totals.up.relayed.packets + totals.down.relayed.packets, 0);
}

/// Sends `n` datagrams of `size` bytes of payload up (or down) and counts what arrived.
fn burst(lo: &Lo, down: bool, n: usize, size: usize) -> usize {
    let payload = vec![7u8; size];
    for _ in 0..n {
        if down {
            lo.peer.send_to(&payload, lo.ch.relay).expect("send");
        } else {
            lo.client
                .send_to(&channel_data(CHANNEL, &payload), lo.ch.server)
                .expect("send");
        }
    }
    let (to, not_to) = if down {
        (&lo.client, &lo.relay)
    } else {
        (&lo.peer, &lo.server)
    };
    let mut arrived = 0;
    while recv(to, ABSENT).is_some() {
        arrived += 1;
    }
    assert_eq!(
        recv(not_to, ABSENT),
        None,
        "a dropped datagram reached user space"
    );
    arrived
}

#[test]
fn max_bps_and_bps_capacity_drop_the_excess_and_count_it() {
    let lo = skip_unless_available!(Lo::new(false));
    lo.install();
    // 1000 bytes per second with a second of burst: five 200-byte datagrams, maybe a
    // sixth if the sends took over 200 ms.
    lo.offload
        .set_allocation_rate(lo.ch.relay, 1000)
        .expect("set rate");
    let up = burst(&lo, false, 10, 200);
    assert!((5..=6).contains(&up), "{up} passed");
    let down = burst(&lo, true, 10, 200);
    assert!((5..=6).contains(&down), "{down} passed");
    let totals = lo.offload.totals();
    assert_eq!(totals.up.dropped_rate, 10 - up as u64);
    assert_eq!(totals.down.dropped_rate, 10 - down as u64);
    assert_eq!(
        lo.offload.counters(&lo.ch).map(|c| c.up.packets),
        Some(up as u64)
    );

    // The allocation unlimited again, the server at 600 bytes per second.
    lo.offload
        .set_allocation_rate(lo.ch.relay, 0)
        .expect("unset");
    lo.offload.set_capacity(600).expect("capacity");
    let up = burst(&lo, false, 10, 200);
    assert!((3..=4).contains(&up), "{up} passed");
    assert_eq!(lo.offload.totals().up.dropped_capacity, 10 - up as u64);
    lo.offload.set_capacity(0).expect("capacity");
    assert_eq!(burst(&lo, false, 10, 200), 10);
    lo.offload.remove_allocation(lo.ch.relay).expect("remove");
}

/// Datagrams with a checksum computed by the sender (CHECKSUM_NONE skbs) leave with one
/// the receiving stack verifies: a wrong one would be dropped and counted there.
fn raw_senders_checksums(v6: bool) {
    let lo = skip_unless_available!(Lo::new(v6));
    lo.install();
    let errors_before = lo.ns.run("lo", || udp_checksum_errors(v6));
    lo.ns.run("lo", || {
        send_raw(
            lo.ch.client,
            lo.ch.server,
            &channel_data(CHANNEL, b"raw up"),
        )
    });
    assert_eq!(
        recv(&lo.peer, ARRIVES),
        Some((b"raw up".to_vec(), lo.ch.relay))
    );
    lo.ns
        .run("lo", || send_raw(lo.ch.peer, lo.ch.relay, b"raw down, odd"));
    assert_eq!(
        recv(&lo.client, ARRIVES),
        Some((channel_data(CHANNEL, b"raw down, odd"), lo.ch.server))
    );
    assert_eq!(lo.ns.run("lo", || udp_checksum_errors(v6)), errors_before);
    assert_eq!(lo.offload.totals().up.relayed.packets, 1);
}

#[test]
fn ipv4_checksums_hold_for_datagrams_summed_by_their_sender() {
    raw_senders_checksums(false);
}

#[test]
fn ipv6_checksums_hold_for_datagrams_summed_by_their_sender() {
    raw_senders_checksums(true);
}

/// UDP `InCsumErrors` of the calling thread's namespace.
fn udp_checksum_errors(v6: bool) -> u64 {
    if v6 {
        let snmp6 = std::fs::read_to_string("/proc/thread-self/net/snmp6").expect("snmp6");
        return snmp6
            .lines()
            .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Udp6InCsumErrors");
    }
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().expect("names"), udp.next().expect("values"));
    let column = names
        .split_whitespace()
        .position(|n| n == "InCsumErrors")
        .expect("InCsumErrors");
    values
        .split_whitespace()
        .nth(column)
        .and_then(|v| v.parse().ok())
        .expect("value")
}
