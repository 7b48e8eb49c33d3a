/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * rules.h — the rule matcher. Three tables answer independently and the best
 * answer wins:
 *   - src LPM trie: plain source-prefix rules (blocklists): one lookup,
 *   - dst LPM trie: plain destination-prefix rules: one lookup,
 *   - multi-field rules: a best-first list, scanned until the first match.
 * The agent's compiler folds each prefix's covering prefixes into its trie
 * value, so a million prefixes cost one lookup, like ten. The scan only runs
 * on a flow's first packet (the verdict is cached in the flow entry).
 *
 * "Best" is: higher priority, then allow over drop, then lower rule id.
 */
#ifndef FG_RULES_H
#define FG_RULES_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "flowgate.h"
#include "maps.h"

struct fg_verdict {
	__u32 rule_id;
	__u32 priority;
	__u8 action;
};

static __always_inline int fg_better(__u32 prio, __u8 action, __u32 id, const struct fg_verdict *than)
{
	if (than->action == FG_ACTION_NONE)
		return 1;
	if (prio != than->priority)
		return prio > than->priority;
	if (action != than->action)
		return action == FG_ACTION_ALLOW;
	return id < than->rule_id;
}

static __always_inline void fg_take_lpm(struct fg_verdict *best, const struct fg_lpm_verdict *v)
{
	if (v && v->action != FG_ACTION_NONE && fg_better(v->priority, v->action, v->rule_id, best)) {
		best->rule_id = v->rule_id;
		best->priority = v->priority;
		best->action = v->action;
	}
}

static __always_inline void fg_lpm_key_from(struct fg_lpm_key *lk, __u8 family, const __u8 *addr)
{
	__builtin_memset(lk, 0, sizeof(*lk));
	lk->data[0] = family;
	if (family == FG_FAMILY_IPV4) {
		lk->prefixlen = 8 + 32;
		__builtin_memcpy(&lk->data[1], addr + 12, 4);
	} else {
		lk->prefixlen = 8 + 128;
		__builtin_memcpy(&lk->data[1], addr, 16);
	}
}

static __always_inline int fg_addr_in(const __u8 *addr, const __u8 *net, const __u8 *mask)
{
	const __u64 *a = (const __u64 *)addr, *n = (const __u64 *)net, *m = (const __u64 *)mask;

	return ((a[0] & m[0]) == n[0]) && ((a[1] & m[1]) == n[1]);
}

static __always_inline int fg_rule_matches(const struct fg_rule *r, const struct fg_flow_key *k)
{
	if (r->family && r->family != k->family)
		return 0;
	if ((r->flags & FG_RULE_IFACE) && r->ifindex != k->ifindex)
		return 0;
	if ((r->flags & FG_RULE_PROTO) && r->protocol != k->protocol)
		return 0;
	if ((r->flags & FG_RULE_SPORT) && (k->src_port < r->sport_lo || k->src_port > r->sport_hi))
		return 0;
	if ((r->flags & FG_RULE_DPORT) && (k->dst_port < r->dport_lo || k->dst_port > r->dport_hi))
		return 0;
	if ((r->flags & FG_RULE_SRC) && !fg_addr_in(k->src_addr, r->src_net, r->src_mask))
		return 0;
	if ((r->flags & FG_RULE_DST) && !fg_addr_in(k->dst_addr, r->dst_net, r->dst_mask))
		return 0;
	return 1;
}

struct fg_scan_ctx {
	const struct fg_flow_key *key;
	void *table;
	struct fg_verdict *best;
};

/* bpf_loop callback: returns 1 to stop at the first (i.e. best) match. */
static long fg_scan_one(__u32 i, void *arg)
{
	struct fg_scan_ctx *ctx = arg;
	const struct fg_rule *r = bpf_map_lookup_elem(ctx->table, &i);

	if (!r)
		return 1;
	/* Sorted best first: once below the best so far, nothing later wins. */
	if (ctx->best->action != FG_ACTION_NONE && r->priority < ctx->best->priority)
		return 1;
	if (!fg_rule_matches(r, ctx->key))
		return 0;
	if (fg_better(r->priority, r->action, r->id, ctx->best)) {
		ctx->best->rule_id = r->id;
		ctx->best->priority = r->priority;
		ctx->best->action = r->action;
	}
	return 1;
}

static __always_inline void fg_match_rules(const struct fg_config *cfg, const struct fg_flow_key *key, __u32 gen,
					   struct fg_verdict *best)
{
	__u32 slot = gen & 1;
	struct fg_lpm_key lk;

	best->rule_id = 0;
	best->priority = 0;
	best->action = FG_ACTION_NONE;

	if (cfg->src_prefixes[slot]) {
		fg_lpm_key_from(&lk, key->family, key->src_addr);
		fg_take_lpm(best, bpf_map_lookup_elem(slot ? (void *)&src_lpm_1 : (void *)&src_lpm_0, &lk));
	}
	if (cfg->dst_prefixes[slot]) {
		fg_lpm_key_from(&lk, key->family, key->dst_addr);
		fg_take_lpm(best, bpf_map_lookup_elem(slot ? (void *)&dst_lpm_1 : (void *)&dst_lpm_0, &lk));
	}

	__u32 n = cfg->complex_count[slot];

	if (n) {
		struct fg_scan_ctx ctx = {
			.key = key,
			.table = slot ? (void *)&complex_1 : (void *)&complex_0,
			.best = best,
		};

		if (n > FG_MAX_COMPLEX_RULES)
			n = FG_MAX_COMPLEX_RULES;
		bpf_loop(n, fg_scan_one, &ctx, 0);
	}
}

#endif /* FG_RULES_H */
