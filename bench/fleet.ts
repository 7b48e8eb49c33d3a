/**
 * Fleet rules (--rules-source store) at size: a whole-set replace written
 * to flowgate.rules through StoreUpstream (what PUT /rules does in a fleet,
 * before the kernel), the fingerprint query every agent runs per sync
 * interval, and the read of the set an agent does when it moved. Against
 * the test ClickHouse-HTTP endpoint (chDB in a child process), the only
 * server this machine has. The baseline is the fingerprint: what an idle
 * fleet pays per interval.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { StoreUpstream } from '../control/rules/fleet.js';
import type { StoredRule } from '../control/rules/types.js';
import { ClickHouseFlowStore } from '../control/store/flow-store.js';
import { ClickHouseRuleStore } from '../control/store/rule-store.js';
import { startClickHouseHttp } from '../test/lib/clickhouse-http-server.js';

export interface FleetBenchRow {
  rules: number;
  replaceSeconds: number;
  fingerprintMs: number;
  readSeconds: number;
  /** The bench process after the read (the agent holds the set this way while applying it). */
  rssMB: number;
}

function slash24s(n: number): StoredRule[] {
  const at = new Date().toISOString();
  return Array.from({ length: n }, (_, i) => ({
    id: i + 1,
    action: 'drop' as const,
    src: `${10 + (i >>> 16)}.${(i >>> 8) & 255}.${i & 255}.0/24`,
    priority: 100,
    createdAt: at,
    updatedAt: at,
  }));
}

export async function benchFleet(sizes: readonly number[]): Promise<FleetBenchRow[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-bench-fleet-'));
  const ch = await startClickHouseHttp({ dataDir: path.join(dir, 'ch') });
  const out: FleetBenchRow[] = [];
  try {
    // The agent's migrations make flowgate.rules.
    await (await ClickHouseFlowStore.open({ target: { kind: 'server', url: ch.url }, retentionDays: 30 })).close();
    const store = await ClickHouseRuleStore.open({ kind: 'server', url: ch.url }, 600_000);
    try {
      const upstream = new StoreUpstream(store, 'bench');
      for (const n of sizes) {
        const rules = slash24s(n);
        let t = performance.now();
        await upstream.replace(rules);
        const replaceSeconds = (performance.now() - t) / 1000;
        t = performance.now();
        await store.fingerprint();
        const fingerprintMs = performance.now() - t;
        t = performance.now();
        const back = await store.read();
        const readSeconds = (performance.now() - t) / 1000;
        if (back.length !== n) throw new Error(`read ${back.length} of ${n} rules`);
        out.push({ rules: n, replaceSeconds, fingerprintMs, readSeconds, rssMB: process.memoryUsage().rss / 2 ** 20 });
      }
    } finally {
      await store.close();
    }
  } finally {
    await ch.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}
