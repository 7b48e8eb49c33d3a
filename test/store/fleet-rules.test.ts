/**
 * Fleet rules (--rules-source store) against a real ClickHouse over HTTP
 * (test/lib/clickhouse-http-server.ts, chDB in a child process): two rule
 * services ("agents", each with its own rules directory and a recording
 * fake kernel) sharing flowgate.rules. A change on one reaches the other at
 * its next sync; rows inserted with SQL reach both; two agents taking a
 * free id at once get different ids; a store outage is a 503 that changes
 * nothing, and each agent keeps enforcing its last set (also across a
 * restart). The real kernel tables and two real agents: test/e2e/fleet.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import pino from 'pino';
import { FleetSync, StoreUpstream } from '../../control/rules/fleet.js';
import { RuleService } from '../../control/rules/service.js';
import { RuleRequestError } from '../../control/rules/types.js';
import { ClickHouseFlowStore } from '../../control/store/flow-store.js';
import { ClickHouseRuleStore } from '../../control/store/rule-store.js';
import { startClickHouseHttp, type ClickHouseHttp } from '../lib/clickhouse-http-server.js';
import { FakeKernel } from '../lib/fake-kernel-rules.js';

const log = pino({ level: 'silent' });
const work = mkdtempSync(path.join(tmpdir(), 'flowgate-fleet-test-'));
let ch: ClickHouseHttp;
let sql: ClickHouseClient;

interface TestAgent {
  name: string;
  dir: string;
  kernel: FakeKernel;
  store: ClickHouseRuleStore;
  service: RuleService;
  sync: FleetSync;
}

const agents: TestAgent[] = [];

async function openAgent(name: string, kernel = new FakeKernel()): Promise<TestAgent> {
  const dir = path.join(work, name);
  const store = await ClickHouseRuleStore.open({ kind: 'server', url: ch.url }, 3000);
  const service = await RuleService.open({
    kernel,
    dir,
    ifaceExists: () => true,
    log,
    maxId: 1000,
    upstream: new StoreUpstream(store, name),
  });
  const sync = new FleetSync({ service, store, intervalMs: 60_000, log });
  const agent = { name, dir, kernel, store, service, sync };
  agents.push(agent);
  return agent;
}

async function closeAgent(a: TestAgent): Promise<void> {
  await a.sync.stop();
  await a.service.close();
  await a.store.close();
  agents.splice(agents.indexOf(a), 1);
}

/** The rules a service holds, as `id src` lines (what the API lists). */
function set(a: TestAgent): string[] {
  return a.service.list({ limit: 10_000 }).rules.map((r) => `${r.id} ${r.src ?? r.dst ?? ''}`);
}

before(async () => {
  ch = await startClickHouseHttp({ dataDir: path.join(work, 'clickhouse') });
  // The agent's flow store applies the migrations, flowgate.rules (005) among them.
  const flows = await ClickHouseFlowStore.open({ target: { kind: 'server', url: ch.url }, retentionDays: 30 });
  await flows.close();
  sql = createClient({ url: ch.url });
});

after(async () => {
  for (const a of [...agents]) await closeAgent(a).catch(() => undefined);
  await sql?.close();
  await ch?.stop();
  rmSync(work, { recursive: true, force: true });
});

describe('fleet rules through a shared store', () => {
  let a: TestAgent;
  let b: TestAgent;

  it('a rule added on one agent is enforced by the other at its next sync, with the same id and times', async () => {
    a = await openAgent('agent-a');
    b = await openAgent('agent-b');
    assert.equal(await a.sync.syncOnce(), 'unchanged');
    const { rule } = await a.service.add({ action: 'drop', src: '203.0.113.0/24', comment: 'scanner' });
    assert.deepEqual(a.kernel.loaded, [rule.id]);
    assert.deepEqual(b.kernel.loaded, [], 'not before the sync');
    assert.equal(await b.sync.syncOnce(), 'applied');
    assert.deepEqual(b.kernel.loaded, [rule.id]);
    assert.deepEqual(b.service.get(rule.id), { ...rule, matchedPackets: 0, matchedBytes: 0 });
    // The author's own sync finds its change already applied.
    assert.equal(await a.sync.syncOnce(), 'unchanged');
    const switches = b.kernel.switches;
    assert.equal(await b.sync.syncOnce(), 'unchanged', 'the store did not change');
    assert.equal(b.kernel.switches, switches);
  });

  it('rows inserted and deleted with SQL reach every agent; a row an agent refuses is named and skipped', async () => {
    await sql.command({
      query:
        "INSERT INTO flowgate.rules (id, action, src, protocol, dst_ports, comment) VALUES (500, 'drop', '198.51.100.0/24', 'tcp', '22', 'by hand'), " +
        "(501, 'drop', 'not-a-prefix', '', '', 'typo')",
    });
    const refused: string[] = [];
    const sync = new FleetSync({
      service: b.service,
      store: b.store,
      intervalMs: 60_000,
      log: { ...log, error: (m: string) => refused.push(m), info: () => undefined, warn: () => undefined } as never,
    });
    assert.equal(await sync.syncOnce(), 'applied');
    assert.equal(await a.sync.syncOnce(), 'applied');
    for (const x of [a, b]) {
      const r = x.service.get(500)!;
      assert.equal(r.src, '198.51.100.0/24');
      assert.equal(r.protocol, 'tcp');
      assert.equal(r.dstPorts, '22');
      assert.equal(r.comment, 'by hand');
      assert.equal(x.service.get(501), undefined, 'the refused row is not enforced');
      assert.ok(x.kernel.loaded.includes(500));
    }
    assert.equal(refused.length, 1);
    assert.match(refused[0]!, /rule 501: src: /);

    await sql.command({ query: 'INSERT INTO flowgate.rules (id, deleted) VALUES (500, 1), (501, 1)' });
    await a.sync.syncOnce();
    await b.sync.syncOnce();
    for (const x of [a, b]) assert.equal(x.service.get(500), undefined);
    assert.deepEqual(a.kernel.loaded, b.kernel.loaded);
  });

  it('a DELETE on one agent removes the rule from the other', async () => {
    const { rule } = await b.service.add({ action: 'drop', dst: '192.0.2.0/24' });
    await a.sync.syncOnce();
    assert.ok(a.kernel.loaded.includes(rule.id));
    assert.ok(await a.service.remove(rule.id));
    await b.sync.syncOnce();
    assert.equal(b.service.get(rule.id), undefined);
    assert.ok(!b.kernel.loaded.includes(rule.id));
  });

  it('two agents adding at once (neither synced) get different ids, and both end with both rules', async () => {
    const [x, y] = await Promise.all([
      a.service.add({ action: 'drop', src: '10.1.0.0/16' }),
      b.service.add({ action: 'drop', src: '10.2.0.0/16' }),
    ]);
    assert.notEqual(x.rule.id, y.rule.id);
    await a.sync.syncOnce();
    await b.sync.syncOnce();
    assert.deepEqual(set(a), set(b));
    assert.ok(set(a).includes(`${x.rule.id} 10.1.0.0/16`) && set(a).includes(`${y.rule.id} 10.2.0.0/16`));
  });

  it('of two claims of one id with the same token (a race), the store keeps only the first', async () => {
    const at = new Date().toISOString();
    const rule = (src: string) => ({
      id: 900,
      action: 'drop' as const,
      src,
      priority: 100,
      createdAt: at,
      updatedAt: at,
    });
    await a.store.write([rule('10.7.0.0/16')], [], 'agent-a#1', 'rule-claim:900:0');
    await b.store.write([rule('10.8.0.0/16')], [], 'agent-b#1', 'rule-claim:900:0');
    assert.equal((await a.store.newest(900))?.origin, 'agent-a#1');
    assert.equal((await a.store.read()).find((r) => r.id === 900)?.src, '10.7.0.0/16');
    // A claim through the upstream sees the id taken.
    assert.equal(await new StoreUpstream(b.store, 'agent-b').claim(rule('10.8.0.0/16')), false);
    await a.store.write([], [900], 'agent-a', 'rule-write:900-gone');
    assert.equal((await a.store.newest(900))?.free, true);
  });

  it('an id another agent holds (not yet synced here) is a 409; without an id the next free one is claimed', async () => {
    const { rule } = await a.service.add({ action: 'drop', src: '10.3.0.0/16' });
    await assert.rejects(
      b.service.add({ id: rule.id, action: 'drop', src: '10.4.0.0/16' }),
      (err: RuleRequestError) => err.status === 409 && /fleet/.test(err.message),
    );
    // b has not synced: its lowest free id is a's new rule's; the store says taken, so b takes the next.
    const next = await b.service.add({ action: 'drop', src: '10.4.0.0/16' });
    assert.notEqual(next.rule.id, rule.id);
    await a.sync.syncOnce();
    await b.sync.syncOnce();
    assert.deepEqual(set(a), set(b));
  });

  it('a replace makes the fleet set exactly the new one, rules not yet synced here included', async () => {
    await b.service.add({ action: 'drop', src: '10.5.0.0/16' }); // a has not seen it
    await a.service.replace([
      { action: 'drop', src: '100.64.0.0/10' },
      { id: 77, action: 'allow', src: '10.0.0.0/8' },
    ]);
    await b.sync.syncOnce();
    assert.deepEqual(set(a), ['1 100.64.0.0/10', '77 10.0.0.0/8']);
    assert.deepEqual(set(b), set(a));
    assert.deepEqual(b.kernel.loaded, [1, 77]);
  });

  it('with the store down: a change is a 503 and changes nothing; each agent keeps its set, also across a restart', async () => {
    await ch.stop();
    const before = { a: set(a), kernel: [...a.kernel.loaded] };
    await assert.rejects(
      a.service.add({ action: 'drop', src: '10.9.0.0/16' }),
      (err: RuleRequestError) => err.status === 503 && /cannot be reached.*nothing was changed/.test(err.message),
    );
    await assert.rejects(a.service.remove(77), (err: RuleRequestError) => err.status === 503);
    await assert.rejects(a.service.replace([]), (err: RuleRequestError) => err.status === 503);
    assert.deepEqual(set(a), before.a);
    assert.deepEqual(a.kernel.loaded, before.kernel);
    assert.equal(await a.sync.syncOnce(), 'failed');
    assert.equal(a.sync.healthy, false);
    assert.deepEqual(a.kernel.loaded, before.kernel, 'a failed sync leaves the set enforced');

    // A restart while the store is down: the rules directory holds the last set synced.
    await closeAgent(a);
    const kernel = new FakeKernel();
    a = await openAgent('agent-a', kernel);
    assert.deepEqual(kernel.loaded, before.kernel);
    assert.equal(await a.sync.syncOnce(), 'failed');

    await ch.restart();
    await b.service.add({ action: 'drop', src: '10.10.0.0/16' });
    assert.equal(await a.sync.syncOnce(), 'applied');
    assert.equal(a.sync.healthy, true);
    assert.deepEqual(set(a), set(b));
  });
});
