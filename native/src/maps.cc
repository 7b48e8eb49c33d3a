#include "maps.h"

#include "errors.h"
#include "info.h"
#include "promise_worker.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

namespace fg
{

namespace
{

/* Entries per batch syscall: large enough that syscall overhead vanishes, small enough to stay in cache. */
constexpr uint32_t kBatch = 8192;
/* ...but at most this much scratch: a per-CPU value on a 256-CPU host is 256 values wide. */
constexpr size_t kBatchBytes = 8 << 20;
/* Per-element operations (LPM tries, clear of arrays) in chunks of this many. */
constexpr uint32_t kChunk = 4096;
constexpr int kENOTSUPP = 524;

using Bytes = std::vector<uint8_t>;

/*
 * What a worker needs of a map. The fd is a dup: close() on the JS object
 * may run while a worker is still in a syscall, and must not pull the fd
 * (or a reused fd number) from under it.
 */
struct MapDesc {
	std::string name;
	UniqueFd fd;
	uint32_t type = 0;
	size_t keySize = 0;
	size_t valueSize = 0;
	uint32_t maxEntries = 0;
	bool perCpu = false;
	int cpus = 1;
	/* Bytes of one value as the kernel reads or writes it (all CPUs' copies for per-CPU maps). */
	size_t kernelValueSize = 0;
};

/* The shape of a map, and with dupFd an fd of its own for a worker thread. */
MapDesc Describe(const MapRef &m, bool dupFd)
{
	MapDesc d;
	d.name = m.name;
	if (dupFd) {
		d.fd.reset(fcntl(m.fd.get(), F_DUPFD_CLOEXEC, 0));
		if (!d.fd.valid())
			throw ErrnoError(errno, "dup fd of map " + m.name);
	}
	d.type = m.type;
	d.keySize = m.keySize;
	d.valueSize = m.valueSize;
	d.maxEntries = m.maxEntries;
	d.perCpu = m.perCpu;
	d.cpus = m.perCpu ? PossibleCpus() : 1;
	d.kernelValueSize = m.perCpu ? RoundUp8(m.valueSize) * d.cpus : m.valueSize;
	return d;
}

/* Entries per batch for this map's record size (kernel format). */
uint32_t BatchFor(const MapDesc &m)
{
	size_t perEntry = m.keySize + m.kernelValueSize;
	size_t n = kBatchBytes / (perEntry ? perEntry : 1);
	return static_cast<uint32_t>(std::max<size_t>(64, std::min<size_t>(kBatch, n)));
}

/* Sum each u64 lane of a per-CPU value over the CPUs; write valueSize bytes. */
void SumPerCpu(const MapDesc &m, const uint8_t *in, uint8_t *out)
{
	size_t stride = RoundUp8(m.valueSize);
	for (size_t off = 0; off < stride; off += 8) {
		uint64_t sum = 0;
		for (int cpu = 0; cpu < m.cpus; cpu++) {
			uint64_t v;
			memcpy(&v, in + cpu * stride + off, 8);
			sum += v;
		}
		size_t n = off + 8 <= m.valueSize ? 8 : m.valueSize - off;
		memcpy(out + off, &sum, n);
	}
}

/* Kernel-format value → the valueSize bytes JS sees. */
void ToUser(const MapDesc &m, const uint8_t *in, uint8_t *out)
{
	if (m.perCpu)
		SumPerCpu(m, in, out);
	else
		memcpy(out, in, m.valueSize);
}

/* JS value → kernel format: per-CPU maps get the same value on every CPU. */
void ToKernel(const MapDesc &m, const uint8_t *in, uint8_t *out)
{
	if (!m.perCpu) {
		memcpy(out, in, m.valueSize);
		return;
	}
	size_t stride = RoundUp8(m.valueSize);
	for (int cpu = 0; cpu < m.cpus; cpu++) {
		memset(out + cpu * stride, 0, stride);
		memcpy(out + cpu * stride, in, m.valueSize);
	}
}

bool NotSupported(int err)
{
	return err == -EOPNOTSUPP || err == -kENOTSUPP;
}

/* Every key, via BPF_MAP_GET_NEXT_KEY: the fallback for maps without batch ops. */
Bytes CollectKeys(const MapDesc &m)
{
	Bytes keys;
	Bytes prev(m.keySize), next(m.keySize);
	const void *cur = nullptr;
	for (;;) {
		int err = bpf_map_get_next_key(m.fd.get(), cur, next.data());
		if (err == -ENOENT)
			break;
		CheckBpf(err, "list keys of map " + m.name);
		keys.insert(keys.end(), next.begin(), next.end());
		prev.swap(next);
		cur = prev.data();
	}
	return keys;
}

/*
 * The kernel batch loop: calls sink(keys, values, n) for each batch, values
 * in kernel format. ENOENT ends the map (with a possibly non-empty last
 * batch); ENOSPC with nothing returned means one hash bucket holds more
 * entries than the batch, so retry the same position with a bigger batch.
 * Returns false, without reading anything, when the map has no batch op.
 */
template <typename Sink>
bool BatchRead(const MapDesc &m, bool del, Sink sink)
{
	uint32_t batch = BatchFor(m);
	Bytes keys(static_cast<size_t>(batch) * m.keySize);
	Bytes values(static_cast<size_t>(batch) * m.kernelValueSize);
	/* The position token is a bucket index (hash) or a key (arrays): room for either. */
	Bytes in(m.keySize + 8), out(m.keySize + 8);
	bool first = true;
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	for (;;) {
		__u32 count = batch;
		int err = del ? bpf_map_lookup_and_delete_batch(m.fd.get(), first ? nullptr : in.data(), out.data(),
								keys.data(), values.data(), &count, &opts) :
				bpf_map_lookup_batch(m.fd.get(), first ? nullptr : in.data(), out.data(), keys.data(),
						     values.data(), &count, &opts);
		if (err && err != -ENOENT) {
			if (first && NotSupported(err))
				return false;
			if (err == -ENOSPC && count == 0) {
				batch *= 2;
				keys.resize(static_cast<size_t>(batch) * m.keySize);
				values.resize(static_cast<size_t>(batch) * m.kernelValueSize);
				continue;
			}
			throw ErrnoError(err,
					 std::string(del ? "lookup-and-delete" : "lookup") + " batch of map " + m.name);
		}
		if (count)
			sink(keys.data(), values.data(), count);
		if (err == -ENOENT)
			return true;
		in.swap(out);
		first = false;
	}
}

/*
 * The records of a whole-map read. Anonymous memory grown with mremap():
 * a drain of a million flows (~120 MB) never copies what it already read
 * nor zero-fills what it is about to overwrite, and the mapping becomes the
 * JS Buffer as is (munmap in its finalizer).
 */
class RecordBuffer
{
public:
	RecordBuffer() = default;
	RecordBuffer(const RecordBuffer &) = delete;
	RecordBuffer &operator=(const RecordBuffer &) = delete;
	~RecordBuffer()
	{
		if (p_)
			munmap(p_, cap_);
	}

	/* Room for n more bytes at the end; returns where to write them. */
	uint8_t *Extend(size_t n)
	{
		if (len_ + n > cap_)
			Grow(len_ + n);
		uint8_t *at = p_ + len_;
		len_ += n;
		return at;
	}
	size_t size() const
	{
		return len_;
	}

	Napi::Value ToJs(Napi::Env env)
	{
		if (!len_)
			return Napi::Buffer<uint8_t>::New(env, 0);
		if (len_ <= kCopyBelow) {
			/*
			 * A small read (interface counters, a few flows): a copy, and the
			 * mapping goes now. Handed over, it would stay resident until a GC
			 * collected its Buffer, which for a few KB can take many drains.
			 */
			Napi::Value copy = Napi::Buffer<uint8_t>::Copy(env, p_, len_);
			munmap(p_, cap_);
			p_ = nullptr;
			return copy;
		}
		auto *hint = new Mapping{ p_, cap_ };
		uint8_t *data = p_;
		p_ = nullptr;
		return Napi::Buffer<uint8_t>::NewOrCopy(
			env, data, len_,
			[](Napi::Env, uint8_t *, Mapping *m) {
				munmap(m->p, m->cap);
				delete m;
			},
			hint);
	}

private:
	struct Mapping {
		uint8_t *p;
		size_t cap;
	};

	void Grow(size_t need)
	{
		size_t cap = std::max<size_t>({ need, cap_ * 2, kMinCapacity });
		size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
		cap = (cap + page - 1) / page * page;
		void *p = p_ ? mremap(p_, cap_, cap, MREMAP_MAYMOVE) :
			       mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			throw ErrnoError(ENOMEM, "allocate " + std::to_string(cap) + " bytes for map records");
		/*
		 * Huge pages where the kernel allows, for big reads only: a 120 MB
		 * read takes 60 page faults instead of 30,000, but a huge page is
		 * 2 MB resident however little of it a small read fills.
		 */
		if (cap >= kHugePagesFrom)
			madvise(p, cap, MADV_HUGEPAGE);
		p_ = static_cast<uint8_t *>(p);
		cap_ = cap;
	}

	static constexpr size_t kMinCapacity = 64 << 10;
	static constexpr size_t kHugePagesFrom = 8 << 20;
	static constexpr size_t kCopyBelow = 256 << 10;

	uint8_t *p_ = nullptr;
	size_t len_ = 0;
	size_t cap_ = 0;
};

/* Read (and optionally delete) every entry into key||value records. */
void ReadAll(const MapDesc &m, bool del, RecordBuffer &out)
{
	if (del && IsArrayType(m.type))
		throw ErrnoError::WithMessage(
			EINVAL, "map " + m.name + " is an array: its entries can't be deleted, use clear()");
	size_t rec = m.keySize + m.valueSize;
	auto append = [&](const uint8_t *key, const uint8_t *value) {
		uint8_t *at = out.Extend(rec);
		memcpy(at, key, m.keySize);
		ToUser(m, value, at + m.keySize);
	};
	if (HasBatchOps(m.type)) {
		bool done = BatchRead(m, del, [&](const uint8_t *keys, const uint8_t *values, uint32_t n) {
			uint8_t *at = out.Extend(n * rec);
			for (uint32_t i = 0; i < n; i++, at += rec) {
				memcpy(at, keys + i * m.keySize, m.keySize);
				ToUser(m, values + i * m.kernelValueSize, at + m.keySize);
			}
		});
		if (done)
			return;
	}
	/* No batch ops (LPM tries): list the keys, then look each up (and delete it). */
	Bytes keys = CollectKeys(m);
	Bytes value(m.kernelValueSize);
	for (size_t off = 0; off < keys.size(); off += m.keySize) {
		const uint8_t *key = &keys[off];
		int err = bpf_map_lookup_elem(m.fd.get(), key, value.data());
		if (err == -ENOENT)
			continue; /* deleted meanwhile */
		CheckBpf(err, "lookup in map " + m.name);
		append(key, value.data());
		if (del) {
			err = bpf_map_delete_elem(m.fd.get(), key);
			if (err != -ENOENT)
				CheckBpf(err, "delete from map " + m.name);
		}
	}
}

std::string FullHint(const MapDesc &m, int err)
{
	if (err == -E2BIG || err == E2BIG || err == -ENOSPC)
		return "map " + m.name + " is full (max_entries " + std::to_string(m.maxEntries) + ")";
	return "";
}

void WriteAll(const MapDesc &m, const Bytes &keys, const Bytes &values, size_t count)
{
	if (HasBatchOps(m.type)) {
		LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
		size_t done = 0;
		bool batched = true;
		while (done < count) {
			__u32 n = static_cast<__u32>(std::min<size_t>(count - done, BatchFor(m)));
			int err = bpf_map_update_batch(m.fd.get(), &keys[done * m.keySize],
						       &values[done * m.kernelValueSize], &n, &opts);
			if (err && done == 0 && n == 0 && NotSupported(err)) {
				batched = false;
				break;
			}
			if (err)
				throw ErrnoError(
					err, "update batch of map " + m.name + " at entry " + std::to_string(done + n),
					FullHint(m, err));
			done += n;
		}
		if (batched)
			return;
	}
	for (size_t i = 0; i < count; i++) {
		int err =
			bpf_map_update_elem(m.fd.get(), &keys[i * m.keySize], &values[i * m.kernelValueSize], BPF_ANY);
		if (err)
			throw ErrnoError(err, "update map " + m.name + " at entry " + std::to_string(i),
					 FullHint(m, err));
	}
}

/* Deletes keys; absent keys are skipped (deleting is idempotent). Returns entries deleted. */
uint64_t DeleteAll(const MapDesc &m, const uint8_t *keys, size_t count)
{
	if (IsArrayType(m.type) || m.type == BPF_MAP_TYPE_ARRAY_OF_MAPS)
		throw ErrnoError::WithMessage(
			EINVAL, "map " + m.name + " is an array: its entries can't be deleted, use clear()");
	uint64_t deleted = 0;
	size_t done = 0;
	if (HasBatchOps(m.type)) {
		LIBBPF_OPTS(bpf_map_batch_opts, opts);
		while (done < count) {
			__u32 n = static_cast<__u32>(std::min<size_t>(count - done, kBatch));
			int err = bpf_map_delete_batch(m.fd.get(), keys + done * m.keySize, &n, &opts);
			done += n;
			deleted += n;
			if (err == -ENOENT) {
				done++; /* the kernel stopped at an absent key: step over it */
				continue;
			}
			if (err && NotSupported(err) && n == 0)
				break;
			if (err)
				throw ErrnoError(err,
						 "delete batch of map " + m.name + " at entry " + std::to_string(done));
		}
	}
	for (; done < count; done++) {
		int err = bpf_map_delete_elem(m.fd.get(), keys + done * m.keySize);
		if (err == -ENOENT)
			continue;
		CheckBpf(err, "delete from map " + m.name + " at entry " + std::to_string(done));
		deleted++;
	}
	return deleted;
}

uint64_t Clear(const MapDesc &m)
{
	if (IsArrayType(m.type)) {
		/* Array entries always exist: "clearing" is writing zeros to every index. */
		Bytes keys, values;
		for (uint32_t start = 0; start < m.maxEntries; start += kChunk) {
			uint32_t n = std::min<uint32_t>(kChunk, m.maxEntries - start);
			keys.resize(static_cast<size_t>(n) * 4);
			values.assign(static_cast<size_t>(n) * m.kernelValueSize, 0);
			for (uint32_t i = 0; i < n; i++) {
				uint32_t idx = start + i;
				memcpy(&keys[i * 4], &idx, 4);
			}
			WriteAll(m, keys, values, n);
		}
		return m.maxEntries;
	}
	if (!IsHashType(m.type) && m.type != BPF_MAP_TYPE_LPM_TRIE)
		throw ErrnoError::WithMessage(EINVAL, "map " + m.name + " (type " + std::to_string(m.type) +
							      ") can't be cleared");
	uint64_t count = 0;
	if (HasBatchOps(m.type) &&
	    BatchRead(m, true, [&](const uint8_t *, const uint8_t *, uint32_t n) { count += n; }))
		return count;
	Bytes keys = CollectKeys(m);
	return DeleteAll(m, keys.data(), keys.size() / m.keySize);
}

uint64_t NowNs()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

/* A call on one map, on the pool. */
class MapWorker : public PromiseWorker
{
public:
	MapWorker(Napi::Env env, const MapRef &map) : PromiseWorker(env), map_(Describe(map, true))
	{
	}

protected:
	std::string OomWhat() const override
	{
		return "map " + map_.name;
	}
	MapDesc map_;
};

class ReadAllWorker : public MapWorker
{
public:
	ReadAllWorker(Napi::Env env, const MapRef &map, bool del) : MapWorker(env, map), del_(del)
	{
	}

private:
	void Run() override
	{
		ReadAll(map_, del_, out_);
	}
	Napi::Value Result(Napi::Env env) override
	{
		return out_.ToJs(env);
	}
	bool del_;
	RecordBuffer out_;
};

class UpdateWorker : public MapWorker
{
public:
	UpdateWorker(Napi::Env env, const MapRef &map, Bytes keys, Bytes values, size_t count)
	    : MapWorker(env, map), keys_(std::move(keys)), values_(std::move(values)), count_(count)
	{
	}

private:
	void Run() override
	{
		WriteAll(map_, keys_, values_, count_);
	}
	Napi::Value Result(Napi::Env env) override
	{
		return env.Undefined();
	}
	Bytes keys_, values_;
	size_t count_;
};

class DeleteWorker : public MapWorker
{
public:
	DeleteWorker(Napi::Env env, const MapRef &map, Bytes keys) : MapWorker(env, map), keys_(std::move(keys))
	{
	}

private:
	void Run() override
	{
		DeleteAll(map_, keys_.data(), keys_.size() / map_.keySize);
	}
	Napi::Value Result(Napi::Env env) override
	{
		return env.Undefined();
	}
	Bytes keys_;
};

class ClearWorker : public MapWorker
{
public:
	using MapWorker::MapWorker;

private:
	void Run() override
	{
		count_ = Clear(map_);
	}
	Napi::Value Result(Napi::Env env) override
	{
		return Napi::Number::New(env, static_cast<double>(count_));
	}
	uint64_t count_ = 0;
};

class DrainBaselineWorker : public MapWorker
{
public:
	using MapWorker::MapWorker;

private:
	void Run() override
	{
		if (!IsHashType(map_.type))
			throw ErrnoError::WithMessage(EINVAL, "drainBaseline needs a hash map, " + map_.name +
								      " is type " + std::to_string(map_.type));
		/*
		 * Scratch for one batch, faulted in before the clock starts; every
		 * batch overwrites it. The timed loop is nothing but the syscalls.
		 */
		uint32_t batch = BatchFor(map_);
		Bytes keys(static_cast<size_t>(batch) * map_.keySize, 1);
		Bytes values(static_cast<size_t>(batch) * map_.kernelValueSize, 1);
		Bytes in(map_.keySize + 8), out(map_.keySize + 8);
		LIBBPF_OPTS(bpf_map_batch_opts, opts);
		uint64_t total = 0;
		bool first = true;
		uint64_t t0 = NowNs();
		for (;;) {
			__u32 n = batch;
			int err = bpf_map_lookup_and_delete_batch(map_.fd.get(), first ? nullptr : in.data(),
								  out.data(), keys.data(), values.data(), &n, &opts);
			total += n;
			if (err == -ENOENT)
				break;
			if (err == -ENOSPC && n == 0) {
				batch *= 2;
				keys.resize(static_cast<size_t>(batch) * map_.keySize);
				values.resize(static_cast<size_t>(batch) * map_.kernelValueSize);
				continue;
			}
			if (err)
				throw ErrnoError(err, "lookup-and-delete batch of map " + map_.name);
			in.swap(out);
			first = false;
		}
		ns_ = NowNs() - t0;
		count_ = total;
	}
	Napi::Value Result(Napi::Env env) override
	{
		Napi::Object o = Napi::Object::New(env);
		o.Set("count", Napi::Number::New(env, static_cast<double>(count_)));
		o.Set("ns", Napi::Number::New(env, static_cast<double>(ns_)));
		return o;
	}
	uint64_t count_ = 0;
	uint64_t ns_ = 0;
};

/*
 * One chunk of a whole-map read of a hash map (or an array), into the caller's buffer:
 * records from a cursor until the buffer is full or the map ends. The
 * kernel hands out whole hash buckets, so a chunk can end short of full;
 * the cursor then names the first bucket not returned. A map nothing writes
 * (a retired flow slot) reads the same across calls, so the chunks add up to
 * exactly one whole-map read. Nothing is allocated per record: the buffer is
 * the caller's, reused for every chunk.
 */
class DumpChunkWorker : public MapWorker
{
public:
	DumpChunkWorker(Napi::Env env, const MapRef &map, Napi::Buffer<uint8_t> out, const uint8_t *cursor)
	    : MapWorker(env, map), outRef_(Napi::Persistent(out)), out_(out.Data()),
	      capacity_(out.Length() / (map.keySize + map.valueSize)), in_(map.keySize + 8),
	      out_token_(map.keySize + 8), start_(cursor == nullptr)
	{
		if (cursor)
			memcpy(in_.data(), cursor, in_.size());
	}

private:
	void Run() override
	{
		/* Arrays too: their cursor is an index, so a chunk of N from the start is entries 0..N-1
		 * (the rule counters are read up to the highest rule id in use, not all --max-rules). */
		bool array = map_.type == BPF_MAP_TYPE_ARRAY || map_.type == BPF_MAP_TYPE_PERCPU_ARRAY;
		if (!IsHashType(map_.type) && !array)
			throw ErrnoError::WithMessage(EINVAL, "dumpChunk needs a hash map or an array, " + map_.name +
								      " is type " + std::to_string(map_.type));
		size_t rec = map_.keySize + map_.valueSize;
		uint32_t batch = static_cast<uint32_t>(std::min<size_t>(BatchFor(map_), capacity_));
		Bytes keys(static_cast<size_t>(batch) * map_.keySize);
		Bytes values(static_cast<size_t>(batch) * map_.kernelValueSize);
		LIBBPF_OPTS(bpf_map_batch_opts, opts);
		bool first = start_;
		while (count_ < capacity_) {
			__u32 n = static_cast<__u32>(std::min<size_t>(batch, capacity_ - count_));
			int err = bpf_map_lookup_batch(map_.fd.get(), first ? nullptr : in_.data(), out_token_.data(),
						       keys.data(), values.data(), &n, &opts);
			if (err && err != -ENOENT) {
				if (err == -ENOSPC && n == 0) {
					/* The next bucket holds more entries than this request: the next chunk, or a bigger scratch. */
					if (count_ > 0)
						break;
					if (batch >= capacity_)
						throw ErrnoError(err,
								 "read of map " + map_.name +
									 ": one hash bucket holds more than " +
									 std::to_string(capacity_) + " entries",
								 "pass a bigger buffer to dumpChunk");
					batch = static_cast<uint32_t>(
						std::min<size_t>(static_cast<size_t>(batch) * 2, capacity_));
					keys.resize(static_cast<size_t>(batch) * map_.keySize);
					values.resize(static_cast<size_t>(batch) * map_.kernelValueSize);
					continue;
				}
				throw ErrnoError(err, "lookup batch of map " + map_.name);
			}
			uint8_t *at = out_ + count_ * rec;
			for (uint32_t i = 0; i < n; i++, at += rec) {
				memcpy(at, keys.data() + static_cast<size_t>(i) * map_.keySize, map_.keySize);
				ToUser(map_, values.data() + static_cast<size_t>(i) * map_.kernelValueSize,
				       at + map_.keySize);
			}
			count_ += n;
			if (err == -ENOENT) {
				done_ = true;
				return;
			}
			in_.swap(out_token_);
			first = false;
		}
	}
	Napi::Value Result(Napi::Env env) override
	{
		Napi::Object o = Napi::Object::New(env);
		o.Set("count", Napi::Number::New(env, static_cast<double>(count_)));
		o.Set("next",
		      done_ ? env.Null() : Napi::Buffer<uint8_t>::Copy(env, in_.data(), in_.size()).As<Napi::Value>());
		return o;
	}
	/* Keeps the caller's buffer alive (and its memory where it is) while the worker writes into it. */
	Napi::Reference<Napi::Buffer<uint8_t>> outRef_;
	uint8_t *out_;
	size_t capacity_;
	Bytes in_, out_token_;
	bool start_;
	size_t count_ = 0;
	bool done_ = false;
};

void CheckMultiple(Napi::Env env, const MapRef &m, const char *what, size_t len, size_t unit)
{
	if (len % unit != 0)
		ThrowTypeError(env, std::string(what) + " for map " + m.name + " is " + std::to_string(len) +
					    " bytes, not a multiple of " + std::to_string(unit));
}

/* JS values (count × valueSize) → kernel format. */
Bytes ExpandValues(const MapDesc &d, const uint8_t *values, size_t count)
{
	Bytes out(count * d.kernelValueSize);
	for (size_t i = 0; i < count; i++)
		ToKernel(d, values + i * d.valueSize, &out[i * d.kernelValueSize]);
	return out;
}

} // namespace

Napi::Promise LookupAndDeleteAll(Napi::Env env, const MapRef &map)
{
	return (new ReadAllWorker(env, map, true))->Start();
}

Napi::Promise DumpAll(Napi::Env env, const MapRef &map)
{
	return (new ReadAllWorker(env, map, false))->Start();
}

Napi::Promise DumpChunk(Napi::Env env, const MapRef &map, Napi::Buffer<uint8_t> out, Napi::Value cursor)
{
	size_t rec = map.keySize + map.valueSize;
	if (out.Length() < rec || out.Length() % rec != 0)
		ThrowTypeError(env, "dumpChunk of map " + map.name + ": the buffer is " + std::to_string(out.Length()) +
					    " bytes, not a whole number (at least one) of " + std::to_string(rec) +
					    "-byte records");
	const uint8_t *at = nullptr;
	if (!cursor.IsNull() && !cursor.IsUndefined()) {
		if (!cursor.IsBuffer() || cursor.As<Napi::Buffer<uint8_t>>().Length() != map.keySize + 8)
			ThrowTypeError(env, "dumpChunk of map " + map.name +
						    ": the cursor must be null or the `next` of the previous chunk");
		at = cursor.As<Napi::Buffer<uint8_t>>().Data();
	}
	return (new DumpChunkWorker(env, map, out, at))->Start();
}

Napi::Promise UpdateBatch(Napi::Env env, const MapRef &map, Napi::Buffer<uint8_t> keys, Napi::Buffer<uint8_t> values)
{
	CheckMultiple(env, map, "keys", keys.Length(), map.keySize);
	CheckMultiple(env, map, "values", values.Length(), map.valueSize);
	size_t count = keys.Length() / map.keySize;
	if (values.Length() / map.valueSize != count)
		ThrowTypeError(env, "updateBatch of map " + map.name + ": " + std::to_string(count) + " keys but " +
					    std::to_string(values.Length() / map.valueSize) + " values");
	/* Copied now: JS may reuse or detach its buffers while the worker runs. */
	MapDesc d = Describe(map, false);
	Bytes k(keys.Data(), keys.Data() + keys.Length());
	Bytes v = ExpandValues(d, values.Data(), count);
	return (new UpdateWorker(env, map, std::move(k), std::move(v), count))->Start();
}

Napi::Promise DeleteBatch(Napi::Env env, const MapRef &map, Napi::Buffer<uint8_t> keys)
{
	CheckMultiple(env, map, "keys", keys.Length(), map.keySize);
	Bytes k(keys.Data(), keys.Data() + keys.Length());
	return (new DeleteWorker(env, map, std::move(k)))->Start();
}

Napi::Promise ClearMap(Napi::Env env, const MapRef &map)
{
	return (new ClearWorker(env, map))->Start();
}

Napi::Promise DrainBaseline(Napi::Env env, const MapRef &map)
{
	return (new DrainBaselineWorker(env, map))->Start();
}

Napi::Value LookupElem(Napi::Env env, const MapRef &map, Napi::Buffer<uint8_t> key)
{
	if (key.Length() != map.keySize)
		ThrowTypeError(env, "key for map " + map.name + " must be " + std::to_string(map.keySize) +
					    " bytes, got " + std::to_string(key.Length()));
	MapDesc d = Describe(map, false);
	Bytes value(d.kernelValueSize);
	int err = bpf_map_lookup_elem(map.fd.get(), key.Data(), value.data());
	if (err == -ENOENT)
		return env.Null();
	CheckBpf(err, "lookup in map " + map.name);
	Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, map.valueSize);
	ToUser(d, value.data(), out.Data());
	return out;
}

void UpdateElem(Napi::Env env, const MapRef &map, Napi::Buffer<uint8_t> key, Napi::Buffer<uint8_t> value)
{
	if (key.Length() != map.keySize)
		ThrowTypeError(env, "key for map " + map.name + " must be " + std::to_string(map.keySize) +
					    " bytes, got " + std::to_string(key.Length()));
	if (value.Length() != map.valueSize)
		ThrowTypeError(env, "value for map " + map.name + " must be " + std::to_string(map.valueSize) +
					    " bytes, got " + std::to_string(value.Length()));
	MapDesc d = Describe(map, false);
	Bytes kernel(d.kernelValueSize);
	ToKernel(d, value.Data(), kernel.data());
	int err = bpf_map_update_elem(map.fd.get(), key.Data(), kernel.data(), BPF_ANY);
	if (err)
		throw ErrnoError(err, "update map " + map.name, FullHint(d, err));
}

} // namespace fg
