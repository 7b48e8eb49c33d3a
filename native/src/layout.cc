#include "layout.h"

#include "attach.h"

#include <flowgate.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#include <cstddef>

namespace fg
{

namespace
{

void AddField(Napi::Env env, Napi::Object fields, const char *name, size_t offset, size_t size)
{
	Napi::Object f = Napi::Object::New(env);
	f.Set("offset", Napi::Number::New(env, static_cast<double>(offset)));
	f.Set("size", Napi::Number::New(env, static_cast<double>(size)));
	fields.Set(name, f);
}

/* Every member, padding included: the decoder may check that fields tile the struct. */
#define FG_FIELD(S, f) AddField(env, fields, #f, offsetof(S, f), sizeof(S::f))
#define FG_STRUCT(S, ...)                                                              \
	do {                                                                           \
		Napi::Object s = Napi::Object::New(env);                               \
		Napi::Object fields = Napi::Object::New(env);                          \
		s.Set("size", Napi::Number::New(env, static_cast<double>(sizeof(S)))); \
		__VA_ARGS__;                                                           \
		s.Set("fields", fields);                                               \
		out.Set(#S, s);                                                        \
	} while (0)

} // namespace

Napi::Value Layout(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	Napi::Object out = Napi::Object::New(env);
	FG_STRUCT(fg_flow_key, FG_FIELD(fg_flow_key, src_addr); FG_FIELD(fg_flow_key, dst_addr);
		  FG_FIELD(fg_flow_key, src_port); FG_FIELD(fg_flow_key, dst_port); FG_FIELD(fg_flow_key, ifindex);
		  FG_FIELD(fg_flow_key, vlan); FG_FIELD(fg_flow_key, inner_vlan); FG_FIELD(fg_flow_key, protocol);
		  FG_FIELD(fg_flow_key, family); FG_FIELD(fg_flow_key, direction); FG_FIELD(fg_flow_key, pad));
	FG_STRUCT(fg_flow_value, FG_FIELD(fg_flow_value, packets); FG_FIELD(fg_flow_value, bytes);
		  FG_FIELD(fg_flow_value, dropped_packets); FG_FIELD(fg_flow_value, dropped_bytes);
		  FG_FIELD(fg_flow_value, first_seen_ns); FG_FIELD(fg_flow_value, last_seen_ns);
		  FG_FIELD(fg_flow_value, rule_id); FG_FIELD(fg_flow_value, tcp_flags);
		  FG_FIELD(fg_flow_value, rule_gen); FG_FIELD(fg_flow_value, cached_rule);
		  FG_FIELD(fg_flow_value, verdict); FG_FIELD(fg_flow_value, pad));
	FG_STRUCT(fg_config, FG_FIELD(fg_config, layout_version); FG_FIELD(fg_config, flow_slot);
		  FG_FIELD(fg_config, rule_gen); FG_FIELD(fg_config, complex_count); FG_FIELD(fg_config, src_prefixes);
		  FG_FIELD(fg_config, dst_prefixes); FG_FIELD(fg_config, max_flows); FG_FIELD(fg_config, max_rules);
		  FG_FIELD(fg_config, max_prefixes); FG_FIELD(fg_config, slot_epoch); FG_FIELD(fg_config, instance));
	FG_STRUCT(fg_lpm_key, FG_FIELD(fg_lpm_key, prefixlen); FG_FIELD(fg_lpm_key, data); FG_FIELD(fg_lpm_key, pad));
	FG_STRUCT(fg_lpm_verdict, FG_FIELD(fg_lpm_verdict, rule_id); FG_FIELD(fg_lpm_verdict, priority);
		  FG_FIELD(fg_lpm_verdict, action); FG_FIELD(fg_lpm_verdict, pad));
	FG_STRUCT(fg_rule, FG_FIELD(fg_rule, src_net); FG_FIELD(fg_rule, src_mask); FG_FIELD(fg_rule, dst_net);
		  FG_FIELD(fg_rule, dst_mask); FG_FIELD(fg_rule, id); FG_FIELD(fg_rule, priority);
		  FG_FIELD(fg_rule, ifindex); FG_FIELD(fg_rule, sport_lo); FG_FIELD(fg_rule, sport_hi);
		  FG_FIELD(fg_rule, dport_lo); FG_FIELD(fg_rule, dport_hi); FG_FIELD(fg_rule, protocol);
		  FG_FIELD(fg_rule, action); FG_FIELD(fg_rule, flags); FG_FIELD(fg_rule, family));
	FG_STRUCT(fg_rule_stats, FG_FIELD(fg_rule_stats, packets); FG_FIELD(fg_rule_stats, bytes));
	FG_STRUCT(fg_iface_key, FG_FIELD(fg_iface_key, ifindex); FG_FIELD(fg_iface_key, direction));
	FG_STRUCT(fg_iface_stats, FG_FIELD(fg_iface_stats, seen_packets); FG_FIELD(fg_iface_stats, seen_bytes);
		  FG_FIELD(fg_iface_stats, passed_packets); FG_FIELD(fg_iface_stats, dropped_packets);
		  FG_FIELD(fg_iface_stats, dropped_bytes); FG_FIELD(fg_iface_stats, ip_packets);
		  FG_FIELD(fg_iface_stats, non_ip_packets); FG_FIELD(fg_iface_stats, new_flows);
		  FG_FIELD(fg_iface_stats, flow_insert_failed); FG_FIELD(fg_iface_stats, malformed));
	FG_STRUCT(fg_slot_stats, FG_FIELD(fg_slot_stats, new_flows); FG_FIELD(fg_slot_stats, insert_failed));
	return out;
}

#undef FG_STRUCT
#undef FG_FIELD

Napi::Value Constants(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	Napi::Object c = Napi::Object::New(env);
#define FG_CONST(name) c.Set(#name, Napi::Number::New(env, static_cast<double>(name)))
	FG_CONST(FG_LAYOUT_VERSION);
	FG_CONST(FG_DIR_INGRESS);
	FG_CONST(FG_DIR_EGRESS);
	FG_CONST(FG_FAMILY_IPV4);
	FG_CONST(FG_FAMILY_IPV6);
	FG_CONST(FG_ACTION_NONE);
	FG_CONST(FG_ACTION_DROP);
	FG_CONST(FG_ACTION_ALLOW);
	FG_CONST(FG_RULE_PROTO);
	FG_CONST(FG_RULE_SPORT);
	FG_CONST(FG_RULE_DPORT);
	FG_CONST(FG_RULE_SRC);
	FG_CONST(FG_RULE_DST);
	FG_CONST(FG_RULE_IFACE);
	FG_CONST(FG_MAL_ETH_TRUNC);
	FG_CONST(FG_MAL_VLAN_TRUNC);
	FG_CONST(FG_MAL_VLAN_DEPTH);
	FG_CONST(FG_MAL_IPV4_TRUNC);
	FG_CONST(FG_MAL_IPV4_HDR);
	FG_CONST(FG_MAL_IPV4_LEN);
	FG_CONST(FG_MAL_IPV6_TRUNC);
	FG_CONST(FG_MAL_IPV6_HDR);
	FG_CONST(FG_MAL_IPV6_LEN);
	FG_CONST(FG_MAL_EXT_TRUNC);
	FG_CONST(FG_MAL_EXT_DEPTH);
	FG_CONST(FG_MAL_L4_TRUNC);
	FG_CONST(FG_MAL_TCP_DOFF);
	FG_CONST(FG_MAL_REASONS);
	FG_CONST(FG_MAX_COMPLEX_RULES);
	FG_CONST(FG_MAX_IFACE_STATS);
	FG_CONST(FG_LPM_DATA_BYTES);
	FG_CONST(XDP_PASS);
	FG_CONST(XDP_DROP);
	FG_CONST(TC_ACT_UNSPEC);
	FG_CONST(TC_ACT_OK);
	FG_CONST(TC_ACT_SHOT);
#undef FG_CONST
	c.Set("FG_TC_HANDLE", Napi::Number::New(env, kTcHandle));
	c.Set("FG_TC_PRIORITY", Napi::Number::New(env, kTcPriority));
	return c;
}

} // namespace fg
