//! The unmeasured phases: allocations, channels or permissions before the run, and their
//! release after it (Refresh with lifetime 0 over UDP; over TCP closing the connection,
//! which ends its allocation). Each flow's socket is created by the caller and handed to
//! the library's TURN client through a duplicate descriptor, so the generator keeps the
//! same 5-tuple (the same connection) once the client is gone.

use super::refresh::{Binding, LIFETIME_S};
use ferroturn::client::TurnClient;
use ferroturn::client::codec::RequestAttr;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Setups in flight at once.
const CONCURRENCY: usize = 64;
/// The whole teardown gives up after this.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    pub username: String,
    pub password: String,
}

/// Channel number of flow `i` (RFC 8656 section 12: 0x4000-0x4FFF).
pub fn channel(i: usize) -> u16 {
    0x4000 + (i % 0x1000) as u16
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// One flow's socket to the server.
pub enum FlowSocket {
    Udp(UdpSocket),
    /// Connected; the allocation lives as long as the connection.
    Tcp(TcpStream),
}

impl FlowSocket {
    /// A TURN client on a duplicate of the socket (same 5-tuple); call it inside a
    /// runtime. Over TCP the client's receive buffer goes with it, which loses nothing:
    /// the server sends only answers before the generator's first packet.
    fn client(&self, server: &Server, timeout: Duration) -> std::io::Result<TurnClient> {
        let (user, pass) = (&server.username, &server.password);
        let mut c = match self {
            FlowSocket::Udp(s) => {
                let dup = s.try_clone()?;
                dup.set_nonblocking(true)?;
                let socket = tokio::net::UdpSocket::from_std(dup)?;
                TurnClient::with_socket(socket, server.addr, user, pass)
            }
            FlowSocket::Tcp(s) => {
                let dup = s.try_clone()?;
                dup.set_nonblocking(true)?;
                TurnClient::with_tcp_stream(tokio::net::TcpStream::from_std(dup)?, user, pass)?
            }
        };
        c.request_timeout = timeout;
        Ok(c)
    }
}

/// Allocates one relay per socket and binds flow i's channel to the peer (or installs a
/// permission). On any failure the allocations made are released and the first error
/// returned.
pub fn setup(server: &Server, sockets: &[FlowSocket], binding: Binding) -> Result<(), String> {
    let started = Instant::now();
    let rt = runtime()?;
    let results: Vec<Result<(), String>> = rt.block_on(async {
        let mut out = Vec::with_capacity(sockets.len());
        for (chunk_no, chunk) in sockets.chunks(CONCURRENCY).enumerate() {
            let mut set = JoinSet::new();
            for (k, socket) in chunk.iter().enumerate() {
                let i = chunk_no * CONCURRENCY + k;
                let c = socket.client(server, Duration::from_secs(3));
                set.spawn(async move { (i, setup_one(c, i, binding).await) });
            }
            let mut chunk_out = vec![Ok(()); chunk.len()];
            while let Some(r) = set.join_next().await {
                let (i, r) = r.map_err(|e| e.to_string())?;
                chunk_out[i - chunk_no * CONCURRENCY] = r;
            }
            out.extend(chunk_out);
        }
        Ok::<_, String>(out)
    })?;
    let failed = results.iter().position(|r| r.is_err());
    match failed {
        None => {
            eprintln!(
                "relay: {} allocations ready in {:.2} s",
                sockets.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Some(i) => {
            let ok: Vec<&FlowSocket> = sockets
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|(s, _)| s)
                .collect();
            drop(rt);
            teardown(server, &ok);
            Err(format!("flow {i}: {}", results[i].clone().unwrap_err()))
        }
    }
}

async fn setup_one(
    c: std::io::Result<TurnClient>,
    i: usize,
    binding: Binding,
) -> Result<(), String> {
    let mut c = c.map_err(|e| e.to_string())?;
    let attrs = [
        RequestAttr::RequestedTransport(17),
        RequestAttr::Lifetime(LIFETIME_S),
    ];
    c.allocate_with(&attrs)
        .await
        .map_err(|e| format!("Allocate: {e}"))?;
    match binding {
        Binding::Channel { peer } => c.channel_bind(channel(i), peer).await.map_err(|e| {
            format!("ChannelBind to {peer}: {e} (the server must allow loopback peers)")
        }),
        Binding::Permission { peer } => c.create_permission(&[peer]).await.map_err(|e| {
            format!("CreatePermission for {peer}: {e} (the server must allow loopback peers)")
        }),
    }
}

/// Best effort: a Refresh with lifetime 0 on every UDP socket, all at once, bounded in
/// time; every TCP connection is closed. Allocations not released this way expire on
/// the server by themselves.
pub fn teardown(server: &Server, sockets: &[&FlowSocket]) {
    for s in sockets {
        if let FlowSocket::Tcp(s) = s {
            // Already closed if the server or the generator dropped it.
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
    let udp: Vec<&FlowSocket> = sockets
        .iter()
        .copied()
        .filter(|s| matches!(s, FlowSocket::Udp(_)))
        .collect();
    if udp.is_empty() {
        return;
    }
    let Ok(rt) = runtime() else { return };
    let released = rt.block_on(async {
        let mut set = JoinSet::new();
        for socket in &udp {
            let c = socket.client(server, Duration::from_secs(2));
            set.spawn(async move {
                let Ok(mut c) = c else { return false };
                // RFC 8656 section 8.2: the success response carries LIFETIME 0, which
                // some servers omit; either way the allocation is gone.
                matches!(
                    c.refresh(0).await,
                    Ok(_) | Err(ferroturn::client::ClientError::Malformed)
                )
            });
        }
        let mut released = 0;
        let deadline = tokio::time::Instant::now() + TEARDOWN_LIMIT;
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, set.join_next()).await {
            released += usize::from(r.unwrap_or(false));
        }
        set.abort_all();
        released
    });
    if released < udp.len() {
        eprintln!("relay: released {released} of {} allocations", udp.len());
    }
}
