/**
 * The shipper: moves spooled batches into the store, oldest first, and
 * keeps trying with backoff while the store is down. A batch leaves the
 * spool only once the store has it; its token makes a retry harmless.
 * When several wait (the store fell behind), they go several to an insert
 * (planInsert), each insert recorded first so a retry carries the same
 * batches under the same token.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log.js';
import { FLOW_RECORD_SIZE } from '../datapath/layout.js';
import { FLOW_GROUP_MAX_ROWS, StoreError, type FlowRecordBatch, type FlowStore } from '../store/types.js';
import type { BatchInfo, BatchReader, ShipIntent, Spool } from './spool.js';

export interface ShipperDeps {
  spool: Spool;
  /** Opens (and migrates) the store; retried like inserts until it works. */
  openStore: () => Promise<FlowStore>;
  log: Logger;
  onInserted: (rows: number, seconds: number) => void;
  onError: (err: Error) => void;
  /** Health changes, for the agent's status. */
  onState?: (healthy: boolean, lastError?: string) => void;
  /** Least time from one insert's start to the next, unless a full group waits (default MIN_INSERT_INTERVAL_MS). */
  minInsertIntervalMs?: number;
}

/**
 * Inserts start at most once every 2 s, unless a full group waits: drains
 * that come faster (early drains under a flood of new flows) are gathered
 * into bigger inserts, as ClickHouse asks of its clients. The agent passes
 * insertIntervalMs(--drain-interval): at the default 5 s no batch waits,
 * and a shorter drain interval, chosen for fresher rows, is kept.
 * Why 2 s: at 500k new flows a second that is a full group (1M rows) per
 * insert, half the parts that 1 s made, and merges rewrite every part's
 * rows. Measured with the embedded engine, the agent's pipeline at an
 * offered 500k/s (bench/agent.ts, 200k-flow drains), drain + ship CPU per
 * flow: 24 s runs 1.76–1.90 µs (527–567k flows per CPU second) against
 * 2.57–2.67 µs at 1 s (374–389k); 120 s runs 3.18 against 3.76 µs.
 * Earlier, a backlog of 30 batches of 200k flows: 444–455k rows per CPU
 * second one batch an insert, 750k–1M in groups.
 */
export const MIN_INSERT_INTERVAL_MS = 2000;

/** The least time between insert starts for an agent draining every `drainIntervalMs`. */
export function insertIntervalMs(drainIntervalMs: number): number {
  return Math.min(MIN_INSERT_INTERVAL_MS, drainIntervalMs);
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
export function shipBatch(spool: Spool, info: BatchInfo, store: FlowStore, buf: Buffer): Promise<number> {
  return shipGroup(spool, [info], info.token, store, buf);
}

/**
 * Spooled batches into the store as one insert under `token` (a group:
 * planInsert, insertToken), read a slice at a time through `buf` one batch
 * after the other. They stay spooled: remove them once this resolves.
 * Returns their rows.
 */
export async function shipGroup(
  spool: Spool,
  infos: readonly BatchInfo[],
  token: string,
  store: FlowStore,
  buf: Buffer,
): Promise<number> {
  const readers: BatchReader[] = [];
  try {
    for (const info of infos) readers.push(spool.open(info));
    const batches = readers.map((r) => recordBatch(r, buf));
    await store.insertFlows(batches.length === 1 ? batches[0]! : batches, token);
    return readers.reduce((n, r) => n + r.flows, 0);
  } finally {
    for (const r of readers) r.close();
  }
}

/** Most batches one insert carries (besides FLOW_GROUP_MAX_ROWS): bounds the statement a group makes. */
export const GROUP_MAX_BATCHES = 64;

/**
 * The batches of the next insert (oldest first): the oldest batch and those
 * after it while the group stays within FLOW_GROUP_MAX_ROWS rows and
 * GROUP_MAX_BATCHES batches. The spool holds more than one batch only when
 * the store fell behind (a burst, an outage): then fewer, bigger inserts
 * catch up sooner and leave fewer parts to merge (measured in the embedded
 * engine: ~10 % less CPU a row for 3–4 batches of 200k flows an insert, and
 * a part per insert instead of per batch).
 */
export function planInsert(batches: readonly BatchInfo[]): BatchInfo[] {
  const group = batches.slice(0, 1);
  let rows = group[0]?.rows ?? 0;
  for (const b of batches.slice(1)) {
    if (group.length >= GROUP_MAX_BATCHES || rows + b.rows > FLOW_GROUP_MAX_ROWS) break;
    group.push(b);
    rows += b.rows;
  }
  return group;
}

/** A planned group that cannot grow: batches were left out, or one more of its last's size would not fit. */
function isFull(plan: readonly BatchInfo[], batches: readonly BatchInfo[]): boolean {
  const rows = plan.reduce((n, b) => n + b.rows, 0);
  return (
    plan.length < batches.length || plan.length >= GROUP_MAX_BATCHES || rows + plan.at(-1)!.rows > FLOW_GROUP_MAX_ROWS
  );
}

/** An insert's token: one batch keeps its own; a group's names all of its batches. */
export function insertToken(tokens: readonly string[]): string {
  if (tokens.length === 1) return tokens[0]!;
  const digest = createHash('sha256').update(tokens.join('\n')).digest('hex').slice(0, 16);
  return `${tokens[0]}+${tokens.length - 1}:${digest}`;
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
  /** performance.now() before which no new insert starts unless a full group waits. */
  private nextInsertAt = 0;

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
        await this.shipSpooled(this.store);
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

  /**
   * Everything spooled now, an insert at a time. An insert's batches are
   * taken out of the bound's reach (spool.claim) and recorded with its token
   * (spool intent) before it is attempted; after a failure or a crash the
   * same batches go again under the same token, so the store drops what
   * already landed. Once it landed, its batches are removed, then the
   * record: a record whose batches are (partly) gone is one that landed.
   */
  private async shipSpooled(store: FlowStore): Promise<void> {
    const { spool } = this.deps;
    for (;;) {
      let intent = this.openIntent();
      if (!intent) {
        spool.dropClaims(); // taken by an attempt that died before it was recorded
        const batches = spool.list();
        if (batches.length === 0) return;
        if (!this.running && !this.healthy) return;
        const plan = planInsert(batches);
        const wait = this.nextInsertAt - performance.now();
        if (wait > 0 && this.running && !isFull(plan, batches)) {
          await this.idle(wait); // a new batch (wake) plans again
          continue;
        }
        const taken = spool.claim(plan);
        if (taken.length === 0) continue; // all dropped by the bound meanwhile
        const tokens = taken.map((b) => b.token);
        intent = spool.writeIntent({ token: insertToken(tokens), batches: tokens });
      }
      const group = spool.claimed(intent.batches);
      if (group.length === intent.batches.length) {
        this.slice ??= shipBuffer();
        const started = performance.now();
        this.nextInsertAt = started + (this.deps.minInsertIntervalMs ?? MIN_INSERT_INTERVAL_MS);
        const rows = await shipGroup(spool, group, intent.token, store, this.slice);
        const seconds = (performance.now() - started) / 1000;
        this.deps.log.debug(
          { token: intent.token, batches: group.length, rows, ms: Math.round(seconds * 1000) },
          'inserted',
        );
        this.deps.onInserted(rows, seconds);
      }
      spool.recordLanded(intent.batches);
      spool.dropClaims();
      spool.clearIntent();
    }
  }

  /** The insert an earlier attempt recorded; a damaged record is set aside, loudly. */
  private openIntent(): ShipIntent | undefined {
    try {
      return this.deps.spool.readIntent();
    } catch (err) {
      this.deps.log.error(
        { err: err instanceof Error ? err.message : String(err), spool: this.deps.spool.dir },
        'unreadable ship intent: set aside; a batch it named may be stored twice',
      );
      this.deps.spool.setIntentAside();
      return undefined;
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
