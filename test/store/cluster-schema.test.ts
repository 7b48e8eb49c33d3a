/**
 * schema/cluster/ (flowgate run --clickhouse-cluster): the statements the
 * migrations send to a cluster, checked in the embedded engine (chDB). chDB
 * has no cluster, no Keeper and no macros, so the cluster DDL is parsed
 * (formatQuery) rather than run; its tables are then created with the
 * Replicated engines swapped for their plain twins and compared with the
 * single-node schema. chDB binds one data directory per process: this file
 * uses one throughout.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createClient, type ClickHouseClient, type ClickHouseClientConfigOptions } from '@clickhouse/client';
import { createChdbConnection } from 'chdb/connection';
import { ClickHouseFlowStore } from '../../control/store/flow-store.js';
import {
  clusterSchemaDir,
  defaultSchemaDir,
  loadMigrations,
  migrate,
  syncMergeSettings,
} from '../../control/store/migrate.js';
import { StoreError } from '../../control/store/types.js';

const CLUSTER = 'fleet-1.eu';
const ON_CLUSTER = ` ON CLUSTER '${CLUSTER}'`;
/** Where the cluster schema's tables are created (engines swapped) next to the single-node `flowgate`. */
const COPY_DB = 'flowgate_cluster';

const dir = mkdtempSync(path.join(tmpdir(), 'flowgate-cluster-schema-test-'));
let ch: ClickHouseClient;

before(async () => {
  const connection = createChdbConnection({ path: dir }) as unknown as ClickHouseClientConfigOptions['connection'];
  ch = createClient({ connection });
  // The single-node schema, as the agent applies it.
  await migrate(ch, defaultSchemaDir(), 30);
});

after(async () => {
  await ch?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function rows<T>(query: string): Promise<T[]> {
  return (await ch.query({ query, format: 'JSONEachRow' })).json<T>();
}

function literal(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** Parse without executing: formatQuery() throws on a syntax error. */
async function parse(sql: string): Promise<string> {
  const [row] = await rows<{ f: string }>(`SELECT formatQuery(${literal(sql)}) AS f`);
  return row!.f;
}

/** One line, single spaces: for matching statements whatever their layout. */
function flat(sql: string): string {
  return sql.replace(/\s+/g, ' ').trim();
}

interface Recorded {
  commands: string[];
  inserts: Array<{ table: string; values: unknown }>;
}

/**
 * A client that records what migrate() sends and answers queries with
 * `tables` for system.tables (syncTtls, syncMergeSettings), `mergeSettings`
 * for the settings the server knows, and nothing else (no migration applied
 * yet): the statements a cluster would receive, with no cluster.
 */
function recordingClient(
  tables: Array<{ name: string; engine_full: string }> = [],
  mergeSettings: string[] = [],
): {
  client: ClickHouseClient;
  rec: Recorded;
} {
  const rec: Recorded = { commands: [], inserts: [] };
  const client = {
    command: ({ query }: { query: string }) => {
      rec.commands.push(query);
      return Promise.resolve({ query_id: 'recorded' });
    },
    query: ({ query }: { query: string }) =>
      Promise.resolve({
        json: () =>
          Promise.resolve(
            /system\.tables/.test(query)
              ? tables
              : /system\.merge_tree_settings/.test(query)
                ? mergeSettings.map((name) => ({ name }))
                : [],
          ),
      }),
    insert: ({ table, values }: { table: string; values: unknown }) => {
      rec.inserts.push({ table, values });
      return Promise.resolve({ executed: true, query_id: 'recorded' });
    },
  } as unknown as ClickHouseClient;
  return { client, rec };
}

async function clusterStatements(): Promise<Recorded> {
  const { client, rec } = recordingClient();
  const applied = await migrate(client, clusterSchemaDir(), 30, { cluster: CLUSTER });
  assert.deepEqual(applied, ['001_flows', '002_rollups', '003_counters', '004_rule_history', '005_rules']);
  return rec;
}

/** The single-node tables (not the views, not the migrations record). */
async function singleTables(): Promise<Array<{ name: string; engine: string; engine_full: string }>> {
  return rows(
    "SELECT name, engine, engine_full FROM system.tables WHERE database = 'flowgate' " +
      "AND engine LIKE '%MergeTree' AND name != 'schema_migrations' ORDER BY name",
  );
}

/** Replicated engine: [1] the plain engine, [2] the Keeper path, [3] the replica, [4] the plain engine's own arguments. */
const REPLICATED_ENGINE = /ENGINE = Replicated(\w*MergeTree)\('([^']*)', '([^']*)'(?:, ([^)]*))?\)/;

/** Tables every node holds whole (one replication path for the cluster), not sharded: no _local, no Distributed. */
const CLUSTER_WIDE = new Set(['rules']);

/** The name of a single-node table's twin on the cluster. */
function localName(table: string): string {
  return CLUSTER_WIDE.has(table) ? table : `${table}_local`;
}

/** A cluster statement as it can run on one chDB node: no ON CLUSTER, plain engines, its own database. */
function singleNodeCopy(sql: string): string {
  return sql
    .replaceAll(ON_CLUSTER, '')
    .replace(
      REPLICATED_ENGINE,
      (_m, engine: string, _path, _replica, args?: string) => `ENGINE = ${engine}(${args ?? ''})`,
    )
    .replace(/\breplicated_deduplication_window\b/g, 'non_replicated_deduplication_window')
    .replace(/\bDATABASE IF NOT EXISTS flowgate\b/, `DATABASE IF NOT EXISTS ${COPY_DB}`)
    .replace(/\bflowgate\./g, `${COPY_DB}.`);
}

let copied: Promise<void> | undefined;

/** The cluster schema's tables and views, engines swapped, in COPY_DB (once per process). */
function createCopy(): Promise<void> {
  copied ??= (async () => {
    const { commands } = await clusterStatements();
    for (const sql of commands) {
      if (/ENGINE = Distributed\(/.test(sql)) continue; // needs a cluster; parsed and matched instead
      await ch.command({ query: singleNodeCopy(sql) });
    }
  })();
  return copied;
}

describe('cluster migrations', () => {
  it('every statement parses, names the cluster, and keeps {shard} and {replica} for the servers', async () => {
    const { commands, inserts } = await clusterStatements();
    assert.ok(commands.length >= 2 + 6 * 2 + 2, `only ${commands.length} statements`);
    for (const sql of commands) {
      const formatted = await parse(sql);
      assert.match(formatted, /^(CREATE|ALTER)/, sql);
      assert.ok(sql.includes(ON_CLUSTER), `not ON CLUSTER '${CLUSTER}': ${flat(sql)}`);
      // Only the servers' macros are left in braces: every template value was filled in.
      for (const [brace] of sql.matchAll(/\{[a-z_]+\}/g)) assert.ok(['{shard}', '{replica}'].includes(brace), sql);
      assert.doesNotMatch(sql, /non_replicated_deduplication_window/, 'replicated tables deduplicate through Keeper');
    }
    assert.equal(commands[0], `CREATE DATABASE IF NOT EXISTS flowgate${ON_CLUSTER}`);
    // The record of migrations is one for the whole cluster (no {shard} in its path).
    assert.match(
      flat(commands[1]!),
      /flowgate\.schema_migrations ON CLUSTER .*ENGINE = ReplicatedReplacingMergeTree\('\/clickhouse\/tables\/flowgate\/schema_migrations', '\{shard\}-\{replica\}'\)/,
    );
    assert.deepEqual(
      inserts.map((i) => [i.table, (i.values as Array<{ version: string }>)[0]!.version]),
      ['001_flows', '002_rollups', '003_counters', '004_rule_history', '005_rules'].map((v) => [
        'flowgate.schema_migrations',
        v,
      ]),
    );
    // The fleet's rule set is one for the whole cluster, like the record of migrations.
    const rules = commands.find((sql) => sql.includes('CREATE TABLE IF NOT EXISTS flowgate.rules '))!;
    assert.deepEqual(REPLICATED_ENGINE.exec(flat(rules))?.slice(1), [
      'ReplacingMergeTree',
      '/clickhouse/tables/flowgate/rules',
      '{shard}-{replica}',
      'version, deleted',
    ]);
    // Replication paths: one per sharded table, under the shard's macro.
    const paths = commands.flatMap((sql): Array<[string, string]> => {
      const m = REPLICATED_ENGINE.exec(sql);
      return m && !sql.includes('schema_migrations') && sql !== rules ? [[m[2]!, m[3]!]] : [];
    });
    assert.equal(paths.length, 6);
    for (const [zkPath, replica] of paths) {
      assert.match(zkPath, /^\/clickhouse\/tables\/\{shard\}\/flowgate\/[a-z0-9_]+$/);
      assert.equal(replica, '{replica}');
    }
    assert.equal(new Set(paths.map(([p]) => p)).size, paths.length, 'two tables share a replication path');
  });

  it('the parse check fails on a broken statement', async () => {
    const { commands } = await clusterStatements();
    const table = commands.find((s) => s.includes('flowgate.flows_local'))!;
    await assert.rejects(parse(table.replace('ORDER BY (', 'ORDER BY ((')), /Syntax error/);
  });

  it('each single-node table keeps its name as a Distributed table over <name>_local', async () => {
    const { commands } = await clusterStatements();
    const distributed = new Map<string, string>();
    for (const sql of commands.map(flat)) {
      const m =
        /^CREATE TABLE IF NOT EXISTS flowgate\.(\w+) ON CLUSTER '([^']+)' AS flowgate\.(\w+) ENGINE = Distributed\('([^']+)', flowgate, (\w+)(?:, (.+))?\)$/.exec(
          sql,
        );
      if (!m) continue;
      const [, name, onCluster, as, engineCluster, local, key] = m;
      assert.equal(onCluster, CLUSTER);
      assert.equal(engineCluster, CLUSTER);
      assert.equal(as, `${name!}_local`);
      assert.equal(local, `${name!}_local`);
      distributed.set(name!, key ?? '');
    }
    const single = (await singleTables()).map((t) => t.name).filter((t) => !CLUSTER_WIDE.has(t));
    assert.deepEqual([...distributed.keys()].sort(), single);
    assert.equal(distributed.get('flows'), 'cityHash64(src_addr)');
    // talkers_1h is filled from flows on each shard: same key, so shard pruning by source is right.
    assert.equal(distributed.get('talkers_1h'), 'cityHash64(src_addr)');
    // Only the views write flows_1m_local: no key, so a direct INSERT across shards is refused.
    assert.equal(distributed.get('flows_1m'), '');
  });

  it('each local table has the columns, codecs, keys, TTL, settings and indexes of its single-node table', async () => {
    const { commands } = await clusterStatements();
    const single = await singleTables();
    await createCopy();
    const copies = await rows<{ name: string; engine_full: string }>(
      `SELECT name, engine_full FROM system.tables WHERE database = '${COPY_DB}' ` +
        "AND engine LIKE '%MergeTree' AND name != 'schema_migrations' ORDER BY name",
    );
    assert.deepEqual(copies.map((c) => c.name).sort(), single.map((t) => localName(t.name)).sort());
    for (const t of single) {
      const local = localName(t.name);
      const statement = commands.find((s) => s.includes(`CREATE TABLE IF NOT EXISTS flowgate.${local} `))!;
      assert.equal(REPLICATED_ENGINE.exec(statement)?.[1], t.engine, `${local} is Replicated${t.engine}`);
      // The engine swapped back and the dedup window renamed, the whole definition is the same
      // (merge settings aside: syncMergeSettings sets them after the migrations, checked below).
      const withoutMergeSettings = (e: string): string => e.replace(/, merge_selector_base = \d+/, '');
      assert.equal(copies.find((c) => c.name === local)!.engine_full, withoutMergeSettings(t.engine_full), local);
      const columns = (db: string, table: string): Promise<unknown[]> =>
        rows(
          'SELECT name, type, position, default_kind, default_expression, compression_codec, comment ' +
            `FROM system.columns WHERE database = '${db}' AND table = '${table}' ORDER BY position`,
        );
      const singleColumns = await columns('flowgate', t.name);
      assert.ok(singleColumns.length > 0, t.name);
      assert.deepEqual(await columns(COPY_DB, local), singleColumns, `columns of ${local}`);
      const indexes = (db: string, table: string): Promise<unknown[]> =>
        rows(
          'SELECT name, type_full, expr, granularity FROM system.data_skipping_indices ' +
            `WHERE database = '${db}' AND table = '${table}' ORDER BY name`,
        );
      assert.deepEqual(await indexes(COPY_DB, local), await indexes('flowgate', t.name), `indexes of ${local}`);
    }
  });

  it('the views read flows_local and write the local rollups, with the single-node SELECTs', async () => {
    await createCopy();
    const views = async (db: string): Promise<Array<{ name: string; create_table_query: string; as_select: string }>> =>
      rows(
        `SELECT name, create_table_query, as_select FROM system.tables WHERE database = '${db}' ` +
          "AND engine = 'MaterializedView' ORDER BY name",
      );
    const single = await views('flowgate');
    const copy = await views(COPY_DB);
    assert.deepEqual(
      copy.map((v) => v.name),
      single.map((v) => v.name),
    );
    assert.ok(single.length === 2);
    for (const v of single) {
      const c = copy.find((x) => x.name === v.name)!;
      const target = / TO flowgate\.(\w+)/.exec(v.create_table_query)![1]!;
      assert.match(c.create_table_query, new RegExp(` TO ${COPY_DB}\\.${target}_local `), v.name);
      assert.equal(c.as_select.replaceAll(`${COPY_DB}.flows_local`, 'flowgate.flows'), v.as_select, v.name);
    }
    await ch.command({
      query:
        `INSERT INTO ${COPY_DB}.flows_local (first_seen, last_seen, host, iface, direction, src_addr, dst_addr, packets, bytes) ` +
        "VALUES (now64(6), now64(6), 'h1', 'eth0', 'ingress', '::ffff:10.0.0.1', '::ffff:10.0.0.2', 3, 300)",
    });
    for (const rollup of ['flows_1m_local', 'talkers_1h_local']) {
      const [r] = await rows<{ flows: string; bytes: string }>(
        `SELECT sum(flows) AS flows, sum(bytes) AS bytes FROM ${COPY_DB}.${rollup}`,
      );
      assert.deepEqual([Number(r!.flows), Number(r!.bytes)], [1, 300], rollup);
    }
  });

  it('a changed retention is applied to the local tables ON CLUSTER', async () => {
    const { client, rec } = recordingClient([
      {
        name: 'flows_local',
        engine_full:
          "ReplicatedMergeTree('/clickhouse/tables/{shard}/flowgate/flows', '{replica}') PARTITION BY toDate(first_seen) " +
          'ORDER BY (toStartOfHour(first_seen), src_addr, dst_addr) TTL toDateTime(first_seen) + toIntervalDay(7) SETTINGS index_granularity = 8192',
      },
      { name: 'flows', engine_full: "Distributed('fleet-1.eu', 'flowgate', 'flows_local', cityHash64(src_addr))" },
      {
        name: 'talkers_1h_local',
        engine_full:
          "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/flowgate/talkers_1h', '{replica}') " +
          'PARTITION BY toYYYYMM(hour) ORDER BY (hour, src_addr, dst_addr, host, iface, direction) TTL hour + toIntervalDay(400) SETTINGS index_granularity = 8192',
      },
    ]);
    await migrate(client, clusterSchemaDir(), 30, { cluster: CLUSTER });
    const alters = rec.commands.filter((s) => s.startsWith('ALTER'));
    assert.deepEqual(alters, [
      `ALTER TABLE flowgate.flows_local${ON_CLUSTER} MODIFY TTL toDateTime(first_seen) + toIntervalDay(30)`,
    ]);
    for (const sql of alters) await parse(sql);
  });

  it('sets the merge settings on the drained-into local tables ON CLUSTER, where the servers know them', async () => {
    const tables = [
      {
        name: 'flows_local',
        engine_full:
          "ReplicatedMergeTree('/clickhouse/tables/{shard}/flowgate/flows', '{replica}') PARTITION BY toDate(first_seen) " +
          'ORDER BY (toStartOfHour(first_seen), src_addr, dst_addr) TTL toDateTime(first_seen) + toIntervalDay(30) SETTINGS index_granularity = 8192',
      },
      { name: 'flows', engine_full: "Distributed('fleet-1.eu', 'flowgate', 'flows_local', cityHash64(src_addr))" },
      {
        name: 'flows_1m_local',
        engine_full:
          "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/flowgate/flows_1m', '{replica}') " +
          'PARTITION BY toYYYYMM(minute) ORDER BY (minute, host, iface, direction, protocol, dst_port) TTL minute + toIntervalDay(90) ' +
          'SETTINGS index_granularity = 8192, merge_selector_base = 20',
      },
      {
        name: 'talkers_1h_local',
        engine_full:
          "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/flowgate/talkers_1h', '{replica}') " +
          'PARTITION BY toYYYYMM(hour) ORDER BY (hour, src_addr, dst_addr, host, iface, direction) TTL hour + toIntervalDay(400) ' +
          'SETTINGS index_granularity = 8192, merge_selector_base = 5',
      },
      {
        name: 'iface_counters_local',
        engine_full:
          "ReplicatedMergeTree('/clickhouse/tables/{shard}/flowgate/iface_counters', '{replica}') ORDER BY ts",
      },
    ];
    const { client, rec } = recordingClient(tables, ['merge_selector_base']);
    assert.deepEqual(await syncMergeSettings(client, CLUSTER), ['flows_local', 'talkers_1h_local']);
    const alters = rec.commands.filter((s) => s.startsWith('ALTER'));
    assert.deepEqual(alters, [
      `ALTER TABLE flowgate.flows_local${ON_CLUSTER} MODIFY SETTING merge_selector_base = 20`,
      `ALTER TABLE flowgate.talkers_1h_local${ON_CLUSTER} MODIFY SETTING merge_selector_base = 20`,
    ]);
    for (const sql of alters) await parse(sql);
    // A server that does not know the setting (before ClickHouse 24.11): nothing is sent.
    const older = recordingClient(tables);
    assert.deepEqual(await syncMergeSettings(older.client, CLUSTER), []);
    assert.deepEqual(older.rec.commands, []);
  });

  it('refuses a cluster name that is not one, and the cluster schema without a cluster', async () => {
    for (const bad of ["c1' SETTINGS x = 1 --", '', 'a b', '{cluster}']) {
      const { client, rec } = recordingClient();
      await assert.rejects(
        migrate(client, clusterSchemaDir(), 30, { cluster: bad }),
        (e: unknown) => e instanceof StoreError && !e.retryable && /cluster name/.test(e.message),
        JSON.stringify(bad),
      );
      assert.deepEqual(rec.commands, [], 'nothing was sent');
    }
    const { client } = recordingClient();
    await assert.rejects(
      migrate(client, clusterSchemaDir(), 30),
      (e: unknown) => e instanceof StoreError && /\{cluster\}, which has no value/.test(e.message),
    );
  });

  it('has a cluster file for every single-node file, under the same version', () => {
    assert.deepEqual(
      loadMigrations(clusterSchemaDir()).map((m) => m.version),
      loadMigrations(defaultSchemaDir()).map((m) => m.version),
    );
  });
});

describe('a store with a cluster (--clickhouse-cluster)', () => {
  /** Every request's SQL (URL query= and body) and settings, answered with an empty success. */
  interface Request {
    sql: string;
    params: URLSearchParams;
  }

  async function recordingServer(): Promise<{ server: Server; url: string; requests: Request[] }> {
    const requests: Request[] = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const url = new URL(req.url ?? '/', 'http://x');
        const body = Buffer.concat(chunks).toString('latin1');
        requests.push({ sql: `${url.searchParams.get('query') ?? ''}\n${body}`, params: url.searchParams });
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.end(url.pathname === '/ping' ? 'Ok.\n' : '');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
  }

  it('applies schema/cluster ON CLUSTER and inserts synchronously through the Distributed tables', async () => {
    const { server, url, requests } = await recordingServer();
    try {
      const store = await ClickHouseFlowStore.open({
        target: { kind: 'server', url, cluster: CLUSTER },
        retentionDays: 30,
      });
      try {
        const ddl = requests.map((r) => r.sql).filter((q) => /\b(CREATE|ALTER)\b/.test(q));
        assert.ok(
          ddl.some((q) => q.includes(`CREATE TABLE IF NOT EXISTS flowgate.flows_local${ON_CLUSTER}`)),
          'the cluster schema was applied',
        );
        for (const q of ddl) assert.ok(q.includes(ON_CLUSTER), `not ON CLUSTER: ${flat(q)}`);
        requests.length = 0;
        await store.insertFlows(
          { body: Buffer.alloc(8), format: 'RowBinary', rows: 1, columns: ['first_seen'] },
          'host:1:1',
        );
        await store.insertRuleCounters([{ ts: Date.now(), host: 'h', ruleId: 1, packets: 1, bytes: 1 }]);
        const inserts = requests.filter((r) => /INSERT INTO flowgate\./.test(r.sql));
        assert.equal(inserts.length, 2);
        for (const r of inserts) assert.equal(r.params.get('insert_distributed_sync'), '1', r.sql);
        assert.equal(inserts[0]!.params.get('insert_deduplication_token'), 'host:1:1');
      } finally {
        await store.close();
      }
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
