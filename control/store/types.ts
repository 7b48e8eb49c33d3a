/**
 * The flow store's contract: one implementation (flow-store.ts) over
 * @clickhouse/client, either an embedded chDB (chdb/connection) or a
 * ClickHouse server by URL. Same client, same SQL.
 */
import type { IfaceCounterName, MalformedReason } from '../datapath/layout.js';

export type StoreTarget =
  /** Embedded engine under `dir` (chdb is loaded only in this mode). */
  | { kind: 'embedded'; dir: string }
  /**
   * http(s)://user:pass@host:port[/?database=…]; TLS when https. With
   * `cluster` (--clickhouse-cluster), the server is a node of that cluster:
   * the schema is schema/cluster/'s, created ON CLUSTER. `password`
   * (--clickhouse-password-file) is used when the URL holds none.
   */
  | { kind: 'server'; url: string; cluster?: string; password?: string };

export interface StoreOptions {
  target: StoreTarget;
  /** Days flows are kept (TTL of flowgate.flows); rollups keep longer. */
  retentionDays: number;
  /** Per-request timeout for the server path. */
  requestTimeoutMs?: number;
  /** Where the migrations live; default: the checkout's schema/ (tests point it elsewhere). */
  schemaDir?: string;
}

/** A batch of flow rows already encoded in bulk for INSERT (see flow-rows.ts). */
export interface EncodedRows {
  /** The rows in `format`. */
  body: Buffer;
  format: 'RowBinary';
  rows: number;
  /** Column list, in the order `body` has them. */
  columns: readonly string[];
}

/**
 * A drained batch as the kernel gave it (packed key||value records,
 * control/datapath/layout.ts), for the store to turn into rows its own
 * way: the embedded engine reads the records itself, a server gets them
 * encoded as RowBinary a slice at a time (flow-rows.ts).
 */
export interface FlowRecordBatch {
  format: 'FlowRecords';
  rows: number;
  host: string;
  /** ifindex → interface name at the drain; another ifindex is named `if<ifindex>`. */
  ifaces: Record<string, string>;
  /** Wall clock minus CLOCK_MONOTONIC at the drain, ns: what turns the records' times into epoch times. */
  epochOffsetNs: bigint;
  /**
   * The records in order, a slice at a time: each slice is valid until the
   * next is asked for. One pass only (a retried insert gets a new batch); it
   * throws when the records do not add up to `rows`.
   */
  records(): Iterable<Buffer> | AsyncIterable<Buffer>;
  /**
   * The same records in a file this process can open, after `skipRecords`
   * records' worth of other bytes (a spooled batch's header): the embedded
   * engine reads them there instead of through a copy. Absent: records() only.
   */
  inPlace?: { path: string; skipRecords: number };
}

/**
 * Most rows one insert of several batches takes: ClickHouse's own default
 * insert block (min_insert_block_size_rows, max_insert_block_size). A
 * group is kept to one block, so its deduplication does not depend on the
 * order its rows arrive in, and it stays within the memory one block of a
 * default ClickHouse insert takes (~100 MB of flows uncompressed).
 */
export const FLOW_GROUP_MAX_ROWS = 1_048_449;

export interface QueryResult {
  columns: Array<{ name: string; type: string }>;
  rows: unknown[][];
}

export interface QueryLimits {
  /** ClickHouse max_execution_time, seconds. */
  maxSeconds: number;
  /** ClickHouse max_result_rows (result_overflow_mode 'throw'). */
  maxRows: number;
  /** ClickHouse max_result_bytes; default 256 MiB. */
  maxResultBytes?: number;
  /** ClickHouse max_memory_usage of the query; default 2 GiB (embedded, it is the agent's memory). */
  maxMemoryBytes?: number;
}

/** A store error a caller can act on: `retryable` for outages, not for bad SQL. */
export class StoreError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly clickhouseCode?: string,
  ) {
    super(message);
  }
}

/**
 * One interface's kernel counters over one interval (deltas since the
 * previous row of the same host, iface and direction, not running totals), so
 * sum() over a time range is that range's traffic. Names as in layout.ts.
 */
export interface IfaceCounterRow {
  /** End of the interval: a Date, or epoch milliseconds. */
  ts: Date | number;
  host: string;
  iface: string;
  direction: 'ingress' | 'egress';
  counters: Record<IfaceCounterName, number>;
  /** Malformed-frame counts by reason (only non-zero ones need be present). */
  malformed: Partial<Record<MalformedReason, number>>;
}

/** One rule's matched packets and bytes over one interval (deltas, like IfaceCounterRow). */
export interface RuleCounterRow {
  ts: Date | number;
  host: string;
  ruleId: number;
  packets: number;
  bytes: number;
}

/** One change to the rule set (control/rules/service.ts RuleHistoryRow, plus the host). */
export interface RuleHistoryStoreRow {
  ts: Date | number;
  host: string;
  op: 'add' | 'delete' | 'expire' | 'replace';
  ruleId: number;
  before: string;
  after: string;
}

export interface FlowStore {
  /** Apply schema/ migrations not yet recorded; safe to run twice. Returns the versions applied now. */
  migrate(): Promise<string[]>;
  /**
   * Insert one drained batch, or several as one insert (a group: at most
   * FLOW_GROUP_MAX_ROWS rows, stored as one block). `token` is unique per
   * insert and stable across retries and restarts: a retried insert of the
   * same token is dropped by ClickHouse's insert deduplication, so each row
   * lands exactly once. A retry must carry the same batches in the same
   * order under the same token (the engine derives a group's deduplication
   * ids from its token and its sources: measured, a retry with one batch
   * fewer is stored again), and a batch must never go under another token
   * than its first attempt's: the shipper records each attempt before it
   * and keeps its batches until it lands (shipper.ts).
   */
  insertFlows(rows: EncodedRows | FlowRecordBatch | readonly FlowRecordBatch[], token: string): Promise<void>;
  /** Read-only SQL (readonly=1 and the limits), for the API and the CLI. */
  query(sql: string, limits: QueryLimits): Promise<QueryResult>;
  /**
   * Counter history (flowgate.iface_counters, flowgate.rule_counters). With a
   * `token` a retried insert is dropped like insertFlows'; without one each
   * call inserts.
   */
  insertIfaceCounters(rows: readonly IfaceCounterRow[], token?: string): Promise<void>;
  insertRuleCounters(rows: readonly RuleCounterRow[], token?: string): Promise<void>;
  insertRuleHistory(rows: readonly RuleHistoryStoreRow[], token?: string): Promise<void>;
  /** True when the store answers. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}
