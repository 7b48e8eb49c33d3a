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

/*
 * releaseFilePages(pathFragment): drops this process's mappings of the
 * pages of read-only file mappings whose path contains pathFragment
 * (madvise MADV_DONTNEED). The pages stay in the page cache: touching one
 * again is a minor fault. For a large library whose startup code runs once
 * (the embedded engine's: ~180 MB of code and constants mapped at open).
 * Skips any mapping holding a page that differs from the file. Returns the
 * bytes of the mappings released.
 */
Napi::Value ReleaseFilePages(const Napi::CallbackInfo &info);

} // namespace fg
