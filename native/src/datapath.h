/*
 * datapath.h — the NativeDatapath JS object (native/index.ts): argument
 * checking and result shaping around the state in state.h. The work itself
 * is in open.cc, config.cc, maps.cc, flow_slots.cc, attach.cc and testrun.cc.
 */
#pragma once

#include "state.h"

#include <napi.h>

#include <memory>

namespace fg
{

class Datapath : public Napi::ObjectWrap<Datapath>
{
public:
	static Napi::Function DefineClass(Napi::Env env);
	/* open(opts): create or adopt the pinned data path. */
	static Napi::Value Open(const Napi::CallbackInfo &info);

	explicit Datapath(const Napi::CallbackInfo &info);

private:
	/* The open state; throws EBADF after close(). */
	DatapathState &State(Napi::Env env);

	Napi::Value GetAdopted(const Napi::CallbackInfo &info);
	Napi::Value GetPinDir(const Napi::CallbackInfo &info);

	Napi::Value ReadConfig(const Napi::CallbackInfo &info);
	Napi::Value WriteConfigU32(const Napi::CallbackInfo &info);
	Napi::Value Synchronize(const Napi::CallbackInfo &info);

	Napi::Value MapInfo(const Napi::CallbackInfo &info);
	Napi::Value LookupAndDeleteAll(const Napi::CallbackInfo &info);
	Napi::Value DumpAll(const Napi::CallbackInfo &info);
	Napi::Value DumpChunk(const Napi::CallbackInfo &info);
	Napi::Value UpdateBatch(const Napi::CallbackInfo &info);
	Napi::Value DeleteBatch(const Napi::CallbackInfo &info);
	Napi::Value Clear(const Napi::CallbackInfo &info);
	Napi::Value Lookup(const Napi::CallbackInfo &info);
	Napi::Value Update(const Napi::CallbackInfo &info);
	Napi::Value DrainBaseline(const Napi::CallbackInfo &info);
	Napi::Value ReplaceFlowMap(const Napi::CallbackInfo &info);

	Napi::Value AttachXdp(const Napi::CallbackInfo &info);
	Napi::Value AttachTc(const Napi::CallbackInfo &info);
	Napi::Value Detach(const Napi::CallbackInfo &info);
	Napi::Value Attachments(const Napi::CallbackInfo &info);

	Napi::Value TestRun(const Napi::CallbackInfo &info);
	Napi::Value UnpinAll(const Napi::CallbackInfo &info);
	Napi::Value Close(const Napi::CallbackInfo &info);

	std::unique_ptr<DatapathState> state_;
	/* Kept after close(): the readonly properties stay readable. */
	bool adopted_ = false;
	std::string pinDir_;
};

} // namespace fg
