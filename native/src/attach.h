/*
 * attach.h — hooking the pinned programs onto interfaces, idempotently.
 *
 * XDP goes through a bpf_link pinned at links/xdp@<ifname>: the link, not
 * the agent process, keeps the program attached, a restarted agent finds it
 * again, and nobody else's XDP program can be replaced by accident (the
 * kernel refuses a link over an existing program).
 *
 * TC uses a clsact qdisc and a direct-action filter at flowgate's own
 * handle/priority (kTcHandle/kTcPriority); the filter lives as long as the
 * interface, so adoption is a query for that handle.
 */
#pragma once

#include "state.h"

#include <cstdint>
#include <string>
#include <vector>

namespace fg
{

constexpr uint32_t kTcHandle = 0xF10E;
constexpr uint32_t kTcPriority = 1;

enum class XdpMode { Auto, Native, Generic };

struct AttachResult {
	uint32_t ifindex = 0;
	Hook hook = Hook::Xdp;
	std::string mode; /* XDP only: "native" or "generic" */
	bool adopted = false;
	std::string warning;
};

struct Attachment {
	std::string ifname;
	uint32_t ifindex = 0;
	Hook hook = Hook::Xdp;
	std::string mode;
};

/* Interface names end up in pin paths: only what the kernel allows, and no '/'. */
bool ValidIfname(const std::string &ifname);
/* if_nametoindex; throws ENODEV naming the interface. */
uint32_t IfindexOf(const std::string &ifname);

AttachResult AttachXdp(const DatapathState &state, const std::string &ifname, XdpMode mode);
/* hook: Hook::TcEgress or Hook::TcIngress. */
AttachResult AttachTc(const DatapathState &state, const std::string &ifname, Hook hook);
/* False when the hook was not attached (a stale XDP pin is removed all the same). */
bool Detach(const DatapathState &state, const std::string &ifname, Hook hook);
std::vector<Attachment> ListAttachments(const DatapathState &state);
/* Detach everything ours: live attachments and every pinned XDP link. */
void DetachAll(const DatapathState &state);

} // namespace fg
