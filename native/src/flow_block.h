/*
 * flow_block.h — writeFlowBlock(): drained flow records (key||value, as the
 * kernel gave them and the spool keeps them) to a ClickHouse Native file of
 * flowgate.flows rows, sorted by the key the flows and talkers_1h parts are
 * ordered by, so the embedded engine inserts them without parsing a row or
 * sorting a block (see docs/operating.md, "CPU per stored flow").
 */
#pragma once

#include <napi.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fg
{

/* One drained batch: its records in a file, and what turns them into rows. */
struct FlowBlockSource {
	std::string path;
	uint64_t offset = 0; /* bytes before the first record (a spool header) */
	uint64_t rows = 0;
	std::string host;
	int64_t epochOffsetNs = 0;		/* wall clock minus CLOCK_MONOTONIC at the drain */
	std::map<uint32_t, std::string> ifaces; /* ifindex → name; another is "if<ifindex>" */
};

/*
 * Write the rows of every source to outPath as Native blocks of at most
 * blockRows rows, in flowgate.flows' column order and types. Returns the
 * rows written. Throws ErrnoError (naming the file) on a failed call or a
 * source file shorter than its rows.
 */
uint64_t WriteFlowBlock(const std::string &outPath, const std::vector<FlowBlockSource> &sources, uint32_t blockRows);

/* writeFlowBlock(outPath, sources): Promise<number> (the rows written), on the libuv pool. */
Napi::Value WriteFlowBlockJs(const Napi::CallbackInfo &info);

} // namespace fg
