//! Traffic: the clients of a round (allocate, permit or bind, relay both ways, end in one
//! of the ways `Ending` names) and the churn workers beside them.

use super::*;

fn payload(tag: u64, i: usize) -> Vec<u8> {
    let size = SIZES[(tag as usize + i) % SIZES.len()];
    let mut p: Vec<u8> = (0..size).map(|k| (k as u64 * 31 + tag) as u8).collect();
    p[..8].copy_from_slice(&tag.to_be_bytes());
    p[8..16].copy_from_slice(&(i as u64).to_be_bytes());
    p
}

/// Sends `count` messages to the echo peer (ChannelData on `channel` for every other
/// one when bound, Send indications otherwise) and checks that each comes back whole:
/// as ChannelData when a channel is bound, as a Data indication otherwise.
async fn relay(ctx: &Ctx, c: &mut TurnClient, channel: Option<u16>, tag: u64, count: usize) {
    let peer = ctx.peer;
    let kind = c.transport_name();
    for i in 0..count {
        let data = payload(tag, i);
        match channel.filter(|_| i % 2 == 0) {
            Some(ch) => c.send_channel_data(ch, &data).await,
            None => c.send_indication(peer, &data).await,
        }
        .unwrap_or_else(|e| panic!("{kind} client {tag}: send message {i}: {e}"));
        let want = match channel {
            Some(channel) => Relayed::Channel { channel, data },
            None => Relayed::Indication { peer, data },
        };
        let got = c
            .recv_relayed(LOADED_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{kind} client {tag}: receive message {i}: {e}"));
        assert!(
            got.as_ref() == Some(&want),
            "{kind} client {tag}: message {i} did not come back whole within {LOADED_WAIT:?} \
             (got {:?})",
            got.map(|g| match g {
                Relayed::Channel { channel, data } =>
                    format!("channel {channel:#x}, {} bytes", data.len()),
                Relayed::Indication { peer, data } =>
                    format!("indication from {peer}, {} bytes", data.len()),
            })
        );
        add(&ctx.counts.messages);
    }
}

/// A permission (odd ids) or a channel (even ids) for the echo peer.
async fn permit(ctx: &Ctx, c: &mut TurnClient, id: u64) -> Option<u16> {
    let kind = c.transport_name();
    if id % 2 == 0 {
        let ch = 0x4000 + (id % 0x1000) as u16;
        c.channel_bind(ch, ctx.peer)
            .await
            .unwrap_or_else(|e| panic!("{kind} client {id}: ChannelBind: {e}"));
        Some(ch)
    } else {
        c.create_permission(&[ctx.peer])
            .await
            .unwrap_or_else(|e| panic!("{kind} client {id}: CreatePermission: {e}"));
        None
    }
}

async fn allocate(ctx: &Ctx, c: &mut TurnClient, id: u64, lifetime: Option<u32>) -> SocketAddr {
    let kind = c.transport_name();
    let relayed = match lifetime {
        Some(l) => {
            c.allocate_with(&[
                RequestAttr::RequestedTransport(17),
                RequestAttr::Lifetime(l),
            ])
            .await
        }
        None => c.allocate().await,
    }
    .unwrap_or_else(|e| panic!("{kind} client {id}: Allocate: {e}"));
    assert!(
        (MIN_PORT..=MAX_PORT).contains(&relayed.port()),
        "relayed address {relayed} outside the configured range"
    );
    add(&ctx.counts.allocations);
    relayed
}

/// Waits for the server to close a raw stream: end of stream or an error (reset). It may
/// send up to `allowed` bytes first (a TLS alert on a connection that never finished
/// its handshake).
async fn wait_closed(mut s: impl AsyncRead + Unpin, allowed: usize, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 512];
    let mut received = 0;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => {
                received += n;
                assert!(
                    received <= allowed,
                    "{what}: the server sent {received} bytes instead of closing"
                );
            }
            Err(_) => panic!("{what}: still open after {limit:?}"),
        }
    }
}

/// The first 20 bytes of an Allocate request claiming 100 bytes of attributes.
fn half_a_stun_header(id: u64) -> Vec<u8> {
    let mut h = vec![0x00, 0x03, 0x00, 0x64, 0x21, 0x12, 0xA4, 0x42];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// One client of a round, from connect to its ending.
pub(crate) async fn run_client(ctx: Arc<Ctx>, kind: Kind, end: Ending) {
    let id = ctx.id();
    add(&ctx.counts.clients);
    // Deadline for "the server closes this connection": the allocation's expiry (if
    // any), the idle or handshake timeout, the 1 s check, and slack for a loaded host.
    let close_limit = Duration::from_secs(SHORT_LIFETIME + CONN_TIMEOUT + 1 + 6);
    match end {
        Ending::RefreshZero { linger } => {
            let mut c = ctx.client(kind, id).await;
            allocate(&ctx, &mut c, id, Some(LONG_LIFETIME)).await;
            let channel = permit(&ctx, &mut c, id).await;
            relay(&ctx, &mut c, channel, id, MESSAGES).await;
            if linger {
                // The permission (and channel) expire; the allocation lives on.
                sleep(Duration::from_millis(SHORT_LIFETIME * 1000 + 700)).await;
                c.send_indication(ctx.peer, b"after the permission expired")
                    .await
                    .unwrap();
                if let Some(ch) = channel {
                    c.send_channel_data(ch, b"after the channel expired")
                        .await
                        .unwrap();
                }
                let got = c.recv_relayed(LOADED_QUIET).await.unwrap();
                assert!(
                    got.is_none(),
                    "{kind:?} client {id}: relayed after expiry: {got:?}"
                );
            }
            let granted = c
                .refresh(0)
                .await
                .unwrap_or_else(|e| panic!("{kind:?} client {id}: Refresh 0: {e}"));
            assert_eq!(granted, 0);
            add(&ctx.counts.refreshed_to_zero);
            if kind != Kind::Udp {
                let _ = c.shutdown().await;
            }
        }
        Ending::Close { clean } => {
            let mut c = ctx.client(kind, id).await;
            let lifetime = (kind != Kind::Udp).then_some(LONG_LIFETIME);
            let relayed = allocate(&ctx, &mut c, id, lifetime).await;
            let channel = permit(&ctx, &mut c, id).await;
            relay(&ctx, &mut c, channel, id, MESSAGES).await;
            if clean {
                let _ = c.shutdown().await;
            }
            ctx.park(kind, c);
            add(&ctx.counts.closed);
            if kind == Kind::Udp {
                // Media keeps arriving for a client that is gone, until expiry.
                let pusher = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                for i in 0..5u8 {
                    pusher.send_to(&[i; 200], relayed).await.unwrap();
                    sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Ending::Expire => {
            let mut c = ctx.client(kind, id).await;
            allocate(&ctx, &mut c, id, None).await;
            let channel = permit(&ctx, &mut c, id).await;
            relay(&ctx, &mut c, channel, id, MESSAGES).await;
            if kind == Kind::Udp {
                sleep(Duration::from_millis(SHORT_LIFETIME * 1000 + 300)).await;
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    // CreatePermission does not extend the allocation; 437 once it is gone.
                    match c.create_permission(&[ctx.peer]).await {
                        Err(ClientError::Error(437)) => break,
                        Ok(()) if Instant::now() < deadline => {
                            sleep(Duration::from_millis(300)).await
                        }
                        other => panic!("UDP client {id}: allocation not expired: {other:?}"),
                    }
                }
            } else {
                // Expiry, then the idle timeout: the server closes the connection.
                match timeout(close_limit, c.recv_relayed(close_limit)).await {
                    Ok(Err(_closed)) => {}
                    other => panic!(
                        "{kind:?} client {id}: connection not closed after its allocation \
                         expired: {other:?}"
                    ),
                }
                add(&ctx.counts.server_closes_seen);
            }
            add(&ctx.counts.expiries_seen);
        }
        Ending::Abandon(how) => {
            add(&ctx.counts.abandoned);
            match (how, kind) {
                (Abandon::AfterAllocate, _) => {
                    let mut c = ctx.client(kind, id).await;
                    allocate(&ctx, &mut c, id, None).await;
                    ctx.park(kind, c);
                }
                (Abandon::MidAllocate, _) => {
                    let mut c = ctx.client(kind, id).await;
                    let _ = timeout(Duration::from_millis(id * 7 % 20), c.allocate()).await;
                    ctx.park(kind, c);
                }
                (Abandon::Silent, Kind::Udp) => {
                    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    s.send_to(&[0xAB; 13], ctx.udp_addr()).await.unwrap();
                }
                (Abandon::Silent, _) => {
                    let addr = if kind == Kind::Tcp {
                        ctx.tcp_addr()
                    } else {
                        ctx.tls_addr()
                    };
                    let s = TcpStream::connect(addr).await.expect("TCP connect");
                    // A TLS alert (7 bytes) may come before the close.
                    let alert = if kind == Kind::Tls { 64 } else { 0 };
                    wait_closed(
                        s,
                        alert,
                        close_limit,
                        &format!("{kind:?} silent connection {id}"),
                    )
                    .await;
                    add(&ctx.counts.server_closes_seen);
                }
                (Abandon::Partial, Kind::Udp) => {
                    let (u, _) =
                        rest_credentials(SECRET, &format!("soak{id}"), Duration::from_secs(600));
                    let mut c = TurnClient::new(ctx.udp_addr(), &u, "wrong password")
                        .await
                        .unwrap();
                    match c.allocate().await {
                        Err(ClientError::Error(401)) => {}
                        other => panic!("UDP client {id}: wrong password: {other:?}"),
                    }
                }
                (Abandon::Partial, Kind::Tcp) => {
                    let mut s = TcpStream::connect(ctx.tcp_addr()).await.expect("connect");
                    s.write_all(&half_a_stun_header(id)[..12]).await.unwrap();
                    wait_closed(s, 0, close_limit, &format!("TCP half header {id}")).await;
                    add(&ctx.counts.server_closes_seen);
                }
                (Abandon::Partial, Kind::Tls) => {
                    let mut s = ctx.pki.connect(ctx.tls_addr()).await.expect("TLS connect");
                    s.write_all(&half_a_stun_header(id)[..12]).await.unwrap();
                    s.flush().await.unwrap();
                    wait_closed(s, 0, close_limit, &format!("TLS half header {id}")).await;
                    add(&ctx.counts.server_closes_seen);
                }
            }
        }
    }
}

/// Short cycles until `stop`: allocate, bind a channel, two messages both ways, then
/// Refresh 0 (UDP, and every other cycle over TCP/TLS, followed by a clean close) or an
/// abrupt close.
pub(crate) async fn churn(ctx: Arc<Ctx>, kind: Kind, stop: Arc<AtomicBool>) {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) && n < CHURN_MAX_PER_ROUND {
        let id = ctx.id();
        let mut c = ctx.client(kind, id).await;
        allocate(&ctx, &mut c, id, Some(LONG_LIFETIME)).await;
        let ch = 0x4000 + (id % 0x1000) as u16;
        c.channel_bind(ch, ctx.peer)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} churn {id}: ChannelBind: {e}"));
        relay(&ctx, &mut c, Some(ch), id, 2).await;
        if kind == Kind::Udp || n % 2 == 0 {
            assert_eq!(c.refresh(0).await.expect("Refresh 0"), 0);
            if kind != Kind::Udp {
                let _ = c.shutdown().await;
            }
        }
        drop(c);
        add(&ctx.counts.churn_cycles);
        n += 1;
        sleep(CHURN_PACE).await;
    }
}
