/**
 * The shipper: moves spooled batches into the store, oldest first, and
 * keeps trying with backoff while the store is down. A batch leaves the
 * spool only once the store has it; its token makes a retry harmless.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log.js';
import { FLOW_RECORD_SIZE, flowRecordCount } from '../datapath/layout.js';
import { FLOW_COLUMNS, encodeFlowRows, type FlowRowContext } from '../store/flow-rows.js';
import { StoreError, type EncodedRows, type FlowStore } from '../store/types.js';
import type { Spool } from './spool.js';

export interface ShipperDeps {
  spool: Spool;
  /** Opens (and migrates) the store; retried like inserts until it works. */
  openStore: () => Promise<FlowStore>;
  log: Logger;
  onInserted: (rows: number, seconds: number) => void;
  onError: (err: Error) => void;
  /** Health changes, for the agent's status. */
  onState?: (healthy: boolean, lastError?: string) => void;
}

/** Records encoded between two yields to the event loop (~15 ms of work). */
const SLICE_RECORDS = 65_536;

/**
 * Encode a batch a slice at a time, yielding in between: when shipping runs
 * in the agent's process (local-ship.ts), a million-record batch must not
 * hold up the drain timer for the second it takes to encode.
 */
async function encodeInSlices(records: Buffer, ctx: FlowRowContext): Promise<EncodedRows> {
  const n = flowRecordCount(records);
  if (n <= SLICE_RECORDS) return encodeFlowRows(records, ctx);
  const bodies: Buffer[] = [];
  for (let i = 0; i < n; i += SLICE_RECORDS) {
    const slice = records.subarray(i * FLOW_RECORD_SIZE, Math.min(n, i + SLICE_RECORDS) * FLOW_RECORD_SIZE);
    bodies.push(encodeFlowRows(slice, ctx).body);
    await new Promise((r) => setImmediate(r));
  }
  return { body: Buffer.concat(bodies), format: 'RowBinary', rows: n, columns: FLOW_COLUMNS };
}

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 30_000;

export class Shipper {
  store?: FlowStore;
  healthy = false;
  lastError?: string;
  private running = false;
  private loop?: Promise<void>;
  private wakeUp?: () => void;
  private backoffMs = MIN_BACKOFF_MS;

  constructor(private readonly deps: ShipperDeps) {}

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  /** New batches are waiting. */
  wake(): void {
    this.wakeUp?.();
  }

  /** Ship what is spooled (bounded wait), then stop. What is left stays spooled for the next start. */
  async stop(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.healthy && this.deps.spool.list().length > 0 && Date.now() < deadline) {
      this.wake();
      await sleep(50);
    }
    this.running = false;
    this.wake();
    await this.loop;
    await this.store?.close();
  }

  private async run(): Promise<void> {
    while (this.running) {
      try {
        if (!this.store) this.store = await this.deps.openStore();
        const batches = this.deps.spool.list();
        for (const info of batches) {
          if (!this.running && !this.healthy) break;
          const batch = this.deps.spool.read(info);
          const offset = BigInt(batch.meta.monoToEpochOffsetNs);
          const rows = await encodeInSlices(batch.records, {
            host: batch.meta.host,
            ifaceName: (ifindex) => batch.meta.ifaces[ifindex] ?? `if${ifindex}`,
            monoToEpochNs: (ns) => ns + offset,
            epochOffsetNs: offset,
          });
          const started = performance.now();
          await this.store.insertFlows(rows, batch.token);
          this.deps.onInserted(rows.rows, (performance.now() - started) / 1000);
          this.deps.spool.remove(info);
        }
        this.markHealthy();
        if (this.deps.spool.list().length === 0) await this.idle(1000);
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        this.deps.onError(e);
        this.lastError = e.message;
        const retryable = !(e instanceof StoreError) || e.retryable;
        if (this.healthy || this.backoffMs === MIN_BACKOFF_MS) {
          this.deps.log.warn({ err: e.message, retryable }, 'store unavailable: spooling flows and retrying');
        }
        this.healthy = false;
        this.deps.onState?.(false, this.lastError);
        await this.idle(this.backoffMs);
        this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
      }
    }
  }

  private markHealthy(): void {
    if (!this.healthy && this.lastError) this.deps.log.info('store reachable again: shipping spooled flows');
    if (!this.healthy) this.deps.onState?.(true);
    this.healthy = true;
    this.backoffMs = MIN_BACKOFF_MS;
  }

  private idle(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeUp = done;
    });
  }
}
