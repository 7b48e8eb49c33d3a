#include "info.h"

#include "errors.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cstring>

namespace fg
{

namespace
{
template <typename T>
T GetInfo(int fd, const std::string &what)
{
	T info;
	memset(&info, 0, sizeof(info));
	__u32 len = sizeof(info);
	CheckBpf(bpf_obj_get_info_by_fd(fd, &info, &len), "get info of " + what);
	return info;
}
} // namespace

bpf_map_info GetMapInfo(int fd, const std::string &what)
{
	return GetInfo<bpf_map_info>(fd, what);
}

bpf_prog_info GetProgInfo(int fd, const std::string &what)
{
	return GetInfo<bpf_prog_info>(fd, what);
}

bpf_link_info GetLinkInfo(int fd, const std::string &what)
{
	return GetInfo<bpf_link_info>(fd, what);
}

bool IsPerCpuType(uint32_t type)
{
	switch (type) {
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_PERCPU_ARRAY:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH:
	case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
		return true;
	default:
		return false;
	}
}

bool IsHashType(uint32_t type)
{
	switch (type) {
	case BPF_MAP_TYPE_HASH:
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_LRU_HASH:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH:
		return true;
	default:
		return false;
	}
}

bool IsArrayType(uint32_t type)
{
	return type == BPF_MAP_TYPE_ARRAY || type == BPF_MAP_TYPE_PERCPU_ARRAY;
}

bool HasBatchOps(uint32_t type)
{
	/*
	 * Worth trying. Kernels without a batch op for a map type (LPM tries on
	 * many kernels) answer ENOTSUPP before touching anything, and callers
	 * then loop per element. Map-in-map values are fds in, ids out: never batched.
	 */
	return type != BPF_MAP_TYPE_ARRAY_OF_MAPS && type != BPF_MAP_TYPE_HASH_OF_MAPS;
}

int PossibleCpus()
{
	static int cpus = libbpf_num_possible_cpus();
	if (cpus <= 0)
		throw ErrnoError(cpus ? cpus : -EINVAL, "read /sys/devices/system/cpu/possible");
	return cpus;
}

} // namespace fg
