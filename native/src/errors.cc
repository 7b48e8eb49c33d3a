#include "errors.h"

#include <string.h>

#include <cerrno>
#include <cmath>

namespace fg
{

namespace
{
/* Kernel-internal error numbers that leak out of bpf() but that libc has no name for. */
constexpr int kENOTSUPP = 524;
} // namespace

std::string ErrnoName(int err)
{
	if (err < 0)
		err = -err;
	if (err == kENOTSUPP)
		return "ENOTSUPP";
	/* glibc's name for 95 is EOPNOTSUPP (== ENOTSUP on Linux), which is what we want. */
	const char *name = strerrorname_np(err);
	if (name)
		return name;
	return "E" + std::to_string(err);
}

std::string ErrnoText(int err)
{
	if (err < 0)
		err = -err;
	if (err == kENOTSUPP)
		return "Operation not supported by this kernel";
	const char *text = strerrordesc_np(err);
	if (text)
		return text;
	return "Unknown error " + std::to_string(err);
}

std::string DefaultHint(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case EPERM:
	case EACCES:
		return "needs root or CAP_BPF+CAP_NET_ADMIN";
	case ENOMEM:
		return "the kernel could not allocate the map or program: lower --max-flows or the rule limits";
	case E2BIG:
		return "the map is full or the request exceeds a kernel limit";
	case kENOTSUPP:
		return "this kernel does not support the operation";
	default:
		return "";
	}
}

ErrnoError::ErrnoError(int err, const std::string &what, const std::string &hint) : err_(err < 0 ? -err : err)
{
	msg_ = what + ": " + ErrnoText(err_) + " (" + ErrnoName(err_) + ")";
	std::string h = hint.empty() ? DefaultHint(err_) : hint;
	if (!h.empty())
		msg_ += ": " + h;
}

std::string LoadFailureHint(int err, const std::string &libbpfLog)
{
	std::string hint;
	if (libbpfLog.find("-- BEGIN PROG LOAD LOG --") != std::string::npos)
		hint = "the kernel verifier rejected a program (log below; rebuild datapath/ or report it)";
	else
		hint = DefaultHint(err);
	if (!libbpfLog.empty())
		hint += "\nlibbpf said:\n" + libbpfLog;
	return hint;
}

ErrnoError ErrnoError::WithMessage(int err, const std::string &msg)
{
	ErrnoError e(err, "");
	e.msg_ = msg;
	return e;
}

Napi::Error ErrnoError::ToJs(Napi::Env env) const
{
	Napi::Error e = Napi::Error::New(env, msg_);
	e.Set("code", Napi::String::New(env, ErrnoName(err_)));
	e.Set("errno", Napi::Number::New(env, err_));
	return e;
}

void ThrowTypeError(Napi::Env env, const std::string &msg)
{
	Napi::TypeError e = Napi::TypeError::New(env, msg);
	e.Set("code", Napi::String::New(env, "EINVAL"));
	e.Set("errno", Napi::Number::New(env, EINVAL));
	throw e;
}

void ThrowRangeError(Napi::Env env, const std::string &msg)
{
	Napi::RangeError e = Napi::RangeError::New(env, msg);
	e.Set("code", Napi::String::New(env, "EINVAL"));
	e.Set("errno", Napi::Number::New(env, EINVAL));
	throw e;
}

int64_t IntegerOption(Napi::Env env, Napi::Object opts, const char *fn, const char *name, int64_t min, int64_t max)
{
	Napi::Value v = opts.Get(name);
	double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
	if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(min) || d > static_cast<double>(max))
		ThrowTypeError(env, std::string(fn) + "(): " + name + " must be an integer from " +
					    std::to_string(min) + " to " + std::to_string(max));
	return static_cast<int64_t>(d);
}

} // namespace fg
