/*
 * config.h — the agent → program switches (struct fg_config) live in a
 * BPF_F_MMAPABLE array that the addon maps into its own memory. A flip is
 * one aligned 32-bit atomic store, followed by synchronize() so that no
 * program run that could have seen the old value is still in flight.
 */
#pragma once

#include "state.h"

#include <flowgate.h>

namespace fg
{

/* mmap the config map's value area (read/write, shared with the kernel). */
void MapConfig(DatapathState &state);
/* Throw (ESTALE) unless the pinned maps were made by this layout version. */
void CheckLayoutVersion(const DatapathState &state);
fg_config ReadConfig(const DatapathState &state);
/* offset must be validated by the caller: 4-aligned and < sizeof(fg_config). */
void WriteConfigU32(const DatapathState &state, size_t offset, uint32_t value);
/* Returns after an RCU grace period (see config.cc for how). */
void Synchronize(const DatapathState &state);

} // namespace fg
