/*
 * state.h — what an open datapath holds: fds of the pinned maps and
 * programs, and the config mapping. Plain C++ (no N-API) so the attach, map
 * and config code can be used from worker threads and tested alone; the JS
 * object in datapath.cc owns one of these.
 */
#pragma once

#include "fd.h"

#include <linux/bpf.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace fg
{

enum class Hook { Xdp = 0, TcEgress = 1, TcIngress = 2 };
constexpr int kHookCount = 3;

/* "xdp", "tc_egress", "tc_ingress": the names in the contract and in progs/. */
const char *HookName(Hook hook);
/* The program implementing the hook in flowgate.bpf.o. */
const char *HookProgramName(Hook hook);
bool ParseHook(const std::string &name, Hook *hook);

struct MapRef {
	std::string name;
	UniqueFd fd;
	uint32_t type = 0;
	uint32_t keySize = 0;
	uint32_t valueSize = 0;
	uint32_t maxEntries = 0;
	uint32_t id = 0;
	bool perCpu = false;

	/* Take the map's fd, its id and its shape from the kernel's info on it. */
	void Set(UniqueFd mapFd, const bpf_map_info &info);
};

struct ProgRef {
	UniqueFd fd;
	uint32_t id = 0;
	uint32_t type = 0;
};

struct DatapathState {
	std::string pinDir;
	bool adopted = false;
	std::map<std::string, MapRef> maps;
	ProgRef progs[kHookCount];
	/* The BPF_F_MMAPABLE config array, shared with the programs. */
	uint8_t *config = nullptr;
	size_t configLen = 0;
	/*
	 * Held around each syscall update of flow_slots: synchronize() (JS
	 * thread) reads and rewrites entry 0, and a flow map replace (a worker,
	 * which keeps its own reference) must not land in between.
	 */
	std::shared_ptr<std::mutex> slotsLock = std::make_shared<std::mutex>();

	DatapathState() = default;
	DatapathState(const DatapathState &) = delete;
	DatapathState &operator=(const DatapathState &) = delete;
	~DatapathState();

	/* Throws ErrnoError(ENOENT) naming the known maps. */
	const MapRef &Map(const std::string &name) const;
	const ProgRef &Prog(Hook hook) const
	{
		return progs[static_cast<int>(hook)];
	}
};

} // namespace fg
