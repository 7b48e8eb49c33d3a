/**
 * Child process that ships spooled batches to the store and answers SQL.
 * The embedded engine's insert work (it reads the drained records and turns
 * them into rows itself: flow-rows.ts) takes hundreds of milliseconds; in
 * its own process it cannot delay the drains that keep the kernel's flow
 * maps from filling.
 * (A process, not a worker thread: the embedded engine does not survive
 * being torn down with a worker's isolate.) It exits when the agent goes
 * away, even by kill -9 (the IPC channel closes).
 */
import { createLogger } from '../log.js';
import { ClickHouseFlowStore } from '../store/flow-store.js';
import {
  StoreError,
  type IfaceCounterRow,
  type QueryLimits,
  type RuleCounterRow,
  type RuleHistoryStoreRow,
  type StoreOptions,
} from '../store/types.js';
import { releaseStartupPages } from '../util/startup-pages.js';
import { HistoryQueue } from './history-queue.js';
import { Shipper } from './shipper.js';
import { Spool } from './spool.js';

/** What a shipper needs: the ship process gets it as JSON, LocalShip (server mode) as is. */
export interface ShipOptions {
  spoolDir: string;
  spoolMaxBytes: number;
  store: StoreOptions;
  /** Least time between insert starts (shipper.ts insertIntervalMs); absent: MIN_INSERT_INTERVAL_MS. */
  minInsertIntervalMs?: number;
}

export type ToWorker =
  | { type: 'wake' }
  | { type: 'stop'; timeoutMs: number }
  | { type: 'query'; id: number; sql: string; limits: QueryLimits }
  | { type: 'ifaceCounters'; rows: IfaceCounterRow[] }
  | { type: 'ruleCounters'; rows: RuleCounterRow[] }
  | { type: 'ruleHistory'; rows: RuleHistoryStoreRow[] };

export type FromWorker =
  | { type: 'state'; healthy: boolean; lastError?: string }
  | { type: 'inserted'; rows: number; seconds: number }
  | { type: 'error' }
  | { type: 'result'; id: number; ok: true; result: unknown }
  | { type: 'result'; id: number; ok: false; message: string; retryable: boolean; code?: string }
  | { type: 'stopped' };

const data = JSON.parse(process.env.FLOWGATE_SHIP_WORKER ?? '{}') as ShipOptions;
const log = createLogger('flowgate').child({ part: 'shipper' });
const post = (m: FromWorker): void => {
  if (process.connected) process.send!(m);
};
process.on('disconnect', () => {
  // The agent is gone (stopped, or killed): exit now and free the store
  // directory for the next agent. What is spooled stays spooled; an insert
  // cut short here is retried under the same token, so it lands once.
  process.exit(0);
});
// The agent may have died while this process was still loading, before the
// listener above existed: check now, and keep checking.
const agentPid = process.ppid;
const orphaned = (): boolean => !process.connected || process.ppid !== agentPid;
if (orphaned()) process.exit(0);
setInterval(() => {
  if (orphaned()) process.exit(0);
}, 500).unref();

const shipper = new Shipper({
  spool: new Spool(data.spoolDir, data.spoolMaxBytes),
  openStore: async () => {
    const store = await ClickHouseFlowStore.open(data.store, log);
    // The engine's start touches ~175 MB of libchdb; ~110 MB of it comes back under 100k flows a second.
    if (data.store.target.kind === 'embedded') releaseStartupPages('libchdb', 'the embedded engine', log);
    return store;
  },
  log,
  onInserted: (rows, seconds) => post({ type: 'inserted', rows, seconds }),
  onError: () => post({ type: 'error' }),
  onState: (healthy, lastError) => post({ type: 'state', healthy, lastError }),
  minInsertIntervalMs: data.minInsertIntervalMs,
});
shipper.start();

const history = new HistoryQueue(() => (shipper.healthy ? shipper.store : undefined), log);

process.on('message', (m: ToWorker) => {
  if (m.type === 'wake') shipper.wake();
  else if (m.type === 'ifaceCounters') history.ifaceCounters.add(m.rows);
  else if (m.type === 'ruleCounters') history.ruleCounters.add(m.rows);
  else if (m.type === 'ruleHistory') history.ruleHistory.add(m.rows);
  else if (m.type === 'stop') {
    // History first: stopping the shipper closes the store.
    void history
      .flush()
      .then(() => shipper.stop(m.timeoutMs))
      .finally(() => {
        post({ type: 'stopped' });
        process.disconnect(); // → 'disconnect' → exit
      });
  } else if (m.type === 'query') {
    const store = shipper.store;
    if (!store) {
      post({
        type: 'result',
        id: m.id,
        ok: false,
        retryable: true,
        message: `the flow store is not available yet: ${shipper.lastError ?? 'opening'}`,
      });
      return;
    }
    store.query(m.sql, m.limits).then(
      (result) => post({ type: 'result', id: m.id, ok: true, result }),
      (err: unknown) =>
        post({
          type: 'result',
          id: m.id,
          ok: false,
          message: err instanceof Error ? err.message : String(err),
          retryable: err instanceof StoreError ? err.retryable : true,
          code: err instanceof StoreError ? err.clickhouseCode : undefined,
        }),
    );
  }
});
