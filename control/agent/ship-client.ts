/**
 * The agent's handle on the ship process (ship-worker.ts): wakes it after
 * drains, mirrors its health for status, and forwards SQL.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import {
  StoreError,
  type IfaceCounterRow,
  type QueryLimits,
  type QueryResult,
  type RuleCounterRow,
  type RuleHistoryStoreRow,
  type StoreOptions,
} from '../store/types.js';
import type { FromWorker, ShipWorkerData, ToWorker } from './ship-worker.js';

function epochMs(ts: Date | number): number {
  return new Date(ts).getTime();
}

export interface ShipEvents {
  onInserted: (rows: number, seconds: number) => void;
  onError: () => void;
}

/** What the agent asks of whatever ships its spool to the store (this process's child, or local-ship.ts). */
export interface Ship {
  readonly healthy: boolean;
  readonly lastError?: string;
  /** New batches are spooled. */
  wake(): void;
  ifaceCounters(rows: IfaceCounterRow[]): void;
  ruleCounters(rows: RuleCounterRow[]): void;
  ruleHistory(rows: RuleHistoryStoreRow[]): void;
  query(sql: string, limits: QueryLimits): Promise<QueryResult>;
  /** Ship what is spooled (bounded wait), then stop. */
  stop(timeoutMs: number): Promise<void>;
}

export class ShipClient implements Ship {
  healthy = false;
  lastError?: string;
  private readonly worker: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: QueryResult) => void; reject: (e: Error) => void }>();
  private stopped?: () => void;
  private exited = false;

  constructor(
    opts: { spoolDir: string; spoolMaxBytes: number; store: StoreOptions },
    private readonly events: ShipEvents,
  ) {
    const fromSource = import.meta.url.endsWith('.ts');
    const url = new URL(`./ship-worker${fromSource ? '.ts' : '.js'}`, import.meta.url);
    const data: ShipWorkerData = opts;
    this.worker = fork(url, [], {
      // From the sources, the child needs the TypeScript loader too.
      execArgv: fromSource ? ['--import', 'tsx'] : [],
      env: { ...process.env, FLOWGATE_SHIP_WORKER: JSON.stringify(data) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.worker.on('message', (m: FromWorker) => this.onMessage(m));
    this.worker.on('error', (err) => {
      this.lastError = `ship process failed: ${err.message}`;
      this.healthy = false;
    });
    this.worker.on('exit', () => {
      this.exited = true;
      this.stopped?.();
      for (const p of this.pending.values()) p.reject(new StoreError('the ship worker exited', true));
      this.pending.clear();
    });
  }

  private onMessage(m: FromWorker): void {
    switch (m.type) {
      case 'state':
        this.healthy = m.healthy;
        this.lastError = m.lastError;
        break;
      case 'inserted':
        this.events.onInserted(m.rows, m.seconds);
        break;
      case 'error':
        this.events.onError();
        break;
      case 'result': {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (!p) break;
        if (m.ok) p.resolve(m.result as QueryResult);
        else p.reject(new StoreError(m.message, m.retryable, m.code));
        break;
      }
      case 'stopped':
        this.stopped?.();
        break;
    }
  }

  private send(m: ToWorker): void {
    if (!this.exited && this.worker.connected) this.worker.send(m);
  }

  wake(): void {
    this.send({ type: 'wake' });
  }

  /* History rows cross the IPC channel as JSON: times as epoch milliseconds. */

  ifaceCounters(rows: IfaceCounterRow[]): void {
    if (rows.length) this.send({ type: 'ifaceCounters', rows: rows.map((r) => ({ ...r, ts: epochMs(r.ts) })) });
  }

  ruleCounters(rows: RuleCounterRow[]): void {
    if (rows.length) this.send({ type: 'ruleCounters', rows: rows.map((r) => ({ ...r, ts: epochMs(r.ts) })) });
  }

  ruleHistory(rows: RuleHistoryStoreRow[]): void {
    if (rows.length) this.send({ type: 'ruleHistory', rows: rows.map((r) => ({ ...r, ts: epochMs(r.ts) })) });
  }

  query(sql: string, limits: QueryLimits): Promise<QueryResult> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send({ type: 'query', id, sql, limits });
    });
  }

  /** Ship what is spooled (bounded wait), then let the ship process exit. */
  async stop(timeoutMs: number): Promise<void> {
    if (this.exited) return;
    await new Promise<void>((resolve) => {
      this.stopped = resolve;
      this.send({ type: 'stop', timeoutMs });
    });
    if (!this.exited) await once(this.worker, 'exit');
  }
}
