//! Keeps allocations, permissions and channels alive through long runs (permissions
//! last 300 s, RFC 8656 section 9): every [`REFRESH_EVERY`] each flow sends a Refresh and
//! a ChannelBind (or CreatePermission) from its own socket, inside the generator loop,
//! answering 401/438 challenges itself. A handful of requests per flow per round, so it
//! does not disturb the measurement.

use ferroturn::client::codec::{self, RequestAttr};
use ferroturn_core::proto::integrity::long_term_key;
use ferroturn_core::proto::wire::method;
use std::net::SocketAddr;

pub const REFRESH_EVERY_NS: u64 = 120_000_000_000;
/// The allocation lifetime asked for at setup and on refresh (servers may grant less).
pub const LIFETIME_S: u32 = 3600;
const RTO_NS: u64 = 500_000_000;
const MAX_TRIES: u32 = 5;

/// What a flow's peer is reached through.
#[derive(Clone, Copy, Debug)]
pub enum Binding {
    Channel { peer: SocketAddr },
    Permission { peer: SocketAddr },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum What {
    Allocation,
    Peer,
}

struct Pending {
    txn: [u8; 12],
    what: What,
    tries: u32,
    sent_at: u64,
    msg: Vec<u8>,
}

#[derive(Default)]
struct FlowAuth {
    realm: Option<String>,
    nonce: Option<String>,
    pending: Vec<Pending>,
}

pub struct Refresher {
    username: String,
    password: String,
    binding: Binding,
    channels: Vec<u16>,
    flows: Vec<FlowAuth>,
    next_round: u64,
    /// Requests that succeeded, and those that ended in an error or went unanswered.
    pub successes: u64,
    pub failures: u64,
}

impl Refresher {
    /// `channels[i]` is flow i's channel; the first round is due at `start` plus
    /// [`REFRESH_EVERY_NS`].
    pub fn new(
        username: &str,
        password: &str,
        binding: Binding,
        channels: Vec<u16>,
        start: u64,
    ) -> Self {
        Self {
            username: username.to_owned(),
            password: password.to_owned(),
            binding,
            flows: channels.iter().map(|_| FlowAuth::default()).collect(),
            channels,
            next_round: start + REFRESH_EVERY_NS,
            successes: 0,
            failures: 0,
        }
    }

    /// Starts a round when one is due and retransmits unanswered requests;
    /// `send(flow, bytes)` puts a request on flow's socket.
    pub fn tick(&mut self, now: u64, send: &mut impl FnMut(usize, &[u8])) {
        let round = now >= self.next_round;
        if round {
            self.next_round += REFRESH_EVERY_NS;
        }
        for i in 0..self.flows.len() {
            if round {
                self.flows[i].pending.clear();
                for what in [What::Allocation, What::Peer] {
                    self.start(i, what, 0, now, send);
                }
            }
            let flow = &mut self.flows[i];
            let before = flow.pending.len();
            flow.pending
                .retain(|p| p.tries < MAX_TRIES || now - p.sent_at < RTO_NS);
            self.failures += (before - flow.pending.len()) as u64;
            for p in &mut flow.pending {
                if now - p.sent_at >= RTO_NS {
                    p.tries += 1;
                    p.sent_at = now;
                    send(i, &p.msg);
                }
            }
        }
    }

    /// A STUN response that arrived on flow `i`'s socket.
    pub fn on_response(
        &mut self,
        i: usize,
        bytes: &[u8],
        now: u64,
        send: &mut impl FnMut(usize, &[u8]),
    ) {
        let Some(flow) = self.flows.get_mut(i) else {
            return;
        };
        let Some(at) = flow
            .pending
            .iter()
            .position(|p| bytes.get(8..20) == Some(&p.txn[..]))
        else {
            return;
        };
        let p = flow.pending.swap_remove(at);
        let Some(r) = codec::decode_response(bytes) else {
            self.failures += 1;
            return;
        };
        match r.error_code {
            None => self.successes += 1,
            // RFC 8489 section 9.2.5: answer the challenge (or the stale nonce) once.
            Some(401 | 438) if r.nonce.is_some() && p.tries < MAX_TRIES => {
                flow.realm = r.realm.or(flow.realm.take());
                flow.nonce = r.nonce;
                self.start(i, p.what, p.tries + 1, now, send);
            }
            Some(_) => self.failures += 1,
        }
    }

    fn start(
        &mut self,
        i: usize,
        what: What,
        tries: u32,
        now: u64,
        send: &mut impl FnMut(usize, &[u8]),
    ) {
        let txn: [u8; 12] = rand::random();
        let Some(msg) = self.build(i, what, &txn) else {
            self.failures += 1;
            return;
        };
        send(i, &msg);
        self.flows[i].pending.push(Pending {
            txn,
            what,
            tries,
            sent_at: now,
            msg,
        });
    }

    fn build(&self, i: usize, what: What, txn: &[u8; 12]) -> Option<Vec<u8>> {
        let (m, specific) = match (what, self.binding) {
            (What::Allocation, _) => (method::REFRESH, vec![RequestAttr::Lifetime(LIFETIME_S)]),
            (What::Peer, Binding::Channel { peer }) => (
                method::CHANNEL_BIND,
                vec![
                    RequestAttr::ChannelNumber(self.channels[i]),
                    RequestAttr::XorPeerAddress(peer),
                ],
            ),
            (What::Peer, Binding::Permission { peer }) => (
                method::CREATE_PERMISSION,
                vec![RequestAttr::XorPeerAddress(peer)],
            ),
        };
        let flow = &self.flows[i];
        match (&flow.realm, &flow.nonce) {
            (Some(realm), Some(nonce)) => {
                let mut attrs = vec![
                    RequestAttr::Username(&self.username),
                    RequestAttr::Realm(realm),
                    RequestAttr::Nonce(nonce),
                ];
                attrs.extend(specific);
                let key = long_term_key(&self.username, realm, self.password.as_bytes());
                codec::encode_request(m, false, txn, &attrs, Some(&key))
            }
            _ => codec::encode_request(m, false, txn, &specific, None),
        }
    }
}
