#include "datapath.h"

#include "addon_data.h"
#include "attach.h"
#include "config.h"
#include "errors.h"
#include "flow_slots.h"
#include "maps.h"
#include "open.h"
#include "pins.h"
#include "testrun.h"

#include <flowgate.h>

#include <cmath>

namespace fg
{

namespace
{

std::string StringArg(const Napi::CallbackInfo &info, size_t i, const char *what)
{
	if (info.Length() <= i || !info[i].IsString())
		ThrowTypeError(info.Env(), std::string(what) + " must be a string");
	return info[i].As<Napi::String>();
}

Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo &info, size_t i, const char *what)
{
	if (info.Length() <= i || !info[i].IsBuffer())
		ThrowTypeError(info.Env(), std::string(what) + " must be a Buffer");
	return info[i].As<Napi::Buffer<uint8_t>>();
}

std::string StringOption(Napi::Env env, Napi::Object opts, const char *name)
{
	Napi::Value v = opts.Get(name);
	if (!v.IsString() || v.As<Napi::String>().Utf8Value().empty())
		ThrowTypeError(env, std::string("open(): ") + name + " must be a non-empty string");
	return v.As<Napi::String>();
}

std::string IfnameArg(const Napi::CallbackInfo &info, size_t i)
{
	std::string ifname = StringArg(info, i, "ifname");
	if (!ValidIfname(ifname))
		ThrowTypeError(info.Env(), "'" + ifname + "' is not a valid interface name");
	return ifname;
}

Napi::Object AttachResultToJs(Napi::Env env, const AttachResult &r)
{
	Napi::Object o = Napi::Object::New(env);
	o.Set("ifindex", Napi::Number::New(env, r.ifindex));
	o.Set("hook", Napi::String::New(env, HookName(r.hook)));
	if (!r.mode.empty())
		o.Set("mode", Napi::String::New(env, r.mode));
	o.Set("adopted", Napi::Boolean::New(env, r.adopted));
	if (!r.warning.empty())
		o.Set("warning", Napi::String::New(env, r.warning));
	return o;
}

} // namespace

Napi::Function Datapath::DefineClass(Napi::Env env)
{
	return Napi::ObjectWrap<Datapath>::DefineClass(
		env, "NativeDatapath",
		{
			InstanceAccessor<&Datapath::GetAdopted>("adopted"),
			InstanceAccessor<&Datapath::GetPinDir>("pinDir"),
			InstanceMethod<&Datapath::ReadConfig>("readConfig"),
			InstanceMethod<&Datapath::WriteConfigU32>("writeConfigU32"),
			InstanceMethod<&Datapath::Synchronize>("synchronize"),
			InstanceMethod<&Datapath::MapInfo>("mapInfo"),
			InstanceMethod<&Datapath::LookupAndDeleteAll>("lookupAndDeleteAll"),
			InstanceMethod<&Datapath::DumpAll>("dumpAll"),
			InstanceMethod<&Datapath::DumpChunk>("dumpChunk"),
			InstanceMethod<&Datapath::UpdateBatch>("updateBatch"),
			InstanceMethod<&Datapath::DeleteBatch>("deleteBatch"),
			InstanceMethod<&Datapath::Clear>("clear"),
			InstanceMethod<&Datapath::Lookup>("lookup"),
			InstanceMethod<&Datapath::Update>("update"),
			InstanceMethod<&Datapath::DrainBaseline>("drainBaseline"),
			InstanceMethod<&Datapath::ReplaceFlowMap>("replaceFlowMap"),
			InstanceMethod<&Datapath::AttachXdp>("attachXdp"),
			InstanceMethod<&Datapath::AttachTc>("attachTc"),
			InstanceMethod<&Datapath::Detach>("detach"),
			InstanceMethod<&Datapath::Attachments>("attachments"),
			InstanceMethod<&Datapath::TestRun>("testRun"),
			InstanceMethod<&Datapath::UnpinAll>("unpinAll"),
			InstanceMethod<&Datapath::Close>("close"),
		});
}

Napi::Value Datapath::Open(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsObject())
		ThrowTypeError(env, "open(opts): opts must be an object");
	Napi::Object o = info[0].As<Napi::Object>();
	OpenOptions opts;
	opts.objectPath = StringOption(env, o, "objectPath");
	opts.bpffs = StringOption(env, o, "bpffs");
	opts.maxFlows = static_cast<uint32_t>(IntegerOption(env, o, "open", "maxFlows", kMinFlows, 0xffffffffu));
	opts.maxRules = static_cast<uint32_t>(IntegerOption(env, o, "open", "maxRules", 1, 0xffffffffu));
	opts.maxPrefixes = static_cast<uint32_t>(IntegerOption(env, o, "open", "maxPrefixes", 1, 0xffffffffu));
	std::unique_ptr<DatapathState> state = Guard(env, [&] { return OpenDatapath(opts); });
	/* The constructor takes ownership of the state through the External. */
	Napi::External<DatapathState> ext = Napi::External<DatapathState>::New(env, state.release());
	return GetAddonData(env).datapathCtor.New({ ext });
}

Datapath::Datapath(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Datapath>(info)
{
	if (info.Length() < 1 || !info[0].IsExternal())
		ThrowTypeError(info.Env(), "NativeDatapath is created by open(), not with new");
	state_.reset(info[0].As<Napi::External<DatapathState>>().Data());
	adopted_ = state_->adopted;
	pinDir_ = state_->pinDir;
}

DatapathState &Datapath::State(Napi::Env env)
{
	if (!state_)
		throw ErrnoError::WithMessage(EBADF, "flowgate datapath " + pinDir_ + " is closed").ToJs(env);
	return *state_;
}

Napi::Value Datapath::GetAdopted(const Napi::CallbackInfo &info)
{
	return Napi::Boolean::New(info.Env(), adopted_);
}

Napi::Value Datapath::GetPinDir(const Napi::CallbackInfo &info)
{
	return Napi::String::New(info.Env(), pinDir_);
}

Napi::Value Datapath::ReadConfig(const Napi::CallbackInfo &info)
{
	fg_config cfg = fg::ReadConfig(State(info.Env()));
	return Napi::Buffer<uint8_t>::Copy(info.Env(), reinterpret_cast<const uint8_t *>(&cfg), sizeof(cfg));
}

Napi::Value Datapath::WriteConfigU32(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	DatapathState &s = State(env);
	if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber())
		ThrowTypeError(env, "writeConfigU32(offset: number, value: number)");
	double off = info[0].As<Napi::Number>().DoubleValue();
	double val = info[1].As<Napi::Number>().DoubleValue();
	if (!std::isfinite(off) || std::floor(off) != off || off < 0 || off >= sizeof(fg_config) ||
	    static_cast<size_t>(off) % 4 != 0)
		ThrowRangeError(env, "writeConfigU32: offset must be a multiple of 4 below " +
					     std::to_string(sizeof(fg_config)));
	if (!std::isfinite(val) || std::floor(val) != val || val < 0 || val > 4294967295.0)
		ThrowRangeError(env, "writeConfigU32: value must be an integer from 0 to 4294967295");
	fg::WriteConfigU32(s, static_cast<size_t>(off), static_cast<uint32_t>(val));
	return env.Undefined();
}

Napi::Value Datapath::Synchronize(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	DatapathState &s = State(env);
	Guard(env, [&] { fg::Synchronize(s); });
	return env.Undefined();
}

Napi::Value Datapath::MapInfo(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	DatapathState &s = State(env);
	std::string name = StringArg(info, 0, "map name");
	const MapRef &m = Guard(env, [&]() -> const MapRef & { return s.Map(name); });
	Napi::Object o = Napi::Object::New(env);
	o.Set("type", Napi::Number::New(env, m.type));
	o.Set("keySize", Napi::Number::New(env, m.keySize));
	o.Set("valueSize", Napi::Number::New(env, m.valueSize));
	o.Set("maxEntries", Napi::Number::New(env, m.maxEntries));
	o.Set("id", Napi::Number::New(env, m.id));
	o.Set("perCpu", Napi::Boolean::New(env, m.perCpu));
	return o;
}

/* Each map method: look the map up by name (ENOENT naming the known ones), then delegate to maps.cc. */
#define FG_MAP_ARG(env, s, info) Guard(env, [&]() -> const MapRef & { return s.Map(StringArg(info, 0, "map name")); })

Napi::Value Datapath::LookupAndDeleteAll(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	return Async(env, [&]() -> Napi::Value {
		DatapathState &s = State(env);
		const MapRef &m = FG_MAP_ARG(env, s, info);
		return fg::LookupAndDeleteAll(env, m);
	});
}

Napi::Value Datapath::DumpAll(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	return Async(env, [&]() -> Napi::Value {
		DatapathState &s = State(env);
		const MapRef &m = FG_MAP_ARG(env, s, info);
		return fg::DumpAll(env, m);
	});
}

Napi::Value Datapath::DumpChunk(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	return Async(env, [&]() -> Napi::Value {
		DatapathState &s = State(env);
		const MapRef &m = FG_MAP_ARG(env, s, info);
		Napi::Buffer<uint8_t> out = BufferArg(info, 1, "out");
		return fg::DumpChunk(env, m, out, info.Length() > 2 ? info[2] : env.Null());
	});
}

Napi::Value Datapath::UpdateBatch(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	return Async(env, [&]() -> Napi::Value {
		DatapathState &s = State(env);
		const MapRef &m = FG_MAP_ARG(env, s, info);
		Napi::Buffer<uint8_t> keys = BufferArg(info, 1, "keys");
		Napi::Buffer<uint8_t> values = BufferArg(info, 2, "values");
		return fg::UpdateBatch(env, m, keys, values);
	});
}

Napi::Value Datapath::DeleteBatch(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	return Async(env, [&]() -> Napi::Value {
		DatapathState &s = State(env);
		const MapRef &m = FG_MAP_ARG(env, s, info);
		Napi::Buffer<uint8_t> keys = BufferArg(info, 1, "keys");
		return fg::DeleteBatch(env, m, keys);
	});
}

Napi::Value Datapath::Clear(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	return Async(env, [&]() -> Napi::Value {
		DatapathState &s = State(env);
		const MapRef &m = FG_MAP_ARG(env, s, info);
		return fg::ClearMap(env, m);
	});
}

Napi::Value Datapath::Lookup(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	DatapathState &s = State(env);
	const MapRef &m = FG_MAP_ARG(env, s, info);
	Napi::Buffer<uint8_t> key = BufferArg(info, 1, "key");
	return Guard(env, [&] { return fg::LookupElem(env, m, key); });
}

Napi::Value Datapath::Update(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	DatapathState &s = State(env);
	const MapRef &m = FG_MAP_ARG(env, s, info);
	Napi::Buffer<uint8_t> key = BufferArg(info, 1, "key");
	Napi::Buffer<uint8_t> value = BufferArg(info, 2, "value");
	Guard(env, [&] { fg::UpdateElem(env, m, key, value); });
	return env.Undefined();
}

Napi::Value Datapath::DrainBaseline(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	return Async(env, [&]() -> Napi::Value {
		DatapathState &s = State(env);
		const MapRef &m = FG_MAP_ARG(env, s, info);
		return fg::DrainBaseline(env, m);
	});
}

#undef FG_MAP_ARG

Napi::Value Datapath::ReplaceFlowMap(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	return Async(env, [&]() -> Napi::Value {
		DatapathState &s = State(env);
		double arg = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
		if (arg != 0 && arg != 1)
			ThrowTypeError(env, "replaceFlowMap(slot): slot must be 0 or 1");
		uint32_t slot = static_cast<uint32_t>(arg);
		/* The worker holds a reference to this object, so `this` outlives it; after close() there is no state to update. */
		auto installed = [this, slot](UniqueFd fd, uint32_t id) {
			if (state_)
				InstallFlowMap(*state_, slot, std::move(fd), id);
		};
		return fg::ReplaceFlowMap(env, s, slot, installed, info.This().As<Napi::Object>());
	});
}

Napi::Value Datapath::AttachXdp(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	DatapathState &s = State(env);
	std::string ifname = IfnameArg(info, 0);
	std::string modeName = info.Length() > 1 && !info[1].IsUndefined() ? StringArg(info, 1, "mode") : "auto";
	XdpMode mode;
	if (modeName == "auto")
		mode = XdpMode::Auto;
	else if (modeName == "native")
		mode = XdpMode::Native;
	else if (modeName == "generic")
		mode = XdpMode::Generic;
	else
		ThrowTypeError(env, "attachXdp: mode must be 'auto', 'native' or 'generic', got '" + modeName + "'");
	AttachResult r = Guard(env, [&] { return fg::AttachXdp(s, ifname, mode); });
	return AttachResultToJs(env, r);
}

Napi::Value Datapath::AttachTc(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	DatapathState &s = State(env);
	std::string ifname = IfnameArg(info, 0);
	std::string dir = StringArg(info, 1, "direction");
	Hook hook;
	if (dir == "egress")
		hook = Hook::TcEgress;
	else if (dir == "ingress")
		hook = Hook::TcIngress;
	else
		ThrowTypeError(env, "attachTc: direction must be 'egress' or 'ingress', got '" + dir + "'");
	AttachResult r = Guard(env, [&] { return fg::AttachTc(s, ifname, hook); });
	return AttachResultToJs(env, r);
}

Napi::Value Datapath::Detach(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	DatapathState &s = State(env);
	std::string ifname = IfnameArg(info, 0);
	std::string hookName = StringArg(info, 1, "hook");
	Hook hook;
	if (!ParseHook(hookName, &hook))
		ThrowTypeError(env, "detach: hook must be 'xdp', 'tc_egress' or 'tc_ingress', got '" + hookName + "'");
	bool detached = Guard(env, [&] { return fg::Detach(s, ifname, hook); });
	return Napi::Boolean::New(env, detached);
}

Napi::Value Datapath::Attachments(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	DatapathState &s = State(env);
	std::vector<Attachment> list = Guard(env, [&] { return ListAttachments(s); });
	Napi::Array out = Napi::Array::New(env, list.size());
	for (size_t i = 0; i < list.size(); i++) {
		Napi::Object o = Napi::Object::New(env);
		o.Set("ifname", Napi::String::New(env, list[i].ifname));
		o.Set("ifindex", Napi::Number::New(env, list[i].ifindex));
		o.Set("hook", Napi::String::New(env, HookName(list[i].hook)));
		if (!list[i].mode.empty())
			o.Set("mode", Napi::String::New(env, list[i].mode));
		out.Set(static_cast<uint32_t>(i), o);
	}
	return out;
}

Napi::Value Datapath::TestRun(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	DatapathState &s = State(env);
	std::string hookName = StringArg(info, 0, "hook");
	Hook hook;
	if (!ParseHook(hookName, &hook))
		ThrowTypeError(env, "testRun: hook must be 'xdp', 'tc_egress' or 'tc_ingress', got '" + hookName + "'");
	Napi::Buffer<uint8_t> frame = BufferArg(info, 1, "frame");
	TestRunOptions opts = ParseTestRunOptions(env, info[2]);
	const ProgRef &prog = s.Prog(hook);
	return RunTest(env, prog.fd.get(), prog.type, frame, opts);
}

Napi::Value Datapath::UnpinAll(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	DatapathState &s = State(env);
	Guard(env, [&] {
		DetachAll(s);
		RemoveAllPins(s.pinDir);
	});
	return env.Undefined();
}

Napi::Value Datapath::Close(const Napi::CallbackInfo &info)
{
	/* Idempotent: munmap and close every fd; pins and attachments stay. */
	state_.reset();
	return info.Env().Undefined();
}

} // namespace fg
