/**
 * Data path benchmark: ns per packet by BPF_PROG_TEST_RUN, as a ratio to an
 * empty XDP_PASS program measured in the same run (the floor), and the drain
 * rate against the kernel's own batch lookup-and-delete of the same map.
 *
 * Paths:
 *  - established pass / drop: the flow entry exists and caches its verdict,
 *    so the cost is one flow lookup plus counters whatever the rule count.
 *  - new flow: datapath/build/flowgate_bench.bpf.o gives every repetition a
 *    fresh flow key (one bpf_get_prandom_u32), so each run matches the rules
 *    and inserts a flow entry.
 */
import path from 'node:path';
import { loadNative, datapathBuildDir, type TestRunResult } from '../native/index.js';
import { Datapath, flowMapName } from '../control/datapath/datapath.js';
import { compileRules, encodeRuleTables } from '../control/rules/compile.js';
import { parseRule, type Rule } from '../control/rules/rule.js';
import { encodeFlowKey, encodeFlowValue, FLOW_KEY, FLOW_VALUE } from '../control/datapath/layout.js';
import { buildFrame, ipv4Mapped } from '../test/lib/frames.js';
import { removeBpffs, tempBpffsDir } from '../test/lib/datapath.js';
import { median } from './stats.js';

export interface PathResult {
  name: string;
  prefixes: number;
  nsPerPacket: number;
  ratioToFloor: number;
  /** Against the LRU hash operation the path cannot avoid (hit for established, insert for new flows). */
  ratioToMapOp?: number;
  target?: number;
}

export interface DrainResult {
  flows: number;
  flowgateFlowsPerSec: number;
  kernelFlowsPerSec: number;
  ratioToKernel: number;
  target: number;
}

const XDP_PASS = 2;
const XDP_DROP = 1;

function timeRuns(run: () => TestRunResult, rounds: number, expect: number): number {
  const samples: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const r = run();
    if (r.retval !== expect) throw new Error(`benchmark run returned ${r.retval}, expected ${expect}`);
    samples.push(r.durationNs);
  }
  return median(samples);
}

/** Deterministic distinct IPv4 /24s that never cover 198.18.0.0/15 (the benchmark's traffic). */
function blocklist(count: number, dropSrc: string): Rule[] {
  const rules: Rule[] = [parseRule({ action: 'drop', src: `${dropSrc}/24` }, 1)];
  let x = 0x9e3779b9;
  const seen = new Set<number>();
  while (rules.length < count) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const net = x >>> 8; // a /24 as its top 24 bits
    if (seen.has(net) || net >>> 9 === (198 << 7) + (18 >> 1)) continue;
    seen.add(net);
    const a = net >>> 16;
    const b = (net >>> 8) & 255;
    const c = net & 255;
    rules.push(parseRule({ action: 'drop', src: `${a}.${b}.${c}.0/24` }, rules.length + 1));
  }
  return rules;
}

export interface DatapathBenchOptions {
  repeat: number;
  rounds: number;
  prefixCounts: number[];
  drainFlows: number;
}

export async function benchDatapath(opts: DatapathBenchOptions): Promise<{ paths: PathResult[]; drain: DrainResult }> {
  const native = loadNative();
  const frame = (src: string): Buffer =>
    buildFrame({ ipv4: { src, dst: '198.18.0.1' }, tcp: { sport: 40000, dport: 443, flags: ['ACK'] }, payload: 64 });
  const passFrame = frame('198.18.0.2');
  const dropFrame = frame('198.19.7.9');

  const floorProg = native.loadProgram(path.join(datapathBuildDir, 'xdp_pass.bpf.o'), 'xdp_pass');
  const floor = timeRuns(() => floorProg.testRun(passFrame, { repeat: opts.repeat }), opts.rounds, XDP_PASS);
  floorProg.close();
  // What the LRU hash alone costs with our key and value: the part of each path no design avoids.
  const primitives = path.join(datapathBuildDir, 'bench_primitives.bpf.o');
  const lruHitProg = native.loadProgram(primitives, 'lru_hit');
  const lruHit = timeRuns(() => lruHitProg.testRun(passFrame, { repeat: opts.repeat }), opts.rounds, XDP_PASS);
  lruHitProg.close();
  const lruInsertProg = native.loadProgram(primitives, 'lru_insert');
  const lruInsert = timeRuns(
    () => lruInsertProg.testRun(passFrame, { repeat: Math.min(opts.repeat, 100_000) }),
    opts.rounds,
    XDP_PASS,
  );
  lruInsertProg.close();

  const maxPrefixes = Math.max(...opts.prefixCounts, 1024) + 1024;
  const newFlowRepeat = Math.min(opts.repeat, 100_000);
  // Headroom: an LRU map starts evicting a little before it is full (per-CPU free lists).
  const maxFlows = Math.max(newFlowRepeat * 2, Math.ceil(opts.drainFlows * 1.25), 4096);
  const dirs = [tempBpffsDir(), tempBpffsDir()];
  const main = Datapath.open({ bpffs: dirs[0]!, maxFlows, maxRules: maxPrefixes + 16, maxPrefixes });
  const fresh = Datapath.open({
    bpffs: dirs[1]!,
    maxFlows,
    maxRules: maxPrefixes + 16,
    maxPrefixes,
    objectPath: path.join(datapathBuildDir, 'flowgate_bench.bpf.o'),
  });
  const paths: PathResult[] = [];
  const add = (name: string, prefixes: number, ns: number, target?: number, mapOp?: number): void => {
    paths.push({
      name,
      prefixes,
      nsPerPacket: ns,
      ratioToFloor: ns / floor,
      ratioToMapOp: mapOp && ns / mapOp,
      target,
    });
  };
  add('empty XDP_PASS (floor)', 0, floor);
  add('baseline: LRU hash hit, flowgate key', 0, lruHit);
  add('baseline: LRU hash insert, flowgate key', 0, lruInsert);

  try {
    for (const prefixes of opts.prefixCounts) {
      const tables = encodeRuleTables(compileRules(prefixes ? blocklist(prefixes, '198.19.7.0') : [], () => 0));
      await main.loadRules(tables);
      await fresh.loadRules(tables);
      await main.drain();
      const pass = timeRuns(() => main.testRun('xdp', passFrame, { repeat: opts.repeat }), opts.rounds, XDP_PASS);
      add('established flow, pass', prefixes, pass, 3, lruHit);
      if (prefixes) {
        const drop = timeRuns(() => main.testRun('xdp', dropFrame, { repeat: opts.repeat }), opts.rounds, XDP_DROP);
        add('established flow, drop', prefixes, drop, 3, lruHit);
      }
      const newFlow: number[] = [];
      for (let i = 0; i < opts.rounds; i++) {
        await fresh.drain(); // an empty map each round: no LRU eviction in the measurement
        const r = fresh.testRun('xdp', prefixes ? dropFrame : passFrame, { repeat: newFlowRepeat });
        newFlow.push(r.durationNs);
      }
      add(prefixes ? 'new flow, matched by a prefix' : 'new flow', prefixes, median(newFlow), 8, lruInsert);
    }
    const drain = await benchDrain(main, opts.drainFlows, Math.max(3, Math.min(opts.rounds, 5)));
    return { paths, drain };
  } finally {
    for (const dp of [main, fresh]) {
      dp.unpinAll();
      dp.close();
    }
    dirs.forEach(removeBpffs);
  }
}

/** Fill a flow map with `count` distinct synthetic flows. */
async function fillFlows(dp: Datapath, mapName: string, count: number): Promise<void> {
  const keys = Buffer.alloc(count * FLOW_KEY.size);
  const values = Buffer.alloc(count * FLOW_VALUE.size);
  const dst = ipv4Mapped('198.18.0.1');
  const src = ipv4Mapped('198.18.0.2');
  for (let i = 0; i < count; i++) {
    src.writeUInt16BE(i >>> 16, 12); // vary the address and port: distinct keys
    encodeFlowKey(
      {
        family: 4,
        srcAddr: src,
        dstAddr: dst,
        srcPort: i & 0xffff,
        dstPort: 443,
        protocol: 6,
        vlan: 0,
        innerVlan: 0,
        ifindex: 1,
        direction: 'ingress',
      },
      keys,
      i * FLOW_KEY.size,
    );
    encodeFlowValue(
      {
        packets: 1,
        bytes: 100,
        droppedPackets: 0,
        droppedBytes: 0,
        firstSeenNs: 1n,
        lastSeenNs: 2n,
        ruleId: 0,
        tcpFlags: 0x10,
      },
      values,
      i * FLOW_VALUE.size,
    );
  }
  await dp.native.updateBatch(mapName, keys, values);
}

async function benchDrain(dp: Datapath, flows: number, rounds: number): Promise<DrainResult> {
  const ours: number[] = [];
  const kernel: number[] = [];
  // Empty both slots of what the path benchmarks left behind.
  await dp.drain();
  await dp.drain();
  for (let i = 0; i < rounds; i++) {
    // Ours: flip, grace period, batch lookup-and-delete into one Buffer for JS.
    const activeMap = flowMapName(dp.config().flowSlot);
    await fillFlows(dp, activeMap, flows);
    const t0 = process.hrtime.bigint();
    const d = await dp.drain();
    const ns = Number(process.hrtime.bigint() - t0);
    if (d.count !== flows) throw new Error(`drained ${d.count} flows, filled ${flows}`);
    ours.push(flows / (ns / 1e9));
    // The kernel's floor on the same map: lookup-and-delete into scratch memory, nothing else.
    await fillFlows(dp, activeMap, flows);
    const k = await dp.native.drainBaseline(activeMap);
    if (k.count !== flows) throw new Error(`baseline drained ${k.count} flows, filled ${flows}`);
    kernel.push(k.count / (k.ns / 1e9));
  }
  const flowgateFlowsPerSec = median(ours);
  const kernelFlowsPerSec = median(kernel);
  return {
    flows,
    flowgateFlowsPerSec,
    kernelFlowsPerSec,
    ratioToKernel: flowgateFlowsPerSec / kernelFlowsPerSec,
    target: 0.8,
  };
}
