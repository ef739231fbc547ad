//! The built `ferroturn` executable as a process: its command line (check-config,
//! credentials, import-coturn, a server run from flags alone) and life under systemd
//! (the readiness protocol, journald- and shipper-friendly logs, the unit file, the
//! kernel-offload drop-in's capabilities), and the usage record as a JSON log line.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod external_ip;
mod import_coturn;
mod offload;
mod systemd;
mod usage;
