//! Configuration: the TOML file and the command-line flags share one schema
//! ([`RawConfig`], coturn's option names), flags override the file, and the result is
//! turned once into typed configuration ([`Config`]). Unknown keys and bad values are
//! [`ConfigError`]s that name the key. Nothing here draws randomness: secrets are made
//! at start-up.

pub mod api;
pub mod coturn;
pub mod defaults;
mod error;
mod external;
mod raw;
mod typed;
mod usage;

pub use api::{ApiConfig, ApiKey, KeyHash, RawApiKey, Secret};
pub use error::ConfigError;
pub use external::{ExternalIpAuto, StunServer};
pub use raw::RawConfig;
pub use typed::{
    AllocationFamily, Config, KernelOffload, Listeners, StreamFront, StreamLimits, TlsFiles,
};
pub use usage::{UsageConfig, WebhookConfig};

use std::path::Path;

/// The configuration from `file` (if any) with the command-line `flags` over it.
pub fn load(file: Option<&Path>, flags: RawConfig) -> Result<Config, ConfigError> {
    let base = match file {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    Config::from_raw(base.overlay(flags))
}

#[cfg(test)]
mod tests {
    use super::typed::parse_user;
    use super::*;
    use std::net::{IpAddr, SocketAddr};
    use std::path::PathBuf;
    use std::time::Duration;

    const BASE: &str = "listening-ip = [\"127.0.0.1\"]\nstatic-auth-secret = [\"s\"]\n";

    #[test]
    fn defaults_apply() {
        let c = Config::from_toml_str(BASE).unwrap();
        assert_eq!(c.listeners.udp, vec!["127.0.0.1:3478".parse().unwrap()]);
        assert_eq!(c.listeners.tcp, c.listeners.udp);
        assert!(
            c.listeners.tls.is_empty() && c.tls.is_none(),
            "TLS is off without cert"
        );
        assert_eq!(c.server.max_lifetime, Duration::from_secs(3600));
        assert_eq!(c.server.default_lifetime, Duration::from_secs(600));
        assert_eq!(
            c.server.relay_v4.unwrap().local,
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(c.server.relay_v6.is_none());
    }

    #[test]
    fn https_backend_and_proxy_protocol_from() {
        let tls = "cert = \"c.pem\"\npkey = \"k.pem\"\n";
        let c = Config::from_toml_str(&format!(
            "{BASE}{tls}https-backend = \"[::1]:8443\"\nproxy-protocol-from = [\"10.0.0.0/8\", \"192.0.2.1\"]\n"
        ))
        .unwrap();
        assert_eq!(c.front.https_backend.as_deref(), Some("[::1]:8443"));
        assert!(c.front.expects_proxy("10.1.2.3".parse().unwrap()));
        assert!(c.front.expects_proxy("::ffff:10.1.2.3".parse().unwrap()));
        assert!(c.front.expects_proxy("192.0.2.1".parse().unwrap()));
        assert!(!c.front.expects_proxy("192.0.2.2".parse().unwrap()));
        assert_eq!(
            Config::from_toml_str(BASE).unwrap().front,
            StreamFront::default()
        );
        for bad in ["localhost", ":443", "host:0", "host:x", "::1:443", "a b:1"] {
            let e = Config::from_toml_str(&format!("{BASE}{tls}https-backend = \"{bad}\"\n"))
                .unwrap_err();
            assert!(e.to_string().contains("https-backend"), "{bad}: {e}");
        }
        // Only the TLS ports can share with an HTTPS server.
        let e = Config::from_toml_str(&format!("{BASE}https-backend = \"localhost:8443\"\n"))
            .unwrap_err();
        assert!(e.to_string().contains("TLS"), "{e}");
        let e = Config::from_toml_str(&format!("{BASE}proxy-protocol-from = [\"10.0.0.0/40\"]\n"))
            .unwrap_err();
        assert!(e.to_string().contains("proxy-protocol-from"), "{e}");
    }

    #[test]
    fn busy_poll_defaults_to_50_us_and_is_bounded() {
        let c = Config::from_toml_str(BASE).unwrap();
        assert_eq!(c.busy_poll, Duration::from_micros(50));
        let c = Config::from_toml_str(&format!("{BASE}busy-poll-us = 0\n")).unwrap();
        assert_eq!(c.busy_poll, Duration::ZERO);
        let c = Config::from_toml_str(&format!("{BASE}busy-poll-us = 1000\n")).unwrap();
        assert_eq!(c.busy_poll, Duration::from_millis(1));
        let e = Config::from_toml_str(&format!("{BASE}busy-poll-us = 1001\n")).unwrap_err();
        assert!(e.to_string().contains("busy-poll-us"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = Config::from_toml_str(&format!("{BASE}no-such-option = 1\n")).unwrap_err();
        assert!(e.to_string().contains("no-such-option"), "{e}");
        let e = Config::from_toml_str(&format!("{BASE}denied-peer-ip = [\"10.0.0.0/99\"]\n"))
            .unwrap_err();
        assert!(
            e.to_string().contains("denied-peer-ip") && e.to_string().contains("10.0.0.0/99"),
            "{e}"
        );
        let e = Config::from_toml_str(&format!("{BASE}min-port = 5000\nmax-port = 4000\n"))
            .unwrap_err();
        assert!(e.to_string().contains("min-port"), "{e}");
        let e = Config::from_toml_str(&format!("{BASE}listening-port = \"x\"\n")).unwrap_err();
        assert!(e.to_string().contains("listening-port"), "{e}");
        let e = Config::from_toml_str("listening-ip = [\"127.0.0.1\"]\n").unwrap_err();
        assert!(e.to_string().contains("static-auth-secret"), "{e}");
        let e = Config::from_toml_str("static-auth-secret = [\"s\"]\n").unwrap_err();
        assert!(e.to_string().contains("relay-ip"), "{e}");
        let e = Config::from_toml_str(&format!("{BASE}nonce-secret = [\"short\"]\n")).unwrap_err();
        assert!(e.to_string().contains("nonce-secret"), "{e}");
        let c = Config::from_toml_str(&format!(
            "{BASE}nonce-secret = [\"0123456789abcdef\", \"fedcba9876543210\"]\n"
        ))
        .unwrap();
        assert_eq!(
            format!("{:?}", c.server.nonce_keys),
            "Some(NonceKeys(2 keys))"
        );
    }

    #[test]
    fn external_ip_maps_the_relay() {
        let c = Config::from_toml_str(&format!(
            "{BASE}relay-ip = [\"10.0.0.5\"]\nexternal-ip = [\"203.0.113.5/10.0.0.5\"]\n"
        ))
        .unwrap();
        let r = c.server.relay_v4.unwrap();
        assert_eq!(r.local.to_string(), "10.0.0.5");
        assert_eq!(r.advertised.to_string(), "203.0.113.5");
    }

    #[test]
    fn command_line_overrides_file() {
        let file = RawConfig::from_toml_str(&format!("{BASE}realm = \"file\"\nmin-port = 50000\n"))
            .unwrap();
        let cli = RawConfig {
            realm: Some("cli".into()),
            static_auth_secret: vec!["t".into()],
            ..Default::default()
        };
        let merged = file.overlay(cli);
        assert_eq!(merged.realm.as_deref(), Some("cli"));
        assert_eq!(merged.min_port, Some(50000));
        assert_eq!(merged.static_auth_secret, vec!["t".to_string()]);
    }

    #[test]
    fn listeners_per_protocol() {
        let c = Config::from_toml_str(&format!(
            "{BASE}cert = \"c.pem\"\npkey = \"k.pem\"\nalt-listening-port = 3479\n\
             tls-listening-port = 443\nno-udp = true\n"
        ))
        .unwrap();
        let addrs =
            |v: &[&str]| -> Vec<SocketAddr> { v.iter().map(|a| a.parse().unwrap()).collect() };
        assert!(c.listeners.udp.is_empty());
        assert_eq!(
            c.listeners.tcp,
            addrs(&["127.0.0.1:3478", "127.0.0.1:3479"])
        );
        assert_eq!(c.listeners.tls, addrs(&["127.0.0.1:443"]));
        // DTLS on the UDP side of the TLS ports (no-udp concerns listening-port only).
        assert_eq!(c.listeners.dtls, c.listeners.tls);
        assert_eq!(c.tls.unwrap().cert, PathBuf::from("c.pem"));
        let no_dtls = Config::from_toml_str(&format!(
            "{BASE}cert = \"c.pem\"\npkey = \"k.pem\"\nno-dtls = true\n"
        ))
        .unwrap();
        assert!(no_dtls.listeners.dtls.is_empty());
        assert_eq!(no_dtls.listeners.tls, addrs(&["127.0.0.1:5349"]));
        // Without a certificate there is neither TLS nor DTLS.
        assert!(
            Config::from_toml_str(BASE)
                .unwrap()
                .listeners
                .dtls
                .is_empty()
        );
        let e = Config::from_toml_str(&format!("{BASE}cert = \"c.pem\"\n")).unwrap_err();
        assert!(e.to_string().contains("pkey"), "{e}");
        let e =
            Config::from_toml_str(&format!("{BASE}no-udp = true\nno-tcp = true\n")).unwrap_err();
        assert!(e.to_string().contains("nothing to listen on"), "{e}");
        let e = Config::from_toml_str(&format!("{BASE}tcp-send-queue = 10\n")).unwrap_err();
        assert!(e.to_string().contains("tcp-send-queue"), "{e}");
    }

    #[test]
    fn users_parse() {
        assert!(parse_user("alice:pw").is_ok());
        assert!(parse_user("alice:0x00112233445566778899aabbccddeeff").is_ok());
        assert!(parse_user("alice:0x0011").is_err());
        // Found by the config_parse fuzzer: a multi-byte character among the digits.
        assert!(parse_user("a:0x0\u{e9}0112233445566778899aabbccddee").is_err());
        assert!(parse_user("a:0x+f+f112233445566778899aabbccddee").is_err());
        assert!(parse_user("alice").is_err());
        assert!(parse_user(":pw").is_err());
    }
}
