/**
 * Real frames over veth: a peer namespace sends crafted frames with trafgen
 * into the end flowgate is attached to, and the counts are exact. Then the
 * owning process is killed with SIGKILL mid-traffic and a new one adopts the
 * pinned programs and maps: nothing is lost, nothing attached twice.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { requirePrivileges } from '../lib/privileges.js';
import { createVethPair, sendFrames, sh, type VethPair } from '../lib/netns.js';
import { openTestDatapath, removeBpffs, tempBpffsDir, TEST_LIMITS } from '../lib/datapath.js';
import { buildFrame, ipPacketLength } from '../lib/frames.js';
import { loadRuleSpecs } from '../lib/rules.js';
import { Datapath, type Drain } from '../../control/datapath/datapath.js';
import { decodeFlowRecords, type FlowRecord } from '../../control/datapath/layout.js';
import { formatAddress } from '../../control/rules/prefix.js';
import { loadNative } from '../../native/index.js';

function withVeth(t: TestContext): VethPair | undefined {
  if (!requirePrivileges(t, ['root', 'bpf', 'netns'])) return undefined;
  const veth = createVethPair();
  t.after(() => veth.destroy());
  return veth;
}

/** A UDP frame from the peer to the host end, addressed by MAC so the host stack never answers. */
function udpFrame(veth: VethPair, src: string, sport: number, payload = 100): Buffer {
  return buildFrame({
    eth: { src: veth.peerMac, dst: veth.hostMac },
    ipv4: { src, dst: '198.18.0.1' },
    udp: { sport, dport: 9 },
    payload,
  });
}

function flowsFrom(drains: Drain[], src: string): FlowRecord[] {
  return drains.flatMap((d) => [...decodeFlowRecords(d.records)]).filter((f) => formatAddress(f.srcAddr) === src);
}

function sum(flows: FlowRecord[], key: 'packets' | 'bytes' | 'droppedPackets'): number {
  return flows.reduce((n, f) => n + f[key], 0);
}

for (const mode of ['native', 'generic'] as const) {
  test(`XDP ${mode} on veth counts every frame the peer sends, exactly`, async (t) => {
    const veth = withVeth(t);
    if (!veth) return;
    const env = openTestDatapath();
    t.after(() => env.destroy());
    const [xdp] = env.dp.attach(veth.host, { xdpMode: mode, egress: false });
    assert.equal(xdp!.mode, mode);
    const ifindex = loadNative().ifindex(veth.host);

    const frame = udpFrame(veth, '198.18.1.1', 1111);
    sendFrames(frame, { dev: veth.peer, ns: veth.ns, count: 1000 });
    const [flow, ...others] = flowsFrom([await env.dp.drain()], '198.18.1.1');
    assert.equal(others.length, 0);
    assert.equal(flow!.packets, 1000);
    assert.equal(flow!.bytes, 1000 * ipPacketLength(frame)!);
    assert.equal(flow!.ifindex, ifindex);
    assert.equal(flow!.direction, 'ingress');
    assert.equal(flow!.srcPort, 1111);
    assert.equal(flow!.dstPort, 9);
    assert.equal(flow!.protocol, 17);

    const stats = (await env.dp.ifaceStats()).find((s) => s.ifindex === ifindex && s.direction === 'ingress')!;
    assert.equal(stats.counters.ip_packets, 1000);
    assert.equal(stats.counters.new_flows, 1);
  });
}

test('TC egress counts what the host sends; a drop rule stops exactly the named traffic', async (t) => {
  const veth = withVeth(t);
  if (!veth) return;
  const env = openTestDatapath();
  t.after(() => env.destroy());
  env.dp.attach(veth.host, { xdpMode: 'generic', egress: true });
  const ifindex = loadNative().ifindex(veth.host);

  // Egress: frames the host sends out of its end (through the qdisc layer, where clsact runs).
  const out = buildFrame({
    eth: { src: veth.hostMac, dst: veth.peerMac },
    ipv4: { src: '198.18.0.1', dst: '198.18.2.2' },
    tcp: { sport: 5555, dport: 443, flags: ['SYN'] },
  });
  sendFrames(out, { dev: veth.host, count: 300, qdisc: true });
  // Ingress with a rule: 198.18.3.0/24 is dropped, 198.18.4.4 passes.
  await loadRuleSpecs(env.dp, [{ id: 42, action: 'drop', src: '198.18.3.0/24' }]);
  const blocked = udpFrame(veth, '198.18.3.3', 2222);
  const allowed = udpFrame(veth, '198.18.4.4', 3333);
  sendFrames(blocked, { dev: veth.peer, ns: veth.ns, count: 500 });
  sendFrames(allowed, { dev: veth.peer, ns: veth.ns, count: 200 });

  const drains = [await env.dp.drain()];
  const egress = flowsFrom(drains, '198.18.0.1');
  assert.equal(egress.length, 1);
  assert.equal(egress[0]!.direction, 'egress');
  assert.equal(egress[0]!.packets, 300);
  assert.equal(egress[0]!.tcpFlags, 0x02);
  assert.equal(egress[0]!.ifindex, ifindex);

  const [drop] = flowsFrom(drains, '198.18.3.3');
  assert.equal(drop!.packets, 500);
  assert.equal(drop!.droppedPackets, 500);
  assert.equal(drop!.droppedBytes, 500 * ipPacketLength(blocked)!);
  assert.equal(drop!.ruleId, 42);
  assert.deepEqual(env.dp.ruleStats(42), { packets: 500, bytes: 500 * ipPacketLength(blocked)! });
  const [pass] = flowsFrom(drains, '198.18.4.4');
  assert.equal(pass!.packets, 200);
  assert.equal(pass!.droppedPackets, 0);

  // What the peer's stack received: only the allowed frames crossed (rx counter of its end).
  const rx = JSON.parse(sh('ip', ['-n', veth.ns, '-j', '-s', 'link', 'show', veth.peer])) as Array<{
    stats64: { rx: { packets: number } };
  }>;
  assert.equal(rx[0]!.stats64.rx.packets, 300, 'the peer received the 300 egress frames');
  const hostRx = (await env.dp.ifaceStats()).find((s) => s.ifindex === ifindex && s.direction === 'ingress')!;
  assert.equal(hostRx.counters.dropped_packets, 500);
  assert.equal(hostRx.counters.passed_packets, 200);
});

test('kill -9 of the owner: enforcement and counting go on, a new agent adopts without loss', async (t) => {
  const veth = withVeth(t);
  if (!veth) return;
  const bpffs = tempBpffsDir();
  const opened: Datapath[] = [];
  t.after(() => {
    for (const dp of opened) {
      dp.unpinAll();
      dp.close();
    }
    removeBpffs(bpffs);
  });
  const owner = fileURLToPath(new URL('./helpers/owner.ts', import.meta.url));
  const start = async (): Promise<{ adopted: boolean; attached: Array<{ adopted: boolean }> }> => {
    const child = spawn(process.execPath, ['--import', 'tsx', owner, bpffs, veth.host, 'native'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const [line] = (await once(child.stdout, 'data')) as [Buffer];
    const state = JSON.parse(line.toString()) as { adopted: boolean; attached: Array<{ adopted: boolean }> };
    child.kill('SIGKILL');
    await once(child, 'exit');
    return state;
  };

  const first = await start();
  assert.equal(first.adopted, false);
  assert.ok(first.attached.every((a) => !a.adopted));
  // The owner is dead: its pinned program still counts.
  const frame = udpFrame(veth, '198.18.5.5', 4444);
  sendFrames(frame, { dev: veth.peer, ns: veth.ns, count: 700 });

  const second = await start();
  assert.equal(second.adopted, true, 'the second agent adopts the pinned maps');
  assert.ok(
    second.attached.every((a) => a.adopted),
    'and the attachments: nothing attached twice',
  );
  sendFrames(frame, { dev: veth.peer, ns: veth.ns, count: 300 });

  const progs = JSON.parse(sh('ip', ['-j', '-d', 'link', 'show', veth.host])) as Array<{
    xdp?: { prog?: { id: number } };
  }>;
  assert.ok(progs[0]!.xdp?.prog?.id, 'one XDP program on the interface');

  // A third process adopts in-process and drains: a flip left undrained by a killed agent is drained first.
  const dp = Datapath.open({ bpffs, ...TEST_LIMITS });
  opened.push(dp);
  assert.equal(dp.adopted, true);
  const drains = [await dp.drainIdle(), await dp.drain()];
  const flows = flowsFrom(drains, '198.18.5.5');
  assert.equal(sum(flows, 'packets'), 1000);
  assert.equal(sum(flows, 'bytes'), 1000 * ipPacketLength(frame)!);
});

test('a flip the killed agent never drained is collected by the next one', async (t) => {
  const veth = withVeth(t);
  if (!veth) return;
  const bpffs = tempBpffsDir();
  const first = Datapath.open({ bpffs, ...TEST_LIMITS });
  t.after(() => removeBpffs(bpffs));
  first.attach(veth.host, { xdpMode: 'generic', egress: false });
  const frame = udpFrame(veth, '198.18.6.6', 6666);
  sendFrames(frame, { dev: veth.peer, ns: veth.ns, count: 250 });
  // Flip as a drain does, then "die" before collecting the old slot.
  const slot = first.config().flowSlot;
  first.native.writeConfigU32(4, slot ^ 1);
  first.native.synchronize();
  first.close();
  sendFrames(frame, { dev: veth.peer, ns: veth.ns, count: 150 });

  const next = Datapath.open({ bpffs, ...TEST_LIMITS });
  try {
    const idle = flowsFrom([await next.drainIdle()], '198.18.6.6');
    const active = flowsFrom([await next.drain()], '198.18.6.6');
    assert.equal(sum(idle, 'packets'), 250);
    assert.equal(sum(active, 'packets'), 150);
  } finally {
    next.unpinAll();
    next.close();
  }
});

test('TC ingress reads the VLAN tag the kernel keeps outside the frame data', async (t) => {
  const veth = withVeth(t);
  if (!veth) return;
  const env = openTestDatapath();
  t.after(() => env.destroy());
  env.dp.native.attachTc(veth.host, 'ingress');
  const tagged = (vlans: number[], src: string): Buffer =>
    buildFrame({
      eth: { src: veth.peerMac, dst: veth.hostMac },
      vlans,
      ipv4: { src, dst: '198.18.0.1' },
      udp: { sport: 7000, dport: 9 },
      payload: 32,
    });
  // The receive path moves the outer tag into skb->vlan_tci before TC ingress runs.
  sendFrames(tagged([100], '198.18.7.1'), { dev: veth.peer, ns: veth.ns, count: 20 });
  sendFrames(tagged([300, 200], '198.18.7.2'), { dev: veth.peer, ns: veth.ns, count: 30 });
  const drains = [await env.dp.drain()];
  const [single] = flowsFrom(drains, '198.18.7.1');
  assert.deepEqual([single!.packets, single!.vlan, single!.innerVlan, single!.direction], [20, 100, 0, 'ingress']);
  const [double] = flowsFrom(drains, '198.18.7.2');
  assert.deepEqual([double!.packets, double!.vlan, double!.innerVlan], [30, 300, 200]);
});
