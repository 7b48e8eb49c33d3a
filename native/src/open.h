/*
 * open.h — create or adopt the pinned data path.
 *
 * Create: load datapath/build/flowgate.bpf.o with the maps sized from the
 * options, pin every named map and program, maps/config last. Adopt: when
 * maps/config exists, reopen the pins instead, so a restarted agent takes
 * over running programs and their counters without a gap. The flow maps are
 * taken from flow_slots, and their pins fixed to match (flow_slots.h).
 */
#pragma once

#include "state.h"

#include <memory>
#include <string>

namespace fg
{

struct OpenOptions {
	std::string objectPath;
	std::string bpffs;
	uint32_t maxFlows = 0;
	uint32_t maxRules = 0;
	uint32_t maxPrefixes = 0;
};

constexpr uint32_t kMinFlows = 1024;

std::unique_ptr<DatapathState> OpenDatapath(const OpenOptions &opts);

} // namespace fg
