/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * parse.h — the one packet parser, shared by the XDP and TC programs.
 *
 * Walks Ethernet, up to two VLAN tags, IPv4 (with options) or IPv6 (with a
 * bounded extension-header chain), then TCP/UDP/SCTP/ICMP/ICMPv6, and fills a
 * flow key. It never trusts a length field: every header is bounds-checked
 * against both the linear data end and the IP packet's own length, and any
 * inconsistency yields a malformed reason instead of a flow.
 */
#ifndef FG_PARSE_H
#define FG_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "flowgate.h"

/* How deep the IPv6 extension-header chain is walked before giving up. */
#define FG_MAX_EXT_HEADERS 8

/* Marks fg_parse()'s offloaded_vlan argument as present (vid 0 is a valid priority tag). */
#define FG_VLAN_OFFLOADED 0x10000

/* Ethernet types and IPv6 next-header values we branch on. */
#define FG_ETH_P_8021Q 0x8100
#define FG_ETH_P_8021AD 0x88A8
#define FG_ETH_P_IP 0x0800
#define FG_ETH_P_IPV6 0x86DD
#define FG_NEXTHDR_HOP 0
#define FG_NEXTHDR_ROUTING 43
#define FG_NEXTHDR_FRAGMENT 44
#define FG_NEXTHDR_AUTH 51
#define FG_NEXTHDR_DEST 60
#define FG_IPPROTO_ICMPV6 58
#define FG_IPPROTO_SCTP 132

/* Outcome of parsing one frame. Malformed reasons are FG_PARSE_MALFORMED + reason. */
enum fg_parse_result {
	FG_PARSE_IP = 0,
	FG_PARSE_NON_IP = 1,
	FG_PARSE_MALFORMED = 16,
};

struct fg_packet {
	struct fg_flow_key key;
	__u32 ip_len;	 /* IP packet length: what the flow's bytes count */
	__u32 hdr_len;	 /* L3 + L4 header bytes (to size GSO segments) */
	__u32 tcp_flags; /* this packet's TCP flags, 0 if not TCP */
};

struct fg_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* Generic 8-byte-unit extension header (hop-by-hop, routing, dest options). */
struct fg_ext_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct fg_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3 | M flag */
	__be32 id;
};

/* The first 4 bytes of TCP, UDP and SCTP are the two ports. */
struct fg_ports {
	__be16 src;
	__be16 dst;
};

#define FG_TCP_HDR_MIN 20
#define FG_UDP_HDR_LEN 8
#define FG_SCTP_HDR_LEN 12
#define FG_ICMP_HDR_MIN 4 /* type, code, checksum: what we read */

static __always_inline void fg_map_ipv4(__u8 *dst, __be32 addr)
{
	/* ::ffff:a.b.c.d — one key shape for both families. */
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/*
 * L4: ports (or ICMP type/code) and TCP flags. `l4` points at the transport
 * header; `ip_end` is where the IP packet ends, so a header that claims
 * bytes past the IP length is malformed even if the frame has padding.
 */
static __always_inline int fg_parse_l4(struct fg_packet *pkt, void *l4, void *data_end, void *ip_end, __u8 proto,
				       __u32 l3_hdr_len)
{
	__u32 need;

	switch (proto) {
	case IPPROTO_TCP:
		need = FG_TCP_HDR_MIN;
		break;
	case IPPROTO_UDP:
		need = FG_UDP_HDR_LEN;
		break;
	case FG_IPPROTO_SCTP:
		need = FG_SCTP_HDR_LEN;
		break;
	case IPPROTO_ICMP:
	case FG_IPPROTO_ICMPV6:
		need = FG_ICMP_HDR_MIN;
		break;
	default:
		/* Other protocols (GRE, ESP, …) are flows without ports. */
		pkt->hdr_len = l3_hdr_len;
		return FG_PARSE_IP;
	}
	if (l4 + need > data_end || l4 + need > ip_end)
		return FG_PARSE_MALFORMED + FG_MAL_L4_TRUNC;

	if (proto == IPPROTO_ICMP || proto == FG_IPPROTO_ICMPV6) {
		__u8 *icmp = l4;

		if ((void *)(icmp + 2) > data_end)
			return FG_PARSE_MALFORMED + FG_MAL_L4_TRUNC;
		pkt->key.src_port = icmp[0]; /* type */
		pkt->key.dst_port = icmp[1]; /* code */
		pkt->hdr_len = l3_hdr_len + 8;
		return FG_PARSE_IP;
	}

	struct fg_ports *ports = l4;

	if ((void *)(ports + 1) > data_end)
		return FG_PARSE_MALFORMED + FG_MAL_L4_TRUNC;
	pkt->key.src_port = bpf_ntohs(ports->src);
	pkt->key.dst_port = bpf_ntohs(ports->dst);
	pkt->hdr_len = l3_hdr_len + need;

	if (proto == IPPROTO_TCP) {
		__u8 *tcp = l4;

		if ((void *)(tcp + 14) > data_end)
			return FG_PARSE_MALFORMED + FG_MAL_L4_TRUNC;
		__u32 doff = (tcp[12] >> 4) * 4;

		if (doff < FG_TCP_HDR_MIN || l4 + doff > ip_end)
			return FG_PARSE_MALFORMED + FG_MAL_TCP_DOFF;
		/* 9 flag bits: NS in byte 12, CWR..FIN in byte 13. */
		pkt->tcp_flags = tcp[13] | ((__u32)(tcp[12] & 1) << 8);
		pkt->hdr_len = l3_hdr_len + doff;
	}
	return FG_PARSE_IP;
}

static __always_inline int fg_parse_ipv4(struct fg_packet *pkt, void *l3, void *data_end, __u64 l3_avail, int gso)
{
	struct iphdr *iph = l3;

	if ((void *)(iph + 1) > data_end)
		return FG_PARSE_MALFORMED + FG_MAL_IPV4_TRUNC;
	if (iph->version != 4 || iph->ihl < 5)
		return FG_PARSE_MALFORMED + FG_MAL_IPV4_HDR;

	__u32 hlen = iph->ihl * 4;
	__u64 tot = bpf_ntohs(iph->tot_len);

	/*
	 * Total length 0 on a TCP GSO packet is IPv4 BIG TCP (beyond 64 KiB):
	 * the packet is the rest of the skb, as the kernel's iph_totlen() says.
	 */
	if (tot == 0 && gso && iph->protocol == IPPROTO_TCP)
		tot = l3_avail;
	if (l3 + hlen > data_end)
		return FG_PARSE_MALFORMED + FG_MAL_IPV4_TRUNC;
	if (tot < hlen || tot > l3_avail)
		return FG_PARSE_MALFORMED + FG_MAL_IPV4_LEN;

	pkt->key.family = FG_FAMILY_IPV4;
	pkt->key.protocol = iph->protocol;
	fg_map_ipv4(pkt->key.src_addr, iph->saddr);
	fg_map_ipv4(pkt->key.dst_addr, iph->daddr);
	pkt->ip_len = tot;
	pkt->hdr_len = hlen;

	/* A non-first fragment has no transport header: the flow has no ports. */
	if (bpf_ntohs(iph->frag_off) & 0x1FFF)
		return FG_PARSE_IP;
	/* Clamp for the verifier, as for IPv6: a longer (GSO) packet is still bounded by data_end. */
	return fg_parse_l4(pkt, l3 + hlen, data_end, l3 + (tot > 0xFFFF ? 0xFFFF : tot), iph->protocol, hlen);
}

static __always_inline int fg_parse_ipv6(struct fg_packet *pkt, void *l3, void *data_end, __u64 l3_avail)
{
	struct ipv6hdr *ip6h = l3;

	if ((void *)(ip6h + 1) > data_end)
		return FG_PARSE_MALFORMED + FG_MAL_IPV6_TRUNC;
	if (ip6h->version != 6)
		return FG_PARSE_MALFORMED + FG_MAL_IPV6_HDR;

	__u32 plen = bpf_ntohs(ip6h->payload_len);
	__u64 ip_len = plen + sizeof(*ip6h);

	/* Payload length 0 is a jumbogram (or BIG TCP): the frame is the packet. */
	if (plen == 0)
		ip_len = l3_avail;
	if (ip_len > l3_avail)
		return FG_PARSE_MALFORMED + FG_MAL_IPV6_LEN;

	pkt->key.family = FG_FAMILY_IPV6;
	__builtin_memcpy(pkt->key.src_addr, &ip6h->saddr, 16);
	__builtin_memcpy(pkt->key.dst_addr, &ip6h->daddr, 16);
	pkt->ip_len = ip_len;

	/* Clamp for the verifier; a longer (GSO) packet is still bounded by data_end. */
	void *ip_end = l3 + (ip_len > 0xFFFF ? 0xFFFF : ip_len);
	void *cur = l3 + sizeof(*ip6h);
	__u8 next = ip6h->nexthdr;
	int i;

#pragma unroll
	for (i = 0; i < FG_MAX_EXT_HEADERS; i++) {
		__u32 len;

		switch (next) {
		case FG_NEXTHDR_HOP:
		case FG_NEXTHDR_ROUTING:
		case FG_NEXTHDR_DEST: {
			struct fg_ext_hdr *eh = cur;

			if ((void *)(eh + 1) > data_end || (void *)(eh + 1) > ip_end)
				return FG_PARSE_MALFORMED + FG_MAL_EXT_TRUNC;
			len = ((__u32)eh->hdrlen + 1) * 8;
			next = eh->nexthdr;
			break;
		}
		case FG_NEXTHDR_AUTH: {
			struct fg_ext_hdr *eh = cur;

			if ((void *)(eh + 1) > data_end || (void *)(eh + 1) > ip_end)
				return FG_PARSE_MALFORMED + FG_MAL_EXT_TRUNC;
			len = ((__u32)eh->hdrlen + 2) * 4;
			next = eh->nexthdr;
			break;
		}
		case FG_NEXTHDR_FRAGMENT: {
			struct fg_frag_hdr *fh = cur;

			if ((void *)(fh + 1) > data_end || (void *)(fh + 1) > ip_end)
				return FG_PARSE_MALFORMED + FG_MAL_EXT_TRUNC;
			next = fh->nexthdr;
			if (bpf_ntohs(fh->frag_off) & 0xFFF8) {
				/* Non-first fragment: protocol known, no ports. */
				pkt->key.protocol = next;
				pkt->hdr_len = cur + sizeof(*fh) - l3;
				return FG_PARSE_IP;
			}
			len = sizeof(*fh);
			break;
		}
		default:
			pkt->key.protocol = next;
			return fg_parse_l4(pkt, cur, data_end, ip_end, next, cur - l3);
		}
		if (cur + len > ip_end)
			return FG_PARSE_MALFORMED + FG_MAL_EXT_TRUNC;
		cur += len;
	}
	/* Still inside extension headers after the walk bound. */
	switch (next) {
	case FG_NEXTHDR_HOP:
	case FG_NEXTHDR_ROUTING:
	case FG_NEXTHDR_DEST:
	case FG_NEXTHDR_AUTH:
	case FG_NEXTHDR_FRAGMENT:
		return FG_PARSE_MALFORMED + FG_MAL_EXT_DEPTH;
	}
	pkt->key.protocol = next;
	return fg_parse_l4(pkt, cur, data_end, ip_end, next, cur - l3);
}

/*
 * Parse a frame. `frame_len` is the whole frame (skb->len on TC, which may
 * exceed the linear data_end - data); length fields are checked against it.
 * `gso` is set for a TC GSO super-packet (skb gso_size != 0), whose IPv4
 * total length may be 0 (BIG TCP). `offloaded_vlan` is FG_VLAN_OFFLOADED |
 * vid when the kernel holds the outer tag outside the data (TC: the NIC or
 * the stack stripped it into skb->vlan_tci), else 0: that tag is the outer
 * VLAN, and at most one more tag may follow in the data.
 */
static __always_inline int fg_parse(struct fg_packet *pkt, void *data, void *data_end, __u64 frame_len, int gso,
				    __u32 offloaded_vlan)
{
	struct ethhdr *eth = data;
	void *cur = data + sizeof(*eth);

	if (cur > data_end)
		return FG_PARSE_MALFORMED + FG_MAL_ETH_TRUNC;

	__u16 proto = bpf_ntohs(eth->h_proto);
	int depth = 0, i;

	if (offloaded_vlan & FG_VLAN_OFFLOADED) {
		pkt->key.vlan = offloaded_vlan & 0x0FFF;
		depth = 1;
	}
#pragma unroll
	for (i = 0; i < 2; i++) {
		if (depth >= 2 || (proto != FG_ETH_P_8021Q && proto != FG_ETH_P_8021AD))
			break;
		struct fg_vlan_hdr *vh = cur;

		if ((void *)(vh + 1) > data_end)
			return FG_PARSE_MALFORMED + FG_MAL_VLAN_TRUNC;
		__u16 vid = bpf_ntohs(vh->tci) & 0x0FFF;

		if (depth == 0)
			pkt->key.vlan = vid;
		else
			pkt->key.inner_vlan = vid;
		depth++;
		proto = bpf_ntohs(vh->encap_proto);
		cur = vh + 1;
	}
	if (proto == FG_ETH_P_8021Q || proto == FG_ETH_P_8021AD)
		return FG_PARSE_MALFORMED + FG_MAL_VLAN_DEPTH;

	__u64 l3_off = cur - data;
	__u64 l3_avail = frame_len > l3_off ? frame_len - l3_off : 0;

	if (proto == FG_ETH_P_IP)
		return fg_parse_ipv4(pkt, cur, data_end, l3_avail, gso);
	if (proto == FG_ETH_P_IPV6)
		return fg_parse_ipv6(pkt, cur, data_end, l3_avail);
	return FG_PARSE_NON_IP;
}

#endif /* FG_PARSE_H */
