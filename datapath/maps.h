/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * maps.h — every map the programs share. Sizes marked "set at load" are
 * placeholders: the native loader resizes them from the agent's config
 * before the object is loaded.
 */
#ifndef FG_MAPS_H
#define FG_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "flowgate.h"

/* Agent → program switches; mmap'd by the agent for atomic field stores. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct fg_config);
} config SEC(".maps");

/* The two flow maps: programs write flow_slots[config.flow_slot], the agent drains the other. */
struct fg_flow_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024); /* set at load: --max-flows */
	__type(key, struct fg_flow_key);
	__type(value, struct fg_flow_value);
} flows_a SEC(".maps"), flows_b SEC(".maps");

/*
 * Outer array holding both flow maps. Besides selecting the slot with an
 * inlined array lookup, it gives the agent its grace period: an update of an
 * ARRAY_OF_MAPS entry returns only after an RCU grace period, i.e. after
 * every program run that could still hold the old slot has finished.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct fg_flow_map);
} flow_slots SEC(".maps") = {
	.values = { &flows_a, &flows_b },
};

/* New-flow inserts per slot, so the agent sees the active map filling up. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct fg_slot_stats);
} slot_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, FG_MAX_IFACE_STATS);
	__type(key, struct fg_iface_key);
	__type(value, struct fg_iface_stats);
} iface_stats SEC(".maps");

/* Plain prefix rules, double-buffered: slot = config.rule_gen & 1. */
struct fg_lpm_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024); /* set at load: max prefixes */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fg_lpm_key);
	__type(value, struct fg_lpm_verdict);
} src_lpm_0 SEC(".maps"), src_lpm_1 SEC(".maps"), dst_lpm_0 SEC(".maps"), dst_lpm_1 SEC(".maps");

/* Multi-field rules, sorted best first, double-buffered like the tries. */
struct fg_complex_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FG_MAX_COMPLEX_RULES);
	__type(key, __u32);
	__type(value, struct fg_rule);
} complex_0 SEC(".maps"), complex_1 SEC(".maps");

/* Traffic each rule matched, indexed by rule id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024); /* set at load: max rules */
	__type(key, __u32);
	__type(value, struct fg_rule_stats);
} rule_stats SEC(".maps");

#endif /* FG_MAPS_H */
