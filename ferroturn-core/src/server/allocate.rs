//! Allocate (RFC 8656 section 7.2, and RFC 6062 section 5.1 for TCP allocations) and the
//! completion of an allocation once the I/O layer has bound its relay socket.

use super::allocation::{Allocation, FiveTuple, PendingAllocate, Transport};
use super::auth::Authenticated;
use super::deadlines::Timer;
use super::error::RequestError;
use super::request::Reply;
use super::shared::QuotaError;
use super::{AllocId, DefaultFamily, Event, MAX_BIND_ATTEMPTS, Server};
use crate::proto::Request;
use crate::proto::codec::{self, Family, ResponseAttr};
use crate::proto::scan::Scan;
use crate::proto::wire::method;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RFC 8656 section 18.8: REQUESTED-TRANSPORT value for UDP.
const PROTOCOL_UDP: u8 = 17;
/// RFC 6062 section 5.1: REQUESTED-TRANSPORT value for TCP.
const PROTOCOL_TCP: u8 = 6;

impl Server {
    pub(super) fn handle_allocate(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        scan: &Scan,
        req: &Request,
        auth: &Authenticated,
    ) -> Result<Reply, RequestError> {
        // RFC 8656 7.2 step 2: an allocation exists and this is not a retransmission of
        // the request that created it (those were answered from the cache).
        if self.table.id_by_tuple(&tuple).is_some() {
            return Err(RequestError::AllocationMismatch);
        }
        // Draining: existing allocations run on, new ones go elsewhere.
        if self.draining {
            return Err(match self.cfg.alternate_server {
                Some(_) => RequestError::TryAlternate,
                None => RequestError::InsufficientCapacity,
            });
        }
        // Step 3: REQUESTED-TRANSPORT is required; UDP is relayed, and TCP (RFC 6062).
        let tcp = match req.requested_transport {
            None => return Err(RequestError::BadRequest),
            Some(PROTOCOL_UDP) => false,
            // RFC 6062 section 5.1: a TCP allocation is asked for over TCP or TLS, and
            // without DONT-FRAGMENT, EVEN-PORT or RESERVATION-TOKEN; otherwise 400.
            Some(PROTOCOL_TCP)
                if tuple.transport == Transport::Udp
                    || req.dont_fragment
                    || req.even_port.is_some()
                    || req.reservation_token.is_some() =>
            {
                return Err(RequestError::BadRequest);
            }
            Some(PROTOCOL_TCP) if self.cfg.tcp_relay => true,
            Some(_) => return Err(RequestError::UnsupportedTransportProtocol),
        };
        // RFC 8656 section 7.2 steps 5-6: RESERVATION-TOKEN excludes EVEN-PORT and
        // REQUESTED-ADDRESS-FAMILY; a token this server did not issue, or issued and saw
        // used or expire, gets 508. Its family is the reserved port's.
        if req.reservation_token.is_some()
            && (req.even_port.is_some() || req.requested_family.is_some())
        {
            return Err(RequestError::BadRequest);
        }
        if req.requested_family.is_some() && req.additional_family {
            return Err(RequestError::BadRequest);
        }
        let claimed = match &req.reservation_token {
            Some(token) => Some(self.claim_reservation(token)?),
            None => None,
        };
        let family = match claimed {
            Some(r) if r.local.is_ipv6() => Family::V6,
            Some(_) => Family::V4,
            None => req
                .requested_family
                .unwrap_or_else(|| self.default_family(&tuple)),
        };
        let relay = match family {
            Family::V4 => self.cfg.relay_v4,
            Family::V6 => self.cfg.relay_v6,
        }
        .ok_or(RequestError::AddressFamilyNotSupported)?;

        // Quotas: 486 for the user, 508 for the server.
        self.shared
            .acquire_allocation(&auth.user, self.cfg.user_quota, self.cfg.total_quota)
            .map_err(|e| match e {
                QuotaError::User => RequestError::AllocationQuotaReached,
                QuotaError::Total => RequestError::InsufficientCapacity,
            })?;
        let even = req.even_port.is_some();
        // Section 14.6: with the R bit, the odd port above is taken too (and reserved once
        // the allocation is bound).
        let reserve = req.even_port == Some(true);
        let v4 = relay.local.is_ipv4();
        let port = match claimed {
            Some(r) => Some(r.local.port()),
            None if reserve => self.take_pair(v4),
            None => self.take_port(v4, even),
        };
        let Some(port) = port else {
            self.shared.release_allocation(&auth.user);
            if self.noisy.allow(now) {
                tracing::warn!("relay port range exhausted");
            }
            return Err(RequestError::InsufficientCapacity);
        };
        let id = self.table.next_id();
        let lifetime = self.granted_lifetime(req.lifetime);
        let (relay_local, relayed) = match claimed {
            Some(r) => (r.local, r.advertised),
            None => (
                SocketAddr::new(relay.local, port),
                SocketAddr::new(relay.advertised, port),
            ),
        };
        self.table.insert(Allocation {
            id,
            five_tuple: tuple,
            username: auth.username.clone(),
            user: auth.user.clone(),
            key: auth.key,
            dont_fragment: req.dont_fragment,
            tcp,
            connections: Vec::new(),
            reservation: None,
            relay_local,
            relayed,
            expires: now,
            pending: Some(PendingAllocate {
                lifetime,
                fingerprint: scan.fingerprint,
                even,
                reserve,
                // A reserved port is that port or none: no other is tried.
                attempts: if claimed.is_some() {
                    MAX_BIND_ATTEMPTS
                } else {
                    1
                },
            }),
            allocate_txn: scan.txn,
            allocate_response: Vec::new(),
            last_response: None,
            permissions: Vec::new(),
            channels: Vec::new(),
            bw_up: Default::default(),
            bw_down: Default::default(),
            new_peers: Default::default(),
            created: now,
            bytes_up: 0,
            bytes_down: 0,
        });
        self.push_event(bind_event(id, relay_local, req.dont_fragment, tcp));
        Ok(Reply::Pending)
    }

    /// The family for an Allocate that names none (`allocation-default-address-family`),
    /// the other one when this server has no relay address of that one.
    fn default_family(&self, tuple: &FiveTuple) -> Family {
        let wanted = match self.cfg.default_family {
            DefaultFamily::V4 => Family::V4,
            DefaultFamily::V6 => Family::V6,
            DefaultFamily::Keep if tuple.client.is_ipv6() => Family::V6,
            DefaultFamily::Keep => Family::V4,
        };
        match (
            wanted,
            self.cfg.relay_v4.is_some(),
            self.cfg.relay_v6.is_some(),
        ) {
            (Family::V4, false, true) => Family::V6,
            (Family::V6, true, false) => Family::V4,
            _ => wanted,
        }
    }

    fn take_pair(&mut self, v4: bool) -> Option<u16> {
        let (pool, rng) = self.pool_and_rng(v4);
        pool.take_pair(rng)
    }

    fn take_port(&mut self, v4: bool, even: bool) -> Option<u16> {
        let (pool, rng) = self.pool_and_rng(v4);
        pool.take(rng, even)
    }

    /// RFC 8656 sections 7.2 and 7.3: min(requested, max), but never below the default.
    pub(super) fn granted_lifetime(&self, requested: Option<u32>) -> u32 {
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let (default, max) = (secs(self.cfg.default_lifetime), secs(self.cfg.max_lifetime));
        match requested {
            Some(r) => r.min(max).max(default.min(max)),
            None => default.min(max),
        }
    }

    /// The I/O layer's answer to [`Event::BindRelay`]: `bound` false means the port was
    /// taken by someone else, so another one is tried, and after a few a 508 is sent.
    pub fn handle_relay_bound(&mut self, now: Instant, relay: AllocId, bound: bool) {
        let Some(a) = self.table.get_mut(relay) else {
            return;
        };
        let Some(mut pending) = a.pending.take() else {
            return;
        };
        let tuple = a.five_tuple;
        if bound {
            let (relay_local, relayed) = (a.relay_local, a.relayed);
            let token = if pending.reserve {
                self.issue_reservation(now, relay_local, relayed)
            } else {
                None
            };
            let Some(a) = self.table.get_mut(relay) else {
                return;
            };
            a.reservation = token;
            let lifetime = pending.lifetime;
            a.expires = now + Duration::from_secs(u64::from(lifetime));
            let mut attrs = vec![
                ResponseAttr::XorRelayedAddress(a.relayed),
                ResponseAttr::Lifetime(lifetime),
                ResponseAttr::XorMappedAddress(tuple.client),
            ];
            attrs.extend(token.map(ResponseAttr::ReservationToken));
            let response = codec::encode(
                method::ALLOCATE,
                true,
                &a.allocate_txn,
                &attrs,
                Some(&a.key),
                pending.fingerprint,
            );
            if let Some(bytes) = &response {
                a.allocate_response = bytes.clone();
            }
            let (expires, relayed, user) = (a.expires, a.relayed, a.user.clone());
            self.deadlines
                .rearm(None, expires, Timer::Allocation(relay));
            self.shared.insert_relay(relayed);
            self.stats.allocations_created += 1;
            tracing::info!(client = %tuple.client, %relayed, %user, lifetime, "allocation created");
            self.send_to_client(tuple, response);
            return;
        }
        let old = a.relay_local;
        let v4 = old.is_ipv4();
        let pool = self.pool(old.ip());
        pool.release(old.port());
        if pending.reserve {
            pool.release(old.port().wrapping_add(1));
        }
        let next = match (pending.attempts < MAX_BIND_ATTEMPTS, pending.reserve) {
            (false, _) => None,
            (true, true) => self.take_pair(v4),
            (true, false) => self.take_port(v4, pending.even),
        };
        let Some(a) = self.table.get_mut(relay) else {
            return;
        };
        match next {
            Some(port) => {
                pending.attempts += 1;
                a.relay_local.set_port(port);
                a.relayed.set_port(port);
                a.pending = Some(pending);
                let event = bind_event(relay, a.relay_local, a.dont_fragment, a.tcp);
                self.push_event(event);
            }
            None => {
                let (txn, key, user) = (a.allocate_txn, a.key, a.user.clone());
                self.table.remove(relay);
                self.shared.release_allocation(&user);
                tracing::warn!(client = %tuple.client, "no relay port could be bound");
                let scan = Scan::for_reply(method::ALLOCATE, txn, pending.fingerprint);
                let r = self.error_response(
                    now,
                    &tuple,
                    &scan,
                    RequestError::InsufficientCapacity,
                    Some(&key),
                );
                self.send_to_client(tuple, r);
            }
        }
    }
}

/// What the I/O layer is asked to bind for a relay: a UDP socket, or a listening TCP
/// socket for a TCP allocation.
fn bind_event(relay: AllocId, local: SocketAddr, dont_fragment: bool, tcp: bool) -> Event {
    if tcp {
        Event::ListenRelay { relay, local }
    } else {
        Event::BindRelay {
            relay,
            local,
            dont_fragment,
        }
    }
}
