//! Channels (RFC 8656 section 12).

use crate::prelude::*;

/// RFC 8656 sections 12.2, 12.6 and 12.7: after ChannelBind, ChannelData from the
/// client goes to the peer and the peer's datagrams come back as ChannelData with the
/// channel number; the bind also installed the permission for the peer's IP.
#[test]
fn channel_data_is_relayed_both_ways_after_channel_bind() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[]);
    let peer = addr(PEER);
    let raw = h.bind_channel(&mut c, CHANNEL, peer);
    success(&raw, method::CHANNEL_BIND);
    assert!(verifies(&raw, &c.key));

    let out = h.relay_from_client(c.tuple, &channel_data(CHANNEL, b"ping"));
    assert_eq!(out, Some((Path::Peer { relay, peer }, b"ping".to_vec())));
    assert_eq!(
        h.relay_from_client(c.tuple, &channel_data(CHANNEL + 1, b"ping")),
        None
    );

    let (path, msg) = h.peer_datagram(relay, peer, b"pong!").expect("relayed");
    assert_eq!(path, to_client(c.tuple));
    assert_eq!(msg, channel_data(CHANNEL, b"pong!"), "no padding over UDP");
    // Another port of the same IP has the permission but no channel: Data indication.
    let other = addr("198.51.100.1:5001");
    let (_, msg) = h.peer_datagram(relay, other, b"via data").expect("relayed");
    assert_eq!(data_indication(&msg), (other, b"via data".to_vec()));
}

/// RFC 8656 section 12: a binding lasts 600 s, then its number and its peer stay
/// reserved for 5 more minutes, during which neither may be bound elsewhere.
#[test]
fn channel_binding_expires_after_600_seconds_then_cools_down_for_300() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[RequestAttr::Lifetime(3600)]);
    let peer = addr(PEER);
    success(&h.bind_channel(&mut c, CHANNEL, peer), method::CHANNEL_BIND);
    // Keep the permission alive (it lasts 300 s, the channel 600 s).
    h.advance_to(290);
    h.permit(&mut c, peer);
    h.advance_to(580);
    h.permit(&mut c, peer);

    h.advance_to(599);
    let ping = channel_data(CHANNEL, b"ping");
    assert!(h.relay_from_client(c.tuple, &ping).is_some());
    let (_, msg) = h.peer_datagram(relay, peer, b"pong").expect("relayed");
    assert_eq!(msg, channel_data(CHANNEL, b"pong"));

    h.advance_to(600);
    assert_eq!(h.relay_from_client(c.tuple, &ping), None);
    let (_, msg) = h
        .peer_datagram(relay, peer, b"pong")
        .expect("permission still live");
    assert_eq!(data_indication(&msg), (peer, b"pong".to_vec()));
    let other_peer = addr("198.51.100.2:5000");
    let raw = h.bind_channel(&mut c, CHANNEL, other_peer);
    error(&raw, method::CHANNEL_BIND, 400);
    error(
        &h.bind_channel(&mut c, CHANNEL + 1, peer),
        method::CHANNEL_BIND,
        400,
    );

    h.advance_to(900);
    success(
        &h.bind_channel(&mut c, CHANNEL, other_peer),
        method::CHANNEL_BIND,
    );
    let out = h.relay_from_client(c.tuple, &ping);
    assert_eq!(
        out,
        Some((
            Path::Peer {
                relay,
                peer: other_peer
            },
            b"ping".to_vec()
        ))
    );
}

/// RFC 8656 section 12.2: a bound number cannot move to another peer nor a bound peer
/// to another number (400); binding the same pair again refreshes it.
#[test]
fn channel_rebinding_to_another_peer_or_number_is_400_and_the_same_pair_refreshes() {
    let mut h = Harness::new("");
    let mut c = alice();
    let (_, relay) = h.allocate(&mut c, &[RequestAttr::Lifetime(3600)]);
    let peer = addr(PEER);
    success(&h.bind_channel(&mut c, CHANNEL, peer), method::CHANNEL_BIND);
    let raw = h.bind_channel(&mut c, CHANNEL, addr("198.51.100.2:5000"));
    error(&raw, method::CHANNEL_BIND, 400);
    assert!(verifies(&raw, &c.key));
    let raw = h.bind_channel(&mut c, CHANNEL + 1, peer);
    error(&raw, method::CHANNEL_BIND, 400);
    // Same IP, other port: a different transport address, so also a different peer.
    let raw = h.bind_channel(&mut c, CHANNEL, addr("198.51.100.1:5001"));
    error(&raw, method::CHANNEL_BIND, 400);

    h.advance_to(500);
    success(&h.bind_channel(&mut c, CHANNEL, peer), method::CHANNEL_BIND);
    h.advance_to(1099);
    let ping = channel_data(CHANNEL, b"ping");
    assert_eq!(
        h.relay_from_client(c.tuple, &ping),
        Some((Path::Peer { relay, peer }, b"ping".to_vec()))
    );
    h.advance_to(1100);
    assert_eq!(h.relay_from_client(c.tuple, &ping), None);
}

/// RFC 8656 section 12.2: a CHANNEL-NUMBER outside the channel range is a 400.
/// (0x4000-0x7FFF is accepted, a deliberate widening of RFC 8656's 0x4000-0x4FFF for
/// RFC 5766 clients; both numbers here are outside either range.)
#[test]
fn channel_number_out_of_range_is_400() {
    let mut h = Harness::new("");
    let mut c = alice();
    h.allocate(&mut c, &[]);
    for number in [0x3FFF, 0x8000] {
        let raw = h.bind_channel(&mut c, number, addr(PEER));
        error(&raw, method::CHANNEL_BIND, 400);
        assert!(verifies(&raw, &c.key));
    }
    assert_eq!(h.server.deadline_count(), 1, "nothing was installed");
}
