/**
 * KernelRules over the Datapath. Plain prefix rules live in two LpmIndex
 * (src, dst) mirroring the kernel's tries, so a rule change writes only the
 * entries it changes (Datapath.applyDelta); multi-field rules (at most
 * 4096) are rewritten whole when one of them changes. A full load rebuilds
 * everything. Either way programs switch atomically from the old rule set
 * to the new one.
 */
import type { Datapath } from '../datapath/datapath.js';
import { encodeComplexRules, encodeLpmEntries, type LpmEntry } from '../datapath/layout.js';
import { loadNative } from '../../native/index.js';
import { compileRules, encodeRuleTables, isPlain, prefixOrderKey, type RuleTables } from './compile.js';
import { LpmIndex, encodeLpmDelta, type LpmDelta, type LpmRef } from './lpm-index.js';
import type { Rule } from './rule.js';
import type { KernelRules } from './service.js';

/**
 * An interface's index, or 0 when it does not exist: a rule scoped to it
 * then matches nothing (no packet has ifindex 0) until the agent restarts
 * with the NIC present.
 */
export function ifindexOrNone(name: string): number {
  try {
    return loadNative().ifindex(name);
  } catch {
    return 0;
  }
}

export function ifaceExists(name: string): boolean {
  return ifindexOrNone(name) !== 0;
}

export interface RuleCounterDelta {
  ruleId: number;
  packets: number;
  bytes: number;
}

function lpmEntry(rule: Rule, side: 'src' | 'dst'): LpmEntry {
  return { prefix: rule[side]!, ruleId: rule.id, priority: rule.priority, action: rule.action };
}

/** Order of resolved entries: family, then address and length (resolveLpm's order). */
function compareKeys(a: LpmEntry, b: LpmEntry): number {
  if (a.prefix.family !== b.prefix.family) return a.prefix.family - b.prefix.family;
  const x = prefixOrderKey(a.prefix);
  const y = prefixOrderKey(b.prefix);
  return x < y ? -1 : x > y ? 1 : 0;
}

function sameVerdict(a: LpmEntry, b: LpmEntry): boolean {
  return a.ruleId === b.ruleId && a.priority === b.priority && a.action === b.action;
}

/**
 * What turns resolved table `from` into `to` (both in resolveLpm's order): a
 * linear merge. Replacing a blocklist with its next edition changes a few
 * entries out of a million; writing only those spares the kernel a million
 * deletes and inserts.
 */
export function diffResolved(from: readonly LpmEntry[], to: readonly LpmEntry[]): LpmDelta {
  const delta: LpmDelta = { upsert: [], delete: [], count: to.length };
  let i = 0;
  let j = 0;
  while (i < from.length || j < to.length) {
    const c = i === from.length ? 1 : j === to.length ? -1 : compareKeys(from[i]!, to[j]!);
    if (c < 0) delta.delete.push(from[i++]!.prefix);
    else if (c > 0) delta.upsert.push(to[j++]!);
    else {
      if (!sameVerdict(from[i]!, to[j]!)) delta.upsert.push(to[j]!);
      i++;
      j++;
    }
  }
  return delta;
}

/** Split changed rules by the table they live in. */
function byTable(rules: readonly Rule[]): { src: Rule[]; dst: Rule[]; complex: Rule[] } {
  const out = { src: [] as Rule[], dst: [] as Rule[], complex: [] as Rule[] };
  for (const r of rules) out[isPlain(r) ?? 'complex'].push(r);
  return out;
}

export class DatapathRules implements KernelRules {
  private src = new LpmIndex();
  private dst = new LpmIndex();
  /** The indexes no longer mirror the kernel (a change failed half way): the next change loads in full. */
  private stale = true;
  /** Totals at the last counterDeltas(), by rule id. */
  private last = new Map<number, { packets: number; bytes: number }>();
  /**
   * Above every rule id loaded since start (never lowered: a removed rule's
   * last counts still go into history). Counter reads stop here instead of
   * at --max-rules: a few rules cost a few entries per drain, not 1.1M.
   */
  private idLimit = 1;

  private raiseIdLimit(rules: readonly Rule[]): void {
    for (const r of rules) if (r.id >= this.idLimit) this.idLimit = r.id + 1;
  }

  constructor(private readonly dp: Datapath) {}

  async load(rules: readonly Rule[]): Promise<void> {
    const wasStale = this.stale;
    this.stale = true;
    this.raiseIdLimit(rules);
    const split = byTable(rules);
    const src = new LpmIndex(split.src.map((r) => lpmEntry(r, 'src')));
    const dst = new LpmIndex(split.dst.map((r) => lpmEntry(r, 'dst')));
    const resolvedSrc = src.resolved();
    const resolvedDst = dst.resolved();
    const complex = this.complexTable(split.complex);
    const tables = (): RuleTables => ({
      src: { ...encodeLpmEntries(resolvedSrc), count: resolvedSrc.length },
      dst: { ...encodeLpmEntries(resolvedDst), count: resolvedDst.length },
      complex,
    });
    if (wasStale) await this.dp.loadRules(tables());
    else {
      // The kernel holds what the indexes hold: write only the difference (applyDelta falls back
      // to `tables` when the slots are not in step).
      await this.dp.applyDelta(
        {
          src: encodeLpmDelta(diffResolved(this.src.resolved(), resolvedSrc)),
          dst: encodeLpmDelta(diffResolved(this.dst.resolved(), resolvedDst)),
          complex,
        },
        tables,
      );
    }
    this.src = src;
    this.dst = dst;
    this.stale = false;
  }

  async change(added: readonly Rule[], removed: readonly Rule[], all: () => Rule[]): Promise<void> {
    // (Slots still catching up after the last switch are applyDelta's business: it queues behind that.)
    if (this.stale) return this.load(all());
    this.raiseIdLimit(added);
    const add = byTable(added);
    const rem = byTable(removed);
    const ref =
      (side: 'src' | 'dst') =>
      (r: Rule): LpmRef => ({ prefix: r[side]!, ruleId: r.id });
    // From here the indexes run ahead of the kernel until the switch: a failure leaves them
    // stale, and the next change reloads the whole set from the service.
    this.stale = true;
    const src =
      add.src.length || rem.src.length
        ? encodeLpmDelta(
            this.src.change({ add: add.src.map((r) => lpmEntry(r, 'src')), remove: rem.src.map(ref('src')) }),
          )
        : undefined;
    const dst =
      add.dst.length || rem.dst.length
        ? encodeLpmDelta(
            this.dst.change({ add: add.dst.map((r) => lpmEntry(r, 'dst')), remove: rem.dst.map(ref('dst')) }),
          )
        : undefined;
    const complex =
      add.complex.length || rem.complex.length
        ? this.complexTable(all().filter((r) => isPlain(r) === undefined))
        : undefined;
    await this.dp.applyDelta({ src, dst, complex }, () => encodeRuleTables(compileRules(all(), ifindexOrNone)));
    this.stale = false;
  }

  private complexTable(rules: readonly Rule[]): RuleTables['complex'] {
    const compiled = compileRules(rules, ifindexOrNone);
    return { ...encodeComplexRules(compiled.complex), count: compiled.complex.length };
  }

  stats(id: number): { packets: number; bytes: number } {
    return this.dp.ruleStats(id);
  }

  /**
   * Zero the counters of ids given to new rules. For many ids (a replace)
   * one batch read finds the few that are not zero already: writing a
   * million per-CPU zeros costs more than reading them.
   */
  async resetStats(ids: readonly number[]): Promise<void> {
    if (ids.length <= 1024) return this.dp.resetRuleStats(ids);
    let below = 0;
    for (const id of ids) if (id >= below) below = id + 1;
    const counted = await this.dp.ruleStatsAll(below);
    await this.dp.resetRuleStats(ids.filter((id) => counted.has(id)));
  }

  /**
   * What each rule matched since the last call (rule counter history). One
   * batch read of the counter array up to the highest id in use; only rules that matched
   * something give a row. A total that went down (the id was given to a new
   * rule and zeroed) counts from zero.
   */
  async counterDeltas(): Promise<RuleCounterDelta[]> {
    const next = await this.dp.ruleStatsAll(this.idLimit);
    const out: RuleCounterDelta[] = [];
    for (const [ruleId, now] of next) {
      const was = this.last.get(ruleId);
      const base = was && was.packets <= now.packets ? was : { packets: 0, bytes: 0 };
      if (now.packets > base.packets) {
        out.push({ ruleId, packets: now.packets - base.packets, bytes: now.bytes - base.bytes });
      }
    }
    this.last = next;
    return out;
  }
}
