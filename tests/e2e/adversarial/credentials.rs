//! MESSAGE-INTEGRITY, credentials and nonces: what follows the integrity check, another
//! user on a 5-tuple, stale, forged and misplaced nonces, username probing, REST
//! timestamps.

use super::*;

/// RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY are ignored (FINGERPRINT
/// aside). Appended by someone on the path, they must neither lengthen nor delete the
/// allocation, install a permission, spoil a valid request or be reported as unknown.
#[tokio::test]
async fn attributes_appended_after_message_integrity_are_ignored() {
    let server = allowing_server(&["127.0.0.0/8"], "").await;
    let s = session(&server, "127.0.0.1", "alice").await;
    let key = s.key();
    let exchange = |m: Msg| {
        let bytes = m.fingerprint().bytes();
        let s = &s;
        async move { s.exchange(&bytes).await.expect("response") }
    };
    // REQUESTED-TRANSPORT only after MESSAGE-INTEGRITY: as if absent.
    let r = exchange(s.authed(method::ALLOCATE).integrity(&key).transport(UDP)).await;
    assert_eq!(error_code(&r), Some(400));
    // LIFETIME after it does not lengthen the allocation (default 600 s).
    let r = exchange(
        s.authed(method::ALLOCATE)
            .transport(UDP)
            .integrity(&key)
            .lifetime(3000),
    )
    .await;
    assert!(is_success(&r), "Allocate: {:?}", error_code(&r));
    assert_eq!(lifetime(&r), Some(600));
    let relayed = relayed_of(&r);
    // Refresh with LIFETIME 0 after it does not delete.
    let r = exchange(s.authed(method::REFRESH).integrity(&key).lifetime(0)).await;
    assert_eq!(lifetime(&r), Some(600), "Refresh: {:?}", error_code(&r));
    // XOR-PEER-ADDRESS after it installs nothing.
    let outsider = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let outsider_addr = outsider.local_addr().unwrap();
    let r = exchange(
        s.authed(method::CREATE_PERMISSION)
            .integrity(&key)
            .peer(outsider_addr),
    )
    .await;
    assert_eq!(error_code(&r), Some(400));
    // A denied peer after it does not spoil the covered one.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let r = exchange(
        s.authed(method::CREATE_PERMISSION)
            .peer(peer.local_addr().unwrap())
            .integrity(&key)
            .peer(addr("10.0.0.1:1")),
    )
    .await;
    assert!(is_success(&r), "CreatePermission: {:?}", error_code(&r));
    outsider
        .send_to(b"from the outsider", relayed)
        .await
        .unwrap();
    peer.send_to(b"from the peer", relayed).await.unwrap();
    let got = s
        .recv_relayed(WAIT)
        .await
        .expect("the permitted peer's datagram");
    assert_eq!(
        parse_relayed(&got).map(data_of).as_deref(),
        Some(&b"from the peer"[..])
    );
    assert_eq!(
        s.recv_relayed(QUIET).await,
        None,
        "the outsider got a permission"
    );
    // An unknown comprehension-required attribute, a second MESSAGE-INTEGRITY and an
    // oversize NONCE after it change nothing.
    let r = exchange(
        s.authed(method::REFRESH)
            .lifetime(700)
            .integrity(&key)
            .attr(UNKNOWN_ATTR, b"x")
            .attr(attr::MESSAGE_INTEGRITY, &[0; 20])
            .attr(attr::NONCE, &[b'n'; 800]),
    )
    .await;
    assert_eq!(lifetime(&r), Some(700), "Refresh: {:?}", error_code(&r));
    // CHANNEL-NUMBER or USERNAME only after it: missing, 400.
    let r = exchange(
        s.authed(method::CHANNEL_BIND)
            .peer(peer.local_addr().unwrap())
            .integrity(&key)
            .channel(0x4000),
    )
    .await;
    assert_eq!(error_code(&r), Some(400));
    let r = exchange(
        Msg::request(method::REFRESH)
            .realm(&s.realm)
            .nonce(&s.nonce)
            .integrity(&key)
            .username(&s.username),
    )
    .await;
    assert_eq!(error_code(&r), Some(400));
}

/// RFC 8656 section 5: only the user who created an allocation may use it. On alice's
/// 5-tuple, eve's Allocate gets 437 (section 7.2; ARCHITECTURE.md) and her Refresh,
/// CreatePermission and ChannelBind 441, also when she replays the transaction id of
/// alice's last request (the retransmission cache answers only alice). Nothing changes.
#[tokio::test]
async fn another_user_on_an_existing_five_tuple_gets_437_or_441_and_changes_nothing() {
    let server = allowing_server(&["127.0.0.0/8"], "").await;
    let mut s = session(&server, "127.0.0.1", "alice").await;
    let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert!(is_success(&r));
    let relayed = relayed_of(&r);
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let outsider = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let r = s
        .request(method::CREATE_PERMISSION, |m| m.peer(peer_addr))
        .await;
    assert!(is_success(&r));
    let alice_refresh = s
        .authed(method::REFRESH)
        .lifetime(900)
        .integrity(&s.key())
        .fingerprint();
    let alice_txn = alice_refresh.txn();
    let r = s.exchange(&alice_refresh.bytes()).await.unwrap();
    assert_eq!(lifetime(&r), Some(900));
    let alice = (s.username.clone(), s.password.clone());

    let (u, p) = rest_credentials(SECRET, "eve", Duration::from_secs(600));
    (s.username, s.password) = (u, p);
    let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert_eq!(error_code(&r), Some(437), "Allocate");
    let r = s.request(method::REFRESH, |m| m.lifetime(0)).await;
    assert_eq!(error_code(&r), Some(441), "Refresh");
    let r = s
        .request(method::CREATE_PERMISSION, |m| {
            m.peer(outsider.local_addr().unwrap())
        })
        .await;
    assert_eq!(error_code(&r), Some(441), "CreatePermission");
    let r = s
        .request(method::CHANNEL_BIND, |m| m.channel(0x4001).peer(peer_addr))
        .await;
    assert_eq!(error_code(&r), Some(441), "ChannelBind");
    let replay = Msg::new(method::REFRESH, Class::Request, alice_txn)
        .username(&s.username)
        .realm(&s.realm)
        .nonce(&s.nonce)
        .lifetime(900)
        .integrity(&s.key())
        .fingerprint();
    let r = s.exchange(&replay.bytes()).await.unwrap();
    assert_eq!(error_code(&r), Some(441), "replayed transaction id");

    (s.username, s.password) = alice;
    // The allocation lives (eve's Refresh 0 deleted nothing), the outsider has no
    // permission, and channel 0x4001 is free for another peer.
    outsider
        .send_to(b"from the outsider", relayed)
        .await
        .unwrap();
    peer.send_to(b"from the peer", relayed).await.unwrap();
    let got = s
        .recv_relayed(WAIT)
        .await
        .expect("the permitted peer's datagram");
    assert_eq!(
        parse_relayed(&got).map(data_of).as_deref(),
        Some(&b"from the peer"[..])
    );
    assert_eq!(
        s.recv_relayed(QUIET).await,
        None,
        "eve's permission was installed"
    );
    let r = s
        .request(method::CHANNEL_BIND, |m| {
            m.channel(0x4001).peer(outsider.local_addr().unwrap())
        })
        .await;
    assert!(
        is_success(&r),
        "channel 0x4001 was bound by eve: {:?}",
        error_code(&r)
    );
    let r = s.request(method::REFRESH, |m| m.lifetime(600)).await;
    assert_eq!(lifetime(&r), Some(600));
}

/// RFC 8489 section 9.2.4: a nonce past its lifetime gets 438 with a fresh NONCE (and
/// REALM, no MESSAGE-INTEGRITY), and the fresh one works.
#[tokio::test]
async fn a_stale_nonce_gets_438_and_a_fresh_one() {
    let server = denying_server("stale-nonce = 1").await;
    let mut s = session(&server, "127.0.0.1", "alice").await;
    let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert!(is_success(&r));
    let old = s.nonce.clone();
    // 1 s lifetime on a whole-second clock: stale within ~2 s, 4 s at most.
    sleep(Duration::from_millis(1500)).await;
    let deadline = Instant::now() + Duration::from_secs(4);
    let stale = loop {
        let r = s.request(method::REFRESH, |m| m.lifetime(600)).await;
        match error_code(&r) {
            Some(438) => break r,
            None => {}
            other => panic!("Refresh with an aging nonce: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the nonce never went stale");
        sleep(Duration::from_millis(200)).await;
    };
    assert_challenge(&stale);
    s.take_nonce(&stale);
    assert_ne!(s.nonce, old);
    let r = s.request(method::REFRESH, |m| m.lifetime(600)).await;
    assert_eq!(
        lifetime(&r),
        Some(600),
        "with the fresh nonce: {:?}",
        error_code(&r)
    );
}

/// A 438 or 401 challenge: REALM and NONCE, no MESSAGE-INTEGRITY (RFC 8489 9.2.4).
fn assert_challenge(r: &[u8]) {
    assert!(
        attribute(r, attr::REALM).is_some(),
        "challenge without REALM"
    );
    assert!(
        attribute(r, attr::NONCE).is_some(),
        "challenge without NONCE"
    );
    assert!(
        attribute(r, attr::MESSAGE_INTEGRITY).is_none(),
        "challenge with MI"
    );
}

/// Nonces are a MAC the server checks, not a value it stores: made-up nonces, a real one
/// with its expiry pushed out, another server's, empty and oversize ones all get 438 (RFC
/// 8489 section 9.2.4: a NONCE that is not valid is answered with 438 before the
/// credentials are looked at), even with the right password.
#[tokio::test]
async fn forged_nonces_get_438() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let server = denying_server("").await;
    let other = denying_server("").await;
    let mut s = session(&server, "127.0.0.1", "alice").await;
    let foreign = session(&other, "127.0.0.1", "alice").await.nonce;
    let real = s.nonce.clone();
    let mut raw = URL_SAFE_NO_PAD.decode(&real).expect("nonce is base64url");
    raw[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    let extended = URL_SAFE_NO_PAD.encode(&raw);
    let forged = [
        "AAAAAAAAAAAAAAAA".to_owned(),
        extended,
        foreign,
        String::new(),
        "!".repeat(16),
        format!("{real}A"),
        real[..15].to_owned(),
        "n".repeat(700),
    ];
    for nonce in forged {
        s.nonce = nonce.clone();
        let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
        assert_eq!(error_code(&r), Some(438), "nonce {nonce:?}");
        assert_challenge(&r);
    }
    s.nonce = real;
    let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert!(is_success(&r), "the real nonce: {:?}", error_code(&r));
}

/// Nonces are bound to the client's IP: one issued to 127.0.0.1 gets 438 from 127.0.0.2
/// even with valid credentials. (Another port of the same IP is accepted: nonces are
/// bound to the address, not the port, as ARCHITECTURE.md lists.)
#[tokio::test]
async fn a_nonce_issued_to_another_address_is_refused() {
    let server = denying_server("").await;
    let a = session(&server, "127.0.0.1", "alice").await;
    let (u, p) = rest_credentials(SECRET, "mallory", Duration::from_secs(600));
    let mut m = Session::bind(ip("127.0.0.2"), server.addr, &u, &p).await;
    (m.realm, m.nonce) = (a.realm.clone(), a.nonce.clone());
    let r = m.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert_eq!(error_code(&r), Some(438));
    assert_challenge(&r);
    m.take_nonce(&r);
    assert_ne!(m.nonce, a.nonce);
    let r = m.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert!(is_success(&r), "with its own nonce: {:?}", error_code(&r));

    let mut same_ip = Session::bind(LOCALHOST, server.addr, &u, &p).await;
    (same_ip.realm, same_ip.nonce) = (a.realm.clone(), a.nonce.clone());
    let r = same_ip
        .request(method::ALLOCATE, |m| m.transport(UDP))
        .await;
    assert!(is_success(&r), "same IP, other port: {:?}", error_code(&r));
}

/// Username enumeration: an unknown user, a wrong password (static and REST user), a
/// wrong realm, a REST username that is expired, not a number, overflowing, or signed
/// with another secret, and no credentials at all: every 401 is the same bytes (same
/// transaction id on purpose; only the NONCE value may differ, when a second passes).
#[tokio::test]
async fn unknown_user_and_wrong_password_get_byte_identical_401s() {
    let server = start_server("user = [\"bob:hunter2\"]").await;
    let s = session(&server, "127.0.0.1", "probe").await;
    let now = unix_now();
    let rest = |name: &str| {
        let password = ferroturn::credentials::rest_password(SECRET.as_bytes(), name);
        (name.to_owned(), password, REALM.to_owned())
    };
    let (alice, alice_pw) = rest_credentials(SECRET, "alice", Duration::from_secs(600));
    let cases = [
        ("mallory".to_owned(), "pw".to_owned(), REALM.to_owned()),
        ("bob".to_owned(), "wrong".to_owned(), REALM.to_owned()),
        (
            "bob".to_owned(),
            "hunter2".to_owned(),
            "other.realm".to_owned(),
        ),
        (alice.clone(), format!("{alice_pw}x"), REALM.to_owned()),
        rest(&format!("{}:alice", now - 10)),
        rest("abc:alice"),
        rest("99999999999999999999999:alice"),
        (
            alice.clone(),
            ferroturn::credentials::rest_password(b"other-secret", &alice),
            REALM.to_owned(),
        ),
    ];
    let txn = [0x5A; 12];
    let unauthenticated = Msg::new(method::ALLOCATE, Class::Request, txn).transport(UDP);
    let reference = s.exchange(&unauthenticated.bytes()).await.expect("401");
    assert_eq!(error_code(&reference), Some(401));
    // No SOFTWARE, no reason phrase: header, ERROR-CODE, REALM, a 16-byte NONCE.
    assert_eq!(
        reference.len(),
        HEADER_LEN + 8 + 4 + REALM.len().next_multiple_of(4) + 20
    );
    for (username, password, realm) in cases {
        let key =
            ferroturn_core::proto::integrity::long_term_key(&username, &realm, password.as_bytes());
        let msg = Msg::new(method::ALLOCATE, Class::Request, txn)
            .username(&username)
            .realm(&realm)
            .nonce(&s.nonce)
            .transport(UDP)
            .integrity(&key);
        let r = s.exchange(&msg.bytes()).await.expect("401");
        assert_eq!(
            without_nonce(&r),
            without_nonce(&reference),
            "401 for {username:?}/{password:?}/{realm:?} differs"
        );
    }
}

/// `msg` with the NONCE value zeroed.
fn without_nonce(msg: &[u8]) -> Vec<u8> {
    let mut out = msg.to_vec();
    for (t, at, len) in attributes(msg) {
        if t == attr::NONCE {
            out[at..at + len].fill(0);
        }
    }
    out
}

/// TURN REST usernames whose timestamp is expired, not a decimal number, signed,
/// overflowing 64 bits, or further ahead than `max-credential-ttl` are refused, each
/// with a correct password for that username.
#[tokio::test]
async fn malformed_and_far_future_rest_timestamps_are_refused() {
    let server = start_server("max-credential-ttl = 86400").await;
    let now = unix_now();
    let usernames = [
        format!("{}:alice", now - 1),
        "abc:alice".to_owned(),
        "-5:alice".to_owned(),
        "+999999999999:alice".to_owned(),
        format!(" {}:alice", now + 600),
        "1e12:alice".to_owned(),
        "99999999999999999999999:alice".to_owned(),
        format!("{}:alice", u64::MAX),
        format!("{}:alice", now + 2 * 86400),
        ":alice".to_owned(),
    ];
    for username in usernames {
        let password = ferroturn::credentials::rest_password(SECRET.as_bytes(), &username);
        let mut c = TurnClient::new(server.addr, &username, &password)
            .await
            .unwrap();
        assert_eq!(code(c.allocate().await), 401, "{username:?}");
    }
    let username = format!("{}:alice", now + 3600);
    let password = ferroturn::credentials::rest_password(SECRET.as_bytes(), &username);
    let mut c = TurnClient::new(server.addr, &username, &password)
        .await
        .unwrap();
    c.allocate().await.expect("a valid REST username");
}
