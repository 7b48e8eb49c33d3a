/**
 * Datapath: the control plane's handle on the loaded (or adopted) eBPF
 * programs and maps. It owns the two double-buffering protocols:
 *
 *  - flows: programs write flow_slots[config.flow_slot]. drain() flips the
 *    slot, waits a grace period (no program run can still hold the old slot)
 *    and batch-reads the old map, which nothing writes any more: no
 *    increment is lost between the read and the delete. A retired slot is
 *    emptied by deleting its entries or, when it is well filled, by swapping
 *    its map for a new empty one (releaseSlot).
 *  - rules: programs read rule tables of slot rule_gen & 1. A change is
 *    written to the idle slot, then one store of rule_gen switches every
 *    packet to it at once. After a grace period the same change is written
 *    to the previous slot, so both slots hold the same tables again: that
 *    is what lets applyDelta() write only what changed instead of a whole
 *    slot. loadRules() writes whole tables; applyDelta() only the entries a
 *    rule change touched (control/rules/lpm-index.ts computes them).
 */
import { randomInt } from 'node:crypto';
import {
  loadNative,
  flowgateObjectPath,
  type AttachResult,
  type Attachment,
  type Hook,
  type NativeDatapath,
  type TestRunOptions,
  type TestRunResult,
  type XdpMode,
} from '../../native/index.js';
import type { RuleTables } from '../rules/compile.js';
import type { EncodedLpmDelta } from '../rules/lpm-index.js';
import { SerialQueue } from '../util/serial.js';
import {
  FLOW_RECORD_SIZE,
  LPM_KEY,
  LPM_VERDICT,
  RULE_STATS,
  SLOT_STATS,
  configOffset,
  decodeConfig,
  decodeIfaceStats,
  decodeRuleStats,
  decodeSlotStats,
  flowRecordCount,
  u32Key,
  type DatapathConfig,
  type IfaceStats,
} from './layout.js';

export interface DatapathOptions {
  bpffs: string;
  maxFlows: number;
  maxRules: number;
  maxPrefixes: number;
  objectPath?: string;
}

export interface AttachOptions {
  xdpMode: XdpMode | 'auto';
  /** Also count (and filter) what the host sends, with TC on egress. */
  egress: boolean;
}

/** One drained flow map. */
export interface Drain {
  slot: number;
  /** Packed key||value records: decode with layout.ts. */
  records: Buffer;
  count: number;
  /** Inserts the programs made into this map since it was last drained. */
  newFlows: number;
  /** Inserts the kernel refused. */
  insertFailed: number;
  /** Flows inserted but gone before the drain: LRU evictions. */
  evicted: number;
}

/** A slot read a chunk at a time (readSlotChunks): a Drain whose records went to the caller chunk by chunk. */
export type SlotRead = Omit<Drain, 'records'>;

/** A change to the rule set, relative to the tables both rule slots hold. */
export interface RuleTablesDelta {
  src?: EncodedLpmDelta;
  dst?: EncodedLpmDelta;
  /** The whole new multi-field table when it changed: at most 4096 rules, so it is rewritten in full. */
  complex?: RuleTables['complex'];
}

/** A rule switch done: the kernel enforces generation `gen` from the moment this is returned. */
export interface RuleSwitch {
  gen: number;
  /**
   * Resolves when the previous slot holds the same tables again (after a
   * grace period). Rule changes queue behind it anyway; awaiting it is only
   * for whoever reads both slots. Rejects when that write failed: the next
   * delta then needs a full load.
   */
  settled: Promise<void>;
}

/** Writes one rule slot: the same writer runs on the idle slot, then on the previous one. */
type SlotWriter = (slot: number) => Promise<void>;

const FLOW_MAPS = ['flows_a', 'flows_b'] as const;

/** The flow map a slot names (flow_slots[0] is flows_a, [1] flows_b). */
export function flowMapName(slot: number): (typeof FLOW_MAPS)[number] {
  return FLOW_MAPS[slot & 1]!;
}
const SRC_LPM = ['src_lpm_0', 'src_lpm_1'] as const;
const DST_LPM = ['dst_lpm_0', 'dst_lpm_1'] as const;
const COMPLEX = ['complex_0', 'complex_1'] as const;
/** Up to this many LPM upserts are written synchronously (see applyDelta). */
const SYNC_UPSERTS = 16;

/**
 * releaseSlot() swaps a retired slot's map for a new empty one (replaceFlowMap)
 * when it holds at least this share of the map's capacity, and deletes the
 * entries (lookup-and-delete batch) below it. Process CPU measured on the dev
 * VM (scratch/release-cost.ts, 524,288-entry map, 3–5 reps): deleting costs
 * ~0.46 µs a flow (50k flows: 21–26 ms, 200k: 79–97 ms, 500k: 222–252 ms);
 * replacing costs 25–40 ms however full the map is, nearly all of it the
 * kernel zeroing the new map's memory, so it grows with capacity instead
 * (131,072 entries: ~8 ms; 1,048,576: 55–90 ms, some at 250–700 ms, again
 * zeroing pages), plus ~7 ms in a kernel worker that frees the old map
 * (system-wide CPU of 20 creates and closes, 524,288 entries). They cross
 * near 70k flows, 0.13 of capacity; ties go to deleting, which allocates
 * no second map.
 */
export const REPLACE_FLOW_MAP_SHARE = 0.15;

export type SlotRelease = 'deleted' | 'replaced';

function checkCapacity(cfg: DatapathConfig, src: number, dst: number): void {
  for (const [name, count] of [
    ['src', src],
    ['dst', dst],
  ] as const) {
    if (count > cfg.maxPrefixes) {
      throw new RangeError(`${count} ${name} prefixes exceed the table capacity of ${cfg.maxPrefixes}`);
    }
  }
}

export class Datapath {
  private readonly serial = new SerialQueue();
  /**
   * Rule switches queue on their own: flow slots and rule slots are
   * independent, and a rule change must not wait behind the drain of a
   * million flows.
   */
  private readonly ruleSerial = new SerialQueue();
  /**
   * Both rule slots hold the same tables, so a delta written to the idle one
   * gives the same rule set as the active one plus the delta. False until
   * the first full load (an adopted slot pair may differ: a previous agent
   * can have died between the two writes) and after any failed write.
   */
  private slotsInSync = false;

  private constructor(readonly native: NativeDatapath) {}

  static open(opts: DatapathOptions): Datapath {
    const native = loadNative().open({
      objectPath: opts.objectPath ?? flowgateObjectPath,
      bpffs: opts.bpffs,
      maxFlows: opts.maxFlows,
      maxRules: opts.maxRules,
      maxPrefixes: opts.maxPrefixes,
    });
    return new Datapath(native);
  }

  /** True when pinned programs and maps from an earlier agent were adopted. */
  get adopted(): boolean {
    return this.native.adopted;
  }

  config(): DatapathConfig {
    return decodeConfig(this.native.readConfig());
  }

  /** XDP on ingress, and TC on egress unless disabled. Adopts what is already attached. */
  attach(ifname: string, opts: AttachOptions): AttachResult[] {
    const results = [this.native.attachXdp(ifname, opts.xdpMode)];
    if (opts.egress) results.push(this.native.attachTc(ifname, 'egress'));
    return results;
  }

  /** Remove every flowgate hook from the interface; true when any was attached. */
  detach(ifname: string): boolean {
    const hooks: Hook[] = ['xdp', 'tc_egress', 'tc_ingress'];
    return hooks.map((hook) => this.native.detach(ifname, hook)).some(Boolean);
  }

  attachments(): Attachment[] {
    return this.native.attachments();
  }

  /** Flip the flow slot and drain the map the programs just stopped writing. */
  drain(): Promise<Drain> {
    return this.serial.run(async () => {
      const old = this.config().flowSlot & 1;
      this.native.writeConfigU32(configOffset('flow_slot'), old ^ 1);
      this.native.synchronize();
      return this.collect(old);
    });
  }

  /**
   * Drain the idle slot without flipping: what a previous agent flipped but
   * never drained (it was killed in between). Call once after adopting.
   */
  drainIdle(): Promise<Drain> {
    return this.serial.run(async () => this.collect((this.config().flowSlot & 1) ^ 1));
  }

  private async collect(slot: number): Promise<Drain> {
    const drain = this.withSlotStats(slot, await this.native.lookupAndDeleteAll(FLOW_MAPS[slot]!));
    this.resetSlotStats(slot);
    return drain;
  }

  /** A slot's records with its insert counters: how many were inserted, refused, evicted. */
  private withSlotStats(slot: number, records: Buffer): Drain {
    const count = flowRecordCount(records);
    const { newFlows, insertFailed } = this.slotStats(slot);
    return { slot, records, count, newFlows, insertFailed, evicted: Math.max(0, newFlows - count) };
  }

  private slotStats(slot: number): { newFlows: number; insertFailed: number } {
    const stats = this.native.lookup('slot_stats', u32Key(slot));
    return stats ? decodeSlotStats(stats) : { newFlows: 0, insertFailed: 0 };
  }

  private resetSlotStats(slot: number): void {
    this.native.update('slot_stats', u32Key(slot), Buffer.alloc(SLOT_STATS.size));
  }

  /**
   * The random id of this set of maps (set once, survives restarts through
   * the pins). With a slot's epoch it names a drained batch uniquely.
   */
  instance(): number {
    const current = this.config().instance;
    if (current) return current;
    const id = randomInt(1, 0xffffffff) >>> 0 || 1;
    this.native.writeConfigU32(configOffset('instance'), id);
    return id;
  }

  /** The slot programs do not write, and the epoch its contents belong to. */
  idleSlot(): { slot: number; epoch: number } {
    const cfg = this.config();
    const slot = (cfg.flowSlot & 1) ^ 1;
    return { slot, epoch: cfg.slotEpoch[slot]! };
  }

  /**
   * Switch programs to the idle slot (which must be empty: released) under
   * the next epoch, and wait until no program still writes the old one.
   * Returns the slot just retired and its epoch: read it, then release it.
   */
  flip(): Promise<{ slot: number; epoch: number }> {
    return this.serial.run(async () => {
      const cfg = this.config();
      const old = cfg.flowSlot & 1;
      const next = old ^ 1;
      const epoch = cfg.slotEpoch[old]!;
      this.native.writeConfigU32(configOffset('slot_epoch', next), (epoch + 1) >>> 0);
      this.native.writeConfigU32(configOffset('flow_slot'), next);
      this.native.synchronize();
      return { slot: old, epoch };
    });
  }

  /**
   * Read a retired slot a chunk at a time (spool first, then release): every flow, not deleted,
   * read into `buf` (a whole number of flow records, reused for each chunk)
   * and handed to `onChunk` as a view of `buf` that is valid until what
   * onChunk returns has settled. Memory stays one chunk however many flows
   * the slot holds; nothing writes a retired slot, so the chunks are every
   * flow exactly once.
   */
  readSlotChunks(slot: number, buf: Buffer, onChunk: (records: Buffer) => void | Promise<void>): Promise<SlotRead> {
    return this.serial.run(async () => {
      let count = 0;
      let cursor: Buffer | null = null;
      for (;;) {
        let chunk: { count: number; next: Buffer | null };
        try {
          chunk = await this.native.dumpChunk(FLOW_MAPS[slot]!, buf, cursor);
        } catch (err) {
          // One hash bucket holds more flows than buf: a bigger buffer for the rest of this read.
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
          buf = Buffer.allocUnsafeSlow(buf.length * 2);
          continue;
        }
        if (chunk.count > 0) await onChunk(buf.subarray(0, chunk.count * FLOW_RECORD_SIZE));
        count += chunk.count;
        cursor = chunk.next;
        if (!cursor) break;
      }
      const { newFlows, insertFailed } = this.slotStats(slot);
      return { slot, count, newFlows, insertFailed, evicted: Math.max(0, newFlows - count) };
    });
  }

  /**
   * Empty a retired slot and its insert counters, ready to be flipped to again.
   * `flows` is how many flows it holds (what reading it counted); without it
   * the slot's insert counter stands in, which is never fewer. A slot filled
   * to REPLACE_FLOW_MAP_SHARE or more gets a new empty map, cheaper than
   * deleting that many entries; anything less is deleted from the map.
   */
  releaseSlot(slot: number, flows?: number): Promise<SlotRelease> {
    return this.serial.run(async () => {
      const map = FLOW_MAPS[slot]!;
      const held = flows ?? this.slotStats(slot).newFlows;
      const release: SlotRelease =
        held >= this.native.mapInfo(map).maxEntries * REPLACE_FLOW_MAP_SHARE ? 'replaced' : 'deleted';
      if (release === 'replaced') await this.native.replaceFlowMap(slot);
      // The kernel's batch lookup-and-delete into scratch memory: the fastest way to delete every entry.
      else await this.native.drainBaseline(map);
      this.resetSlotStats(slot);
      return release;
    });
  }

  /** How many flows the active map took since its last drain, against its size. */
  activeFill(): { slot: number; newFlows: number; capacity: number } {
    const cfg = this.config();
    const slot = cfg.flowSlot & 1;
    return { slot, newFlows: this.slotStats(slot).newFlows, capacity: cfg.maxFlows };
  }

  /**
   * Replace the whole rule set atomically: write the idle slot in full, then
   * one store of rule_gen switches every CPU to it. Resolves with the new
   * generation at the switch; the previous slot is rewritten after the grace
   * period, before any later rule change starts.
   */
  async loadRules(tables: RuleTables): Promise<number> {
    const { gen } = await this.switchRules((cfg) => {
      checkCapacity(cfg, tables.src.count, tables.dst.count);
      return (slot) => this.writeTables(slot, tables);
    });
    return gen;
  }

  /**
   * Apply a change to the loaded rule set with the atomicity of loadRules:
   * programs see the old or the new rule set, never a mix. Only the changed
   * entries are written: deletes, upserts, and the complex table if given.
   * Resolves at the switch (the kernel enforces the change); `settled`
   * follows once the previous slot has caught up.
   *
   * The delta must be relative to the rule set last loaded or applied here.
   * When the slots are not known to match (nothing loaded in full since this
   * handle was opened, or a write failed), `full` is loaded instead; without
   * it the call rejects. A caller whose change is rejected must revert its
   * own tables or load them in full: the kernel did not switch.
   */
  applyDelta(delta: RuleTablesDelta, full?: () => RuleTables): Promise<RuleSwitch> {
    return this.switchRules((cfg) => {
      if (!this.slotsInSync) {
        if (!full) {
          throw new Error(
            'rule slots are not known to hold the same tables (no full load since the datapath was opened, or a failed write): load the whole rule set with loadRules',
          );
        }
        const tables = full();
        checkCapacity(cfg, tables.src.count, tables.dst.count);
        return (slot) => this.writeTables(slot, tables);
      }
      checkCapacity(cfg, delta.src?.count ?? 0, delta.dst?.count ?? 0);
      const active = cfg.ruleGen & 1;
      const counts = {
        src: delta.src?.count ?? cfg.srcPrefixes[active]!,
        dst: delta.dst?.count ?? cfg.dstPrefixes[active]!,
        complex: delta.complex?.count ?? cfg.complexCount[active]!,
      };
      return async (slot) => {
        for (const [maps, d] of [
          [SRC_LPM, delta.src],
          [DST_LPM, delta.dst],
        ] as const) {
          if (!d) continue;
          // Deletes first: the trie never holds more than the new count.
          if (d.deleteKeys.length) await this.native.deleteBatch(maps[slot]!, d.deleteKeys);
          const upserts = d.upsertKeys.length / LPM_KEY.size;
          if (upserts > SYNC_UPSERTS) await this.native.updateBatch(maps[slot]!, d.upsertKeys, d.upsertValues);
          else {
            // A few entries: a syscall each on this thread beats two thread-pool hops (what a single POST adds).
            for (let i = 0; i < upserts; i++) {
              this.native.update(
                maps[slot]!,
                d.upsertKeys.subarray(i * LPM_KEY.size, (i + 1) * LPM_KEY.size),
                d.upsertValues.subarray(i * LPM_VERDICT.size, (i + 1) * LPM_VERDICT.size),
              );
            }
          }
        }
        const complex = delta.complex;
        if (complex?.count) await this.native.updateBatch(COMPLEX[slot]!, complex.keys, complex.values);
        this.writeRuleCounts(slot, counts);
      };
    });
  }

  /** True when both rule slots are known to hold the same tables (applyDelta needs no full load). */
  get ruleSlotsInSync(): boolean {
    return this.slotsInSync;
  }

  /** Resolves once every queued job is done, the catch-up of the last rule switch included. */
  rulesSettled(): Promise<void> {
    return this.ruleSerial.run(async () => undefined);
  }

  /**
   * One rule switch, as one serial job: `prepare` checks what it can and
   * returns the writer; the writer fills the idle slot; a store of rule_gen
   * switches to it and the caller is answered. Then, still in the same job
   * so no other rule change can come in between, the grace period and the
   * same writer on the previous slot make both slots identical again.
   */
  private switchRules(prepare: (cfg: DatapathConfig) => SlotWriter): Promise<RuleSwitch> {
    return new Promise<RuleSwitch>((answer, refuse) => {
      const settled = this.ruleSerial.run(async () => {
        let old: number;
        let write: SlotWriter;
        try {
          const cfg = this.config();
          write = prepare(cfg);
          old = cfg.ruleGen & 1;
          const gen = (cfg.ruleGen + 1) >>> 0;
          this.slotsInSync = false;
          await write(old ^ 1);
          // The switch: programs pick the slot from rule_gen, and cached flow verdicts of older generations expire.
          this.native.writeConfigU32(configOffset('rule_gen'), gen);
          answer({ gen, settled });
        } catch (err) {
          refuse(err);
          throw err;
        }
        // Let the caller's continuation (say, an HTTP reply) run before the grace period blocks this thread.
        await new Promise((resolve) => setImmediate(resolve));
        this.native.synchronize();
        await write(old);
        this.slotsInSync = true;
      });
      // Nobody has to await settled: a failure is recorded in slotsInSync, not thrown at the process.
      settled.catch(() => undefined);
    });
  }

  /** A whole rule set into one slot. */
  private async writeTables(slot: number, tables: RuleTables): Promise<void> {
    await Promise.all([this.native.clear(SRC_LPM[slot]!), this.native.clear(DST_LPM[slot]!)]);
    if (tables.src.count) await this.native.updateBatch(SRC_LPM[slot]!, tables.src.keys, tables.src.values);
    if (tables.dst.count) await this.native.updateBatch(DST_LPM[slot]!, tables.dst.keys, tables.dst.values);
    if (tables.complex.count) {
      await this.native.updateBatch(COMPLEX[slot]!, tables.complex.keys, tables.complex.values);
    }
    this.writeRuleCounts(slot, { src: tables.src.count, dst: tables.dst.count, complex: tables.complex.count });
  }

  private writeRuleCounts(slot: number, counts: { src: number; dst: number; complex: number }): void {
    this.native.writeConfigU32(configOffset('src_prefixes', slot), counts.src);
    this.native.writeConfigU32(configOffset('dst_prefixes', slot), counts.dst);
    this.native.writeConfigU32(configOffset('complex_count', slot), counts.complex);
  }

  /** Traffic a rule matched since its counters were last reset. */
  ruleStats(ruleId: number): { packets: number; bytes: number } {
    const v = this.native.lookup('rule_stats', u32Key(ruleId));
    return v ? decodeRuleStats(v) : { packets: 0, bytes: 0 };
  }

  /**
   * Every rule id below `below` (default: all, --max-rules) whose counters
   * are not zero, with them: one batch read of that part of the counter
   * array, ids that matched nothing skipped before decoding.
   */
  async ruleStatsAll(below?: number): Promise<Map<number, { packets: number; bytes: number }>> {
    const rec = 4 + RULE_STATS.size;
    let buf: Buffer;
    if (below === undefined || below >= this.config().maxRules) buf = await this.native.dumpAll('rule_stats');
    else {
      // An array reads from index 0: one chunk of `below` entries is ids 0 … below-1.
      buf = Buffer.allocUnsafe(Math.max(below, 1) * rec);
      const { count } = await this.native.dumpChunk('rule_stats', buf, null);
      buf = buf.subarray(0, count * rec);
    }
    const out = new Map<number, { packets: number; bytes: number }>();
    for (let b = 0; b + rec <= buf.length; b += rec) {
      let any = 0;
      for (let w = b + 4; w < b + rec; w += 4) any |= buf.readUInt32LE(w);
      if (any !== 0) out.set(buf.readUInt32LE(b), decodeRuleStats(buf.subarray(b + 4, b + rec)));
    }
    return out;
  }

  /** Zero rule ids' counters (when the ids are given to new rules): one syscall for one id, one batch for many. */
  async resetRuleStats(ruleIds: readonly number[]): Promise<void> {
    if (ruleIds.length === 1) {
      this.native.update('rule_stats', u32Key(ruleIds[0]!), Buffer.alloc(RULE_STATS.size));
      return;
    }
    if (ruleIds.length === 0) return;
    const keys = Buffer.allocUnsafe(4 * ruleIds.length);
    ruleIds.forEach((id, i) => keys.writeUInt32LE(id >>> 0, 4 * i));
    await this.native.updateBatch('rule_stats', keys, Buffer.alloc(RULE_STATS.size * ruleIds.length));
  }

  async ifaceStats(): Promise<IfaceStats[]> {
    return decodeIfaceStats(await this.native.dumpAll('iface_stats'));
  }

  testRun(hook: Hook, frame: Buffer, opts?: TestRunOptions): TestRunResult {
    return this.native.testRun(hook, frame, opts);
  }

  /** Detach everything and remove the pins: enforcement stops. */
  unpinAll(): void {
    this.native.unpinAll();
  }

  close(): void {
    this.native.close();
  }
}
