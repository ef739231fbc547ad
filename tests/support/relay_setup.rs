//! A core `Server` with one allocation whose relay path is ready: a channel 0x4001 bound
//! to [`CHANNEL_PEER`] and a permission for [`PERMITTED_PEER`]'s IP. Shared by the
//! allocation-free test and the fast-path benchmark.

use ferroturn::client::codec::{self as client_codec, RequestAttr};
use ferroturn::config::Config;
use ferroturn::state::LocalState;
use ferroturn_core::proto::integrity::long_term_key;
use ferroturn_core::proto::wire::method;
use ferroturn_core::server::{AllocId, Event, FiveTuple, Path, Secrets, Server, Transport};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub const CHANNEL: u16 = 0x4001;
pub const CHANNEL_PEER: &str = "198.51.100.2:6000";
pub const PERMITTED_PEER: &str = "198.51.100.3:7000";

pub struct Ready {
    pub server: Server,
    pub now: Instant,
    pub tuple: FiveTuple,
    pub relay: AllocId,
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address literal")
}

/// Challenge, Allocate, ChannelBind, CreatePermission, each answered with success.
pub fn relay_setup() -> Ready {
    let config =
        Config::from_toml_str("listening-ip = [\"127.0.0.1\"]\nrealm = \"r\"\nuser = [\"u:p\"]\n")
            .expect("config");
    let now = Instant::now();
    let mut server = Server::new(
        config.server,
        Arc::new(LocalState::default()),
        Secrets {
            nonce_key: [9; 32],
            seed: [1; 32],
        },
        now,
        1_000_000,
    );
    let tuple = FiveTuple {
        client: addr("198.51.100.1:5000"),
        listener: 0,
        transport: Transport::Udp,
    };
    let key = long_term_key("u", "r", b"p");
    let mut first = client_codec::encode_request(
        method::ALLOCATE,
        false,
        &[1; 12],
        &[RequestAttr::RequestedTransport(17)],
        None,
    )
    .expect("encode");
    server.handle_client_datagram(now, tuple, &mut first);
    let nonce = client_codec::decode_response(&server.poll_transmit().expect("401").payload)
        .and_then(|r| r.nonce)
        .expect("nonce");
    let steps: [(u16, Vec<RequestAttr<'_>>); 3] = [
        (method::ALLOCATE, vec![RequestAttr::RequestedTransport(17)]),
        (
            method::CHANNEL_BIND,
            vec![
                RequestAttr::ChannelNumber(CHANNEL),
                RequestAttr::XorPeerAddress(addr(CHANNEL_PEER)),
            ],
        ),
        (
            method::CREATE_PERMISSION,
            vec![RequestAttr::XorPeerAddress(addr(PERMITTED_PEER))],
        ),
    ];
    for (i, (m, extra)) in steps.into_iter().enumerate() {
        let mut attrs = vec![
            RequestAttr::Username("u"),
            RequestAttr::Realm("r"),
            RequestAttr::Nonce(&nonce),
        ];
        attrs.extend(extra);
        let mut msg =
            client_codec::encode_request(m, false, &[i as u8 + 2; 12], &attrs, Some(&key))
                .expect("encode");
        assert!(
            server
                .handle_client_datagram(now, tuple, &mut msg)
                .is_none()
        );
        while let Some(Event::BindRelay { relay, .. }) = server.poll_event() {
            server.handle_relay_bound(now, relay, true);
        }
        let r = client_codec::decode_response(&server.poll_transmit().expect("response").payload)
            .expect("decode");
        assert_eq!(r.error_code, None, "setup step {i}");
    }
    assert_eq!(server.poll_event(), None);
    let mut cd = ferroturn::client::channel_data(CHANNEL, b"x");
    let relay = match server
        .handle_client_datagram(now, tuple, &mut cd)
        .map(|t| t.path)
    {
        Some(Path::Peer { relay, .. }) => relay,
        other => panic!("channel not bound: {other:?}"),
    };
    Ready {
        server,
        now,
        tuple,
        relay,
    }
}
