//! The kernel fast path's state machine (issue 11): the core installs a channel in the
//! kernel exactly while user space would relay it itself, and removes it the moment
//! that stops. The harness keeps the kernel's table from the events and checks on every
//! step that it matches what the core says, and that no relay closes with channels
//! still installed.

use crate::prelude::*;
use ferroturn::config::Config;
use ferroturn_core::server::{OffloadChannel, Transport};

/// The harness's base configuration again, for reconfiguration.
const BASE: &str = "listening-ip = [\"127.0.0.1\"]\n\
                    realm = \"virtual.test\"\n\
                    static-auth-secret = [\"old-secret\", \"new-secret\"]\n\
                    user = [\"alice:alice-pw\", \"bob:bob-pw\"]\n";

fn installed(h: &Harness) -> Vec<(u16, SocketAddr)> {
    h.kernel.values().map(|c| (c.channel, c.peer)).collect()
}

/// What the last install said.
fn last_install(h: &Harness) -> OffloadChannel {
    h.offload_log
        .iter()
        .rev()
        .find(|(install, _)| *install)
        .map(|(_, ch)| *ch)
        .expect("an install")
}

#[test]
fn nothing_is_offloaded_unless_the_driver_runs_the_kernel_path() {
    let mut h = Harness::new("");
    let mut c = alice();
    h.allocate(&mut c, &[]);
    success(
        &h.bind_channel(&mut c, CHANNEL, addr(PEER)),
        method::CHANNEL_BIND,
    );
    assert!(h.offload_log.is_empty());
}

/// RFC 8656 section 12: once ChannelBind succeeds, the channel (and the permission it
/// installs) is what the kernel relays: the allocation's 5-tuple, the channel number,
/// the relay socket's own address and the peer, with `max-bps`.
#[test]
fn a_bound_channel_is_installed_with_everything_the_kernel_needs() {
    let mut h = Harness::with_offload("max-bps = 50000");
    let mut c = alice();
    let (r, relay) = h.allocate(&mut c, &[]);
    h.permit(&mut c, addr(PEER));
    assert!(h.kernel.is_empty(), "a permission alone is not a channel");
    success(
        &h.bind_channel(&mut c, CHANNEL, addr(PEER)),
        method::CHANNEL_BIND,
    );
    let ch = last_install(&h);
    assert_eq!(
        ch,
        OffloadChannel {
            relay,
            tuple: c.tuple,
            channel: CHANNEL,
            relay_local: r.xor_relayed.expect("relayed address"),
            peer: addr(PEER),
            max_bps: 50_000,
        }
    );
    // A refresh of the binding sends nothing new.
    let before = h.offload_log.len();
    h.advance_to(100);
    success(
        &h.bind_channel(&mut c, CHANNEL, addr(PEER)),
        method::CHANNEL_BIND,
    );
    assert_eq!(h.offload_log.len(), before);
}

/// RFC 8656 section 7.5: Refresh with LIFETIME 0 deletes the allocation; its channels
/// leave the kernel in the same call, before the relay socket closes (the harness
/// checks the order), so not one more datagram is relayed.
#[test]
fn refresh_zero_removes_every_channel_before_the_relay_closes() {
    let mut h = Harness::with_offload("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    let other = addr("198.51.100.9:9");
    for (n, peer) in [(CHANNEL, addr(PEER)), (CHANNEL + 1, other)] {
        success(&h.bind_channel(&mut c, n, peer), method::CHANNEL_BIND);
    }
    assert_eq!(h.kernel.len(), 2);
    h.refresh(&mut c, Some(0));
    assert!(h.kernel.is_empty());
    assert_eq!(h.closed, vec![relay]);
}

/// RFC 8656 sections 9 and 12: a permission lasts 300 s and a binding 600 s. When the
/// permission lapses, the peer's datagrams are no longer relayed (section 12.7 goes
/// through the permission check of 9), so the channel leaves the kernel; user space
/// still relays the client's ChannelData on the bound channel (section 12.6 checks only
/// the binding). A new CreatePermission brings it back; the binding's own expiry removes
/// it for good.
#[test]
fn permission_and_channel_expiry_take_the_channel_out_of_the_kernel() {
    let mut h = Harness::with_offload("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[RequestAttr::Lifetime(3600)]);
    success(
        &h.bind_channel(&mut c, CHANNEL, addr(PEER)),
        method::CHANNEL_BIND,
    );
    h.advance_to(299);
    assert_eq!(installed(&h), vec![(CHANNEL, addr(PEER))]);
    h.advance_to(300);
    assert!(h.kernel.is_empty(), "the permission expired");
    let peer = addr(PEER);
    assert_eq!(
        h.peer_datagram(relay, peer, b"from the peer"),
        None,
        "without a permission the peer is not relayed in user space either"
    );
    assert!(
        h.relay_from_client(c.tuple, &channel_data(CHANNEL, b"x"))
            .is_some(),
        "the bound channel still carries the client's data, in user space"
    );
    h.permit(&mut c, addr(PEER));
    assert_eq!(installed(&h), vec![(CHANNEL, addr(PEER))]);
    h.advance_to(599);
    h.permit(&mut c, addr(PEER));
    h.advance_to(600);
    assert!(h.kernel.is_empty(), "the binding expired");
    // Cooling down for 5 minutes, then gone; nothing is installed again.
    h.advance_to(901);
    assert!(h.kernel.is_empty());
}

/// The allocation's own expiry (RFC 8656 section 7): channels out, then the relay.
#[test]
fn allocation_expiry_removes_its_channels() {
    let mut h = Harness::with_offload("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    success(
        &h.bind_channel(&mut c, CHANNEL, addr(PEER)),
        method::CHANNEL_BIND,
    );
    h.advance_to(600);
    assert!(h.kernel.is_empty());
    assert_eq!(h.closed, vec![relay]);
}

/// Only what the kernel can do exactly as user space would: a stream client (framing,
/// padding) and a client of another family than its relay (no IPv4/IPv6 translation in
/// the kernel) stay in user space, and so does a peer that is one of the server's own
/// relayed addresses (allowed only while that allocation lives).
#[test]
fn stream_clients_family_changes_and_own_relays_stay_in_user_space() {
    let mut h = Harness::with_offload(DUAL_STACK);
    let mut tcp = Client::new("203.0.113.20:4000", "alice", "alice-pw");
    tcp.tuple.transport = Transport::Tcp;
    h.allocate(&mut tcp, &[]);
    success(
        &h.bind_channel(&mut tcp, CHANNEL, addr(PEER)),
        method::CHANNEL_BIND,
    );
    let mut v6 = Client::new("[2001:db8::20]:4000", "bob", "bob-pw");
    let (r6, _) = h.allocate(&mut v6, &[RequestAttr::RequestedFamily(Family::V4)]);
    assert!(r6.xor_relayed.is_some_and(|a| a.is_ipv4()));
    success(
        &h.bind_channel(&mut v6, CHANNEL, addr(PEER)),
        method::CHANNEL_BIND,
    );
    assert!(h.kernel.is_empty(), "{:?}", h.kernel);

    // A channel to another allocation's relayed address (on this server's own address).
    let mut a = alice();
    let (ra, _) = h.allocate(&mut a, &[]);
    let mut b = Client::new("203.0.113.30:5000", "bob", "bob-pw");
    let (rb, _) = h.allocate(&mut b, &[]);
    let b_relayed = rb.xor_relayed.expect("relayed");
    success(
        &h.bind_channel(&mut a, CHANNEL, b_relayed),
        method::CHANNEL_BIND,
    );
    assert!(ra.xor_relayed.is_some());
    assert!(
        h.kernel.is_empty(),
        "own relayed addresses stay in user space"
    );
}

/// A reload applies to what the kernel relays as it does to user space: a peer the new
/// policy denies leaves the kernel at once, and a new `max-bps` is sent again.
#[test]
fn reconfiguration_removes_newly_denied_peers_and_resends_limits() {
    let mut h = Harness::with_offload("");
    let mut c = alice();
    h.allocate(&mut c, &[]);
    let other = addr("203.0.113.99:7");
    success(
        &h.bind_channel(&mut c, CHANNEL, addr(PEER)),
        method::CHANNEL_BIND,
    );
    success(
        &h.bind_channel(&mut c, CHANNEL + 1, other),
        method::CHANNEL_BIND,
    );
    assert_eq!(h.kernel.len(), 2);
    let cfg = Config::from_toml_str(&format!(
        "{BASE}denied-peer-ip = [\"198.51.100.0/24\"]\nmax-bps = 1000\n"
    ))
    .unwrap();
    h.server.reconfigure(cfg.server);
    h.advance_to(1);
    assert_eq!(installed(&h), vec![(CHANNEL + 1, other)]);
    assert_eq!(last_install(&h).max_bps, 1000);
    assert_eq!(
        h.relay_from_client(c.tuple, &channel_data(CHANNEL, b"x")),
        None,
        "user space refuses the denied peer too"
    );
}

/// A dual allocation (RFC 8656 section 7.2) relays each channel through the relay of
/// its peer's family. The kernel does not translate between IPv4 and IPv6, so only the
/// channels to peers of the client's own family are installed, keyed by that family's
/// relay address, and removed with the same address when the allocation ends.
#[test]
fn a_dual_allocation_offloads_channels_of_the_clients_family_through_that_relay() {
    let mut h = Harness::with_offload(DUAL_STACK);
    let (p4, p6) = (addr(PEER), addr("[2001:db8::1]:5000"));
    for client in ["203.0.113.10:40000", "[2001:db8::10]:40000"] {
        let mut c = Client::new(client, "alice", "alice-pw");
        let (r, relay) = h.allocate_dual(&mut c);
        let (v4, v6) = (r.xor_relayed.unwrap(), r.additional_relayed.unwrap());
        for (n, peer) in [(CHANNEL, p4), (CHANNEL + 1, p6)] {
            success(&h.bind_channel(&mut c, n, peer), method::CHANNEL_BIND);
        }
        let expected = if c.tuple.client.is_ipv4() {
            (CHANNEL, p4, v4)
        } else {
            (CHANNEL + 1, p6, v6)
        };
        let kernel: Vec<(u16, SocketAddr, SocketAddr)> = h
            .kernel
            .values()
            .map(|k| (k.channel, k.peer, k.relay_local))
            .collect();
        assert_eq!(kernel, vec![expected], "{client}");
        let installed = last_install(&h);
        assert_eq!(installed.relay, relay);
        h.refresh(&mut c, Some(0));
        assert_eq!(h.offload_log.last(), Some(&(false, installed)));
        assert!(h.kernel.is_empty());
    }
}
