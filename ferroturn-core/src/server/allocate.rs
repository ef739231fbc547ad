//! Allocate (RFC 8656 section 7.2, and RFC 6062 section 5.1 for TCP allocations) and the
//! completion of an allocation once the I/O layer has bound its relay socket.

use super::allocation::{Allocation, FiveTuple, PendingAllocate, Relay, Relays, Transport};
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

/// RFC 8656 section 7.2 steps 5, 6, 8 and 9: attributes that cannot go together, and
/// ADDITIONAL-ADDRESS-FAMILY naming IPv4, are a 400.
fn attributes_agree(req: &Request) -> Result<(), RequestError> {
    let dual = req.additional_family.is_some();
    // Step 5: RESERVATION-TOKEN excludes EVEN-PORT and both family attributes (a token
    // this server did not issue, or saw used or expire, gets 508 when claimed).
    let token_alone = req.reservation_token.is_none()
        || (req.even_port.is_none() && req.requested_family.is_none() && !dual);
    // Step 6: REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY together.
    let one_family_attribute = !(req.requested_family.is_some() && dual);
    // Step 8: EVEN-PORT with the R bit cannot reserve for a dual allocation.
    let no_reserving_dual = !(req.even_port == Some(true) && dual);
    // Step 9: ADDITIONAL-ADDRESS-FAMILY may only name IPv6 (section 18.11).
    let additional_is_ipv6 = req.additional_family != Some(Family::V4);
    if token_alone && one_family_attribute && no_reserving_dual && additional_is_ipv6 {
        Ok(())
    } else {
        Err(RequestError::BadRequest)
    }
}

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
        let tcp = self.requested_tcp(&tuple, req)?;
        attributes_agree(req)?;
        let mobile = self.mobility_requested(req, tcp)?;
        let claimed = match &req.reservation_token {
            Some(token) => Some(self.claim_reservation(token)?),
            None => None,
        };
        let dual = req.additional_family == Some(Family::V6);
        let family = match claimed {
            Some(r) if r.local.is_ipv6() => Family::V6,
            Some(_) => Family::V4,
            None => req
                .requested_family
                .unwrap_or_else(|| self.default_family(&tuple)),
        };
        // Step 7: no relay address of the family asked for (a dual allocation needs
        // one of the two).
        let supported = match (dual, claimed) {
            (true, _) => self.has_relay(Family::V4) || self.has_relay(Family::V6),
            (false, Some(_)) => true,
            (false, None) => self.has_relay(family),
        };
        if !supported {
            return Err(RequestError::AddressFamilyNotSupported);
        }

        // Quotas: 486 for the user, 508 for the server. A dual allocation is one
        // allocation (one 5-tuple, one lifetime) and counts once; its second port
        // counts against the port range.
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
        let taken = match claimed {
            Some(r) => Ok((
                Relays::one(Relay {
                    local: r.local,
                    relayed: r.advertised,
                }),
                None,
            )),
            None if dual => self.take_dual(even),
            None => self
                .take_relay(family, even, reserve)
                .map(|r| (Relays::one(r), None)),
        };
        let (relays, address_error) = match taken {
            Ok(t) => t,
            Err(e) => {
                self.shared.release_allocation(&auth.user);
                if e == RequestError::InsufficientCapacity && self.noisy.allow(now) {
                    tracing::warn!("relay port range exhausted");
                }
                return Err(e);
            }
        };
        let id = self.table.next_id();
        let lifetime = self.granted_lifetime(req.lifetime);
        self.table.insert(Allocation {
            id,
            lease: None,
            five_tuple: tuple,
            username: auth.username.clone(),
            user: auth.user.clone(),
            key: auth.key,
            dont_fragment: req.dont_fragment,
            tcp,
            connections: Vec::new(),
            reservation: None,
            relays,
            mobile,
            epoch: 0,
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
                binding_second: false,
                address_error,
                waiting_lease: false,
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
            traffic: Default::default(),
        });
        self.lease_or_bind(id);
        Ok(Reply::Pending)
    }

    /// Step 3: REQUESTED-TRANSPORT is required; UDP is relayed, and TCP (RFC 6062).
    /// Whether the allocation asked for is a TCP one.
    fn requested_tcp(&self, tuple: &FiveTuple, req: &Request) -> Result<bool, RequestError> {
        match req.requested_transport {
            None => Err(RequestError::BadRequest),
            Some(PROTOCOL_UDP) => Ok(false),
            // RFC 6062 section 5.1: a TCP allocation is asked for over TCP or TLS (not UDP
            // or DTLS), and
            // without DONT-FRAGMENT, EVEN-PORT or RESERVATION-TOKEN; otherwise 400. A TCP
            // allocation has one relayed address: ADDITIONAL-ADDRESS-FAMILY (RFC 8656
            // section 7.2, which RFC 6062 predates) is refused the same way (a choice,
            // see ARCHITECTURE.md).
            Some(PROTOCOL_TCP)
                if tuple.transport != Transport::Tcp
                    || req.dont_fragment
                    || req.even_port.is_some()
                    || req.reservation_token.is_some()
                    || req.additional_family.is_some() =>
            {
                Err(RequestError::BadRequest)
            }
            Some(PROTOCOL_TCP) if self.cfg.tcp_relay => Ok(true),
            Some(_) => Err(RequestError::UnsupportedTransportProtocol),
        }
    }

    fn has_relay(&self, family: Family) -> bool {
        match family {
            Family::V4 => self.cfg.relay_v4.is_some(),
            Family::V6 => self.cfg.relay_v6.is_some(),
        }
    }

    /// A relay of `family` with a port from its pool: 440 without a relay address of
    /// that family, 508 without a free port.
    fn take_relay(
        &mut self,
        family: Family,
        even: bool,
        reserve: bool,
    ) -> Result<Relay, RequestError> {
        let relay = match family {
            Family::V4 => self.cfg.relay_v4,
            Family::V6 => self.cfg.relay_v6,
        }
        .ok_or(RequestError::AddressFamilyNotSupported)?;
        let v4 = family == Family::V4;
        let port = if reserve {
            self.take_pair(v4)
        } else {
            self.take_port(v4, even)
        }
        .ok_or(RequestError::InsufficientCapacity)?;
        Ok(Relay {
            local: SocketAddr::new(relay.local, port),
            relayed: SocketAddr::new(relay.advertised, port),
        })
    }

    /// RFC 8656 section 7.2 (ADDITIONAL-ADDRESS-FAMILY): one IPv4 and one IPv6 relay
    /// under one allocation. A family this server cannot give (no relay address: 440,
    /// no port: 508) is left out and named in ADDRESS-ERROR-CODE (section 18.12); the
    /// Allocate fails only when neither can be given (508 if a family ran out of
    /// ports, else 440).
    fn take_dual(&mut self, even: bool) -> Result<(Relays, Option<(Family, u16)>), RequestError> {
        let v4 = self.take_relay(Family::V4, even, false);
        let v6 = self.take_relay(Family::V6, even, false);
        match (v4, v6) {
            (Ok(first), Ok(second)) => Ok((
                Relays {
                    first,
                    second: Some(second),
                },
                None,
            )),
            (Ok(relay), Err(e)) => Ok((Relays::one(relay), Some((Family::V6, e.code())))),
            (Err(e), Ok(relay)) => Ok((Relays::one(relay), Some((Family::V4, e.code())))),
            (Err(a), Err(b)) => Err(if a == RequestError::InsufficientCapacity {
                a
            } else {
                b
            }),
        }
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
    /// taken by someone else, so another one is tried, and after a few a 508 is sent
    /// (for one family of a dual allocation: that family is left out, named in
    /// ADDRESS-ERROR-CODE). A dual allocation's second relay is asked for once the
    /// first is bound; the success goes out when the last one is.
    pub fn handle_relay_bound(&mut self, now: Instant, relay: AllocId, bound: bool) {
        let Some(a) = self.table.get_mut(relay) else {
            return;
        };
        let Some(mut pending) = a.pending.take() else {
            return;
        };
        if !bound {
            return self.retry_bind(now, relay, pending);
        }
        match a.relays.second {
            Some(second) if !pending.binding_second => {
                pending.binding_second = true;
                pending.attempts = 1;
                self.request_bind(relay, pending, second.local);
            }
            _ => self.complete_allocation(now, relay, pending),
        }
    }

    /// Asks the I/O layer to bind `local` for `relay`, which waits in `pending`.
    fn request_bind(&mut self, relay: AllocId, pending: PendingAllocate, local: SocketAddr) {
        let Some(a) = self.table.get_mut(relay) else {
            return;
        };
        a.pending = Some(pending);
        self.push_bind(relay, local);
    }

    /// Asks the I/O layer for `relay`'s socket at `local`: a UDP socket, or for a TCP
    /// allocation its listening TCP socket (RFC 6062 section 5.1).
    pub(super) fn push_bind(&mut self, relay: AllocId, local: SocketAddr) {
        let Some(a) = self.table.get(relay) else {
            return;
        };
        let event = if a.tcp {
            Event::ListenRelay { relay, local }
        } else {
            Event::BindRelay {
                relay,
                local,
                dont_fragment: a.dont_fragment,
            }
        };
        self.push_event(event);
    }

    /// The relay being bound for `relay` could not be: another port of its family, a
    /// bounded number of times; then the family is given up.
    fn retry_bind(&mut self, now: Instant, relay: AllocId, mut pending: PendingAllocate) {
        let Some(a) = self.table.get(relay) else {
            return;
        };
        let failed = match (pending.binding_second, a.relays.second) {
            (true, Some(second)) => second,
            _ => a.relays.first,
        };
        let v4 = failed.local.is_ipv4();
        let pool = self.pool(failed.local.ip());
        pool.release(failed.local.port());
        if pending.reserve {
            pool.release(failed.local.port().wrapping_add(1));
        }
        let next = match (pending.attempts < MAX_BIND_ATTEMPTS, pending.reserve) {
            (false, _) => None,
            (true, true) => self.take_pair(v4),
            (true, false) => self.take_port(v4, pending.even),
        };
        let Some(a) = self.table.get_mut(relay) else {
            return;
        };
        if let Some(port) = next {
            pending.attempts += 1;
            let r = match (pending.binding_second, a.relays.second.as_mut()) {
                (true, Some(second)) => second,
                _ => &mut a.relays.first,
            };
            r.local.set_port(port);
            r.relayed.set_port(port);
            let local = r.local;
            return self.request_bind(relay, pending, local);
        }
        // No port of this family could be bound. A dual allocation goes on with the
        // other family (RFC 8656 section 18.12: ADDRESS-ERROR-CODE, 508).
        let family = failed.family();
        match a.relays.second.take() {
            Some(_) if pending.binding_second => {
                pending.address_error = Some((family, 508));
                self.complete_allocation(now, relay, pending);
            }
            Some(second) => {
                a.relays.first = second;
                pending.address_error = Some((family, 508));
                pending.attempts = 1;
                self.request_bind(relay, pending, second.local);
            }
            None => self.fail_allocation(now, relay, pending, RequestError::InsufficientCapacity),
        }
    }

    /// Every relay socket is bound: the allocation starts, and the success response
    /// (RFC 8656 section 7.2) goes out.
    fn complete_allocation(&mut self, now: Instant, relay: AllocId, pending: PendingAllocate) {
        let Some(a) = self.table.get(relay) else {
            return;
        };
        let (tuple, first) = (a.five_tuple, a.relays.first);
        let token = if pending.reserve {
            self.issue_reservation(now, first.local, first.relayed)
        } else {
            None
        };
        let lifetime = pending.lifetime;
        // RFC 8016 section 3.1: a mobile allocation's success carries its ticket.
        let ticket = self.fresh_ticket(relay, now + Duration::from_secs(u64::from(lifetime)));
        let Some(a) = self.table.get_mut(relay) else {
            return;
        };
        a.reservation = token;
        // It starts now, as its lifetime does: a usage record's duration is the time
        // granted, not the time the request waited for its relay socket as well.
        a.created = now;
        a.expires = now + Duration::from_secs(u64::from(lifetime));
        // A dual allocation's success carries both relayed addresses, IPv4 first.
        let mut attrs: Vec<ResponseAttr<'_>> = a
            .relays
            .iter()
            .map(|r| ResponseAttr::XorRelayedAddress(r.relayed))
            .collect();
        attrs.push(ResponseAttr::Lifetime(lifetime));
        attrs.push(ResponseAttr::XorMappedAddress(tuple.client));
        attrs.extend(token.map(ResponseAttr::ReservationToken));
        attrs.extend(ticket.map(ResponseAttr::MobilityTicket));
        attrs.extend(
            pending
                .address_error
                .map(|(family, code)| ResponseAttr::AddressErrorCode(family, code)),
        );
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
        let (expires, relays, user) = (a.expires, a.relays, a.user.clone());
        self.deadlines
            .rearm(None, expires, Timer::Allocation(relay));
        for r in relays.iter() {
            self.shared.insert_relay(r.relayed);
        }
        self.stats.allocations_created += 1;
        let (relayed, additional) = (relays.first.relayed, relays.second.map(|r| r.relayed));
        tracing::info!(client = %tuple.client, %relayed, additional = ?additional, %user, lifetime, "allocation created");
        self.send_to_client(tuple, response);
    }

    /// The pending Allocate cannot be served: the allocation is dropped, its lease given
    /// back (its ports are the caller's to give back), and the client gets `error` (508 when no relay socket could be
    /// bound, 486 when the fleet refused the lease).
    pub(super) fn fail_allocation(
        &mut self,
        now: Instant,
        relay: AllocId,
        pending: PendingAllocate,
        error: RequestError,
    ) {
        let Some(a) = self.table.remove(relay) else {
            return;
        };
        let tuple = a.five_tuple;
        self.shared.release_allocation(&a.user);
        self.release_lease(&a);
        if error == RequestError::InsufficientCapacity {
            tracing::warn!(client = %tuple.client, "no relay port could be bound");
        }
        let scan = Scan::for_reply(method::ALLOCATE, a.allocate_txn, pending.fingerprint);
        let r = self.error_response(now, &tuple, &scan, error, Some(&a.key));
        self.send_to_client(tuple, r);
    }
}
