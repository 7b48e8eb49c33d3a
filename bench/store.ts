/**
 * Flow store micro-benchmarks: encodeFlowRows over a synthetic drain buffer
 * (a mix of IPv4 and IPv6 flows on a few interfaces, like a real drain), and
 * optionally the insert of the encoded rows into an embedded store.
 */
import { FLOW_KEY, FLOW_RECORD_SIZE, encodeFlowKey, encodeFlowValue } from '../control/datapath/layout.js';
import { encodeFlowRows, type FlowRowContext } from '../control/store/flow-rows.js';

/** n drain records: 3 of 4 IPv4, 1 of 4 IPv6, four ifindexes, both directions. */
export function syntheticDrain(n: number, baseMonoNs = 5_000_000_000_000n): Buffer {
  const buf = Buffer.alloc(n * FLOW_RECORD_SIZE);
  const src = Buffer.alloc(16);
  const dst = Buffer.alloc(16);
  for (let i = 0; i < n; i++) {
    const at = i * FLOW_RECORD_SIZE;
    const v6 = i % 4 === 3;
    src.fill(0);
    dst.fill(0);
    if (v6) {
      src.writeUInt32BE(0x20010db8, 0);
      src.writeUInt32BE(i, 12);
      dst.writeUInt32BE(0x2a001450, 0);
      dst.writeUInt32BE((i * 7919) >>> 0, 12);
    } else {
      src.writeUInt16BE(0xffff, 10);
      dst.writeUInt16BE(0xffff, 10);
      src.writeUInt32BE((0x0a000000 | (i & 0xffffff)) >>> 0, 12);
      dst.writeUInt32BE((0xc0a80000 | (i & 0xffff)) >>> 0, 12);
    }
    encodeFlowKey(
      {
        family: v6 ? 6 : 4,
        srcAddr: src,
        dstAddr: dst,
        srcPort: 1024 + (i % 60000),
        dstPort: [443, 80, 53, 22][i % 4]!,
        protocol: i % 5 === 0 ? 17 : 6,
        vlan: i % 7 === 0 ? 100 : 0,
        innerVlan: 0,
        ifindex: 2 + (i % 4),
        direction: i % 2 === 0 ? 'ingress' : 'egress',
      },
      buf,
      at,
    );
    const first = baseMonoNs + BigInt(i) * 1_001n;
    encodeFlowValue(
      {
        packets: 1 + (i % 1000),
        bytes: 60 + (i % 1000) * 1400,
        droppedPackets: i % 10 === 0 ? 1 : 0,
        droppedBytes: i % 10 === 0 ? 60 : 0,
        firstSeenNs: first,
        lastSeenNs: first + 2_500_000_000n,
        ruleId: i % 10 === 0 ? 7 : 0,
        tcpFlags: 0x1b,
      },
      buf,
      at + FLOW_KEY.size,
    );
  }
  return buf;
}

/** A context like the agent's: a fixed host, ifindex names, monotonic + offset. */
export function syntheticContext(offsetNs = BigInt(Date.now()) * 1_000_000n - 5_000_000_000_000n): FlowRowContext {
  return {
    host: 'bench-host',
    ifaceName: (ifindex) => `eth${ifindex}`,
    monoToEpochNs: (ns) => ns + offsetNs,
  };
}

export interface EncodeBench {
  rows: number;
  /** Best round, seconds. */
  seconds: number;
  /** With monoToEpochNs per timestamp, as the agent calls it today. */
  rowsPerSec: number;
  /** With ctx.epochOffsetNs (no BigInt per row). */
  rowsPerSecFixedOffset: number;
  /** Size of the TSV body. */
  bytes: number;
}

function bestOf(rounds: number, run: () => number): { seconds: number; bytes: number } {
  let seconds = Infinity;
  let bytes = 0;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    bytes = run();
    seconds = Math.min(seconds, (performance.now() - t0) / 1000);
  }
  return { seconds, bytes };
}

/**
 * Encode n synthetic records; best of `rounds` (the first one also warms the
 * JIT up and allocates the reused scratch buffer). The clock stops after the
 * body string exists: making a 140 MB string is part of the cost.
 */
export function benchEncode(n: number, rounds = 3): EncodeBench {
  const buf = syntheticDrain(n);
  const ctx = syntheticContext();
  const fixed = { ...ctx, epochOffsetNs: ctx.monoToEpochNs(0n) };
  const slow = bestOf(rounds, () => encodeFlowRows(buf, ctx).body.length);
  const fast = bestOf(rounds, () => encodeFlowRows(buf, fixed).body.length);
  return {
    rows: n,
    seconds: slow.seconds,
    rowsPerSec: n / slow.seconds,
    rowsPerSecFixedOffset: n / fast.seconds,
    bytes: slow.bytes,
  };
}

/**
 * Insert n synthetic rows (pre-encoded) into a fresh embedded store: the
 * flows table and both rollup views. Loads chDB, which binds one data
 * directory per process: run it in a process that opens no other store.
 */
export async function benchInsert(
  n: number,
  batches = 3,
): Promise<{ rows: number; seconds: number; rowsPerSec: number }> {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const path = await import('node:path');
  const { ClickHouseFlowStore } = await import('../control/store/flow-store.js');
  const dir = mkdtempSync(path.join(tmpdir(), 'flowgate-bench-store-'));
  const store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
  try {
    const rows = encodeFlowRows(syntheticDrain(n), syntheticContext());
    let seconds = Infinity;
    for (let b = 0; b < batches; b++) {
      const t0 = performance.now();
      await store.insertFlows(rows, `bench:${b}`);
      seconds = Math.min(seconds, (performance.now() - t0) / 1000);
    }
    return { rows: n, seconds, rowsPerSec: n / seconds };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
