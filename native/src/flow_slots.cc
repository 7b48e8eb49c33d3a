#include "flow_slots.h"

#include "config.h"
#include "errors.h"
#include "info.h"
#include "pins.h"
#include "promise_worker.h"

#include <bpf/bpf.h>
#include <fcntl.h>

#include <cstdio>
#include <mutex>

namespace fg
{

const char *const kFlowMapNames[kFlowSlots] = { "flows_a", "flows_b" };

namespace
{

std::string PinOf(const std::string &root, uint32_t slot)
{
	return JoinPath(root, std::string("maps/") + kFlowMapNames[slot]);
}

/* Where a new map is pinned before rename(2) moves it over the real pin. bpffs refuses dots in names. */
std::string TempPinOf(const std::string &pin)
{
	return pin + "_new";
}

/* Pin fd at pin atomically: pinned under a temporary name, then renamed over whatever pin is there. */
void Repin(int fd, const std::string &pin, const std::string &what)
{
	std::string tmp = TempPinOf(pin);
	UnlinkIfExists(tmp);
	CheckBpf(bpf_obj_pin(fd, tmp.c_str()), "pin " + what + " at " + tmp);
	if (rename(tmp.c_str(), pin.c_str()) != 0) {
		int err = errno;
		unlink(tmp.c_str());
		throw ErrnoError(err, "re-pin " + what + ": rename " + tmp + " over " + pin);
	}
}

uint32_t SlotMapId(int slotsFd, uint32_t slot)
{
	uint32_t id = 0;
	CheckBpf(bpf_map_lookup_elem(slotsFd, &slot, &id), "read flow_slots[" + std::to_string(slot) + "]");
	return id;
}

UniqueFd Dup(const UniqueFd &fd, const std::string &what)
{
	UniqueFd out(fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
	if (!out.valid())
		throw ErrnoError(errno, "dup fd of " + what);
	return out;
}

/* A new empty map shaped like `old`, with its BTF if that still loads (bpftool map dump stays readable). */
UniqueFd CreateLike(const bpf_map_info &old, const std::string &what)
{
	UniqueFd btf;
	if (old.btf_id) {
		int fd = bpf_btf_get_fd_by_id(old.btf_id);
		if (fd >= 0)
			btf.reset(fd);
	}
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = old.map_flags);
	auto create = [&] {
		return bpf_map_create(static_cast<bpf_map_type>(old.type), old.name, old.key_size, old.value_size,
				      old.max_entries, &opts);
	};
	int fd = -EBADF;
	if (btf.valid()) {
		opts.btf_fd = static_cast<__u32>(btf.get());
		opts.btf_key_type_id = old.btf_key_type_id;
		opts.btf_value_type_id = old.btf_value_type_id;
		fd = create();
		opts.btf_fd = opts.btf_key_type_id = opts.btf_value_type_id = 0;
	}
	if (fd < 0)
		fd = create();
	CheckBpf(fd, "create a new map for " + what + " (" + std::to_string(old.max_entries) + " entries)");
	return UniqueFd(fd);
}

class ReplaceFlowMapWorker : public PromiseWorker
{
public:
	ReplaceFlowMapWorker(Napi::Env env, const DatapathState &state, uint32_t slot, FlowMapInstalled installed,
			     Napi::Object owner)
	    : PromiseWorker(env), owner_(Napi::Persistent(owner)), installed_(std::move(installed)), slot_(slot),
	      what_(std::string("map ") + kFlowMapNames[slot]), pin_(PinOf(state.pinDir, slot)), lock_(state.slotsLock)
	{
		/* Dups, as in maps.cc: close() may run while this is in a syscall. */
		old_ = Dup(state.Map(kFlowMapNames[slot]).fd, what_);
		slots_ = Dup(state.Map("flow_slots").fd, "map flow_slots");
	}

private:
	void Run() override
	{
		/* The slow part (the kernel allocates, zeroes and links every entry) comes before any visible change. */
		UniqueFd fresh = CreateLike(GetMapInfo(old_.get(), what_), what_);
		uint32_t id = GetMapInfo(fresh.get(), "the new " + what_).id;
		std::string tmp = TempPinOf(pin_);
		UnlinkIfExists(tmp);
		CheckBpf(bpf_obj_pin(fresh.get(), tmp.c_str()), "pin the new " + what_ + " at " + tmp);
		{
			/* With synchronize(), which rewrites flow_slots[0]: it must not put back the map this replaces. */
			std::lock_guard<std::mutex> hold(*lock_);
			uint32_t value = static_cast<uint32_t>(fresh.get());
			int err = bpf_map_update_elem(slots_.get(), &slot_, &value, BPF_ANY);
			if (err) {
				unlink(tmp.c_str());
				throw ErrnoError(err, "put the new " + what_ + " into flow_slots[" +
							      std::to_string(slot_) + "]");
			}
		}
		/* The programs use the new map now: whatever follows, the JS state must name it. */
		fresh_ = std::move(fresh);
		id_ = id;
		if (rename(tmp.c_str(), pin_.c_str()) != 0) {
			int err = errno;
			unlink(tmp.c_str());
			throw ErrnoError(err, "re-pin the new " + what_ + ": rename " + tmp + " over " + pin_,
					 "flow_slots holds the new map, the pin still names the old one: the next open "
					 "re-pins it");
		}
	}
	std::string OomWhat() const override
	{
		return "replace " + what_;
	}
	/* Failed or not: once flow_slots names the new map, the JS state must too. */
	void Settle() override
	{
		if (fresh_.valid())
			installed_(std::move(fresh_), id_);
	}

	Napi::ObjectReference owner_;
	FlowMapInstalled installed_;
	uint32_t slot_;
	std::string what_;
	std::string pin_;
	std::shared_ptr<std::mutex> lock_;
	UniqueFd old_, slots_, fresh_;
	uint32_t id_ = 0;
};

} // namespace

void AdoptFlowSlots(DatapathState &state)
{
	int slotsFd = state.Map("flow_slots").fd.get();
	for (uint32_t slot = 0; slot < kFlowSlots; slot++) {
		std::string pin = PinOf(state.pinDir, slot);
		/* Left by a replace that died before its rename: a map nobody uses, or the one flow_slots holds. */
		UnlinkIfExists(TempPinOf(pin));
		uint32_t id = SlotMapId(slotsFd, slot);
		MapRef &ref = state.maps.at(kFlowMapNames[slot]);
		if (id == ref.id)
			continue;
		std::string what = "map " + std::to_string(id) + " of flow_slots[" + std::to_string(slot) + "]";
		UniqueFd fd(bpf_map_get_fd_by_id(id));
		if (!fd.valid())
			throw ErrnoError(errno, "open " + what);
		bpf_map_info info = GetMapInfo(fd.get(), what);
		Repin(fd.get(), pin, what);
		ref.Set(std::move(fd), info);
	}
}

Napi::Promise ReplaceFlowMap(Napi::Env env, const DatapathState &state, uint32_t slot, FlowMapInstalled installed,
			     Napi::Object owner)
{
	if (slot >= kFlowSlots)
		ThrowTypeError(env, "replaceFlowMap: slot must be 0 or 1, got " + std::to_string(slot));
	if ((ReadConfig(state).flow_slot & 1) == slot)
		throw ErrnoError::WithMessage(EBUSY, "replaceFlowMap: the programs write flow slot " +
							     std::to_string(slot) +
							     "; only the idle slot can be replaced");
	return (new ReplaceFlowMapWorker(env, state, slot, std::move(installed), owner))->Start();
}

void InstallFlowMap(DatapathState &state, uint32_t slot, UniqueFd fd, uint32_t id)
{
	/* The shape is the old map's: only the fd and the id change. Closing the old fd frees the old map. */
	MapRef &ref = state.maps.at(kFlowMapNames[slot]);
	ref.fd = std::move(fd);
	ref.id = id;
}

} // namespace fg
