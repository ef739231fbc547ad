//! Client, server and peer namespaces joined by veth pairs, forwarding off in the
//! server's: the kernel relays through a real route and neighbour, and every datagram is
//! captured where it arrives and its checksums verified.
//!
//! ```text
//!  client ns                 server ns                          peer ns
//!  c0 10.201.1.1 ---- s0 10.201.1.2 (listen)  s1 10.201.2.2 (relay) ---- p0 10.201.2.1
//!     fd00:201:1::1      fd00:201:1::2            fd00:201:2::2             fd00:201:2::1
//! ```
//!
//! Transmit checksum offload is off on s0 and s1, so a CHECKSUM_PARTIAL datagram the
//! kernel relays (the client's and the peer's sockets make those) has its checksum
//! completed from csum_start on the way out, as a NIC would do it.

use crate::netns::{Namespaces, Unavailable, tx_checksum_off};
use crate::packet::{
    ABSENT, ARRIVES, Capture, bind, channel_between, channel_data, recv, send_raw,
};
use crate::{skip_unless_available, start, unavailable};
use ferroturn::offload::{Limits, Offload, OffloadedChannel};
use std::net::{IpAddr, SocketAddr, UdpSocket};

const CHANNEL: u16 = 0x4abc;

struct Bed {
    ns: Namespaces,
    offload: Offload,
    client: UdpSocket,
    server: UdpSocket,
    relay: UdpSocket,
    peer: UdpSocket,
    at_client: Capture,
    at_peer: Capture,
    ch: OffloadedChannel,
}

pub fn addr(v6: bool, net: u8, host: u8) -> IpAddr {
    if v6 {
        format!("fd00:201:{net}::{host}").parse().unwrap()
    } else {
        IpAddr::from([10, 201, net, host])
    }
}

/// The three namespaces and their veth pairs, routes and sysctls, as drawn above.
pub fn topology(v6: bool) -> Result<Namespaces, Unavailable> {
    if let Some(why) = unavailable() {
        return Err(why);
    }
    let ns = Namespaces::new(&["client", "server", "peer"])?;
    ns.ip(
        "client",
        &[
            "link",
            "add",
            "c0",
            "type",
            "veth",
            "peer",
            "name",
            "s0",
            "netns",
            ns.name("server"),
        ],
    );
    ns.ip(
        "server",
        &[
            "link",
            "add",
            "s1",
            "type",
            "veth",
            "peer",
            "name",
            "p0",
            "netns",
            ns.name("peer"),
        ],
    );
    let (fam, plen) = if v6 { ("-6", "64") } else { ("-4", "24") };
    let add = |role: &str, dev: &str, ip: IpAddr| {
        let cidr = format!("{ip}/{plen}");
        let mut args = vec![fam, "addr", "add", cidr.as_str(), "dev", dev];
        if v6 {
            args.push("nodad");
        }
        ns.ip(role, &args);
        ns.ip(role, &["link", "set", dev, "up"]);
    };
    add("client", "c0", addr(v6, 1, 1));
    add("server", "s0", addr(v6, 1, 2));
    add("server", "s1", addr(v6, 2, 2));
    add("peer", "p0", addr(v6, 2, 1));
    let net = |n: u8| format!("{}/{plen}", addr(v6, n, 0));
    let (to_peers, via_s0) = (net(2), addr(v6, 1, 2).to_string());
    ns.ip("client", &[fam, "route", "add", &to_peers, "via", &via_s0]);
    let (to_clients, via_s1) = (net(1), addr(v6, 2, 2).to_string());
    ns.ip("peer", &[fam, "route", "add", &to_clients, "via", &via_s1]);
    // The server forwards nothing itself; bpf_fib_lookup needs forwarding on lo
    // only, the interface it looks routes up from.
    ns.sysctl("server", "net.ipv4.ip_forward", "0");
    ns.sysctl("server", "net.ipv6.conf.all.forwarding", "0");
    ns.sysctl("server", "net.ipv4.conf.lo.forwarding", "1");
    ns.sysctl("server", "net.ipv6.conf.lo.forwarding", "1");

    Ok(ns)
}

impl Bed {
    fn new(v6: bool) -> Result<Bed, Unavailable> {
        let ns = topology(v6)?;
        let sock = |ip: IpAddr| bind(SocketAddr::new(ip, 0));
        let (client, at_client) = ns.run("client", || (sock(addr(v6, 1, 1)), Capture::on("c0")));
        let (peer, at_peer) = ns.run("peer", || (sock(addr(v6, 2, 1)), Capture::on("p0")));
        let (offload, server, relay) = ns.run("server", || {
            tx_checksum_off("s0");
            tx_checksum_off("s1");
            let offload = start(&[addr(v6, 1, 2), addr(v6, 2, 2)], Limits::default())?;
            Ok::<_, Unavailable>((offload, sock(addr(v6, 1, 2)), sock(addr(v6, 2, 2))))
        })?;
        let ch = channel_between(&client, &server, &relay, &peer, CHANNEL);
        // A TTL of 5 from the senders: what the kernel relays must leave with 64.
        for s in [&client, &peer] {
            let s = socket2::SockRef::from(s);
            if v6 {
                s.set_unicast_hops_v6(5).expect("hop limit");
            } else {
                s.set_ttl_v4(5).expect("ttl");
            }
        }
        Ok(Bed {
            ns,
            offload,
            client,
            server,
            relay,
            peer,
            at_client,
            at_peer,
            ch,
        })
    }

    fn relayed_up(&self, payload: &[u8]) {
        let got = self
            .at_peer
            .next_to(self.ch.peer.port(), ARRIVES)
            .expect("the peer's interface sees the payload");
        assert_eq!((got.src, got.ttl), (self.ch.relay, 64));
        assert_eq!(got.payload, payload);
        assert_eq!(
            recv(&self.peer, ARRIVES),
            Some((payload.to_vec(), self.ch.relay))
        );
        assert_eq!(recv(&self.server, ABSENT), None, "the listener saw it");
    }

    fn relayed_down(&self, payload: &[u8]) {
        let message = channel_data(CHANNEL, payload);
        let got = self
            .at_client
            .next_to(self.ch.client.port(), ARRIVES)
            .expect("the client's interface sees ChannelData");
        assert_eq!((got.src, got.ttl), (self.ch.server, 64));
        assert_eq!(got.payload, message);
        assert_eq!(recv(&self.client, ARRIVES), Some((message, self.ch.server)));
        assert_eq!(recv(&self.relay, ABSENT), None, "the relay socket saw it");
    }
}

fn forwarded_both_ways(v6: bool) {
    let bed = skip_unless_available!(Bed::new(v6));
    let ch = bed.ch;

    // The server does not forward: a datagram from the client to the peer's address
    // through it goes nowhere.
    bed.client.send_to(b"\0plain", ch.peer).expect("send");
    assert_eq!(
        recv(&bed.peer, ABSENT),
        None,
        "the server namespace forwarded"
    );

    bed.ns
        .run("server", || bed.offload.install(&ch))
        .expect("install");
    // The first datagrams may find the neighbour unresolved (bpf_redirect_neigh), the
    // later ones resolved (bpf_redirect with the lookup's addresses).
    for payload in [&b"first"[..], &[0xa5; 1000], b"odd"] {
        bed.client
            .send_to(&channel_data(CHANNEL, payload), ch.server)
            .expect("send");
        bed.relayed_up(payload);
    }
    for payload in [&b"back"[..], &[0x3c; 999], b""] {
        bed.peer.send_to(payload, ch.relay).expect("send");
        bed.relayed_down(payload);
    }
    // Sender-summed datagrams (CHECKSUM_NONE) too.
    bed.ns.run("client", || {
        send_raw(ch.client, ch.server, &channel_data(CHANNEL, b"raw up"))
    });
    bed.relayed_up(b"raw up");
    bed.ns
        .run("peer", || send_raw(ch.peer, ch.relay, b"raw down"));
    bed.relayed_down(b"raw down");

    let counters = bed.offload.counters(&ch).expect("installed");
    assert_eq!(
        (counters.up.packets, counters.up.bytes),
        (4, 5 + 1000 + 3 + 6)
    );
    assert_eq!(
        (counters.down.packets, counters.down.bytes),
        (4, 4 + 999 + 8)
    );
    let totals = bed.offload.totals();
    assert_eq!(totals.passed, Default::default(), "{totals:?}");
    assert_eq!(totals.dropped_errors, 0);

    bed.offload.remove(&ch).expect("remove");
    let message = channel_data(CHANNEL, b"user space");
    bed.client.send_to(&message, ch.server).expect("send");
    assert_eq!(recv(&bed.server, ARRIVES), Some((message, ch.client)));
    bed.peer.send_to(b"to the relay", ch.relay).expect("send");
    assert_eq!(
        recv(&bed.relay, ARRIVES),
        Some((b"to the relay".to_vec(), ch.peer))
    );
    assert_eq!(recv(&bed.peer, ABSENT), None);
    assert_eq!(recv(&bed.client, ABSENT), None);
}

#[test]
fn ipv4_forwarded_through_veth_with_verified_checksums() {
    forwarded_both_ways(false);
}

#[test]
fn ipv6_forwarded_through_veth_with_verified_checksums() {
    forwarded_both_ways(true);
}

/// Without forwarding on lo, a channel to another host stays in user space.
#[test]
fn install_refuses_remote_destinations_without_lo_forwarding() {
    let bed = skip_unless_available!(Bed::new(false));
    bed.ns.sysctl("server", "net.ipv4.conf.lo.forwarding", "0");
    let result = bed.ns.run("server", || bed.offload.install(&bed.ch));
    assert!(
        matches!(
            result,
            Err(ferroturn::offload::OffloadError::ForwardingDisabled { .. })
        ),
        "{result:?}"
    );
    let message = channel_data(CHANNEL, b"user space");
    bed.client.send_to(&message, bed.ch.server).expect("send");
    assert_eq!(recv(&bed.server, ARRIVES), Some((message, bed.ch.client)));
}
