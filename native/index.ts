/**
 * Typed face of the native addon (native/src/*.cc, built by node-gyp into
 * native/build/Release/flowgate_native.node). This is the only place the
 * control plane touches bpf(): everything here is implemented in C++ over
 * libbpf. Slow calls (batch map operations) return Promises and run on the
 * libuv thread pool; the rest are synchronous and cheap.
 *
 * Errors thrown or rejected by the addon are Error objects with `code` set
 * to the errno name (e.g. "EPERM", "EOPNOTSUPP") and `errno` to its number,
 * and a message that says what to do about it.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export type XdpMode = 'native' | 'generic';
export type Hook = 'xdp' | 'tc_egress' | 'tc_ingress';

export interface OpenOptions {
  /** Path of the compiled BPF object (datapath/build/flowgate.bpf.o). */
  objectPath: string;
  /** Pin root. Created, and a bpffs mounted on it, when it is not on one. */
  bpffs: string;
  /** Entries per flow map; only used when the maps are created, not adopted. */
  maxFlows: number;
  /** Rule ids are below this (size of rule_stats). */
  maxRules: number;
  /** Capacity of each LPM trie. */
  maxPrefixes: number;
}

export interface MapInfo {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  id: number;
  /** True for per-CPU map types; their values are returned summed. */
  perCpu: boolean;
}

export interface AttachResult {
  ifindex: number;
  hook: Hook;
  /** XDP only: the mode actually in use. */
  mode?: XdpMode;
  /** True when the hook already ran our program (pinned link or tc filter). */
  adopted: boolean;
  /** Set when auto mode fell back to generic XDP, saying why. */
  warning?: string;
}

export interface Attachment {
  ifname: string;
  ifindex: number;
  hook: Hook;
  mode?: XdpMode;
}

export interface TestRunOptions {
  /** Repeat count for BPF_PROG_TEST_RUN; durationNs is the mean per run. */
  repeat?: number;
  /** XDP: ctx ingress_ifindex; TC: ctx ifindex. Default: loopback. */
  ifindex?: number;
  /** TC only: __sk_buff gso_segs / gso_size of the test skb. */
  gsoSegs?: number;
  gsoSize?: number;
}

export interface TestRunResult {
  /** Program return code: XDP_* or TC_ACT_*. */
  retval: number;
  durationNs: number;
  frameOut: Buffer;
}

export interface DrainTiming {
  count: number;
  ns: number;
}

export interface NativeDatapath {
  /** True when the pinned maps and programs were adopted, not created. */
  readonly adopted: boolean;
  readonly pinDir: string;

  /** A copy of struct fg_config from the mmap'd config map. */
  readConfig(): Buffer;
  /** Atomic store of one aligned u32 field of fg_config (byte offset). */
  writeConfigU32(offset: number, value: number): void;
  /**
   * Wait for an RCU grace period: when it returns, no program run that
   * started before the call is still running (used after a slot flip).
   */
  synchronize(): void;

  mapInfo(name: string): MapInfo;
  /** Batch lookup-and-delete of every entry: packed records key||value. */
  lookupAndDeleteAll(name: string): Promise<Buffer>;
  /** Batch lookup of every entry: key||value records, per-CPU values summed per u64 lane. */
  dumpAll(name: string): Promise<Buffer>;
  /**
   * One chunk of a whole-map read of a hash map, not deleting: records (key||value) into `out`
   * (a whole number of records, reused by the caller) from `cursor` (null: the start) until
   * `out` is full or the map ends; the kernel hands out whole hash buckets, so a chunk may end
   * short of full. `next` is the cursor of the next chunk, null once the map is read to its end.
   * A map nothing writes (a retired flow slot) reads exactly once over the chunks.
   * `out` must not be touched until the Promise settles.
   */
  dumpChunk(name: string, out: Buffer, cursor: Buffer | null): Promise<{ count: number; next: Buffer | null }>;
  /** keys: count*keySize bytes, values: count*valueSize bytes (per-CPU: the value is copied to every CPU). */
  updateBatch(name: string, keys: Buffer, values: Buffer): Promise<void>;
  deleteBatch(name: string, keys: Buffer): Promise<void>;
  /** Delete every entry (hash, LRU, LPM) or zero every entry (arrays). Returns entries removed. */
  clear(name: string): Promise<number>;
  /** One entry (per-CPU summed), or null when absent. */
  lookup(name: string, key: Buffer): Buffer | null;
  update(name: string, key: Buffer, value: Buffer): void;
  /** Kernel floor for the drain benchmark: lookup-and-delete every entry into scratch memory. */
  drainBaseline(name: string): Promise<DrainTiming>;
  /**
   * Empty the idle flow slot by swapping its map (flows_a for slot 0, flows_b for 1) for a new
   * empty one of the same shape: flow_slots[slot], the pin and mapInfo() name the new map, the
   * old one is freed. Rejects EBUSY for the slot the programs write. Until flow_slots holds the
   * new map a failure changes nothing; after it (only the re-pin is left) the new map is in use
   * and the next open() fixes the pin.
   */
  replaceFlowMap(slot: number): Promise<void>;

  attachXdp(ifname: string, mode: XdpMode | 'auto'): AttachResult;
  attachTc(ifname: string, direction: 'egress' | 'ingress'): AttachResult;
  /** Returns false when the hook was not attached. */
  detach(ifname: string, hook: Hook): boolean;
  attachments(): Attachment[];

  testRun(hook: Hook, frame: Buffer, opts?: TestRunOptions): TestRunResult;

  /** Detach every attachment and remove every pin (the agent's --unpin exit). */
  unpinAll(): void;
  /** Release fds and the mapping; pins and attachments stay. */
  close(): void;
}

export interface ProgramHandle {
  testRun(frame: Buffer, opts?: TestRunOptions): TestRunResult;
  close(): void;
}

export interface FieldLayout {
  offset: number;
  size: number;
}
export interface StructLayout {
  size: number;
  fields: Record<string, FieldLayout>;
}

export interface NativeBinding {
  open(opts: OpenOptions): NativeDatapath;
  /** Load any BPF object without pinning and return its named program (benchmark floors). */
  loadProgram(objectPath: string, programName: string): ProgramHandle;
  /** offsetof/sizeof of every struct in datapath/include/flowgate.h, as compiled. */
  layout(): Record<string, StructLayout>;
  /** Numeric constants of flowgate.h (FG_LAYOUT_VERSION, FG_MAL_*, …). */
  constants(): Record<string, number>;
  /** if_nametoindex; throws ENODEV naming the interface. */
  ifindex(name: string): number;
  /** Number of possible CPUs (per-CPU value stride). */
  possibleCpus(): number;
  /**
   * glibc malloc: mallopt(M_ARENA_MAX) and mallopt(M_MMAP_THRESHOLD) (a fixed
   * threshold also stops glibc from raising it as large blocks are freed).
   * False when the C library refused or is not glibc. bin/flowgate.js calls
   * it for `run`, before anything else allocates much.
   */
  tuneMalloc(options: { arenaMax?: number; mmapThreshold?: number }): boolean;
  /**
   * Unmap (madvise MADV_DONTNEED) the pages of this process's read-only file
   * mappings whose path contains `pathFragment`, skipping any mapping with a
   * page that differs from the file. They stay in the page cache; a page
   * touched again is a minor fault. Returns the bytes of the mappings released.
   */
  releaseFilePages(pathFragment: string): number;
  /**
   * Drained flow records to a ClickHouse Native file of flowgate.flows rows
   * (every column, the table's types), sorted by the flows and talkers_1h
   * ORDER BY, on the libuv pool. An existing `outPath` is rewritten in
   * place and cut to the block's length (its page-cache pages are reused).
   * Resolves to the rows written; rejects naming the file that could not be
   * read or written, or was short.
   */
  writeFlowBlock(outPath: string, sources: readonly FlowBlockSource[]): Promise<number>;
}

/** One drained batch for writeFlowBlock: `rows` records of the packed layout after `offset` bytes of `path`. */
export interface FlowBlockSource {
  path: string;
  offset: number;
  rows: number;
  host: string;
  /** Wall clock minus CLOCK_MONOTONIC at the drain, ns. */
  epochOffsetNs: bigint;
  /** ifindex → interface name; another ifindex is named `if<ifindex>`. */
  ifaces: Readonly<Record<string, string>>;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.basename(path.dirname(here)) === 'dist' ? path.resolve(here, '../..') : path.resolve(here, '..');

/** Where the build puts the BPF objects. */
export const datapathBuildDir = path.join(repoRoot, 'datapath', 'build');
export const flowgateObjectPath = path.join(datapathBuildDir, 'flowgate.bpf.o');

let cached: NativeBinding | undefined;

/** Load the addon once; a missing build is a clear error. */
export function loadNative(): NativeBinding {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const addonPath = path.join(repoRoot, 'native', 'build', 'Release', 'flowgate_native.node');
  try {
    cached = require(addonPath) as NativeBinding;
  } catch (err) {
    throw new Error(`flowgate native addon not built at ${addonPath}: run "npm run build" (${(err as Error).message})`);
  }
  return cached;
}
