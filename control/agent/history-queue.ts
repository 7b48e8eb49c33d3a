/**
 * History rows (interface counters, rule counters, rule changes) on their
 * way to the store. They wait in memory until the store is open, and while
 * it is down, bounded per kind: the flows are what is spooled to disk, and
 * the rule set's durable record is the agent's rules file.
 */
import type { Logger } from '../log.js';
import type { FlowStore, IfaceCounterRow, RuleCounterRow, RuleHistoryStoreRow } from '../store/types.js';

const MAX_PENDING_ROWS = 100_000;

/** The store when it is open and answering, else undefined. */
export type StoreIfHealthy = () => FlowStore | undefined;

class PendingRows<T> {
  private rows: T[] = [];
  private flushing = false;

  constructor(
    private readonly what: string,
    private readonly insert: (store: FlowStore, rows: T[]) => Promise<void>,
    private readonly store: StoreIfHealthy,
    private readonly log: Logger,
  ) {}

  add(rows: T[]): void {
    this.rows.push(...rows);
    if (this.rows.length > MAX_PENDING_ROWS) {
      const lost = this.rows.length - MAX_PENDING_ROWS;
      this.rows.splice(0, lost);
      this.log.warn({ rows: lost, what: this.what }, 'history rows dropped: the store has been down too long');
    }
    void this.flush();
  }

  async flush(): Promise<void> {
    const store = this.store();
    if (this.flushing || !store || this.rows.length === 0) return;
    this.flushing = true;
    const rows = this.rows.splice(0, this.rows.length);
    try {
      await this.insert(store, rows);
    } catch (err) {
      this.rows.unshift(...rows);
      this.log.warn({ err: (err as Error).message, rows: rows.length, what: this.what }, 'history not stored yet');
    } finally {
      this.flushing = false;
    }
  }
}

/** The three kinds of history, flushed every second and whenever rows arrive. */
export class HistoryQueue {
  readonly ifaceCounters: PendingRows<IfaceCounterRow>;
  readonly ruleCounters: PendingRows<RuleCounterRow>;
  readonly ruleHistory: PendingRows<RuleHistoryStoreRow>;
  private readonly timer: NodeJS.Timeout;

  constructor(store: StoreIfHealthy, log: Logger) {
    this.ifaceCounters = new PendingRows('interface counters', (s, r) => s.insertIfaceCounters(r), store, log);
    this.ruleCounters = new PendingRows('rule counters', (s, r) => s.insertRuleCounters(r), store, log);
    this.ruleHistory = new PendingRows('rule history', (s, r) => s.insertRuleHistory(r), store, log);
    this.timer = setInterval(() => void this.flush(), 1000);
    this.timer.unref();
  }

  async flush(): Promise<void> {
    await Promise.all([this.ifaceCounters.flush(), this.ruleCounters.flush(), this.ruleHistory.flush()]);
  }

  close(): void {
    clearInterval(this.timer);
  }
}
