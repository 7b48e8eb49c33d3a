/*
 * addon_data.h — per-environment data: the constructors of the two JS
 * classes, which open() and loadProgram() instantiate from C++ (JS never
 * calls them with `new`). Per env, not static, so worker_threads work.
 */
#pragma once

#include <napi.h>

namespace fg
{

struct AddonData {
	Napi::FunctionReference datapathCtor;
	Napi::FunctionReference programCtor;
};

inline AddonData &GetAddonData(Napi::Env env)
{
	return *env.GetInstanceData<AddonData>();
}

} // namespace fg
