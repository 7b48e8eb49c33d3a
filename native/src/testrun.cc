#include "testrun.h"

#include "errors.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <cmath>
#include <vector>

namespace fg
{

namespace
{

/* Headroom for programs that grow the frame (encapsulation, adjust_head/tail). */
constexpr size_t kFrameOutSlack = 512;

std::optional<uint32_t> OptionalU32(Napi::Env env, Napi::Object opts, const char *name, double min, double max)
{
	Napi::Value v = opts.Get(name);
	if (v.IsUndefined())
		return std::nullopt;
	if (!v.IsNumber())
		ThrowTypeError(env, std::string("testRun option ") + name + " must be a number");
	double d = v.As<Napi::Number>().DoubleValue();
	if (!std::isfinite(d) || std::floor(d) != d || d < min || d > max)
		ThrowTypeError(env, std::string("testRun option ") + name + " must be an integer from " +
					    std::to_string(static_cast<uint64_t>(min)) + " to " +
					    std::to_string(static_cast<uint64_t>(max)));
	return static_cast<uint32_t>(d);
}

} // namespace

TestRunOptions ParseTestRunOptions(Napi::Env env, Napi::Value value)
{
	TestRunOptions out;
	if (value.IsUndefined() || value.IsNull())
		return out;
	if (!value.IsObject())
		ThrowTypeError(env, "testRun options must be an object");
	Napi::Object o = value.As<Napi::Object>();
	if (auto r = OptionalU32(env, o, "repeat", 1, 0x7fffffff))
		out.repeat = *r;
	out.ifindex = OptionalU32(env, o, "ifindex", 1, 0x7fffffff);
	out.gsoSegs = OptionalU32(env, o, "gsoSegs", 0, 0xffff);
	out.gsoSize = OptionalU32(env, o, "gsoSize", 0, 0xffff);
	return out;
}

Napi::Object RunTest(Napi::Env env, int progFd, uint32_t progType, Napi::Buffer<uint8_t> frame,
		     const TestRunOptions &opts)
{
	std::vector<uint8_t> out(frame.Length() + kFrameOutSlack);
	LIBBPF_OPTS(bpf_test_run_opts, run);
	run.data_in = frame.Data();
	run.data_size_in = static_cast<__u32>(frame.Length());
	run.data_out = out.data();
	run.data_size_out = static_cast<__u32>(out.size());
	run.repeat = static_cast<int>(opts.repeat);

	/*
	 * A context only when asked for: without one the kernel runs the
	 * program as if on loopback, which is the documented default.
	 */
	xdp_md xdpCtx = {};
	__sk_buff skbCtx = {};
	bool isXdp = progType == BPF_PROG_TYPE_XDP;
	if (isXdp) {
		if (opts.gsoSegs || opts.gsoSize)
			ThrowTypeError(env, "testRun options gsoSegs/gsoSize apply to TC programs only");
		if (opts.ifindex) {
			/* The kernel wants data_end == frame length and no metadata. */
			xdpCtx.data_end = static_cast<__u32>(frame.Length());
			xdpCtx.ingress_ifindex = *opts.ifindex;
			run.ctx_in = &xdpCtx;
			run.ctx_size_in = sizeof(xdpCtx);
		}
	} else if (opts.ifindex || opts.gsoSegs || opts.gsoSize) {
		skbCtx.ifindex = opts.ifindex.value_or(0);
		skbCtx.gso_segs = opts.gsoSegs.value_or(0);
		skbCtx.gso_size = opts.gsoSize.value_or(0);
		run.ctx_in = &skbCtx;
		run.ctx_size_in = sizeof(skbCtx);
	}

	int err = bpf_prog_test_run_opts(progFd, &run);
	if (err)
		throw ErrnoError(
			err, "test-run program",
			err == -EINVAL ?
				"frame shorter than an Ethernet header, or a context field the kernel refuses" :
				"")
			.ToJs(env);

	Napi::Object res = Napi::Object::New(env);
	/* Signed: TC_ACT_UNSPEC is -1. */
	res.Set("retval", Napi::Number::New(env, static_cast<int32_t>(run.retval)));
	res.Set("durationNs", Napi::Number::New(env, run.duration));
	res.Set("frameOut", Napi::Buffer<uint8_t>::Copy(env, out.data(), run.data_size_out));
	return res;
}

} // namespace fg
