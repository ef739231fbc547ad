//! Long-term credentials (RFC 8489 section 9.2): stateless nonces, TURN REST usernames
//! and static users; and the MOBILITY-TICKETs of RFC 8016.

pub mod credentials;
mod failure;
pub mod nonce;
pub mod rest;
pub mod ticket;

pub use credentials::{Credentials, Lookup};
pub use failure::AuthFailure;
pub use nonce::{NonceCheck, NonceKeys, Nonces};
pub use ticket::{Ticket, Tickets};
