//! Where ferroturn listens and relays from: coturn's listeners, its relay addresses
//! (picked at run time by coturn when the file names none), NAT mappings, TLS files and
//! the relay port range.

use super::finish::Toml;
use super::translate::Draft;
use super::{Host, NoteKind};
use std::net::IpAddr;

pub fn listeners(d: &mut Draft, out: &mut Toml, host: &Host) {
    out.section("Listeners");
    let mut ips = d.listening_ip.clone();
    if ips.is_empty() {
        ips.push(IpAddr::from([0, 0, 0, 0]));
        let v6 = usable(host).any(|ip| ip.is_ipv6());
        if v6 {
            ips.push(IpAddr::from([0u16; 8]));
        }
        let what = if v6 {
            "0.0.0.0 and ::"
        } else {
            "0.0.0.0 (no IPv6 address on this host)"
        };
        d.note(
            None,
            "listening-ip",
            NoteKind::Default,
            format!(
                "coturn listens on every address of the host when listening-ip is not given; \
                 written as {what}"
            ),
        );
    }
    out.list("listening-ip", ips.iter().map(ToString::to_string));
    out.int("listening-port", d.listening_port);
    out.int("tls-listening-port", d.tls_listening_port);
    out.int("alt-listening-port", d.alt_listening_port);
    out.int("alt-tls-listening-port", d.alt_tls_listening_port);
    for (key, value) in [
        ("no-udp", d.no_udp),
        ("no-tcp", d.no_tcp),
        ("no-tls", d.no_tls),
    ] {
        out.boolean(key, value);
    }
    match (d.cert.take(), d.pkey.take()) {
        (Some(cert), Some(pkey)) => {
            out.string("cert", Some(cert));
            out.string("pkey", Some(pkey));
            if d.no_dtls.is_none() && d.no_tls != Some(true) {
                d.note(
                    None,
                    "no-dtls",
                    NoteKind::Default,
                    "ferroturn serves DTLS on the TLS ports whenever TLS is on (as coturn 4.6 \
                     does; newer coturn only with `dtls`): set no-dtls = true to keep it off"
                        .into(),
                );
            }
        }
        (None, None) => {
            if d.tls_listening_port.is_some() && d.no_tls != Some(true) {
                d.note(
                    None,
                    "cert",
                    NoteKind::Default,
                    "coturn looks for turn_server_cert.pem and turn_server_pkey.pem when cert \
                     and pkey are not given; ferroturn serves TLS only with both set"
                        .into(),
                );
            }
        }
        (cert, _) => {
            let (given, missing) = if cert.is_some() {
                ("cert", "pkey")
            } else {
                ("pkey", "cert")
            };
            d.note(
                None,
                given,
                NoteKind::Unsupported,
                format!(
                    "{missing} is not given (coturn then looks for a default file); ferroturn \
                 needs both, so TLS is left off"
                ),
            );
        }
    }
    out.boolean("no-dtls", d.no_dtls);
}

/// The addresses ferroturn could relay from: the host's, without loopback, link-local
/// or other special addresses.
fn usable(host: &Host) -> impl Iterator<Item = IpAddr> + '_ {
    host.addresses.iter().copied().filter(|ip| match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    })
}

pub fn relay(d: &mut Draft, out: &mut Toml, host: &Host) {
    out.section("Relay");
    let mut relays: Vec<IpAddr> = Vec::new();
    for (line, ip) in std::mem::take(&mut d.relay_ip) {
        if relays.iter().any(|r| r.is_ipv4() == ip.is_ipv4()) {
            d.note(
                Some(line),
                "relay-ip",
                NoteKind::Unsupported,
                format!(
                    "`{ip}`: ferroturn relays from one address per family; the first one is kept"
                ),
            );
        } else {
            relays.push(ip);
        }
    }
    let specific: Vec<IpAddr> = d
        .listening_ip
        .iter()
        .copied()
        .filter(|ip| !ip.is_unspecified())
        .collect();
    if relays.is_empty() && specific.is_empty() {
        // coturn relays from the address the client reached; ferroturn needs it named.
        let from_nat: Vec<IpAddr> = d.external_ip.iter().filter_map(|(_, _, l)| *l).collect();
        let (found, whence) = if from_nat.is_empty() {
            (usable(host).collect::<Vec<_>>(), "this host's interfaces")
        } else {
            (from_nat, "the private side of external-ip")
        };
        for ip in found {
            if !relays.iter().any(|r| r.is_ipv4() == ip.is_ipv4()) {
                relays.push(ip);
            }
        }
        let message = if relays.is_empty() {
            relays.push(IpAddr::from([127, 0, 0, 1]));
            "coturn relays from the address each client reached; ferroturn needs relay-ip, \
             and this host has no usable address: 127.0.0.1 was written, set the real one"
                .to_owned()
        } else {
            let list: Vec<String> = relays.iter().map(ToString::to_string).collect();
            format!(
                "coturn relays from the address each client reached; ferroturn binds relays \
                 to one address per family: {} from {whence}, check it",
                list.join(", ")
            )
        };
        d.note(None, "relay-ip", NoteKind::Default, message);
    } else if relays.is_empty() {
        let mut first: Vec<IpAddr> = Vec::new();
        for ip in &specific {
            if first.iter().any(|f| f.is_ipv4() == ip.is_ipv4()) {
                d.note(
                    None,
                    "relay-ip",
                    NoteKind::Default,
                    format!(
                        "coturn relays from the address each client reached; ferroturn relays \
                     from the first listening-ip of each family, not from {ip}"
                    ),
                );
            } else {
                first.push(*ip);
            }
        }
    }
    out.list("relay-ip", relays.iter().map(ToString::to_string));
    let mut externals = Vec::new();
    for (line, public, private) in std::mem::take(&mut d.external_ip) {
        match private {
            Some(l) => {
                let bound = if relays.is_empty() {
                    &specific
                } else {
                    &relays
                };
                if !bound.contains(&l) {
                    d.note(
                        Some(line),
                        "external-ip",
                        NoteKind::Changed,
                        format!(
                            "ferroturn maps PUBLIC/PRIVATE only for a relay bound to PRIVATE, and \
                         no relay address is {l}: this mapping has no effect"
                        ),
                    );
                }
                externals.push(format!("{public}/{l}"));
            }
            None => externals.push(public.to_string()),
        }
    }
    out.list("external-ip", externals);
    out.string(
        "allocation-default-address-family",
        d.allocation_default_address_family.map(String::from),
    );
    out.boolean("mobility", d.mobility);
    if let (Some(min), Some(max)) = (d.min_port, d.max_port) {
        if min > max {
            d.note(
                None,
                "min-port",
                NoteKind::Invalid,
                format!("min-port {min} is above max-port {max}: both are left out"),
            );
            d.min_port = None;
            d.max_port = None;
        }
    }
    out.int("min-port", d.min_port);
    out.int("max-port", d.max_port);
}
