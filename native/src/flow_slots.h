/*
 * flow_slots.h — the two flow maps behind flow_slots. Releasing a retired
 * slot may swap its map for a new empty one instead of deleting every entry
 * (for a well-filled slot, creating a map costs a fraction of the deletes),
 * so which map is "flows_a" changes while the programs run. flow_slots says
 * which maps the programs write; the pins maps/flows_a|flows_b and the fds in
 * DatapathState follow it.
 */
#pragma once

#include "state.h"

#include <napi.h>

#include <functional>

namespace fg
{

constexpr uint32_t kFlowSlots = 2;
/* The map each flow_slots entry starts with (datapath/maps.h). */
extern const char *const kFlowMapNames[kFlowSlots];

/*
 * On adopt: point state's flows_a/flows_b (and their pins) at the maps
 * flow_slots holds. A replace that died after the flow_slots update left the
 * pin naming the retired map; one that died before it left a temporary pin
 * of a map nobody uses, which goes.
 */
void AdoptFlowSlots(DatapathState &state);

/* Runs on the JS thread with the new map once flow_slots holds it (even if the re-pin then failed). */
using FlowMapInstalled = std::function<void(UniqueFd fd, uint32_t id)>;

/*
 * Promise<void>: put a new empty map, shaped like the current one (BTF
 * included when the kernel still has it), into flow_slots[slot], re-pin it
 * over maps/flows_a|flows_b and hand it to `installed`. Only for the idle
 * slot: the active one is refused (EBUSY). Until the flow_slots update
 * nothing changes if a step fails. `owner` (the JS datapath) is kept alive
 * until the Promise settles.
 */
Napi::Promise ReplaceFlowMap(Napi::Env env, const DatapathState &state, uint32_t slot, FlowMapInstalled installed,
			     Napi::Object owner);

/* Make `slot`'s MapRef name the map `fd` (an fd of flow_slots[slot]'s new map). */
void InstallFlowMap(DatapathState &state, uint32_t slot, UniqueFd fd, uint32_t id);

} // namespace fg
