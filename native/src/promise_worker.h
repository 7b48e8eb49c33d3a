/*
 * promise_worker.h — the one shape of every Promise-returning call that
 * works on the libuv pool: Run() there may throw ErrnoError, and the
 * Promise then rejects with the same Error (code, errno) a synchronous call
 * would have thrown; otherwise it resolves with Result().
 */
#pragma once

#include "errors.h"

#include <napi.h>

#include <optional>
#include <string>

namespace fg
{

class PromiseWorker : public Napi::AsyncWorker
{
public:
	Napi::Promise Start()
	{
		Napi::Promise promise = deferred_.Promise();
		Queue();
		return promise;
	}

protected:
	explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env))
	{
	}
	/* On the pool: no JS object may be touched here. */
	virtual void Run() = 0;
	/* What running out of memory in Run() reports (as ENOMEM). */
	virtual std::string OomWhat() const = 0;
	/* On the main thread, after Run() succeeded: the resolved value. */
	virtual Napi::Value Result(Napi::Env env)
	{
		return env.Undefined();
	}
	/* On the main thread, before the Promise settles either way (e.g. to keep what Run() half did). */
	virtual void Settle()
	{
	}

private:
	void Execute() override
	{
		error_ = CatchErrno([&] { Run(); }, OomWhat());
		if (error_)
			SetError(error_->what());
	}
	void OnOK() override
	{
		Settle();
		try {
			deferred_.Resolve(Result(Env()));
		} catch (const Napi::Error &e) {
			deferred_.Reject(e.Value());
		}
	}
	void OnError(const Napi::Error &e) override
	{
		Settle();
		deferred_.Reject(error_ ? error_->ToJs(Env()).Value() : e.Value());
	}

	Napi::Promise::Deferred deferred_;
	std::optional<ErrnoError> error_;
};

} // namespace fg
