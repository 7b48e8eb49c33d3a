/**
 * The flow store against the real embedded engine (chDB). chDB binds one
 * data directory per process, and node's runner gives each test file its
 * own process: this file uses one store directory throughout.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createClient, type ClickHouseClient, type ClickHouseClientConfigOptions } from '@clickhouse/client';
import { createChdbConnection } from 'chdb/connection';
import { FLOW_RECORD_OFFSETS, FLOW_RECORD_SIZE } from '../../control/datapath/layout.js';
import { encodeFlowRows } from '../../control/store/flow-rows.js';
import { loadNative } from '../../native/index.js';
import { ClickHouseFlowStore } from '../../control/store/flow-store.js';
import { embeddedDataDir } from '../../control/store/client.js';
import { defaultSchemaDir, migrate } from '../../control/store/migrate.js';
import { FLOW_GROUP_MAX_ROWS, StoreError, type FlowRecordBatch, type QueryLimits } from '../../control/store/types.js';
import { context, drain, flow, sampleV4Flow, v4, v6 } from './records.js';
import { Spool, batchToken } from '../../control/agent/spool.js';
import { shipBatch, shipBuffer, shipGroup } from '../../control/agent/shipper.js';

const dir = mkdtempSync(path.join(tmpdir(), 'flowgate-store-test-'));
const LIMITS: QueryLimits = { maxSeconds: 30, maxRows: 100_000 };

/** A second client on the same data directory, outside the store (for setup and checks the store refuses). */
function rawClient(): ClickHouseClient {
  const connection = createChdbConnection({
    path: embeddedDataDir(dir),
  }) as unknown as ClickHouseClientConfigOptions['connection'];
  return createClient({ connection });
}

async function rows<T>(client: ClickHouseClient, query: string): Promise<T[]> {
  return (await client.query({ query, format: 'JSONEachRow' })).json<T>();
}

/** The engine's count of a profile event so far (system.events, process-wide; 0 before the first). */
async function eventCount(client: ClickHouseClient, event: string): Promise<number> {
  const [row] = await rows<{ value: string }>(client, `SELECT value FROM system.events WHERE event = '${event}'`);
  return Number(row?.value ?? 0);
}

/** Epoch ns offset such that mono 5 s is 1 h ago at a whole second plus .123456789: inside every TTL. */
const EPOCH_AT_5S = (BigInt(Math.floor(Date.now() / 1000) - 3600) * 1_000_000_000n + 123_456_789n) as bigint;
const OFFSET = EPOCH_AT_5S - 5_000_000_000n;
function utcText(epochNs: bigint): string {
  const us = epochNs / 1000n;
  const d = new Date(Number(us / 1000n));
  return `${d.toISOString().slice(0, 19).replace('T', ' ')}.${String(us % 1_000_000n).padStart(6, '0')}`;
}

let store: ClickHouseFlowStore;

before(async () => {
  store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
});

after(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('migrations', () => {
  it('are applied at open and recorded once each; running them again is a no-op', async () => {
    assert.deepEqual(await store.migrate(), []);
    const r = await store.query(
      'SELECT version, count() AS n, any(length(checksum)) FROM schema_migrations GROUP BY version ORDER BY version',
      LIMITS,
    );
    assert.deepEqual(r.rows, [
      ['001_flows', 1, 64],
      ['002_rollups', 1, 64],
      ['003_counters', 1, 64],
      ['004_rule_history', 1, 64],
      ['005_rules', 1, 64],
    ]);
    const tables = await store.query(
      "SELECT name FROM system.tables WHERE database = 'flowgate' ORDER BY name",
      LIMITS,
    );
    assert.deepEqual(
      tables.rows.map((t) => t[0]),
      [
        'flows',
        'flows_1m',
        'flows_1m_mv',
        'iface_counters',
        'rule_counters',
        'rule_history',
        'rules',
        'schema_migrations',
        'talkers_1h',
        'talkers_1h_mv',
      ],
    );
  });

  it('two racing migrators both succeed and each version stays recorded once', async () => {
    const a = rawClient();
    const b = rawClient();
    try {
      await a.command({ query: 'DROP TABLE flowgate.schema_migrations' });
      const [ra, rb] = await Promise.all([migrate(a, defaultSchemaDir(), 30), migrate(b, defaultSchemaDir(), 30)]);
      assert.ok(ra.length + rb.length >= 5, `applied ${ra} and ${rb}`);
      const r = await rows<{ version: string; n: string }>(
        a,
        'SELECT version, count() AS n FROM flowgate.schema_migrations FINAL GROUP BY version ORDER BY version',
      );
      assert.deepEqual(
        r.map((x) => [x.version, Number(x.n)]),
        [
          ['001_flows', 1],
          ['002_rollups', 1],
          ['003_counters', 1],
          ['004_rule_history', 1],
          ['005_rules', 1],
        ],
      );
      assert.deepEqual(await store.migrate(), []);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('refuses to run when an applied migration changed', async () => {
    const schema = mkdtempSync(path.join(tmpdir(), 'flowgate-schema-'));
    try {
      cpSync(defaultSchemaDir(), schema, { recursive: true });
      const file = path.join(schema, '002_rollups.sql');
      writeFileSync(file, `${readFileSync(file, 'utf8')}\n-- edited after it was applied\n`);
      const client = rawClient();
      try {
        await assert.rejects(
          migrate(client, schema, 30),
          (e: unknown) => e instanceof StoreError && !e.retryable && /002_rollups.*must not change/.test(e.message),
        );
      } finally {
        await client.close();
      }
    } finally {
      rmSync(schema, { recursive: true, force: true });
    }
  });

  it('flows has the columns and types of DESIGN.md, in order, then the extras', async () => {
    const r = await store.query(
      "SELECT name, type FROM system.columns WHERE database = 'flowgate' AND table = 'flows' ORDER BY position",
      LIMITS,
    );
    assert.deepEqual(r.rows, [
      ['first_seen', "DateTime64(6, 'UTC')"],
      ['last_seen', "DateTime64(6, 'UTC')"],
      ['host', 'LowCardinality(String)'],
      ['iface', 'LowCardinality(String)'],
      ['direction', "Enum8('ingress' = 1, 'egress' = 2)"],
      ['src_addr', 'IPv6'],
      ['dst_addr', 'IPv6'],
      ['src_port', 'UInt16'],
      ['dst_port', 'UInt16'],
      ['protocol', 'UInt8'],
      ['vlan', 'UInt16'],
      ['tcp_flags', 'UInt8'],
      ['packets', 'UInt64'],
      ['bytes', 'UInt64'],
      ['dropped_packets', 'UInt64'],
      ['dropped_bytes', 'UInt64'],
      ['rule_id', 'UInt32'],
      ['inner_vlan', 'UInt16'],
      ['tcp_flags_ns', 'UInt8'],
    ]);
  });

  it('gives the tables every drain writes to wider merges (merge_selector_base), and keeps them at a restart', async () => {
    const bases = async (): Promise<Record<string, string>> => {
      const r = await store.query(
        "SELECT name, extract(engine_full, 'merge_selector_base = (\\d+)') FROM system.tables WHERE database = 'flowgate' AND engine LIKE '%MergeTree'",
        LIMITS,
      );
      return Object.fromEntries(r.rows.filter(([, b]) => b !== '').map(([n, b]) => [n as string, b as string]));
    };
    const want = { flows: '20', flows_1m: '20', talkers_1h: '20' };
    assert.deepEqual(await bases(), want);
    await store.close();
    store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
    assert.deepEqual(await bases(), want);
  });

  it('sets the TTLs from the retention, and changes them when it changes', async () => {
    const ttls = async (): Promise<Record<string, string>> => {
      const r = await store.query(
        // flowgate.rules has no TTL: a rule lives until it is deleted.
        "SELECT name, extract(engine_full, 'TTL (.*?) SETTINGS') FROM system.tables WHERE database = 'flowgate' AND engine LIKE '%MergeTree' AND name NOT IN ('schema_migrations', 'rules')",
        LIMITS,
      );
      return Object.fromEntries(r.rows.map(([n, t]) => [n as string, t as string]));
    };
    assert.deepEqual(await ttls(), {
      flows: 'toDateTime(first_seen) + toIntervalDay(30)',
      flows_1m: 'minute + toIntervalDay(90)',
      talkers_1h: 'hour + toIntervalDay(400)',
      iface_counters: 'toDateTime(ts) + toIntervalDay(90)',
      rule_counters: 'toDateTime(ts) + toIntervalDay(90)',
      rule_history: 'toDateTime(ts) + toIntervalDay(730)',
    });
    await store.close();
    store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 120 });
    assert.deepEqual(await ttls(), {
      flows: 'toDateTime(first_seen) + toIntervalDay(120)',
      flows_1m: 'minute + toIntervalDay(120)',
      talkers_1h: 'hour + toIntervalDay(400)',
      iface_counters: 'toDateTime(ts) + toIntervalDay(120)',
      rule_counters: 'toDateTime(ts) + toIntervalDay(120)',
      rule_history: 'toDateTime(ts) + toIntervalDay(730)',
    });
    await store.close();
    store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
    assert.equal((await ttls()).flows, 'toDateTime(first_seen) + toIntervalDay(30)');
    assert.equal((await ttls()).flows_1m, 'minute + toIntervalDay(90)');
  });
});

describe('insertFlows', () => {
  const ctx = context(OFFSET);
  const records = drain([
    flow(sampleV4Flow()),
    flow({
      family: 6,
      srcAddr: v6('2001:0db8:0000:0000:0000:0000:0000:0001'),
      dstAddr: v6('2001:0db8:0000:0000:0000:0000:0000:00ff'),
      srcPort: 128,
      dstPort: 0,
      protocol: 58,
      ifindex: 3,
      direction: 'egress',
      packets: 0, // set to 2^53 + 1 below
      bytes: 1500,
      firstSeenNs: 65_000_000_001n, // a minute later
      lastSeenNs: 66_000_000_000n,
      tcpFlags: 0,
    }),
  ]);
  records.writeBigUInt64LE(2n ** 53n + 1n, FLOW_RECORD_SIZE + FLOW_RECORD_OFFSETS.packets);

  it('stores exactly what the records hold', async () => {
    await store.insertFlows(encodeFlowRows(records, ctx), 'test:exact');
    const r = await store.query(
      `SELECT toString(first_seen), toString(last_seen), host, iface, direction, toString(src_addr), toString(dst_addr),
              src_port, dst_port, protocol, vlan, inner_vlan, tcp_flags, tcp_flags_ns,
              toString(packets), bytes, dropped_packets, dropped_bytes, rule_id,
              toUnixTimestamp64Micro(first_seen) = ${(EPOCH_AT_5S / 1000n).toString()}
       FROM flows ORDER BY first_seen`,
      LIMITS,
    );
    assert.deepEqual(r.rows, [
      [
        utcText(EPOCH_AT_5S),
        utcText(OFFSET + 7_500_000_999n),
        'test-host',
        'eth0',
        'ingress',
        '::ffff:10.1.2.3',
        '::ffff:192.0.2.200',
        51000,
        443,
        6,
        100,
        200,
        255,
        1,
        '10',
        12345,
        2,
        120,
        42,
        1,
      ],
      [
        utcText(OFFSET + 65_000_000_001n),
        utcText(OFFSET + 66_000_000_000n),
        'test-host',
        'eth1',
        'egress',
        '2001:db8::1',
        '2001:db8::ff',
        128,
        0,
        58,
        0,
        0,
        0,
        0,
        '9007199254740993',
        1500,
        0,
        0,
        0,
        0,
      ],
    ]);
    assert.match(utcText(EPOCH_AT_5S), /\.123456$/);
  });

  it('drops a retried batch: the same token twice stores the rows once', async () => {
    const again = encodeFlowRows(records, ctx);
    await store.insertFlows(again, 'test:exact');
    await store.insertFlows(again, 'test:exact');
    const r = await store.query('SELECT count() FROM flows', LIMITS);
    assert.deepEqual(r.rows, [[2]]);
    // A different token is a different batch, even with equal rows.
    await store.insertFlows(again, 'test:exact-2');
    assert.deepEqual((await store.query('SELECT count() FROM flows', LIMITS)).rows, [[4]]);
  });

  it('feeds the rollups, once per batch', async () => {
    const perMinute = await store.query(
      `SELECT toString(m), b, f FROM (
         SELECT toStartOfMinute(toDateTime(first_seen)) AS m, sum(bytes) AS b, count() AS f FROM flows GROUP BY m
       ) ORDER BY m`,
      LIMITS,
    );
    const rollup = await store.query(
      'SELECT toString(minute), sum(bytes), sum(flows) FROM flows_1m GROUP BY minute ORDER BY minute',
      LIMITS,
    );
    assert.equal(perMinute.rows.length, 2);
    assert.deepEqual(rollup.rows, perMinute.rows);
    const byPort = await store.query(
      'SELECT iface, direction, protocol, dst_port, toString(sum(packets)), sum(dropped_bytes) FROM flows_1m GROUP BY ALL ORDER BY iface',
      LIMITS,
    );
    assert.deepEqual(byPort.rows, [
      ['eth0', 'ingress', 6, 443, '20', 240],
      ['eth1', 'egress', 58, 0, '18014398509481986', 0],
    ]);
    const talkers = await store.query(
      'SELECT toString(src_addr), toString(dst_addr), sum(bytes), sum(flows) FROM talkers_1h GROUP BY ALL ORDER BY 1',
      LIMITS,
    );
    assert.deepEqual(talkers.rows, [
      ['2001:db8::1', '2001:db8::ff', 3000, 2],
      ['::ffff:10.1.2.3', '::ffff:192.0.2.200', 24690, 2],
    ]);
  });

  it('ignores an empty batch and needs a token', async () => {
    await store.insertFlows(encodeFlowRows(Buffer.alloc(0), ctx), 'test:empty');
    await assert.rejects(store.insertFlows(encodeFlowRows(records, ctx), ''), StoreError);
  });

  it('inserts a big batch', async () => {
    const n = 200_000;
    const many = drain(
      Array.from({ length: 4 }, (_, i) =>
        flow({ srcAddr: v4(`10.9.0.${i}`), firstSeenNs: 5_000_000_000n, lastSeenNs: 6_000_000_000n, bytes: 100 }),
      ),
    );
    const buf = Buffer.alloc(many.length * (n / 4));
    for (let i = 0; i < n / 4; i++) many.copy(buf, i * many.length);
    const enc = encodeFlowRows(buf, ctx);
    const t0 = performance.now();
    await store.insertFlows(enc, 'test:big');
    const s = (performance.now() - t0) / 1000;
    console.log(`insertFlows: ${n} rows in ${s.toFixed(2)} s (${Math.round(n / s)} rows/s)`);
    const r = await store.query(
      "SELECT count(), sum(bytes) FROM flows WHERE src_addr IN ('::ffff:10.9.0.0', '::ffff:10.9.0.3')",
      LIMITS,
    );
    assert.deepEqual(r.rows, [[n / 2, (n / 2) * 100]]);
  });
});

describe('insertFlows of raw drain records (the addon writes them as one sorted Native block)', () => {
  const names = { 2: 'eth0', 3: "we'ird\\\tname" };
  /** Flows with every field exercised: wide times, unknown ifindexes, both directions and odd ones, the ninth TCP flag. */
  function sample(n: number, wide = true): Buffer {
    let seed = 7;
    const rnd = (m: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % m;
    };
    const flows = Array.from({ length: n }, (_, i) => {
      // Wide: any time at all (for the conversion); else within the hour after mono 5 s (one partition, inside the TTL).
      const first = wide
        ? BigInt(rnd(2 ** 30)) * BigInt(rnd(2 ** 30) + 1) + BigInt(i)
        : 5_000_000_000n + BigInt(rnd(3_000_000)) * 1_000_000n + BigInt(i);
      return flow({
        family: i % 3 === 0 ? 6 : 4,
        srcAddr:
          i % 3 === 0
            ? v6(`2001:0db8:0000:0000:0000:0000:${rnd(65536).toString(16)}:${i.toString(16)}`)
            : v4(`10.${rnd(256)}.${rnd(256)}.${i % 256}`),
        dstAddr: v4(`192.0.2.${rnd(256)}`),
        srcPort: rnd(65536),
        dstPort: rnd(65536),
        protocol: rnd(256),
        vlan: rnd(4096),
        innerVlan: rnd(4096),
        ifindex: [2, 3, 7, 0xffffffff][i % 4]!,
        direction: i % 2 ? 'egress' : 'ingress',
        packets: rnd(2 ** 31),
        bytes: rnd(2 ** 31) * 3,
        droppedPackets: rnd(3),
        droppedBytes: rnd(200),
        firstSeenNs: first,
        lastSeenNs: first + BigInt(rnd(2 ** 31)),
        ruleId: rnd(2 ** 31),
        tcpFlags: rnd(0x200),
      });
    });
    const buf = drain(flows);
    buf.writeBigUInt64LE(2n ** 64n - 1n, FLOW_RECORD_OFFSETS.packets); // u64 at its top
    buf[FLOW_RECORD_SIZE + FLOW_RECORD_OFFSETS.direction] = 0; // not a direction: ingress, as encodeFlowRows has it
    buf[2 * FLOW_RECORD_SIZE + FLOW_RECORD_OFFSETS.direction] = 7;
    return buf;
  }
  const normalized = (source: string): string =>
    `SELECT host, iface, toInt8(direction) AS d, toString(first_seen) AS f, toString(last_seen) AS l,
            toString(src_addr) AS sa, toString(dst_addr) AS da, src_port, dst_port, protocol, vlan, inner_vlan,
            tcp_flags, tcp_flags_ns, toString(packets) AS p, toString(bytes) AS b, toString(dropped_packets) AS dp,
            toString(dropped_bytes) AS db, rule_id FROM (${source}) ORDER BY ALL`;
  const ROW_BINARY_STRUCTURE =
    "host String, iface String, direction Enum8('ingress' = 1, 'egress' = 2), first_seen DateTime64(6, 'UTC'), " +
    "last_seen DateTime64(6, 'UTC'), src_addr IPv6, dst_addr IPv6, src_port UInt16, dst_port UInt16, protocol UInt8, " +
    'vlan UInt16, inner_vlan UInt16, tcp_flags UInt8, tcp_flags_ns UInt8, packets UInt64, bytes UInt64, ' +
    'dropped_packets UInt64, dropped_bytes UInt64, rule_id UInt32';

  it('are the rows encodeFlowRows writes, value for value (times clamped at 1970, names escaped)', async () => {
    const records = sample(3000);
    const client = rawClient();
    try {
      // Offsets: the usual, one that puts early flows before 1970, one with a remainder of 999 ns.
      for (const offset of [OFFSET, -(2n ** 58n), 1_700_000_000_000_000_999n]) {
        const raw = path.join(dir, 'raw.bin');
        const block = path.join(dir, 'block.native');
        const enc = path.join(dir, 'enc.bin');
        // A header's worth of other bytes first, as in a spooled batch.
        writeFileSync(raw, Buffer.concat([Buffer.alloc(FLOW_RECORD_SIZE, 0xee), records]));
        const source = { path: raw, offset: FLOW_RECORD_SIZE, rows: 3000, host: 'test-host', ifaces: names };
        assert.equal(await loadNative().writeFlowBlock(block, [{ ...source, epochOffsetNs: offset }]), 3000);
        writeFileSync(enc, encodeFlowRows(records, { ...context(offset, names), epochOffsetNs: offset }).body);
        const fromBlock = await rows<Record<string, unknown>>(
          client,
          normalized(`SELECT * FROM file('${block}', 'Native')`),
        );
        const fromEncoded = await rows<Record<string, unknown>>(
          client,
          normalized(`SELECT * FROM file('${enc}', 'RowBinary', '${ROW_BINARY_STRUCTURE.replace(/'/g, "\\'")}')`),
        );
        assert.equal(fromBlock.length, 3000);
        assert.deepEqual(fromBlock, fromEncoded);
      }
    } finally {
      await client.close();
    }
  });

  it('writes a block of exactly the columns and types of flowgate.flows', async () => {
    const raw = path.join(dir, 'raw-types.bin');
    const block = path.join(dir, 'types.native');
    writeFileSync(raw, sample(10));
    await loadNative().writeFlowBlock(block, [
      { path: raw, offset: 0, rows: 10, host: 'h', ifaces: names, epochOffsetNs: OFFSET },
    ]);
    const client = rawClient();
    try {
      const describe = async (from: string): Promise<Array<{ name: string; type: string }>> =>
        (await rows<{ name: string; type: string }>(client, `DESCRIBE ${from}`)).map(({ name, type }) => ({
          name,
          type,
        }));
      assert.deepEqual(await describe(`file('${block}', 'Native')`), await describe('flowgate.flows'));
    } finally {
      await client.close();
    }
  });

  it('refuses a source file shorter than its rows, or absent, naming it', async () => {
    const raw = path.join(dir, 'short.bin');
    writeFileSync(raw, sample(3).subarray(0, 2 * FLOW_RECORD_SIZE + 7));
    const block = path.join(dir, 'short.native');
    const source = { path: raw, offset: 0, rows: 3, host: 'h', ifaces: {}, epochOffsetNs: OFFSET };
    await assert.rejects(loadNative().writeFlowBlock(block, [source]), (e: Error) =>
      e.message.includes(`${raw} holds ${2 * FLOW_RECORD_SIZE + 7} bytes, not the 3 flow records`),
    );
    const absent = path.join(dir, 'absent.bin');
    await assert.rejects(
      loadNative().writeFlowBlock(block, [{ ...source, path: absent }]),
      (e: Error & { code?: string }) => e.code === 'ENOENT' && e.message.includes(absent),
    );
  });

  it('lands once per token, with the rollups, and the records may come in slices', async () => {
    const records = sample(5000, false);
    const batch = (host: string): FlowRecordBatch => ({
      format: 'FlowRecords',
      rows: 5000,
      host,
      ifaces: names,
      epochOffsetNs: OFFSET,
      *records() {
        for (let at = 0; at < records.length; at += 777 * FLOW_RECORD_SIZE) {
          yield records.subarray(at, Math.min(records.length, at + 777 * FLOW_RECORD_SIZE));
        }
      },
    });
    await store.insertFlows(batch('raw-host'), 'test:raw');
    await store.insertFlows(batch('raw-host'), 'test:raw'); // a retry
    await store.insertFlows(encodeFlowRows(records, { ...context(OFFSET, names), host: 'enc-host' }), 'test:enc');
    const count = (table: string, host: string): Promise<unknown[][]> =>
      store
        .query(`SELECT count(), toString(sum(packets)), sum(bytes) FROM ${table} WHERE host = '${host}'`, LIMITS)
        .then((r) => r.rows);
    assert.deepEqual(await count('flows', 'raw-host'), await count('flows', 'enc-host'));
    assert.equal((await count('flows', 'raw-host'))[0]![0], 5000);
    const rollup = (host: string): Promise<unknown[][]> =>
      store
        .query(`SELECT sum(flows), toString(sum(packets)) FROM flows_1m WHERE host = '${host}'`, LIMITS)
        .then((r) => r.rows);
    assert.deepEqual(await rollup('raw-host'), await rollup('enc-host'));
    assert.deepEqual((await rollup('raw-host'))[0]![0], 5000);
  });

  it('writes every insert into one block file, rewritten in place and cut to its block, removed at close', async () => {
    const scratch = path.join(dir, 'chdb-insert');
    const blockFiles = (): string[] => readdirSync(scratch).filter((n) => n.endsWith('-block.bin'));
    const records = sample(3000, false);
    const insert = (host: string, rows: number): Promise<void> =>
      store.insertFlows(
        {
          format: 'FlowRecords',
          rows,
          host,
          ifaces: names,
          epochOffsetNs: OFFSET,
          records: () => [records.subarray(0, rows * FLOW_RECORD_SIZE)],
        },
        `test:${host}`,
      );
    await insert('block-big', 3000);
    const [file] = blockFiles();
    assert.ok(file, 'a block file after the first insert');
    const big = statSync(path.join(scratch, file));
    await insert('block-small', 300);
    assert.deepEqual(blockFiles(), [file]);
    const small = statSync(path.join(scratch, file));
    assert.equal(small.ino, big.ino, 'the same file, not a new one');
    assert.ok(small.size < big.size / 5, `cut to the smaller block: ${small.size} of ${big.size} bytes`);
    const stored = async (host: string): Promise<unknown[][]> =>
      (await store.query(`SELECT count(), toString(sum(packets)) FROM flows WHERE host = '${host}'`, LIMITS)).rows;
    const packets = (rows: number): string =>
      String(
        Array.from({ length: rows }, (_, i) =>
          records.readBigUInt64LE(i * FLOW_RECORD_SIZE + FLOW_RECORD_OFFSETS.packets),
        ).reduce((a, b) => (a + b) % 2n ** 64n, 0n), // sum() of UInt64 wraps
      );
    assert.deepEqual(await stored('block-big'), [[3000, packets(3000)]]);
    assert.deepEqual(await stored('block-small'), [[300, packets(300)]]);
    await store.close();
    assert.deepEqual(blockFiles(), []);
    store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
  });

  it('gives the memory an insert freed back to the system at once (one allocator purge per insert)', async () => {
    const client = rawClient();
    const purges = (): Promise<number> => eventCount(client, 'MemoryAllocatorPurge');
    try {
      const records = sample(2000, false);
      const before = await purges();
      await store.insertFlows(
        {
          format: 'FlowRecords',
          rows: 2000,
          host: 'purge',
          ifaces: names,
          epochOffsetNs: OFFSET,
          records: () => [records],
        },
        'test:purge',
      );
      assert.equal((await purges()) - before, 1);
    } finally {
      await client.close();
    }
  });

  it('a spooled batch is read where it lies: the rows of a copy, once per token, even once the spool dropped it', async () => {
    const records = sample(4000, false);
    const spool = new Spool(path.join(dir, 'in-place-spool'), 2 ** 30);
    const meta = { host: 'in-place', monoToEpochOffsetNs: OFFSET.toString(), ifaces: names };
    const token = batchToken('in-place', 1, 1);
    const w = spool.writer(token, () => meta, FLOW_RECORD_SIZE);
    w.append(records);
    w.commit();
    const [info] = spool.list();
    const reader = spool.open(info!);
    const at = reader.inPlace(FLOW_RECORD_SIZE);
    reader.close();
    assert.ok(at && at.skipRecords > 0, 'the spooled batch reads in place');
    const buf = shipBuffer();
    assert.equal(await shipBatch(spool, info!, store, buf), 4000);
    assert.equal(await shipBatch(spool, info!, store, buf), 4000); // a retry: dropped by the token
    // The spool drops the batch while an insert has it open (its bound, in the agent): the open file is still read.
    const late = batchToken('in-place', 1, 2);
    const w2 = spool.writer(late, () => ({ ...meta, host: 'in-place-late' }), FLOW_RECORD_SIZE);
    w2.append(records);
    w2.commit();
    const lateInfo = spool.list().find((b) => b.token === late)!;
    const lateReader = spool.open(lateInfo);
    const base = { format: 'FlowRecords', rows: 4000, ifaces: names, epochOffsetNs: OFFSET } as const;
    try {
      const where = lateReader.inPlace(FLOW_RECORD_SIZE);
      assert.ok(where);
      spool.remove(lateInfo);
      await store.insertFlows(
        {
          ...base,
          host: 'in-place-late',
          inPlace: where,
          records: () => assert.fail('read in place, not through records()'),
        },
        late,
      );
    } finally {
      lateReader.close();
    }
    await store.insertFlows({ ...base, host: 'copied', records: () => [records] }, 'test:copy');
    const all = async (host: string): Promise<unknown[][]> =>
      (
        await store.query(
          `SELECT * EXCEPT host FROM flows WHERE host = '${host}' ORDER BY first_seen, src_addr, dst_addr, src_port, dst_port, packets`,
          { ...LIMITS, maxRows: 10_000 },
        )
      ).rows;
    const copied = await all('copied');
    assert.equal(copied.length, 4000);
    assert.deepEqual(await all('in-place'), copied);
    assert.deepEqual(await all('in-place-late'), copied);
  });

  it('several spooled batches go as one insert: one part, each batch its own meta, a retry dropped', async () => {
    const spool = new Spool(path.join(dir, 'group-spool'), 2 ** 30);
    const hosts = ['group-a', 'group-b', 'group-c'];
    const offsets = [OFFSET, OFFSET + 1_000_000_000n, OFFSET + 2_000_000_000n];
    const records = sample(3000, false);
    for (const [i, host] of hosts.entries()) {
      const w = spool.writer(
        batchToken(host, 1, i),
        () => ({ host, monoToEpochOffsetNs: offsets[i]!.toString(), ifaces: { 2: `eth-${i}`, 3: names[3] } }),
        FLOW_RECORD_SIZE,
      );
      w.append(records);
      w.commit();
    }
    const infos = spool.list().filter((b) => hosts.some((h) => b.token.startsWith(h)));
    assert.equal(infos.length, 3);
    const client = rawClient();
    const perHost = async (): Promise<unknown[][]> =>
      (
        await store.query(
          `SELECT host, count(), toString(sum(packets)), min(first_seen), groupUniqArrayIf(iface, iface LIKE 'eth-%') FROM flows
           WHERE host LIKE 'group-%' GROUP BY host ORDER BY host`,
          LIMITS,
        )
      ).rows;
    try {
      await client.command({ query: 'SYSTEM STOP MERGES flowgate.flows' });
      const sortedBlocks = (): Promise<number> => eventCount(client, 'MergeTreeDataWriterBlocksAlreadySorted');
      const sortedBefore = await sortedBlocks();
      const buf = shipBuffer();
      assert.equal(await shipGroup(spool, infos, 'test:group', store, buf), 9000);
      // The block came in the order of both parts (hosts, interface names and equal address pairs across
      // batches included): the engine sorted neither the flows nor the talkers_1h part.
      const [[flowParts, talkerParts]] = (
        await store.query(
          `SELECT (SELECT uniqExact(_part) FROM flows WHERE host LIKE 'group-%'),
                  (SELECT uniqExact(_part) FROM talkers_1h WHERE host LIKE 'group-%')`,
          LIMITS,
        )
      ).rows as [[number, number]];
      assert.equal((await sortedBlocks()) - sortedBefore, flowParts + talkerParts);
      const landed = await perHost();
      assert.deepEqual(
        landed.map((r) => [r[0], r[1], r[4]]),
        hosts.map((h, i) => [h, 3000, [`eth-${i}`]]), // each batch's own interface names
      );
      // Each batch's own clock offset: one second apart.
      const firsts = landed.map((r) => Date.parse(`${String(r[3]).replace(' ', 'T')}Z`));
      assert.deepEqual([firsts[1]! - firsts[0]!, firsts[2]! - firsts[1]!], [1000, 1000]);
      // One block: a part per day the rows fall in, not a part per batch.
      const [[parts, days]] = (
        await store.query(
          "SELECT uniqExact(_part), uniqExact(toDate(first_seen)) FROM flows WHERE host LIKE 'group-%'",
          LIMITS,
        )
      ).rows as [[number, number]];
      assert.equal(parts, days);
      // A retry of the group (same batches, same order, same token) lands nothing.
      assert.equal(await shipGroup(spool, infos, 'test:group', store, buf), 9000);
      assert.deepEqual(await perHost(), landed);
      const rollup = await store.query(
        "SELECT sum(flows) FROM flows_1m WHERE host LIKE 'group-%' UNION ALL SELECT sum(flows) FROM talkers_1h WHERE host LIKE 'group-%'",
        LIMITS,
      );
      assert.deepEqual(rollup.rows, [[9000], [9000]]);
    } finally {
      await client.command({ query: 'SYSTEM START MERGES flowgate.flows' });
      await client.close();
    }
  });

  it('refuses a group past FLOW_GROUP_MAX_ROWS or of encoded rows, and inserts nothing', async () => {
    const big = (host: string, rows: number): FlowRecordBatch => ({
      format: 'FlowRecords',
      rows,
      host,
      ifaces: {},
      epochOffsetNs: OFFSET,
      records: () => assert.fail('not read: refused before'),
    });
    const half = Math.ceil(FLOW_GROUP_MAX_ROWS / 2) + 1;
    await assert.rejects(
      store.insertFlows([big('too-big', half), big('too-big', half)], 'test:too-big'),
      (e: unknown) => e instanceof StoreError && !e.retryable && /at most 1048449 rows, not 1048452/.test(e.message),
    );
    const encoded = encodeFlowRows(sample(2, false), { ...context(OFFSET, names), host: 'too-big' });
    await assert.rejects(
      store.insertFlows([big('too-big', 1), encoded as unknown as FlowRecordBatch], 'test:mixed'),
      (e: unknown) => e instanceof StoreError && /FlowRecords batches only/.test(e.message),
    );
    assert.deepEqual((await store.query("SELECT count() FROM flows WHERE host = 'too-big'", LIMITS)).rows, [[0]]);
  });

  it('refuses records that do not add up to whole rows, and inserts nothing', async () => {
    const bad: FlowRecordBatch = {
      format: 'FlowRecords',
      rows: 2,
      host: 'bad-host',
      ifaces: {},
      epochOffsetNs: OFFSET,
      *records() {
        yield sample(2, false).subarray(0, FLOW_RECORD_SIZE + 5);
      },
    };
    await assert.rejects(store.insertFlows(bad, 'test:bad'));
    assert.deepEqual((await store.query("SELECT count() FROM flows WHERE host = 'bad-host'", LIMITS)).rows, [[0]]);
  });
});

describe('counter history', () => {
  it('inserts interface and rule counters; a token makes a retry harmless', async () => {
    const ts = Date.now() - 60_000;
    const counters = {
      seen_packets: 10,
      seen_bytes: 1000,
      passed_packets: 8,
      dropped_packets: 2,
      dropped_bytes: 200,
      ip_packets: 9,
      non_ip_packets: 1,
      new_flows: 3,
      flow_insert_failed: 0,
    };
    const row = {
      ts,
      host: 'h',
      iface: 'eth0',
      direction: 'ingress' as const,
      counters,
      malformed: { eth_trunc: 1, ipv4_hdr: 0 },
    };
    await store.insertIfaceCounters([row, { ...row, direction: 'egress', ts: new Date(ts) }], 'ifc:1');
    await store.insertIfaceCounters([row, { ...row, direction: 'egress', ts: new Date(ts) }], 'ifc:1');
    await store.insertRuleCounters([{ ts, host: 'h', ruleId: 7, packets: 5, bytes: 300 }]);
    await store.insertRuleCounters([{ ts, host: 'h', ruleId: 7, packets: 5, bytes: 300 }]);
    const ifc = await store.query(
      "SELECT toUnixTimestamp64Milli(ts), direction, seen_bytes, dropped_packets, malformed['eth_trunc'], length(malformed) FROM iface_counters ORDER BY direction",
      LIMITS,
    );
    assert.deepEqual(ifc.rows, [
      [ts, 'ingress', 1000, 2, 1, 1],
      [ts, 'egress', 1000, 2, 1, 1],
    ]);
    // Without a token each call inserts (equal rows of different intervals are not duplicates).
    const rules = await store.query(
      'SELECT rule_id, sum(packets), count() FROM rule_counters GROUP BY rule_id',
      LIMITS,
    );
    assert.deepEqual(rules.rows, [[7, 10, 2]]);
  });

  it('stores rule history rows, once per token', async () => {
    const ts = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
    const after = JSON.stringify({ id: 9, action: 'drop', src: '198.51.100.0/24' });
    const row = { ts, host: 'h', op: 'add' as const, ruleId: 9, before: '', after };
    await store.insertRuleHistory([row, { ...row, op: 'expire', before: after, after: '' }], 'hist:1');
    await store.insertRuleHistory([row, { ...row, op: 'expire', before: after, after: '' }], 'hist:1');
    const r = await store.query(
      "SELECT toUnixTimestamp64Milli(ts), op, rule_id, before, after FROM rule_history WHERE host = 'h' ORDER BY op",
      LIMITS,
    );
    assert.deepEqual(r.rows, [
      [ts, 'add', 9, '', after],
      [ts, 'expire', 9, after, ''],
    ]);
  });
});

describe('query', () => {
  const refusedWrites = [
    'INSERT INTO flows SELECT * FROM flows',
    'ALTER TABLE flows DELETE WHERE 1',
    'DROP TABLE flows',
    'CREATE TABLE t (a UInt8) ENGINE = Memory',
    'SYSTEM STOP MERGES',
    'SELECT 1; DROP TABLE flows',
    "SELECT 1 INTO OUTFILE '/tmp/flowgate-test-outfile'",
    "SELECT file('/etc/hostname')",
  ];

  it('refuses writes, DDL, SYSTEM and file access', async () => {
    for (const sql of refusedWrites) {
      await assert.rejects(
        store.query(sql, LIMITS),
        (e: unknown) => e instanceof StoreError && !e.retryable && /refused/.test(e.message),
        sql,
      );
    }
    assert.deepEqual((await store.query('EXISTS TABLE flowgate.flows', LIMITS)).rows, [[1]]);
  });

  it('runs with readonly=1 in the engine too: table functions and SETTINGS are refused', async () => {
    for (const sql of [
      "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
      'SELECT 1 SETTINGS max_execution_time = 0',
    ]) {
      await assert.rejects(
        store.query(sql, LIMITS),
        (e: unknown) =>
          e instanceof StoreError && !e.retryable && e.clickhouseCode === '164' && /readonly/.test(e.message),
        sql,
      );
    }
    // readonly ended with the query: the store still writes.
    await store.insertRuleCounters([{ ts: Date.now(), host: 'h', ruleId: 8, packets: 1, bytes: 1 }]);
  });

  it('stops a runaway query at maxSeconds', async () => {
    const t0 = performance.now();
    await assert.rejects(
      store.query('SELECT count() FROM numbers(1e11)', { maxSeconds: 1, maxRows: 10 }),
      (e: unknown) => e instanceof StoreError && !e.retryable && e.clickhouseCode === '159',
    );
    assert.ok(performance.now() - t0 < 10_000);
  });

  it('stops a query at maxRows', async () => {
    await assert.rejects(
      store.query('SELECT number FROM numbers(1000)', { maxSeconds: 10, maxRows: 100 }),
      (e: unknown) => e instanceof StoreError && !e.retryable && e.clickhouseCode === '396',
    );
  });

  it("returns ClickHouse's message for bad SQL", async () => {
    await assert.rejects(store.query('SELECT no_such_column FROM flows', LIMITS), (e: unknown) => {
      assert.ok(e instanceof StoreError);
      assert.equal(e.retryable, false);
      assert.equal(e.clickhouseCode, '47');
      assert.match(e.message, /no_such_column/);
      return true;
    });
    await assert.rejects(
      store.query('SELECT FROM WHERE', LIMITS),
      (e: unknown) =>
        e instanceof StoreError && !e.retryable && e.clickhouseCode === '62' && /Syntax error/.test(e.message),
    );
  });

  it('returns columns with types and rows, numbers as numbers', async () => {
    const r = await store.query("SELECT 1 AS a, 'x' AS b, toUInt64(5) AS c, toIPv6('::1') AS d", LIMITS);
    assert.deepEqual(r, {
      columns: [
        { name: 'a', type: 'UInt8' },
        { name: 'b', type: 'String' },
        { name: 'c', type: 'UInt64' },
        { name: 'd', type: 'IPv6' },
      ],
      rows: [[1, 'x', 5, '::1']],
    });
  });
});

describe('schema for the cookbook', () => {
  it('a time range plus a source address reads through the primary key; a destination through its bloom filter', async () => {
    const explain = async (where: string): Promise<string> =>
      (await store.query(`EXPLAIN indexes = 1 SELECT count() FROM flows WHERE ${where}`, LIMITS)).rows
        .map((r) => r[0])
        .join('\n');
    const bySrc = await explain("first_seen >= now() - INTERVAL 1 DAY AND src_addr = toIPv6('10.1.2.3')");
    assert.match(bySrc, /PrimaryKey[\s\S]*Keys:\s+toStartOfHour\(first_seen\)\s+src_addr/);
    const byDst = await explain("first_seen >= now() - INTERVAL 1 DAY AND dst_addr = toIPv6('192.0.2.200')");
    assert.match(byDst, /Name: dst_addr_bloom/);
    assert.match(byDst, /Partition/);
  });
});

describe('concurrency', () => {
  it('queries run beside inserts and each other', async () => {
    const ctx = context(OFFSET);
    const batch = encodeFlowRows(drain([flow({ srcAddr: v4('10.7.7.7'), bytes: 7 })]), ctx);
    const slow = store.query('SELECT count() FROM numbers(1e11)', { maxSeconds: 2, maxRows: 10 });
    const results = await Promise.allSettled([
      slow,
      store.insertFlows(batch, 'test:concurrent'),
      store.query('SELECT 1', LIMITS),
      store.ping(),
      store.query("SELECT count() FROM flows WHERE src_addr = '::ffff:10.7.7.7'", LIMITS),
    ]);
    assert.equal(results[0].status, 'rejected');
    assert.ok(
      results.slice(1).every((r) => r.status === 'fulfilled'),
      JSON.stringify(results.slice(1)),
    );
    assert.deepEqual(
      (await store.query("SELECT sum(bytes) FROM flows WHERE src_addr = '::ffff:10.7.7.7'", LIMITS)).rows,
      [[7]],
    );
  });
});

describe('lifecycle', () => {
  it('pings, and refuses work once closed', async () => {
    assert.equal(await store.ping(), true);
    assert.equal(store.kind, 'embedded');
    await store.close();
    await store.close();
    assert.equal(await store.ping(), false);
    await assert.rejects(store.query('SELECT 1', LIMITS), StoreError);
    store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
    assert.deepEqual((await store.query('SELECT count() > 0 FROM flows', LIMITS)).rows, [[1]]);
  });
});
