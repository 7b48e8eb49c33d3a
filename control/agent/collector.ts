/**
 * The collector: moves flows from the kernel to the spool, exactly once.
 *
 *   flip  → the retired slot gets no more writes (grace period in flip())
 *   read  → every record of the retired slot, not yet deleted
 *   spool → written durably under the batch token (host, instance, epoch)
 *   release → the slot is cleared for its next turn
 *
 * A crash anywhere in between is recovered by recover(): the idle slot is
 * read again unless its batch is already spooled, and the token makes the
 * store drop a batch it has seen before.
 */
import type { Datapath } from '../datapath/datapath.js';
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

export class Collector {
  private readonly serial = new SerialQueue();
  private readonly instance: number;

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
      const { slot, epoch } = await this.deps.dp.flip();
      return this.collect(slot, epoch, trigger);
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
      const drained = await dp.readSlot(slot);
      summary.readMs = performance.now() - started;
      summary.flows = drained.count;
      summary.evicted = drained.evicted;
      summary.insertFailed = drained.insertFailed;
      if (drained.count > 0) {
        clock.resync();
        summary.droppedFromSpool = spool.write({
          token,
          flows: drained.count,
          meta: { host, monoToEpochOffsetNs: clock.offset().toString(), ifaces: ifaceNames() },
          records: drained.records,
        });
      }
      summary.spoolMs = performance.now() - started - summary.readMs;
    }
    const releaseStarted = performance.now();
    await dp.releaseSlot(slot);
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
