// SPDX-License-Identifier: GPL-2.0 OR MIT
// The benchmark's echo peer as a TC program (benches/compare.sh --netns): on the
// ingress of the generator namespace's veth, every unfragmented UDP datagram to
// ECHO_PORT is sent straight back out of the same interface with its Ethernet, IP and
// UDP addresses swapped (unicast only; GSO trains, fragments, IPv4 options and IPv6
// extension headers go on to the stack). Swapping leaves every checksum as it was (the
// sums are over the same 16-bit words), so nothing is recomputed. It stands in for the user-space echo peer so
// that the generator's one CPU spends its time on the flows, the same for every server
// measured. Built by compare.sh with `clang -O2 -target bpf -DECHO_PORT=N`.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef ECHO_PORT
#error "build with -DECHO_PORT=<the echo peer's UDP port>"
#endif

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} echoed SEC(".maps");

/* Ethernet, IPv6 and UDP headers: what must be in the linear part of the packet. */
#define HEADERS (sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + sizeof(struct udphdr))

SEC("tc")
int echo(struct __sk_buff *skb)
{
    /* A GSO train goes on to the stack whole (compare.sh turns segmentation offload
     * off, so none should come). */
    if (skb->gso_segs > 1)
        return TC_ACT_OK;
    /* Headers held outside the linear part would be invisible below (a no-op when
     * they are in it); a failed pull leaves the packet to the stack. */
    if (skb->len >= HEADERS)
        bpf_skb_pull_data(skb, HEADERS);

    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct udphdr *udp;

    /* Unicast to this interface only: never reflect broadcast or multicast. */
    if ((void *)(eth + 1) > end || (eth->h_dest[0] & 1))
        return TC_ACT_OK;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        __be32 a;

        if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
            (ip->frag_off & bpf_htons(0x3fff)))
            return TC_ACT_OK;
        udp = (void *)(ip + 1);
        if ((void *)(udp + 1) > end || udp->dest != bpf_htons(ECHO_PORT))
            return TC_ACT_OK;
        a = ip->saddr;
        ip->saddr = ip->daddr;
        ip->daddr = a;
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        struct in6_addr a;

        if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
            return TC_ACT_OK;
        udp = (void *)(ip6 + 1);
        if ((void *)(udp + 1) > end || udp->dest != bpf_htons(ECHO_PORT))
            return TC_ACT_OK;
        a = ip6->saddr;
        ip6->saddr = ip6->daddr;
        ip6->daddr = a;
    } else {
        return TC_ACT_OK;
    }
    udp->dest = udp->source;
    udp->source = bpf_htons(ECHO_PORT);

    unsigned char mac[ETH_ALEN];
    __builtin_memcpy(mac, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, mac, ETH_ALEN);

    __u32 zero = 0;
    __u64 *count = bpf_map_lookup_elem(&echoed, &zero);
    if (count)
        *count += 1;
    return bpf_redirect(skb->ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
