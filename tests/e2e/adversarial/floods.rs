//! Unauthenticated floods and amplification.

use super::*;

/// What one flood source got back: how many answers, and whether each was a 401 of
/// `expected_len` bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Answers {
    count: usize,
    all_401_of_expected_len: bool,
}

/// Sends `per_source` unauthenticated Allocates from each of `sources` (one socket each,
/// `CONCURRENT` at a time). Nothing per source is kept on the heap, so the flood's own
/// memory does not grow with the number of sources.
async fn flood(
    server: SocketAddr,
    sources: &[IpAddr],
    per_source: usize,
    expected_len: usize,
) -> Vec<Answers> {
    const CONCURRENT: usize = 200;
    let mut out = vec![Answers::default(); sources.len()];
    for (c, chunk) in sources.chunks(CONCURRENT).enumerate() {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, &source) in chunk.iter().enumerate() {
            tasks.spawn(async move {
                let socket = UdpSocket::bind((source, 0))
                    .await
                    .expect("bind a flood source");
                for _ in 0..per_source {
                    let m = Msg::request(method::ALLOCATE).transport(UDP).bytes();
                    socket.send_to(&m, server).await.expect("send");
                }
                let mut a = Answers {
                    count: 0,
                    all_401_of_expected_len: true,
                };
                let mut buf = [0u8; 512];
                let deadline = Instant::now() + Duration::from_millis(500);
                while a.count < per_source {
                    match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                        Ok(Ok((n, _))) => {
                            a.count += 1;
                            a.all_401_of_expected_len &=
                                n == expected_len && error_code(&buf[..n]) == Some(401);
                        }
                        _ => break,
                    }
                }
                (c * CONCURRENT + i, a)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, a) = done.expect("flood task");
            out[i] = a;
        }
    }
    out
}

/// 2000 spoofed sources (127.1.x.y) send 3 Allocates each: the server keeps no state per
/// unauthenticated source, so its resident memory stays flat (this process holds only
/// the server and the flood: the test runs alone in a child, after an identical flood
/// from other addresses brought the flood's own memory to its high-water mark), each
/// source gets at most one minimal 401 per request, and a real client is served at once.
#[tokio::test]
async fn spoofed_source_allocate_flood_keeps_memory_flat() {
    const SOURCES: usize = 2000;
    if !alone() {
        return run_alone(
            module_path!(),
            "spoofed_source_allocate_flood_keeps_memory_flat",
        )
        .await;
    }
    // Every request answered (no server-wide budget): the most a flood can make the
    // server do.
    let server = denying_server("unauthenticated-total-rate = 0").await;
    let challenge_len = HEADER_LEN + 8 + 4 + REALM.len().next_multiple_of(4) + 20;
    let sources = |third: u8| -> Vec<IpAddr> {
        (0..SOURCES)
            .map(|i| {
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    third,
                    (i / 250) as u8,
                    (i % 250 + 1) as u8,
                ))
            })
            .collect()
    };
    flood(server.addr, &sources(2), 3, challenge_len).await;
    let before = rss_kib();
    let answers = flood(server.addr, &sources(1), 3, challenge_len).await;
    let after = rss_kib();
    let total: usize = answers.iter().map(|a| a.count).sum();
    println!(
        "flood: {SOURCES} sources x 3 Allocates, {total} answers; RSS {before} KiB -> {after} KiB"
    );
    for (i, a) in answers.iter().enumerate() {
        assert!(a.count <= 3, "source {i} got {} answers", a.count);
        assert!(
            a.all_401_of_expected_len,
            "source {i} got something else than minimal 401s"
        );
    }
    assert!(
        total >= SOURCES * 3 * 9 / 10,
        "only {total} of {} requests answered",
        SOURCES * 3
    );
    assert!(
        after.saturating_sub(before) < 2048,
        "RSS grew by {} KiB under the flood",
        after - before
    );
    let mut c = client(&server, "alice").await;
    c.allocate().await.expect("served after the flood");
}

/// A spoofed flood aimed at one victim IP, from as many source ports as a spoofer likes
/// (so SO_REUSEPORT spreads it over both relay threads), gets the victim at most the
/// documented per-source budget: `unauthenticated-rate` answers per second in bursts of
/// twice that (README, turnserver.toml.example, ARCHITECTURE.md).
#[tokio::test]
async fn spoofed_flood_at_one_victim_is_answered_at_most_at_the_unauthenticated_rate() {
    const RATE: f64 = 50.0;
    const SOCKETS: usize = 16;
    const PER_SOCKET: usize = 60;
    let server = denying_server("relay-threads = 2\nunauthenticated-rate = 50").await;
    let victim = ip("127.0.9.9");
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SOCKETS {
        let to = server.addr;
        tasks.spawn(async move {
            let socket = UdpSocket::bind((victim, 0)).await.expect("bind the victim");
            for _ in 0..PER_SOCKET {
                let m = Msg::request(method::ALLOCATE).transport(UDP).bytes();
                socket.send_to(&m, to).await.expect("send");
                sleep(Duration::from_millis(8)).await;
            }
            drain(&socket, QUIET, usize::MAX).await.len()
        });
    }
    let mut answered = 0;
    while let Some(n) = tasks.join_next().await {
        answered += n.expect("flood task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let budget = (2.0 * RATE + RATE * elapsed).ceil() as usize;
    let sent = SOCKETS * PER_SOCKET;
    let limited = counter(&server, |s| s.rate_limited, (sent - answered) as u64).await;
    println!(
        "one victim: {sent} requests, {answered} answered, {limited} rate-limited in \
         {elapsed:.2} s; budget {budget}"
    );
    assert!(
        answered >= 2 * RATE as usize,
        "not even the burst was answered: {answered}"
    );
    assert!(
        answered <= budget,
        "{answered} answers to one source IP in {elapsed:.2} s; the limit allows {budget}"
    );
}

/// Binding responses are no larger than needed: over IPv4 at most 1.6 times the request
/// (32 bytes for the smallest, 20-byte, request). Over IPv6 the XOR-MAPPED-ADDRESS alone
/// is 24 bytes, so the response is exactly header + that attribute (+ FINGERPRINT when
/// asked): 2.2 times a bare 20-byte request in UDP payload, 1.35 times in IP packets.
#[tokio::test]
async fn binding_amplification_is_at_most_1_6_over_ipv4() {
    let server = denying_server("listening-ip = [\"127.0.0.1\", \"::1\"]").await;
    let v4 = *server
        .handle
        .udp_addrs()
        .iter()
        .find(|a| a.is_ipv4())
        .unwrap();
    let v6 = *server
        .handle
        .udp_addrs()
        .iter()
        .find(|a| a.is_ipv6())
        .unwrap();
    let requests = [
        Msg::request(method::BINDING).bytes(),
        Msg::request(method::BINDING).fingerprint().bytes(),
        Msg::request(method::BINDING).attr(0x8F00, &[]).bytes(),
        Msg::request(method::BINDING)
            .attr(UNKNOWN_ATTR, &[])
            .bytes(),
    ];
    let s4 = Session::bind(LOCALHOST, v4, "", "").await;
    let s6 = Session::bind(ip("::1"), v6, "", "").await;
    for request in &requests {
        let r = s4.exchange(request).await.expect("IPv4 Binding answered");
        let ratio = r.len() as f64 / request.len() as f64;
        println!(
            "IPv4 Binding: {} -> {} bytes ({ratio:.2}x)",
            request.len(),
            r.len()
        );
        assert!(
            ratio <= 1.6,
            "IPv4: {} -> {} bytes ({ratio:.2}x)",
            request.len(),
            r.len()
        );

        let r = s6.exchange(request).await.expect("IPv6 Binding answered");
        let on_wire = (r.len() + 48) as f64 / (request.len() + 48) as f64;
        println!(
            "IPv6 Binding: {} -> {} bytes ({:.2}x payload, {on_wire:.2}x packets)",
            request.len(),
            r.len(),
            r.len() as f64 / request.len() as f64
        );
        assert!(
            on_wire <= 1.6,
            "IPv6: {} -> {} bytes",
            request.len(),
            r.len()
        );
        if error_code(&r).is_none() {
            let fingerprint = if attribute(request, attr::FINGERPRINT).is_some() {
                8
            } else {
                0
            };
            assert_eq!(
                r.len(),
                HEADER_LEN + 24 + fingerprint,
                "IPv6 Binding response padded"
            );
        }
    }
}
