/**
 * Rule change latency with a large rule set loaded (issue 4: a single-rule
 * POST enforced with p99 ≤ 5 ms at 100k–1M prefixes).
 *
 * Loads `prefixes` distinct /24 drop rules, then adds one /24 at a time the
 * way a rule service does: LpmIndex computes the delta, Datapath.applyDelta
 * writes it to the idle slot and switches. Measured per change:
 *  - delta: LpmIndex.change + encodeLpmDelta (control plane only),
 *  - switch: the applyDelta call until it resolves (the kernel enforces it),
 *  - post: both, what a POST waits for,
 *  - settle: from the switch until the previous slot has caught up.
 * "spaced" changes wait for the catch-up of the previous one; "back to back"
 * changes are issued as soon as the previous switch is done, so each queues
 * behind the previous catch-up (grace period + the same writes again).
 */
import { Datapath } from '../control/datapath/datapath.js';
import { Family, encodeComplexRules, encodeLpmEntries, type LpmEntry } from '../control/datapath/layout.js';
import type { RuleTables } from '../control/rules/compile.js';
import { LpmIndex, encodeLpmDelta } from '../control/rules/lpm-index.js';
import { buildFrame } from '../test/lib/frames.js';
import { removeBpffs, tempBpffsDir } from '../test/lib/datapath.js';

export interface RulesBenchOptions {
  prefixes: number;
  /** Changes per series. */
  runs: number;
}

export interface Percentiles {
  p50: number;
  p99: number;
  max: number;
}

export interface RulesBenchResult {
  prefixes: number;
  runs: number;
  /** LpmIndex built from every rule. */
  indexBuildMs: number;
  /** loadRules of the whole table, to the switch. */
  fullLoadMs: number;
  /** ...and until the previous slot holds it too. */
  fullSettleMs: number;
  spaced: { deltaMs: Percentiles; switchMs: Percentiles; postMs: Percentiles; settleMs: Percentiles };
  backToBack: { switchMs: Percentiles; postMs: Percentiles };
  /** A /24 removed again, spaced. */
  removeSpaced: { postMs: Percentiles };
  /** Milliseconds a rule change may take to be enforced (the target). */
  targetP99Ms: number;
}

const XDP_DROP = 1;

function percentiles(xs: number[]): Percentiles {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { p50: at(0.5), p99: at(0.99), max: s[s.length - 1]! };
}

function slash24(net: number, ruleId: number, priority = 100): LpmEntry {
  const addr = Buffer.alloc(16);
  addr.writeUInt32BE(net * 256, 0);
  return { prefix: { family: Family.ipv4, addr, len: 24 }, ruleId, priority, action: 'drop' };
}

export async function benchRules(opts: RulesBenchOptions): Promise<RulesBenchResult> {
  // The blocklist: /24s from 1.0.0.0 up; the changes: /24s in 100.64.0.0/10, outside it.
  const entries = Array.from({ length: opts.prefixes }, (_, i) => slash24((1 << 16) + i, i + 1));
  const changeNet = (i: number): number => ((100 << 16) | (64 << 8)) + i;
  let nextId = opts.prefixes + 1;

  let started = performance.now();
  const index = new LpmIndex(entries);
  const indexBuildMs = performance.now() - started;

  const bpffs = tempBpffsDir();
  const capacity = opts.prefixes + 3 * opts.runs + 1024;
  const dp = Datapath.open({ bpffs, maxFlows: 4096, maxRules: capacity + 16, maxPrefixes: capacity });
  try {
    const empty = { ...encodeLpmEntries([]), count: 0 };
    const tables: RuleTables = {
      src: { ...encodeLpmEntries(index.resolved()), count: index.size },
      dst: empty,
      complex: { ...encodeComplexRules([]), count: 0 },
    };
    started = performance.now();
    await dp.loadRules(tables);
    const fullLoadMs = performance.now() - started;
    await dp.rulesSettled();
    const fullSettleMs = performance.now() - started;

    const added: LpmEntry[] = [];
    /** One /24 added (or removed) as a POST would; `spaced` waits for the catch-up. */
    const change = async (
      kind: 'add' | 'remove',
      e: LpmEntry,
      spaced: boolean,
    ): Promise<{ delta: number; sw: number; post: number; settle: number }> => {
      const t0 = performance.now();
      const delta = encodeLpmDelta(kind === 'add' ? index.add([e]) : index.remove([e]));
      const t1 = performance.now();
      const { settled } = await dp.applyDelta({ src: delta });
      const t2 = performance.now();
      if (spaced) await settled;
      const t3 = performance.now();
      return { delta: t1 - t0, sw: t2 - t1, post: t2 - t0, settle: t3 - t2 };
    };

    const spaced = { delta: [] as number[], sw: [] as number[], post: [] as number[], settle: [] as number[] };
    for (let i = 0; i < opts.runs; i++) {
      const e = slash24(changeNet(added.length), nextId++);
      added.push(e);
      const r = await change('add', e, true);
      spaced.delta.push(r.delta);
      spaced.sw.push(r.sw);
      spaced.post.push(r.post);
      spaced.settle.push(r.settle);
    }
    const probe = buildFrame({
      ipv4: { src: '100.64.0.9', dst: '198.18.0.1' },
      tcp: { sport: 40000, dport: 443, flags: ['SYN'] },
    });
    if (dp.testRun('xdp', probe).retval !== XDP_DROP) throw new Error('an added /24 is not enforced');

    const b2b = { sw: [] as number[], post: [] as number[] };
    for (let i = 0; i < opts.runs; i++) {
      const e = slash24(changeNet(added.length), nextId++);
      added.push(e);
      const r = await change('add', e, false);
      b2b.sw.push(r.sw);
      b2b.post.push(r.post);
    }
    await dp.rulesSettled();

    const removes: number[] = [];
    for (const e of added.slice(0, opts.runs)) removes.push((await change('remove', e, true)).post);
    if (dp.testRun('xdp', probe).retval === XDP_DROP) throw new Error('a removed /24 is still enforced');

    return {
      prefixes: opts.prefixes,
      runs: opts.runs,
      indexBuildMs,
      fullLoadMs,
      fullSettleMs,
      spaced: {
        deltaMs: percentiles(spaced.delta),
        switchMs: percentiles(spaced.sw),
        postMs: percentiles(spaced.post),
        settleMs: percentiles(spaced.settle),
      },
      backToBack: { switchMs: percentiles(b2b.sw), postMs: percentiles(b2b.post) },
      removeSpaced: { postMs: percentiles(removes) },
      targetP99Ms: 5,
    };
  } finally {
    dp.unpinAll();
    dp.close();
    removeBpffs(bpffs);
  }
}
