/*
 * program.h — loadProgram(): any BPF object, loaded without pins, exposing
 * one program for test runs. The benchmarks measure their floors with it
 * (e.g. an XDP program that only returns XDP_PASS).
 */
#pragma once

#include <napi.h>

#include <bpf/libbpf.h>

namespace fg
{

class ProgramHandle : public Napi::ObjectWrap<ProgramHandle>
{
public:
	static Napi::Function DefineClass(Napi::Env env);
	/* loadProgram(objectPath, programName) */
	static Napi::Value Load(const Napi::CallbackInfo &info);

	explicit ProgramHandle(const Napi::CallbackInfo &info);
	~ProgramHandle() override;

private:
	Napi::Value TestRun(const Napi::CallbackInfo &info);
	Napi::Value Close(const Napi::CallbackInfo &info);
	void Release();

	bpf_object *obj_ = nullptr;
	int progFd_ = -1;
	uint32_t progType_ = 0;
};

} // namespace fg
