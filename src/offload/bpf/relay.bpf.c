// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * ferroturn's kernel fast path for channel traffic: one TC ingress classifier for both
 * directions, IPv4 and IPv6 (RFC 8656 section 12: ChannelData over UDP).
 *
 *   client -> server  ChannelData(channel, payload)   becomes  relay -> peer  payload
 *   peer   -> relay   payload                          becomes  server -> client
 *                                                               ChannelData (no padding)
 *
 * Only exact matches are touched: UDP over IPv4 without options or fragments, or over
 * IPv6 with UDP as the first next header, the IP length equal to the frame, a ChannelData
 * length equal to the UDP payload, an entry user space installed. Everything else goes on
 * untouched (TC_ACT_UNSPEC: the next classifier, then the stack and user space).
 *
 * Layout: the L3 and UDP headers stay where they are and the payload moves by the 4
 * bytes of the ChannelData header (bpf_skb_change_tail and one copy through a per-CPU
 * buffer). Moving the headers instead (bpf_skb_adjust_room) would leave a
 * CHECKSUM_PARTIAL skb's csum_start pointing 4 bytes off the new UDP header, and the
 * device or skb_checksum_help would then write the checksum into the port field.
 *
 * Checksums: the UDP checksum is updated incrementally with bpf_l4_csum_replace, pseudo
 * header and UDP header separately, so a CHECKSUM_PARTIAL skb keeps a correct
 * pseudo-header seed and every other skb a correct full checksum that still covers the
 * sender's payload end to end. An IPv4 datagram that came without a checksum (0) leaves
 * without one (BPF_F_MARK_MANGLED_0); an IPv6 one is never touched (the stack drops it).
 * The IPv4 header checksum is computed afresh. bpf_skb_change_tail turns
 * CHECKSUM_COMPLETE into CHECKSUM_NONE, so no stale skb->csum survives.
 *
 * Delivery is decided before anything is modified: a destination user space marked as
 * local (DELIVER_LOCAL) continues up the stack, which works for datagrams that arrived
 * on lo (their route is already local input); any other destination is looked up with
 * bpf_fib_lookup as a packet sent by this host (input interface lo, like an output route
 * lookup) and redirected out of the route's interface, to the neighbour's address or
 * through bpf_redirect_neigh while it is unresolved. A lookup that fails leaves the
 * datagram to user space. Rate limits are taken last, so a datagram left to user space is
 * never charged twice.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "relay.h"

#define AF_INET 2
#define AF_INET6 10
#define LOOPBACK_IFINDEX 1
#define FRESH_TTL 64
#define NANOS 1000000000ULL
#define CD_HLEN 4
#define UDP_HLEN 8
#define IP4_HLEN 20
#define IP6_HLEN 40
/* Not ours: the next classifier on the interface runs (TCX_NEXT, or the next cls_bpf
 * filter), then the stack. TC_ACT_OK would end the chain for programs after us. */
#define NEXT TC_ACT_UNSPEC

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct chan_key);
	__type(value, struct chan_up);
} chan_up SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, struct chan_down);
} chan_down SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct rate_key);
	__type(value, struct rate_state);
} alloc_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rate_state);
} capacity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct scratch_buf {
	__u8 bytes[MAX_PAYLOAD];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch_buf);
} scratch SEC(".maps");

/* What the parser keeps of a datagram: enough to rewrite it with helpers only. */
struct pkt {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u16 ulen;    /* UDP length, host order */
	__u16 udp_off; /* from the Ethernet header */
	__u8 family;
	__u8 is_cd;    /* the payload starts like ChannelData */
	__be16 cd_channel;
	__u16 cd_len;  /* host order */
	__be32 ip6_first; /* IPv6 version, traffic class and flow label */
	__be16 ip4_id;
	__be16 ip4_frag; /* DF at most: fragments never get this far */
	__u8 ip4_tos;    /* DSCP and ECN */
	__u8 pad[3];
};

struct route {
	__u32 ifindex;
	__u8 kind; /* ROUTE_* */
	__u8 nh_family;
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
	__u32 nh[4];
};

enum { ROUTE_LOCAL, ROUTE_DIRECT, ROUTE_NEIGH };

static __always_inline void count(__u32 index, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &index);

	if (c)
		*c += n;
}

static __always_inline int pass(__u32 reason)
{
	count(reason, 1);
	return NEXT;
}

/* Parses an Ethernet frame carrying UDP; -1 for anything the fast path leaves alone. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;
	__u32 len = skb->len;

	if (skb->gso_size || skb->vlan_present)
		return -1;
	if ((void *)(eth + 1) > end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)ip + IP4_HLEN + UDP_HLEN > end)
			return -1;
		/* No options, no fragments (MF or an offset), UDP, and the IP length equal to
		 * the frame (no link-layer padding to carry along). */
		if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
			return -1;
		if (ip->frag_off & bpf_htons(0x3fff))
			return -1;
		if (bpf_ntohs(ip->tot_len) != len - ETH_HLEN)
			return -1;
		p->family = FAMILY_V4;
		p->saddr[0] = ip->saddr;
		p->daddr[0] = ip->daddr;
		p->ip4_tos = ip->tos;
		p->ip4_id = ip->id;
		p->ip4_frag = ip->frag_off;
		p->udp_off = ETH_HLEN + IP4_HLEN;
		udp = (void *)(ip + 1);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)ip6 + IP6_HLEN + UDP_HLEN > end)
			return -1;
		/* UDP as the first next header: extension headers (fragments included) stay
		 * in user space. A jumbogram's payload length (0) fails the length test. */
		if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
			return -1;
		if (bpf_ntohs(ip6->payload_len) != len - ETH_HLEN - IP6_HLEN)
			return -1;
		p->family = FAMILY_V6;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		p->ip6_first = *(__be32 *)ip6;
		p->udp_off = ETH_HLEN + IP6_HLEN;
		udp = (void *)(ip6 + 1);
	} else {
		return -1;
	}
	if ((void *)(udp + 1) > end)
		return -1;
	p->sport = udp->source;
	p->dport = udp->dest;
	p->ulen = bpf_ntohs(udp->len);
	if (p->ulen < UDP_HLEN || p->ulen != len - p->udp_off)
		return -1;
	/* RFC 8200 section 8.1: a zero UDP checksum is invalid over IPv6. */
	if (p->family == FAMILY_V6 && udp->check == 0)
		return -1;
	if (p->ulen >= UDP_HLEN + CD_HLEN) {
		__u8 *cd = (void *)(udp + 1);

		if ((void *)(cd + CD_HLEN) <= end && (cd[0] & 0xc0) == 0x40) {
			/* RFC 8656 section 12.4: the first two bits are 0b01. */
			p->is_cd = 1;
			p->cd_channel = *(__be16 *)cd;
			p->cd_len = ((__u16)cd[2] << 8) | cd[3];
		}
	}
	return 0;
}

/* Chooses how the rewritten datagram reaches `dst`; -1 (counted) leaves it to user
 * space. Nothing has been modified yet. */
static __always_inline int route(struct __sk_buff *skb, const struct pkt *p,
				 const __u32 *src, const __u32 *dst, __be16 sport,
				 __be16 dport, __u16 ulen, __u32 flags, struct route *r)
{
	struct bpf_fib_lookup f;
	long rc;

	if (flags & DELIVER_LOCAL) {
		if (skb->ifindex != LOOPBACK_IFINDEX)
			return pass(ST_PASS_NOT_LOOPBACK), -1;
		r->kind = ROUTE_LOCAL;
		return 0;
	}
	__builtin_memset(&f, 0, sizeof(f));
	f.l4_protocol = IPPROTO_UDP;
	f.sport = sport;
	f.dport = dport;
	/* As if this host sent it: input interface lo is what an output route lookup
	 * uses, so `ip rule ... iif lo` rules apply as they would to user space's sends. */
	f.ifindex = LOOPBACK_IFINDEX;
	if (p->family == FAMILY_V4) {
		f.family = AF_INET;
		f.tos = p->ip4_tos;
		f.tot_len = ulen + IP4_HLEN;
		f.ipv4_src = src[0];
		f.ipv4_dst = dst[0];
	} else {
		f.family = AF_INET6;
		f.tot_len = ulen + IP6_HLEN;
		__builtin_memcpy(f.ipv6_src, src, 16);
		__builtin_memcpy(f.ipv6_dst, dst, 16);
	}
	rc = bpf_fib_lookup(skb, &f, sizeof(f), 0);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		r->kind = ROUTE_DIRECT;
		__builtin_memcpy(r->smac, f.smac, ETH_ALEN);
		__builtin_memcpy(r->dmac, f.dmac, ETH_ALEN);
		break;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		/* The lookup left the next hop in ipv4_dst / ipv6_dst. */
		r->kind = ROUTE_NEIGH;
		if (f.family == AF_INET) {
			r->nh_family = AF_INET;
			r->nh[0] = f.ipv4_dst;
		} else {
			r->nh_family = AF_INET6;
			__builtin_memcpy(r->nh, f.ipv6_dst, 16);
		}
		break;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		return pass(ST_PASS_FRAG_NEEDED), -1;
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		return pass(ST_PASS_FWD_DISABLED), -1;
	default:
		/* Blackhole, unreachable, prohibit, a local or broadcast destination user
		 * space did not mark as local, encapsulation, errors. */
		return pass(ST_PASS_NO_ROUTE), -1;
	}
	r->ifindex = f.ifindex;
	return 0;
}

/* Takes `bytes` from the direction's bucket; 1 if it held them. */
static __always_inline int take(struct rate_state *s, int down, __u64 bytes, __u64 now)
{
	struct bucket *b = down ? &s->down : &s->up;
	__u64 rate, cap, level, elapsed, want;
	int ok = 1;

	bpf_spin_lock(&s->lock);
	rate = s->bytes_per_sec;
	if (rate) {
		/* One second of burst, as user space's buckets (rate.rs): elapsed time past
		 * a second adds nothing, and user space caps the rate so nothing overflows. */
		cap = rate * NANOS;
		if (b->last_ns == 0) {
			level = cap;
		} else {
			elapsed = now > b->last_ns ? now - b->last_ns : 0;
			if (elapsed > NANOS)
				elapsed = NANOS;
			level = b->nanotokens + elapsed * rate;
			if (level > cap)
				level = cap;
		}
		b->last_ns = now;
		want = bytes * NANOS;
		if (level >= want) {
			b->nanotokens = level - want;
		} else {
			b->nanotokens = level;
			ok = 0;
		}
	}
	bpf_spin_unlock(&s->lock);
	return ok;
}

/* The allocation's max-bps, then the server's bps-capacity, as user space takes them
 * (relay.rs within_bandwidth). Returns TC_ACT_SHOT (counted) or -1 to go on. */
static __always_inline int within_bandwidth(const struct rate_key *rk, int down, __u64 bytes)
{
	__u64 now = bpf_ktime_get_ns();
	struct rate_state *s = bpf_map_lookup_elem(&alloc_rate, rk);
	__u32 zero = 0;

	if (s && !take(s, down, bytes, now)) {
		count(down ? ST_DOWN_DROP_RATE : ST_UP_DROP_RATE, 1);
		return TC_ACT_SHOT;
	}
	s = bpf_map_lookup_elem(&capacity, &zero);
	if (s && !take(s, down, bytes, now)) {
		count(down ? ST_DOWN_DROP_CAPACITY : ST_UP_DROP_CAPACITY, 1);
		return TC_ACT_SHOT;
	}
	return -1;
}

/* Moves `n` payload bytes from offset `from` to offset `to` (the tail already holds
 * them). 0 on success. */
static __always_inline int move_payload(struct __sk_buff *skb, __u32 from, __u32 to, __u32 n)
{
	__u32 zero = 0;
	struct scratch_buf *buf;
	__u64 len = n;

	if (n == 0)
		return 0;
	/* The callers checked n already; the barrier keeps a check on the very register
	 * the helpers get, where the verifier needs the bound. */
	asm volatile("" : "+r"(len));
	if (len > MAX_PAYLOAD || len == 0)
		return -1;
	buf = bpf_map_lookup_elem(&scratch, &zero);
	if (!buf)
		return -1;
	if (bpf_skb_load_bytes(skb, from, buf->bytes, len))
		return -1;
	return bpf_skb_store_bytes(skb, to, buf->bytes, len, 0) ? -1 : 0;
}

static __always_inline __u16 fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/*
 * Writes the new L3 and UDP headers of a datagram whose payload is already in place:
 * src:sport -> dst:dport, UDP length `ulen`, the checksum updated from the old headers.
 * `cd_out` is the ChannelData word that left the UDP payload (client -> peer) and
 * `cd_in` the one that entered it (peer -> client), as 32-bit words (0: none).
 */
static __always_inline int write_headers(struct __sk_buff *skb, const struct pkt *p,
					 const __u32 *src, const __u32 *dst, __be16 sport,
					 __be16 dport, __u16 ulen, __be32 cd_out, __be32 cd_in)
{
	__u32 check_off = p->udp_off + offsetof(struct udphdr, check);
	__u64 mm0 = p->family == FAMILY_V4 ? BPF_F_MARK_MANGLED_0 : 0;
	__be32 old_ph[9], new_ph[9], old_uh[3], new_uh[3];
	__be16 ports_len[3] = { sport, dport, bpf_htons(ulen) };
	__s64 diff;

	/* Pseudo header (RFC 768, RFC 8200 section 8.1): addresses and UDP length; the
	 * protocol is the same on both sides. An IPv4 address is one word followed by three
	 * zero words (in the parsed packet and in the maps alike), and zero words add nothing
	 * to the sum, so one layout serves both families. Constant offsets only: without
	 * CAP_PERFMON the verifier refuses a variable offset into the stack. */
	__builtin_memcpy(&old_ph[0], p->saddr, 16);
	__builtin_memcpy(&old_ph[4], p->daddr, 16);
	__builtin_memcpy(&new_ph[0], src, 16);
	__builtin_memcpy(&new_ph[4], dst, 16);
	old_ph[8] = bpf_htonl(p->ulen);
	new_ph[8] = bpf_htonl(ulen);
	/* UDP header without its checksum field, plus the ChannelData word that left or
	 * entered the UDP payload; the payload itself moved by 4 bytes, an even offset, so
	 * its 16-bit sum is unchanged. */
	old_uh[0] = ((__u32)bpf_ntohs(p->sport) << 16 | bpf_ntohs(p->dport));
	old_uh[0] = bpf_htonl(old_uh[0]);
	old_uh[1] = bpf_htonl((__u32)p->ulen << 16);
	old_uh[2] = cd_out;
	new_uh[0] = bpf_htonl((__u32)bpf_ntohs(sport) << 16 | bpf_ntohs(dport));
	new_uh[1] = bpf_htonl((__u32)ulen << 16);
	new_uh[2] = cd_in;

	if (bpf_skb_store_bytes(skb, p->udp_off, ports_len, sizeof(ports_len), 0))
		return -1;
	diff = bpf_csum_diff(old_ph, sizeof(old_ph), new_ph, sizeof(new_ph), 0);
	if (diff < 0 || bpf_l4_csum_replace(skb, check_off, 0, diff, BPF_F_PSEUDO_HDR | mm0))
		return -1;
	diff = bpf_csum_diff(old_uh, sizeof(old_uh), new_uh, sizeof(new_uh), 0);
	if (diff < 0 || bpf_l4_csum_replace(skb, check_off, 0, diff, mm0))
		return -1;

	if (p->family == FAMILY_V4) {
		struct iphdr ip;

		__builtin_memset(&ip, 0, sizeof(ip));
		ip.version = 4;
		ip.ihl = 5;
		/* RFC 8656 section 12.1 (preferred behaviour): DSCP, ECN and DF as they
		 * came, TTL that of a fresh packet. */
		ip.tos = p->ip4_tos;
		ip.tot_len = bpf_htons(ulen + IP4_HLEN);
		ip.id = p->ip4_id;
		ip.frag_off = p->ip4_frag;
		ip.ttl = FRESH_TTL;
		ip.protocol = IPPROTO_UDP;
		ip.saddr = src[0];
		ip.daddr = dst[0];
		diff = bpf_csum_diff(0, 0, (__be32 *)&ip, sizeof(ip), 0);
		if (diff < 0)
			return -1;
		ip.check = fold(diff);
		return bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0) ? -1 : 0;
	} else {
		struct ipv6hdr ip6;

		__builtin_memset(&ip6, 0, sizeof(ip6));
		/* Traffic class and flow label as they came (RFC 8656 section 12.2). */
		*(__be32 *)&ip6 = p->ip6_first;
		ip6.payload_len = bpf_htons(ulen);
		ip6.nexthdr = IPPROTO_UDP;
		ip6.hop_limit = FRESH_TTL;
		__builtin_memcpy(&ip6.saddr, src, 16);
		__builtin_memcpy(&ip6.daddr, dst, 16);
		return bpf_skb_store_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6), 0) ? -1 : 0;
	}
}

/* Sends the rewritten datagram on its way. */
static __always_inline int deliver(struct __sk_buff *skb, struct route *r)
{
	if (r->kind == ROUTE_LOCAL)
		return TC_ACT_OK;
	if (r->kind == ROUTE_DIRECT) {
		if (bpf_skb_store_bytes(skb, 0, r->dmac, 2 * ETH_ALEN, 0))
			return count(ST_DROP_ERROR, 1), TC_ACT_SHOT;
		return bpf_redirect(r->ifindex, 0);
	}
	struct bpf_redir_neigh nh;

	__builtin_memset(&nh, 0, sizeof(nh));
	nh.nh_family = r->nh_family;
	__builtin_memcpy(nh.ipv6_nh, r->nh, 16);
	return bpf_redirect_neigh(r->ifindex, &nh, sizeof(nh), 0);
}

static __always_inline int client_to_peer(struct __sk_buff *skb, const struct pkt *p,
					  struct chan_up *v)
{
	__u16 plen = p->cd_len;
	__u16 ulen = p->ulen - CD_HLEN;
	struct rate_key rk;
	struct route r;
	int verdict;

	/* RFC 8656 section 12.5: over UDP the ChannelData message fills the datagram;
	 * padded or truncated ones are user space's to judge. */
	if (plen != p->ulen - UDP_HLEN - CD_HLEN)
		return pass(ST_PASS_MALFORMED);
	if (plen > MAX_PAYLOAD)
		return pass(ST_PASS_TOO_BIG);
	__builtin_memset(&r, 0, sizeof(r));
	if (route(skb, p, v->relay_ip, v->peer_ip, v->relay_port, v->peer_port, ulen,
		  v->flags, &r) < 0)
		return NEXT;

	__builtin_memset(&rk, 0, sizeof(rk));
	rk.family = p->family;
	rk.port = v->relay_port;
	__builtin_memcpy(rk.ip, v->relay_ip, 16);
	verdict = within_bandwidth(&rk, 0, plen);
	if (verdict >= 0)
		return verdict;

	/* From here on the datagram is modified: a failure drops it. */
	if (move_payload(skb, p->udp_off + UDP_HLEN + CD_HLEN, p->udp_off + UDP_HLEN, plen) ||
	    bpf_skb_change_tail(skb, skb->len - CD_HLEN, 0) ||
	    write_headers(skb, p, v->relay_ip, v->peer_ip, v->relay_port, v->peer_port, ulen,
			  bpf_htonl((__u32)bpf_ntohs(p->cd_channel) << 16 | plen), 0))
		return count(ST_DROP_ERROR, 1), TC_ACT_SHOT;

	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, plen);
	count(ST_UP_PACKETS, 1);
	count(ST_UP_BYTES, plen);
	return deliver(skb, &r);
}

static __always_inline int peer_to_client(struct __sk_buff *skb, const struct pkt *p,
					  struct chan_down *v)
{
	__u16 plen = p->ulen - UDP_HLEN;
	__u32 ulen = (__u32)p->ulen + CD_HLEN;
	__be32 cd = bpf_htonl((__u32)bpf_ntohs(v->channel) << 16 | plen);
	struct rate_key rk;
	struct route r;
	int verdict;

	if (plen > MAX_PAYLOAD || ulen + IP6_HLEN > 0xffff)
		return pass(ST_PASS_TOO_BIG);
	__builtin_memset(&r, 0, sizeof(r));
	if (route(skb, p, v->server_ip, v->client_ip, v->server_port, v->client_port, ulen,
		  v->flags, &r) < 0)
		return NEXT;

	__builtin_memset(&rk, 0, sizeof(rk));
	rk.family = p->family;
	rk.port = p->dport;
	__builtin_memcpy(rk.ip, p->daddr, 16);
	verdict = within_bandwidth(&rk, 1, plen);
	if (verdict >= 0)
		return verdict;

	if (bpf_skb_change_tail(skb, skb->len + CD_HLEN, 0) ||
	    move_payload(skb, p->udp_off + UDP_HLEN, p->udp_off + UDP_HLEN + CD_HLEN, plen) ||
	    bpf_skb_store_bytes(skb, p->udp_off + UDP_HLEN, &cd, sizeof(cd), 0) ||
	    write_headers(skb, p, v->server_ip, v->client_ip, v->server_port, v->client_port,
			  ulen, 0, cd))
		return count(ST_DROP_ERROR, 1), TC_ACT_SHOT;

	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, plen);
	count(ST_DOWN_PACKETS, 1);
	count(ST_DOWN_BYTES, plen);
	return deliver(skb, &r);
}

SEC("classifier")
int ferroturn_relay(struct __sk_buff *skb)
{
	struct pkt p;

	__builtin_memset(&p, 0, sizeof(p));
	if (parse(skb, &p) < 0)
		return NEXT;
	if (p.is_cd) {
		struct chan_key k;
		struct chan_up *up;

		__builtin_memset(&k, 0, sizeof(k));
		k.family = p.family;
		k.channel = p.cd_channel;
		k.client_port = p.sport;
		k.server_port = p.dport;
		__builtin_memcpy(k.client_ip, p.saddr, 16);
		__builtin_memcpy(k.server_ip, p.daddr, 16);
		up = bpf_map_lookup_elem(&chan_up, &k);
		if (up)
			return client_to_peer(skb, &p, up);
	}

	struct peer_key pk;
	struct chan_down *down;

	__builtin_memset(&pk, 0, sizeof(pk));
	pk.family = p.family;
	pk.peer_port = p.sport;
	pk.relay_port = p.dport;
	__builtin_memcpy(pk.peer_ip, p.saddr, 16);
	__builtin_memcpy(pk.relay_ip, p.daddr, 16);
	down = bpf_map_lookup_elem(&chan_down, &pk);
	if (down)
		return peer_to_client(skb, &p, down);
	return NEXT;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
