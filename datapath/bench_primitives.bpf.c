// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark baselines: what the kernel's LRU hash costs by itself with
 * flowgate's key and value, so the benchmark can show how close each path
 * is to the map operations it cannot avoid.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "flowgate.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, struct fg_flow_key);
	__type(value, struct fg_flow_value);
} lru SEC(".maps");

/* One fixed key: after the first run every run is a hit. */
SEC("xdp")
int lru_hit(struct xdp_md *ctx)
{
	struct fg_flow_key k = { .ifindex = ctx->ingress_ifindex };
	struct fg_flow_value *v = bpf_map_lookup_elem(&lru, &k);

	if (v) {
		v->packets++;
		return XDP_PASS;
	}
	struct fg_flow_value nv = { .packets = 1 };

	bpf_map_update_elem(&lru, &k, &nv, BPF_ANY);
	return XDP_PASS;
}

/* A random key every run: a miss and an insert. */
SEC("xdp")
int lru_insert(struct xdp_md *ctx)
{
	struct fg_flow_key k = { .ifindex = ctx->ingress_ifindex };
	__u32 r = bpf_get_prandom_u32();

	__builtin_memcpy(&k.src_addr[12], &r, 4);
	k.src_port = r >> 16;
	if (bpf_map_lookup_elem(&lru, &k))
		return XDP_PASS;
	struct fg_flow_value nv = { .packets = 1 };

	bpf_map_update_elem(&lru, &k, &nv, BPF_NOEXIST);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
