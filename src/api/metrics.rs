//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4), written by
//! hand from [`Control::metrics`]. Every label takes its values from a fixed set (error
//! codes, static reasons, transport, direction, kind): no user, IP or port ever becomes
//! a label, so the number of series is bounded.

use crate::control::{Control, Metrics, Refusal, UsageDrop};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use ferroturn_core::server::stats::ERROR_CODES;
use ferroturn_core::server::{AuthFailure, Deletion};
use std::fmt::Write;
use std::sync::Arc;

const CONTENT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn scrape(State(control): State<Arc<Control>>) -> Response {
    let mut r = render(&control.metrics()).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT));
    r
}

/// One metric family: HELP and TYPE, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Self {
        let _ = write!(self.out, "ferroturn_{}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                // Label values are static identifiers: nothing to escape.
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP ferroturn_{name} {help}");
    let _ = writeln!(out, "# TYPE ferroturn_{name} {kind}");
    Family { out, name }
}

fn counter<'a>(out: &'a mut String, name: &'static str, help: &str) -> Family<'a> {
    family(out, name, "counter", help)
}

fn gauge<'a>(out: &'a mut String, name: &'static str, help: &str) -> Family<'a> {
    family(out, name, "gauge", help)
}

/// "REST credential beyond the maximum TTL" -> "rest_credential_beyond_the_maximum_ttl".
/// The whole exposition.
pub fn render(m: &Metrics) -> String {
    let s = &m.stats;
    let g = &m.gauges;
    let mut out = String::with_capacity(8 * 1024);
    let o = &mut out;
    gauge(o, "build_info", "Version of the running server (value 1).")
        .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1);
    gauge(o, "relay_threads", "Relay threads (shards).").sample(&[], m.shards as u64);
    gauge(
        o,
        "draining",
        "1 while new allocations are refused for a drain.",
    )
    .sample(&[], u64::from(m.draining));
    if let Some(up) = m.fleet_redis_up {
        gauge(
            o,
            "fleet_redis_up",
            "1 while the fleet's Redis answers; 0 while this node serves on its own state.",
        )
        .sample(&[], u64::from(up));
    }

    gauge(o, "allocations_active", "Allocations open now.").sample(&[], g.allocations);
    counter(o, "allocations_created_total", "Allocations created.")
        .sample(&[], s.allocations_created);
    counter(
        o,
        "allocations_expired_total",
        "Allocations whose lifetime ran out.",
    )
    .sample(&[], s.allocations_expired);
    counter(
        o,
        "allocations_deleted_total",
        "Allocations deleted by their client, a closed connection or an operator.",
    )
    .sample(&[], s.allocations_deleted);
    gauge(o, "permissions_active", "Permissions installed now.").sample(&[], g.permissions);
    gauge(o, "channels_active", "Channel bindings now.").sample(&[], g.channels);
    gauge(
        o,
        "deadlines_armed",
        "Expiry timers armed (one per live allocation, permission and channel).",
    )
    .sample(&[], g.deadlines);

    for (name, help, bytes) in [
        (
            "relayed_packets_total",
            "Datagrams relayed, by client transport (tcp includes tls; dtls is DTLS over UDP) \
             and direction.",
            false,
        ),
        (
            "relayed_bytes_total",
            "Payload bytes relayed, by client transport and direction.",
            true,
        ),
    ] {
        let mut f = counter(o, name, help);
        for (t, transport) in ["udp", "tcp", "dtls"].into_iter().enumerate() {
            for (d, direction) in ["client_to_peer", "peer_to_client"].into_iter().enumerate() {
                let traffic = s.relayed[t][d];
                let v = if bytes {
                    traffic.bytes
                } else {
                    traffic.packets
                };
                f.sample(&[("transport", transport), ("direction", direction)], v);
            }
        }
    }

    let mut f = counter(
        o,
        "auth_failures_total",
        "Failed authentications (401, and 438 for a stale nonce), by reason.",
    );
    for reason in AuthFailure::ALL {
        f.sample(&[("reason", reason.label())], s.auth_failures_with(reason));
    }
    let mut f = counter(
        o,
        "error_responses_total",
        "Error responses sent, by STUN error code.",
    );
    for (code, n) in ERROR_CODES.iter().zip(s.errors) {
        f.sample(&[("code", &code.to_string())], n);
    }
    counter(
        o,
        "policy_denied_total",
        "Peer addresses refused by the peer policy (403 answers and dropped datagrams).",
    )
    .sample(&[], s.policy_denied);
    let refused_508 = s.errors_with(508).saturating_sub(s.peer_rate_refused);
    counter(
        o,
        "quota_rejections_total",
        "Refusals by a quota or cap: allocation_quota (486, user-quota), capacity (508 \
         other than peer_rate: ports, total-quota, caps, drain), peer_rate (508, \
         new-peer-rate), bandwidth (datagrams dropped by max-bps or bps-capacity).",
    )
    .sample(&[("kind", "allocation_quota")], s.errors_with(486))
    .sample(&[("kind", "capacity")], refused_508)
    .sample(&[("kind", "peer_rate")], s.peer_rate_refused)
    .sample(&[("kind", "bandwidth")], s.bandwidth_dropped);
    counter(
        o,
        "rate_limited_total",
        "Answers to unauthenticated requests over UDP not sent: reason source (the \
         address's unauthenticated-rate) or total (unauthenticated-total-rate).",
    )
    .sample(
        &[("reason", "source")],
        s.rate_limited.saturating_sub(s.rate_limited_total),
    )
    .sample(&[("reason", "total")], s.rate_limited_total);
    counter(
        o,
        "unauthenticated_credited_total",
        "Answers to unauthenticated requests paid for by the credit their source earned \
         with authenticated requests (unauthenticated-credit).",
    )
    .sample(&[], s.unauthenticated_credited);

    gauge(
        o,
        "connections_open",
        "TCP and TLS client connections and DTLS sessions open.",
    )
    .sample(&[], m.connections_open);
    counter(
        o,
        "connections_accepted_total",
        "TCP and TLS client connections accepted.",
    )
    .sample(&[("transport", "tcp")], m.connections_accepted_tcp)
    .sample(&[("transport", "tls")], m.connections_accepted_tls);
    counter(
        o,
        "connections_refused_total",
        "TCP and TLS connections and DTLS sessions refused by max-tcp-connections(-per-ip).",
    )
    .sample(&[], m.connections_refused);
    gauge(
        o,
        "dtls_sessions_active",
        "DTLS sessions open now (handshaking or established).",
    )
    .sample(&[], m.dtls_sessions);
    counter(
        o,
        "dtls_handshakes_total",
        "DTLS handshakes started from a valid cookie, by kind: done, or failed (an error \
         or tcp-handshake-timeout).",
    )
    .sample(&[("kind", "done")], m.dtls_handshakes_done)
    .sample(&[("kind", "failed")], m.dtls_handshakes_failed);
    counter(
        o,
        "dtls_hello_verify_total",
        "HelloVerifyRequests sent: ClientHellos without a valid cookie (stateless, RFC 6347 \
         section 4.2.1).",
    )
    .sample(&[], m.dtls_hello_verify);
    front(o, m);
    counter(
        o,
        "stream_frames_dropped_total",
        "Frames toward slow TCP/TLS clients dropped (tcp-send-queue full).",
    )
    .sample(&[], m.stream_frames_dropped);
    counter(
        o,
        "reservations_total",
        "RFC 8656 reserved relay ports: issued (EVEN-PORT with R), claimed (RESERVATION-TOKEN).",
    )
    .sample(&[("kind", "issued")], s.reservations_issued)
    .sample(&[("kind", "claimed")], s.reservations_claimed);
    tcp_relay(o, m);
    counter(
        o,
        "mobility_total",
        "RFC 8016 mobility: MOBILITY-TICKETs issued (ticket_issued), allocations moved to a \
         new client 5-tuple (moved, counted where they landed), of which from another relay \
         thread (moved_across_shards).",
    )
    .sample(&[("kind", "ticket_issued")], s.tickets_issued)
    .sample(&[("kind", "moved")], s.allocations_moved)
    .sample(
        &[("kind", "moved_across_shards")],
        s.allocations_moved_across_shards,
    );
    counter(o, "reloads_total", "Configuration reloads applied.").sample(&[], m.reloads_ok);
    counter(
        o,
        "reload_failures_total",
        "Configuration reloads refused (invalid file).",
    )
    .sample(&[], m.reloads_failed);
    kernel(o, m);
    usage(o, m);
    out
}

/// Usage records: written (one per ended allocation, by why it ended), and with a
/// webhook, delivered, retried, dropped and queued.
fn usage(o: &mut String, m: &Metrics) {
    let u = &m.usage;
    let mut f = counter(
        o,
        "usage_records_total",
        "Usage records written (one per ended allocation), by why it ended.",
    );
    for why in Deletion::ALL {
        f.sample(&[("reason", why.name())], u.written_for(why));
    }
    let Some(queued) = u.queued else {
        return;
    };
    counter(
        o,
        "usage_records_delivered_total",
        "Usage records the webhook acknowledged (2xx).",
    )
    .sample(&[], u.delivered);
    let mut f = counter(
        o,
        "usage_records_dropped_total",
        "Usage records that did not reach the webhook, by reason (queue_full, rejected, \
         shutdown).",
    );
    for reason in UsageDrop::ALL {
        f.sample(&[("reason", reason.name())], u.dropped_for(reason));
    }
    counter(
        o,
        "usage_webhook_retries_total",
        "Webhook requests that failed and were tried again.",
    )
    .sample(&[], u.retries);
    gauge(
        o,
        "usage_records_queued",
        "Usage records waiting for the webhook now.",
    )
    .sample(&[], queued);
}

/// RFC 6062 TCP relays: peer connections by what became of them, those open now, and
/// the bytes their pipes relayed (not in `relayed_*_total`, which count datagrams).
/// PROXY headers, connections refused before TURN, HTTPS pass-through.
fn front(o: &mut String, m: &Metrics) {
    let f = &m.front;
    let mut family = counter(
        o,
        "proxy_headers_total",
        "PROXY protocol headers accepted (proxy-protocol-from), by version and kind: proxy \
         (naming the client) or local (LOCAL, UNKNOWN: the proxy's own connection).",
    );
    for (version, kinds) in ["1", "2"].iter().zip(f.proxy_headers) {
        family
            .sample(&[("version", version), ("kind", "proxy")], kinds[0])
            .sample(&[("version", version), ("kind", "local")], kinds[1]);
    }
    let mut family = counter(
        o,
        "stream_refused_total",
        "TCP and TLS connections closed before TURN or the HTTPS backend saw them, by \
         reason: a PROXY header late, malformed (or missing), too long, from an untrusted \
         source or naming a client already connected; a ClientHello late, invalid or too \
         long (https-backend).",
    );
    for (why, n) in Refusal::ALL.iter().zip(f.refused) {
        family.sample(&[("reason", why.label())], n);
    }
    counter(
        o,
        "https_passthrough_total",
        "TLS connections passed through to https-backend (ALPN h2 or http/1.1): opened, \
         or backend_failed (the backend could not be reached).",
    )
    .sample(&[("kind", "opened")], f.passed)
    .sample(&[("kind", "backend_failed")], f.backend_failed);
    gauge(
        o,
        "https_passthrough_open",
        "Connections passed through to https-backend open now.",
    )
    .sample(&[], f.passed_open);
    counter(
        o,
        "https_passthrough_bytes_total",
        "Bytes passed through between clients and https-backend.",
    )
    .sample(&[("direction", "client_to_backend")], f.passed_bytes[0])
    .sample(&[("direction", "backend_to_client")], f.passed_bytes[1]);
}

fn tcp_relay(o: &mut String, m: &Metrics) {
    let s = &m.stats;
    counter(
        o,
        "tcp_relay_connections_total",
        "TCP peer connections of TCP allocations (RFC 6062): connected for a Connect, \
         connect_failed (447), accepted from a peer, refused (a peer without permission, \
         policy, duplicate or cap), bound by a ConnectionBind, unbound (closed after 30 s \
         without one).",
    )
    .sample(&[("kind", "connected")], s.tcp_connected)
    .sample(&[("kind", "connect_failed")], s.tcp_connect_failed)
    .sample(&[("kind", "accepted")], s.tcp_accepted)
    .sample(&[("kind", "refused")], s.tcp_refused)
    .sample(&[("kind", "bound")], s.tcp_bound)
    .sample(&[("kind", "unbound")], s.tcp_unbound_expired);
    gauge(
        o,
        "tcp_relay_connections_active",
        "TCP peer connections open now: pending (connecting or waiting for a \
         ConnectionBind) and bound to a data connection.",
    )
    .sample(&[("kind", "pending")], m.gauges.tcp_pending)
    .sample(&[("kind", "bound")], m.gauges.tcp_bound);
    counter(
        o,
        "tcp_relay_bytes_total",
        "Bytes relayed between TCP peer connections and their data connections.",
    )
    .sample(&[("direction", "client_to_peer")], s.tcp_relayed[0])
    .sample(&[("direction", "peer_to_client")], s.tcp_relayed[1]);
}

/// The kernel fast path's families (`kernel-offload`); its datagrams are not in
/// `relayed_*_total`, which count what user space relayed.
fn kernel(o: &mut String, m: &Metrics) {
    gauge(
        o,
        "kernel_offload",
        "1 while the eBPF fast path relays bound UDP channels.",
    )
    .sample(&[], u64::from(m.offload.is_some()));
    let Some((t, installed)) = &m.offload else {
        return;
    };
    gauge(
        o,
        "kernel_channels_active",
        "Channels the kernel relays now.",
    )
    .sample(&[], *installed);
    let directions = [("client_to_peer", &t.up), ("peer_to_client", &t.down)];
    let mut f = counter(
        o,
        "kernel_relayed_packets_total",
        "Datagrams the kernel relayed (not in relayed_packets_total), by direction.",
    );
    for (d, totals) in directions {
        f.sample(&[("direction", d)], totals.relayed.packets);
    }
    let mut f = counter(
        o,
        "kernel_relayed_bytes_total",
        "Payload bytes the kernel relayed, by direction.",
    );
    for (d, totals) in directions {
        f.sample(&[("direction", d)], totals.relayed.bytes);
    }
    let mut f = counter(
        o,
        "kernel_dropped_total",
        "Datagrams the kernel dropped, by direction and reason (max_bps, bps_capacity).",
    );
    for (d, totals) in directions {
        f.sample(
            &[("direction", d), ("reason", "max_bps")],
            totals.dropped_rate,
        );
        f.sample(
            &[("direction", d), ("reason", "bps_capacity")],
            totals.dropped_capacity,
        );
    }
    let p = &t.passed;
    let mut f = counter(
        o,
        "kernel_passed_total",
        "Datagrams of installed channels the kernel left to user space, by reason.",
    );
    for (reason, v) in [
        ("malformed", p.malformed),
        ("too_big", p.too_big),
        ("not_loopback", p.not_loopback),
        ("no_route", p.no_route),
        ("frag_needed", p.frag_needed),
        ("forwarding_disabled", p.forwarding_disabled),
    ] {
        f.sample(&[("reason", reason)], v);
    }
    counter(
        o,
        "kernel_errors_total",
        "Datagrams dropped because a kernel helper failed half way through a rewrite.",
    )
    .sample(&[], t.dropped_errors);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_line_is_name_labels_value() {
        let mut m = Metrics::default();
        m.stats.auth_failures[AuthFailure::BeyondMaxTtl.index()] = 3;
        m.stats.relayed[1][0].bytes = 1200;
        m.stats.relayed[2][1].packets = 7;
        m.dtls_handshakes_failed = 4;
        m.offload = Some((Default::default(), 2));
        m.usage.queued = Some(5);
        m.usage.dropped[0] = 9;
        let text = render(&m);
        assert!(text.contains("ferroturn_usage_records_total{reason=\"client\"} 0\n"));
        assert!(text.contains("ferroturn_usage_records_dropped_total{reason=\"queue_full\"} 9\n"));
        assert!(text.contains("ferroturn_usage_records_queued 5\n"));
        assert!(text.contains(
            "ferroturn_relayed_packets_total{transport=\"dtls\",direction=\"peer_to_client\"} 7\n"
        ));
        assert!(text.contains("ferroturn_dtls_handshakes_total{kind=\"failed\"} 4\n"));
        assert!(text.contains("ferroturn_dtls_sessions_active 0\n"));
        assert!(text.contains("ferroturn_kernel_channels_active 2\n"));
        assert!(text.contains(
            "ferroturn_auth_failures_total{reason=\"rest_credential_beyond_the_maximum_ttl\"} 3\n"
        ));
        assert!(text.contains(
            "ferroturn_relayed_bytes_total{transport=\"tcp\",direction=\"client_to_peer\"} 1200\n"
        ));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(
                    typed.insert(rest.split(' ').next().unwrap().to_owned()),
                    "{line}"
                );
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(name), "{name} has no TYPE line");
            assert!(name.starts_with("ferroturn_"));
        }
    }
}
