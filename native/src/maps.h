/*
 * maps.h — reading and writing maps by name. Whole-map operations (drain,
 * dump, bulk rule writes, clear) can touch millions of entries, so they run
 * as Napi::AsyncWorkers on the libuv pool and return Promises; single-entry
 * lookup/update are cheap syscalls and stay synchronous.
 *
 * Values of per-CPU maps go out summed (each u64 lane added across CPUs)
 * and come in replicated to every CPU, so JS never sees the per-CPU stride.
 */
#pragma once

#include "state.h"

#include <napi.h>

namespace fg
{

/* Promise<Buffer>: every entry as key||value records, deleting them (hash maps, LPM tries). */
Napi::Promise LookupAndDeleteAll(Napi::Env env, const MapRef &map);
/* Promise<Buffer>: every entry as key||value records. */
Napi::Promise DumpAll(Napi::Env env, const MapRef &map);
/*
 * Promise<{count, next}>: records of a hash map read (not deleted) into `out`
 * (a whole number of key||value records), starting at `cursor` (null: the
 * first bucket). `next` is the cursor of the following chunk, null once the
 * map is read to its end.
 */
Napi::Promise DumpChunk(Napi::Env env, const MapRef &map, Napi::Buffer<uint8_t> out, Napi::Value cursor);
Napi::Promise UpdateBatch(Napi::Env env, const MapRef &map, Napi::Buffer<uint8_t> keys, Napi::Buffer<uint8_t> values);
Napi::Promise DeleteBatch(Napi::Env env, const MapRef &map, Napi::Buffer<uint8_t> keys);
/* Promise<number>: entries deleted (hash, LPM) or zeroed (arrays). */
Napi::Promise ClearMap(Napi::Env env, const MapRef &map);
/* Promise<{count, ns}>: the kernel's own cost of draining the map, nothing else in the loop. */
Napi::Promise DrainBaseline(Napi::Env env, const MapRef &map);

/* Buffer (summed for per-CPU maps), or null when the key is absent. */
Napi::Value LookupElem(Napi::Env env, const MapRef &map, Napi::Buffer<uint8_t> key);
void UpdateElem(Napi::Env env, const MapRef &map, Napi::Buffer<uint8_t> key, Napi::Buffer<uint8_t> value);

} // namespace fg
