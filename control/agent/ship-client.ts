/**
 * The agent's handle on the ship process (ship-worker.ts): wakes it after
 * drains, mirrors its health for status, and forwards SQL.
 *
 * If the ship process dies (out of memory, an engine crash, kill -9), the
 * agent goes on draining into the spool, reports the store unhealthy,
 * answers queries with a retryable error instead of leaving them waiting,
 * and starts a new ship process after a backoff. The new one ships the
 * spool from where the old one stopped: batch tokens make a batch the dead
 * process had half inserted count once.
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
} from '../store/types.js';
import type { FromWorker, ShipOptions, ToWorker } from './ship-worker.js';

function epochMs(ts: Date | number): number {
  return new Date(ts).getTime();
}

export interface ShipEvents {
  onInserted: (rows: number, seconds: number) => void;
  onError: () => void;
  /** The ship process died unasked; a new one starts after `delayMs`. */
  onWorkerExit?: (reason: string, delayMs: number) => void;
}

/** Backoff between ship process restarts: doubling from the first, up to the last. */
const RESTART_MIN_MS = 1000;
const RESTART_MAX_MS = 30_000;

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
  private worker!: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: QueryResult) => void; reject: (e: Error) => void }>();
  private stopped?: () => void;
  private stopping = false;
  private exited = false;
  private restartDelayMs = RESTART_MIN_MS;
  private restartTimer?: NodeJS.Timeout;

  constructor(
    private readonly opts: ShipOptions,
    private readonly events: ShipEvents,
  ) {
    this.spawn();
  }

  /** The ship process's pid (tests kill it). */
  get pid(): number | undefined {
    return this.exited ? undefined : this.worker.pid;
  }

  private spawn(): void {
    const fromSource = import.meta.url.endsWith('.ts');
    const url = new URL(`./ship-worker${fromSource ? '.ts' : '.js'}`, import.meta.url);
    const data: ShipOptions = this.opts;
    const worker = fork(url, [], {
      // From the sources, the child needs the TypeScript loader too.
      execArgv: fromSource ? ['--import', 'tsx'] : [],
      env: { ...process.env, FLOWGATE_SHIP_WORKER: JSON.stringify(data) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.worker = worker;
    this.exited = false;
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (err) => {
      this.lastError = `ship process failed: ${err.message}`;
      this.healthy = false;
    });
    worker.on('exit', (code, signal) => this.onExit(code, signal));
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.exited = true;
    for (const p of this.pending.values()) p.reject(new StoreError('the ship process exited', true));
    this.pending.clear();
    if (this.stopping) {
      this.stopped?.();
      return;
    }
    const reason = `ship process exited (${signal ?? `code ${String(code)}`})`;
    this.healthy = false;
    this.lastError = `${reason}: flows stay spooled; restarting it`;
    this.events.onError();
    const delay = this.restartDelayMs;
    this.restartDelayMs = Math.min(delay * 2, RESTART_MAX_MS);
    this.events.onWorkerExit?.(reason, delay);
    this.restartTimer = setTimeout(() => {
      if (!this.stopping) this.spawn();
    }, delay);
  }

  private onMessage(m: FromWorker): void {
    switch (m.type) {
      case 'state':
        this.healthy = m.healthy;
        this.lastError = m.lastError;
        // A ship process that reached its store is up: the next death starts the backoff over.
        if (m.healthy) this.restartDelayMs = RESTART_MIN_MS;
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
    if (this.exited || !this.worker.connected) {
      return Promise.reject(new StoreError('the ship process is restarting: try again shortly', true));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send({ type: 'query', id, sql, limits });
    });
  }

  /** Ship what is spooled (bounded wait), then let the ship process exit. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    if (this.exited) return;
    await new Promise<void>((resolve) => {
      this.stopped = resolve;
      this.send({ type: 'stop', timeoutMs });
    });
    if (!this.exited) await once(this.worker, 'exit');
  }
}
