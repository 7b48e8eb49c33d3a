#include "memory.h"

#include "errors.h"

#include <cmath>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fg
{

namespace
{

/* An integer option in [min, max], or -1 when absent. */
int IntOption(Napi::Env env, Napi::Object opts, const char *name, double min, double max)
{
	Napi::Value v = opts.Get(name);
	if (v.IsUndefined())
		return -1;
	double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
	if (!std::isfinite(d) || std::floor(d) != d || d < min || d > max)
		ThrowTypeError(env, std::string("tuneMalloc(): ") + name + " must be an integer from " +
					    std::to_string(static_cast<int64_t>(min)) + " to " +
					    std::to_string(static_cast<int64_t>(max)));
	return static_cast<int>(d);
}

} // namespace

Napi::Value TuneMalloc(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsObject())
		ThrowTypeError(env, "tuneMalloc(options: {arenaMax?, mmapThreshold?})");
	Napi::Object opts = info[0].As<Napi::Object>();
	int arenaMax = IntOption(env, opts, "arenaMax", 1, 1024);
	int mmapThreshold = IntOption(env, opts, "mmapThreshold", 4096, 32 << 20);
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
