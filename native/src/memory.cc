#include "memory.h"

#include "errors.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fg
{

namespace
{

/* An optional tuneMalloc() option in [min, max], or -1 when absent. */
int MallocOption(Napi::Env env, Napi::Object opts, const char *name, int min, int max)
{
	if (opts.Get(name).IsUndefined())
		return -1;
	return static_cast<int>(IntegerOption(env, opts, "tuneMalloc", name, min, max));
}

/* One mapping of /proc/self/smaps: its range, whether it can be written, its file, its anonymous (COW) bytes. */
struct Mapping {
	uintptr_t start = 0, end = 0;
	bool writable = false;
	std::string path;
	uint64_t anonKb = 0;
};

std::vector<Mapping> ReadMappings()
{
	std::vector<Mapping> out;
	FILE *f = fopen("/proc/self/smaps", "re");
	if (!f)
		return out;
	char line[4096];
	while (fgets(line, sizeof line, f)) {
		unsigned long start, end;
		char perms[8];
		int pathAt = 0;
		if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &start, &end, perms, &pathAt) == 3) {
			Mapping m;
			m.start = start;
			m.end = end;
			m.writable = strchr(perms, 'w') != nullptr;
			m.path = pathAt > 0 ? std::string(line + pathAt) : std::string();
			while (!m.path.empty() && (m.path.back() == '\n' || m.path.back() == ' '))
				m.path.pop_back();
			out.push_back(m);
			continue;
		}
		unsigned long kb;
		if (!out.empty() && sscanf(line, "Anonymous: %lu kB", &kb) == 1)
			out.back().anonKb = kb;
	}
	fclose(f);
	return out;
}

} // namespace

Napi::Value ReleaseFilePages(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsString() || info[0].As<Napi::String>().Utf8Value().empty())
		ThrowTypeError(env, "releaseFilePages(pathFragment: non-empty string)");
	std::string fragment = info[0].As<Napi::String>().Utf8Value();
	uint64_t released = 0;
	for (const Mapping &m : ReadMappings()) {
		// Only read-only file mappings whose every page is still the file's:
		// a page written since it was mapped (relocations in RELRO, before
		// it was made read-only) exists nowhere else and would be lost.
		if (m.writable || m.anonKb != 0 || m.path.find(fragment) == std::string::npos)
			continue;
		if (madvise(reinterpret_cast<void *>(m.start), m.end - m.start, MADV_DONTNEED) == 0)
			released += m.end - m.start;
	}
	return Napi::Number::New(env, static_cast<double>(released));
}

Napi::Value TuneMalloc(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsObject())
		ThrowTypeError(env, "tuneMalloc(options: {arenaMax?, mmapThreshold?})");
	Napi::Object opts = info[0].As<Napi::Object>();
	int arenaMax = MallocOption(env, opts, "arenaMax", 1, 1024);
	int mmapThreshold = MallocOption(env, opts, "mmapThreshold", 4096, 32 << 20);
	bool ok = true;
#if defined(__GLIBC__)
	if (arenaMax > 0)
		ok = mallopt(M_ARENA_MAX, arenaMax) == 1 && ok;
	if (mmapThreshold > 0)
		ok = mallopt(M_MMAP_THRESHOLD, mmapThreshold) == 1 && ok;
#else
	ok = arenaMax < 0 && mmapThreshold < 0;
#endif
	return Napi::Boolean::New(env, ok);
}

} // namespace fg
