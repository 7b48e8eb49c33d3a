/**
 * Agent benchmarks.
 *
 * pipeline: flows from a kernel flow map to rows in the embedded store, in
 * one process — flip, read, spool, encode, insert — against the kernel's
 * own batch lookup-and-delete of the same number of flows (same run).
 *
 * footprint: a real `flowgate run` on a veth receiving `flowsPerInterval`
 * distinct flows every drain interval (trafgen in a test namespace), its
 * RSS (agent + ship process) and CPU, in embedded and server mode.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Datapath } from '../control/datapath/datapath.js';
import { FLOW_KEY, FLOW_RECORD_SIZE } from '../control/datapath/layout.js';
import { MonotonicClock } from '../control/agent/clock.js';
import { Collector } from '../control/agent/collector.js';
import { Spool } from '../control/agent/spool.js';
import { encodeFlowRows } from '../control/store/flow-rows.js';
import { ClickHouseFlowStore } from '../control/store/flow-store.js';
import { createLogger } from '../control/log.js';
import { removeBpffs, tempBpffsDir } from '../test/lib/datapath.js';
import { createVethPair, sendTrafgen } from '../test/lib/netns.js';
import { startAgent } from '../test/lib/agent.js';
import { startClickHouseHttp } from '../test/lib/clickhouse-http-server.js';
import { syntheticDrain } from './store.js';

export interface PipelineResult {
  flows: number;
  storedFlowsPerSec: number;
  kernelDrainFlowsPerSec: number;
  ratioToKernel: number;
  target: number;
}

/** Split packed records into key and value arrays for a batch update. */
function split(records: Buffer): { keys: Buffer; values: Buffer } {
  const n = records.length / FLOW_RECORD_SIZE;
  const keys = Buffer.alloc(n * FLOW_KEY.size);
  const values = Buffer.alloc(n * (FLOW_RECORD_SIZE - FLOW_KEY.size));
  for (let i = 0; i < n; i++) {
    records.copy(keys, i * FLOW_KEY.size, i * FLOW_RECORD_SIZE, i * FLOW_RECORD_SIZE + FLOW_KEY.size);
    records.copy(
      values,
      i * (FLOW_RECORD_SIZE - FLOW_KEY.size),
      i * FLOW_RECORD_SIZE + FLOW_KEY.size,
      (i + 1) * FLOW_RECORD_SIZE,
    );
  }
  return { keys, values };
}

export async function benchPipeline(flows: number): Promise<PipelineResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-bench-'));
  const bpffs = tempBpffsDir();
  const dp = Datapath.open({ bpffs, maxFlows: Math.ceil(flows * 1.25), maxRules: 1024, maxPrefixes: 1024 });
  const log = createLogger('bench');
  log.level = 'warn';
  const store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
  try {
    const records = syntheticDrain(flows, process.hrtime.bigint());
    const { keys, values } = split(records);
    const spool = new Spool(path.join(dir, 'spool'), 1 << 40);
    const collector = new Collector({
      dp,
      spool,
      clock: new MonotonicClock(),
      host: 'bench',
      ifaceNames: () => ({}),
      log,
      onDrain: () => undefined,
    });
    const mapOf = (slot: number): string => (slot ? 'flows_b' : 'flows_a');

    await dp.native.updateBatch(mapOf(dp.config().flowSlot & 1), keys, values);
    const t0 = process.hrtime.bigint();
    await collector.drain('interval');
    for (const info of spool.list()) {
      const batch = spool.read(info);
      const offset = BigInt(batch.meta.monoToEpochOffsetNs);
      const rows = encodeFlowRows(batch.records, {
        host: batch.meta.host,
        ifaceName: (i) => `if${i}`,
        monoToEpochNs: (ns) => ns + offset,
        epochOffsetNs: offset,
      });
      await store.insertFlows(rows, batch.token);
      spool.remove(info);
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const stored = await store.query("SELECT count() FROM flowgate.flows WHERE host = 'bench'", {
      maxSeconds: 60,
      maxRows: 10,
    });
    if (Number(stored.rows[0]![0]) !== flows) throw new Error(`stored ${String(stored.rows[0]![0])} of ${flows} flows`);

    await dp.native.updateBatch(mapOf((dp.config().flowSlot & 1) ^ 1), keys, values);
    const kernel = await dp.native.drainBaseline(mapOf((dp.config().flowSlot & 1) ^ 1));
    const storedFlowsPerSec = flows / seconds;
    const kernelDrainFlowsPerSec = kernel.count / (kernel.ns / 1e9);
    return {
      flows,
      storedFlowsPerSec,
      kernelDrainFlowsPerSec,
      ratioToKernel: storedFlowsPerSec / kernelDrainFlowsPerSec,
      target: 500_000,
    };
  } finally {
    await store.close();
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

function rssKB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

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
    const tick = 100; // Hz of /proc/<pid>/stat
    let rssMax = 0;
    let rssAgentMax = 0;
    const pids = (): number[] => pidTree(agent.proc.pid!);
    const cpu0 = pids().reduce((n, p) => n + cpuTicks(p), 0);
    const t0 = Date.now();
    const sampler = setInterval(() => {
      try {
        rssMax = Math.max(
          rssMax,
          pids().reduce((n, p) => n + rssKB(p), 0),
        );
        rssAgentMax = Math.max(rssAgentMax, rssKB(agent.proc.pid!));
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
      cpuPercentOfOneCore: (((cpu1 - cpu0) / tick) * 100) / wall,
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
