/**
 * The agent end to end: `flowgate run` attached to a veth whose peer sits in
 * a test namespace, real frames sent with trafgen, and the flows table
 * checked exactly through the agent's own SQL endpoint.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { requirePrivileges } from '../lib/privileges.js';
import { createVethPair, sendFrames, sendTrafgen, type VethPair } from '../lib/netns.js';
import { startAgent, type AgentProcess } from '../lib/agent.js';
import { startClickHouseHttp } from '../lib/clickhouse-http-server.js';
import { buildFrame, ipPacketLength, type FrameSpec } from '../lib/frames.js';
import { eventually } from '../lib/eventually.js';

const BIN = fileURLToPath(new URL('../../bin/flowgate.js', import.meta.url));

function withVeth(t: TestContext): VethPair | undefined {
  if (!requirePrivileges(t, ['root', 'bpf', 'netns'])) return undefined;
  const veth = createVethPair('fge');
  t.after(() => veth.destroy());
  return veth;
}

function fromPeer(veth: VethPair, spec: Omit<FrameSpec, 'eth'>): Buffer {
  return buildFrame({ ...spec, eth: { src: veth.peerMac, dst: veth.hostMac } });
}

async function packetsFrom(agent: AgentProcess, src: string): Promise<number> {
  const [row] = await agent.query<[string]>(
    `SELECT toString(sum(packets)) FROM flowgate.flows WHERE src_addr = toIPv6('${src}')`,
  );
  return Number(row?.[0] ?? 0);
}

async function waitPackets(agent: AgentProcess, src: string, want: number): Promise<void> {
  await eventually(
    async () => ((await packetsFrom(agent, src)) === want ? true : undefined),
    `${want} packets from ${src}`,
  );
}

test('flows reach the table exactly: counts, bytes, flags, VLAN, IPv6 extension headers, fragments, egress', async (t) => {
  const veth = withVeth(t);
  if (!veth) return;
  const agent = await startAgent({ ifaces: [veth.host], args: ['--drain-interval', '1s'] });
  t.after(async () => {
    await agent.stop();
    agent.cleanup();
  });

  const udp = fromPeer(veth, {
    ipv4: { src: '198.18.10.1', dst: '198.18.0.1' },
    udp: { sport: 1234, dport: 53 },
    payload: 60,
  });
  const syn = fromPeer(veth, {
    ipv4: { src: '198.18.10.2', dst: '198.18.0.1' },
    tcp: { sport: 40000, dport: 443, flags: ['SYN'] },
  });
  const ack = fromPeer(veth, {
    ipv4: { src: '198.18.10.2', dst: '198.18.0.1' },
    tcp: { sport: 40000, dport: 443, flags: ['ACK', 'PSH'] },
    payload: 100,
  });
  const fin = fromPeer(veth, {
    ipv4: { src: '198.18.10.2', dst: '198.18.0.1' },
    tcp: { sport: 40000, dport: 443, flags: ['FIN', 'ACK'] },
  });
  const vlan = fromPeer(veth, {
    vlans: [300, 42],
    ipv4: { src: '198.18.10.3', dst: '198.18.0.1' },
    udp: { sport: 7, dport: 7 },
    payload: 8,
  });
  const v6 = fromPeer(veth, {
    ipv6: { src: '2001:db8:10::4', dst: '2001:db8::1', ext: [{ type: 'hop' }, { type: 'dest' }] },
    udp: { sport: 5353, dport: 5353 },
    payload: 30,
  });
  const frag = fromPeer(veth, {
    ipv4: { src: '198.18.10.5', dst: '198.18.0.1', fragOffset: 185, id: 7 },
    protocol: 17,
    payload: 200,
  });
  sendFrames(udp, { dev: veth.peer, ns: veth.ns, count: 1000 });
  sendFrames(syn, { dev: veth.peer, ns: veth.ns, count: 1 });
  sendFrames(ack, { dev: veth.peer, ns: veth.ns, count: 10 });
  sendFrames(fin, { dev: veth.peer, ns: veth.ns, count: 1 });
  sendFrames(vlan, { dev: veth.peer, ns: veth.ns, count: 20 });
  sendFrames(v6, { dev: veth.peer, ns: veth.ns, count: 30 });
  sendFrames(frag, { dev: veth.peer, ns: veth.ns, count: 40 });
  const out = buildFrame({
    eth: { src: veth.hostMac, dst: veth.peerMac },
    ipv4: { src: '198.18.0.1', dst: '198.18.10.6' },
    udp: { sport: 9999, dport: 123 },
    payload: 48,
  });
  sendFrames(out, { dev: veth.host, count: 50, qdisc: true });

  await waitPackets(agent, '198.18.0.1', 50);
  await waitPackets(agent, '198.18.10.1', 1000);
  await waitPackets(agent, '198.18.10.5', 40);
  const rows = await agent.query<
    [string, string, number, number, number, number, number, string, string, number, string]
  >(
    `SELECT toString(src_addr), toString(dst_addr), src_port, dst_port, protocol, vlan, tcp_flags,
            toString(sum(packets)), toString(sum(bytes)), count() > 0, toString(direction)
       FROM flowgate.flows
      WHERE iface = '${veth.host}'
      GROUP BY src_addr, dst_addr, src_port, dst_port, protocol, vlan, tcp_flags, direction
      ORDER BY src_addr`,
  );
  const get = (src: string) => rows.filter((r) => r[0] === src || r[0] === `::ffff:${src}`);
  const one = (src: string) => {
    const found = get(src);
    assert.equal(found.length, 1, `one flow row group from ${src}: ${JSON.stringify(found)}`);
    return found[0]!;
  };

  const u = one('198.18.10.1');
  assert.deepEqual(
    [u[2], u[3], u[4], Number(u[7]), Number(u[8]), u[10]],
    [1234, 53, 17, 1000, 1000 * ipPacketLength(udp)!, 'ingress'],
  );

  // TCP flags OR'ed over the flow's packets; the flow may span drains, so OR across rows.
  const [tcp] = await agent.query<[number, string, string]>(
    `SELECT groupBitOr(tcp_flags), toString(sum(packets)), toString(sum(bytes)) FROM flowgate.flows WHERE src_addr = toIPv6('198.18.10.2')`,
  );
  assert.equal(tcp![0], 0x02 | 0x10 | 0x08 | 0x01);
  assert.equal(Number(tcp![1]), 12);
  assert.equal(Number(tcp![2]), ipPacketLength(syn)! + 10 * ipPacketLength(ack)! + ipPacketLength(fin)!);

  const vl = one('198.18.10.3');
  assert.equal(vl[5], 300, 'outer VLAN');
  assert.equal(Number(vl[7]), 20);
  const [inner] = await agent.query<[number]>(
    `SELECT any(inner_vlan) FROM flowgate.flows WHERE src_addr = toIPv6('198.18.10.3')`,
  );
  assert.equal(inner![0], 42);

  const six = one('2001:db8:10::4');
  assert.deepEqual(
    [six[2], six[3], six[4], Number(six[7]), Number(six[8])],
    [5353, 5353, 17, 30, 30 * ipPacketLength(v6)!],
  );

  const fr = one('198.18.10.5');
  assert.deepEqual([fr[2], fr[3], fr[4], Number(fr[7])], [0, 0, 17, 40], 'non-first fragments: no ports');

  const eg = one('198.18.0.1');
  assert.deepEqual([eg[10], Number(eg[7]), eg[3]], ['egress', 50, 123]);

  const [times] = await agent.query<[number]>(
    `SELECT min(first_seen <= last_seen AND first_seen > now64(6) - INTERVAL 10 MINUTE AND last_seen <= now64(6) + INTERVAL 1 SECOND) FROM flowgate.flows`,
  );
  assert.equal(times![0], 1, 'first_seen <= last_seen, both near now');

  // Interface counter history: per-interval deltas of the kernel's counters add up to what was sent.
  await eventually(async () => {
    const [h] = await agent.query<[string]>(
      `SELECT toString(sum(ip_packets)) FROM flowgate.iface_counters WHERE iface = '${veth.host}' AND direction = 'ingress'`,
    );
    return Number(h?.[0]) === 1000 + 12 + 20 + 30 + 40 ? true : undefined;
  }, 'interface counter history');
});

test('SIGTERM drains and flushes what the kernel still holds; the next start adopts', async (t) => {
  const veth = withVeth(t);
  if (!veth) return;
  // A long interval: only the shutdown drain can deliver these flows.
  const first = await startAgent({ ifaces: [veth.host], args: ['--drain-interval', '1h'] });
  const frame = fromPeer(veth, {
    ipv4: { src: '198.18.11.1', dst: '198.18.0.1' },
    udp: { sport: 1, dport: 2 },
    payload: 10,
  });
  sendFrames(frame, { dev: veth.peer, ns: veth.ns, count: 321 });
  assert.equal(await first.stop('SIGTERM'), 0);
  // Pins stay: frames sent while no agent runs are still counted.
  sendFrames(frame, { dev: veth.peer, ns: veth.ns, count: 79 });
  const second = await first.restart(['--drain-interval', '1s']);
  t.after(async () => {
    await second.stop();
    second.cleanup();
  });
  await waitPackets(second, '198.18.11.1', 400);
  const [status] = [await (await fetch(`${second.api}/api/v1/status`)).json()] as [{ adopted: boolean }];
  assert.equal(status.adopted, true);
});

test('kill -9 during drains loses nothing and doubles nothing', async (t) => {
  const veth = withVeth(t);
  if (!veth) return;
  let agent = await startAgent({ ifaces: [veth.host], args: ['--drain-interval', '100ms'] });
  t.after(async () => {
    await agent.stop();
    agent.cleanup();
  });
  let sent = 0;
  for (let round = 0; round < 5; round++) {
    const frame = fromPeer(veth, {
      ipv4: { src: '198.18.12.1', dst: '198.18.0.1' },
      udp: { sport: 1000 + round, dport: 9 },
      payload: 16,
    });
    sendFrames(frame, { dev: veth.peer, ns: veth.ns, count: 2000 });
    sent += 2000;
    // Kill at a different point of the drain cycle each round.
    await new Promise((r) => setTimeout(r, 37 * round));
    await agent.stop('SIGKILL');
    agent = await agent.restart();
  }
  await waitPackets(agent, '198.18.12.1', sent);
  const perPort = await agent.query<[number, string]>(
    `SELECT src_port, toString(sum(packets)) FROM flowgate.flows WHERE src_addr = toIPv6('198.18.12.1') GROUP BY src_port ORDER BY src_port`,
  );
  assert.deepEqual(
    perPort.map((r) => [r[0], Number(r[1])]),
    [1000, 1001, 1002, 1003, 1004].map((p) => [p, 2000]),
  );
});

test(
  'a burst of one million new flows is stored exactly with the default --max-flows',
  { timeout: 300_000 },
  async (t) => {
    const veth = withVeth(t);
    if (!veth) return;
    const agent = await startAgent({ ifaces: [veth.host] });
    t.after(async () => {
      await agent.stop();
      agent.cleanup();
    });
    // 1,000,000 distinct sources 198.20.0.0 … +999,999: one packet, one flow each.
    const first = 198 * 2 ** 24 + 20 * 2 ** 16;
    sendTrafgen(
      `{ eth(da=${veth.hostMac}, sa=${veth.peerMac}), ipv4(saddr=198.20.0.0, saddr=dinc(${first}, ${first + 999_999}), daddr=198.18.0.1), udp(sp=1000, dp=9) }`,
      { dev: veth.peer, ns: veth.ns, count: 1_000_000 },
    );
    let last: unknown;
    const counted = await eventually(
      async () => {
        const [row] = await agent.query<[string, string, string]>(
          `SELECT toString(count()), toString(uniqExact(src_addr)), toString(sum(packets)) FROM flowgate.flows
          WHERE src_addr BETWEEN toIPv6('198.20.0.0') AND toIPv6('198.35.66.63')`,
        );
        last = { row, status: await (await fetch(`${agent.api}/api/v1/status`)).json() };
        return row && Number(row[2]) === 1_000_000 ? row : undefined;
      },
      'one million packets stored',
      180_000,
    ).catch((err: Error) => {
      const drains = agent
        .logs()
        .split('\n')
        .filter((l) => /drained|warn|error/.test(l) && !/"flows":0,/.test(l));
      throw new Error(`${err.message}\nlast: ${JSON.stringify(last)}\n${drains.slice(-20).join('\n')}`);
    });
    assert.deepEqual(counted.map(Number), [1_000_000, 1_000_000, 1_000_000]);
    const status = (await (await fetch(`${agent.api}/api/v1/status`)).json()) as { flowsEvicted: number };
    assert.equal(status.flowsEvicted, 0, 'no flow was evicted from the kernel maps');
    // All of it ran on pages the agent and its ship process had dropped after starting (docs/operating.md).
    assert.match(agent.logs(), /released node's startup pages/);
    assert.match(agent.logs(), /released the embedded engine's startup pages/);
  },
);

test(
  'a ClickHouse server outage is spooled and recovered with nothing lost or doubled',
  { timeout: 180_000 },
  async (t) => {
    const veth = withVeth(t);
    if (!veth) return;
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-ch-'));
    const ch = await startClickHouseHttp({ dataDir, user: 'flowgate', password: 's3cret' });
    t.after(async () => {
      await ch.stop();
      rmSync(dataDir, { recursive: true, force: true });
    });
    const agent = await startAgent({
      ifaces: [veth.host],
      args: ['--drain-interval', '200ms', '--clickhouse-url', ch.url],
    });
    t.after(async () => {
      await agent.stop();
      agent.cleanup();
    });
    const frame = (sport: number) =>
      fromPeer(veth, { ipv4: { src: '198.18.13.1', dst: '198.18.0.1' }, udp: { sport, dport: 9 }, payload: 20 });
    sendFrames(frame(1), { dev: veth.peer, ns: veth.ns, count: 100 });
    await waitPackets(agent, '198.18.13.1', 100);

    // The server goes away: drains go on into the spool.
    await ch.stop();
    sendFrames(frame(2), { dev: veth.peer, ns: veth.ns, count: 200 });
    await eventually(async () => {
      const s = (await (await fetch(`${agent.api}/api/v1/status`)).json()) as {
        store: { healthy: boolean; spooledBatches: number };
      };
      return !s.store.healthy && s.store.spooledBatches > 0 ? true : undefined;
    }, 'the agent to spool while the server is down');
    // Faults after it comes back: 5xx and a timeout, then it recovers.
    await ch.restart();
    await ch.setFault({ failNext: 3 });
    sendFrames(frame(3), { dev: veth.peer, ns: veth.ns, count: 300 });
    await waitPackets(agent, '198.18.13.1', 600);
    const perPort = await agent.query<[number, string]>(
      `SELECT src_port, toString(sum(packets)) FROM flowgate.flows WHERE src_addr = toIPv6('198.18.13.1') GROUP BY src_port ORDER BY src_port`,
    );
    assert.deepEqual(
      perPort.map((r) => [r[0], Number(r[1])]),
      [
        [1, 100],
        [2, 200],
        [3, 300],
      ],
    );
    assert.match(agent.logs(), /store unavailable/);
  },
);

test('the SQL endpoint is read-only and stops runaway queries', async (t) => {
  const veth = withVeth(t);
  if (!veth) return;
  const agent = await startAgent({ ifaces: [veth.host] });
  t.after(async () => {
    await agent.stop();
    agent.cleanup();
  });
  await eventually(async () => ((await agent.query('SELECT 1')).length === 1 ? true : undefined), 'the store');
  for (const sql of [
    'INSERT INTO flowgate.flows (host) VALUES (1)',
    'ALTER TABLE flowgate.flows DELETE WHERE 1',
    'DROP TABLE flowgate.flows',
    'CREATE TABLE flowgate.x (a UInt8) ENGINE = Memory',
  ]) {
    const res = await fetch(`${agent.api}/api/v1/query`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sql }),
    });
    assert.equal(res.status, 400, sql);
    const body = (await res.json()) as { error: string; message: string };
    assert.ok(body.message.length > 0, `a message for ${sql}`);
  }
  const runaway = await fetch(`${agent.api}/api/v1/query`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      sql: 'SELECT count() FROM system.numbers WHERE sleepEachRow(0.001) = 0 SETTINGS max_block_size = 1',
    }),
  });
  assert.equal(runaway.status, 400);
  const [row] = await agent.query<[string]>('SELECT toString(count()) FROM flowgate.flows');
  assert.ok(row?.[0] !== undefined, 'the table is still there');
});

test('bad flags exit non-zero with one line naming the flag', { timeout: 60_000 }, () => {
  const cases: Array<[string[], RegExp]> = [
    [['run'], /--iface/],
    [['run', '--iface', 'lo', '--xdp-mode', 'fast'], /--xdp-mode/],
    [['run', '--iface', 'lo', '--drain-interval', '5 parsecs'], /--drain-interval/],
    [['run', '--iface', 'lo', '--listen', 'nowhere'], /--listen/],
    [['run', '--iface', 'lo', '--max-flows', '-3'], /--max-flows/],
    [['run', '--iface', 'lo', '--clickhouse-url', 'ftp://x'], /--clickhouse-url/],
    [['run', '--iface', 'lo', '--retention', 'forever'], /--retention/],
    [['run', '--iface', 'lo', '--api-token-file', '/nonexistent/token'], /--api-token-file/],
    [['run', '--iface', 'lo', '--bogus'], /--bogus/],
  ];
  for (const [args, flag] of cases) {
    const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
    assert.notEqual(r.status, 0, `${args.join(' ')} exits non-zero`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `${args.join(' ')}: one line, got ${JSON.stringify(r.stderr)}`);
    assert.match(lines[0]!, flag);
  }
});

test('an absent interface is a clear error naming it', { timeout: 60_000 }, (t) => {
  if (!requirePrivileges(t, ['root', 'bpf'])) return;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-absent-'));
  try {
    const r = spawnSync(
      process.execPath,
      [BIN, 'run', '--iface', 'nosuch0', '--store', path.join(dir, 'store'), '--bpffs', path.join(dir, 'bpffs')],
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /nosuch0/);
    assert.equal(existsSync(path.join(dir, 'bpffs', 'maps')), false, 'nothing was loaded or pinned');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
