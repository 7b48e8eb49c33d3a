/**
 * Schema migrations: schema/NNN_name.sql, applied in version order and
 * recorded (version, checksum, applied_at) in flowgate.schema_migrations.
 *
 * - Idempotent: every statement is CREATE … IF NOT EXISTS or the like, so a
 *   file that half-ran before a crash, or that two agents apply at the same
 *   moment, simply runs again. The table is a ReplacingMergeTree by version:
 *   a race that records a version twice collapses to one row.
 * - A recorded version whose file changed since is refused: the database
 *   and the file would no longer say the same thing. New schema goes into a
 *   new file.
 * - Files are templates: {retention_days} and the other keys of
 *   retentionPlan(); the checksum is of the template, so changing the
 *   retention is not a changed migration. syncTtls() applies a changed
 *   retention to existing tables at every start.
 * - syncMergeSettings() sets the merge policy of the tables every drain
 *   writes to (MERGE_SETTINGS), at every start, where the server knows it.
 * - On a ClickHouse cluster (`{ cluster }`, --clickhouse-cluster) the files
 *   are schema/cluster/'s: {cluster} is filled in with the cluster's name,
 *   {shard} and {replica} stay literal for the servers' own macros, and the
 *   record of migrations is itself replicated to every node.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClickHouseClient } from '@clickhouse/client';
import { toStoreError } from './errors.js';
import { StoreError } from './types.js';

export interface Migration {
  /** The file name without .sql, e.g. '001_flows'. */
  version: string;
  file: string;
  /** sha256 of the file's text (the template, before substitution). */
  checksum: string;
  sql: string;
}

/** Days each table keeps rows; rollups and counters outlive the flows. */
export function retentionPlan(retentionDays: number): Record<string, number> {
  if (!Number.isInteger(retentionDays) || retentionDays < 1) {
    throw new StoreError(`retention must be a whole number of days ≥ 1, not ${retentionDays}`, false);
  }
  return {
    retention_days: retentionDays,
    rollup_days: Math.max(retentionDays, 90),
    talkers_days: Math.max(retentionDays, 400),
    counters_days: Math.max(retentionDays, 90),
    history_days: Math.max(retentionDays, 730),
  };
}

/** A cluster name as remote_servers spells it; it is put into SQL quoted (ON CLUSTER '<name>'). */
export const CLUSTER_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

export interface MigrateOptions {
  /** Apply a cluster schema (schema/cluster/) ON CLUSTER this cluster. */
  cluster?: string;
}

/** Which template key sets each table's TTL (for syncTtls). */
const TTL_KEYS: Record<string, string> = {
  flows: 'retention_days',
  flows_1m: 'rollup_days',
  talkers_1h: 'talkers_days',
  iface_counters: 'counters_days',
  rule_counters: 'counters_days',
  rule_history: 'history_days',
};

const VERSION_FILE = /^(\d+)_[A-Za-z0-9_-]+\.sql$/;

/** The cluster variants of the migrations: schema/cluster/. */
export function clusterSchemaDir(): string {
  return path.join(defaultSchemaDir(), 'cluster');
}

/** The checkout's schema/: found from this file upwards (works from control/store and from dist/). */
export function defaultSchemaDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'schema'))) {
      return path.join(dir, 'schema');
    }
    const up = path.dirname(dir);
    if (up === dir) throw new StoreError('cannot find the schema/ directory of the flowgate checkout', false);
    dir = up;
  }
}

export function loadMigrations(dir: string): Migration[] {
  const files = readdirSync(dir).filter((f) => VERSION_FILE.test(f));
  const numbered = files.map((file) => ({ file, n: Number(VERSION_FILE.exec(file)![1]) }));
  numbered.sort((a, b) => a.n - b.n);
  for (let i = 1; i < numbered.length; i++) {
    if (numbered[i]!.n === numbered[i - 1]!.n) {
      throw new StoreError(
        `two migrations share number ${numbered[i]!.n}: ${numbered[i - 1]!.file}, ${numbered[i]!.file}`,
        false,
      );
    }
  }
  return numbered.map(({ file }) => {
    const sql = readFileSync(path.join(dir, file), 'utf8');
    return {
      version: file.slice(0, -'.sql'.length),
      file: path.join(dir, file),
      checksum: createHash('sha256').update(sql).digest('hex'),
      sql,
    };
  });
}

/**
 * The statements of a migration, templates filled in. A statement ends with
 * ';' at the end of a line; whole-line '--' comments are dropped first (so a
 * ';' in a comment cannot split a statement).
 */
export function statements(sql: string, vars: Record<string, number | string>): string[] {
  const text = sql
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('--'))
    .join('\n')
    .replace(/\{([a-z_]+)\}/g, (whole, name: string) => {
      const v = vars[name];
      if (v === undefined) throw new StoreError(`migration template names {${name}}, which has no value`, false);
      return String(v);
    });
  return text
    .split(/;[ \t]*$/m)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

const MIGRATIONS_TABLE = `
CREATE TABLE IF NOT EXISTS flowgate.schema_migrations
(
    version    String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version`;

/**
 * On a cluster, one record for the whole cluster: every node is a replica of
 * it (no {shard} in the path), so an agent talking to any node sees what was
 * applied. The replica name holds {shard} too: {replica} alone may repeat
 * from one shard to the next.
 */
function clusterMigrationsTable(cluster: string): string {
  return MIGRATIONS_TABLE.replace(
    ' flowgate.schema_migrations',
    ` flowgate.schema_migrations ON CLUSTER '${cluster}'`,
  ).replace(
    'ENGINE = ReplacingMergeTree',
    "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/flowgate/schema_migrations', '{shard}-{replica}')",
  );
}

function clusterVars(cluster: string | undefined): Record<string, string> {
  if (cluster === undefined) return {};
  if (!CLUSTER_NAME.test(cluster)) {
    throw new StoreError(
      `cluster name ${JSON.stringify(cluster)} is not valid: letters, digits, '_', '-' and '.' only`,
      false,
    );
  }
  // {shard} and {replica} are the servers' macros: kept as they are.
  return { cluster, shard: '{shard}', replica: '{replica}' };
}

async function appliedVersions(client: ClickHouseClient): Promise<Map<string, string>> {
  const rs = await client.query({
    query: 'SELECT version, argMin(checksum, applied_at) AS checksum FROM flowgate.schema_migrations GROUP BY version',
    format: 'JSONEachRow',
  });
  const rows = await rs.json<{ version: string; checksum: string }>();
  return new Map(rows.map((r) => [r.version, r.checksum]));
}

/** Apply what is not applied yet; returns the versions applied by this call. */
export async function migrate(
  client: ClickHouseClient,
  schemaDir: string,
  retentionDays: number,
  opts: MigrateOptions = {},
): Promise<string[]> {
  const { cluster } = opts;
  const vars = { ...retentionPlan(retentionDays), ...clusterVars(cluster) };
  const migrations = loadMigrations(schemaDir);
  try {
    await client.command({ query: `CREATE DATABASE IF NOT EXISTS flowgate${onClusterClause(cluster)}` });
    await client.command({ query: cluster === undefined ? MIGRATIONS_TABLE : clusterMigrationsTable(cluster) });
    const applied = await appliedVersions(client);
    for (const m of migrations) {
      const recorded = applied.get(m.version);
      if (recorded !== undefined && recorded !== m.checksum) {
        throw new StoreError(
          `migration ${m.version} was applied with checksum ${recorded.slice(0, 12)}…, but ${m.file} now has ` +
            `${m.checksum.slice(0, 12)}…: applied migrations must not change; put new schema in a new file`,
          false,
        );
      }
    }
    const done: string[] = [];
    for (const m of migrations) {
      if (applied.has(m.version)) continue;
      for (const sql of statements(m.sql, vars)) await client.command({ query: sql });
      await client.insert({
        table: 'flowgate.schema_migrations',
        values: [{ version: m.version, checksum: m.checksum }],
        columns: ['version', 'checksum'],
        format: 'JSONEachRow',
        // Its own token: the write session may carry a previous insert's (chDB keeps SETs).
        clickhouse_settings: { insert_deduplication_token: `schema_migrations:${m.version}:${randomUUID()}` },
      });
      done.push(m.version);
    }
    const tables = await schemaTables(client, cluster);
    await syncTtls(client, vars, cluster, tables);
    await syncMergeSettings(client, cluster, tables);
    return done;
  } catch (err) {
    throw toStoreError(err);
  }
}

/** `ON CLUSTER '<name>'` for DDL on a cluster; nothing on a single node. */
function onClusterClause(cluster: string | undefined): string {
  return cluster === undefined ? '' : ` ON CLUSTER '${cluster}'`;
}

/** A table of the flowgate database as system.tables shows it. */
export interface SchemaTable {
  name: string;
  engine_full: string;
  /** The single-node table it holds: its name, or on a cluster a <table>_local's table (none for the others). */
  base?: string;
}

/** flowgate's tables, each with the single-node table it holds (what syncTtls and syncMergeSettings go by). */
export async function schemaTables(client: ClickHouseClient, cluster?: string): Promise<SchemaTable[]> {
  const rs = await client.query({
    query: "SELECT name, engine_full FROM system.tables WHERE database = 'flowgate'",
    format: 'JSONEachRow',
  });
  return (await rs.json<{ name: string; engine_full: string }>()).map((t) => ({
    ...t,
    base: cluster === undefined ? t.name : /^(.+)_local$/.exec(t.name)?.[1],
  }));
}

/** TTL clause of a table as ClickHouse shows it in engine_full: `TTL <expr> + toIntervalDay(<n>)`. */
const TTL_CLAUSE = /\bTTL (.+?) \+ toIntervalDay\((\d+)\)/;

/**
 * Make each table's TTL match the retention: tables created earlier keep the
 * days they were created with, so a changed --retention is applied here.
 * The flows table recalculates TTL info only (materialize_ttl_recalculate_only)
 * and drops whole parts, so this is cheap even on a big table. On a cluster
 * the TTLs are those of the <table>_local tables, changed ON CLUSTER.
 */
export async function syncTtls(
  client: ClickHouseClient,
  vars: Record<string, number | string>,
  cluster?: string,
  tables?: SchemaTable[],
): Promise<string[]> {
  const changed: string[] = [];
  for (const t of tables ?? (await schemaTables(client, cluster))) {
    const key = t.base === undefined ? undefined : TTL_KEYS[t.base];
    const m = TTL_CLAUSE.exec(t.engine_full);
    if (!key || !m) continue;
    const want = Number(vars[key]);
    if (Number(m[2]) === want) continue;
    await client.command({
      query: `ALTER TABLE flowgate.${t.name}${onClusterClause(cluster)} MODIFY TTL ${m[1]} + toIntervalDay(${want})`,
    });
    changed.push(t.name);
  }
  return changed;
}

/**
 * MergeTree settings of the tables every drain writes to (flows and its two
 * rollups). Each drain adds one part to each; background merges then rewrite
 * every row once per merge level, and that was most of the embedded store's
 * CPU (~45% of it at 200k-row drains, measured with perf). The merge
 * selector's base is how many times bigger than its largest part a merge
 * must be: at 20 instead of ClickHouse's 5, merges are wider and fewer, so a
 * row is rewritten ~log20 instead of ~log5 times (a day of 5 s drains: ~3
 * instead of ~6) for a few dozen more parts per partition. Measured over 60
 * inserts of 200k rows: CPU per stored row −37%.
 */
export const MERGE_SETTINGS: Readonly<Record<string, number>> = { merge_selector_base: 20 };
const MERGE_TUNED_TABLES = new Set(['flows', 'flows_1m', 'talkers_1h']);

/**
 * Give the drained-into tables MERGE_SETTINGS, at every start (tables made
 * by an earlier version get them too). A setting this server does not know
 * (merge_selector_base came in ClickHouse 24.11) is left out rather than
 * failing the start: it is a cost, not a meaning. On a cluster the settings
 * go to the <table>_local tables, ON CLUSTER. Returns what was changed.
 */
export async function syncMergeSettings(
  client: ClickHouseClient,
  cluster?: string,
  tables?: SchemaTable[],
): Promise<string[]> {
  const names = Object.keys(MERGE_SETTINGS);
  const known = await client.query({
    query: `SELECT name FROM system.merge_tree_settings WHERE name IN (${names.map((n) => `'${n}'`).join(', ')})`,
    format: 'JSONEachRow',
  });
  const supported = new Set((await known.json<{ name: string }>()).map((r) => r.name));
  if (supported.size === 0) return [];
  const changed: string[] = [];
  for (const t of tables ?? (await schemaTables(client, cluster))) {
    if (t.base === undefined || !MERGE_TUNED_TABLES.has(t.base)) continue;
    const missing = names.filter(
      (n) =>
        supported.has(n) && new RegExp(`\\b${n} = ([^,\\s]+)`).exec(t.engine_full)?.[1] !== String(MERGE_SETTINGS[n]),
    );
    if (missing.length === 0) continue;
    await client.command({
      query: `ALTER TABLE flowgate.${t.name}${onClusterClause(cluster)} MODIFY SETTING ${missing.map((n) => `${n} = ${MERGE_SETTINGS[n]}`).join(', ')}`,
    });
    changed.push(t.name);
  }
  return changed;
}
