#include "flow_block.h"

#include "errors.h"
#include "fd.h"
#include "promise_worker.h"

#include <flowgate.h>

#include <endian.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <set>
#include <unordered_map>

namespace fg
{

namespace
{

constexpr size_t kKeySize = sizeof(struct fg_flow_key);
constexpr size_t kRecordSize = sizeof(struct fg_flow_key) + sizeof(struct fg_flow_value);
constexpr int64_t kMicrosPerHour = 3600LL * 1000 * 1000;

/* A field of a packed key||value record, read unaligned (records are 120 bytes apart). */
template <typename T>
T Field(const uint8_t *rec, size_t offset)
{
	T v;
	std::memcpy(&v, rec + offset, sizeof v);
	return v;
}
#define FG_KEY_FIELD(rec, f) Field<decltype(fg_flow_key::f)>(rec, offsetof(fg_flow_key, f))
#define FG_VALUE_FIELD(rec, f) Field<decltype(fg_flow_value::f)>(rec, kKeySize + offsetof(fg_flow_value, f))

/*
 * A kernel time (CLOCK_MONOTONIC ns) as epoch microseconds, clamped at 1970,
 * as the JavaScript encoder (flow-rows.ts) has it: the sum wraps at 64 bits,
 * and a time before 1970 is 0 however its division rounds.
 */
int64_t EpochMicros(uint64_t monoNs, int64_t epochOffsetNs)
{
	int64_t ns = static_cast<int64_t>(monoNs + static_cast<uint64_t>(epochOffsetNs));
	int64_t us = ns / 1000;
	return us < 0 ? 0 : us;
}

/* ingress unless the kernel said egress, as the encoder has it. */
int8_t Direction(const uint8_t *rec)
{
	return FG_KEY_FIELD(rec, direction) == FG_DIR_EGRESS ? 2 : 1;
}

/*
 * The order of a row in the parts: flows is ORDER BY (toStartOfHour(first_seen),
 * src_addr, dst_addr), talkers_1h ORDER BY (hour, src_addr, dst_addr, host,
 * iface, direction). Addresses compare as their bytes (IPv6), so each is held
 * as two big-endian words; host and iface as their rank among the block's
 * names, which is the order of the strings. A block in this order is one the
 * engine finds already sorted, for both tables.
 */
struct RowKey {
	int64_t hour;
	uint64_t src[2];
	uint64_t dst[2];
	uint64_t names; /* host << 40 | iface << 8 | direction: see Names() */
	uint32_t row;

	/* host and iface: ranks in their dictionaries (ids while the dictionaries are still open). */
	static uint64_t Names(uint32_t host, uint32_t iface, int8_t direction)
	{
		return static_cast<uint64_t>(host) << 40 | static_cast<uint64_t>(iface) << 8 |
		       static_cast<uint8_t>(direction);
	}
	uint32_t Host() const
	{
		return static_cast<uint32_t>(names >> 40);
	}
	uint32_t Iface() const
	{
		return static_cast<uint32_t>((names >> 8) & 0xffffffff);
	}
	int8_t Dir() const
	{
		return static_cast<int8_t>(names & 0xff);
	}

	bool operator<(const RowKey &o) const
	{
		if (hour != o.hour)
			return hour < o.hour;
		if (src[0] != o.src[0])
			return src[0] < o.src[0];
		if (src[1] != o.src[1])
			return src[1] < o.src[1];
		if (dst[0] != o.dst[0])
			return dst[0] < o.dst[0];
		if (dst[1] != o.dst[1])
			return dst[1] < o.dst[1];
		if (names != o.names)
			return names < o.names;
		return row < o.row; /* a total order: the same records always make the same bytes */
	}
};

void AddressWords(const uint8_t *addr, uint64_t out[2])
{
	uint64_t w;
	std::memcpy(&w, addr, 8);
	out[0] = be64toh(w);
	std::memcpy(&w, addr + 8, 8);
	out[1] = be64toh(w);
}

/*
 * The strings of a LowCardinality column: sorted (so an index orders like
 * its string) with the default "" first, as the engine writes its own.
 */
class Dictionary
{
public:
	uint32_t Add(const std::string &s)
	{
		auto it = ids_.find(s);
		if (it != ids_.end())
			return it->second;
		uint32_t id = static_cast<uint32_t>(names_.size());
		names_.push_back(s);
		ids_.emplace(s, id);
		return id;
	}
	/* Fix the order; afterwards Rank(id) is a string's index in Keys(). */
	void Seal()
	{
		std::set<std::string> sorted(names_.begin(), names_.end());
		sorted.insert("");
		keys_.assign(sorted.begin(), sorted.end());
		rank_.resize(names_.size());
		for (size_t id = 0; id < names_.size(); id++)
			rank_[id] = static_cast<uint32_t>(std::lower_bound(keys_.begin(), keys_.end(), names_[id]) -
							  keys_.begin());
	}
	uint32_t Rank(uint32_t id) const
	{
		return rank_[id];
	}
	const std::vector<std::string> &Keys() const
	{
		return keys_;
	}

private:
	std::vector<std::string> names_;
	std::unordered_map<std::string, uint32_t> ids_;
	std::vector<std::string> keys_;
	std::vector<uint32_t> rank_;
};

/*
 * The bytes of one Native block, appended column by column into room
 * reserved up front (Reserve), so a value is one store, not a vector insert.
 */
class NativeBuffer
{
public:
	void Clear()
	{
		bytes_.clear();
	}
	const std::vector<uint8_t> &Bytes() const
	{
		return bytes_;
	}
	/* Make room for n more bytes up front: appending within them never reallocates. */
	void Reserve(size_t n)
	{
		bytes_.reserve(bytes_.size() + n);
	}
	void VarUInt(uint64_t v)
	{
		while (v >= 0x80) {
			bytes_.push_back(static_cast<uint8_t>(v | 0x80));
			v >>= 7;
		}
		bytes_.push_back(static_cast<uint8_t>(v));
	}
	void String(const std::string &s)
	{
		VarUInt(s.size());
		Raw(s.data(), s.size());
	}
	/* n values of type T, out(i) each, written in place (Native is little-endian, as this host). */
	template <typename T, typename F>
	void Values(size_t n, F &&out)
	{
		size_t at = bytes_.size();
		bytes_.resize(at + n * sizeof(T));
		uint8_t *p = bytes_.data() + at;
		for (size_t i = 0; i < n; i++) {
			T v = out(i);
			std::memcpy(p + i * sizeof(T), &v, sizeof(T));
		}
	}
	template <typename T>
	void Put(T v)
	{
		Raw(&v, sizeof v);
	}
	void Raw(const void *p, size_t n)
	{
		const uint8_t *b = static_cast<const uint8_t *>(p);
		bytes_.insert(bytes_.end(), b, b + n);
	}
	void Column(const char *name, const char *type)
	{
		String(name);
		String(type);
	}
	/*
	 * A LowCardinality(String) column of one dictionary: key version 1, then
	 * per block the index width with "has additional keys" and "update
	 * dictionary" set, the keys, and the rows' indexes into them.
	 */
	void LowCardinality(const char *name, const Dictionary &dict, const std::vector<uint32_t> &indexes)
	{
		Column(name, "LowCardinality(String)");
		Put<uint64_t>(1);
		size_t n = dict.Keys().size();
		uint64_t width = n <= 0x100 ? 0 : n <= 0x10000 ? 1 : 2; /* UInt8, UInt16, UInt32 */
		Put<uint64_t>(width | (1u << 9) | (1u << 10));
		Put<uint64_t>(n);
		for (const std::string &k : dict.Keys())
			String(k);
		Put<uint64_t>(indexes.size());
		auto index = [&](size_t i) { return indexes[i]; };
		if (width == 0)
			Values<uint8_t>(indexes.size(), index);
		else if (width == 1)
			Values<uint16_t>(indexes.size(), index);
		else
			Values<uint32_t>(indexes.size(), index);
	}

private:
	std::vector<uint8_t> bytes_;
};

/*
 * One source's records, mapped from its file (the page cache as it is: no
 * copy, no fresh pages to clear). Unmapped when it goes.
 */
class MappedRecords
{
public:
	explicit MappedRecords(const FlowBlockSource &src)
	{
		if (src.rows == 0)
			return;
		UniqueFd fd(open(src.path.c_str(), O_RDONLY | O_CLOEXEC));
		if (fd.get() < 0)
			throw ErrnoError(errno, "open " + src.path);
		struct stat st;
		if (fstat(fd.get(), &st) != 0)
			throw ErrnoError(errno, "stat " + src.path);
		uint64_t end = src.offset + src.rows * kRecordSize;
		if (static_cast<uint64_t>(st.st_size) < end)
			throw ErrnoError::WithMessage(
				EINVAL, src.path + " holds " + std::to_string(st.st_size) + " bytes, not the " +
						std::to_string(src.rows) + " flow records of " +
						std::to_string(kRecordSize) + " bytes after byte " +
						std::to_string(src.offset) + " its batch says");
		void *p = mmap(nullptr, end, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd.get(), 0);
		if (p == MAP_FAILED)
			throw ErrnoError(errno, "mmap " + src.path);
		base_ = static_cast<uint8_t *>(p);
		len_ = end;
		records_ = base_ + src.offset;
	}
	~MappedRecords()
	{
		if (base_)
			munmap(base_, len_);
	}
	MappedRecords(MappedRecords &&o) noexcept : base_(o.base_), len_(o.len_), records_(o.records_)
	{
		o.base_ = nullptr;
	}
	MappedRecords(const MappedRecords &) = delete;
	MappedRecords &operator=(const MappedRecords &) = delete;
	const uint8_t *At(uint64_t i) const
	{
		return records_ + i * kRecordSize;
	}

private:
	uint8_t *base_ = nullptr;
	size_t len_ = 0;
	const uint8_t *records_ = nullptr;
};

void WriteAll(int fd, const std::vector<uint8_t> &bytes, const std::string &path)
{
	size_t done = 0;
	while (done < bytes.size()) {
		ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			throw ErrnoError(errno, "write " + path);
		done += static_cast<size_t>(n);
	}
}

/* One Native block of rows [recs, recs + n * kRecordSize), already in order. */
void AppendBlock(NativeBuffer &out, const uint8_t *recs, size_t n, const std::vector<uint32_t> &hostIdx,
		 const std::vector<uint32_t> &ifaceIdx, const std::vector<int64_t> &offsets, const Dictionary &hosts,
		 const Dictionary &ifaces)
{
	auto rec = [&](size_t i) { return recs + i * kRecordSize; };
	out.Reserve(1024 + n * kRecordSize);
	out.VarUInt(19);
	out.VarUInt(n);
	out.Column("first_seen", "DateTime64(6, 'UTC')");
	out.Values<int64_t>(n,
			    [&](size_t i) { return EpochMicros(FG_VALUE_FIELD(rec(i), first_seen_ns), offsets[i]); });
	out.Column("last_seen", "DateTime64(6, 'UTC')");
	out.Values<int64_t>(n, [&](size_t i) { return EpochMicros(FG_VALUE_FIELD(rec(i), last_seen_ns), offsets[i]); });
	out.LowCardinality("host", hosts, hostIdx);
	out.LowCardinality("iface", ifaces, ifaceIdx);
	out.Column("direction", "Enum8('ingress' = 1, 'egress' = 2)");
	out.Values<int8_t>(n, [&](size_t i) { return Direction(rec(i)); });
	/* Addresses in network order, as the engine holds IPv6: two words of the record's bytes as they are. */
	for (const auto &[name, at] : { std::pair{ "src_addr", offsetof(fg_flow_key, src_addr) },
					std::pair{ "dst_addr", offsetof(fg_flow_key, dst_addr) } }) {
		out.Column(name, "IPv6");
		out.Values<unsigned __int128>(n, [&](size_t i) { return Field<unsigned __int128>(rec(i), at); });
	}
	/* A column that is a record field as it is, in the field's own type. */
	auto copy = [&](const char *name, const char *type, size_t at, auto zero) {
		using T = decltype(zero);
		out.Column(name, type);
		out.Values<T>(n, [&](size_t i) { return Field<T>(rec(i), at); });
	};
#define FG_COPY_KEY(name, type, f) copy(name, type, offsetof(fg_flow_key, f), decltype(fg_flow_key::f){})
#define FG_COPY_VALUE(name, type, f) \
	copy(name, type, kKeySize + offsetof(fg_flow_value, f), decltype(fg_flow_value::f){})
	FG_COPY_KEY("src_port", "UInt16", src_port);
	FG_COPY_KEY("dst_port", "UInt16", dst_port);
	FG_COPY_KEY("protocol", "UInt8", protocol);
	FG_COPY_KEY("vlan", "UInt16", vlan);
	out.Column("tcp_flags", "UInt8");
	out.Values<uint8_t>(n, [&](size_t i) { return FG_VALUE_FIELD(rec(i), tcp_flags) & 0xff; });
	FG_COPY_VALUE("packets", "UInt64", packets);
	FG_COPY_VALUE("bytes", "UInt64", bytes);
	FG_COPY_VALUE("dropped_packets", "UInt64", dropped_packets);
	FG_COPY_VALUE("dropped_bytes", "UInt64", dropped_bytes);
	FG_COPY_VALUE("rule_id", "UInt32", rule_id);
	FG_COPY_KEY("inner_vlan", "UInt16", inner_vlan);
#undef FG_COPY_KEY
#undef FG_COPY_VALUE
	out.Column("tcp_flags_ns", "UInt8"); /* the ninth flag bit (NS, now AE) */
	out.Values<uint8_t>(n, [&](size_t i) { return (FG_VALUE_FIELD(rec(i), tcp_flags) >> 8) & 1; });
}

} // namespace

uint64_t WriteFlowBlock(const std::string &outPath, const std::vector<FlowBlockSource> &sources, uint32_t blockRows)
{
	uint64_t total = 0;
	for (const FlowBlockSource &s : sources)
		total += s.rows;
	if (total > UINT32_MAX)
		throw ErrnoError::WithMessage(E2BIG, "a flow block takes at most 4294967295 rows, not " +
							     std::to_string(total));
	std::vector<MappedRecords> mapped;
	mapped.reserve(sources.size());
	std::vector<uint64_t> firstRow; /* of each source */
	std::vector<RowKey> keys(total);
	std::vector<uint32_t> sourceOf(total);
	Dictionary hosts, ifaces;
	uint64_t at = 0;
	for (uint32_t s = 0; s < sources.size(); s++) {
		const FlowBlockSource &src = sources[s];
		mapped.emplace_back(src);
		firstRow.push_back(at);
		uint32_t host = hosts.Add(src.host);
		std::unordered_map<uint32_t, uint32_t> ifaceIds; /* this source's ifindex → name id */
		for (uint64_t i = at; i < at + src.rows; i++) {
			const uint8_t *rec = mapped.back().At(i - at);
			uint32_t ifindex = FG_KEY_FIELD(rec, ifindex);
			auto it = ifaceIds.find(ifindex);
			if (it == ifaceIds.end()) {
				auto named = src.ifaces.find(ifindex);
				uint32_t id = ifaces.Add(named != src.ifaces.end() ? named->second :
										     "if" + std::to_string(ifindex));
				it = ifaceIds.emplace(ifindex, id).first;
			}
			RowKey &k = keys[i];
			k.hour = EpochMicros(FG_VALUE_FIELD(rec, first_seen_ns), src.epochOffsetNs) / kMicrosPerHour;
			AddressWords(rec + offsetof(fg_flow_key, src_addr), k.src);
			AddressWords(rec + offsetof(fg_flow_key, dst_addr), k.dst);
			/* names holds the ids for now, the ranks once every name is known */
			k.names = RowKey::Names(host, it->second, Direction(rec));
			k.row = static_cast<uint32_t>(i);
			sourceOf[i] = s;
		}
		at += src.rows;
	}
	hosts.Seal();
	ifaces.Seal();
	for (RowKey &k : keys)
		k.names = RowKey::Names(hosts.Rank(k.Host()), ifaces.Rank(k.Iface()), k.Dir());
	std::sort(keys.begin(), keys.end());

	/*
	 * Rewritten in place, not truncated first: a file reused from insert to
	 * insert keeps its page-cache pages, and the copy goes into pages already
	 * there. A new file's pages come fresh from the allocator; on a VM that
	 * hands freed memory back to its host (virtio-balloon free page
	 * reporting) they are first-touch faults, measured at five to seven
	 * times the copy. The length is set once the block is written.
	 */
	UniqueFd fd(open(outPath.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
	if (fd.get() < 0)
		throw ErrnoError(errno, "open " + outPath);
	off_t written = 0;
	/* Each block's records are gathered in order first, so its column passes read memory sequentially. */
	std::vector<uint8_t> ordered;
	std::vector<uint32_t> hostIdx, ifaceIdx;
	std::vector<int64_t> offsets;
	NativeBuffer out;
	for (uint64_t start = 0; start < total; start += blockRows) {
		size_t n = static_cast<size_t>(std::min<uint64_t>(blockRows, total - start));
		ordered.resize(n * kRecordSize);
		hostIdx.resize(n);
		ifaceIdx.resize(n);
		offsets.resize(n);
		auto recordOf = [&](uint32_t row) {
			uint32_t s = sourceOf[row];
			return mapped[s].At(row - firstRow[s]);
		};
		for (size_t i = 0; i < n; i++) {
			const RowKey &k = keys[start + i];
			/* The records are read in sorted order, so out of order: ask for one a few rows ahead. */
			if (start + i + 8 < total)
				__builtin_prefetch(recordOf(keys[start + i + 8].row));
			std::memcpy(ordered.data() + i * kRecordSize, recordOf(k.row), kRecordSize);
			hostIdx[i] = k.Host();
			ifaceIdx[i] = k.Iface();
			offsets[i] = sources[sourceOf[k.row]].epochOffsetNs;
		}
		out.Clear();
		AppendBlock(out, ordered.data(), n, hostIdx, ifaceIdx, offsets, hosts, ifaces);
		WriteAll(fd.get(), out.Bytes(), outPath);
		written += static_cast<off_t>(out.Bytes().size());
	}
	if (ftruncate(fd.get(), written) != 0)
		throw ErrnoError(errno, "truncate " + outPath);
	if (close(fd.release()) != 0)
		throw ErrnoError(errno, "close " + outPath);
	return total;
}

namespace
{

constexpr uint32_t kBlockRows = 65536;

class FlowBlockWorker : public PromiseWorker
{
public:
	FlowBlockWorker(Napi::Env env, std::string outPath, std::vector<FlowBlockSource> sources)
	    : PromiseWorker(env), outPath_(std::move(outPath)), sources_(std::move(sources))
	{
	}

private:
	void Run() override
	{
		rows_ = WriteFlowBlock(outPath_, sources_, kBlockRows);
	}
	std::string OomWhat() const override
	{
		return "out of memory writing the flow block " + outPath_;
	}
	Napi::Value Result(Napi::Env env) override
	{
		return Napi::Number::New(env, static_cast<double>(rows_));
	}

	std::string outPath_;
	std::vector<FlowBlockSource> sources_;
	uint64_t rows_ = 0;
};

const char kUsage[] = "writeFlowBlock(outPath: string, sources: {path: string, offset: number, rows: number, "
		      "host: string, epochOffsetNs: bigint, ifaces: Record<string, string>}[])";

FlowBlockSource SourceFrom(Napi::Env env, Napi::Value v, size_t i)
{
	if (!v.IsObject())
		ThrowTypeError(env, std::string(kUsage) + ": source " + std::to_string(i) + " is not an object");
	Napi::Object o = v.As<Napi::Object>();
	FlowBlockSource s;
	if (!o.Get("path").IsString() || !o.Get("host").IsString() || !o.Get("epochOffsetNs").IsBigInt() ||
	    !o.Get("ifaces").IsObject())
		ThrowTypeError(env, std::string(kUsage) + ": source " + std::to_string(i) + " lacks a field");
	s.path = o.Get("path").As<Napi::String>();
	s.host = o.Get("host").As<Napi::String>();
	s.offset = static_cast<uint64_t>(IntegerOption(env, o, "writeFlowBlock", "offset", 0, INT64_MAX / 2));
	s.rows = static_cast<uint64_t>(IntegerOption(env, o, "writeFlowBlock", "rows", 0, UINT32_MAX));
	bool lossless = false;
	s.epochOffsetNs = o.Get("epochOffsetNs").As<Napi::BigInt>().Int64Value(&lossless);
	if (!lossless)
		ThrowRangeError(env, "writeFlowBlock(): epochOffsetNs of source " + std::to_string(i) +
					     " is not a 64-bit integer");
	Napi::Object ifaces = o.Get("ifaces").As<Napi::Object>();
	Napi::Array names = ifaces.GetPropertyNames();
	for (uint32_t j = 0; j < names.Length(); j++) {
		std::string key = names.Get(j).ToString();
		Napi::Value name = ifaces.Get(key);
		/* Only what a map key can be (1 to 10 digits, below 2^32): any other entry names no interface. */
		bool digits = !key.empty() && key.size() <= 10 &&
			      std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
		if (!digits || !name.IsString())
			continue;
		unsigned long long ifindex = std::stoull(key);
		if (ifindex > UINT32_MAX)
			continue;
		s.ifaces[static_cast<uint32_t>(ifindex)] = name.As<Napi::String>();
	}
	return s;
}

} // namespace

Napi::Value WriteFlowBlockJs(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	return Async(env, [&]() -> Napi::Value {
		if (info.Length() < 2 || !info[0].IsString() || !info[1].IsArray())
			ThrowTypeError(env, kUsage);
		Napi::Array arr = info[1].As<Napi::Array>();
		std::vector<FlowBlockSource> sources;
		for (uint32_t i = 0; i < arr.Length(); i++)
			sources.push_back(SourceFrom(env, arr.Get(i), i));
		auto *worker = new FlowBlockWorker(env, info[0].As<Napi::String>(), std::move(sources));
		return worker->Start();
	});
}

} // namespace fg
