/**
 * Shipping inside the agent's own process, for a ClickHouse server: the
 * insert is network I/O that does not hold the event loop, and rows are
 * encoded a slice at a time as the socket takes them (shipper.ts,
 * flow-store.ts), so a second process (a second Node
 * heap, ~100–200 MB) is not worth its memory. The embedded engine keeps its
 * own process (ship-client.ts): its inserts run engine work that can, and
 * its crash must not take the agent's drains with it.
 */
import type { Logger } from '../log.js';
import { ClickHouseFlowStore } from '../store/flow-store.js';
import {
  StoreError,
  type IfaceCounterRow,
  type QueryLimits,
  type QueryResult,
  type RuleCounterRow,
  type RuleHistoryStoreRow,
} from '../store/types.js';
import { HistoryQueue } from './history-queue.js';
import type { Ship, ShipEvents } from './ship-client.js';
import type { ShipOptions } from './ship-worker.js';
import { Shipper } from './shipper.js';
import { Spool } from './spool.js';

export class LocalShip implements Ship {
  private readonly shipper: Shipper;
  private readonly history: HistoryQueue;

  constructor(opts: ShipOptions, events: ShipEvents, log: Logger) {
    const shipLog = log.child({ part: 'shipper' });
    this.shipper = new Shipper({
      spool: new Spool(opts.spoolDir, opts.spoolMaxBytes),
      openStore: () => ClickHouseFlowStore.open(opts.store, shipLog),
      log: shipLog,
      onInserted: events.onInserted,
      onError: events.onError,
      minInsertIntervalMs: opts.minInsertIntervalMs,
    });
    this.shipper.start();
    this.history = new HistoryQueue(() => (this.shipper.healthy ? this.shipper.store : undefined), shipLog);
  }

  get healthy(): boolean {
    return this.shipper.healthy;
  }

  get lastError(): string | undefined {
    return this.shipper.lastError;
  }

  wake(): void {
    this.shipper.wake();
  }

  ifaceCounters(rows: IfaceCounterRow[]): void {
    if (rows.length) this.history.ifaceCounters.add(rows);
  }

  ruleCounters(rows: RuleCounterRow[]): void {
    if (rows.length) this.history.ruleCounters.add(rows);
  }

  ruleHistory(rows: RuleHistoryStoreRow[]): void {
    if (rows.length) this.history.ruleHistory.add(rows);
  }

  query(sql: string, limits: QueryLimits): Promise<QueryResult> {
    const store = this.shipper.store;
    if (!store) {
      return Promise.reject(
        new StoreError(`the flow store is not available yet: ${this.shipper.lastError ?? 'opening'}`, true),
      );
    }
    return store.query(sql, limits);
  }

  async stop(timeoutMs: number): Promise<void> {
    await this.history.flush();
    this.history.close();
    await this.shipper.stop(timeoutMs);
  }
}
