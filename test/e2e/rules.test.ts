/**
 * Rules end to end: `flowgate run` on a veth, rules pushed over REST, real
 * UDP frames sent from the test namespace with trafgen, and a UDP socket on
 * the agent's side counting what arrives. Checks exact drops, the rule's
 * counters against flows.dropped_packets, DELETE, expiry, a restart after a
 * "reboot" (pins gone), a one-million-prefix PUT, and parallel POST/DELETE
 * leaving the API's set and the kernel's tables identical.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { requirePrivileges } from '../lib/privileges.js';
import { createVethPair, type VethPair } from '../lib/netns.js';
import {
  addressPair,
  callApi,
  deliver as deliverFrames,
  receiver as listen,
  udpFrame,
  type Receiver,
} from '../lib/udp-path.js';
import { startAgent, type AgentProcess } from '../lib/agent.js';
import { ipPacketLength } from '../lib/frames.js';
import { removeBpffs } from '../lib/datapath.js';
import { eventually } from '../lib/eventually.js';

const HOST_IP = '198.18.0.1';
const PORT = 9999;

/** The receiver on the agent's side. */
function receiver(): Promise<Receiver> {
  return listen(HOST_IP, PORT);
}

function setup(t: TestContext): VethPair | undefined {
  if (!requirePrivileges(t, ['root', 'bpf', 'netns'])) return undefined;
  const veth = createVethPair('fgr');
  t.after(() => veth.destroy());
  addressPair(veth, HOST_IP, '198.18.0.2');
  return veth;
}

function udpFrom(veth: VethPair, src: string): Buffer {
  return udpFrame(veth, src, HOST_IP, PORT);
}

/** Send `count` frames from `src` and return how many reached the receiver. */
function deliver(veth: VethPair, rx: Receiver, src: string, count: number): Promise<number> {
  return deliverFrames(veth, rx, udpFrom(veth, src), count);
}

const call = callApi;

interface StoredRule {
  id: number;
  src?: string;
  matchedPackets?: number;
  matchedBytes?: number;
}

test('a POSTed rule drops exactly the named traffic; counters agree; DELETE and expiry let it through', async (t) => {
  const veth = setup(t);
  if (!veth) return;
  const agent = await startAgent({ ifaces: [veth.host], args: ['--drain-interval', '1s'] });
  const rx = await receiver();
  t.after(async () => {
    await rx.close();
    await agent.stop();
    agent.cleanup();
  });

  assert.equal(await deliver(veth, rx, '198.18.0.10', 100), 100, 'no rule: everything arrives');

  const added = await call<{ rule: StoredRule; warnings: string[] }>(agent, 'POST', '/rules', {
    action: 'drop',
    src: '198.18.0.10/32',
    comment: 'e2e',
  });
  assert.equal(added.status, 201, JSON.stringify(added.body));
  const id = added.body.rule.id;
  assert.equal(await deliver(veth, rx, '198.18.0.10', 100), 0, 'the named source is dropped');
  assert.equal(await deliver(veth, rx, '198.18.0.11', 50), 50, 'another source is not');

  const frameLen = ipPacketLength(udpFrom(veth, '198.18.0.10'))!;
  const got = await call<StoredRule>(agent, 'GET', `/rules/${id}`);
  assert.equal(got.body.matchedPackets, 100);
  assert.equal(got.body.matchedBytes, 100 * frameLen);
  // flows.dropped_packets agrees with the rule's counters.
  await eventually(async () => {
    const [row] = await agent.query<[string, string, number]>(
      `SELECT toString(sum(dropped_packets)), toString(sum(dropped_bytes)), max(rule_id) FROM flowgate.flows WHERE src_addr = toIPv6('198.18.0.10')`,
    );
    return row && Number(row[0]) === 100 ? row : undefined;
  }, '100 dropped packets in flows').then((row) => {
    assert.equal(Number(row[1]), 100 * frameLen);
    assert.equal(row[2], id);
  });

  // Rule counter history: per-interval deltas that add up to the rule's counters.
  const history = await eventually(async () => {
    const [row] = await agent.query<[string, string]>(
      `SELECT toString(sum(packets)), toString(sum(bytes)) FROM flowgate.rule_counters WHERE rule_id = ${id}`,
    );
    return row && Number(row[0]) === 100 ? row : undefined;
  }, 'rule counter history');
  assert.equal(Number(history[1]), 100 * frameLen);

  assert.equal((await call(agent, 'DELETE', `/rules/${id}`)).status, 200);
  assert.equal((await call(agent, 'GET', `/rules/${id}`)).status, 404);
  assert.equal(await deliver(veth, rx, '198.18.0.10', 100), 100, 'after DELETE it arrives again');

  const expiring = await call<{ rule: StoredRule }>(agent, 'POST', '/rules', {
    action: 'drop',
    src: '198.18.0.12',
    ttlSeconds: 2,
  });
  assert.equal(expiring.status, 201);
  const posted = Date.now();
  assert.equal(await deliver(veth, rx, '198.18.0.12', 10), 0);
  await eventually(
    async () => ((await call(agent, 'GET', `/rules/${expiring.body.rule.id}`)).status === 404 ? true : undefined),
    'the rule to expire',
    10_000,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; agent logs:\n${agent.logs().split('\n').slice(-30).join('\n')}`);
  });
  const late = Date.now() - posted - 2000;
  assert.ok(late < 1500, `expired ${late} ms after its time`);
  assert.equal(await deliver(veth, rx, '198.18.0.12', 10), 10, 'after expiry it arrives');

  const changes = await eventually(async () => {
    const rows = await agent.query<[string, number]>(
      'SELECT toString(op), rule_id FROM flowgate.rule_history ORDER BY ts, op',
    );
    return rows.length >= 4 ? rows : undefined;
  }, 'rule history');
  assert.deepEqual(changes, [
    ['add', id],
    ['delete', id],
    ['add', expiring.body.rule.id],
    ['expire', expiring.body.rule.id],
  ]);
});

test('the rule set survives a restart without pins (a reboot), and a one-million-prefix PUT is enforced', async (t) => {
  const veth = setup(t);
  if (!veth) return;
  let agent = await startAgent({ ifaces: [veth.host], args: ['--drain-interval', '1s'] });
  const rx = await receiver();
  t.after(async () => {
    await rx.close();
    await agent.stop();
    agent.cleanup();
  });
  const added = await call<{ rule: StoredRule }>(agent, 'POST', '/rules', { action: 'drop', src: '198.18.0.20' });
  assert.equal(added.status, 201);
  assert.equal(await agent.stop(), 0);
  // A reboot: the pins (and with them the programs and rule maps) are gone.
  removeBpffs(agent.bpffs);
  agent = await agent.restart();
  const listed = await call<{ rules: StoredRule[]; total: number }>(agent, 'GET', '/rules');
  assert.deepEqual(
    listed.body.rules.map((r) => [r.id, r.src]),
    [[added.body.rule.id, '198.18.0.20/32']],
  );
  assert.equal(await deliver(veth, rx, '198.18.0.20', 20), 0, 'enforced again from the rules file');

  // One million rules: /24 prefixes (none covering 198.18.0.0/24), the last one drops .21.
  const rules: Array<{ action: string; src: string }> = [];
  for (let i = 0; rules.length < 999_999; i++) {
    const a = 1 + Math.floor(i / 65536);
    if (a === 198) continue;
    rules.push({ action: 'drop', src: `${a}.${(i >> 8) & 255}.${i & 255}.0/24` });
  }
  rules.push({ action: 'drop', src: '198.18.0.21/32' });
  const started = performance.now();
  const put = await call<{ count: number }>(agent, 'PUT', '/rules', { rules });
  const seconds = (performance.now() - started) / 1000;
  assert.equal(put.status, 200, JSON.stringify(put.body).slice(0, 500));
  assert.equal(put.body.count, 1_000_000);
  console.log(`PUT /rules with 1,000,000 rules: ${seconds.toFixed(2)} s`);
  assert.equal(await deliver(veth, rx, '198.18.0.21', 20), 0, 'the last rule of the million is enforced');
  assert.equal(await deliver(veth, rx, '198.18.0.20', 20), 20, 'the replaced set no longer has .20');
  const page = await call<{ total: number; rules: StoredRule[] }>(agent, 'GET', '/rules?prefix=1.0.0.0/16&limit=5');
  assert.equal(page.body.total, 256);
  assert.equal(page.body.rules.length, 5);
});

/** The source prefixes in the kernel's active src table (bpftool over the pins). */
function kernelSrcPrefixes(agent: AgentProcess): Set<string>[] {
  return [0, 1].map((slot) => {
    const out = execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', `${agent.bpffs}/maps/src_lpm_${slot}`], {
      encoding: 'utf8',
      maxBuffer: 1 << 28,
    });
    const entries = JSON.parse(out) as Array<{ key: string[] | { prefixlen: number; data: number[] } }>;
    return new Set(
      entries.map((e) => {
        // bpftool prints raw bytes (hex strings) without BTF; the key is prefixlen u32, family u8, addr.
        const bytes = Array.isArray(e.key) ? e.key.map((h) => parseInt(h, 16)) : [];
        const len = bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16) | (bytes[3]! << 24);
        return `${bytes.slice(5, 9).join('.')}/${len - 8}`;
      }),
    );
  });
}

test('with a token: 401 without it or with a wrong one; parallel POST and DELETE leave the API state and the kernel tables identical', async (t) => {
  const veth = setup(t);
  if (!veth) return;
  const token = randomBytes(24).toString('hex');
  const tokenDir = mkdtempSync(path.join(tmpdir(), 'flowgate-token-'));
  const tokenFile = path.join(tokenDir, 'token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const agent = await startAgent({
    ifaces: [veth.host],
    args: ['--drain-interval', '1s', '--api-token-file', tokenFile],
  });
  t.after(async () => {
    await agent.stop();
    agent.cleanup();
    rmSync(tokenDir, { recursive: true, force: true });
  });
  const rule = { action: 'drop', src: '10.200.0.0/16' };
  assert.equal((await call(agent, 'POST', '/rules', rule)).status, 401, 'no token');
  assert.equal((await call(agent, 'POST', '/rules', rule, 'wrong')).status, 401, 'wrong token');
  assert.equal((await call(agent, 'GET', '/rules')).status, 401, 'reads need it too');
  const api = <T = Record<string, unknown>>(method: string, url: string, body?: unknown) =>
    call<T>(agent, method, url, body, token);
  const ids: number[] = [];
  await Promise.all(
    // 80 mutations in all: under the API's rate limit of 100 a second per client.
    Array.from({ length: 40 }, async (_, i) => {
      const r = await api<{ rule: StoredRule }>('POST', '/rules', { action: 'drop', src: `10.${i}.0.0/16` });
      assert.equal(r.status, 201);
      ids.push(r.body.rule.id);
    }),
  );
  await Promise.all(
    ids.map(async (id, i) => {
      if (i % 2 === 0) assert.equal((await api('DELETE', `/rules/${id}`)).status, 200);
      else assert.equal((await api('POST', '/rules', { action: 'drop', src: `172.16.${i}.0/24` })).status, 201);
    }),
  );
  const listed = await api<{ rules: StoredRule[] }>('GET', '/rules?limit=10000');
  const want = new Set(listed.body.rules.map((r) => r.src!));
  assert.equal(want.size, 40);
  // Let the rule slots settle (the idle one catches up after a grace period).
  await new Promise((r) => setTimeout(r, 200));
  const slots = kernelSrcPrefixes(agent);
  assert.ok(
    slots.some((s) => s.size === want.size && [...want].every((p) => s.has(p))),
    `kernel tables ${slots.map((s) => s.size).join('/')} entries vs ${want.size} rules`,
  );
});
