//! Configuration parsing: `RawConfig::from_toml_str` and `Config::from_toml_str` must
//! return a configuration or an error for any text, never panic.
//!
//! Every input is used twice:
//! - as the text of a configuration file, when it is UTF-8;
//! - as a recipe for one, so the fuzzer gets past TOML syntax and into the value
//!   checks: the first byte says which of a valid base (`listening-ip`,
//!   `static-auth-secret`) to start from (bit 0, bit 1), then records
//!   `[key][kind][len][len bytes]` set a real option (the names are taken from
//!   `RawConfig`'s flags, which share the file's schema) to a value of the kind `value`
//!   makes of the bytes. A later record for the same key replaces the earlier one.
//!
//! Besides not panicking: an accepted configuration keeps the invariants
//! `Config::from_raw` checks, errors have a message, and a configuration laid over the
//! empty one (the way command-line flags are laid over the file) is unchanged, so every
//! option is carried by `RawConfig::overlay`.
#![no_main]

use clap::Args;
use ferroturn::config::{Config, RawConfig};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::LazyLock;

/// The option names, as in the file, and whether each takes a list (its flag repeats).
static KEYS: LazyLock<Vec<(String, bool)>> = LazyLock::new(|| {
    let cmd = RawConfig::augment_args(clap::Command::new("ferroturn"));
    let keys: Vec<(String, bool)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let list = matches!(a.get_action(), clap::ArgAction::Append);
            Some((a.get_long()?.to_owned(), list))
        })
        .collect();
    assert!(keys.len() > 30, "RawConfig has more options than {keys:?}");
    keys
});

/// Values the checks care about: addresses of both families and their odd spellings,
/// ranges valid and not, user entries, separators, paths.
const WORDS: &[&str] = &[
    "127.0.0.1",
    "0.0.0.0",
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "2001:db8::10",
    "192.0.2.10",
    "203.0.113.5/192.0.2.10",
    "2001:db8::1/2001:db8::10",
    "10.0.0.0/8",
    "10.0.0.0/33",
    "::/0",
    "fe80::/129",
    "1.2.3.4-1.2.3.0",
    "1.2.3.0 - 1.2.3.4",
    "1.2.3.4-::1",
    "/",
    "-",
    "alice:pw",
    "alice:0x00112233445566778899aabbccddeeff",
    "alice:0x0011",
    ":pw",
    "alice:",
    "c.pem",
    "k.pem",
    "",
    ":",
    "trace",
    "ferroturn=debug,info",
];

const BASE_LISTEN: (&str, &str) = ("listening-ip", "[\"127.0.0.1\"]");
const BASE_SECRET: (&str, &str) = ("static-auth-secret", "[\"s\"]");

/// A TOML basic string holding `s`.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Big-endian and sign-extended: short values stay small (ports, counts, -1), eight
/// bytes reach the extremes.
fn integer(bytes: &[u8]) -> i64 {
    let n = bytes.len().min(8);
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut b = [fill; 8];
    b[8 - n..].copy_from_slice(&bytes[..n]);
    i64::from_be_bytes(b)
}

fn word(b: u8) -> String {
    quoted(WORDS[usize::from(b) % WORDS.len()])
}

/// The TOML value of one record. The string kinds are put in a list for a list option;
/// the others give every option values of every type.
fn value(kind: u8, bytes: &[u8], list: bool) -> String {
    let string = |s: String| if list { format!("[{s}]") } else { s };
    match kind % 11 {
        0 => integer(bytes).to_string(),
        1 => string(quoted(&String::from_utf8_lossy(bytes))),
        2 => (bytes.first().is_some_and(|b| b & 1 == 1)).to_string(),
        3 => {
            let items: Vec<String> = bytes
                .split(|&b| b == b',')
                .map(|s| quoted(&String::from_utf8_lossy(s)))
                .collect();
            format!("[{}]", items.join(", "))
        }
        4 => {
            let items: Vec<String> = bytes.chunks(2).map(|c| integer(c).to_string()).collect();
            format!("[{}]", items.join(", "))
        }
        5 => string(bytes.first().map_or_else(|| quoted(""), |&b| word(b))),
        6 => {
            let items: Vec<String> = bytes.iter().map(|&b| word(b)).collect();
            format!("[{}]", items.join(", "))
        }
        7 => {
            // Floats, including the ones TOML spells nan and inf.
            let mut b = [0u8; 8];
            let n = bytes.len().min(8);
            b[..n].copy_from_slice(&bytes[..n]);
            let f = f64::from_be_bytes(b);
            if f.is_nan() {
                "nan".into()
            } else if f.is_infinite() {
                if f > 0.0 { "inf".into() } else { "-inf".into() }
            } else {
                format!("{f:?}")
            }
        }
        8 => {
            // A table where a scalar or list belongs.
            format!("{{ a = {} }}", quoted(&String::from_utf8_lossy(bytes)))
        }
        9 => {
            // A known value with bytes written over part of it.
            let Some((&w, rest)) = bytes.split_first() else {
                return string(quoted(""));
            };
            let Some((&at, patch)) = rest.split_first() else {
                return string(word(w));
            };
            let w = WORDS[usize::from(w) % WORDS.len()];
            let at = usize::from(at) % (w.len() + 1);
            let patch = String::from_utf8_lossy(patch);
            let tail = w.get(at + patch.len()..).unwrap_or("");
            string(quoted(&format!("{}{patch}{tail}", &w[..at])))
        }
        // Whatever the bytes say, unquoted.
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// The configuration file a recipe describes.
fn recipe(data: &[u8]) -> String {
    let Some((&flags, mut rest)) = data.split_first() else {
        return String::new();
    };
    let mut entries: BTreeMap<String, String> = BTreeMap::new();
    for (bit, (k, v)) in [BASE_LISTEN, BASE_SECRET].into_iter().enumerate() {
        if flags & (1 << bit) != 0 {
            entries.insert(k.to_owned(), v.to_owned());
        }
    }
    while let [key, kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let (key, list) = &KEYS[usize::from(*key) % KEYS.len()];
        entries.insert(key.clone(), value(*kind, bytes, *list));
    }
    let mut text = String::new();
    for (k, v) in &entries {
        let _ = writeln!(text, "{k} = {v}");
    }
    text
}

fn check(text: &str) {
    let typed = Config::from_toml_str(text);
    let raw = match RawConfig::from_toml_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            assert!(!e.message.is_empty(), "empty error for {text:?}");
            assert!(
                typed.is_err(),
                "Config accepted what RawConfig refused: {text:?}"
            );
            return;
        }
    };
    let over = RawConfig::default().overlay(raw.clone());
    assert_eq!(
        format!("{over:?}"),
        format!("{raw:?}"),
        "overlay onto the empty configuration lost an option"
    );
    match typed {
        Err(e) => assert!(!e.message.is_empty(), "empty error for {text:?}"),
        Ok(c) => {
            assert!(
                (1..=256).contains(&c.relay_threads),
                "{} threads",
                c.relay_threads
            );
            let s = &c.server;
            assert!(
                s.min_port >= 1 && s.min_port <= s.max_port,
                "{}-{}",
                s.min_port,
                s.max_port
            );
            assert!(
                usize::from(s.max_port - s.min_port) + 1 >= c.relay_threads,
                "fewer ports than threads"
            );
            assert!(s.default_lifetime <= s.max_lifetime);
            assert!(
                s.relay_v4.is_some() || s.relay_v6.is_some(),
                "no relay address"
            );
            let l = &c.listeners;
            assert!(
                !(l.udp.is_empty() && l.tcp.is_empty() && l.tls.is_empty()),
                "no listener"
            );
            assert_eq!(
                l.tls.is_empty(),
                c.tls.is_none(),
                "TLS listeners without files"
            );
            assert!(!s.credentials.realm().is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
    check(&recipe(data));
});
