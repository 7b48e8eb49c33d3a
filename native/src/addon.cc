/*
 * addon.cc — module entry: the exports of NativeBinding (native/index.ts).
 */
#include "addon_data.h"
#include "attach.h"
#include "datapath.h"
#include "errors.h"
#include "flow_block.h"
#include "info.h"
#include "layout.h"
#include "libbpf_log.h"
#include "memory.h"
#include "program.h"

#include <napi.h>

namespace fg
{

namespace
{

Napi::Value Ifindex(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsString())
		ThrowTypeError(env, "ifindex(name: string)");
	std::string name = info[0].As<Napi::String>();
	return Napi::Number::New(env, Guard(env, [&] { return IfindexOf(name); }));
}

Napi::Value PossibleCpusJs(const Napi::CallbackInfo &info)
{
	return Napi::Number::New(info.Env(), Guard(info.Env(), [] { return PossibleCpus(); }));
}

Napi::Object Init(Napi::Env env, Napi::Object exports)
{
	InstallLibbpfPrint();
	auto *data = new AddonData();
	data->datapathCtor = Napi::Persistent(Datapath::DefineClass(env));
	data->programCtor = Napi::Persistent(ProgramHandle::DefineClass(env));
	env.SetInstanceData(data);

	exports.Set("open", Napi::Function::New(env, Datapath::Open, "open"));
	exports.Set("loadProgram", Napi::Function::New(env, ProgramHandle::Load, "loadProgram"));
	exports.Set("layout", Napi::Function::New(env, Layout, "layout"));
	exports.Set("constants", Napi::Function::New(env, Constants, "constants"));
	exports.Set("ifindex", Napi::Function::New(env, Ifindex, "ifindex"));
	exports.Set("possibleCpus", Napi::Function::New(env, PossibleCpusJs, "possibleCpus"));
	exports.Set("tuneMalloc", Napi::Function::New(env, TuneMalloc, "tuneMalloc"));
	exports.Set("writeFlowBlock", Napi::Function::New(env, WriteFlowBlockJs, "writeFlowBlock"));
	exports.Set("releaseFilePages", Napi::Function::New(env, ReleaseFilePages, "releaseFilePages"));
	return exports;
}

} // namespace

} // namespace fg

/* NODE_API_MODULE pastes the name into an identifier: it needs one outside any namespace. */
static Napi::Object InitFlowgate(Napi::Env env, Napi::Object exports)
{
	return fg::Init(env, exports);
}

NODE_API_MODULE(flowgate_native, InitFlowgate)
