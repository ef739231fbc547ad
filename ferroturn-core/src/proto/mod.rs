//! STUN/TURN wire formats.
//!
//! - [`scan`]: the cheap pre-scan every STUN message passes first (bounds, sizes,
//!   FINGERPRINT, unknown attributes, where MESSAGE-INTEGRITY sits).
//! - [`codec`]: control messages through stun-rs; no other module sees stun-rs types.
//! - [`integrity`]: MESSAGE-INTEGRITY (constant time) and FINGERPRINT.
//! - [`data`]: the zero-copy data path (ChannelData, Send and Data indications).
//! - [`stream`]: framing of STUN and ChannelData messages on TCP and TLS streams.
//! - [`proxy`]: the PROXY protocol header a load balancer puts before a stream.
//! - [`writer`]: the one [`writer::MessageWriter`] for STUN messages written by hand.

pub mod codec;
pub mod data;
pub mod integrity;
pub mod proxy;
pub mod scan;
pub mod stream;
pub mod wire;
pub mod writer;

pub use codec::{Family, Request};
pub use wire::Class;
