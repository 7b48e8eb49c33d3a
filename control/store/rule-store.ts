/**
 * The fleet's rule set in ClickHouse (`flowgate.rules`, schema/005_rules.sql;
 * `--rules-source store`). A version per change, the newest version of an id
 * is the rule; FINAL leaves out ids whose newest version is deleted.
 *
 * Only the fleet code (control/rules/fleet.ts) uses this; it speaks in
 * StoredRule, the API's shape, and converts to and from the table's text
 * columns here.
 */
import { Readable } from 'node:stream';
import type { ClickHouseClient } from '@clickhouse/client';
import type { StoredRule } from '../rules/types.js';
import { openStoreClients, type StoreClients } from './client.js';
import { toStoreError } from './errors.js';
import type { StoreTarget } from './types.js';

export const RULES_TABLE = 'flowgate.rules';

/** The newest version of one id, whatever it says. */
export interface RuleVersionInfo {
  /** The version (server clock, ns) as text: it does not fit a double. */
  version: string;
  origin: string;
  /** Deleted, or expired: the id is free for a new rule. */
  free: boolean;
}

/** A rule as the table holds it: text columns, '' for absent. */
interface RuleRow {
  id: number;
  deleted?: number;
  action: 'drop' | 'allow';
  src: string;
  dst: string;
  protocol: string;
  src_ports: string;
  dst_ports: string;
  priority: number;
  iface: string;
  expires_at: string | null;
  comment: string;
  created_at: string;
  updated_at: string;
  origin: string;
}

/** A deleted version: only the id and who deleted it matter. */
function tombstone(id: number, origin: string, at: string): Partial<RuleRow> {
  return { id, deleted: 1, created_at: at, updated_at: at, origin };
}

export function ruleRow(r: StoredRule, origin: string): RuleRow {
  return {
    id: r.id,
    action: r.action,
    src: r.src ?? '',
    dst: r.dst ?? '',
    protocol: r.protocol === undefined ? '' : String(r.protocol),
    src_ports: r.srcPorts ?? '',
    dst_ports: r.dstPorts ?? '',
    priority: r.priority,
    iface: r.iface ?? '',
    expires_at: r.expiresAt ?? null,
    comment: r.comment ?? '',
    created_at: r.createdAt,
    updated_at: r.updatedAt,
    origin,
  };
}

/** The columns read back, in this order (JSONCompactEachRow). */
const READ_COLUMNS = [
  'id',
  'toString(action)',
  'src',
  'dst',
  'protocol',
  'src_ports',
  'dst_ports',
  'priority',
  'iface',
  // Times as ms since the epoch (text: 64-bit); -1 for no expiry.
  'toString(ifNull(toUnixTimestamp64Milli(expires_at), -1))',
  'comment',
  'toString(toUnixTimestamp64Milli(created_at))',
  'toString(toUnixTimestamp64Milli(updated_at))',
];

const iso = (ms: string): string => new Date(Number(ms)).toISOString();

type ReadRow = [number, string, string, string, string, string, string, number, string, string, string, string, string];

/**
 * A row as the REST API shapes a rule. Text goes through as it is: the agent
 * validates it exactly like a request (a row typed in by hand may be wrong).
 * A protocol that is all digits becomes a number, as a request would send it.
 */
function storedOf(r: ReadRow): StoredRule {
  const [id, action, src, dst, protocol, srcPorts, dstPorts, priority, iface, expiresAt, comment, created, updated] = r;
  const s: StoredRule = {
    id: Number(id),
    action: action as StoredRule['action'],
    priority: Number(priority),
    createdAt: iso(created),
    updatedAt: iso(updated),
  };
  if (src) s.src = src;
  if (dst) s.dst = dst;
  if (protocol) s.protocol = /^\d+$/.test(protocol) ? Number(protocol) : protocol;
  if (srcPorts) s.srcPorts = srcPorts;
  if (dstPorts) s.dstPorts = dstPorts;
  if (iface) s.iface = iface;
  if (expiresAt !== '-1') s.expiresAt = iso(expiresAt);
  if (comment) s.comment = comment;
  return s;
}

export class ClickHouseRuleStore {
  private constructor(private readonly clients: StoreClients) {}

  /** Over a ClickHouse server (the fleet shares it); the table is made by the agent's migrations. */
  static async open(target: StoreTarget & { kind: 'server' }, requestTimeoutMs = 10_000): Promise<ClickHouseRuleStore> {
    const clients = await openStoreClients({ target, retentionDays: 1, requestTimeoutMs });
    // On a cluster flowgate.rules is a replicated table on every node, not a Distributed one: plain inserts.
    return new ClickHouseRuleStore(clients);
  }

  private get writer(): ClickHouseClient {
    return this.clients.writer;
  }

  private async rows<T>(query: string): Promise<T[]> {
    try {
      const rs = await this.writer.query({ query, format: 'JSONCompactEachRow' });
      return await rs.json<T>();
    } catch (err) {
      throw toStoreError(err, true);
    }
  }

  /**
   * Changes whenever a version is added (and when merges fold old versions
   * away, which only costs one needless read of the set).
   */
  async fingerprint(): Promise<string> {
    const [r] = await this.rows<[string, string, string]>(
      `SELECT toString(count()), toString(max(version)), toString(sum(cityHash64(id, version))) FROM ${RULES_TABLE}`,
    );
    return r ? r.join(':') : '';
  }

  /** The set: the newest version of each id, ids whose newest version is a delete left out. */
  async read(): Promise<StoredRule[]> {
    const out: StoredRule[] = [];
    try {
      const rs = await this.writer.query({
        query: `SELECT ${READ_COLUMNS.join(', ')} FROM ${RULES_TABLE} FINAL ORDER BY id`,
        format: 'JSONCompactEachRow',
      });
      // Row by row: a million-rule set never sits in memory as one JSON text.
      for await (const rows of rs.stream<ReadRow>()) for (const row of rows) out.push(storedOf(row.json()));
    } catch (err) {
      throw toStoreError(err, true);
    }
    return out;
  }

  /** The newest version of `id`, deleted or not; undefined when the id was never written. */
  async newest(id: number): Promise<RuleVersionInfo | undefined> {
    const [r] = await this.rows<[string, string, number]>(
      `SELECT toString(max(version)), argMax(origin, version), ` +
        `argMax(deleted = 1 OR ifNull(expires_at <= now64(3), 0), version) FROM ${RULES_TABLE} ` +
        `WHERE id = ${Math.trunc(id)} HAVING count() > 0`,
    );
    return r ? { version: r[0], origin: r[1], free: Number(r[2]) === 1 } : undefined;
  }

  /**
   * Add versions in one INSERT. `token` is its deduplication token: a
   * retried write counts once, and of two writes racing with the same token
   * (two agents claiming the same free id) only the first is kept.
   */
  async write(
    put: readonly StoredRule[],
    deleted: readonly number[],
    origin: string,
    token: string,
    at = new Date().toISOString(),
  ): Promise<void> {
    const count = put.length + deleted.length;
    if (count === 0) return;
    // Rows made as the request body is sent, not all at once (a million-rule replace).
    function* rows(): Generator<Partial<RuleRow>> {
      for (const id of deleted) yield tombstone(id, origin, at);
      for (const r of put) yield ruleRow(r, origin);
    }
    try {
      await this.writer.insert({
        table: RULES_TABLE,
        values: Readable.from(rows()),
        format: 'JSONEachRow',
        clickhouse_settings: {
          insert_deduplicate: 1,
          insert_deduplication_token: token,
          date_time_input_format: 'best_effort',
          // One block, so a replace is seen whole or not at all.
          max_insert_block_size: String(Math.max(count, 1_048_576)),
          min_insert_block_size_rows: String(Math.max(count, 1_048_576)),
          min_insert_block_size_bytes: '0',
        },
      });
    } catch (err) {
      throw toStoreError(err, true);
    }
  }

  close(): Promise<void> {
    return this.clients.close();
  }
}
