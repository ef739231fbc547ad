//! Every default of the configuration, in one place. `turnserver.toml.example` and the
//! flags' help texts state the same values; the tests below hold both to these.

use std::net::{IpAddr, Ipv4Addr};

/// `listening-ip`: every IPv4 address.
pub const LISTENING_IP: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
pub const LISTENING_PORT: u16 = 3478;
pub const TLS_LISTENING_PORT: u16 = 5349;
pub const MIN_PORT: u16 = 49152;
pub const MAX_PORT: u16 = 65535;
pub const REALM: &str = "ferroturn";
pub const REST_API_SEPARATOR: char = ':';
/// `max-credential-ttl`: 7 days (0 turns the limit off).
pub const MAX_CREDENTIAL_TTL: u64 = 7 * 86_400;
pub const STRICT_CREDENTIAL_EXPIRY: bool = true;
pub const STALE_NONCE: u64 = 600;
pub const DEFAULT_ALLOCATE_LIFETIME: u64 = 600;
pub const MAX_ALLOCATE_LIFETIME: u64 = 3600;
/// RFC 8656 section 9: permissions last 300 s.
pub const PERMISSION_LIFETIME: u64 = 300;
/// RFC 8656 section 12: channel bindings last 600 s.
pub const CHANNEL_LIFETIME: u64 = 600;
/// 0: unlimited.
pub const USER_QUOTA: u32 = 0;
/// 0: unlimited.
pub const TOTAL_QUOTA: u32 = 0;
pub const MAX_PERMISSIONS: usize = 128;
pub const MAX_CHANNELS: usize = 128;
/// RFC 6062 TCP allocations are served unless `no-tcp-relay` is set.
pub const NO_TCP_RELAY: bool = false;
pub const MAX_TCP_RELAY_CONNECTIONS: usize = 32;
/// 100 Mbit/s per allocation and direction.
pub const MAX_BPS: u64 = 12_500_000;
/// 0: unlimited.
pub const BPS_CAPACITY: u64 = 0;
pub const NEW_PEER_RATE: u32 = 20;
pub const UNAUTHENTICATED_RATE: u32 = 50;
/// 5000 answers of at most ~80 bytes: 400 KB/s, for the whole server.
pub const UNAUTHENTICATED_TOTAL_RATE: u32 = 5000;
/// 64 KiB: some 900 challenges for clients behind one address, ahead of their Allocates.
pub const UNAUTHENTICATED_CREDIT: u32 = 65_536;
pub const DRAIN_TIMEOUT: u64 = 30;
/// `external-ip = "auto"`: the public address is asked for every 5 minutes.
pub const EXTERNAL_IP_INTERVAL: u64 = 300;
/// RFC 8489 section 9: the STUN port, when a server in `external-ip-stun-servers` names
/// none.
pub const STUN_PORT: u16 = 3478;
pub const LOG_LEVEL: &str = "info";
/// `busy-poll-us`: under load the next datagrams arrive within it.
pub const BUSY_POLL_US: u32 = 50;
/// The most `busy-poll-us` may ask for.
pub const MAX_BUSY_POLL_US: u32 = 1000;
pub const KERNEL_OFFLOAD: super::KernelOffload = super::KernelOffload::Off;
/// RFC 8016 mobility: off, as in coturn.
pub const MOBILITY: bool = false;
pub const MAX_TCP_CONNECTIONS: usize = 10_000;
pub const MAX_TCP_CONNECTIONS_PER_IP: u32 = 256;
pub const TCP_HANDSHAKE_TIMEOUT: u64 = 10;
pub const TCP_IDLE_TIMEOUT: u64 = 60;
pub const TCP_SEND_QUEUE: usize = 65_536;
/// `credential-ttl`: a day (draft-uberti-behave-turn-rest suggests one; with
/// `strict-credential-expiry` a call cannot outlive its credential).
pub const CREDENTIAL_TTL: u64 = 86_400;
/// SO_RCVBUF / SO_SNDBUF of listener sockets when `socket-*-buffer-size` is not set:
/// every client of a shard shares one listener (the kernel caps it at rmem_max/wmem_max).
pub const LISTENER_BUFFER: usize = 4 << 20;
/// `usage-webhook-batch`: records per request.
pub const USAGE_WEBHOOK_BATCH: usize = 100;
/// `usage-webhook-interval`: seconds a record waits for its batch to fill.
pub const USAGE_WEBHOOK_INTERVAL: u64 = 1;
/// `usage-webhook-queue`: records waiting for the webhook (about 4 MiB at most).
pub const USAGE_WEBHOOK_QUEUE: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;
    use clap::Args;

    /// What each option's help says its default is, as the constant spells it.
    fn stated() -> Vec<(&'static str, String)> {
        vec![
            ("listening-ip", LISTENING_IP.to_string()),
            ("listening-port", LISTENING_PORT.to_string()),
            ("tls-listening-port", TLS_LISTENING_PORT.to_string()),
            ("max-tcp-connections", MAX_TCP_CONNECTIONS.to_string()),
            (
                "max-tcp-connections-per-ip",
                MAX_TCP_CONNECTIONS_PER_IP.to_string(),
            ),
            ("tcp-handshake-timeout", TCP_HANDSHAKE_TIMEOUT.to_string()),
            ("tcp-idle-timeout", TCP_IDLE_TIMEOUT.to_string()),
            ("tcp-send-queue", TCP_SEND_QUEUE.to_string()),
            ("busy-poll-us", BUSY_POLL_US.to_string()),
            ("min-port", MIN_PORT.to_string()),
            ("max-port", MAX_PORT.to_string()),
            ("realm", format!("\"{REALM}\"")),
            ("rest-api-separator", format!("'{REST_API_SEPARATOR}'")),
            ("max-credential-ttl", MAX_CREDENTIAL_TTL.to_string()),
            (
                "strict-credential-expiry",
                STRICT_CREDENTIAL_EXPIRY.to_string(),
            ),
            ("stale-nonce", STALE_NONCE.to_string()),
            (
                "default-allocate-lifetime",
                DEFAULT_ALLOCATE_LIFETIME.to_string(),
            ),
            ("max-allocate-lifetime", MAX_ALLOCATE_LIFETIME.to_string()),
            ("permission-lifetime", PERMISSION_LIFETIME.to_string()),
            ("channel-lifetime", CHANNEL_LIFETIME.to_string()),
            ("user-quota", USER_QUOTA.to_string()),
            ("total-quota", TOTAL_QUOTA.to_string()),
            ("max-permissions", MAX_PERMISSIONS.to_string()),
            ("max-channels", MAX_CHANNELS.to_string()),
            ("no-tcp-relay", NO_TCP_RELAY.to_string()),
            (
                "max-tcp-relay-connections",
                MAX_TCP_RELAY_CONNECTIONS.to_string(),
            ),
            ("max-bps", MAX_BPS.to_string()),
            ("bps-capacity", BPS_CAPACITY.to_string()),
            ("new-peer-rate", NEW_PEER_RATE.to_string()),
            ("drain-timeout", DRAIN_TIMEOUT.to_string()),
            ("external-ip-interval", EXTERNAL_IP_INTERVAL.to_string()),
            ("unauthenticated-rate", UNAUTHENTICATED_RATE.to_string()),
            (
                "unauthenticated-total-rate",
                UNAUTHENTICATED_TOTAL_RATE.to_string(),
            ),
            ("unauthenticated-credit", UNAUTHENTICATED_CREDIT.to_string()),
            ("log-level", LOG_LEVEL.to_string()),
            ("credential-ttl", CREDENTIAL_TTL.to_string()),
            ("mobility", MOBILITY.to_string()),
            ("usage-webhook-batch", USAGE_WEBHOOK_BATCH.to_string()),
            ("usage-webhook-interval", USAGE_WEBHOOK_INTERVAL.to_string()),
            ("usage-webhook-queue", USAGE_WEBHOOK_QUEUE.to_string()),
        ]
    }

    #[test]
    fn every_help_text_states_the_default_in_force() {
        let cmd = RawConfig::augment_args(clap::Command::new("ferroturn"));
        for (option, value) in stated() {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(option))
                .unwrap_or_else(|| panic!("no flag --{option}"));
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                help.contains(&format!("Default {value}")),
                "--{option}: help says `{help}`, the default is {value}"
            );
        }
    }

    #[test]
    fn the_shipped_example_states_the_same_defaults() {
        // The example documents each default in a comment (`# key = value` or the value
        // set); a few keys are set to other values on purpose and are not listed here.
        let text = include_str!("../../turnserver.toml.example");
        for (key, value) in [
            ("min-port", MIN_PORT.to_string()),
            ("max-port", MAX_PORT.to_string()),
            ("stale-nonce", STALE_NONCE.to_string()),
            ("max-allocate-lifetime", MAX_ALLOCATE_LIFETIME.to_string()),
            ("permission-lifetime", PERMISSION_LIFETIME.to_string()),
            ("channel-lifetime", CHANNEL_LIFETIME.to_string()),
            ("max-bps", MAX_BPS.to_string()),
            ("unauthenticated-rate", UNAUTHENTICATED_RATE.to_string()),
            (
                "unauthenticated-total-rate",
                UNAUTHENTICATED_TOTAL_RATE.to_string(),
            ),
            ("unauthenticated-credit", UNAUTHENTICATED_CREDIT.to_string()),
            ("no-tcp-relay", NO_TCP_RELAY.to_string()),
            (
                "max-tcp-relay-connections",
                MAX_TCP_RELAY_CONNECTIONS.to_string(),
            ),
            ("mobility", MOBILITY.to_string()),
            ("usage-webhook-batch", USAGE_WEBHOOK_BATCH.to_string()),
            ("usage-webhook-interval", USAGE_WEBHOOK_INTERVAL.to_string()),
            ("usage-webhook-queue", USAGE_WEBHOOK_QUEUE.to_string()),
        ] {
            let line = text
                .lines()
                .find(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(&format!("{key} ="))
                })
                .unwrap_or_else(|| panic!("turnserver.toml.example does not mention {key}"));
            let stated = line.split('=').nth(1).unwrap_or("").trim();
            let stated = stated.split_whitespace().next().unwrap_or("");
            assert_eq!(stated, value, "turnserver.toml.example: {line}");
        }
    }
}
