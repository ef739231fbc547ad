//! RFC 8016 mobility end to end: our client moves its allocation from one local UDP port
//! to another on a server of two relay threads (shards), with a channel to an echo peer
//! working before and after every move, whichever shard the new port reaches.

use crate::common::{
    SECRET, TestServer, WAIT, code, echo_peer, published_metrics, rest_credentials, start_server,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferroturn::client::{Relayed, TurnClient};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

/// At most this many moves; each new port reaches either shard, so one of the first
/// few lands on the other shard (all 24 on one: a chance of 2^-24).
const MAX_MOVES: usize = 24;
const CHANNEL: u16 = 0x4000;

/// The shard a ticket names: its first byte (`ferroturn_core::auth::ticket`'s layout;
/// clients treat tickets as opaque, this test peeks to know where the allocation is).
fn shard_of(ticket: &[u8]) -> u8 {
    let raw = URL_SAFE_NO_PAD.decode(ticket).expect("a base64url ticket");
    raw[0]
}

/// ChannelData to the echo peer comes back on the client's current socket.
async fn echoes(c: &mut TurnClient, payload: &[u8], what: &str) {
    c.send_channel_data(CHANNEL, payload).await.unwrap();
    assert_eq!(
        c.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Channel {
            channel: CHANNEL,
            data: payload.to_vec()
        }),
        "{what}"
    );
}

/// From `old` (the client's previous address, bound again): a Refresh with the
/// client's credentials finds no allocation there (437).
async fn old_address_is_gone(
    server: &TestServer,
    c: &TurnClient,
    creds: &(String, String),
    old: SocketAddr,
) {
    let socket = UdpSocket::bind(old)
        .await
        .expect("the old port is free again");
    let (realm, nonce) = c.realm_and_nonce().expect("authenticated before");
    let mut stale = TurnClient::with_socket(socket, server.addr, &creds.0, &creds.1);
    stale.set_realm_and_nonce(realm, nonce);
    assert_eq!(code(stale.refresh(600).await), 437, "from {old}");
}

#[tokio::test]
async fn an_allocation_moves_between_local_ports_and_shards_with_its_channel() {
    let server = start_server("relay-threads = 2\nmobility = true").await;
    let peer = echo_peer().await;
    let creds = rest_credentials(SECRET, "alice", Duration::from_secs(600));
    let mut c = TurnClient::new(server.addr, &creds.0, &creds.1)
        .await
        .unwrap();
    let relayed = c.allocate_mobile().await.unwrap();
    c.channel_bind(CHANNEL, peer.addr).await.unwrap();
    echoes(&mut c, b"before any move", "before").await;

    let mut shard = shard_of(c.mobility_ticket().expect("a MOBILITY-TICKET"));
    let (mut moves, mut across) = (0u64, 0u64);
    while moves < MAX_MOVES as u64 && (across == 0 || moves < 3) {
        let old = c.local_addr().unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let new = socket.local_addr().unwrap();
        c.move_to(socket).await.unwrap();
        moves += 1;
        let now_at = shard_of(c.mobility_ticket().unwrap());
        if now_at != shard {
            across += 1;
        }
        shard = now_at;
        echoes(
            &mut c,
            format!("after move {moves}").as_bytes(),
            "after a move",
        )
        .await;
        let sessions = server.handle.sessions();
        assert_eq!(sessions.len(), 1);
        assert_eq!((sessions[0].client, sessions[0].relayed), (new, relayed));
        old_address_is_gone(&server, &c, &creds, old).await;
    }
    assert!(
        across >= 1,
        "no move reached the other shard in {moves} tries"
    );
    // The last move's refresh: its ticket and the channel still serve.
    assert!(c.refresh(600).await.is_ok());
    echoes(&mut c, b"at the end", "at the end").await;

    let m = published_metrics(&server, "the moves and tickets", |m| {
        m.stats.allocations_moved >= moves && m.stats.tickets_issued > moves
    })
    .await;
    assert_eq!(m.stats.allocations_moved, moves);
    assert_eq!(m.stats.allocations_moved_across_shards, across);
    assert!(m.stats.tickets_issued > moves, "{:?}", m.stats);
}

/// With the kernel fast path on: the channel is relayed by the kernel before and after
/// every move (within a shard and to the other one), which takes it out of the kernel
/// under the old client address and puts it back under the new one (a stale entry would send the peer's echoes to the old
/// port, and the echo would not come back). Deleting the allocation at the end leaves
/// no channel in the kernel.
#[tokio::test]
async fn moves_rekey_the_kernel_fast_path() {
    if let Some(why) = crate::common::kernel_offload_unavailable() {
        println!("kernel offload test skipped: {why}");
        return;
    }
    let server = start_server("relay-threads = 2\nmobility = true\nkernel-offload = \"on\"").await;
    let peer = echo_peer().await;
    let creds = rest_credentials(SECRET, "alice", Duration::from_secs(600));
    let mut c = TurnClient::new(server.addr, &creds.0, &creds.1)
        .await
        .unwrap();
    c.allocate_mobile().await.unwrap();
    c.channel_bind(CHANNEL, peer.addr).await.unwrap();
    let (mut echoed, mut moves, mut across) = (0u64, 0usize, 0usize);
    let mut shard = shard_of(c.mobility_ticket().expect("a MOBILITY-TICKET"));
    loop {
        for i in 0..3 {
            let payload = format!("move {moves} echo {i}");
            echoes(&mut c, payload.as_bytes(), "through the kernel").await;
            echoed += 1;
        }
        if moves == MAX_MOVES || (moves >= 4 && across > 0) {
            break;
        }
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.move_to(socket).await.unwrap();
        moves += 1;
        let now_at = shard_of(c.mobility_ticket().unwrap());
        across += usize::from(now_at != shard);
        shard = now_at;
    }
    assert!(
        across >= 1,
        "no move reached the other shard in {moves} tries"
    );
    assert_eq!(c.refresh(0).await.unwrap(), 0);
    let (kernel, installed, user) =
        crate::common::kernel_and_user_after_deletions(&server, "the deletion", 1).await;
    println!("{echoed} echoes; kernel {kernel:?}; user space {user:?}");
    for (direction, flow) in [("up", kernel.up.relayed), ("down", kernel.down.relayed)] {
        assert!(
            flow.packets >= echoed,
            "the kernel relayed {} datagrams {direction}, fewer than the {echoed} echoes",
            flow.packets
        );
    }
    crate::common::assert_kernel_undisturbed(&kernel, installed);
}

/// A dual allocation (an IPv4 and an IPv6 relay) moves to the other shard with both relay
/// sockets: after the moves its channels to an IPv4 and an IPv6 peer both echo.
#[tokio::test]
async fn a_dual_allocation_moves_between_shards_with_both_relays() {
    use ferroturn::client::codec::RequestAttr;
    use ferroturn_core::proto::Family;
    let server = start_server(
        "relay-threads = 2\nmobility = true\nlistening-ip = [\"127.0.0.1\", \"::1\"]\n\
         allowed-peer-ip = [\"127.0.0.1\", \"::1\"]",
    )
    .await;
    let (v4_peer, v6_peer) = (
        echo_peer().await,
        crate::common::echo_peer_on("[::1]:0").await,
    );
    let creds = rest_credentials(SECRET, "alice", Duration::from_secs(600));
    let mut c = TurnClient::new(server.addr, &creds.0, &creds.1)
        .await
        .unwrap();
    c.allocate_with(&[
        RequestAttr::RequestedTransport(17),
        RequestAttr::AdditionalFamily(Family::V6),
        RequestAttr::MobilityTicket(&[]),
    ])
    .await
    .unwrap();
    let v6_channel = CHANNEL + 1;
    c.channel_bind(CHANNEL, v4_peer.addr).await.unwrap();
    c.channel_bind(v6_channel, v6_peer.addr).await.unwrap();
    let start = shard_of(c.mobility_ticket().expect("a MOBILITY-TICKET"));
    let mut moves = 0;
    while moves < MAX_MOVES && shard_of(c.mobility_ticket().unwrap()) == start {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.move_to(socket).await.unwrap();
        moves += 1;
    }
    assert_ne!(
        shard_of(c.mobility_ticket().unwrap()),
        start,
        "no move reached the other shard in {moves} tries"
    );
    echoes(&mut c, b"through the IPv4 relay", "IPv4 peer").await;
    c.send_channel_data(v6_channel, b"through the IPv6 relay")
        .await
        .unwrap();
    assert_eq!(
        c.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Channel {
            channel: v6_channel,
            data: b"through the IPv6 relay".to_vec()
        }),
        "IPv6 peer"
    );
    let sessions = server.handle.sessions();
    assert_eq!(sessions.len(), 1);
    assert!(
        sessions[0].additional_relayed.is_some(),
        "{:?}",
        sessions[0]
    );
}
