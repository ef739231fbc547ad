//! Malformed input: a ChannelData length lie, truncated and misaligned messages,
//! zero-length, duplicate, unknown and huge attributes, channel numbers out of range.

use super::*;

// ---------------------------------------------------------------------------------
// ChannelData length lie.

/// CVE-2020-4067 style: a ChannelData whose length field claims more bytes than the
/// datagram holds must not relay the rest of a receive buffer. After a large datagram
/// has filled the server's buffer, lies are dropped whole, bytes past the length (UDP
/// padding) are not relayed, and valid ChannelData still is.
#[tokio::test]
async fn channel_data_length_lie_relays_nothing_beyond_the_datagram() {
    let server = start_server("").await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut c = client(&server, "alice").await;
    c.allocate().await.unwrap();
    c.channel_bind(0x4000, peer.local_addr().unwrap())
        .await
        .unwrap();
    c.send_channel_data(0x4000, &[0xEE; 1200]).await.unwrap();
    let (d, _) = recv_from(&peer, WAIT).await.expect("the large datagram");
    assert_eq!(d, vec![0xEE; 1200]);
    let lies: [&[u8]; 5] = [
        &[0x40, 0x00, 0x04, 0xB0, 1, 2, 3, 4],
        &[0x40, 0x00, 0xFF, 0xFF],
        &[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4],
        &[0x40, 0x00, 0x00, 0x01],
        &[0x40, 0x00, 0x00],
    ];
    for lie in lies {
        c.send_raw(lie).await.unwrap();
    }
    c.send_raw(&[
        0x40, 0x00, 0x00, 0x03, b'a', b'b', b'c', 0xEE, 0xEE, 0xEE, 0xEE, 0xEE,
    ])
    .await
    .unwrap();
    c.send_channel_data(0x4000, b"valid").await.unwrap();
    let got: Vec<Vec<u8>> = drain(&peer, WAIT, 2)
        .await
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(got, vec![b"abc".to_vec(), b"valid".to_vec()]);
    let extra = drain(&peer, QUIET, usize::MAX).await;
    assert!(extra.is_empty(), "relayed more: {extra:?}");
}

// ---------------------------------------------------------------------------------
// Malformed messages.

/// An allocated raw session on the base server (127.0.0.1 allowed as a peer).
async fn allocated_session(server: &TestServer) -> (Session, SocketAddr) {
    let s = session(server, "127.0.0.1", "alice").await;
    let r = s.request(method::ALLOCATE, |m| m.transport(UDP)).await;
    assert!(is_success(&r), "Allocate: {:?}", error_code(&r));
    let relayed = relayed_of(&r);
    (s, relayed)
}

/// Sends `bad`, then a Binding request; returns what came back before the Binding
/// response (the server answers one 5-tuple in order) after checking that the Binding
/// and a credentialed Refresh are still served.
async fn probe(s: &Session, bad: &[u8]) -> Vec<Vec<u8>> {
    s.send(bad).await;
    let binding = Msg::request(method::BINDING).bytes();
    s.send(&binding).await;
    let mut before = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let d = s
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await
            .expect("the Binding after a malformed message is answered");
        if d.get(8..HEADER_LEN) == binding.get(8..HEADER_LEN) {
            assert!(is_success(&d));
            break;
        }
        before.push(d);
    }
    let r = s.request(method::REFRESH, |m| m.lifetime(600)).await;
    assert_eq!(lifetime(&r), Some(600), "Refresh after a malformed message");
    before
}

/// Truncated headers, length fields past the end of the datagram, attribute lengths
/// overflowing the message, lengths that are not a multiple of 4 and misaligned
/// attributes are dropped without an answer, and the next requests are served.
#[tokio::test]
async fn truncated_overlong_and_misaligned_messages_are_dropped() {
    let server = start_server("").await;
    let (s, _) = allocated_session(&server).await;
    let binding = Msg::request(method::BINDING)
        .attr(attr::SOFTWARE, b"abcd")
        .bytes();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty datagram", vec![]),
        ("one byte", vec![0x00]),
        ("19-byte header", binding[..19].to_vec()),
        ("header without magic cookie", {
            let mut m = binding.clone();
            m[4] ^= 0xFF;
            m
        }),
        ("body length 8 beyond the end", {
            let mut m = binding.clone();
            m[3] += 8;
            m
        }),
        ("body length 65532, 8 bytes sent", {
            let mut m = binding.clone();
            m[2..4].copy_from_slice(&65_532u16.to_be_bytes());
            m
        }),
        (
            "body shorter than the datagram",
            [binding.clone(), vec![0; 4]].concat(),
        ),
        (
            "attribute length 0xFFFF",
            Msg::request(method::BINDING)
                .lying_attr(attr::SOFTWARE, 0xFFFF, b"abcd")
                .bytes(),
        ),
        (
            "attribute length 8 with 4 bytes left",
            Msg::request(method::BINDING)
                .lying_attr(attr::SOFTWARE, 8, b"abcd")
                .bytes(),
        ),
        ("body length 5", {
            let mut m = Msg::request(method::BINDING).bytes();
            m.extend_from_slice(&[0, 0x22, 0, 1, 7]);
            m[3] = 5;
            m
        }),
        (
            "unpadded attribute followed by another",
            Msg::request(method::BINDING)
                .lying_attr(attr::SOFTWARE, 5, b"abcde")
                .lying_attr(0x8023, 3, b"xyz")
                .bytes(),
        ),
        ("credentialed Allocate cut short", {
            let m = s
                .authed(method::ALLOCATE)
                .transport(UDP)
                .integrity(&s.key())
                .bytes();
            m[..m.len() - 10].to_vec()
        }),
        (
            "MESSAGE-INTEGRITY of 19 bytes",
            s.authed(method::REFRESH)
                .attr(attr::MESSAGE_INTEGRITY, &[0; 19])
                .bytes(),
        ),
        ("FINGERPRINT not last", {
            Msg::request(method::BINDING)
                .fingerprint()
                .attr(attr::SOFTWARE, b"x")
                .bytes()
        }),
        ("FINGERPRINT wrong", {
            let mut m = Msg::request(method::BINDING).fingerprint().bytes();
            let n = m.len();
            m[n - 1] ^= 1;
            m
        }),
        ("65 attributes", {
            let mut m = Msg::request(method::BINDING);
            for _ in 0..65 {
                m = m.attr(0x8F00, &[]);
            }
            m.bytes()
        }),
    ];
    for (what, bytes) in bad {
        let answers = probe(&s, &bytes).await;
        assert!(answers.is_empty(), "{what}: answered {answers:?}");
    }
}

/// Zero-length attributes: where a value is required the request gets 400 (or the
/// challenge its empty credential earns: 401 for USERNAME and REALM, 438 for NONCE);
/// zero-length MESSAGE-INTEGRITY or FINGERPRINT make the message malformed (dropped);
/// an empty optional attribute is ignored.
#[tokio::test]
async fn zero_length_attributes_are_refused_or_ignored() {
    let server = start_server("").await;
    let (s, _) = allocated_session(&server).await;
    let key = s.key();
    let credentialed = |method, t: u16| s.authed(method).attr(t, &[]).integrity(&key).bytes();
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        (
            "REQUESTED-TRANSPORT",
            credentialed(method::ALLOCATE, attr::REQUESTED_TRANSPORT),
            Some(400),
        ),
        (
            "LIFETIME",
            credentialed(method::REFRESH, attr::LIFETIME),
            Some(400),
        ),
        (
            "XOR-PEER-ADDRESS",
            credentialed(method::CREATE_PERMISSION, attr::XOR_PEER_ADDRESS),
            Some(400),
        ),
        (
            "CHANNEL-NUMBER",
            credentialed(method::CHANNEL_BIND, attr::CHANNEL_NUMBER),
            Some(400),
        ),
        (
            "REQUESTED-ADDRESS-FAMILY",
            credentialed(method::REFRESH, attr::REQUESTED_ADDRESS_FAMILY),
            Some(400),
        ),
        (
            "USERNAME",
            Msg::request(method::REFRESH)
                .username("")
                .realm(&s.realm)
                .nonce(&s.nonce)
                .integrity(&key)
                .bytes(),
            Some(401),
        ),
        (
            "REALM",
            Msg::request(method::REFRESH)
                .username(&s.username)
                .realm("")
                .nonce(&s.nonce)
                .integrity(&key)
                .bytes(),
            Some(401),
        ),
        (
            "NONCE",
            Msg::request(method::REFRESH)
                .username(&s.username)
                .realm(&s.realm)
                .nonce("")
                .integrity(&key)
                .bytes(),
            Some(438),
        ),
        (
            "MESSAGE-INTEGRITY",
            s.authed(method::REFRESH)
                .attr(attr::MESSAGE_INTEGRITY, &[])
                .bytes(),
            None,
        ),
        (
            "FINGERPRINT",
            Msg::request(method::BINDING)
                .attr(attr::FINGERPRINT, &[])
                .bytes(),
            None,
        ),
    ];
    for (what, bytes, expected) in cases {
        let answers = probe(&s, &bytes).await;
        let codes: Vec<Option<u16>> = answers.iter().map(|a| error_code(a)).collect();
        match expected {
            Some(c) => assert_eq!(codes, vec![Some(c)], "zero-length {what}"),
            None => assert!(codes.is_empty(), "zero-length {what}: answered {codes:?}"),
        }
    }
    // Empty comprehension-optional attributes are ignored.
    let r = s
        .exchange(
            &Msg::request(method::BINDING)
                .attr(attr::SOFTWARE, &[])
                .attr(0x8F00, &[])
                .bytes(),
        )
        .await
        .unwrap();
    assert!(is_success(&r));
    let r = s
        .request(method::REFRESH, |m| {
            m.attr(attr::SOFTWARE, &[]).lifetime(600)
        })
        .await;
    assert_eq!(lifetime(&r), Some(600));
}

/// RFC 8489 section 14: when an attribute repeats, the first one counts: LIFETIME,
/// REQUESTED-TRANSPORT, CHANNEL-NUMBER, XOR-PEER-ADDRESS of a ChannelBind, USERNAME.
#[tokio::test]
async fn duplicate_attributes_are_read_first_wins() {
    let server = allowing_server(&["127.0.0.1"], "").await;
    let target = Target::new().await;
    let allowed = target.at("127.0.0.1");
    let denied = addr("10.0.0.1:9");

    let s = session(&server, "127.0.0.1", "alice").await;
    let r = s
        .request(method::ALLOCATE, |m| {
            m.transport(UDP).lifetime(700).lifetime(1500)
        })
        .await;
    assert_eq!(
        lifetime(&r),
        Some(700),
        "two LIFETIMEs: {:?}",
        error_code(&r)
    );
    let r = s
        .request(method::REFRESH, |m| m.lifetime(800).lifetime(0))
        .await;
    assert_eq!(lifetime(&r), Some(800), "two LIFETIMEs in a Refresh");
    let r = s
        .request(method::CHANNEL_BIND, |m| {
            m.channel(0x4001).channel(0x3000).peer(allowed).peer(denied)
        })
        .await;
    assert!(
        is_success(&r),
        "ChannelBind, allowed peer first: {:?}",
        error_code(&r)
    );
    let r = s
        .request(method::CHANNEL_BIND, |m| {
            m.channel(0x4002).peer(denied).peer(allowed)
        })
        .await;
    assert_eq!(error_code(&r), Some(403), "ChannelBind, denied peer first");

    let t = session(&server, "127.0.0.1", "bob").await;
    let r = t
        .request(method::ALLOCATE, |m| m.transport(UDP).transport(TCP))
        .await;
    assert!(is_success(&r), "UDP then TCP: {:?}", error_code(&r));
    let u = session(&server, "127.0.0.1", "carol").await;
    let r = u
        .request(method::ALLOCATE, |m| m.transport(TCP).transport(UDP))
        .await;
    // RFC 6062 section 5.1: a TCP allocation over UDP is a 400 (the first one counts).
    assert_eq!(error_code(&r), Some(400), "TCP then UDP");

    // Two USERNAMEs: the key is the first one's.
    let msg = |first: &str, second: &str| {
        Msg::request(method::REFRESH)
            .username(first)
            .username(second)
            .realm(&s.realm)
            .nonce(&s.nonce)
            .lifetime(600)
            .integrity(&s.key())
            .fingerprint()
            .bytes()
    };
    let r = s.exchange(&msg(&s.username, "mallory")).await.unwrap();
    assert_eq!(
        lifetime(&r),
        Some(600),
        "own USERNAME first: {:?}",
        error_code(&r)
    );
    let r = s.exchange(&msg("mallory", &s.username)).await.unwrap();
    assert_eq!(error_code(&r), Some(401), "mallory first");
    // Data flows on channel 0x4001, the first number.
    s.send(&ferroturn::client::channel_data(0x4001, b"on 0x4001"))
        .await;
    let (d, _) = recv_from(&target.v4, WAIT)
        .await
        .expect("ChannelData on the first number");
    assert_eq!(d, b"on 0x4001");
}

/// RFC 8489 section 6.3.1: unknown comprehension-required attributes get 420 listing
/// them, after authentication; the list is capped (8 entries) however many are sent, and
/// the request is not carried out. Comprehension-optional ones are ignored. A Send
/// indication with one (DONT-FRAGMENT included: RFC 8656 section 11.2) is dropped.
#[tokio::test]
async fn unknown_comprehension_required_attributes_get_420_with_a_capped_list() {
    let server = start_server("").await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let s = session(&server, "127.0.0.1", "alice").await;

    let mut binding = Msg::request(method::BINDING);
    for t in 0x7F00..0x7F14u16 {
        binding = binding.attr(t, &[1]);
    }
    let r = s.exchange(&binding.bytes()).await.unwrap();
    assert_eq!(error_code(&r), Some(420));
    let listed = client_codec::decode_response(&r)
        .unwrap()
        .unknown_attributes;
    assert_eq!(listed, (0x7F00..0x7F08).collect::<Vec<u16>>());
    assert!(
        r.len() <= HEADER_LEN + 8 + 4 + 16,
        "420 of {} bytes",
        r.len()
    );

    // Unauthenticated: the challenge comes first.
    let r = s
        .exchange(
            &Msg::request(method::ALLOCATE)
                .transport(UDP)
                .attr(UNKNOWN_ATTR, &[])
                .bytes(),
        )
        .await
        .unwrap();
    assert_eq!(error_code(&r), Some(401));
    // Authenticated: 420 with MESSAGE-INTEGRITY, and no allocation is made.
    let r = s
        .request(method::ALLOCATE, |m| {
            m.transport(UDP).attr(UNKNOWN_ATTR, &[])
        })
        .await;
    assert_eq!(error_code(&r), Some(420));
    assert_eq!(
        client_codec::decode_response(&r)
            .unwrap()
            .unknown_attributes,
        vec![UNKNOWN_ATTR]
    );
    assert!(attribute(&r, attr::MESSAGE_INTEGRITY).is_some());
    let r = s
        .request(method::ALLOCATE, |m| {
            m.transport(UDP).attr(0x8F00, &[1, 2, 3])
        })
        .await;
    assert!(is_success(&r), "the 420 allocated: {:?}", error_code(&r));
    let r = s
        .request(method::CREATE_PERMISSION, |m| m.peer(peer_addr))
        .await;
    assert!(is_success(&r));

    let send = |extra: &[u16], data: &[u8]| {
        let mut m = Msg::new(method::SEND, Class::Indication, rand::random())
            .peer(peer_addr)
            .attr(attr::DATA, data);
        for &t in extra {
            m = m.attr(t, &[]);
        }
        m.bytes()
    };
    s.send(&send(&[UNKNOWN_ATTR], b"with an unknown attribute"))
        .await;
    s.send(&send(&[attr::DONT_FRAGMENT], b"with DONT-FRAGMENT"))
        .await;
    s.send(&send(&[], b"plain")).await;
    let got: Vec<Vec<u8>> = drain(&peer, WAIT, 1)
        .await
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(got, vec![b"plain".to_vec()]);
}

/// RFC 5780's RESPONSE-PORT and PADDING are comprehension-required and ferroturn
/// implements neither (no NAT behaviour discovery): a Binding carrying one is answered 420
/// with UNKNOWN-ATTRIBUTES naming it (RFC 8489 section 7.3.1), not a success that ignored
/// it, which would have a client believe its response port or padding was honoured.
#[tokio::test]
async fn rfc5780_response_port_and_padding_get_420_as_unknown() {
    let server = start_server("").await;
    let s = session(&server, "127.0.0.1", "alice").await;
    for (t, value) in [
        (attr::RESPONSE_PORT, &[0x13, 0x88, 0, 0][..]),
        (attr::PADDING, &[0; 8][..]),
    ] {
        let binding = Msg::request(method::BINDING).attr(t, value);
        let r = s.exchange(&binding.bytes()).await.expect("an answer");
        assert_eq!(error_code(&r), Some(420), "Binding with {t:#06x}");
        assert_eq!(
            client_codec::decode_response(&r)
                .unwrap()
                .unknown_attributes,
            vec![t],
            "Binding with {t:#06x}"
        );
    }
}

/// Messages near the 64 KiB datagram limit: a Binding padded with a 65 000-byte optional
/// attribute is answered (briefly), an oversize SOFTWARE or USERNAME gets 400, 64 KiB of
/// garbage is dropped, and a 65 000-byte ChannelData and Send indication are relayed
/// whole. The next requests are served after each.
#[tokio::test]
async fn huge_messages_are_answered_refused_or_relayed_whole() {
    let server = start_server("").await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (s, _) = allocated_session(&server).await;

    let huge = vec![0x61; 65_000];
    let padded_binding = Msg::request(method::BINDING).attr(0x8F00, &huge).bytes();
    let r = s.exchange(&padded_binding).await.expect("answered");
    assert!(
        is_success(&r) && r.len() <= 64,
        "{} bytes, {:?}",
        r.len(),
        error_code(&r)
    );
    let answers = probe(
        &s,
        &Msg::request(method::BINDING)
            .attr(attr::SOFTWARE, &huge)
            .bytes(),
    )
    .await;
    assert_eq!(
        answers.iter().map(|a| error_code(a)).collect::<Vec<_>>(),
        vec![Some(400)]
    );
    let answers = probe(
        &s,
        &s.authed(method::REFRESH)
            .attr(attr::USERNAME, &huge[..600])
            .bytes(),
    )
    .await;
    assert_eq!(
        answers.iter().map(|a| error_code(a)).collect::<Vec<_>>(),
        vec![Some(400)]
    );
    let r = s
        .request(method::REFRESH, |m| {
            m.attr(0x8F00, &huge[..60_000]).lifetime(600)
        })
        .await;
    assert_eq!(
        lifetime(&r),
        Some(600),
        "large credentialed Refresh: {:?}",
        error_code(&r)
    );
    for garbage in [vec![0xFF; 65_507], vec![0x00; 65_507], vec![0x41; 65_507]] {
        assert!(probe(&s, &garbage).await.is_empty());
    }

    let r = s
        .request(method::CHANNEL_BIND, |m| m.channel(0x4000).peer(peer_addr))
        .await;
    assert!(is_success(&r));
    s.send(&ferroturn::client::channel_data(0x4000, &huge))
        .await;
    let (d, _) = recv_from(&peer, WAIT).await.expect("the large ChannelData");
    assert_eq!(d, huge);
    s.send(&ferroturn::client::send_indication(peer_addr, &huge))
        .await;
    let (d, _) = recv_from(&peer, WAIT)
        .await
        .expect("the large Send indication");
    assert_eq!(d, huge);
}

/// Channel numbers outside 0x4000-0x7FFF are refused by ChannelBind (400), datagrams
/// whose first bits make them neither STUN nor ChannelData (0x8000 and up) are dropped,
/// and 0x4FFF and 0x7FFF are accepted (the RFC 5766 range; ARCHITECTURE.md).
#[tokio::test]
async fn out_of_range_channel_numbers_are_refused_and_dropped() {
    let server = start_server("").await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (s, _) = allocated_session(&server).await;
    for number in [0x0000u16, 0x0001, 0x3FFF, 0x8000, 0xBFFF, 0xC000, 0xFFFF] {
        let r = s
            .request(method::CHANNEL_BIND, |m| m.channel(number).peer(peer_addr))
            .await;
        assert_eq!(error_code(&r), Some(400), "channel {number:#06x}");
    }
    let r = s
        .request(method::CHANNEL_BIND, |m| m.channel(0x7FFF).peer(peer_addr))
        .await;
    assert!(is_success(&r), "0x7FFF: {:?}", error_code(&r));
    for first in [0x80u8, 0xBF, 0xC0, 0xFF] {
        let answers = probe(&s, &[first, 0xFF, 0x00, 0x04, 1, 2, 3, 4]).await;
        assert!(answers.is_empty(), "{first:#04x}: answered {answers:?}");
    }
    assert!(
        drain(&peer, QUIET, usize::MAX).await.is_empty(),
        "relayed a non-channel"
    );
    s.send(&ferroturn::client::channel_data(0x7FFF, b"on 0x7FFF"))
        .await;
    let (d, _) = recv_from(&peer, WAIT).await.expect("ChannelData on 0x7FFF");
    assert_eq!(d, b"on 0x7FFF");
}
