//! Long-term credentials (RFC 8489 section 9.2): stateless nonces, TURN REST usernames
//! and static users.

pub mod credentials;
mod failure;
pub mod nonce;
pub mod rest;

pub use credentials::{Credentials, Lookup};
pub use failure::AuthFailure;
pub use nonce::{NonceCheck, NonceKeys, Nonces};
