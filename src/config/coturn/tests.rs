use super::options::COTURN_OPTIONS;
use super::*;
use crate::config::{Config, RawConfig};

fn host() -> Host {
    Host {
        addresses: vec![
            "127.0.0.1".parse().unwrap(),
            "::1".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            "10.1.2.3".parse().unwrap(),
            "2001:db8::3".parse().unwrap(),
        ],
        placeholder_secret: "placeholder-0123456789abcdef".into(),
    }
}

/// The import of `text`, which must pass check-config, with its parsed options.
fn run(text: &str) -> (RawConfig, Config, Vec<Note>) {
    let i = import(text, "turnserver.conf", &host());
    assert!(i.error.is_none(), "{:?}\n{}", i.error, i.toml);
    let raw = RawConfig::from_toml_str(&i.toml).unwrap();
    let config = Config::from_toml_str(&i.toml).unwrap();
    (raw, config, i.notes)
}

fn note<'a>(notes: &'a [Note], option: &str) -> &'a Note {
    notes
        .iter()
        .find(|n| n.option == option)
        .unwrap_or_else(|| panic!("no note on {option}: {notes:#?}"))
}

#[test]
fn every_coturn_option_is_translated_or_named_with_a_reason() {
    let baseline = import("", "f", &host()).toml;
    for name in COTURN_OPTIONS {
        for line in [name.to_string(), format!("{name}=1")] {
            let i = import(&line, "f", &host());
            let unknown: Vec<&Note> = i
                .notes
                .iter()
                .filter(|n| n.kind == NoteKind::Unknown)
                .collect();
            assert!(unknown.is_empty(), "{line}: {unknown:?}");
            // Translated, or a note on this line says why not.
            let noted = i
                .notes
                .iter()
                .any(|n| n.line == Some(1) || n.option == *name);
            let translated = i.toml != baseline;
            assert!(noted || translated, "{line}: neither translated nor noted");
        }
    }
}

#[test]
fn unknown_options_and_bad_values_are_named_with_their_line() {
    let i = import(
        "realm=example.org\nno-such-option=hunter2\nlistening-port=http\nFingerprint\n",
        "f",
        &host(),
    );
    let unknown = note(&i.notes, "no-such-option");
    assert_eq!((unknown.line, unknown.kind), (Some(2), NoteKind::Unknown));
    let bad = note(&i.notes, "listening-port");
    assert_eq!((bad.line, bad.kind), (Some(3), NoteKind::Invalid));
    assert!(
        note(&i.notes, "Fingerprint")
            .message
            .contains("`fingerprint`")
    );
    // The unknown option's value may be a secret: never shown.
    assert!(!i.notes.iter().any(|n| n.to_string().contains("hunter2")));
    assert!(i.error.is_none());
}

#[test]
fn secrets_are_translated_and_never_in_a_note() {
    let text = "use-auth-secret\nstatic-auth-secret=S3cret-rest\nstatic-auth-secret=0ld-S3cret\n\
                lt-cred-mech\nuser=alice:Al1ce-pw\nuser=bob:0x0123456789abcdef0123456789ABCDEF\n\
                user=carol:0x0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
                user=dave\nrealm=example.org\ncli-password=Cl1-pw\npkey-pwd=Pk-pw\n\
                redis-userdb=\"host=10.0.0.9 password=R3dis-pw\"\n\
                redis-statsdb=\"host=10.0.0.9 password=St4ts-pw\"\n\
                psql-userdb=\"host=db password=Pg-pw\"\nstateless-nonce-secret=short-N0nce\n";
    let (raw, config, notes) = run(text);
    assert_eq!(raw.static_auth_secret, ["S3cret-rest", "0ld-S3cret"]);
    assert_eq!(
        raw.user,
        ["alice:Al1ce-pw", "bob:0x0123456789abcdef0123456789ABCDEF"]
    );
    assert_eq!(raw.realm.as_deref(), Some("example.org"));
    assert_eq!(
        raw.redis.as_deref(),
        Some("redis://:R3dis-pw@10.0.0.9:6379/0")
    );
    assert!(config.fleet.is_some());
    let carol = notes.iter().find(|n| n.line == Some(7)).unwrap();
    assert_eq!(carol.kind, NoteKind::Unsupported);
    assert!(carol.message.contains("carol") && carol.message.contains("SHA-256"));
    assert_eq!(
        notes.iter().find(|n| n.line == Some(8)).unwrap().kind,
        NoteKind::Invalid
    );
    for secret in [
        "S3cret",
        "Al1ce",
        "0123456789abcdef",
        "Cl1-pw",
        "Pk-pw",
        "R3dis",
        "St4ts",
        "Pg-pw",
        "N0nce",
    ] {
        let leak: Vec<String> = notes
            .iter()
            .map(ToString::to_string)
            .filter(|n| n.contains(secret))
            .collect();
        assert!(leak.is_empty(), "{secret} shown: {leak:?}");
    }
}

#[test]
fn ranges_external_ips_and_listeners_translate() {
    let text = "listening-ip=10.0.0.5\nlistening-ip=2001:db8::5\nlistening-port=3479\n\
                tls-listening-port=443\nalt-listening-port=3480\nrelay-ip=10.0.0.5\n\
                relay-ip=10.0.0.6\nexternal-ip=203.0.113.5/10.0.0.5\nmin-port=40000\n\
                max-port=49999\ndenied-peer-ip=10.0.0.0-10.255.255.255\n\
                denied-peer-ip=198.51.100.10-198.51.100.20\nallowed-peer-ip=10.0.0.7\n\
                allow-loopback-peers\nno-multicast-peers\nno-udp=false\nno-tcp\n";
    let (raw, config, notes) = run(text);
    assert_eq!(raw.listening_port, Some(3479));
    assert_eq!(raw.tls_listening_port, Some(443));
    assert_eq!(raw.alt_listening_port, Some(3480));
    assert_eq!(raw.no_udp, Some(false));
    assert_eq!(raw.no_tcp, Some(true));
    assert_eq!(raw.relay_ip, ["10.0.0.5".parse::<IpAddr>().unwrap()]);
    assert_eq!(note(&notes, "relay-ip").line, Some(7));
    assert_eq!(raw.external_ip, ["203.0.113.5/10.0.0.5"]);
    let relay = config.server.relay_v4.unwrap();
    assert_eq!(relay.local.to_string(), "10.0.0.5");
    assert_eq!(relay.advertised.to_string(), "203.0.113.5");
    assert_eq!((raw.min_port, raw.max_port), (Some(40000), Some(49999)));
    assert_eq!(
        raw.denied_peer_ip,
        ["10.0.0.0/8", "198.51.100.10-198.51.100.20"]
    );
    assert_eq!(raw.allowed_peer_ip, ["10.0.0.7", "127.0.0.0/8", "::1"]);
    assert_eq!(note(&notes, "no-multicast-peers").kind, NoteKind::NotNeeded);
}

#[test]
fn relay_addresses_come_from_nat_mappings_or_the_host() {
    // Listening everywhere with a NAT mapping: its private side is the relay.
    let (raw, _, notes) = run("external-ip=198.51.100.1/192.168.1.10\nstatic-auth-secret=s\n");
    assert_eq!(raw.relay_ip, ["192.168.1.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(raw.listening_ip.len(), 2, "0.0.0.0 and ::");
    assert!(note(&notes, "relay-ip").message.contains("external-ip"));
    // Without one: the host's first usable address of each family.
    let (raw, config, _) = run("external-ip=198.51.100.1\nstatic-auth-secret=s\n");
    let relays: Vec<String> = raw.relay_ip.iter().map(ToString::to_string).collect();
    assert_eq!(relays, ["10.1.2.3", "2001:db8::3"]);
    assert_eq!(
        config.server.relay_v4.unwrap().advertised.to_string(),
        "198.51.100.1"
    );
    // No usable address at all: loopback, loudly.
    let bare = Host {
        addresses: vec!["127.0.0.1".parse().unwrap()],
        placeholder_secret: "p".repeat(20),
    };
    let i = import("static-auth-secret=s\n", "f", &bare);
    assert!(i.error.is_none(), "{:?}", i.error);
    assert!(i.toml.contains("relay-ip = [\"127.0.0.1\"]"), "{}", i.toml);
    assert!(
        note(&i.notes, "relay-ip")
            .message
            .contains("set the real one")
    );
}

#[test]
fn a_file_without_credentials_gets_a_random_secret_and_a_note() {
    let (raw, _, notes) = run("no-auth\n");
    assert_eq!(raw.static_auth_secret, ["placeholder-0123456789abcdef"]);
    assert_eq!(note(&notes, "no-auth").kind, NoteKind::Unsupported);
    let n = note(&notes, "static-auth-secret");
    assert_eq!(n.kind, NoteKind::Default);
    assert!(!n.message.contains("placeholder"));
}

#[test]
fn values_and_defaults_that_differ_are_adjusted_and_noted() {
    let text = "static-auth-secret=s\nmax-allocate-lifetime=300\nrelay-threads=0\n\
                verbose\nstale-nonce\nchannel-lifetime=0\nmax-bps=3000000 # 3 MB/s\n\
                prometheus\nprometheus-port=9100\ncert=turn.pem\npkey=/etc/k.pem\n\
                unauthorized-ratelimit\nmin-port=60000\nmax-port=50000\n";
    let (raw, config, notes) = run(text);
    assert_eq!(raw.max_allocate_lifetime, Some(300));
    assert_eq!(raw.default_allocate_lifetime, Some(300));
    assert_eq!(raw.relay_threads, Some(1));
    assert_eq!(raw.log_level.as_deref(), Some("debug"));
    assert_eq!(raw.stale_nonce, Some(600));
    assert_eq!(raw.channel_lifetime, None);
    assert_eq!(note(&notes, "channel-lifetime").kind, NoteKind::Invalid);
    assert_eq!(raw.max_bps, Some(3_000_000));
    assert_eq!(note(&notes, "max-bps").kind, NoteKind::Changed);
    assert_eq!(config.api.listen.unwrap(), "0.0.0.0:9100".parse().unwrap());
    assert!(note(&notes, "cert").message.contains("relative"));
    assert!(note(&notes, "no-dtls").message.contains("DTLS"));
    assert_eq!(raw.unauthenticated_rate, Some(10));
    assert_eq!((raw.min_port, raw.max_port), (None, None));
    assert_eq!(note(&notes, "min-port").kind, NoteKind::Invalid);
}

#[test]
fn the_output_is_valid_toml_for_awkward_strings() {
    let (raw, _, _) = run("realm=\"quote\\\"d # realm\"\nuser=name:pa ss\"w\\ord=\n");
    assert_eq!(raw.realm.as_deref(), Some("quote\\\"d # realm"));
    assert_eq!(raw.user, ["name:pa ss\"w\\ord="]);
}
