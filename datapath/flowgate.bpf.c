// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * flowgate.bpf.c — the hooks: XDP on ingress, TC (clsact) on egress, and TC
 * on ingress for drivers where XDP cannot be used. All three run the same
 * fg_handle(); they differ only in how they read the frame and say the verdict.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "flow.h"

/* Bytes of headers the parser may read: enough for two VLAN tags, IPv6 and a long extension chain. */
#define FG_TC_PULL_BYTES 256

SEC("xdp")
int flowgate_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct fg_hook_ctx hc = {
		.data = data,
		.data_end = data_end,
		.frame_len = data_end - data,
		.ifindex = ctx->ingress_ifindex,
		.direction = FG_DIR_INGRESS,
		.gso_segs = 1,
	};

	return fg_handle(&hc) ? XDP_DROP : XDP_PASS;
}

static __always_inline int fg_tc(struct __sk_buff *skb, __u8 direction)
{
	/* Headers of a non-linear skb may sit in fragments: pull what the parser reads. */
	if (skb->data_end - skb->data < FG_TC_PULL_BYTES && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < FG_TC_PULL_BYTES ? skb->len : FG_TC_PULL_BYTES);

	struct fg_hook_ctx hc = {
		.data = (void *)(long)skb->data,
		.data_end = (void *)(long)skb->data_end,
		.frame_len = skb->len,
		.ifindex = skb->ifindex,
		.direction = direction,
		.gso_segs = skb->gso_segs,
		.gso_size = skb->gso_size,
		/* The stack keeps an 802.1Q tag outside the data on TC ingress and on VLAN devices' egress. */
		.offloaded_vlan = skb->vlan_present ? FG_VLAN_OFFLOADED | (skb->vlan_tci & 0x0FFF) : 0,
	};

	/* TC_ACT_UNSPEC on pass lets any later tc filter on the hook still run. */
	return fg_handle(&hc) ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

SEC("tc")
int flowgate_tc_egress(struct __sk_buff *skb)
{
	return fg_tc(skb, FG_DIR_EGRESS);
}

SEC("tc")
int flowgate_tc_ingress(struct __sk_buff *skb)
{
	return fg_tc(skb, FG_DIR_INGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
