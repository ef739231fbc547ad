//! RFC 8016 MOBILITY-TICKETs under attack: guessed, forged and altered tickets, and a
//! stolen one shown with another user's valid credentials, move nothing.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;

/// Guessed tickets of the right shape (32 base64url characters), single characters of
/// the real ticket changed, random bytes of other lengths: each gets 400 from another
/// client port, with valid credentials of alice's own and of another user; the real
/// ticket with another user's credentials gets 441. alice's allocation stays where it
/// is, relaying, and her ticket still moves it afterwards. One relay thread: the
/// unauthenticated answers all come from one rate-limit bucket, whose burst (100) holds
/// them.
#[tokio::test]
async fn guessed_and_stolen_mobility_tickets_move_nothing() {
    let server = allowing_server(&["127.0.0.1"], "relay-threads = 1\nmobility = true").await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut alice = client(&server, "alice").await;
    let home = alice.local_addr().unwrap();
    alice.allocate_mobile().await.unwrap();
    alice.channel_bind(0x4000, peer_addr).await.unwrap();
    let ticket = alice.mobility_ticket().expect("a MOBILITY-TICKET").to_vec();

    let mut guesses: Vec<Vec<u8>> = (0..40)
        .map(|_| {
            let raw: [u8; 24] = rand::rng().random();
            URL_SAFE_NO_PAD.encode(raw).into_bytes()
        })
        .collect();
    for i in [0, 1, 9, 15, 20, 24, 30, 31] {
        let mut altered = ticket.clone();
        altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
        guesses.push(altered);
    }
    for len in [1, 8, 31, 33, 64, 200] {
        let junk: Vec<u8> = (0..len).map(|_| rand::rng().random()).collect();
        guesses.push(junk);
    }
    let mut thief = client(&server, "mallory").await;
    let mut own_user_elsewhere = client(&server, "alice").await;
    for (i, guess) in guesses.iter().enumerate() {
        let attacker = if i % 2 == 0 {
            &mut thief
        } else {
            &mut own_user_elsewhere
        };
        let r = attacker
            .request(method::REFRESH, &[RequestAttr::MobilityTicket(guess)])
            .await;
        assert_eq!(
            code(r),
            400,
            "guess {i}: {:?}",
            String::from_utf8_lossy(guess)
        );
    }
    let r = thief
        .request(method::REFRESH, &[RequestAttr::MobilityTicket(&ticket)])
        .await;
    assert_eq!(code(r), 441, "the real ticket with mallory's credentials");

    // Nothing moved: alice's channel relays from her first port, both ways.
    let sessions = server.handle.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].client, home);
    alice
        .send_channel_data(0x4000, b"still here")
        .await
        .unwrap();
    let (data, from) = recv_from(&peer, WAIT).await.expect("relayed to the peer");
    assert_eq!(data, b"still here");
    peer.send_to(b"and back", from).await.unwrap();
    assert_eq!(
        relayed_data(&mut alice, WAIT).await,
        Some(b"and back".to_vec())
    );
    let refused = counter(&server, |s| s.errors_with(400), guesses.len() as u64).await;
    assert!(refused >= guesses.len() as u64, "{refused} 400s");
    assert_eq!(server.handle.metrics().stats.allocations_moved, 0);

    // The guesses did not use the real ticket up.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    alice
        .move_to(socket)
        .await
        .expect("the real ticket moves it");
    assert_eq!(
        server.handle.sessions()[0].client,
        alice.local_addr().unwrap()
    );
}
