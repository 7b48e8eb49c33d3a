/**
 * Agent benchmarks.
 *
 * pipeline: flows from a kernel flow map to rows in the embedded store —
 * flip, read, spool, release (the agent's drain), then spool → rows (the
 * ship process's part) — with the agent's own code (Collector, shipBatch),
 * against the kernel's own batch lookup-and-delete of the same number of
 * flows (same run). Two ways:
 * - sequential: drain, then ship, in one process (warm rounds; the cold
 *   first round into a fresh store is reported on its own);
 * - overlapped: the agent's way — drains here while a ship process
 *   (ShipClient) inserts the previous batches, each run into a fresh
 *   store: drains back to back (flows per second of wall clock from the
 *   first drain to the last row stored, refills of the map included), then
 *   drains paced to offer the target rate, 500,000 flows a second (three
 *   runs, the median reported: a run's figure moves by ±20%). Per
 *   core: the flows over the CPU seconds the drains and the ship process
 *   used (refills left out; inserts, views and the merges they start in);
 *   measured at the offered target rate, it says whether one core keeps
 *   up with it. Run first, before any other store is open. The shipper
 *   waits 2 s between inserts (shipper.ts insertIntervalMs), so the 24 s
 *   window holds ~13 parts per table and a first merge takes ~17
 *   (merge_selector_base 20): the paced runs measure the insert path, kernel
 *   map to stored, queryable rows, which is what the ≥ 500,000/s target is
 *   for. The sustained run (120 s offered) adds the first level of the
 *   store's merges and is reported beside it: each row is merged again at
 *   every level, ~3–4 times a day at the target rate, background work that
 *   docs/operating.md ("CPU per stored flow") plans cores for.
 *
 * footprint: a real `flowgate run` on a veth receiving `flowsPerInterval`
 * distinct flows every drain interval (trafgen in a test namespace), its
 * RSS (agent + ship process) and CPU, in embedded and server mode.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Datapath, flowMapName } from '../control/datapath/datapath.js';
import type { Collector } from '../control/agent/collector.js';
import { ShipClient } from '../control/agent/ship-client.js';
import { shipBatch, shipBuffer } from '../control/agent/shipper.js';
import { Spool } from '../control/agent/spool.js';
import { ClickHouseFlowStore } from '../control/store/flow-store.js';
import { createLogger } from '../control/log.js';
import { removeBpffs, tempBpffsDir } from '../test/lib/datapath.js';
import { createVethPair, sendTrafgen } from '../test/lib/netns.js';
import { startAgent } from '../test/lib/agent.js';
import { startClickHouseHttp } from '../test/lib/clickhouse-http-server.js';
import { median } from './stats.js';
import { activeMapFiller, benchCollector } from './fixtures.js';
import { syntheticDrain } from './store.js';

export interface PipelineResult {
  /** Flows per batch (per drain). */
  flows: number;
  /** Sequential, one process: drain then ship, median of the warm rounds. */
  storedFlowsPerSec: number;
  /** The same, first round into a fresh store (JIT and engine cold). */
  coldFlowsPerSec: number;
  /** The agent's part alone: flip, read, spool, release (median of the warm rounds). */
  drainFlowsPerSec: number;
  /** The ship process's part alone: spool → rows in the store (median of the warm rounds). */
  shipFlowsPerSec: number;
  /** Drains as fast as they go while a ship process inserts (the agent under a flood). */
  overlapped: OverlappedRun;
  /**
   * The same, flows offered at the target rate (a drain every flows / target seconds):
   * the run of median per-core figure out of `pacedRuns`.
   */
  paced: OverlappedRun;
  /** Every paced run, each into a fresh store (how many merges fall inside one window varies). */
  pacedRuns: OverlappedRun[];
  /**
   * One paced run `sustainedBatches` drains long (absent: not asked): merges
   * of wider levels fall inside it, so it costs more a flow than a short window.
   */
  sustained?: OverlappedRun;
  /** overlapped.flowsPerSec: wall clock, two cores. */
  overlappedFlowsPerSec: number;
  /** paced.perCoreFlowsPerSec: what one core sustains at the target rate. */
  perCoreFlowsPerSec: number;
  batches: number;
  kernelDrainFlowsPerSec: number;
  ratioToKernel: number;
  target: number;
}

const TARGET_FLOWS_PER_SEC = 500_000;

export interface OverlappedRun {
  /** Flows offered per second (drains paced to it), or undefined: drains back to back. */
  offeredFlowsPerSec?: number;
  /** Flows drained and stored over the wall clock from the first drain to the last row stored. */
  flowsPerSec: number;
  seconds: number;
  /** CPU of the drains (this process, the refills of the map left out). */
  drainCpuSeconds: number;
  /** CPU of the ship process: inserts, views and the merges they set off. */
  shipCpuSeconds: number;
  /** Flows per CPU second of drain and ship together: the rate one core sustains. */
  perCoreFlowsPerSec: number;
  /** Cores drain and ship kept busy: CPU seconds over wall seconds. */
  cores: number;
  /** Inserts the ship process made for the drained batches (several batches go to one when they queue). */
  inserts: number;
}

/**
 * Drains in this process while a ship process (ShipClient, the agent's own)
 * stores them into a fresh embedded store under `dir`: after a warm-up
 * batch, `batches` drains of `flows`, back to back or paced to
 * `offeredFlowsPerSec`, each after a refill of the map (its CPU left out:
 * in the agent the programs fill the map).
 */
async function runOverlapped(opts: {
  dir: string;
  flows: number;
  batches: number;
  fill: () => Promise<void>;
  collectorFor: (spool: Spool) => Collector;
  offeredFlowsPerSec?: number;
}): Promise<OverlappedRun> {
  const { dir, flows, batches, fill, offeredFlowsPerSec } = opts;
  const spool = new Spool(path.join(dir, 'spool'), 2 ** 40);
  let inserted = 0;
  let inserts = 0;
  let insertedWaiter: (() => void) | undefined;
  const ship = new ShipClient(
    {
      spoolDir: spool.dir,
      spoolMaxBytes: 2 ** 40,
      store: { target: { kind: 'embedded', dir }, retentionDays: 30 },
    },
    {
      onInserted: (rows) => {
        inserted += rows;
        inserts++;
        insertedWaiter?.();
      },
      onError: () => undefined,
    },
  );
  try {
    const until = async (rows: number): Promise<void> => {
      const deadline = Date.now() + 300_000;
      while (inserted < rows) {
        if (Date.now() > deadline) throw new Error(`the ship process stored ${inserted} of ${rows} flows`);
        await new Promise<void>((r) => {
          insertedWaiter = r;
          setTimeout(r, 100);
        });
      }
    };
    const collector = opts.collectorFor(spool);
    await fill();
    await collector.drain('interval'); // warm-up: the ship process opens its store, the first insert is cold
    ship.wake();
    await until(flows);
    const warmInserts = inserts;
    const shipPid = ship.pid!;
    const shipTicks0 = cpuTicks(shipPid);
    let drainCpuUs = 0;
    const t0 = performance.now();
    for (let b = 0; b < batches; b++) {
      if (offeredFlowsPerSec) {
        const due = t0 + ((b * flows) / offeredFlowsPerSec) * 1000;
        if (due > performance.now()) await new Promise((r) => setTimeout(r, due - performance.now()));
      }
      await fill();
      const cpu = process.cpuUsage();
      await collector.drain('interval');
      const used = process.cpuUsage(cpu);
      drainCpuUs += used.user + used.system;
      ship.wake();
    }
    await until(flows * (batches + 1));
    const seconds = (performance.now() - t0) / 1000;
    const shipCpuSeconds = (cpuTicks(shipPid) - shipTicks0) / CLOCK_TICKS;
    const drainCpuSeconds = drainCpuUs / 1e6;
    return {
      offeredFlowsPerSec,
      flowsPerSec: (flows * batches) / seconds,
      seconds,
      drainCpuSeconds,
      shipCpuSeconds,
      perCoreFlowsPerSec: (flows * batches) / (drainCpuSeconds + shipCpuSeconds),
      cores: (drainCpuSeconds + shipCpuSeconds) / seconds,
      inserts: inserts - warmInserts,
    };
  } finally {
    await ship.stop(10_000);
  }
}

export async function benchPipeline(
  flows: number,
  rounds = 3,
  batches = 5,
  pacedRepeats = 3,
  sustainedBatches = 0,
): Promise<PipelineResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-bench-'));
  const bpffs = tempBpffsDir();
  const dp = Datapath.open({ bpffs, maxFlows: Math.ceil(flows * 1.25), maxRules: 1024, maxPrefixes: 1024 });
  const log = createLogger('bench');
  log.level = 'warn';
  let store: ClickHouseFlowStore | undefined;
  try {
    const fill = activeMapFiller(dp, syntheticDrain(flows, process.hrtime.bigint()));
    const collectorFor = (spool: Spool): Collector => benchCollector(dp, spool, log);

    // Overlapped first, on a quiet machine: a ship process inserts while this one drains, as in
    // the agent. (Run after the sequential rounds, it shared the cores with the merges of their store.)
    // Twice, each into a fresh store: as fast as the drains go, then offered at the target rate.
    const overlappedRun = (name: string, offeredFlowsPerSec?: number, n = batches): Promise<OverlappedRun> =>
      runOverlapped({ dir: path.join(dir, name), flows, batches: n, fill, collectorFor, offeredFlowsPerSec });
    const fastest = await overlappedRun('fastest');
    // The per-core figure moves by ±20% from run to run on this VM (how many merges a window
    // holds, how many batches each insert groups): the median of several paced runs.
    const pacedRuns: OverlappedRun[] = [];
    for (let i = 0; i < pacedRepeats; i++) pacedRuns.push(await overlappedRun(`paced-${i}`, TARGET_FLOWS_PER_SEC));
    const paced = [...pacedRuns].sort((a, b) => a.perCoreFlowsPerSec - b.perCoreFlowsPerSec)[
      Math.floor(pacedRuns.length / 2)
    ]!;
    // A short window ends before the second level of merges: the long run shows what they add.
    const sustained =
      sustainedBatches > 0 ? await overlappedRun('sustained', TARGET_FLOWS_PER_SEC, sustainedBatches) : undefined;

    // Sequential: drain, then ship each spooled batch, in this process.
    store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
    const spool = new Spool(path.join(dir, 'spool'), 2 ** 40);
    const collector = collectorFor(spool);
    const buf = shipBuffer();
    const drainS: number[] = [];
    const shipS: number[] = [];
    for (let r = 0; r <= rounds; r++) {
      await fill();
      const t0 = performance.now();
      await collector.drain('interval');
      const t1 = performance.now();
      for (const info of spool.list()) {
        await shipBatch(spool, info, store, buf);
        spool.remove(info);
      }
      drainS.push((t1 - t0) / 1000);
      shipS.push((performance.now() - t1) / 1000);
    }
    const stored = await store.query("SELECT count() FROM flowgate.flows WHERE host = 'bench'", {
      maxSeconds: 60,
      maxRows: 10,
    });
    if (Number(stored.rows[0]![0]) !== flows * (rounds + 1)) {
      throw new Error(`stored ${String(stored.rows[0]![0])} of ${flows * (rounds + 1)} flows`);
    }
    const warm = (xs: number[]): number[] => xs.slice(1);
    const total = drainS.map((d, i) => d + shipS[i]!);

    await fill();
    const kernel = await dp.native.drainBaseline(flowMapName(dp.config().flowSlot));
    const storedFlowsPerSec = flows / median(warm(total));
    const kernelDrainFlowsPerSec = kernel.count / (kernel.ns / 1e9);
    return {
      flows,
      storedFlowsPerSec,
      coldFlowsPerSec: flows / total[0]!,
      drainFlowsPerSec: flows / median(warm(drainS)),
      shipFlowsPerSec: flows / median(warm(shipS)),
      overlapped: fastest,
      paced,
      pacedRuns,
      sustained,
      overlappedFlowsPerSec: fastest.flowsPerSec,
      perCoreFlowsPerSec: paced.perCoreFlowsPerSec,
      batches,
      kernelDrainFlowsPerSec,
      ratioToKernel: storedFlowsPerSec / kernelDrainFlowsPerSec,
      target: TARGET_FLOWS_PER_SEC,
    };
  } finally {
    await store?.close();
    dp.unpinAll();
    dp.close();
    removeBpffs(bpffs);
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface FootprintResult {
  mode: 'embedded' | 'server';
  flowsPerInterval: number;
  intervals: number;
  storedFlows: number;
  rssMaxMB: number;
  /** The agent's own process (the rest of rssMaxMB is its ship process, embedded mode only). */
  rssAgentMaxMB: number;
  /**
   * Of RSS, the anonymous pages (heaps, stacks: RssAnon), agent + ship process, max.
   * The rest is file pages (node's and libchdb's code and constants), which
   * the page cache holds anyway and the kernel can drop and reread.
   */
  anonMaxMB: number;
  cpuPercentOfOneCore: number;
  targetRssMB: number;
}

function pidTree(pid: number): number[] {
  const out = [pid];
  for (const p of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) {
    out.push(...pidTree(Number(p)));
  }
  return out;
}

function statusKB(pid: number, field: 'VmRSS' | 'RssAnon'): number {
  const m = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** USER_HZ: the unit of /proc/<pid>/stat's CPU times. */
const CLOCK_TICKS = 100;

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime
}

export async function benchFootprint(
  mode: 'embedded' | 'server',
  flowsPerInterval: number,
  intervals: number,
): Promise<FootprintResult> {
  const veth = createVethPair('fgf');
  const chDir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-bench-ch-'));
  const ch = mode === 'server' ? await startClickHouseHttp({ dataDir: chDir }) : undefined;
  const agent = await startAgent({
    ifaces: [veth.host],
    args: ['--drain-interval', '1s', ...(ch ? ['--clickhouse-url', ch.url] : [])],
  });
  try {
    let rssMax = 0;
    let rssAgentMax = 0;
    let anonMax = 0;
    const pids = (): number[] => pidTree(agent.proc.pid!);
    const cpu0 = pids().reduce((n, p) => n + cpuTicks(p), 0);
    const t0 = Date.now();
    const sampler = setInterval(() => {
      try {
        const tree = pids();
        rssMax = Math.max(
          rssMax,
          tree.reduce((n, p) => n + statusKB(p, 'VmRSS'), 0),
        );
        anonMax = Math.max(
          anonMax,
          tree.reduce((n, p) => n + statusKB(p, 'RssAnon'), 0),
        );
        rssAgentMax = Math.max(rssAgentMax, statusKB(agent.proc.pid!, 'VmRSS'));
      } catch {
        // a process of the tree just exited
      }
    }, 100);
    const first = 198 * 2 ** 24 + 20 * 2 ** 16;
    for (let i = 0; i < intervals; i++) {
      const started = Date.now();
      // flowsPerInterval distinct sources, a new set every interval (ports differ per interval).
      sendTrafgen(
        `{ eth(da=${veth.hostMac}, sa=${veth.peerMac}), ipv4(saddr=198.20.0.0, saddr=dinc(${first}, ${first + flowsPerInterval - 1}), daddr=198.18.0.1), udp(sp=${1000 + i}, dp=9) }`,
        { dev: veth.peer, ns: veth.ns, count: flowsPerInterval },
      );
      const rest = 1000 - (Date.now() - started);
      if (rest > 0) await new Promise((r) => setTimeout(r, rest));
    }
    await new Promise((r) => setTimeout(r, 3000));
    const cpu1 = pids().reduce((n, p) => n + cpuTicks(p), 0);
    const wall = (Date.now() - t0) / 1000;
    clearInterval(sampler);
    const [row] = await agent.query<[string]>('SELECT toString(count()) FROM flowgate.flows WHERE dst_port = 9');
    return {
      mode,
      flowsPerInterval,
      intervals,
      storedFlows: Number(row?.[0] ?? 0),
      rssMaxMB: rssMax / 1024,
      rssAgentMaxMB: rssAgentMax / 1024,
      anonMaxMB: anonMax / 1024,
      cpuPercentOfOneCore: (((cpu1 - cpu0) / CLOCK_TICKS) * 100) / wall,
      targetRssMB: mode === 'embedded' ? 350 : 80,
    };
  } finally {
    await agent.stop();
    agent.cleanup();
    await ch?.stop();
    rmSync(chDir, { recursive: true, force: true });
    veth.destroy();
  }
}
