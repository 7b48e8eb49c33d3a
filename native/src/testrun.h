/*
 * testrun.h — BPF_PROG_TEST_RUN: run a program on a crafted frame in the
 * kernel, without any interface. The datapath tests and benchmarks use it
 * for exact verdicts and per-packet cost.
 */
#pragma once

#include <napi.h>

#include <cstdint>
#include <optional>

namespace fg
{

struct TestRunOptions {
	uint32_t repeat = 1;
	std::optional<uint32_t> ifindex;
	std::optional<uint32_t> gsoSegs;
	std::optional<uint32_t> gsoSize;
};

/* Validates the JS options object (undefined → defaults); TypeError naming the bad field. */
TestRunOptions ParseTestRunOptions(Napi::Env env, Napi::Value value);

/* progType picks the context: struct xdp_md for XDP, struct __sk_buff for TC. Returns {retval, durationNs, frameOut}. */
Napi::Object RunTest(Napi::Env env, int progFd, uint32_t progType, Napi::Buffer<uint8_t> frame,
		     const TestRunOptions &opts);

} // namespace fg
