/**
 * Datapath: the control plane's handle on the loaded (or adopted) eBPF
 * programs and maps. It owns the two double-buffering protocols:
 *
 *  - flows: programs write flow_slots[config.flow_slot]. drain() flips the
 *    slot, waits a grace period (no program run can still hold the old slot)
 *    and batch-reads the old map, which nothing writes any more: no
 *    increment is lost between the read and the delete.
 *  - rules: programs read rule tables of slot rule_gen & 1. loadRules()
 *    writes the idle slot in full, bumps rule_gen (one atomic store, so the
 *    switch is atomic for every packet) and waits a grace period before the
 *    old slot may be reused.
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
import { SerialQueue } from '../util/serial.js';
import {
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

const FLOW_MAPS = ['flows_a', 'flows_b'] as const;
const SRC_LPM = ['src_lpm_0', 'src_lpm_1'] as const;
const DST_LPM = ['dst_lpm_0', 'dst_lpm_1'] as const;
const COMPLEX = ['complex_0', 'complex_1'] as const;

export class Datapath {
  private readonly serial = new SerialQueue();

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

  /** Read every flow of a retired slot without deleting it (spool first, then release). */
  readSlot(slot: number): Promise<Drain> {
    return this.serial.run(async () => this.withSlotStats(slot, await this.native.dumpAll(FLOW_MAPS[slot]!)));
  }

  /** Empty a retired slot and its insert counters, ready to be flipped to again. */
  releaseSlot(slot: number): Promise<void> {
    return this.serial.run(async () => {
      // The kernel's batch lookup-and-delete into scratch memory: the fastest way to empty a hash map.
      await this.native.drainBaseline(FLOW_MAPS[slot]!);
      this.resetSlotStats(slot);
    });
  }

  /** How many flows the active map took since its last drain, against its size. */
  activeFill(): { slot: number; newFlows: number; capacity: number } {
    const cfg = this.config();
    const slot = cfg.flowSlot & 1;
    return { slot, newFlows: this.slotStats(slot).newFlows, capacity: cfg.maxFlows };
  }

  /**
   * Replace the whole rule set atomically: write the idle slot, then one
   * store of rule_gen switches every CPU to it. Returns the new generation.
   */
  loadRules(tables: RuleTables): Promise<number> {
    return this.serial.run(async () => {
      const cfg = this.config();
      const capacity = cfg.maxPrefixes;
      for (const [name, t] of [
        ['src', tables.src],
        ['dst', tables.dst],
      ] as const) {
        if (t.count > capacity) {
          throw new RangeError(`${t.count} ${name} prefixes exceed the table capacity of ${capacity}`);
        }
      }
      const gen = cfg.ruleGen + 1;
      const slot = gen & 1;
      await Promise.all([this.native.clear(SRC_LPM[slot]!), this.native.clear(DST_LPM[slot]!)]);
      if (tables.src.count) await this.native.updateBatch(SRC_LPM[slot]!, tables.src.keys, tables.src.values);
      if (tables.dst.count) await this.native.updateBatch(DST_LPM[slot]!, tables.dst.keys, tables.dst.values);
      if (tables.complex.count) {
        await this.native.updateBatch(COMPLEX[slot]!, tables.complex.keys, tables.complex.values);
      }
      this.native.writeConfigU32(configOffset('src_prefixes', slot), tables.src.count);
      this.native.writeConfigU32(configOffset('dst_prefixes', slot), tables.dst.count);
      this.native.writeConfigU32(configOffset('complex_count', slot), tables.complex.count);
      // The switch: programs pick the slot from rule_gen, and cached flow verdicts of older generations expire.
      this.native.writeConfigU32(configOffset('rule_gen'), gen >>> 0);
      this.native.synchronize();
      return gen;
    });
  }

  /** Traffic a rule matched since its counters were last reset. */
  ruleStats(ruleId: number): { packets: number; bytes: number } {
    const v = this.native.lookup('rule_stats', u32Key(ruleId));
    return v ? decodeRuleStats(v) : { packets: 0, bytes: 0 };
  }

  /** Zero a rule id's counters (when the id is given to a new rule). */
  resetRuleStats(ruleId: number): void {
    this.native.update('rule_stats', u32Key(ruleId), Buffer.alloc(16));
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
