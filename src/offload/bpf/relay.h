/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * Map layouts shared by relay.bpf.c and src/offload/maps.rs (which mirrors them with
 * #[repr(C)] and checks the sizes). Addresses and ports are in network byte order;
 * an IPv4 address sits in ip[0], the other words zero. Every padding byte is explicit
 * and zero, because hash keys are compared byte by byte.
 */
#ifndef FERROTURN_RELAY_H
#define FERROTURN_RELAY_H

#include <linux/types.h>

/* Address family tags in keys (not AF_*: the same on every platform). */
#define FAMILY_V4 4
#define FAMILY_V6 6

/* chan_up.flags / chan_down.flags: the new destination is one of this host's own
 * addresses (loopback included); the datagram continues up the stack on lo. */
#define DELIVER_LOCAL 1

/* Largest ChannelData payload moved in the kernel (the per-CPU scratch buffer). */
#define MAX_PAYLOAD 2048

/* client -> peer: ChannelData from a client to a listening address. */
struct chan_key {
	__u8 family;
	__u8 pad;
	__be16 channel;
	__be16 client_port;
	__be16 server_port;
	__u32 client_ip[4];
	__u32 server_ip[4];
}; /* 40 bytes */

struct chan_up {
	__u32 relay_ip[4];
	__u32 peer_ip[4];
	__be16 relay_port;
	__be16 peer_port;
	__u32 flags;
	__u64 packets; /* relayed datagrams */
	__u64 bytes;   /* relayed payload bytes (ChannelData header not counted) */
}; /* 56 bytes */

/* peer -> client: a datagram from a peer to a relayed transport address. */
struct peer_key {
	__u8 family;
	__u8 pad[3];
	__be16 peer_port;
	__be16 relay_port;
	__u32 peer_ip[4];
	__u32 relay_ip[4];
}; /* 40 bytes */

struct chan_down {
	__u32 client_ip[4];
	__u32 server_ip[4];
	__be16 client_port;
	__be16 server_port;
	__be16 channel;
	__u16 flags;
	__u64 packets;
	__u64 bytes;
}; /* 56 bytes */

/* The allocation's rate state is keyed by its relayed transport address, which the
 * client -> peer value carries (relay_ip, relay_port) and the peer -> client key holds. */
struct rate_key {
	__u8 family;
	__u8 pad;
	__be16 port;
	__u32 ip[4];
}; /* 20 bytes */

/* A token bucket in nano-bytes; last == 0: never used, full. */
struct bucket {
	__u64 nanotokens;
	__u64 last_ns;
};

/* One per allocation (alloc_rate) and one for the server (capacity): bytes per second
 * in each direction, 0 unlimited; one bucket per direction, one second of burst. */
struct rate_state {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 bytes_per_sec;
	struct bucket up;   /* client -> peer */
	struct bucket down; /* peer -> client */
}; /* 48 bytes */

/* Indexes of the per-CPU `stats` array. */
enum stat {
	ST_UP_PACKETS,
	ST_UP_BYTES,
	ST_DOWN_PACKETS,
	ST_DOWN_BYTES,
	ST_UP_DROP_RATE,       /* over the allocation's max-bps */
	ST_UP_DROP_CAPACITY,   /* over bps-capacity */
	ST_DOWN_DROP_RATE,
	ST_DOWN_DROP_CAPACITY,
	ST_DROP_ERROR,         /* a helper failed half way through a rewrite */
	ST_PASS_MALFORMED,     /* known channel, ChannelData length != UDP payload */
	ST_PASS_TOO_BIG,       /* payload over MAX_PAYLOAD or a length over 65535 */
	ST_PASS_NOT_LOOPBACK,  /* local destination, datagram arrived on another interface */
	ST_PASS_NO_ROUTE,      /* bpf_fib_lookup: no unicast route */
	ST_PASS_FRAG_NEEDED,   /* bpf_fib_lookup: over the route's MTU */
	ST_PASS_FWD_DISABLED,  /* bpf_fib_lookup: forwarding off on lo */
	ST_COUNT,
};

#endif
