/**
 * The shipper: moves spooled batches into the store, oldest first, and
 * keeps trying with backoff while the store is down. A batch leaves the
 * spool only once the store has it; its token makes a retry harmless.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log.js';
import { FLOW_RECORD_SIZE } from '../datapath/layout.js';
import { StoreError, type FlowRecordBatch, type FlowStore } from '../store/types.js';
import type { BatchInfo, BatchReader, Spool } from './spool.js';

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

/**
 * Records read from the spool at a time (~0.5 MB, into one buffer the
 * shipper reuses). A batch goes to a server slice by slice, encoded as the
 * socket takes it (the embedded engine reads a spooled batch where it lies:
 * FlowRecordBatch.inPlace), so the shipper never holds a whole batch, and — in the agent's process
 * (local-ship.ts) — encoding yields to the drain timer between slices.
 * Small slices keep the agent small: each encoded slice is garbage once
 * sent, and V8 collects it only at its next GC (measured in server mode,
 * agent RSS max: ~90–98 MB with 16,384-record slices, ~86 MB with 4,096).
 */
const SLICE_RECORDS = 4_096;

/** The read buffer shipBatch needs (reuse it for every batch). */
export function shipBuffer(): Buffer {
  return Buffer.allocUnsafeSlow(SLICE_RECORDS * FLOW_RECORD_SIZE);
}

/**
 * One spooled batch into the store, a slice at a time through `buf`
 * (shipBuffer()), under the batch's token. The batch stays spooled: remove
 * it once this resolves. Returns its rows.
 */
export async function shipBatch(spool: Spool, info: BatchInfo, store: FlowStore, buf: Buffer): Promise<number> {
  const reader = spool.open(info);
  try {
    await store.insertFlows(recordBatch(reader, buf), reader.token);
    return reader.flows;
  } finally {
    reader.close();
  }
}

/** A spooled batch for FlowStore.insertFlows: its records come off the disk a slice at a time, counted. */
function recordBatch(reader: BatchReader, buf: Buffer): FlowRecordBatch {
  const { meta } = reader;
  const inPlace = reader.inPlace(FLOW_RECORD_SIZE);
  return {
    format: 'FlowRecords',
    rows: reader.flows,
    host: meta.host,
    ifaces: meta.ifaces,
    epochOffsetNs: BigInt(meta.monoToEpochOffsetNs),
    ...(inPlace === undefined ? {} : { inPlace }),
    *records(): Generator<Buffer> {
      let bytes = 0;
      for (const slice of reader.slices(buf)) {
        bytes += slice.length;
        if (slice.length % FLOW_RECORD_SIZE !== 0 || bytes > reader.flows * FLOW_RECORD_SIZE) break;
        yield slice;
      }
      if (bytes !== reader.flows * FLOW_RECORD_SIZE) {
        throw new StoreError(
          `spooled batch ${reader.token} is damaged: ${bytes} bytes of records, ${reader.flows} flows in its header`,
          false,
        );
      }
    },
  };
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
  /** The one read buffer of every batch (allocated at the first). */
  private slice?: Buffer;

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
          this.slice ??= shipBuffer();
          const started = performance.now();
          const rows = await shipBatch(this.deps.spool, info, this.store, this.slice);
          this.deps.onInserted(rows, (performance.now() - started) / 1000);
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
