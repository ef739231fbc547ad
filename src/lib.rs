//! ferroturn: a STUN/TURN relay server.
//!
//! The protocol lives in the `ferroturn-core` crate (sans-IO); [`net`] drives it with
//! sockets; [`config`] turns the TOML file and command-line flags into typed
//! configuration.

pub mod api;
pub mod client;
pub mod config;
pub mod net;
pub mod notify;
pub mod state;

pub use net::{Control, LogReloader, Metrics, ReloadReport, ServerHandle, start};

/// TURN REST credentials (for the `credentials` command and for tests).
pub mod credentials {
    pub use ferroturn_core::auth::rest::{rest_credentials, rest_password};
}
