/*
 * errors.h — one error type for every failed kernel call. Core code (which
 * also runs on libuv worker threads, where no JS object may be created)
 * throws ErrnoError; the JS boundary turns it into an Error with .code (the
 * errno name) and .errno, as native/index.ts promises.
 */
#pragma once

#include <napi.h>

#include <cstdint>
#include <optional>
#include <string>

namespace fg
{

class ErrnoError : public std::exception
{
public:
	/* err: positive or negative errno; what: the operation that failed; hint: what to do (empty: a default by errno). */
	ErrnoError(int err, const std::string &what, const std::string &hint = "");
	/* An error whose message is exactly msg (no strerror text), for conditions that are not a failed call. */
	static ErrnoError WithMessage(int err, const std::string &msg);
	int err() const
	{
		return err_;
	}
	const char *what() const noexcept override
	{
		return msg_.c_str();
	}
	Napi::Error ToJs(Napi::Env env) const;

private:
	int err_;
	std::string msg_;
};

/* "EPERM", "ENOTSUPP" (kernel-internal 524), …; "E<n>" for unknown numbers. */
std::string ErrnoName(int err);
/* strerror(), with words for the kernel-internal codes libc does not know. */
std::string ErrnoText(int err);
/* A generic "what to do" for an errno when the caller has nothing more specific. */
std::string DefaultHint(int err);

/*
 * Why a bpf_object__load() failed, from libbpf's log tail: "the verifier
 * rejected it" plus the log when there is a verifier log, the errno's
 * default hint otherwise.
 */
std::string LoadFailureHint(int err, const std::string &libbpfLog);

/*
 * Argument validation errors. They carry code EINVAL/errno 22 too, so every
 * error the addon raises has a code the control plane can switch on.
 */
[[noreturn]] void ThrowTypeError(Napi::Env env, const std::string &msg);
[[noreturn]] void ThrowRangeError(Napi::Env env, const std::string &msg);

/*
 * opts[name] as an integer in [min, max], for the options object of the
 * call `fn`: a TypeError "<fn>(): <name> must be an integer from <min> to
 * <max>" otherwise, absent included (an optional option checks for
 * undefined first).
 */
int64_t IntegerOption(Napi::Env env, Napi::Object opts, const char *fn, const char *name, int64_t min, int64_t max);

/* Run f, turning an ErrnoError into the JS Error at the N-API boundary. */
template <typename F>
auto Guard(Napi::Env env, F &&f) -> decltype(f())
{
	try {
		return f();
	} catch (const ErrnoError &e) {
		throw e.ToJs(env);
	} catch (const std::bad_alloc &) {
		throw ErrnoError(ENOMEM, "out of memory in the flowgate addon").ToJs(env);
	}
}

/*
 * For the Promise-returning functions: bad arguments, a closed datapath or an
 * unknown map reject the Promise instead of throwing, so `.catch()` and
 * `await` see every failure the same way.
 */
template <typename F>
Napi::Value Async(Napi::Env env, F &&f)
{
	try {
		return Guard(env, f);
	} catch (const Napi::Error &e) {
		Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
		d.Reject(e.Value());
		return d.Promise();
	}
}

/*
 * Run f on a worker thread: an ErrnoError it throws (or running out of
 * memory, as ENOMEM "<oomWhat>") is returned, for the worker to reject with.
 */
template <typename F>
std::optional<ErrnoError> CatchErrno(F &&f, const std::string &oomWhat)
{
	try {
		f();
		return std::nullopt;
	} catch (const ErrnoError &e) {
		return e;
	} catch (const std::bad_alloc &) {
		return ErrnoError(ENOMEM, oomWhat);
	}
}

/* libbpf returns -errno (and sets errno); turn any negative return into an ErrnoError. */
inline int CheckBpf(int ret, const std::string &what, const std::string &hint = "")
{
	if (ret < 0)
		throw ErrnoError(ret, what, hint);
	return ret;
}

} // namespace fg
