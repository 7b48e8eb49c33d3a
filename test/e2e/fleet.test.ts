/**
 * Fleet rules end to end: two real agents (`flowgate run --rules-source
 * store`), each on its own veth pair, sharing one ClickHouse server (the
 * test's HTTP endpoint over chDB: the embedded engine takes one process per
 * directory). Real UDP frames from each pair's namespace and a socket on the
 * agents' side count what gets through.
 *
 * A rule POSTed to one agent drops on the other within the sync interval; a
 * DELETE on the other lifts it on both; a rule INSERTed with SQL drops on
 * both; with the store down both keep enforcing (one even after a restart
 * with its pins gone), a POST is a 503, and a delete made in SQL once the
 * store is back reaches both.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createClient } from '@clickhouse/client';
import { requirePrivileges } from '../lib/privileges.js';
import { createVethPair, type VethPair } from '../lib/netns.js';
import { startAgent, type AgentProcess } from '../lib/agent.js';
import { startClickHouseHttp } from '../lib/clickhouse-http-server.js';
import { removeBpffs } from '../lib/datapath.js';
import { eventually } from '../lib/eventually.js';
import { addressPair, callApi, deliver, receiver, udpFrame, type Receiver } from '../lib/udp-path.js';

const PORT = 9999;
const SYNC_MS = 1000;

interface Site {
  veth: VethPair;
  hostIp: string;
  /** A source in the pair's namespace subnet (inside 198.18.0.0/15, the fleet rule's prefix). */
  src: string;
  rx: Receiver;
  agent: AgentProcess;
}

function through(site: Site, count = 20): Promise<number> {
  return deliver(site.veth, site.rx, udpFrame(site.veth, site.src, site.hostIp, PORT), count);
}

/** Wait until `site` lets `want` of 20 frames through; returns how long that took (ms). */
async function until(site: Site, want: number, what: string): Promise<number> {
  const t0 = Date.now();
  await eventually(async () => ((await through(site)) === want ? true : undefined), what, 15_000).catch(
    (err: Error) => {
      throw new Error(`${err.message}; agent logs:\n${site.agent.logs().split('\n').slice(-20).join('\n')}`);
    },
  );
  return Date.now() - t0;
}

async function metric(agent: AgentProcess, name: string): Promise<number> {
  const text = await (await fetch(`${agent.api}/metrics`)).text();
  const m = new RegExp(`^${name.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

test('two agents share one rule set through the store', async (t: TestContext) => {
  if (!requirePrivileges(t, ['root', 'bpf', 'netns'])) return;
  const work = mkdtempSync(path.join(tmpdir(), 'flowgate-fleet-e2e-'));
  const ch = await startClickHouseHttp({ dataDir: path.join(work, 'clickhouse') });
  const sql = createClient({ url: ch.url });
  const sites: Site[] = [];
  /** Pairs made so far, destroyed even when an agent fails to start. */
  const pairs: VethPair[] = [];
  // One hook, in this order: the agents stop while the store still answers (their final flush).
  t.after(async () => {
    for (const s of sites) {
      await s.rx.close();
      await s.agent.stop();
      s.agent.cleanup();
    }
    for (const veth of pairs) veth.destroy();
    await sql.close();
    await ch.stop();
    rmSync(work, { recursive: true, force: true });
  });
  for (const [name, net] of [
    ['a', '198.18.0'],
    ['b', '198.19.0'],
  ] as const) {
    const veth = createVethPair(`fgf${name}`);
    pairs.push(veth);
    addressPair(veth, `${net}.1`, `${net}.2`);
    const args = ['--clickhouse-url', ch.url, '--rules-source', 'store', '--rules-sync-interval', `${SYNC_MS}ms`];
    const agent = await startAgent({ ifaces: [veth.host], args: [...args, '--host', `site-${name}`] });
    sites.push({ veth, hostIp: `${net}.1`, src: `${net}.10`, rx: await receiver(`${net}.1`, PORT), agent });
  }
  const [a, b] = sites as [Site, Site];
  for (const s of sites) assert.equal(await through(s), 20, 'no rule: everything arrives');

  // A rule POSTed to agent a: enforced by a when the answer comes, by b within a sync interval.
  const posted = await callApi<{ rule: { id: number } }>(a.agent, 'POST', '/rules', {
    action: 'drop',
    src: '198.18.0.0/15',
    comment: 'fleet e2e',
  });
  assert.equal(posted.status, 201, JSON.stringify(posted.body));
  const id = posted.body.rule.id;
  assert.equal(await through(a), 0, 'the agent that took the POST drops at once');
  const reachedB = await until(b, 0, 'agent b to drop');
  t.diagnostic(`POST on a → dropping on b after ${reachedB} ms (sync interval ${SYNC_MS} ms)`);
  assert.ok(reachedB < SYNC_MS * 3 + 2000, `b took ${reachedB} ms`);
  assert.deepEqual((await callApi<{ src: string }>(b.agent, 'GET', `/rules/${id}`)).body.src, '198.18.0.0/15');

  // DELETE on b lifts it on both.
  assert.equal((await callApi(b.agent, 'DELETE', `/rules/${id}`)).status, 200);
  assert.equal(await through(b), 20);
  await until(a, 20, 'agent a to let traffic through after the DELETE on b');

  // A rule inserted with SQL reaches both.
  await sql.command({
    query: "INSERT INTO flowgate.rules (id, action, src, comment) VALUES (4000, 'drop', '198.18.0.0/15', 'by SQL')",
  });
  await until(a, 0, 'agent a to drop the SQL rule');
  await until(b, 0, 'agent b to drop the SQL rule');

  // The store goes away: both keep enforcing; a change is refused and changes nothing.
  await ch.stop();
  const refused = await callApi<{ error: string; message: string }>(a.agent, 'POST', '/rules', {
    action: 'drop',
    src: '192.0.2.0/24',
  });
  assert.equal(refused.status, 503, JSON.stringify(refused.body));
  assert.equal(refused.body.error, 'rule_store_unavailable');
  await new Promise((r) => setTimeout(r, SYNC_MS * 2));
  for (const s of sites) assert.equal(await through(s), 0, 'the last set is still enforced');
  assert.ok((await metric(a.agent, 'flowgate_rules_syncs_total{result="failed"}')) > 0);
  const listed = await callApi<{ total: number }>(a.agent, 'GET', '/rules');
  assert.equal(listed.body.total, 1);

  // Agent b restarts while the store is down, after a "reboot" (pins gone): its rules file has the set.
  assert.equal(await b.agent.stop(), 0);
  removeBpffs(b.agent.bpffs);
  b.agent = await b.agent.restart();
  assert.equal(await through(b), 0, 'enforced from the last set synced');

  // The store is back: a delete made with SQL reaches both.
  await ch.restart();
  await sql.command({ query: 'INSERT INTO flowgate.rules (id, deleted) VALUES (4000, 1)' });
  await until(a, 20, 'agent a to lift the rule deleted in SQL');
  await until(b, 20, 'agent b to lift the rule deleted in SQL');
  assert.ok((await metric(b.agent, 'flowgate_rules_last_sync_timestamp_seconds')) > Date.now() / 1000 - 30);
});
