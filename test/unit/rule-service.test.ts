/**
 * RuleService against a recording fake kernel: ids, validation naming the
 * field, all-or-nothing changes (kernel refusal, file failure), the rules
 * file across reopen (journal, snapshot, a torn last line), expiry and
 * history. The real kernel tables are covered by the datapath and e2e tests.
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import pino from 'pino';
import type { RuleFile } from '../../control/rules/rule-file.js';
import { RuleService, type RuleHistoryRow } from '../../control/rules/service.js';
import { FakeKernel } from '../lib/fake-kernel-rules.js';
import { RuleRequestError } from '../../control/rules/types.js';

const log = pino({ level: 'silent' });
let dir: string;
let kernel: FakeKernel;
let history: RuleHistoryRow[];
let clock: Date;

function open(extra: { maxId?: number } = {}): Promise<RuleService> {
  return RuleService.open({
    kernel,
    dir,
    ifaceExists: (name) => name === 'eth0',
    log,
    history: (rows) => history.push(...rows),
    now: () => clock,
    ...extra,
  });
}

async function rejects(
  p: Promise<unknown>,
  status: number,
  field: string | undefined,
  message?: RegExp,
): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof RuleRequestError, `not a RuleRequestError: ${String(e)}`);
    assert.equal(e.status, status);
    assert.equal(e.field, field);
    if (message) assert.match(e.message, message);
    return true;
  });
}

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'flowgate-rules-'));
  kernel = new FakeKernel();
  history = [];
  clock = new Date('2026-11-25T10:00:00.000Z');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('RuleService', () => {
  it('adds rules with the lowest free ids, normalises, warns, and lists them', async () => {
    const svc = await open();
    const a = await svc.add({ action: 'drop', src: '198.51.100.7/24', comment: 'scanner' });
    assert.deepEqual(a.rule, {
      id: 1,
      action: 'drop',
      priority: 100,
      src: '198.51.100.0/24',
      comment: 'scanner',
      createdAt: '2026-11-25T10:00:00.000Z',
      updatedAt: '2026-11-25T10:00:00.000Z',
    });
    assert.deepEqual(a.warnings, ['src: 198.51.100.7/24 has host bits set; stored as 198.51.100.0/24']);
    const b = await svc.add({ action: 'allow', dst: '2001:db8::/32', protocol: 6, dstPorts: '443', priority: 200 });
    assert.equal(b.rule.protocol, 'tcp');
    assert.equal(b.rule.dstPorts, '443');
    await svc.add({ id: 10, action: 'drop', src: '203.0.113.0/24', iface: 'eth0' });
    assert.deepEqual(kernel.loaded, [1, 2, 10]);
    assert.equal(await svc.remove(2).then((r) => r?.id), 2);
    assert.equal((await svc.add({ action: 'drop', src: '192.0.2.1' })).rule.id, 2, 'id 2 is free again');

    assert.equal(svc.list({}).total, 3);
    assert.deepEqual(
      svc.list({ prefix: '198.51.0.0/16' }).rules.map((r) => r.id),
      [1],
    );
    assert.deepEqual(
      svc.list({ prefix: '192.0.2.1/32' }).rules.map((r) => r.id),
      [2],
    );
    assert.deepEqual(
      svc.list({ comment: 'SCAN' }).rules.map((r) => r.id),
      [1],
    );
    assert.deepEqual(svc.list({ action: 'drop', limit: 1, offset: 1 }), {
      rules: [svc.list({}).rules[1]],
      total: 3,
      offset: 1,
      limit: 1,
    });
    kernel.counters.set(1, { packets: 5, bytes: 300 });
    assert.deepEqual({ p: svc.get(1)?.matchedPackets, b: svc.get(1)?.matchedBytes }, { p: 5, b: 300 });
    assert.equal(svc.get(99), undefined);
    await svc.close();
  });

  it('refuses bad rules naming the field, and changes nothing', async () => {
    const svc = await open({ maxId: 1000 });
    await svc.add({ action: 'drop', src: '10.0.0.0/8' });
    const switches = kernel.switches;
    await rejects(svc.add({ action: 'block', src: '10.0.0.0/8' }), 400, 'action');
    await rejects(svc.add({ action: 'drop', src: '10.0.0.0/33' }), 400, 'src');
    await rejects(svc.add({ action: 'drop', src: '10.0.0.0/8', dst: '2001:db8::/32' }), 400, 'dst');
    await rejects(svc.add({ action: 'drop', dstPorts: '80' }), 400, 'dstPorts');
    await rejects(svc.add({ action: 'drop', protocol: 'tcp', dstPorts: '90-80' }), 400, 'dstPorts');
    await rejects(svc.add({ action: 'drop', priority: -1 }), 400, 'priority');
    await rejects(svc.add({ action: 'drop', iface: 'nope0' }), 400, 'iface', /no interface named nope0/);
    await rejects(
      svc.add({ action: 'drop', expiresAt: '2020-01-01T00:00:00Z' }),
      400,
      'expiresAt',
      /not in the future/,
    );
    await rejects(svc.add({ action: 'drop', ttlSeconds: 0 }), 400, 'ttlSeconds');
    await rejects(svc.add({ id: 1, action: 'drop' }), 409, 'id');
    await rejects(svc.add({ id: 1001, action: 'drop' }), 400, 'id', /1 to 1000/);
    await rejects(
      svc.replace([
        { action: 'drop', src: '10.0.0.0/8' },
        { action: 'drop', src: 'bogus' },
      ]),
      400,
      'rules/1/src',
    );
    await rejects(
      svc.replace([
        { id: 5, action: 'drop' },
        { id: 5, action: 'allow' },
      ]),
      400,
      'rules/1/id',
    );
    assert.equal(kernel.switches, switches, 'no refused request reached the kernel');
    assert.deepEqual(
      svc.list({}).rules.map((r) => r.src),
      ['10.0.0.0/8'],
    );
    await svc.close();
  });

  it('is all or nothing: a kernel refusal or a failed file write leaves both unchanged', async () => {
    const svc = await open();
    await svc.add({ action: 'drop', src: '10.0.0.0/8' });
    kernel.failNext = new Error('ENOSPC: table full');
    await assert.rejects(svc.add({ action: 'drop', src: '10.1.0.0/16' }), /table full/);
    assert.deepEqual(kernel.loaded, [1]);
    assert.equal(svc.list({}).total, 1);

    // The journal cannot be written (its file is closed under the service): the kernel is switched back.
    (svc as unknown as { file: RuleFile }).file.close();
    await assert.rejects(svc.add({ action: 'drop', src: '10.2.0.0/16' }), /rule file not loaded/);
    assert.deepEqual(kernel.loaded, [1]);
    assert.equal(svc.list({}).total, 1);
  });

  it('keeps the set across restarts: journal, snapshot, and a torn last line', async () => {
    let svc = await open();
    await svc.add({ action: 'drop', src: '10.0.0.0/8' });
    await svc.add({ action: 'drop', src: '10.1.0.0/16', ttlSeconds: 3600 });
    await svc.remove(1);
    await svc.close();
    svc = await open();
    assert.deepEqual(
      svc.list({}).rules.map((r) => [r.id, r.src, r.expiresAt]),
      [[2, '10.1.0.0/16', '2026-11-25T11:00:00.000Z']],
    );
    assert.deepEqual(kernel.loaded, [2], 'loaded into the kernel at open');
    const r = await svc.replace([
      { action: 'allow', src: '192.0.2.0/24' },
      { id: 2, action: 'drop', src: '10.1.0.0/16' },
    ]);
    assert.deepEqual(r, { count: 2, warnings: [], warningCount: 0 });
    await svc.add({ action: 'drop', dst: '203.0.113.9' });
    await svc.close();
    // A crash mid-append leaves half a line: that change was never acknowledged.
    appendFileSync(path.join(dir, 'rules.journal'), '{"op":"put","rule":{"id":9');
    svc = await open();
    assert.deepEqual(
      svc.list({}).rules.map((r) => [r.id, r.action, r.src ?? r.dst]),
      [
        [1, 'allow', '192.0.2.0/24'],
        [2, 'drop', '10.1.0.0/16'],
        [3, 'drop', '203.0.113.9/32'],
      ],
    );
    await svc.close();
    writeFileSync(path.join(dir, 'rules.json'), 'garbage\n');
    await assert.rejects(open(), /rules\.json:1: not JSON/);
  });

  it('expires rules on time, and those that expired while stopped at open', async () => {
    const svc = await open();
    await svc.add({ action: 'drop', src: '10.0.0.0/8', ttlSeconds: 60 });
    await svc.add({ action: 'drop', src: '10.2.0.0/16', ttlSeconds: 3600 });
    clock = new Date(clock.getTime() + 61_000);
    assert.equal(await svc.expireDue(), 1);
    assert.deepEqual(kernel.loaded, [2]);
    assert.deepEqual(
      history.map((h) => [h.op, h.ruleId]),
      [
        ['add', 1],
        ['add', 2],
        ['expire', 1],
      ],
    );
    await svc.close();
    clock = new Date(clock.getTime() + 3600_000);
    const later = await open();
    assert.equal(later.list({}).total, 0);
    assert.deepEqual(kernel.loaded, []);
    assert.deepEqual(history.at(-1)?.op, 'expire');
    await later.close();
  });

  it('re-arms when its timer fires before the clock reaches the expiry', async () => {
    // A wall clock running at half speed: every timer fires "early" by it.
    const start = Date.now();
    const svc = await RuleService.open({
      kernel,
      dir,
      ifaceExists: () => true,
      log,
      now: () => new Date(start + (Date.now() - start) / 2),
    });
    await svc.add({ action: 'drop', src: '10.0.0.0/8', expiresAt: new Date(start + 150).toISOString() });
    const deadline = Date.now() + 5000;
    while (svc.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(svc.size, 0, 'expired once the (slow) clock got there');
    await svc.close();
  });

  it('fires the expiry timer by itself', async () => {
    const svc = await RuleService.open({ kernel, dir, ifaceExists: () => true, log });
    await svc.add({ action: 'drop', src: '10.0.0.0/8', expiresAt: new Date(Date.now() + 300).toISOString() });
    assert.deepEqual(kernel.loaded, [1]);
    const deadline = Date.now() + 5000;
    while (svc.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(svc.size, 0);
    assert.deepEqual(kernel.loaded, []);
    await svc.close();
  });

  it('serialises concurrent adds and removes: the kernel ends with exactly the listed set', async () => {
    const svc = await open();
    const ops: Array<Promise<unknown>> = [];
    for (let i = 0; i < 200; i++) {
      ops.push(svc.add({ action: 'drop', src: `10.${i}.0.0/16` }));
      if (i % 3 === 0) ops.push(svc.remove(i / 3 + 1));
    }
    await Promise.allSettled(ops);
    assert.deepEqual(
      kernel.loaded,
      svc.list({ limit: 10_000 }).rules.map((r) => r.id),
    );
    await svc.close();
    const again = await open();
    assert.deepEqual(
      again.list({ limit: 10_000 }).rules.map((r) => r.id),
      kernel.loaded,
    );
    await again.close();
  });
});
