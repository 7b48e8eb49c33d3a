#include "config.h"

#include "errors.h"
#include "info.h"

#include <bpf/bpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mutex>

namespace fg
{

void MapConfig(DatapathState &state)
{
	const MapRef &m = state.Map("config");
	if (m.valueSize < sizeof(fg_config))
		throw ErrnoError::WithMessage(
			ESTALE, "pinned map config in " + state.pinDir + " has " + std::to_string(m.valueSize) +
					"-byte values, this flowgate needs " + std::to_string(sizeof(fg_config)) +
					": stop the old agent and run with --unpin, or remove " + state.pinDir);
	/* The kernel maps whole pages of the array's value area. */
	size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
	size_t len = RoundUp8(m.valueSize) * m.maxEntries;
	len = (len + page - 1) / page * page;
	void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, m.fd.get(), 0);
	if (p == MAP_FAILED)
		throw ErrnoError(
			errno, "mmap the config map",
			"the config map must be a BPF_F_MMAPABLE array (rebuild datapath/ and run with --unpin)");
	state.config = static_cast<uint8_t *>(p);
	state.configLen = len;
}

void CheckLayoutVersion(const DatapathState &state)
{
	uint32_t have = __atomic_load_n(reinterpret_cast<const uint32_t *>(state.config), __ATOMIC_ACQUIRE);
	if (have == FG_LAYOUT_VERSION)
		return;
	throw ErrnoError::WithMessage(ESTALE,
				      "pinned state in " + state.pinDir + " has layout v" + std::to_string(have) +
					      ", this flowgate needs v" + std::to_string(FG_LAYOUT_VERSION) +
					      ": stop the old agent and run with --unpin, or remove " + state.pinDir);
}

fg_config ReadConfig(const DatapathState &state)
{
	/* Field by field with atomic loads: each u32 is consistent, like the programs see it. */
	fg_config out;
	const uint32_t *src = reinterpret_cast<const uint32_t *>(state.config);
	uint32_t *dst = reinterpret_cast<uint32_t *>(&out);
	for (size_t i = 0; i < sizeof(fg_config) / 4; i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_ACQUIRE);
	return out;
}

void WriteConfigU32(const DatapathState &state, size_t offset, uint32_t value)
{
	uint32_t *field = reinterpret_cast<uint32_t *>(state.config + offset);
	__atomic_store_n(field, value, __ATOMIC_SEQ_CST);
}

void Synchronize(const DatapathState &state)
{
	/*
	 * The kernel waits for an RCU grace period (synchronize_rcu() in
	 * maybe_wait_bpf_programs) after every syscall update of an
	 * ARRAY_OF_MAPS entry. XDP and TC programs run inside RCU read-side
	 * sections, so rewriting slot 0 with the map it already holds is a
	 * no-op for the data path that returns only once every program run
	 * that started before it has finished.
	 */
	const MapRef &slots = state.Map("flow_slots");
	const MapRef &flowsA = state.Map("flows_a");
	uint32_t key = 0;
	uint32_t innerId = 0;
	int innerFd = flowsA.fd.get();
	UniqueFd other;
	/*
	 * Slot 0 can hold another map than flowsA: a replace (flow_slots.cc)
	 * installs its new map before the JS thread sees it. Keep whatever it
	 * holds, read and rewritten under the lock that replace takes, so
	 * synchronize() never changes the data path.
	 */
	std::lock_guard<std::mutex> hold(*state.slotsLock);
	if (bpf_map_lookup_elem(slots.fd.get(), &key, &innerId) == 0 && innerId != flowsA.id && innerId != 0) {
		other.reset(bpf_map_get_fd_by_id(innerId));
		if (other.valid())
			innerFd = other.get();
	}
	uint32_t value = static_cast<uint32_t>(innerFd);
	CheckBpf(bpf_map_update_elem(slots.fd.get(), &key, &value, BPF_ANY), "synchronize (update flow_slots[0])");
}

} // namespace fg
