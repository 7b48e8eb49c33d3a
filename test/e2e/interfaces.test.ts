/**
 * Interfaces attached through the API outlive the agent that attached them:
 * a restarted agent adopts them (listed, in their mode, detachable), and one
 * detached through the API stays detached after the next restart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requirePrivileges } from '../lib/privileges.js';
import { createVethPair } from '../lib/netns.js';
import { startAgent } from '../lib/agent.js';
import { callApi } from '../lib/udp-path.js';

interface Iface {
  name: string;
  xdpMode: string;
}

test('an interface attached through the API is adopted after a restart; a detached one stays detached', async (t) => {
  if (!requirePrivileges(t, ['root', 'bpf', 'netns'])) return;
  const first = createVethPair('fgi');
  const second = createVethPair('fgi');
  t.after(() => {
    first.destroy();
    second.destroy();
  });
  let agent = await startAgent({ ifaces: [first.host] });
  t.after(async () => {
    await agent.stop();
    agent.cleanup();
  });
  const names = async (): Promise<string[]> =>
    (await callApi<Iface[]>(agent, 'GET', '/interfaces')).body.map((i) => `${i.name} ${i.xdpMode}`).sort();

  const posted = await callApi(agent, 'POST', '/interfaces', { name: second.host, xdpMode: 'generic' });
  assert.equal(posted.status, 201, JSON.stringify(posted.body));
  const both = await names();
  assert.equal(both.length, 2);
  assert.ok(both.includes(`${second.host} generic`));

  assert.equal(await agent.stop(), 0);
  agent = await agent.restart();
  assert.deepEqual(await names(), both, 'the API-attached interface is adopted, in its mode');
  assert.match(agent.logs(), /adopted an interface attached through the API before the restart/);

  assert.equal((await callApi(agent, 'DELETE', `/interfaces/${second.host}`)).status, 204);
  assert.equal(await agent.stop(), 0);
  agent = await agent.restart();
  assert.deepEqual(
    await names(),
    both.filter((n) => !n.startsWith(second.host)),
    'detached stays detached',
  );
});
