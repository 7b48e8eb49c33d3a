/**
 * The collector: moves flows from the kernel to the spool, exactly once.
 *
 *   flip  → the retired slot gets no more writes (grace period in flip())
 *   read  → every record of the retired slot, not yet deleted
 *   spool → written durably under the batch token (host, instance, epoch)
 *   release → the slot is emptied for its next turn (entries deleted, or a
 *             well-filled map swapped for a new empty one: releaseSlot)
 *
 * A crash anywhere in between is recovered by recover(): the idle slot is
 * read again unless its batch is already spooled, and the token makes the
 * store drop a batch it has seen before.
 *
 * Read and spool go a chunk at a time through one buffer of CHUNK_RECORDS
 * records, reused by every drain: the agent's memory does not grow with the
 * number of flows a drain holds (a million flows are ~120 MB of records).
 */
import type { Datapath } from '../datapath/datapath.js';
import { FLOW_RECORD_SIZE } from '../datapath/layout.js';
import type { Logger } from '../log.js';
import { SerialQueue } from '../util/serial.js';
import type { MonotonicClock } from './clock.js';
import { batchToken, type DroppedBatch, type Spool } from './spool.js';

export type DrainTrigger = 'interval' | 'early' | 'shutdown' | 'recovery';

export interface DrainSummary {
  trigger: DrainTrigger;
  token: string;
  flows: number;
  evicted: number;
  insertFailed: number;
  durationMs: number;
  /** Where the time went: reading the retired map, writing the spool, clearing the map. */
  readMs: number;
  spoolMs: number;
  releaseMs: number;
  /** The batch was already spooled by an earlier run (recovery only). */
  alreadySpooled: boolean;
  droppedFromSpool: DroppedBatch[];
}

export interface CollectorDeps {
  dp: Datapath;
  spool: Spool;
  clock: MonotonicClock;
  host: string;
  /** ifindex → name of the interfaces attached now. */
  ifaceNames: () => Record<string, string>;
  log: Logger;
  /** Called after every drain (metrics, waking the shipper). */
  onDrain: (summary: DrainSummary) => void;
}

/**
 * Flow records read and spooled at a time (~1 MB): one kernel batch. Larger
 * chunks drain no faster (measured: 1.2M flows/s at 4,096 to 32,768) and
 * stay resident.
 */
export const CHUNK_RECORDS = 8_192;

export class Collector {
  private readonly serial = new SerialQueue();
  private readonly instance: number;
  /** The one read buffer of every drain (allocated at the first). */
  private chunk?: Buffer;
  /** The last drain flipped its slot but failed before releasing it. */
  private unfinished = false;

  constructor(private readonly deps: CollectorDeps) {
    this.instance = deps.dp.instance();
  }

  /** Finish a drain a previous agent started: call once before the first drain(). */
  recover(): Promise<DrainSummary> {
    return this.serial.run(async () => {
      const { slot, epoch } = this.deps.dp.idleSlot();
      return this.collect(slot, epoch, 'recovery');
    });
  }

  drain(trigger: DrainTrigger): Promise<DrainSummary> {
    return this.serial.run(async () => {
      // A drain that failed after its flip left its slot unreleased, maybe spooled: finish it first,
      // or this flip would hand its flows back to the programs, to be drained again under a new epoch.
      if (this.unfinished) {
        const idle = this.deps.dp.idleSlot();
        await this.collect(idle.slot, idle.epoch, 'recovery');
        this.unfinished = false;
      }
      const { slot, epoch } = await this.deps.dp.flip();
      this.unfinished = true;
      const summary = await this.collect(slot, epoch, trigger);
      this.unfinished = false;
      return summary;
    });
  }

  private async collect(slot: number, epoch: number, trigger: DrainTrigger): Promise<DrainSummary> {
    const started = performance.now();
    const { dp, spool, clock, host, ifaceNames, log } = this.deps;
    const token = batchToken(host, this.instance, epoch);
    const summary: DrainSummary = {
      trigger,
      token,
      flows: 0,
      evicted: 0,
      insertFailed: 0,
      durationMs: 0,
      readMs: 0,
      spoolMs: 0,
      releaseMs: 0,
      alreadySpooled: spool.has(token),
      droppedFromSpool: [],
    };
    if (!summary.alreadySpooled) {
      // Meta is taken when the first records come (none: no batch at all).
      const writer = spool.writer(
        token,
        () => {
          clock.resync();
          return { host, monoToEpochOffsetNs: clock.offset().toString(), ifaces: ifaceNames() };
        },
        FLOW_RECORD_SIZE,
      );
      try {
        this.chunk ??= Buffer.allocUnsafeSlow(CHUNK_RECORDS * FLOW_RECORD_SIZE);
        const read = await dp.readSlotChunks(slot, this.chunk, (records) => {
          const t = performance.now();
          writer.append(records);
          summary.spoolMs += performance.now() - t;
        });
        summary.flows = read.count;
        summary.evicted = read.evicted;
        summary.insertFailed = read.insertFailed;
        if (writer.flows !== read.count) {
          throw new Error(`drain ${token}: spooled ${writer.flows} of ${read.count} flows read`);
        }
        const t = performance.now();
        summary.droppedFromSpool = writer.commit();
        summary.spoolMs += performance.now() - t;
      } finally {
        writer.abort(); // a no-op once committed; otherwise the slot stays as it is, to be read again
      }
      summary.readMs = performance.now() - started - summary.spoolMs;
    }
    const releaseStarted = performance.now();
    // A batch spooled by an earlier run was not read now: releaseSlot goes by the slot's insert counter.
    const release = await dp.releaseSlot(slot, summary.alreadySpooled ? undefined : summary.flows);
    summary.releaseMs = performance.now() - releaseStarted;
    summary.durationMs = performance.now() - started;
    log.debug(
      {
        trigger,
        flows: summary.flows,
        evicted: summary.evicted,
        ms: Math.round(summary.durationMs),
        readMs: Math.round(summary.readMs),
        spoolMs: Math.round(summary.spoolMs),
        releaseMs: Math.round(summary.releaseMs),
        release,
        token,
      },
      'drained',
    );
    if (summary.evicted > 0) {
      log.warn(
        { evicted: summary.evicted, token },
        'flow map filled before it was drained: the kernel evicted flows (raise --max-flows or shorten --drain-interval)',
      );
    }
    for (const d of summary.droppedFromSpool) {
      log.error({ token: d.token, rows: d.rows, spool: spool.dir }, 'spool full: dropped the oldest batch');
    }
    this.deps.onDrain(summary);
    return summary;
  }
}
