/**
 * Where a stored flow's CPU goes, embedded store: `npm run bench:cost`.
 *
 * The agent's drain (flip, read, spool, release) is timed here on a real
 * flow map. The store's parts come from the same insert run in variants of
 * the schema, each in a fresh store in its own process (chDB binds one data
 * directory per process): 60 batches of 200,000 flows, five to an insert
 * (what the shipper groups at this rate), paced to offer 500,000 flows a
 * second, CPU of the process, merges stopped. A part's cost is the
 * difference between two variants:
 *
 *   read     flows is a Null table, no views: the records to a sorted Native block, read back
 *   flows    + the flows part                  (no views)
 *   1m       + the flows_1m view               (talkers view dropped)
 *   talkers  + the talkers_1h view             (the schema as shipped)
 *
 * Merges then cost per level: every part of every table merged once
 * (OPTIMIZE … FINAL, one merge of the window's parts, table by table), in
 * the talkers variant. A window of this length holds no merge of its own
 * any more (fewer parts than a first merge takes), and a row is merged once
 * per level, several times over a day (docs/operating.md, "Merges"); so the
 * figure is per level, and added once to the total: a floor, not a day.
 * Beside them, the schema without the talkers_1h view (noTalkers): the
 * same, inserts and one level of merges.
 *
 * Each variant runs ROUNDS times, all variants in turn, and the least CPU
 * counts (noise only adds). A part is a difference of two such figures:
 * its own error is larger than the total's, ±0.1–0.15 µs per flow.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Datapath } from '../control/datapath/datapath.js';
import { FLOW_RECORD_SIZE } from '../control/datapath/layout.js';
import { CHUNK_RECORDS } from '../control/agent/collector.js';
import { Spool } from '../control/agent/spool.js';
import { createLogger } from '../control/log.js';
import { openStoreClients } from '../control/store/client.js';
import { ClickHouseFlowStore, encodedSlices } from '../control/store/flow-store.js';
import { FLOW_GROUP_MAX_ROWS, type FlowRecordBatch } from '../control/store/types.js';
import { MIN_INSERT_INTERVAL_MS } from '../control/agent/shipper.js';
import { removeBpffs, tempBpffsDir } from '../test/lib/datapath.js';
import { activeMapFiller, benchCollector } from './fixtures.js';
import { syntheticDrain } from './store.js';

const FLOWS = 200_000;
const BATCHES = 60;
const OFFERED_FLOWS_PER_SEC = 500_000;
/** What the shipper groups at this rate: the batches of one insert interval, within a full group. */
const PER_INSERT = Math.min(
  Math.floor(FLOW_GROUP_MAX_ROWS / FLOWS),
  Math.ceil(((MIN_INSERT_INTERVAL_MS / 1000) * OFFERED_FLOWS_PER_SEC) / FLOWS),
);
const ROUNDS = 2;

const VARIANTS = {
  read: { views: false, mergeLevel: false, nullFlows: true },
  flows: { views: false, mergeLevel: false, nullFlows: false },
  '1m': { views: '1m', mergeLevel: false, nullFlows: false },
  talkers: { views: true, mergeLevel: true, nullFlows: false },
  noTalkers: { views: '1m', mergeLevel: true, nullFlows: false },
} as const;
type Variant = keyof typeof VARIANTS;

/** The tables every insert writes a part to, merged one level by mergeLevel. */
const MERGED_TABLES = ['flows', 'flows_1m', 'talkers_1h'] as const;

/** CPU µs per flow: of the paced inserts, and (mergeLevel) of one level of merges, by table. */
interface VariantCost {
  insertUs: number;
  mergeUs?: Partial<Record<(typeof MERGED_TABLES)[number], number>>;
}

/** One variant in this process. */
async function runVariant(name: Variant): Promise<VariantCost> {
  const v = VARIANTS[name];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-bench-cost-'));
  const opts = { target: { kind: 'embedded' as const, dir }, retentionDays: 30 };
  const store = await ClickHouseFlowStore.open(opts);
  // A second connection to the same engine, for the schema changes the store has no call for.
  const admin = await openStoreClients(opts);
  const ddl = (sql: string): Promise<unknown> => admin.writer.command({ query: sql });
  try {
    if (v.views !== true) await ddl('DROP VIEW flowgate.talkers_1h_mv');
    if (v.views === false) await ddl('DROP VIEW flowgate.flows_1m_mv');
    if (v.nullFlows) {
      await ddl('RENAME TABLE flowgate.flows TO flowgate.flows_stored');
      await ddl('CREATE TABLE flowgate.flows AS flowgate.flows_stored ENGINE = Null');
    }
    await ddl('SYSTEM STOP MERGES');
    const file = path.join(dir, 'records.bin');
    writeFileSync(file, syntheticDrain(FLOWS, process.hrtime.bigint()));
    const batch = (): FlowRecordBatch => ({
      format: 'FlowRecords',
      rows: FLOWS,
      host: 'bench',
      ifaces: { '2': 'eth0', '3': 'eth1', '4': 'eth2', '5': 'eth3' },
      epochOffsetNs: BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint(),
      records: () => {
        throw new Error('read in place');
      },
      inPlace: { path: file, skipRecords: 0 },
    });
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let b = 0; b < BATCHES; b += PER_INSERT) {
      const due = t0 + ((b * FLOWS) / OFFERED_FLOWS_PER_SEC) * 1000;
      if (due > performance.now()) await new Promise((r) => setTimeout(r, due - performance.now()));
      const group = Array.from({ length: Math.min(PER_INSERT, BATCHES - b) }, batch);
      await store.insertFlows(group, `cost:${b}`);
    }
    const cpuUs = (since: NodeJS.CpuUsage): number => {
      const used = process.cpuUsage(since);
      return (used.user + used.system) / (FLOWS * BATCHES);
    };
    const insertUs = cpuUs(cpu0);
    if (!v.mergeLevel) return { insertUs };
    const mergeUs: VariantCost['mergeUs'] = {};
    for (const table of MERGED_TABLES) {
      if (table === 'talkers_1h' && v.views !== true) continue;
      const at = process.cpuUsage();
      await ddl(`SYSTEM START MERGES flowgate.${table}`);
      await ddl(`OPTIMIZE TABLE flowgate.${table} FINAL`);
      mergeUs[table] = cpuUs(at);
    }
    return { insertUs, mergeUs };
  } finally {
    await admin.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The agent's drain of FLOWS flows from a map of 1.25 × FLOWS: CPU µs per flow (user, system). */
async function drainCost(rounds = 10): Promise<{ user: number; system: number }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-bench-cost-'));
  const bpffs = tempBpffsDir();
  const dp = Datapath.open({ bpffs, maxFlows: Math.ceil(FLOWS * 1.25), maxRules: 1024, maxPrefixes: 1024 });
  try {
    const fill = activeMapFiller(dp, syntheticDrain(FLOWS, process.hrtime.bigint()));
    const log = createLogger('bench');
    log.level = 'warn';
    const spool = new Spool(path.join(dir, 'spool'), 2 ** 40);
    const collector = benchCollector(dp, spool, log);
    let user = 0;
    let system = 0;
    for (let r = 0; r <= rounds; r++) {
      await fill();
      const cpu0 = process.cpuUsage();
      const summary = await collector.drain('interval');
      const cpu = process.cpuUsage(cpu0);
      if (summary.flows !== FLOWS) throw new Error(`drained ${summary.flows} of ${FLOWS} flows`);
      if (r > 0) {
        user += cpu.user;
        system += cpu.system;
      }
      for (const info of spool.list()) spool.remove(info);
    }
    return { user: user / (FLOWS * rounds), system: system / (FLOWS * rounds) };
  } finally {
    dp.unpinAll();
    dp.close();
    removeBpffs(bpffs);
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * With --clickhouse-url the host's share after the drain: encoding the rows
 * it sends (the store's own encodedSlices over the spool's 8,192-record
 * slices). CPU µs per flow, best of `rounds`.
 */
async function encodeCost(rounds = 3): Promise<number> {
  const records = syntheticDrain(FLOWS, process.hrtime.bigint());
  const slice = CHUNK_RECORDS * FLOW_RECORD_SIZE;
  const batch: FlowRecordBatch = {
    format: 'FlowRecords',
    rows: FLOWS,
    host: 'bench',
    ifaces: {},
    epochOffsetNs: BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint(),
    *records() {
      for (let at = 0; at < records.length; at += slice) yield records.subarray(at, at + slice);
    },
  };
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const cpu0 = process.cpuUsage();
    let bytes = 0;
    for await (const body of encodedSlices([batch])) bytes += body.length;
    const cpu = process.cpuUsage(cpu0);
    if (bytes === 0) throw new Error('encoded nothing');
    best = Math.min(best, (cpu.user + cpu.system) / FLOWS);
  }
  return best;
}

function inChild(name: Variant): VariantCost {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, [...process.execArgv, self, '--variant', name], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`variant ${name} exited with ${r.status ?? r.signal}`);
  const line = r.stdout.trim().split('\n').pop()!;
  return (JSON.parse(line) as { cost: VariantCost }).cost;
}

async function main(): Promise<void> {
  const at = process.argv.indexOf('--variant');
  if (at >= 0) {
    const name = process.argv[at + 1] as Variant;
    if (!(name in VARIANTS)) throw new Error(`unknown variant ${name}: one of ${Object.keys(VARIANTS).join(', ')}`);
    console.log(JSON.stringify({ variant: name, cost: await runVariant(name) }));
    return;
  }
  if (process.getuid?.() !== 0) throw new Error('the drain loads eBPF programs: run as root');
  const drain = await drainCost();
  const encodeUs = await encodeCost();
  const names = Object.keys(VARIANTS) as Variant[];
  // The least of the rounds, each figure on its own: noise only adds.
  const runs = Object.fromEntries(names.map((n) => [n, [] as VariantCost[]])) as Record<Variant, VariantCost[]>;
  for (let r = 0; r < ROUNDS; r++) for (const n of names) runs[n].push(inChild(n));
  const least = (xs: number[]): number => Math.min(...xs);
  const v = Object.fromEntries(names.map((n) => [n, least(runs[n].map((c) => c.insertUs))])) as Record<Variant, number>;
  const mergeOf = (n: Variant, table: (typeof MERGED_TABLES)[number]): number =>
    least(runs[n].map((c) => c.mergeUs?.[table] ?? 0));
  const merge = Object.fromEntries(MERGED_TABLES.map((t) => [t, mergeOf('talkers', t)])) as Record<
    (typeof MERGED_TABLES)[number],
    number
  >;
  const drainUs = drain.user + drain.system;
  const insertPath = drainUs + v.talkers;
  const mergeLevel = merge.flows + merge.flows_1m + merge.talkers_1h;
  const total = insertPath + mergeLevel;
  const parts: [string, string, number][] = [
    ['drain: flip, read the map, spool, release', 'agent', drainUs],
    ['spooled records to a sorted block, read', 'ship', v.read],
    ['write the flows part', 'ship', v.flows - v.read],
    ['flows_1m view', 'ship', v['1m'] - v.flows],
    ['talkers_1h view', 'ship', v.talkers - v['1m']],
    ['kernel map to stored rows (insert path)', '', insertPath],
    ['one level of merges: flows', 'ship', merge.flows],
    ['one level of merges: flows_1m', 'ship', merge.flows_1m],
    ['one level of merges: talkers_1h', 'ship', merge.talkers_1h],
    ['total, one level of merges', '', total],
  ];
  console.log(
    `\nCPU per stored flow, embedded store (${BATCHES} drains of ${FLOWS.toLocaleString('en-US')}, ` +
      `${PER_INSERT} to an insert, offered ${OFFERED_FLOWS_PER_SEC.toLocaleString('en-US')}/s)\n`,
  );
  const w = Math.max(...parts.map((p) => p[0].length));
  console.log(`${'part'.padStart(w)}  process  µs/flow  share`);
  console.log(`${'-'.repeat(w)}  -------  -------  -----`);
  for (const [name, where, us] of parts)
    console.log(
      `${name.padStart(w)}  ${where.padStart(7)}  ${us.toFixed(3).padStart(7)}  ${`${Math.round((us / total) * 100)}%`.padStart(5)}`,
    );
  const perCore = (us: number): string => `${Math.round(1e6 / us).toLocaleString('en-US')} flows/s`;
  console.log(
    `\none core: ${perCore(insertPath)} stored, ${perCore(total)} with one level of merges; ` +
      `each further level ${mergeLevel.toFixed(3)} µs/flow (drain system time ${drain.system.toFixed(3)} µs of ${drainUs.toFixed(3)})`,
  );
  console.log(
    `with --clickhouse-url, this host: drain + encoding the rows ${(drainUs + encodeUs).toFixed(3)} µs/flow ` +
      `(encode ${encodeUs.toFixed(3)}), one core: ${Math.round(1e6 / (drainUs + encodeUs)).toLocaleString('en-US')} flows/s`,
  );
  const noTalkers = drainUs + v.noTalkers + mergeOf('noTalkers', 'flows') + mergeOf('noTalkers', 'flows_1m');
  console.log(
    `without the talkers_1h view, one level of merges: ${noTalkers.toFixed(3)} µs/flow, one core: ${perCore(noTalkers)}`,
  );
  console.log('\nJSON:');
  console.log(
    JSON.stringify({
      date: new Date().toISOString(),
      drain,
      encodeUs,
      variants: v,
      mergeLevelUs: merge,
      insertPathUsPerFlow: insertPath,
      usPerFlow: total,
    }),
  );
}

await main();
