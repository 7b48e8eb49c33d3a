/**
 * The embedded store's ship process dying (kill -9 here; out of memory or an
 * engine crash in life): the agent's handle reports the store unhealthy,
 * answers queries at once with a retryable error instead of leaving them
 * waiting, starts a new ship process, and queries work again. And what the
 * agent gives the ship process reaches it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { ShipClient } from '../../control/agent/ship-client.js';
import { Spool, batchToken } from '../../control/agent/spool.js';
import { StoreError } from '../../control/store/types.js';
import { eventually } from '../lib/eventually.js';
import { writeZeroBatch } from '../lib/spool.js';

test('a dead ship process is reported, queries fail fast, and a new one takes over', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'flowgate-ship-client-test-'));
  const exits: string[] = [];
  let errors = 0;
  const ship = new ShipClient(
    {
      spoolDir: path.join(dir, 'spool'),
      spoolMaxBytes: 1 << 30,
      store: { target: { kind: 'embedded', dir }, retentionDays: 30 },
    },
    {
      onInserted: () => undefined,
      onError: () => errors++,
      onWorkerExit: (reason) => exits.push(reason),
    },
  );
  t.after(async () => {
    await ship.stop(5000);
    rmSync(dir, { recursive: true, force: true });
  });
  const one = async (): Promise<unknown> =>
    (await ship.query('SELECT 1 AS x', { maxSeconds: 10, maxRows: 10 })).rows[0]?.[0];
  await eventually(async () => (ship.healthy ? true : undefined), 'the ship process to reach its store', 60_000);
  assert.equal(Number(await one()), 1);

  const first = ship.pid!;
  process.kill(first, 'SIGKILL');
  await eventually(async () => (exits.length ? true : undefined), 'the exit to be noticed', 10_000);
  assert.match(exits[0]!, /SIGKILL/);
  assert.equal(ship.healthy, false);
  assert.match(ship.lastError ?? '', /ship process exited \(SIGKILL\).*restarting/);
  assert.ok(errors >= 1);
  const t0 = Date.now();
  await assert.rejects(one(), (err: StoreError) => err instanceof StoreError && err.retryable);
  assert.ok(Date.now() - t0 < 1000, 'a query fails at once, it does not wait');

  await eventually(async () => (ship.healthy ? true : undefined), 'a new ship process', 60_000);
  assert.notEqual(ship.pid, first);
  assert.equal(Number(await one()), 1);
});

/** Resident kB of a process's mappings of a file. */
function residentKb(pid: number, fragment: string): number {
  let kb = 0;
  let counting = false;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) counting = head[1]!.includes(fragment);
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (counting && rss) kb += Number(rss[1]);
  }
  return kb;
}

test("the ship process keeps only what it uses of the embedded engine's pages once the store is open", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'flowgate-ship-client-test-'));
  const open = (env?: string): ShipClient => {
    if (env === undefined) delete process.env.FLOWGATE_MEMORY_DEFAULTS;
    else process.env.FLOWGATE_MEMORY_DEFAULTS = env;
    return new ShipClient(
      {
        spoolDir: path.join(dir, 'spool'),
        spoolMaxBytes: 1 << 30,
        store: { target: { kind: 'embedded', dir }, retentionDays: 30 },
      },
      { onInserted: () => undefined, onError: () => undefined },
    );
  };
  const saved = process.env.FLOWGATE_MEMORY_DEFAULTS;
  t.after(() => {
    if (saved === undefined) delete process.env.FLOWGATE_MEMORY_DEFAULTS;
    else process.env.FLOWGATE_MEMORY_DEFAULTS = saved;
    rmSync(dir, { recursive: true, force: true });
  });
  const residentOnceOpen = async (ship: ShipClient): Promise<number> => {
    try {
      await eventually(async () => (ship.healthy ? true : undefined), 'the ship process to reach its store', 60_000);
      await ship.query('SELECT count() FROM flowgate.flows', { maxSeconds: 10, maxRows: 10 });
      return residentKb(ship.pid!, 'libchdb');
    } finally {
      await ship.stop(5000);
    }
  };
  // FLOWGATE_MEMORY_DEFAULTS=1: the engine's pages as opening it left them (well over 100 MB).
  const kept = await residentOnceOpen(open('1'));
  const released = await residentOnceOpen(open());
  assert.ok(kept > 100 * 1024, `${kept} kB resident without the release`);
  assert.ok(released * 3 < kept, `${released} kB resident after the release, ${kept} kB without it`);
});

test('the ship process waits between inserts as long as the agent asks (minInsertIntervalMs)', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'flowgate-ship-client-test-'));
  const spool = new Spool(path.join(dir, 'spool'), 1 << 30);
  let inserts = 0;
  const ship = new ShipClient(
    {
      spoolDir: spool.dir,
      spoolMaxBytes: 1 << 30,
      store: { target: { kind: 'embedded', dir }, retentionDays: 30 },
      minInsertIntervalMs: 60_000, // far past the 2 s default
    },
    { onInserted: () => inserts++, onError: () => undefined },
  );
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const spoolBatch = (i: number): void => {
    writeZeroBatch(spool, batchToken('interval', 1, i), 10, { host: 'interval', monoToEpochOffsetNs: '0', ifaces: {} });
    ship.wake();
  };
  try {
    spoolBatch(0);
    await eventually(async () => (inserts === 1 ? true : undefined), 'the first insert', 60_000);
    spoolBatch(1);
    await new Promise((r) => setTimeout(r, 5000));
    assert.equal(inserts, 1, 'the second batch waits out the interval the agent gave');
  } finally {
    await ship.stop(10_000); // a stop ships what is spooled without waiting
  }
  assert.equal(inserts, 2);
  assert.deepEqual(spool.list(), []);
});
