/*
 * memory.h — how the process's C heap (glibc malloc) behaves, for a
 * long-running agent whose large buffers (drain chunks, spool slices, rows
 * on their way to the store) come and go every drain interval.
 */
#pragma once

#include <napi.h>

namespace fg
{

/*
 * tuneMalloc({arenaMax?, mmapThreshold?}): mallopt(M_ARENA_MAX) and
 * mallopt(M_MMAP_THRESHOLD). Returns false where the C library refused (or
 * is not glibc). Call it early, before threads start allocating.
 */
Napi::Value TuneMalloc(const Napi::CallbackInfo &info);

} // namespace fg
