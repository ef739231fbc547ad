//! The sans-IO protocol core: no tokio, no sockets, no clock reads. Time comes in as an
//! argument and everything that goes out is polled (see [`server`] for the order).

pub mod auth;
pub mod proto;
pub mod server;
