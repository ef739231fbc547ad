//! `ferroturn-bench relay`: relay load through a TURN server (or the raw forwarder) to
//! an in-process UDP echo peer, built so the generator is not the bottleneck.
//!
//! Setup (not measured): one client socket per flow (a UDP socket, or with
//! `--transport tcp` one TCP connection), Allocate, then ChannelBind to the echo peer (or
//! CreatePermission with `--send-indications`), concurrently. Data phase: one thread
//! drives every flow socket (see [`generator`]); the echo peer runs on its own thread and
//! the relay to it is UDP whatever the transport. Teardown: Refresh with lifetime 0 for
//! each UDP allocation, bounded in time; TCP connections are closed.
//!
//! Everything stays on loopback; the run lasts warmup + at most 600 s + one loss timeout.

mod echo;
mod flows;
mod generator;
mod histogram;
mod packet;
mod refresh;
mod report;
mod ring;
mod stats;
mod turn;

use crate::{common, process, sockets};
use flows::Sockets;
use generator::{Generator, Load, Plan};
use packet::{Framing, PROBE_LEN};
use refresh::{Binding, Refresher};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use turn::{FlowSocket, Server};

const MAX_DURATION_S: f64 = 600.0;
const MAX_WARMUP_S: f64 = 60.0;
const MAX_FLOWS: usize = 4096;
const MAX_SIZE: usize = 16_384;
const MAX_INFLIGHT: u32 = 1024;
const MAX_PPS: u32 = 1_000_000;
const BATCH_MAX: u32 = 64;
/// Socket buffers asked for on flow sockets and the echo peer (capped by rmem_max).
const BUFFER_BYTES: usize = 4 << 20;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Keep --inflight packets outstanding per flow.
    Flood,
    /// Send --pps packets per second per flow.
    Paced,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One UDP socket per flow.
    Udp,
    /// One TCP connection per flow (RFC 8656 section 12.5 framing); peers stay UDP.
    Tcp,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The TURN server (loopback only); ignored with --raw.
    #[arg(long, value_name = "ADDR", required_unless_present = "raw")]
    server: Option<SocketAddr>,
    /// TURN REST shared secret; the username is `<expiry>:<user>`.
    #[arg(long, value_name = "S", conflicts_with = "password")]
    secret: Option<String>,
    /// Static long-term username (with --password), or the user part of a REST username.
    #[arg(long, value_name = "U", default_value = "bench")]
    user: String,
    /// Static long-term password.
    #[arg(long, value_name = "P")]
    password: Option<String>,
    /// Concurrent flows, one allocation and one client socket each.
    #[arg(long, value_name = "N", default_value_t = 1)]
    flows: usize,
    /// Transport between the flows and the server.
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    transport: Transport,
    /// Payload bytes relayed to the peer (the peer's UDP payload), at least 16.
    #[arg(long, value_name = "BYTES", default_value_t = 200)]
    size: usize,
    #[arg(long, value_enum, default_value_t = Mode::Flood)]
    mode: Mode,
    /// Flood: packets in flight per flow.
    #[arg(long, value_name = "K", default_value_t = 16)]
    inflight: u32,
    /// Paced: packets per second per flow.
    #[arg(long, value_name = "P", default_value_t = 50)]
    pps: u32,
    /// Paced: packets a flow sends back to back, every BURST/pps seconds (like a video
    /// frame); 1 is strict pacing. Bursts let the generator batch at high rates.
    #[arg(long, value_name = "N", default_value_t = 1)]
    burst: u32,
    /// Measured seconds (at most 600).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measured window.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    warmup: f64,
    /// Send and Data indications instead of ChannelData.
    #[arg(long)]
    send_indications: bool,
    /// Server process whose CPU time (/proc/PID/stat) is read around the window.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Address the echo peer binds.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    peer_ip: IpAddr,
    /// Kernel-floor mode: no TURN, raw payloads to this forwarder (needs --peer-port).
    #[arg(long, value_name = "FORWARDER_ADDR")]
    raw: Option<SocketAddr>,
    /// Fixed echo peer port (the forwarder's --peer port); default ephemeral.
    #[arg(long, value_name = "PORT")]
    peer_port: Option<u16>,
    /// Local address of the flow sockets.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Also print the result as one JSON object line.
    #[arg(long)]
    json: bool,
    /// One datagram per buffer, flows and echo peer alike, as clients and peers on a
    /// network send them. By default runs of equal datagrams go out as UDP GSO trains,
    /// which loopback carries unsegmented as far as the receiving socket: a per-packet
    /// path before it (the kernel fast path) sees one train, not its datagrams.
    #[arg(long)]
    no_gso: bool,
    /// Also time each reply to its arrival in this host's kernel (SO_TIMESTAMPNS, UDP
    /// only): `rtt_arrival_us`, without the generator's own wake-up. Each stamp costs the
    /// generator a little CPU per datagram; meant for paced runs.
    #[arg(long)]
    arrival_times: bool,
}

fn validate(a: &Args) -> Result<(), String> {
    let bad = |what: &str| Err(what.to_owned());
    if !(a.duration > 0.0 && a.duration <= MAX_DURATION_S) {
        return bad("--duration must be in (0, 600] seconds");
    }
    if !(0.0..=MAX_WARMUP_S).contains(&a.warmup) {
        return bad("--warmup must be in [0, 60] seconds");
    }
    if !(1..=MAX_FLOWS).contains(&a.flows) {
        return bad("--flows must be in 1..=4096");
    }
    if !(PROBE_LEN..=MAX_SIZE).contains(&a.size) {
        return bad("--size must be in 16..=16384");
    }
    if !(1..=MAX_INFLIGHT).contains(&a.inflight) {
        return bad("--inflight must be in 1..=1024");
    }
    if !(1..=MAX_PPS).contains(&a.pps) || a.pps as usize * a.flows > 10 * MAX_PPS as usize {
        return bad("--pps must be in 1..=1000000, and --pps x --flows at most 10000000");
    }
    if !(1..=BATCH_MAX).contains(&a.burst) || a.burst > a.pps {
        return bad("--burst must be in 1..=64 and at most --pps");
    }
    sockets::require_loopback(SocketAddr::new(a.peer_ip, 0))?;
    sockets::require_loopback(SocketAddr::new(a.bind, 0))?;
    match (a.raw, a.server) {
        (Some(fwd), _) => {
            sockets::require_loopback(fwd)?;
            if a.peer_port.is_none() {
                return bad("--raw needs --peer-port (the forwarder's --peer port)");
            }
            if a.send_indications {
                return bad("--send-indications needs a TURN server, not --raw");
            }
            if a.transport != Transport::Udp {
                return bad("--raw forwards UDP only: drop --transport");
            }
        }
        (None, Some(server)) => {
            sockets::require_loopback(server)?;
            if a.secret.is_none() && a.password.is_none() {
                return bad("give --secret, or --user and --password");
            }
        }
        (None, None) => return bad("give --server (or --raw)"),
    }
    Ok(())
}

pub fn run(args: Args) -> Result<(), String> {
    validate(&args)?;
    let stop = process::stop_on_signals();
    process::raise_nofile_limit();
    let peer = echo::EchoPeer::start(
        SocketAddr::new(args.peer_ip, args.peer_port.unwrap_or(0)),
        args.size + 64,
        !args.no_gso,
    )?;
    let result = drive(&args, peer.addr, stop);
    let echoed = peer.stop();
    eprintln!(
        "relay: echo peer received {} echoed {} (thread cpu {:.2} s)",
        echoed.received, echoed.echoed, echoed.cpu_s
    );
    let (labels, outcome) = result?;
    println!("{}", report::summary(&labels, &outcome));
    if args.json {
        println!("{}", report::json_line(&labels, &outcome));
    }
    Ok(())
}

/// Setup, data phase and teardown; the echo peer is already running at `peer`.
fn drive(
    args: &Args,
    peer: SocketAddr,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(report::Labels, stats::Outcome), String> {
    let target = args.raw.or(args.server).ok_or("no target")?;
    let mut sockets = Vec::with_capacity(args.flows);
    for i in 0..args.flows {
        sockets.push(match args.transport {
            Transport::Udp => {
                let s = UdpSocket::bind(SocketAddr::new(args.bind, 0))
                    .map_err(|e| format!("cannot bind a flow socket on {}: {e}", args.bind))?;
                sockets::enlarge_buffers(&s, BUFFER_BYTES);
                FlowSocket::Udp(s)
            }
            Transport::Tcp => FlowSocket::Tcp(sockets::connect_load_stream(args.bind, target, i)?),
        });
    }
    let turn = match args.raw {
        Some(_) => None,
        None => {
            let (username, password) =
                common::credentials(args.secret.as_deref(), &args.user, args.password.as_deref());
            let server = Server {
                addr: target,
                username,
                password,
            };
            let binding = if args.send_indications {
                Binding::Permission { peer }
            } else {
                Binding::Channel { peer }
            };
            turn::setup(&server, &sockets, binding)?;
            Some((server, binding))
        }
    };
    let result = measure(args, &sockets, target, peer, turn.as_ref(), stop);
    if let Some((server, _)) = &turn {
        let refs: Vec<&FlowSocket> = sockets.iter().collect();
        turn::teardown(server, &refs);
    }
    result
}

/// The data phase on duplicates of the flow sockets (the originals stay for teardown).
fn measure(
    args: &Args,
    sockets: &[FlowSocket],
    target: SocketAddr,
    peer: SocketAddr,
    turn: Option<&(Server, Binding)>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(report::Labels, stats::Outcome), String> {
    let flows = connect_flows(sockets, target)?;
    let transport = match args.transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    };
    let (framing, path) = match (turn, args.send_indications) {
        (None, _) => (Framing::Raw, "raw"),
        (Some(_), false) => (Framing::Channel, "channel"),
        (Some(_), true) => (Framing::Indication { peer }, "indication"),
    };
    let load = match args.mode {
        Mode::Flood => Load::Flood {
            inflight: args.inflight,
        },
        Mode::Paced => Load::Paced {
            pps: args.pps,
            burst: args.burst,
        },
    };
    let refresher = turn.map(|(server, binding)| {
        let channels = (0..sockets.len()).map(turn::channel).collect();
        Refresher::new(&server.username, &server.password, *binding, channels, 0)
    });
    let load_text = match load {
        Load::Flood { inflight } => format!("flood inflight={inflight}"),
        Load::Paced { pps, burst } => format!("paced pps={pps} burst={burst}"),
    };
    eprintln!(
        "relay: {} flows, {path} over {transport} via {target} to echo peer {peer}, \
         {load_text}, size {}, warmup {} s + {} s",
        args.flows, args.size, args.warmup, args.duration
    );
    let plan = Plan {
        load,
        framing,
        size: args.size,
        warmup_ns: (args.warmup * 1e9) as u64,
        duration_ns: (args.duration * 1e9) as u64,
        server_pid: args.server_pid,
        gso: !args.no_gso,
        arrival_times: args.arrival_times,
    };
    let channels = (0..sockets.len()).map(turn::channel).collect();
    let outcome = Generator::new(plan, flows, channels, refresher)?.run(stop)?;
    eprintln!("{}", report::diagnostics(&outcome));
    let labels = report::Labels {
        mode: match args.mode {
            Mode::Flood => "flood",
            Mode::Paced => "paced",
        },
        path,
        transport,
        flows: args.flows,
        size: args.size,
    };
    Ok((labels, outcome))
}

/// Connects each UDP flow socket to `target` and hands the generator non-blocking
/// duplicates of the flow sockets; the originals stay behind for the teardown.
fn connect_flows(sockets: &[FlowSocket], target: SocketAddr) -> Result<Sockets, String> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for (i, s) in sockets.iter().enumerate() {
        let io = |e: std::io::Error| format!("flow socket {i}: {e}");
        match s {
            FlowSocket::Udp(s) => {
                s.connect(target).map_err(io)?;
                s.set_nonblocking(true).map_err(io)?;
                udp.push(mio::net::UdpSocket::from_std(s.try_clone().map_err(io)?));
            }
            FlowSocket::Tcp(s) => {
                s.set_nonblocking(true).map_err(io)?;
                tcp.push(mio::net::TcpStream::from_std(s.try_clone().map_err(io)?));
            }
        }
    }
    match (udp.is_empty(), tcp.is_empty()) {
        (_, true) => Ok(Sockets::Udp(udp)),
        (true, false) => Ok(Sockets::Tcp(tcp)),
        (false, false) => Err("UDP and TCP flows in one run".into()),
    }
}
