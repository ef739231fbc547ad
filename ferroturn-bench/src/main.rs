//! `ferroturn-bench`: load tools for any TURN server (ferroturn, coturn, ...), all bounded
//! in count and time and meant for loopback or test namespaces only.
//!
//! - `relay`: N authenticated allocations with channels (or Send indications) to an
//!   in-process UDP echo peer; flood or paced; delivered round trips/s, loss, RTT
//!   percentiles, server CPU per packet (from /proc/PID/stat), own CPU.
//! - `setup`: allocation setups/s (401 + Allocate + CreatePermission + ChannelBind),
//!   pipelined; optionally holds the allocations idle for memory measurements.
//! - `flood`: unauthenticated Allocates from many source ports; bytes in/out.
//! - `forwarder`: a minimal raw UDP forwarder (no TURN) speaking just enough to be driven
//!   by `relay`, the kernel floor every run is compared with.
//!
//! Progress goes to stderr; the result is a one-line summary and, with `--json`, a JSON
//! object on stdout.

mod common;
mod flood;
mod forwarder;
mod process;
mod relay;
mod setup;
mod sockets;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ferroturn-bench",
    about = "Load tools for TURN servers (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Relay load: round trips through the server to an echo peer.
    Relay(relay::Args),
    /// Allocation setups per second; optionally hold them idle.
    Setup(setup::Args),
    /// Unauthenticated Allocate flood from many source ports.
    Flood(flood::Args),
    /// A raw UDP forwarder standing in for a TURN server (the kernel floor).
    Forwarder(forwarder::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Relay(a) => relay::run(a),
        Command::Setup(a) => setup::run(a),
        Command::Flood(a) => flood::run(a),
        Command::Forwarder(a) => forwarder::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
