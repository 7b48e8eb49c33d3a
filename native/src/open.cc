#include "open.h"

#include "config.h"
#include "errors.h"
#include "flow_slots.h"
#include "info.h"
#include "libbpf_log.h"
#include "pins.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <flowgate.h>
#include <sys/file.h>

#include <cerrno>
#include <vector>

namespace fg
{

namespace
{

enum class Size { Fixed, Flows, Rules, Prefixes };

struct MapSpec {
	const char *name;
	uint32_t type;
	uint32_t keySize;
	uint32_t valueSize;
	Size size;
};

/* The maps flowgate pins, with the shape the addon and the TS decoder rely on. */
const MapSpec kMapSpecs[] = {
	{ "config", BPF_MAP_TYPE_ARRAY, 4, sizeof(fg_config), Size::Fixed },
	{ "flows_a", BPF_MAP_TYPE_LRU_HASH, sizeof(fg_flow_key), sizeof(fg_flow_value), Size::Flows },
	{ "flows_b", BPF_MAP_TYPE_LRU_HASH, sizeof(fg_flow_key), sizeof(fg_flow_value), Size::Flows },
	{ "flow_slots", BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, Size::Fixed },
	{ "slot_stats", BPF_MAP_TYPE_PERCPU_ARRAY, 4, sizeof(fg_slot_stats), Size::Fixed },
	{ "iface_stats", BPF_MAP_TYPE_PERCPU_HASH, sizeof(fg_iface_key), sizeof(fg_iface_stats), Size::Fixed },
	{ "src_lpm_0", BPF_MAP_TYPE_LPM_TRIE, sizeof(fg_lpm_key), sizeof(fg_lpm_verdict), Size::Prefixes },
	{ "src_lpm_1", BPF_MAP_TYPE_LPM_TRIE, sizeof(fg_lpm_key), sizeof(fg_lpm_verdict), Size::Prefixes },
	{ "dst_lpm_0", BPF_MAP_TYPE_LPM_TRIE, sizeof(fg_lpm_key), sizeof(fg_lpm_verdict), Size::Prefixes },
	{ "dst_lpm_1", BPF_MAP_TYPE_LPM_TRIE, sizeof(fg_lpm_key), sizeof(fg_lpm_verdict), Size::Prefixes },
	{ "complex_0", BPF_MAP_TYPE_ARRAY, 4, sizeof(fg_rule), Size::Fixed },
	{ "complex_1", BPF_MAP_TYPE_ARRAY, 4, sizeof(fg_rule), Size::Fixed },
	{ "rule_stats", BPF_MAP_TYPE_PERCPU_ARRAY, 4, sizeof(fg_rule_stats), Size::Rules },
};

const char *const kSubdirs[] = { "maps", "progs", "links" };

std::string StaleHint(const std::string &dir)
{
	return "stop the old agent and run with --unpin, or remove " + dir;
}

uint32_t SizeFor(Size size, const OpenOptions &opts)
{
	switch (size) {
	case Size::Flows:
		return opts.maxFlows;
	case Size::Rules:
		return opts.maxRules;
	case Size::Prefixes:
		return opts.maxPrefixes;
	case Size::Fixed:
		break;
	}
	return 0;
}

/*
 * maps/config is pinned last, so its absence with other pins present means
 * a create that died half-way: those pins belong to nobody. XDP links are
 * kept: attachXdp() moves a surviving link over to the new program.
 */
void RemoveStalePins(const std::string &root)
{
	for (const char *sub : { "maps", "progs" }) {
		std::string dir = JoinPath(root, sub);
		for (const std::string &name : ListDir(dir))
			UnlinkIfExists(JoinPath(dir, name));
	}
}

struct ObjectCloser {
	void operator()(bpf_object *obj) const
	{
		bpf_object__close(obj);
	}
};
using ObjectPtr = std::unique_ptr<bpf_object, ObjectCloser>;

void SetMaxEntries(bpf_map *map, const char *name, uint32_t n)
{
	CheckBpf(bpf_map__set_max_entries(map, n), std::string("size map ") + name);
}

/*
 * flow_slots' inner-map template must match flows_a/flows_b, or the load
 * rejects its static {flows_a, flows_b} slots. libbpf 1.1's
 * bpf_map__set_max_entries() on the template from bpf_map__inner_map()
 * dereferences the template's (unset) object pointer and crashes, so the
 * template is a map we create, shaped like flows_a, handed over with
 * bpf_map__set_inner_map_fd(). It only has to live until the load.
 *
 * Hash inner maps are matched on type, key/value size and flags, not on
 * max_entries (bpf_map_meta_equal), and an LRU map is preallocated: a
 * one-entry template saves allocating a third full flow table at startup.
 * Array inner maps are matched on max_entries too, so those get the size.
 */
UniqueFd SetInnerTemplate(bpf_object *obj, const OpenOptions &opts)
{
	bpf_map *slots = bpf_object__find_map_by_name(obj, "flow_slots");
	bpf_map *flows = bpf_object__find_map_by_name(obj, "flows_a");
	if (!bpf_map__inner_map(slots))
		throw ErrnoError::WithMessage(EINVAL, "map flow_slots in " + opts.objectPath +
							      " has no inner map template: rebuild datapath/");
	bpf_map_type type = bpf_map__type(flows);
	uint32_t entries = IsArrayType(type) ? opts.maxFlows : 1;
	LIBBPF_OPTS(bpf_map_create_opts, copts, .map_flags = bpf_map__map_flags(flows));
	int fd = bpf_map_create(type, "fg_flows_tmpl", bpf_map__key_size(flows), bpf_map__value_size(flows), entries,
				&copts);
	CheckBpf(fd, "create the inner map template of flow_slots");
	UniqueFd tmpl(fd);
	CheckBpf(bpf_map__set_inner_map_fd(slots, tmpl.get()), "set the inner map template of flow_slots");
	return tmpl;
}

void CreateAndPin(const OpenOptions &opts, const std::string &root)
{
	LibbpfLogCapture log;
	ObjectPtr obj(bpf_object__open_file(opts.objectPath.c_str(), nullptr));
	if (!obj) {
		int err = errno;
		throw ErrnoError(err, "open BPF object " + opts.objectPath,
				 err == ENOENT ? "build it first: npm run build:bpf (make -C datapath)" : log.Text());
	}
	for (const MapSpec &spec : kMapSpecs) {
		bpf_map *map = bpf_object__find_map_by_name(obj.get(), spec.name);
		if (!map)
			throw ErrnoError::WithMessage(ENOENT,
						      "BPF object " + opts.objectPath + " has no map '" + spec.name +
							      "': it does not match this flowgate, rebuild datapath/");
		uint32_t n = SizeFor(spec.size, opts);
		if (n)
			SetMaxEntries(map, spec.name, n);
	}
	UniqueFd innerTemplate = SetInnerTemplate(obj.get(), opts);

	bpf_program *progs[kHookCount];
	for (int i = 0; i < kHookCount; i++) {
		const char *name = HookProgramName(static_cast<Hook>(i));
		progs[i] = bpf_object__find_program_by_name(obj.get(), name);
		if (!progs[i])
			throw ErrnoError::WithMessage(ENOENT, "BPF object " + opts.objectPath + " has no program '" +
								      name + "': rebuild datapath/");
	}

	int err = bpf_object__load(obj.get());
	if (err) {
		std::string tail = log.Text();
		throw ErrnoError(err, "load BPF object " + opts.objectPath, LoadFailureHint(err, tail));
	}

	int configFd = bpf_map__fd(bpf_object__find_map_by_name(obj.get(), "config"));
	fg_config cfg = {};
	cfg.layout_version = FG_LAYOUT_VERSION;
	cfg.max_flows = opts.maxFlows;
	cfg.max_rules = opts.maxRules;
	cfg.max_prefixes = opts.maxPrefixes;
	uint32_t zero = 0;
	CheckBpf(bpf_map_update_elem(configFd, &zero, &cfg, BPF_ANY), "initialise the config map");

	std::vector<std::string> pinned;
	auto pin = [&](int fd, const std::string &path) {
		CheckBpf(bpf_obj_pin(fd, path.c_str()), "pin " + path);
		pinned.push_back(path);
	};
	try {
		for (const MapSpec &spec : kMapSpecs) {
			if (std::string(spec.name) != "config")
				pin(bpf_map__fd(bpf_object__find_map_by_name(obj.get(), spec.name)),
				    JoinPath(root, std::string("maps/") + spec.name));
		}
		for (int i = 0; i < kHookCount; i++)
			pin(bpf_program__fd(progs[i]),
			    JoinPath(root, std::string("progs/") + HookName(static_cast<Hook>(i))));
		/* Last: its presence is what marks the pin directory complete. */
		pin(configFd, JoinPath(root, "maps/config"));
	} catch (...) {
		for (const std::string &path : pinned)
			unlink(path.c_str());
		throw;
	}
	/* The pins hold the maps and programs now; the object is closed and everything is reopened from them. */
}

void CheckShape(const std::string &root, const MapSpec &spec, const MapRef &m)
{
	if (m.type != spec.type || m.keySize != spec.keySize || m.valueSize != spec.valueSize)
		throw ErrnoError::WithMessage(
			ESTALE, "pinned map " + JoinPath(root, std::string("maps/") + spec.name) + " has type " +
					std::to_string(m.type) + ", key " + std::to_string(m.keySize) + " B, value " +
					std::to_string(m.valueSize) + " B; this flowgate needs type " +
					std::to_string(spec.type) + ", key " + std::to_string(spec.keySize) +
					" B, value " + std::to_string(spec.valueSize) + " B: " + StaleHint(root));
}

std::unique_ptr<DatapathState> Adopt(const std::string &root)
{
	auto state = std::make_unique<DatapathState>();
	state->pinDir = root;
	for (const MapSpec &spec : kMapSpecs) {
		std::string path = JoinPath(root, std::string("maps/") + spec.name);
		int fd = bpf_obj_get(path.c_str());
		if (fd < 0) {
			if (fd == -ENOENT)
				throw ErrnoError::WithMessage(ENOENT, "pinned state in " + root + " is incomplete (" +
									      path +
									      " is missing): " + StaleHint(root));
			throw ErrnoError(fd, "open pinned map " + path);
		}
		MapRef ref;
		UniqueFd owned(fd);
		bpf_map_info info = GetMapInfo(fd, "map " + path);
		ref.name = spec.name;
		ref.Set(std::move(owned), info);
		state->maps.emplace(spec.name, std::move(ref));
	}
	/* Version first: a different layout explains any shape mismatch below better than the mismatch does. */
	MapConfig(*state);
	CheckLayoutVersion(*state);
	for (const MapSpec &spec : kMapSpecs)
		CheckShape(root, spec, state->Map(spec.name));
	/*
	 * The flow maps are the ones flow_slots holds, not necessarily the
	 * pinned ones: a flow map replace may have died before its re-pin.
	 * Checked again: those may be other maps now.
	 */
	AdoptFlowSlots(*state);
	for (const MapSpec &spec : kMapSpecs)
		CheckShape(root, spec, state->Map(spec.name));
	for (int i = 0; i < kHookCount; i++) {
		std::string path = JoinPath(root, std::string("progs/") + HookName(static_cast<Hook>(i)));
		int fd = bpf_obj_get(path.c_str());
		if (fd < 0) {
			if (fd == -ENOENT)
				throw ErrnoError::WithMessage(ENOENT, "pinned state in " + root + " is incomplete (" +
									      path +
									      " is missing): " + StaleHint(root));
			throw ErrnoError(fd, "open pinned program " + path);
		}
		ProgRef &prog = state->progs[i];
		prog.fd.reset(fd);
		bpf_prog_info info = GetProgInfo(fd, "program " + path);
		prog.id = info.id;
		prog.type = info.type;
	}
	return state;
}

} // namespace

std::unique_ptr<DatapathState> OpenDatapath(const OpenOptions &opts)
{
	std::string root = opts.bpffs;
	while (root.size() > 1 && root.back() == '/')
		root.pop_back();
	EnsureBpffs(root);
	for (const char *sub : kSubdirs)
		MkdirP(JoinPath(root, sub), 0700);

	/* Two agents starting together must not both create: serialise on the pin root. */
	UniqueFd lock(open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (!lock.valid())
		throw ErrnoError(errno, "open " + root);
	if (flock(lock.get(), LOCK_EX) != 0)
		throw ErrnoError(errno, "lock " + root);

	bool adopted = PathExists(JoinPath(root, "maps/config"));
	if (adopted) {
		std::unique_ptr<DatapathState> state = Adopt(root);
		state->adopted = true;
		return state;
	}
	RemoveStalePins(root);
	CreateAndPin(opts, root);
	try {
		return Adopt(root);
	} catch (...) {
		/* What we just created does not pass our own checks (object and header disagree): leave no pins. */
		UnlinkIfExists(JoinPath(root, "maps/config"));
		RemoveStalePins(root);
		throw;
	}
}

} // namespace fg
