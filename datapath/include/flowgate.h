/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flowgate.h — the one definition of every structure shared between the
 * eBPF programs (datapath/), the native binding (native/) and, through the
 * binding's layout() export, the single TypeScript decoder
 * (control/datapath/layout.ts). A test pins the TS offsets against these.
 *
 * Rules for this file: fixed-width types only, no implicit padding (every
 * hole is an explicit pad field so the kernel's hash of a key never sees
 * garbage), sizes asserted at the bottom. Bump FG_LAYOUT_VERSION whenever a
 * struct, map or enum below changes so a new agent refuses to adopt pinned
 * maps of an older layout.
 */
#ifndef FLOWGATE_H
#define FLOWGATE_H

/* The kernel's UAPI types, for the BPF programs and for userspace alike (libbpf uses them too). */
#include <linux/types.h>

#define FG_LAYOUT_VERSION 2

/* Directions, as stored in flow keys and the flows table's Enum8. */
enum fg_direction {
	FG_DIR_INGRESS = 1,
	FG_DIR_EGRESS = 2,
};

/* Address families as stored in keys (not AF_* which differ per OS). */
enum fg_family {
	FG_FAMILY_IPV4 = 4,
	FG_FAMILY_IPV6 = 6,
};

/* Rule actions. FG_ACTION_NONE means "no rule matched". */
enum fg_action {
	FG_ACTION_NONE = 0,
	FG_ACTION_DROP = 1,
	FG_ACTION_ALLOW = 2,
};

/*
 * Flow key. IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d) so one
 * key shape serves both families. Ports are host byte order; for ICMP and
 * ICMPv6 src_port carries the type and dst_port the code. Non-first
 * fragments carry port 0.
 */
struct fg_flow_key {
	__u8 src_addr[16];
	__u8 dst_addr[16];
	__u16 src_port;
	__u16 dst_port;
	__u32 ifindex;
	__u16 vlan;	  /* outer VLAN id (802.1Q or 802.1ad S-tag), 0 = untagged */
	__u16 inner_vlan; /* inner VLAN id of a double-tagged frame, 0 = none */
	__u8 protocol;	  /* IP protocol (the last header of an IPv6 chain) */
	__u8 family;	  /* enum fg_family */
	__u8 direction;	  /* enum fg_direction */
	__u8 pad;
};

/*
 * Flow value. packets/bytes count every packet the hook saw; the dropped_*
 * part of them was dropped by a rule. bytes is the IP packet length (IPv4
 * total length, IPv6 payload length + 40), as NetFlow counts octets.
 * Counters are updated with atomic adds: one flow entry is shared by all
 * CPUs. rule_gen/verdict cache the rule decision so an established flow
 * costs one hash lookup; a different rule_gen forces a re-evaluation.
 */
struct fg_flow_value {
	__u64 packets;
	__u64 bytes;
	__u64 dropped_packets;
	__u64 dropped_bytes;
	__u64 first_seen_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 last_seen_ns;  /* CLOCK_MONOTONIC_COARSE, never below first_seen_ns */
	__u32 rule_id;	     /* rule that last matched this flow, 0 = none yet */
	__u32 tcp_flags;     /* OR of TCP flags (FIN..CWR in the low 8 bits) */
	__u32 rule_gen;	     /* rule-set generation the cached verdict belongs to */
	__u32 cached_rule;   /* rule of the cached verdict, 0 = no rule matched */
	__u8 verdict;	     /* cached enum fg_action */
	__u8 pad[7];
};

/*
 * Agent → program configuration: one entry of a BPF_F_MMAPABLE array. The
 * agent writes single aligned 32-bit fields through the mapping (atomic
 * stores), then forces an RCU grace period, so a program run sees either
 * the old or the new value of each field, never a torn one.
 */
struct fg_config {
	__u32 layout_version;	/* FG_LAYOUT_VERSION of whoever created the maps */
	__u32 flow_slot;	/* flow map (0 or 1) programs write */
	__u32 rule_gen;		/* active rule set generation; slot = rule_gen & 1 */
	__u32 complex_count[2]; /* multi-field rules present in each rule slot */
	__u32 src_prefixes[2];	/* entries in each slot's source LPM trie */
	__u32 dst_prefixes[2];	/* entries in each slot's destination LPM trie */
	__u32 max_flows;	/* entries per flow map, as loaded */
	__u32 max_rules;	/* size of rule_stats: rule ids are < max_rules */
	__u32 max_prefixes;	/* capacity of each LPM trie */
	/*
	 * Agent bookkeeping, never read by the programs: the drain epoch each
	 * flow slot's contents belong to, and a random id of this set of maps.
	 * Together they name a drained batch uniquely, so a batch is spooled
	 * and stored exactly once even across agent restarts.
	 */
	__u32 slot_epoch[2];
	__u32 instance;
};

/*
 * LPM trie key for the plain prefix tables. data[0] is the family, then the
 * address: 4 bytes for IPv4, 16 for IPv6 (rest zero). prefixlen counts the
 * family byte, so an IPv4 /24 is prefixlen 8 + 24 and never matches an IPv6
 * lookup (and ::/0 never matches IPv4).
 */
struct fg_lpm_key {
	__u32 prefixlen;
	__u8 data[17];
	__u8 pad[3];
};
#define FG_LPM_DATA_BYTES 17

/*
 * What an LPM prefix resolves to. The agent's compiler stores in each prefix
 * the best rule among that prefix and every shorter prefix covering it, so
 * one longest-prefix lookup gives the answer for the whole table.
 */
struct fg_lpm_verdict {
	__u32 rule_id;
	__u32 priority;
	__u8 action; /* enum fg_action */
	__u8 pad[3];
};

/* struct fg_rule.flags: which optional fields a multi-field rule uses. */
enum fg_rule_flags {
	FG_RULE_PROTO = 1 << 0,
	FG_RULE_SPORT = 1 << 1,
	FG_RULE_DPORT = 1 << 2,
	FG_RULE_SRC = 1 << 3,
	FG_RULE_DST = 1 << 4,
	FG_RULE_IFACE = 1 << 5,
};

/*
 * A multi-field rule, evaluated linearly on a flow's first packet (and after
 * a rule change). The agent sorts them best first (priority desc, allow
 * before drop, id asc), so the first match is the answer of this table.
 * Addresses are IPv4-mapped like the flow key, prefixes given as net/mask.
 */
struct fg_rule {
	__u8 src_net[16];
	__u8 src_mask[16];
	__u8 dst_net[16];
	__u8 dst_mask[16];
	__u32 id;
	__u32 priority;
	__u32 ifindex;
	__u16 sport_lo;
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
	__u8 protocol;
	__u8 action; /* enum fg_action */
	__u8 flags;  /* enum fg_rule_flags */
	__u8 family; /* 0 = any, else enum fg_family */
};
#define FG_MAX_COMPLEX_RULES 4096

/* Matched traffic per rule id (per-CPU array indexed by rule id). */
struct fg_rule_stats {
	__u64 packets;
	__u64 bytes;
};

/* Why a frame was not turned into a flow. Index into fg_iface_stats.malformed. */
enum fg_malformed_reason {
	FG_MAL_ETH_TRUNC = 0, /* shorter than an Ethernet header */
	FG_MAL_VLAN_TRUNC,    /* VLAN tag cut short */
	FG_MAL_VLAN_DEPTH,    /* more than two VLAN tags */
	FG_MAL_IPV4_TRUNC,    /* IPv4 header cut short */
	FG_MAL_IPV4_HDR,      /* version != 4 or IHL < 5 */
	FG_MAL_IPV4_LEN,      /* total length < header or > frame */
	FG_MAL_IPV6_TRUNC,    /* IPv6 fixed header cut short */
	FG_MAL_IPV6_HDR,      /* version != 6 */
	FG_MAL_IPV6_LEN,      /* payload length beyond the frame */
	FG_MAL_EXT_TRUNC,     /* IPv6 extension header cut short */
	FG_MAL_EXT_DEPTH,     /* extension chain longer than we walk */
	FG_MAL_L4_TRUNC,      /* TCP/UDP/SCTP/ICMP header cut short */
	FG_MAL_TCP_DOFF,      /* TCP data offset < 5 or beyond the packet */
	FG_MAL_REASONS,
};

/*
 * Per interface and direction, per CPU. Every frame the hook sees lands in
 * exactly one of: a flow (ip), non_ip, or one malformed reason.
 */
struct fg_iface_key {
	__u32 ifindex;
	__u32 direction;
};

struct fg_iface_stats {
	__u64 seen_packets;
	__u64 seen_bytes; /* frame bytes as the hook saw them */
	__u64 passed_packets;
	__u64 dropped_packets;
	__u64 dropped_bytes; /* frame bytes */
	__u64 ip_packets;
	__u64 non_ip_packets;
	__u64 new_flows;	  /* flow entries inserted */
	__u64 flow_insert_failed; /* inserts the kernel refused */
	__u64 malformed[FG_MAL_REASONS];
};

/* Per flow slot, per CPU: lets the agent see how full the active map is. */
struct fg_slot_stats {
	__u64 new_flows;
	__u64 insert_failed;
};

#define FG_MAX_IFACE_STATS 4096

#ifdef __cplusplus
#define FG_STATIC_ASSERT static_assert
#else
#define FG_STATIC_ASSERT _Static_assert
#endif
FG_STATIC_ASSERT(sizeof(struct fg_flow_key) == 48, "fg_flow_key layout");
FG_STATIC_ASSERT(sizeof(struct fg_flow_value) == 72, "fg_flow_value layout");
FG_STATIC_ASSERT(sizeof(struct fg_config) == 60, "fg_config layout");
FG_STATIC_ASSERT(sizeof(struct fg_lpm_key) == 24, "fg_lpm_key layout");
FG_STATIC_ASSERT(sizeof(struct fg_lpm_verdict) == 12, "fg_lpm_verdict layout");
FG_STATIC_ASSERT(sizeof(struct fg_rule) == 88, "fg_rule layout");
FG_STATIC_ASSERT(sizeof(struct fg_iface_stats) == 8 * (9 + FG_MAL_REASONS), "fg_iface_stats layout");

#endif /* FLOWGATE_H */
