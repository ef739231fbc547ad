//! `ferroturn import-coturn` on coturn files: Debian's shipped turnserver.conf (the copy
//! in tests/data/coturn and the installed one) and production-like files. Each result
//! passes `check-config`, holds the translated values, and stderr names what is left
//! out; one imported configuration serves authenticated allocations end to end.

use crate::common::process::{BIN, ServerProcess, TempDir};
use crate::common::{PROCESS_WAIT, WAIT, code, echo_peer, rest_credentials};
use ferroturn::client::{Relayed, TurnClient};
use ferroturn::config::RawConfig;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/coturn")
        .join(name)
}

/// What one run of `import-coturn` produced.
struct Imported {
    toml: String,
    stderr: String,
    raw: RawConfig,
    /// Where the TOML was written (removed with the directory).
    _dir: TempDir,
}

impl Imported {
    /// The stderr line about `option` at `line` (`None`: about the file as a whole).
    fn note(&self, line: Option<usize>, option: &str) -> &str {
        let want = match line {
            Some(n) => format!(": line {n}: {option}: "),
            None => format!(".conf: {option}: "),
        };
        self.stderr
            .lines()
            .find(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("no note `{want}` in:\n{}", self.stderr))
    }
}

/// Imports `file`, asserts exit status 0 and that `check-config` accepts the output.
fn import(file: &Path) -> Imported {
    let out = Command::new(BIN)
        .arg("import-coturn")
        .arg(file)
        .output()
        .unwrap();
    let (toml, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "{}: {stderr}", file.display());
    let dir = TempDir::new("import");
    let path = dir.join("ferroturn.toml");
    std::fs::write(&path, &toml).unwrap();
    let check = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "check-config refused the import of {}:\n{}\n{toml}",
        file.display(),
        String::from_utf8_lossy(&check.stderr)
    );
    let raw = RawConfig::from_toml_str(&toml).unwrap();
    Imported {
        toml,
        stderr,
        raw,
        _dir: dir,
    }
}

/// Debian's file sets four options, all of them left out, and no credentials.
fn assert_debian_import(i: &Imported) {
    for option in [
        "syslog",
        "no-rfc5780",
        "no-stun-backward-compatibility",
        "response-origin-only-with-rfc5780",
    ] {
        assert!(
            i.stderr
                .lines()
                .any(|l| l.contains(&format!(": {option}: left out (not needed)"))),
            "{option}:\n{}",
            i.stderr
        );
    }
    assert!(!i.stderr.contains("unknown option"), "{}", i.stderr);
    assert_eq!(i.raw.static_auth_secret.len(), 1, "{}", i.toml);
    assert!(i.note(None, "static-auth-secret").contains("random secret"));
    assert!(!i.stderr.contains(&i.raw.static_auth_secret[0]));
    assert!(!i.raw.relay_ip.is_empty());
    assert!(i.note(None, "relay-ip").contains("different default"));
}

#[test]
fn debian_shipped_turnserver_conf_imports() {
    assert_debian_import(&import(&data("debian-4.6.1-turnserver.conf")));
}

/// The file of the coturn package installed on this machine, whatever its version
/// (tests/data holds 4.6.1's); skipped where none is installed or it is unreadable.
#[test]
fn installed_turnserver_conf_imports() {
    let installed = Path::new("/etc/turnserver.conf");
    if std::fs::read(installed).is_err() {
        eprintln!(
            "skipped: {} is not there or not readable",
            installed.display()
        );
        return;
    }
    assert_debian_import(&import(installed));
}

#[test]
fn a_rest_api_deployment_behind_nat_imports() {
    let i = import(&data("rest-api.conf"));
    let r = &i.raw;
    assert_eq!(
        r.static_auth_secret,
        [
            "4080a2f9c1b97e3fd6a5c0e1b2d3f4a5",
            "old-secret-kept-for-rotation"
        ]
    );
    assert!(!i.stderr.contains("4080a2f9") && !i.stderr.contains("old-secret"));
    assert_eq!(r.realm.as_deref(), Some("turn.example.com"));
    assert_eq!(
        r.listening_ip,
        ["10.20.0.4".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(r.relay_ip, r.listening_ip);
    assert_eq!(r.external_ip, ["203.0.113.40/10.20.0.4"]);
    assert_eq!((r.min_port, r.max_port), (Some(49160), Some(49999)));
    assert_eq!((r.user_quota, r.total_quota), (Some(12), Some(1200)));
    assert_eq!(r.max_bps, Some(1_000_000));
    assert_eq!(r.log_level.as_deref(), Some("debug"));
    assert_eq!(
        r.cert.as_deref(),
        Some(Path::new(
            "/etc/letsencrypt/live/turn.example.com/fullchain.pem"
        ))
    );
    // coturn's a-b ranges: one CIDR block where the range is exactly one.
    for block in [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "240.0.0.0/4",
        "64:ff9b::/96",
        "::ffff:0.0.0.0/96",
        "fc00::/7",
        "fe80::/10",
        "::1",
    ] {
        assert!(
            r.denied_peer_ip.iter().any(|d| d == block),
            "{block}: {r:?}"
        );
    }
    assert!(
        r.denied_peer_ip
            .contains(&"203.0.113.100-203.0.113.200".to_owned())
    );
    assert_eq!(r.denied_peer_ip.len(), 19);
    assert_eq!(r.allowed_peer_ip, ["10.20.0.50"]);
    for (line, option, why) in [
        (11, "fingerprint", "not needed"),
        (12, "use-auth-secret", "not needed"),
        (23, "cipher-list", "unsupported"),
        (24, "no-tlsv1", "not needed"),
        (26, "dh2066", "not needed"),
        (27, "no-cli", "not needed"),
        (50, "log-file", "not needed"),
        (53, "pidfile", "not needed"),
        (54, "proc-user", "not needed"),
    ] {
        assert!(
            i.note(Some(line), option)
                .contains(&format!("left out ({why})")),
            "{option}"
        );
    }
    assert!(i.note(None, "no-dtls").contains("different default"));
    // The file denies the private networks itself.
    assert!(!i.stderr.contains("denied-peer-ip: different default"));
}

#[test]
fn long_term_users_import() {
    let i = import(&data("long-term-users.conf"));
    let r = &i.raw;
    assert_eq!(
        r.user,
        ["alice:wonderland", "bob:0x138619c187bdc373bde2f2594eb904fc"]
    );
    assert!(!i.stderr.contains("wonderland") && !i.stderr.contains("138619c1"));
    assert!(r.static_auth_secret.is_empty());
    assert_eq!(r.realm.as_deref(), Some("voip.example.org"));
    assert_eq!(r.alt_listening_port, Some(3479));
    assert_eq!(
        (r.no_tls, r.no_dtls, r.no_tcp_relay),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(r.mobility, Some(true));
    assert_eq!(r.max_allocate_lifetime, Some(1800));
    assert_eq!(r.user_quota, Some(4));
    assert!(r.relay_ip.is_empty(), "derived from the listening IPs");
    // The SHA-256 key cannot be used; its name is given, its key is not.
    let carol = i.note(Some(11), "user");
    assert!(
        carol.contains("unsupported") && carol.contains("carol"),
        "{carol}"
    );
    assert!(!i.stderr.contains("8d9c7f8b"));
    assert!(i.note(Some(25), "cli-password").contains("unsupported"));
    assert!(!i.stderr.contains("qwerty"));
    assert!(i.note(Some(6), "lt-cred-mech").contains("not needed"));
    assert!(i.note(None, "max-bps").contains("different default"));
    assert!(i.note(None, "denied-peer-ip").contains("different default"));
}

#[test]
fn a_redis_and_prometheus_pool_member_imports() {
    let i = import(&data("redis-prometheus.conf"));
    let r = &i.raw;
    assert_eq!(
        r.redis.as_deref(),
        Some("redis://:r3dis-Pass@10.0.5.2:6380/3")
    );
    assert!(!i.stderr.contains("r3dis"));
    assert_eq!(r.api_listen, Some("0.0.0.0:9641".parse().unwrap()));
    assert_eq!(r.external_ip, ["198.51.100.23"]);
    assert_eq!(r.relay_threads, Some(4));
    assert_eq!(r.unauthenticated_rate, Some(20));
    assert_eq!(r.socket_recv_buffer_size, Some(1_048_576));
    assert_eq!(r.log_level.as_deref(), Some("trace"));
    assert_eq!(r.no_tcp, Some(true));
    assert_eq!(
        r.static_auth_secret.len(),
        1,
        "a placeholder: Redis holds the secrets"
    );
    assert!(i.note(None, "static-auth-secret").contains("Redis"));
    assert!(
        i.note(Some(6), "redis-userdb")
            .contains("translated with a change")
    );
    assert!(i.note(Some(7), "redis-statsdb").contains("unsupported"));
    assert!(i.note(Some(23), "web-admin").contains("unsupported"));
    assert!(
        i.note(Some(26), "listening-prot")
            .contains("unknown option")
    );
    assert!(i.note(None, "prometheus").contains("api-listen"));
}

#[test]
fn an_unreadable_file_fails_and_a_bad_line_is_named() {
    let dir = TempDir::new("import");
    for missing in [dir.join("nope.conf"), dir.path().to_path_buf()] {
        let out = Command::new(BIN)
            .arg("import-coturn")
            .arg(&missing)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", missing.display());
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    }
    let file = dir.join("bad.conf");
    std::fs::write(
        &file,
        b"static-auth-secret=s\nmin-port=lots\nrealm=\xff\xfe\nno-tcp=perhaps\n",
    )
    .unwrap();
    let i = import(&file);
    assert!(i.note(Some(2), "min-port").contains("cannot parse"));
    assert!(i.note(Some(3), "realm").contains("not UTF-8"));
    assert!(i.note(Some(4), "no-tcp").contains("cannot parse"));
    assert_eq!(
        (i.raw.min_port, i.raw.realm, i.raw.no_tcp),
        (None, None, None)
    );
}

/// The import of a small coturn file (long-term users, one with a precomputed key, and a
/// REST secret) runs as is: each credential gets an allocation and relays to a peer.
#[tokio::test]
async fn an_imported_configuration_serves_authenticated_allocations() {
    let dir = TempDir::new("import");
    let coturn = dir.join("turnserver.conf");
    std::fs::write(
        &coturn,
        "listening-ip=127.0.0.1\nlistening-port=0\nrelay-ip=127.0.0.1\nno-tls\nno-dtls\n\
         lt-cred-mech\nuse-auth-secret\nstatic-auth-secret=e2e-rest-secret\n\
         realm=e2e.example.org\nuser=alice:alice-pw\n\
         user=bob:0x1ab982620673d0a931b758221400d7c7\n\
         allow-loopback-peers\nfingerprint\nlog-file=/var/log/turn.log\npidfile=/run/t.pid\n",
    )
    .unwrap();
    let i = import(&coturn);
    let config = dir.join("ferroturn.toml");
    std::fs::write(&config, &i.toml).unwrap();
    let server = ServerProcess::start(&["-c".as_ref(), config.as_os_str()], PROCESS_WAIT);
    let peer = echo_peer().await;
    let (rest_user, rest_pw) =
        rest_credentials("e2e-rest-secret", "carol", Duration::from_secs(600));
    // bob's key is MD5("bob:e2e.example.org:bob-pw").
    for (user, password) in [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        (rest_user.as_str(), rest_pw.as_str()),
    ] {
        let mut c = TurnClient::new(server.addr, user, password).await.unwrap();
        let relayed = c
            .allocate()
            .await
            .unwrap_or_else(|e| panic!("{user}: {e:?}"));
        assert_eq!(relayed.ip().to_string(), "127.0.0.1");
        assert_eq!(c.realm_and_nonce().map(|(r, _)| r), Some("e2e.example.org"));
        c.create_permission(&[peer.addr]).await.unwrap();
        c.send_indication(peer.addr, b"imported").await.unwrap();
        assert_eq!(
            c.recv_relayed(WAIT).await.unwrap(),
            Some(Relayed::Indication {
                peer: peer.addr,
                data: b"imported".to_vec()
            }),
            "{user}"
        );
    }
    // A wrong password gets 401, not an allocation.
    let mut mallory = TurnClient::new(server.addr, "alice", "guess")
        .await
        .unwrap();
    assert_eq!(code(mallory.allocate().await), 401);
}
