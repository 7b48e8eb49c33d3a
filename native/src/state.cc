#include "state.h"

#include "errors.h"
#include "info.h"

#include <sys/mman.h>

namespace fg
{

const char *HookName(Hook hook)
{
	switch (hook) {
	case Hook::Xdp:
		return "xdp";
	case Hook::TcEgress:
		return "tc_egress";
	case Hook::TcIngress:
		return "tc_ingress";
	}
	return "?";
}

const char *HookProgramName(Hook hook)
{
	switch (hook) {
	case Hook::Xdp:
		return "flowgate_xdp";
	case Hook::TcEgress:
		return "flowgate_tc_egress";
	case Hook::TcIngress:
		return "flowgate_tc_ingress";
	}
	return "?";
}

void MapRef::Set(UniqueFd mapFd, const bpf_map_info &info)
{
	fd = std::move(mapFd);
	id = info.id;
	type = info.type;
	keySize = info.key_size;
	valueSize = info.value_size;
	maxEntries = info.max_entries;
	perCpu = IsPerCpuType(info.type);
}

bool ParseHook(const std::string &name, Hook *hook)
{
	for (int i = 0; i < kHookCount; i++) {
		Hook h = static_cast<Hook>(i);
		if (name == HookName(h)) {
			*hook = h;
			return true;
		}
	}
	return false;
}

DatapathState::~DatapathState()
{
	if (config)
		munmap(config, configLen);
}

const MapRef &DatapathState::Map(const std::string &name) const
{
	auto it = maps.find(name);
	if (it != maps.end())
		return it->second;
	std::string known;
	for (const auto &m : maps)
		known += (known.empty() ? "" : ", ") + m.first;
	throw ErrnoError(ENOENT, "unknown map '" + name + "'", "flowgate's maps are: " + known);
}

} // namespace fg
