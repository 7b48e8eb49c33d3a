/**
 * The shipper's inserts against a store that records them: several spooled
 * batches go as one insert (planInsert), and an insert is retried with
 * exactly its batches under exactly its token — after a failure, after a
 * crash at any step, and even when the spool's bound drops one of them —
 * because the engine deduplicates a retried group only then.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import {
  GROUP_MAX_BATCHES,
  MIN_INSERT_INTERVAL_MS,
  Shipper,
  insertIntervalMs,
  insertToken,
  planInsert,
} from '../../control/agent/shipper.js';
import { Spool, batchToken, type BatchInfo, type BatchMeta } from '../../control/agent/spool.js';
import { FLOW_RECORD_SIZE } from '../../control/datapath/layout.js';
import {
  FLOW_GROUP_MAX_ROWS,
  StoreError,
  type FlowRecordBatch,
  type FlowStore,
  type EncodedRows,
} from '../../control/store/types.js';
import { writeZeroBatch } from '../lib/spool.js';

const meta: BatchMeta = { host: 'h', monoToEpochOffsetNs: '0', ifaces: {} };

interface Insert {
  token: string;
  hosts: string[];
  rows: number;
}

/** A FlowStore that records each insert (its token, its batches by host) and can fail the next ones. */
class RecordingStore implements FlowStore {
  inserts: Insert[] = [];
  failNext = 0;

  async insertFlows(rows: EncodedRows | FlowRecordBatch | readonly FlowRecordBatch[], token: string): Promise<void> {
    const batches = (Array.isArray(rows) ? rows : [rows]) as FlowRecordBatch[];
    let n = 0;
    for (const b of batches) for (const slice of b.records() as Iterable<Buffer>) n += slice.length / FLOW_RECORD_SIZE;
    if (this.failNext > 0) {
      this.failNext--;
      throw new StoreError('store down', true);
    }
    this.inserts.push({ token, hosts: batches.map((b) => b.host), rows: n });
  }
  migrate = async (): Promise<string[]> => [];
  query = async (): Promise<never> => assert.fail('no queries');
  insertIfaceCounters = async (): Promise<void> => undefined;
  insertRuleCounters = async (): Promise<void> => undefined;
  insertRuleHistory = async (): Promise<void> => undefined;
  ping = async (): Promise<boolean> => true;
  close = async (): Promise<void> => undefined;
}

function withSpool(fn: (spool: Spool, dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-shipper-'));
    try {
      await fn(new Spool(dir, 1 << 30), dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

/** Spool batch i (host b<i>) of `flows` records. */
function spoolBatch(spool: Spool, i: number, flows = 10): string {
  const token = batchToken('h', 1, i);
  writeZeroBatch(spool, token, flows, { ...meta, host: `b${i}` });
  return token;
}

/** Run a shipper until the spool is empty (or `until` holds), then stop it. */
async function ship(
  spool: Spool,
  store: RecordingStore,
  until = (): boolean => spool.list().length === 0,
  opts: { minInsertIntervalMs?: number; meanwhile?: () => void } = {},
): Promise<void> {
  const shipper = new Shipper({
    spool,
    openStore: async () => store,
    log: pino({ level: 'silent' }),
    onInserted: () => undefined,
    onError: () => undefined,
    minInsertIntervalMs: opts.minInsertIntervalMs,
  });
  shipper.start();
  const deadline = Date.now() + 10_000;
  while (!until() && Date.now() < deadline) {
    opts.meanwhile?.();
    shipper.wake();
    await new Promise((r) => setTimeout(r, 20));
  }
  await shipper.stop(0);
  assert.ok(until(), 'the shipper got there in time');
}

const info = (token: string, rows: number): BatchInfo => ({ token, rows, bytes: 0, file: token });

describe('shipper', () => {
  it('plans the oldest batches that fit one insert: by rows, by count, and a big batch alone', () => {
    const many = Array.from({ length: GROUP_MAX_BATCHES + 5 }, (_, i) => info(`t${i}`, 1));
    assert.equal(planInsert(many).length, GROUP_MAX_BATCHES);
    const third = Math.floor(FLOW_GROUP_MAX_ROWS / 3);
    assert.deepEqual(
      planInsert([info('a', third), info('b', third), info('c', third), info('d', third)]).map((b) => b.token),
      ['a', 'b', 'c'],
    );
    assert.deepEqual(
      planInsert([info('big', FLOW_GROUP_MAX_ROWS * 2), info('b', 1)]).map((b) => b.token),
      ['big'],
    );
    assert.deepEqual(planInsert([]), []);
    assert.equal(insertToken(['x']), 'x');
    assert.match(insertToken(['x', 'y', 'z']), /^x\+2:[0-9a-f]{16}$/);
    assert.notEqual(insertToken(['x', 'y', 'z']), insertToken(['x', 'y', 'w']));
  });

  it(
    'ships what waits as one insert, removes it, and leaves no record behind',
    withSpool(async (spool, dir) => {
      const tokens = [1, 2, 3].map((i) => spoolBatch(spool, i));
      const store = new RecordingStore();
      await ship(spool, store);
      assert.deepEqual(store.inserts, [{ token: insertToken(tokens), hosts: ['b1', 'b2', 'b3'], rows: 30 }]);
      assert.deepEqual(readdirSync(dir).sort(), ['landed.json', 'shipping']);
      assert.deepEqual(readdirSync(path.join(dir, 'shipping')), []);
      // Landed and removed, but still known: a drain that died before clearing its slot does not spool it again.
      assert.ok(tokens.every((t) => spool.has(t)));
      assert.ok(!spool.has(batchToken('h', 1, 4)));
    }),
  );

  it(
    'retries a failed insert with the same batches and token, though more came and the bound dropped one',
    withSpool(async (spool) => {
      const first = [1, 2].map((i) => spoolBatch(spool, i));
      const store = new RecordingStore();
      store.failNext = 1;
      let dropped = false;
      // Meanwhile: a new batch comes, and the bound drops batch 1 (its spool name, as enforceLimit does).
      const orig = store.insertFlows.bind(store);
      store.insertFlows = async (rows, token) => {
        if (!dropped) {
          dropped = true;
          spoolBatch(spool, 3);
          spool.remove(spool.list().find((b) => b.token === first[0])!);
        }
        return orig(rows, token);
      };
      await ship(spool, store);
      assert.deepEqual(store.inserts, [
        { token: insertToken(first), hosts: ['b1', 'b2'], rows: 20 },
        { token: batchToken('h', 1, 3), hosts: ['b3'], rows: 10 },
      ]);
    }),
  );

  it(
    'after a crash at each step, ships every batch under the token of its first attempt',
    withSpool(async (spool, dir) => {
      const tokens = [1, 2, 3].map((i) => spoolBatch(spool, i));
      const group = insertToken(tokens.slice(0, 2));

      // Died after taking batches 1 and 2, before recording the insert: nothing was attempted, plan afresh.
      spool.claim(spool.list().slice(0, 2));
      let store = new RecordingStore();
      await ship(spool, store, () => store.inserts.length > 0);
      assert.deepEqual(store.inserts[0], { token: insertToken(tokens), hosts: ['b1', 'b2', 'b3'], rows: 30 });

      // Died after recording an insert of 1 and 2 (sent or not): exactly that insert again, then 3 alone.
      for (const i of [1, 2, 3]) spoolBatch(spool, i);
      spool.claim(spool.list().slice(0, 2));
      spool.writeIntent({ token: group, batches: tokens.slice(0, 2) });
      store = new RecordingStore();
      await ship(spool, store);
      assert.deepEqual(store.inserts, [
        { token: group, hosts: ['b1', 'b2'], rows: 20 },
        { token: tokens[2]!, hosts: ['b3'], rows: 10 },
      ]);

      // Died while removing a landed insert (batch 1 and its link gone): it is not sent again.
      for (const i of [1, 2, 3]) spoolBatch(spool, i);
      spool.claim(spool.list().slice(0, 2));
      spool.writeIntent({ token: group, batches: tokens.slice(0, 2) });
      spool.recordLanded(tokens.slice(0, 1));
      spool.dropClaims();
      assert.ok(!existsSync(spool.fileOf(tokens[0]!)));
      store = new RecordingStore();
      await ship(spool, store);
      assert.deepEqual(store.inserts, [{ token: tokens[2]!, hosts: ['b3'], rows: 10 }]);
      assert.equal(spool.readIntent(), undefined);
      assert.deepEqual(readdirSync(path.join(dir, 'shipping')), []);
    }),
  );

  it(
    'starts an insert at most once an interval: batches that come sooner wait and go together',
    withSpool(async (spool) => {
      spoolBatch(spool, 1);
      const store = new RecordingStore();
      let added = false;
      await ship(spool, store, () => store.inserts.length === 2, {
        minInsertIntervalMs: 2000,
        meanwhile: () => {
          if (store.inserts.length === 1 && !added) {
            added = true;
            spoolBatch(spool, 2); // right after the first insert: both wait for the interval
            spoolBatch(spool, 3);
          }
        },
      });
      assert.deepEqual(
        store.inserts.map((i) => i.hosts),
        [['b1'], ['b2', 'b3']],
      );
    }),
  );

  it('waits for the insert interval, but never longer than the drain interval', () => {
    assert.equal(MIN_INSERT_INTERVAL_MS, 2000);
    assert.equal(insertIntervalMs(5000), 2000); // the default --drain-interval: no batch waits
    assert.equal(insertIntervalMs(2000), 2000);
    assert.equal(insertIntervalMs(500), 500); // a short interval was chosen for fresh rows: kept
  });

  it(
    'does not hold back a full group',
    withSpool(async (spool) => {
      spoolBatch(spool, 0);
      const store = new RecordingStore();
      let added = false;
      const started = Date.now();
      await ship(spool, store, () => store.inserts.length === 2, {
        minInsertIntervalMs: 60_000,
        meanwhile: () => {
          if (store.inserts.length === 1 && !added) {
            added = true;
            for (let i = 1; i <= GROUP_MAX_BATCHES; i++) spoolBatch(spool, i);
          }
        },
      });
      assert.equal(store.inserts[1]!.hosts.length, GROUP_MAX_BATCHES);
      assert.ok(Date.now() - started < 30_000);
    }),
  );

  it(
    'remembers the last landed batches, a bounded number',
    withSpool(async (spool) => {
      for (let i = 0; i < 300; i++) spool.recordLanded([batchToken('h', 1, i)]);
      const landed = spool.landed();
      assert.equal(landed.length, 256);
      assert.equal(landed.at(-1), batchToken('h', 1, 299));
      assert.ok(spool.has(batchToken('h', 1, 299)) && !spool.has(batchToken('h', 1, 0)));
    }),
  );

  it(
    'sets an unreadable record aside, loudly, and ships on',
    withSpool(async (spool, dir) => {
      spoolBatch(spool, 1);
      writeFileSync(path.join(dir, 'ship.intent'), '{"magic":"flowgate-spool-v1","tok');
      const store = new RecordingStore();
      await ship(spool, store);
      assert.equal(store.inserts.length, 1);
      assert.ok(readdirSync(dir).some((n) => n.startsWith('ship.intent.damaged-')));
    }),
  );
});
