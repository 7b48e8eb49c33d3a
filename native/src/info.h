/*
 * info.h — BPF_OBJ_GET_INFO_BY_FD wrappers for maps, programs and links,
 * and helpers that describe map types (per-CPU stride, batch support).
 */
#pragma once

#include <linux/bpf.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace fg
{

bpf_map_info GetMapInfo(int fd, const std::string &what);
bpf_prog_info GetProgInfo(int fd, const std::string &what);
bpf_link_info GetLinkInfo(int fd, const std::string &what);

/* Per-CPU maps return one value per possible CPU, each rounded up to 8 bytes. */
bool IsPerCpuType(uint32_t type);
/* Hash-family maps, the only ones with BPF_MAP_LOOKUP_AND_DELETE_BATCH. */
bool IsHashType(uint32_t type);
bool IsArrayType(uint32_t type);
/* Maps worth a batch syscall (callers fall back to per-element ops on ENOTSUPP). */
bool HasBatchOps(uint32_t type);

inline size_t RoundUp8(size_t n)
{
	return (n + 7) & ~static_cast<size_t>(7);
}

/* libbpf_num_possible_cpus(), cached; throws if the kernel can't tell. */
int PossibleCpus();

} // namespace fg
