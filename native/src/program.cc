#include "program.h"

#include "addon_data.h"
#include "errors.h"
#include "libbpf_log.h"
#include "testrun.h"

#include <memory>

namespace fg
{

namespace
{

struct Loaded {
	bpf_object *obj;
	bpf_program *prog;
};

Loaded LoadObject(const std::string &path, const std::string &progName)
{
	LibbpfLogCapture log;
	bpf_object *obj = bpf_object__open_file(path.c_str(), nullptr);
	if (!obj) {
		int err = errno;
		throw ErrnoError(err, "open BPF object " + path,
				 err == ENOENT ? "build it first: npm run build:bpf" : log.Text());
	}
	std::unique_ptr<bpf_object, void (*)(bpf_object *)> guard(obj, bpf_object__close);
	bpf_program *found = nullptr;
	std::string names;
	bpf_program *p;
	bpf_object__for_each_program(p, obj) {
		std::string name = bpf_program__name(p);
		names += (names.empty() ? "" : ", ") + name;
		if (name == progName)
			found = p;
	}
	if (!found)
		throw ErrnoError::WithMessage(ENOENT, "BPF object " + path + " has no program '" + progName +
							      "' (it has: " + names + ")");
	/* Load only the program asked for: a sibling the kernel rejects must not fail this one. */
	bpf_object__for_each_program(p, obj) {
		bpf_program__set_autoload(p, p == found);
	}
	int err = bpf_object__load(obj);
	if (err) {
		std::string tail = log.Text();
		throw ErrnoError(err, "load program " + progName + " from " + path, LoadFailureHint(err, tail));
	}
	guard.release();
	return { obj, found };
}

} // namespace

Napi::Function ProgramHandle::DefineClass(Napi::Env env)
{
	return Napi::ObjectWrap<ProgramHandle>::DefineClass(env, "ProgramHandle",
							    {
								    InstanceMethod<&ProgramHandle::TestRun>("testRun"),
								    InstanceMethod<&ProgramHandle::Close>("close"),
							    });
}

Napi::Value ProgramHandle::Load(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
		ThrowTypeError(env, "loadProgram(objectPath: string, programName: string)");
	std::string path = info[0].As<Napi::String>();
	std::string name = info[1].As<Napi::String>();
	Loaded loaded = Guard(env, [&] { return LoadObject(path, name); });
	Napi::External<Loaded> ext = Napi::External<Loaded>::New(env, &loaded);
	return GetAddonData(env).programCtor.New({ ext });
}

ProgramHandle::ProgramHandle(const Napi::CallbackInfo &info) : Napi::ObjectWrap<ProgramHandle>(info)
{
	if (info.Length() < 1 || !info[0].IsExternal())
		ThrowTypeError(info.Env(), "ProgramHandle is created by loadProgram(), not with new");
	Loaded *loaded = info[0].As<Napi::External<Loaded>>().Data();
	obj_ = loaded->obj;
	progFd_ = bpf_program__fd(loaded->prog);
	progType_ = bpf_program__type(loaded->prog);
}

ProgramHandle::~ProgramHandle()
{
	Release();
}

void ProgramHandle::Release()
{
	if (obj_)
		bpf_object__close(obj_);
	obj_ = nullptr;
	progFd_ = -1;
}

Napi::Value ProgramHandle::TestRun(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (!obj_)
		throw ErrnoError::WithMessage(EBADF, "program handle is closed").ToJs(env);
	if (info.Length() < 1 || !info[0].IsBuffer())
		ThrowTypeError(env, "testRun(frame: Buffer, opts?)");
	TestRunOptions opts = ParseTestRunOptions(env, info[1]);
	return RunTest(env, progFd_, progType_, info[0].As<Napi::Buffer<uint8_t>>(), opts);
}

Napi::Value ProgramHandle::Close(const Napi::CallbackInfo &info)
{
	Release();
	return info.Env().Undefined();
}

} // namespace fg
