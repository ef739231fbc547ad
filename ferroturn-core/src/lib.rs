//! The sans-IO protocol core of ferroturn: no async runtime, no sockets, no clock reads
//! and no operating-system randomness. Time comes in as an argument, randomness as a
//! seed, and everything that goes out is polled (see [`server`] for the order).
//!
//! - [`proto`]: STUN/TURN wire format (pre-scan, codec, one message writer, the
//!   zero-copy data path, stream framing);
//! - [`auth`]: long-term credentials, TURN REST usernames, stateless nonces;
//! - [`server`]: the allocation table and every decision a TURN server makes;
//! - [`dtls`]: the stateless DTLS cookie exchange in front of TURN over DTLS.

#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod dtls;
pub mod proto;
pub mod server;
