/**
 * ClickHouseFlowStore: the FlowStore over @clickhouse/client, embedded
 * (chDB) or a server. open() connects and migrates; then inserts of drained
 * batches (exactly once, by token), counter history, and read-only queries
 * for the API.
 */
import { randomUUID } from 'node:crypto';
import { open, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { ClickHouseClient } from '@clickhouse/client';
import type { Logger } from 'pino';
import { SerialQueue } from '../util/serial.js';
import { openStoreClients, type StoreClients } from './client.js';
import { loadNative, type FlowBlockSource } from '../../native/index.js';
import { FLOW_RECORD_SIZE } from '../datapath/layout.js';
import { FLOW_COLUMNS, FlowRowEncoder } from './flow-rows.js';
import { toStoreError } from './errors.js';
import { clusterSchemaDir, defaultSchemaDir, migrate } from './migrate.js';
import { guardReadOnlySql } from './sql-guard.js';
import {
  StoreError,
  type EncodedRows,
  type FlowRecordBatch,
  FLOW_GROUP_MAX_ROWS,
  type FlowStore,
  type IfaceCounterRow,
  type QueryLimits,
  type QueryResult,
  type RuleCounterRow,
  type RuleHistoryStoreRow,
  type StoreOptions,
} from './types.js';

export type StoreLogger = Pick<Logger, 'info' | 'warn'>;

/** Applied when QueryLimits leaves them out: the embedded engine shares the agent's memory. */
const DEFAULT_MAX_MEMORY_BYTES = 2 * 1024 ** 3;
const DEFAULT_MAX_RESULT_BYTES = 256 * 1024 ** 2;

/** A column name from EncodedRows (it may come back from a spool file): a plain identifier only. */
function identifier(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
    throw new StoreError(`invalid column name ${JSON.stringify(name)}`, false);
  return name;
}

/** A ClickHouse string literal. */
function literal(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** An insert of at most FLOW_GROUP_MAX_ROWS rows forms one block: squashed up to them, never cut by bytes. */
const ONE_BLOCK = {
  min_insert_block_size_rows: String(FLOW_GROUP_MAX_ROWS),
  min_insert_block_size_bytes: '0',
  max_insert_block_size: String(FLOW_GROUP_MAX_ROWS),
} as const;

function settingsClause(settings: Record<string, string | number | undefined>): string {
  return Object.entries(settings)
    .filter((e): e is [string, string | number] => e[1] !== undefined)
    .map(([k, v]) => `${k} = ${typeof v === 'number' ? v : literal(v)}`)
    .join(', ');
}

/** Epoch milliseconds, or a Date, as DateTime64(3) text (decimal seconds). */
function msText(ts: Date | number): string {
  const ms = typeof ts === 'number' ? ts : ts.getTime();
  if (!Number.isFinite(ms)) throw new StoreError(`invalid counter timestamp: ${String(ts)}`, false);
  return (Math.round(ms) / 1000).toFixed(3);
}

/** Write a batch's record slices to a new file, one after the other (each slice is reused after its write). */
async function writeSlices(file: string, slices: Iterable<Buffer> | AsyncIterable<Buffer>): Promise<void> {
  const fh = await open(file, 'w', 0o600);
  try {
    for await (const slice of slices) await fh.write(slice, 0, slice.length);
  } finally {
    await fh.close();
  }
}

/**
 * The RowBinary body of raw records, batch after batch, a slice at a time:
 * as a stream with highWaterMark 1, a slice is encoded only when the request
 * takes more (at most one encoded slice waits besides the one being sent).
 */
export async function* encodedSlices(batches: readonly FlowRecordBatch[]): AsyncGenerator<Buffer> {
  for (const batch of batches) {
    const encoder = new FlowRowEncoder({
      host: batch.host,
      ifaceName: (ifindex) => batch.ifaces[ifindex] ?? `if${ifindex}`,
      monoToEpochNs: (ns) => ns + batch.epochOffsetNs,
      epochOffsetNs: batch.epochOffsetNs,
    });
    for await (const slice of batch.records()) yield encoder.encode(slice);
  }
}

export class ClickHouseFlowStore implements FlowStore {
  /** One write at a time: chDB's session keeps each request's settings (a token must not leak into the next insert). */
  private readonly writes = new SerialQueue();
  private closed = false;
  private fileSeq = 0;
  /** SYSTEM JEMALLOC PURGE failed once: not tried again (returnFreedMemory). */
  private purgeFailed = false;

  private constructor(
    private readonly clients: StoreClients,
    private readonly opts: StoreOptions,
    private readonly log?: StoreLogger,
  ) {}

  /** Connect, apply migrations and the retention: the store is ready when this resolves. */
  static async open(opts: StoreOptions, logger?: StoreLogger): Promise<ClickHouseFlowStore> {
    let clients: StoreClients;
    try {
      clients = await openStoreClients(opts);
    } catch (err) {
      throw toStoreError(err, opts.target.kind === 'server');
    }
    const store = new ClickHouseFlowStore(clients, opts, logger);
    try {
      await store.migrate();
    } catch (err) {
      await clients.close().catch(() => undefined);
      throw err;
    }
    return store;
  }

  get kind(): StoreClients['kind'] {
    return this.clients.kind;
  }

  /** The chDB data directory, or the server URL without credentials (for status pages and logs). */
  get location(): string {
    return this.clients.location;
  }

  /** The cluster the server belongs to (--clickhouse-cluster), if any. */
  private get cluster(): string | undefined {
    return this.opts.target.kind === 'server' ? this.opts.target.cluster : undefined;
  }

  async migrate(): Promise<string[]> {
    const { cluster } = this;
    const dir = this.opts.schemaDir ?? (cluster === undefined ? defaultSchemaDir() : clusterSchemaDir());
    const applied = await this.write(() => migrate(this.clients.writer, dir, this.opts.retentionDays, { cluster }));
    if (applied.length > 0) this.log?.info({ applied, store: this.location }, 'schema migrations applied');
    return applied;
  }

  async insertFlows(rows: EncodedRows | FlowRecordBatch | readonly FlowRecordBatch[], token: string): Promise<void> {
    const batches = Array.isArray(rows) ? (rows as readonly FlowRecordBatch[]).filter((b) => b.rows > 0) : undefined;
    if (batches?.length === 1) return this.insertFlows(batches[0]!, token);
    const one = rows as EncodedRows | FlowRecordBatch;
    if (batches ? batches.length === 0 : one.rows === 0) return;
    if (!token) throw new StoreError('insertFlows needs a deduplication token', false);
    if (batches) {
      const total = batches.reduce((n, b) => n + b.rows, 0);
      if (batches.some((b) => b.format !== 'FlowRecords')) {
        throw new StoreError('a group insert takes FlowRecords batches only', false);
      }
      if (total > FLOW_GROUP_MAX_ROWS) {
        throw new StoreError(`a group insert takes at most ${FLOW_GROUP_MAX_ROWS} rows, not ${total}`, false);
      }
    } else if (one.format !== 'RowBinary' && one.format !== 'FlowRecords') {
      throw new StoreError(`unsupported row format ${String((one as { format: unknown }).format)}`, false);
    }
    const columns = (!batches && one.format === 'RowBinary' ? one.columns : FLOW_COLUMNS).map(identifier).join(', ');
    const settings = {
      insert_deduplicate: 1,
      insert_deduplication_token: token,
      // The rollups drop a retried block too (their own dedup window, tokens derived from this one).
      deduplicate_blocks_in_dependent_materialized_views: 1,
      // The two rollup views run side by side (two cores' worth of insert), and
      // their SummingMergeTree tables leave summing to background merges
      // instead of sorting and summing every block on the insert path.
      parallel_view_processing: 1,
      optimize_on_insert: 0,
      // A cluster's flowgate.flows is Distributed: answer once every shard has its part, each
      // deduplicated by the token, not once it is queued on the node (schema/cluster/).
      ...(this.cluster === undefined ? {} : { insert_distributed_sync: 1 as const }),
    } as const;
    // A group is one block whatever order its rows come in: squashed up to all its rows,
    // never cut by bytes, and (parsed, on a server) never cut before them.
    const oneBlock = batches === undefined ? {} : ONE_BLOCK;
    const scratch = this.clients.scratchDir;
    if (scratch) {
      // chDB: through a file (its connection would turn the body into a string and append it to the statement).
      const files: string[] = [];
      const scratchFile = (): string => {
        const file = path.join(scratch, `flows-${process.pid}-${++this.fileSeq}.bin`);
        files.push(file);
        return file;
      };
      await this.write(async (w) => {
        try {
          if (!batches && one.format === 'RowBinary') {
            const file = scratchFile();
            await writeFile(file, one.body);
            await w.command({
              query:
                `INSERT INTO flowgate.flows (${columns}) FROM INFILE ${literal(file)} ` +
                `SETTINGS ${settingsClause(settings)} FORMAT RowBinary`,
            });
          } else {
            // The records as one Native file of finished rows, sorted as the flows and talkers_1h
            // parts are (native/src/flow_block.cc): the engine neither parses a row nor sorts the
            // block. The same records make the same bytes, so a retry forms the same blocks and
            // the token's per-block deduplication drops every one of them.
            const block = await this.flowBlock(batches ?? [one as FlowRecordBatch], scratchFile);
            await w.command({
              query:
                `INSERT INTO flowgate.flows (${columns}) SELECT ${columns} FROM file(${literal(block)}, 'Native') ` +
                `SETTINGS ${settingsClause({ ...settings, ...ONE_BLOCK, max_threads: 1, max_insert_threads: 1 })}`,
            });
          }
        } finally {
          await Promise.all(files.map((f) => rm(f, { force: true })));
        }
      });
      await this.returnFreedMemory();
      return;
    }
    // A server: the bytes as the request body (insert() only takes text and JSON formats; exec takes any).
    // Raw records are encoded a slice at a time as the socket takes them: no whole body in memory.
    await this.write(async (w) => {
      const result = await w.exec({
        query: `INSERT INTO flowgate.flows (${columns}) FORMAT RowBinary`,
        values:
          !batches && one.format === 'RowBinary'
            ? Readable.from([one.body])
            : Readable.from(encodedSlices(batches ?? [one as FlowRecordBatch]), {
                objectMode: false,
                highWaterMark: 1,
              }),
        clickhouse_settings: { ...settings, ...oneBlock },
      });
      result.stream.resume(); // nothing to read, but the socket goes back to the pool only once it is drained
      await finished(result.stream);
    });
  }

  /**
   * The embedded engine's input of an insert: its batches' rows in one Native
   * file. A spooled batch is read where it lies, after its header; another
   * through a copy in a scratch file.
   */
  private async flowBlock(batches: readonly FlowRecordBatch[], scratchFile: () => string): Promise<string> {
    const sources: FlowBlockSource[] = [];
    for (const batch of batches) {
      const { inPlace, rows, host, epochOffsetNs, ifaces } = batch;
      let path = inPlace?.path;
      if (path === undefined) {
        path = scratchFile();
        await writeSlices(path, batch.records());
      }
      const offset = (inPlace?.skipRecords ?? 0) * FLOW_RECORD_SIZE;
      sources.push({ path, offset, rows, host, epochOffsetNs, ifaces });
    }
    // One block file for the store's life, rewritten by every insert: its
    // page-cache pages stay, where a new file a second would take fresh ones
    // (first-touch faults, several times the copy on a VM: flow_block.cc).
    const block = this.blockFile();
    await loadNative().writeFlowBlock(block, sources);
    return block;
  }

  /** The embedded engine's block file (a crash's leftover is removed at the next open: client.ts). */
  private blockFile(): string {
    return path.join(this.clients.scratchDir!, `flows-${process.pid}-block.bin`);
  }

  async insertIfaceCounters(rows: readonly IfaceCounterRow[], token?: string): Promise<void> {
    if (rows.length === 0) return;
    const values = rows.map((r) => ({
      ts: msText(r.ts),
      host: r.host,
      iface: r.iface,
      direction: r.direction,
      ...r.counters,
      malformed: Object.fromEntries(Object.entries(r.malformed).filter(([, v]) => v !== undefined && v > 0)),
    }));
    await this.insertSmall('flowgate.iface_counters', values, token);
  }

  async insertRuleCounters(rows: readonly RuleCounterRow[], token?: string): Promise<void> {
    if (rows.length === 0) return;
    const values = rows.map((r) => ({
      ts: msText(r.ts),
      host: r.host,
      rule_id: r.ruleId,
      packets: r.packets,
      bytes: r.bytes,
    }));
    await this.insertSmall('flowgate.rule_counters', values, token);
  }

  async insertRuleHistory(rows: readonly RuleHistoryStoreRow[], token?: string): Promise<void> {
    if (rows.length === 0) return;
    const values = rows.map((r) => ({
      ts: msText(r.ts),
      host: r.host,
      op: r.op,
      rule_id: r.ruleId,
      before: r.before,
      after: r.after,
    }));
    await this.insertSmall('flowgate.rule_history', values, token);
  }

  async query(sql: string, limits: QueryLimits): Promise<QueryResult> {
    this.assertOpen();
    const statement = guardReadOnlySql(sql);
    const server = this.clients.kind === 'server';
    const q = await this.clients.queryClient();
    try {
      const rs = await q.client.query({
        query: statement,
        format: 'JSONCompact',
        clickhouse_settings: {
          max_execution_time: limits.maxSeconds,
          timeout_overflow_mode: 'throw',
          max_result_rows: String(limits.maxRows),
          max_result_bytes: String(limits.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES),
          result_overflow_mode: 'throw',
          max_memory_usage: String(limits.maxMemoryBytes ?? DEFAULT_MAX_MEMORY_BYTES),
          // Numbers as JSON numbers on both engines (chDB and servers disagree on the default).
          output_format_json_quote_64bit_integers: 0,
          // Last: chDB applies these as SETs in order, and after readonly=1 no SET is allowed.
          readonly: '1',
        },
        // A server stops the query at max_execution_time; this only bounds a hung connection.
        // (Not for chDB: an abandoned native call keeps running and holds its session.)
        abort_signal: server ? AbortSignal.timeout(limits.maxSeconds * 1000 + 30_000) : undefined,
      });
      const json = await rs.json<unknown[]>();
      return { columns: (json.meta ?? []).map(({ name, type }) => ({ name, type })), rows: json.data };
    } catch (err) {
      const e = toStoreError(err, server);
      // A query over its own memory limit will be over it again (time and rows are not retryable anyway).
      if (e.clickhouseCode === '241') throw new StoreError(e.message, false, e.clickhouseCode);
      throw e;
    } finally {
      await q.release().catch(() => undefined);
    }
  }

  /** Asks on a query client: embedded, the writer's session may be busy with a long insert. */
  async ping(): Promise<boolean> {
    if (this.closed) return false;
    try {
      const q = await this.clients.queryClient();
      try {
        return (await q.client.ping()).success;
      } finally {
        await q.release().catch(() => undefined);
      }
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Let a running insert finish: closing chDB under it would abort the engine.
    await this.writes.run(() => this.clients.close());
    if (this.clients.scratchDir) await rm(this.blockFile(), { force: true });
  }

  private async insertSmall(table: string, values: Array<Record<string, unknown>>, token?: string): Promise<void> {
    await this.write((w) =>
      w.insert({
        table,
        values,
        format: 'JSONEachRow',
        clickhouse_settings: {
          // No token: a unique one, so equal rows of two intervals are both kept. (Turning
          // deduplication off would need deduplicate_insert on 26.x, a setting older servers reject.)
          insert_deduplicate: 1,
          insert_deduplication_token: token ?? `${table}:${randomUUID()}`,
          date_time_input_format: 'basic',
          ...(this.cluster === undefined ? {} : { insert_distributed_sync: 1 as const }),
        },
      }),
    );
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError('the flow store is closed', false);
  }

  /**
   * The embedded engine's allocator (jemalloc) keeps pages an insert freed
   * for 5 s before it gives them back, so the next insert or merge stacks on
   * top of them: give them back now. ~2 ms of CPU; *measured* with the
   * footprint benchmark (100k flows a 1 s interval), RSS max of agent and ship
   * process 320–329 MB against 350–352 without. A failure costs memory only,
   * never the insert that has landed: it is logged once and not tried again.
   */
  private async returnFreedMemory(): Promise<void> {
    if (this.purgeFailed) return;
    try {
      await this.write((w) => w.command({ query: 'SYSTEM JEMALLOC PURGE' }));
    } catch (err) {
      this.purgeFailed = true;
      this.log?.warn(
        { err: (err as Error).message },
        'the embedded engine cannot return freed memory (SYSTEM JEMALLOC PURGE): it keeps it a few seconds longer',
      );
    }
  }

  /** Run a write on the writer client, one at a time, errors as StoreError. */
  private write<T>(job: (writer: ClickHouseClient) => Promise<T>): Promise<T> {
    this.assertOpen();
    return this.writes.run(async () => {
      try {
        return await job(this.clients.writer);
      } catch (err) {
        throw toStoreError(err, this.clients.kind === 'server');
      }
    });
  }
}
