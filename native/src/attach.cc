#include "attach.h"

#include "errors.h"
#include "info.h"
#include "libbpf_log.h"
#include "pins.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>

#include <cerrno>

namespace fg
{

namespace
{

constexpr int kENOTSUPP = 524;

std::string XdpPinPath(const DatapathState &state, const std::string &ifname)
{
	return JoinPath(state.pinDir, "links/xdp@" + ifname);
}

/* The mode our program runs in on ifindex, from the kernel's view of the device. */
std::string QueryXdpMode(uint32_t ifindex, uint32_t progId)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	if (bpf_xdp_query(static_cast<int>(ifindex), 0, &q) != 0)
		return "";
	switch (q.attach_mode) {
	case XDP_ATTACHED_DRV:
	case XDP_ATTACHED_HW:
		return "native";
	case XDP_ATTACHED_SKB:
		return "generic";
	case XDP_ATTACHED_MULTI:
		if (q.skb_prog_id == progId)
			return "generic";
		return "native";
	default:
		return "";
	}
}

/* Id of whatever XDP program runs on ifindex (0: none). */
uint32_t QueryXdpProgId(uint32_t ifindex)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	if (bpf_xdp_query(static_cast<int>(ifindex), 0, &q) != 0)
		return 0;
	if (q.prog_id)
		return q.prog_id;
	return q.drv_prog_id ? q.drv_prog_id : (q.skb_prog_id ? q.skb_prog_id : q.hw_prog_id);
}

bool DriverLacksNativeXdp(int err)
{
	return err == -EOPNOTSUPP || err == -EINVAL || err == -kENOTSUPP;
}

/*
 * Failures of a native attach that generic mode cannot fix: another program
 * on the device, permissions, the device itself. Anything else is the
 * driver refusing native XDP (no support, MTU too large for XDP, too few
 * queues, ...), which generic mode works around.
 */
bool GenericWontHelp(int err)
{
	return err == -EBUSY || err == -EEXIST || err == -EPERM || err == -EACCES || err == -ENODEV || err == -ENOMEM;
}

std::string NativeRefusedHint(const std::string &ifname, int err)
{
	if (DriverLacksNativeXdp(err))
		return "native XDP not supported by driver of " + ifname + ", use --xdp-mode generic";
	return "the driver of " + ifname +
	       " refused native XDP (an MTU too large for XDP or too few queues are common causes), use --xdp-mode generic";
}

std::string BusyHint(const DatapathState &state, const std::string &ifname, uint32_t ifindex)
{
	uint32_t id = QueryXdpProgId(ifindex);
	std::string idText = id ? "id " + std::to_string(id) : "id unknown";
	if (id && id == state.Prog(Hook::Xdp).id)
		return ifname + " already runs flowgate's XDP program (" + idText + ") through a link not pinned in " +
		       state.pinDir + ": is another flowgate agent managing it?";
	return ifname + " already has an XDP program (" + idText +
	       ") not owned by flowgate: remove it (ip link set dev " + ifname +
	       " xdp off) or choose another interface";
}

/* Open the pinned link of ifname; an empty fd when there is no pin. */
UniqueFd OpenXdpPin(const std::string &pin)
{
	int fd = bpf_obj_get(pin.c_str());
	if (fd == -ENOENT)
		return UniqueFd();
	CheckBpf(fd, "open pinned XDP link " + pin);
	return UniqueFd(fd);
}

/* The ifindex a pinned XDP link is attached to; 0 when the device is gone (the link is defunct). */
uint32_t LinkIfindex(int fd, const std::string &pin)
{
	bpf_link_info info = GetLinkInfo(fd, "link " + pin);
	if (info.type != BPF_LINK_TYPE_XDP)
		return 0;
	return info.xdp.ifindex;
}

bpf_tc_hook TcHook(uint32_t ifindex, Hook hook)
{
	LIBBPF_OPTS(bpf_tc_hook, h, .ifindex = static_cast<int>(ifindex),
		    .attach_point = hook == Hook::TcEgress ? BPF_TC_EGRESS : BPF_TC_INGRESS);
	return h;
}

const char *TcDirection(Hook hook)
{
	return hook == Hook::TcEgress ? "egress" : "ingress";
}

/* 0 and *progId when our handle/priority has a filter; -ENOENT when not (or no clsact at all). */
int TcQuery(uint32_t ifindex, Hook hook, uint32_t *progId)
{
	/* An interface without clsact makes libbpf warn; that is an answer here, not a problem. */
	LibbpfLogCapture quiet;
	bpf_tc_hook h = TcHook(ifindex, hook);
	LIBBPF_OPTS(bpf_tc_opts, o, .handle = kTcHandle, .priority = kTcPriority);
	int err = bpf_tc_query(&h, &o);
	if (err == -EINVAL || err == -ENODEV)
		err = -ENOENT; /* no clsact qdisc on the device */
	if (err == 0)
		*progId = o.prog_id;
	return err;
}

bool IsOurTcProg(const DatapathState &state, uint32_t id)
{
	return id && (id == state.Prog(Hook::TcEgress).id || id == state.Prog(Hook::TcIngress).id);
}

bool DetachXdpPin(const std::string &pin)
{
	UniqueFd link = OpenXdpPin(pin);
	if (!link.valid())
		return false;
	bool live = LinkIfindex(link.get(), pin) != 0;
	if (live) {
		int err = bpf_link_detach(link.get());
		/* ENOLINK: the device went away between the two calls. */
		if (err && err != -ENOLINK && err != -EINVAL)
			CheckBpf(err, "detach XDP link " + pin);
	}
	UnlinkIfExists(pin);
	return live;
}

} // namespace

bool ValidIfname(const std::string &ifname)
{
	if (ifname.empty() || ifname.size() >= IFNAMSIZ || ifname == "." || ifname == "..")
		return false;
	for (char c : ifname) {
		if (c == '/' || c == ':' || c <= ' ' || c == 0x7f)
			return false;
	}
	return true;
}

uint32_t IfindexOf(const std::string &ifname)
{
	unsigned idx = if_nametoindex(ifname.c_str());
	if (!idx)
		throw ErrnoError(ENODEV, "interface " + ifname, "no interface of that name in this network namespace");
	return idx;
}

AttachResult AttachXdp(const DatapathState &state, const std::string &ifname, XdpMode mode)
{
	LibbpfLogCapture log;
	const ProgRef &prog = state.Prog(Hook::Xdp);
	AttachResult res;
	res.hook = Hook::Xdp;
	res.ifindex = IfindexOf(ifname);
	std::string pin = XdpPinPath(state, ifname);

	if (UniqueFd link = OpenXdpPin(pin); link.valid()) {
		if (LinkIfindex(link.get(), pin) == res.ifindex) {
			/* Ours already. Point it at the current program if an older one runs (e.g. after a fresh create). */
			bpf_link_info info = GetLinkInfo(link.get(), "link " + pin);
			if (info.prog_id != prog.id)
				CheckBpf(bpf_link_update(link.get(), prog.fd.get(), nullptr),
					 "update XDP link of " + ifname + " to the current program");
			res.adopted = true;
			res.mode = QueryXdpMode(res.ifindex, prog.id);
			std::string want = mode == XdpMode::Native  ? "native" :
					   mode == XdpMode::Generic ? "generic" :
								      "";
			if (!want.empty() && !res.mode.empty() && want != res.mode)
				res.warning = "XDP on " + ifname + " stays in " + res.mode +
					      " mode (adopted from a running agent); detach it to change to " + want;
			return res;
		}
		/* The interface was deleted or recreated since: the link is defunct, drop its pin. */
		UnlinkIfExists(pin);
	}

	auto create = [&](uint32_t flags) {
		LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = flags);
		return bpf_link_create(prog.fd.get(), static_cast<int>(res.ifindex), BPF_XDP, &opts);
	};
	int fd = -1;
	if (mode == XdpMode::Generic) {
		fd = create(XDP_FLAGS_SKB_MODE);
		res.mode = "generic";
	} else {
		fd = create(XDP_FLAGS_DRV_MODE);
		res.mode = "native";
		if (fd < 0 && !GenericWontHelp(fd)) {
			if (mode == XdpMode::Native)
				throw ErrnoError(fd, "attach XDP to " + ifname + " in native mode",
						 NativeRefusedHint(ifname, fd));
			res.warning = "native XDP is not available on " + ifname + " (" + ErrnoText(fd) + ", " +
				      ErrnoName(fd) + "): fell back to generic XDP, which is slower";
			fd = create(XDP_FLAGS_SKB_MODE);
			res.mode = "generic";
		}
	}
	if (fd < 0) {
		std::string what = "attach XDP to " + ifname + " in " + res.mode + " mode";
		if (fd == -EBUSY || fd == -EEXIST)
			throw ErrnoError(fd, what, BusyHint(state, ifname, res.ifindex));
		throw ErrnoError(fd, what, log.Text());
	}
	UniqueFd link(fd);
	/* Without the pin, closing our fd would detach the program again. */
	CheckBpf(bpf_obj_pin(link.get(), pin.c_str()), "pin XDP link " + pin);
	return res;
}

AttachResult AttachTc(const DatapathState &state, const std::string &ifname, Hook hook)
{
	LibbpfLogCapture log;
	const ProgRef &prog = state.Prog(hook);
	AttachResult res;
	res.hook = hook;
	res.ifindex = IfindexOf(ifname);
	bpf_tc_hook h = TcHook(res.ifindex, hook);
	int err = bpf_tc_hook_create(&h);
	if (err && err != -EEXIST)
		throw ErrnoError(err, "create clsact qdisc on " + ifname, log.Text());

	uint32_t current = 0;
	err = TcQuery(res.ifindex, hook, &current);
	if (err && err != -ENOENT)
		throw ErrnoError(err, std::string("query TC ") + TcDirection(hook) + " filters of " + ifname);
	if (err == 0 && current == prog.id) {
		res.adopted = true;
		return res;
	}
	/* Our handle with another program (an older flowgate's): replace it in place, no gap. */
	LIBBPF_OPTS(bpf_tc_opts, o, .prog_fd = prog.fd.get(),
		    .flags = err == 0 ? static_cast<__u32>(BPF_TC_F_REPLACE) : 0u, .handle = kTcHandle,
		    .priority = kTcPriority);
	err = bpf_tc_attach(&h, &o);
	if (err)
		throw ErrnoError(err, std::string("attach TC ") + TcDirection(hook) + " program to " + ifname,
				 err == -EEXIST ? ifname + " already has a TC filter at flowgate's handle" :
						  log.Text());
	return res;
}

bool Detach(const DatapathState &state, const std::string &ifname, Hook hook)
{
	if (hook == Hook::Xdp)
		return DetachXdpPin(XdpPinPath(state, ifname));
	unsigned ifindex = if_nametoindex(ifname.c_str());
	if (!ifindex)
		return false; /* the interface and its filters are gone */
	uint32_t current = 0;
	int err = TcQuery(ifindex, hook, &current);
	if (err == -ENOENT)
		return false;
	CheckBpf(err, std::string("query TC ") + TcDirection(hook) + " filters of " + ifname);
	bpf_tc_hook h = TcHook(ifindex, hook);
	LIBBPF_OPTS(bpf_tc_opts, o, .handle = kTcHandle, .priority = kTcPriority);
	err = bpf_tc_detach(&h, &o);
	if (err == -ENOENT)
		return false;
	CheckBpf(err, std::string("detach TC ") + TcDirection(hook) + " program from " + ifname);
	return true;
}

std::vector<Attachment> ListAttachments(const DatapathState &state)
{
	std::vector<Attachment> out;
	std::string links = JoinPath(state.pinDir, "links");
	for (const std::string &name : ListDir(links)) {
		if (name.rfind("xdp@", 0) != 0)
			continue;
		std::string pin = JoinPath(links, name);
		UniqueFd link = OpenXdpPin(pin);
		if (!link.valid())
			continue;
		uint32_t ifindex = LinkIfindex(link.get(), pin);
		if (!ifindex)
			continue; /* defunct: its interface is gone */
		Attachment a;
		a.ifname = name.substr(4);
		a.ifindex = ifindex;
		a.hook = Hook::Xdp;
		a.mode = QueryXdpMode(ifindex, state.Prog(Hook::Xdp).id);
		out.push_back(a);
	}
	struct if_nameindex *ifs = if_nameindex();
	if (!ifs)
		throw ErrnoError(errno, "list network interfaces");
	for (struct if_nameindex *i = ifs; i->if_index; i++) {
		for (Hook hook : { Hook::TcEgress, Hook::TcIngress }) {
			uint32_t id = 0;
			if (TcQuery(i->if_index, hook, &id) == 0 && IsOurTcProg(state, id)) {
				Attachment a;
				a.ifname = i->if_name;
				a.ifindex = i->if_index;
				a.hook = hook;
				out.push_back(a);
			}
		}
	}
	if_freenameindex(ifs);
	return out;
}

void DetachAll(const DatapathState &state)
{
	for (const Attachment &a : ListAttachments(state)) {
		if (a.hook != Hook::Xdp)
			Detach(state, a.ifname, a.hook);
	}
	/* Every XDP pin, live or defunct. */
	std::string links = JoinPath(state.pinDir, "links");
	for (const std::string &name : ListDir(links)) {
		if (name.rfind("xdp@", 0) == 0)
			DetachXdpPin(JoinPath(links, name));
	}
}

} // namespace fg
