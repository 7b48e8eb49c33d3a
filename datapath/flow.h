/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flow.h — per-packet accounting and verdict, shared by XDP and TC.
 *
 * One run: count the frame on its interface, parse it, find its flow in the
 * active slot, take the cached verdict (or match the rules when the flow is
 * new or the rule set changed), then add the packet to the flow, the rule
 * and the interface counters. Every frame lands in exactly one of: a flow,
 * non_ip, or one malformed reason.
 */
#ifndef FG_FLOW_H
#define FG_FLOW_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "flowgate.h"
#include "maps.h"
#include "parse.h"
#include "rules.h"

/* What the hook saw: the frame, where it came from, how many packets it stands for. */
struct fg_hook_ctx {
	void *data;
	void *data_end;
	__u64 frame_len; /* bytes of the whole frame */
	__u32 ifindex;
	__u8 direction;
	__u32 gso_segs;	      /* TC: a GSO super-packet counts as this many packets */
	__u32 gso_size;	      /* TC: non-zero for a GSO super-packet (skb_is_gso) */
	__u32 offloaded_vlan; /* TC: FG_VLAN_OFFLOADED | vid of a tag held in skb->vlan_tci */
};

static __always_inline struct fg_iface_stats *fg_iface_stats_get(__u32 ifindex, __u8 direction)
{
	struct fg_iface_key ik = { .ifindex = ifindex, .direction = direction };
	struct fg_iface_stats *st = bpf_map_lookup_elem(&iface_stats, &ik);

	if (st)
		return st;
	/* First frame on this interface: insert zeroes, then use the entry. */
	struct fg_iface_stats zero = {};

	bpf_map_update_elem(&iface_stats, &ik, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&iface_stats, &ik);
}

static __always_inline void fg_count_rule(__u32 rule_id, __u64 packets, __u64 bytes)
{
	if (!rule_id)
		return;
	struct fg_rule_stats *rs = bpf_map_lookup_elem(&rule_stats, &rule_id);

	if (rs) {
		rs->packets += packets;
		rs->bytes += bytes;
	}
}

static __always_inline void fg_flow_add(struct fg_flow_value *v, __u64 packets, __u64 bytes, int drop, __u32 tcp_flags,
					__u64 now)
{
	__sync_fetch_and_add(&v->packets, packets);
	__sync_fetch_and_add(&v->bytes, bytes);
	if (drop) {
		__sync_fetch_and_add(&v->dropped_packets, packets);
		__sync_fetch_and_add(&v->dropped_bytes, bytes);
	}
	/* Only touch the shared line when a new flag appears. */
	if ((v->tcp_flags & tcp_flags) != tcp_flags)
		__sync_fetch_and_or(&v->tcp_flags, tcp_flags);
	if (v->last_seen_ns < now)
		v->last_seen_ns = now;
}

/* Returns 1 to drop the frame, 0 to pass it. */
static __always_inline int fg_handle(struct fg_hook_ctx *hc)
{
	__u32 zero = 0;
	struct fg_config *cfg = bpf_map_lookup_elem(&config, &zero);
	struct fg_iface_stats *ist = fg_iface_stats_get(hc->ifindex, hc->direction);

	/* Not configured yet (maps being created): stay out of the way. */
	if (!cfg || !ist)
		return 0;

	ist->seen_packets++;
	ist->seen_bytes += hc->frame_len;

	struct fg_packet pkt = {};
	int res = fg_parse(&pkt, hc->data, hc->data_end, hc->frame_len, hc->gso_size != 0, hc->offloaded_vlan);

	if (res != FG_PARSE_IP) {
		if (res == FG_PARSE_NON_IP) {
			ist->non_ip_packets++;
		} else {
			__u32 reason = res - FG_PARSE_MALFORMED;

			if (reason < FG_MAL_REASONS)
				ist->malformed[reason]++;
		}
		ist->passed_packets++;
		return 0;
	}
	ist->ip_packets++;

	pkt.key.ifindex = hc->ifindex;
	pkt.key.direction = hc->direction;
#ifdef FG_BENCH_NEW_FLOWS
	/* Benchmark build only: test-run repeats one frame, so make each run a new flow. */
	__u32 rnd = bpf_get_prandom_u32();

	pkt.key.src_port = rnd;
	pkt.key.dst_port = rnd >> 16;
#endif

	/* A GSO super-packet leaves as gso_segs packets, each with its own headers. */
	__u64 packets = 1, bytes = pkt.ip_len;

	if (hc->gso_segs > 1) {
		packets = hc->gso_segs;
		bytes = pkt.ip_len + (__u64)(hc->gso_segs - 1) * pkt.hdr_len;
	}

	__u32 slot = cfg->flow_slot & 1;
	__u32 gen = cfg->rule_gen;
	void *flows = bpf_map_lookup_elem(&flow_slots, &slot);

	if (!flows) {
		ist->passed_packets++;
		return 0;
	}

	/*
	 * last_seen takes the coarse clock (the last tick, ~1-4 ms resolution): the
	 * precise one costs ~4x an empty program on a VM, more than the flow
	 * lookup. Only a new flow reads the precise clock, for first_seen.
	 */
	__u64 now = bpf_ktime_get_coarse_ns();
	struct fg_flow_value *v = bpf_map_lookup_elem(flows, &pkt.key);
	struct fg_verdict verdict;

	if (v && v->rule_gen == gen) {
		verdict.action = v->verdict;
		verdict.rule_id = v->cached_rule;
	} else {
		fg_match_rules(cfg, &pkt.key, gen, &verdict);
	}
	int drop = verdict.action == FG_ACTION_DROP;

	if (!v) {
		__u64 first = bpf_ktime_get_ns();
		struct fg_flow_value nv = {
			.packets = packets,
			.bytes = bytes,
			.dropped_packets = drop ? packets : 0,
			.dropped_bytes = drop ? bytes : 0,
			.first_seen_ns = first,
			.last_seen_ns = first,
			.rule_id = verdict.rule_id,
			.tcp_flags = pkt.tcp_flags,
			.rule_gen = gen,
			.cached_rule = verdict.rule_id,
			.verdict = verdict.action,
		};
		struct fg_slot_stats *ss = bpf_map_lookup_elem(&slot_stats, &slot);
		long err = bpf_map_update_elem(flows, &pkt.key, &nv, BPF_NOEXIST);

		if (!err) {
			ist->new_flows++;
			if (ss)
				ss->new_flows++;
		} else {
			/* Another CPU inserted it first: add to theirs. */
			v = bpf_map_lookup_elem(flows, &pkt.key);
			if (v) {
				fg_flow_add(v, packets, bytes, drop, pkt.tcp_flags, now);
			} else {
				ist->flow_insert_failed++;
				if (ss)
					ss->insert_failed++;
			}
		}
	} else {
		if (v->rule_gen != gen) {
			/* Benign race: every writer stores the same answer for this gen. */
			v->verdict = verdict.action;
			v->cached_rule = verdict.rule_id;
			v->rule_gen = gen;
		}
		if (verdict.rule_id && v->rule_id != verdict.rule_id)
			v->rule_id = verdict.rule_id;
		fg_flow_add(v, packets, bytes, drop, pkt.tcp_flags, now);
	}

	fg_count_rule(verdict.rule_id, packets, bytes);
	if (drop) {
		ist->dropped_packets++;
		ist->dropped_bytes += hc->frame_len;
		return 1;
	}
	ist->passed_packets++;
	return 0;
}

#endif /* FG_FLOW_H */
