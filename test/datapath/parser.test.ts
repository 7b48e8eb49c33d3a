/**
 * The datapath parser and flow accounting, by BPF_PROG_TEST_RUN with crafted
 * frames (datapath/parse.h, datapath/flow.h): every header shape the parser
 * walks turns into one exact flow key and counters; every malformed shape is
 * passed, counted under exactly its reason and makes no flow; and the
 * per-interface totals add up. Frames go through XDP and TC egress (and TC
 * ingress for a subset); TC GSO super-packets count as their segments.
 *
 * Expected lengths are written out by hand (not taken from the builder), so
 * a wrong length in the datapath or in test/lib/frames.ts shows up here.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import { requirePrivileges } from '../lib/privileges.js';
import { openTestDatapath } from '../lib/datapath.js';
import { loadRuleSpecs } from '../lib/rules.js';
import {
  ETHERTYPE,
  IPPROTO,
  TCP_FLAGS,
  buildFrame,
  ipPacketLength,
  ipv4Mapped,
  ipv6Bytes,
  truncate,
  type FrameSpec,
  type Ipv6Ext,
} from '../lib/frames.js';
import {
  MALFORMED_REASONS,
  decodeFlowRecords,
  IFACE_COUNTERS,
  type DirectionName,
  type FlowRecord,
  type IfaceCounterName,
  type IfaceStats,
  type MalformedReason,
} from '../../control/datapath/layout.js';
import type { Datapath } from '../../control/datapath/datapath.js';
import type { Hook, TestRunOptions, TestRunResult } from '../../native/index.js';

const XDP_DROP = 1;
const XDP_PASS = 2;
/** TC_ACT_UNSPEC is -1; the addon may report the kernel's u32 retval, so compare as signed 32-bit. */
const TC_ACT_UNSPEC = -1;
const TC_ACT_SHOT = 2;
/** A test-run without a context runs on the loopback device of the current netns. */
const LOOPBACK = 1;
const ETH_HLEN = 14;

const PASS: Record<Hook, number> = { xdp: XDP_PASS, tc_egress: TC_ACT_UNSPEC, tc_ingress: TC_ACT_UNSPEC };
const DROP: Record<Hook, number> = { xdp: XDP_DROP, tc_egress: TC_ACT_SHOT, tc_ingress: TC_ACT_SHOT };
const DIRECTION: Record<Hook, DirectionName> = { xdp: 'ingress', tc_egress: 'egress', tc_ingress: 'ingress' };

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async function withDatapath(t: TestContext, fn: (dp: Datapath) => Promise<void>): Promise<void> {
  if (!requirePrivileges(t, ['root', 'bpf'])) return;
  const env = openTestDatapath();
  try {
    await fn(env.dp);
  } finally {
    env.destroy();
  }
}

function signed(retval: number): number {
  return retval | 0;
}

/** Run one frame and insist on the hook's pass verdict (no rules are loaded). */
function send(dp: Datapath, hook: Hook, frame: Buffer, opts?: TestRunOptions): TestRunResult {
  const res = dp.testRun(hook, frame, opts);
  assert.equal(signed(res.retval), PASS[hook], `${hook} verdict of ${frame.toString('hex')}`);
  return res;
}

/** Drain the active flow map; nothing may have been evicted or refused. */
async function drainFlows(dp: Datapath): Promise<FlowRecord[]> {
  const d = await dp.drain();
  assert.equal(d.insertFailed, 0, 'flow inserts refused');
  assert.equal(d.evicted, 0, 'flows evicted');
  assert.equal(d.newFlows, d.count, 'every inserted flow is drained');
  return [...decodeFlowRecords(d.records)];
}

const COUNTER_NAMES: readonly IfaceCounterName[] = IFACE_COUNTERS;

type Counters = Record<IfaceCounterName, number>;
type Malformed = Record<MalformedReason, number>;

function zeroCounters(): Counters {
  return Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Counters;
}
function zeroMalformed(): Malformed {
  return Object.fromEntries(MALFORMED_REASONS.map((n) => [n, 0])) as Malformed;
}

function ifaceEntry(stats: IfaceStats[], ifindex: number, direction: DirectionName): IfaceStats {
  const matches = stats.filter((s) => s.ifindex === ifindex && s.direction === direction);
  assert.equal(matches.length, 1, `one iface_stats entry for ifindex ${ifindex} ${direction}`);
  return matches[0]!;
}

/** Every counter of the entry, exactly: unnamed ones must be zero. */
function assertIface(
  stats: IfaceStats[],
  ifindex: number,
  direction: DirectionName,
  counters: Partial<Counters>,
  malformed: Partial<Malformed> = {},
): void {
  const entry = ifaceEntry(stats, ifindex, direction);
  assert.deepEqual(entry.counters, { ...zeroCounters(), ...counters }, `counters of ${ifindex} ${direction}`);
  assert.deepEqual(entry.malformed, { ...zeroMalformed(), ...malformed }, `malformed of ${ifindex} ${direction}`);
  const c = entry.counters;
  const sumMalformed = Object.values(entry.malformed).reduce((a, b) => a + b, 0);
  assert.equal(c.seen_packets, c.ip_packets + c.non_ip_packets + sumMalformed, 'seen = ip + non_ip + malformed');
  assert.equal(c.seen_packets, c.passed_packets + c.dropped_packets, 'seen = passed + dropped');
}

interface Key {
  family: 4 | 6;
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  protocol: number;
  vlan?: number;
  innerVlan?: number;
}

function addr(family: 4 | 6, text: string): Buffer {
  return family === 4 ? ipv4Mapped(text) : ipv6Bytes(text);
}

interface Accounting {
  ifindex?: number;
  direction?: DirectionName;
  packets: number;
  bytes: number;
  tcpFlags?: number;
  droppedPackets?: number;
  droppedBytes?: number;
  ruleId?: number;
}

type RecordWithoutTimes = Omit<FlowRecord, 'firstSeenNs' | 'lastSeenNs'>;

function expected(k: Key, a: Accounting): RecordWithoutTimes {
  return {
    family: k.family,
    srcAddr: addr(k.family, k.src),
    dstAddr: addr(k.family, k.dst),
    srcPort: k.srcPort,
    dstPort: k.dstPort,
    protocol: k.protocol,
    vlan: k.vlan ?? 0,
    innerVlan: k.innerVlan ?? 0,
    ifindex: a.ifindex ?? LOOPBACK,
    direction: a.direction ?? 'ingress',
    packets: a.packets,
    bytes: a.bytes,
    droppedPackets: a.droppedPackets ?? 0,
    droppedBytes: a.droppedBytes ?? 0,
    ruleId: a.ruleId ?? 0,
    tcpFlags: a.tcpFlags ?? 0,
  };
}

function withoutTimes(r: FlowRecord): RecordWithoutTimes {
  const { firstSeenNs, lastSeenNs, ...rest } = r;
  assert.ok(firstSeenNs > 0n, 'first_seen is set');
  assert.ok(firstSeenNs <= lastSeenNs, `first_seen ${firstSeenNs} <= last_seen ${lastSeenNs}`);
  return rest;
}

/** Compare drained flows with the expected ones, in any order. */
function assertFlows(actual: FlowRecord[], want: RecordWithoutTimes[]): void {
  const order = (r: RecordWithoutTimes): string =>
    JSON.stringify([r.direction, r.ifindex, r.family, r.srcAddr.toString('hex'), r.dstAddr.toString('hex')]) +
    `/${r.protocol}/${r.srcPort}/${r.dstPort}/${r.vlan}/${r.innerVlan}`;
  const sort = (rs: RecordWithoutTimes[]): RecordWithoutTimes[] =>
    [...rs].sort((a, b) => order(a).localeCompare(order(b)));
  assert.deepEqual(sort(actual.map(withoutTimes)), sort(want));
}

/** The first interface other than loopback, for runs with an explicit ifindex. */
function otherInterface(): { name: string; ifindex: number } | undefined {
  const found = readdirSync('/sys/class/net')
    .map((name) => ({ name, ifindex: Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim()) }))
    .filter((i) => Number.isInteger(i.ifindex) && i.ifindex > LOOPBACK)
    .sort((a, b) => a.ifindex - b.ifindex);
  return found[0];
}

/** after - before, per interface entry; entries nothing touched are left out. */
function diffStats(before: IfaceStats[], after: IfaceStats[]): IfaceStats[] {
  return after
    .map((a) => {
      const b = before.find((x) => x.ifindex === a.ifindex && x.direction === a.direction);
      const counters = zeroCounters();
      const malformed = zeroMalformed();
      for (const n of COUNTER_NAMES) counters[n] = a.counters[n] - (b?.counters[n] ?? 0);
      for (const r of MALFORMED_REASONS) malformed[r] = a.malformed[r] - (b?.malformed[r] ?? 0);
      return { ifindex: a.ifindex, direction: a.direction, counters, malformed };
    })
    .filter((d) => d.counters.seen_packets !== 0);
}

/**
 * For subtests sharing one datapath (loading one costs a verifier pass):
 * discard flows left by earlier subtests, run, then return exactly this
 * run's flows and interface counter deltas.
 */
async function measure(dp: Datapath, run: () => void): Promise<{ flows: FlowRecord[]; stats: IfaceStats[] }> {
  await dp.drain();
  const before = await dp.ifaceStats();
  run();
  const flows = await drainFlows(dp);
  return { flows, stats: diffStats(before, await dp.ifaceStats()) };
}

// ---------------------------------------------------------------------------
// Well-formed frames: one exact flow each
// ---------------------------------------------------------------------------

interface ParserCase {
  name: string;
  spec: FrameSpec;
  key: Key;
  /** IP packet length, by hand: what the flow's bytes must be. */
  ipLen: number;
  tcpFlags?: number;
}

const dest = (n: number): Ipv6Ext[] => Array.from({ length: n }, () => ({ type: 'dest' as const }));

const V4 = { src: '192.0.2.10', dst: '198.51.100.20' };
const V6 = { src: '2001:db8:1::10', dst: '2001:db8:2::20' };

const PARSER_CASES: ParserCase[] = [
  {
    name: 'IPv4 TCP: addresses IPv4-mapped, ports, protocol 6, SYN',
    spec: { ipv4: V4, tcp: { sport: 40001, dport: 443, flags: ['SYN'] }, payload: 10 },
    key: { family: 4, ...V4, srcPort: 40001, dstPort: 443, protocol: IPPROTO.TCP },
    ipLen: 20 + 20 + 10,
    tcpFlags: TCP_FLAGS.SYN,
  },
  {
    name: 'IPv4 TCP with 12 octets of TCP options (data offset 8)',
    spec: {
      ipv4: V4,
      tcp: { sport: 40002, dport: 80, flags: ['SYN', 'ACK'], options: [2, 4, 5, 0xb4, 4, 2, 1, 3, 3, 7, 1, 1] },
    },
    key: { family: 4, ...V4, srcPort: 40002, dstPort: 80, protocol: IPPROTO.TCP },
    ipLen: 20 + 32,
    tcpFlags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
  },
  {
    name: 'IPv4 UDP',
    spec: { ipv4: V4, udp: { sport: 5353, dport: 53 }, payload: 20 },
    key: { family: 4, ...V4, srcPort: 5353, dstPort: 53, protocol: IPPROTO.UDP },
    ipLen: 20 + 8 + 20,
  },
  {
    name: 'IPv4 SCTP',
    spec: { ipv4: V4, sctp: { sport: 36412, dport: 38412 }, payload: 16 },
    key: { family: 4, ...V4, srcPort: 36412, dstPort: 38412, protocol: IPPROTO.SCTP },
    ipLen: 20 + 12 + 16,
  },
  {
    name: 'IPv4 ICMP echo request: type 8 in srcPort, code 0 in dstPort',
    spec: { ipv4: V4, icmp: { type: 8, code: 0, id: 7, seq: 1 }, payload: 56 },
    key: { family: 4, ...V4, srcPort: 8, dstPort: 0, protocol: IPPROTO.ICMP },
    ipLen: 20 + 8 + 56,
  },
  {
    name: 'IPv4 ICMP destination unreachable: type 3 in srcPort, code 4 in dstPort',
    spec: { ipv4: V4, icmp: { type: 3, code: 4 }, payload: 28 },
    key: { family: 4, ...V4, srcPort: 3, dstPort: 4, protocol: IPPROTO.ICMP },
    ipLen: 20 + 8 + 28,
  },
  {
    name: 'IPv4 with 8 octets of options (IHL 7): ports read after the options',
    spec: {
      ipv4: { ...V4, options: [0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00] },
      udp: { sport: 1000, dport: 2000 },
      payload: 4,
    },
    key: { family: 4, ...V4, srcPort: 1000, dstPort: 2000, protocol: IPPROTO.UDP },
    ipLen: 28 + 8 + 4,
  },
  {
    name: 'IPv4 with 40 octets of options (IHL 15, the maximum)',
    spec: {
      ipv4: { ...V4, options: new Array<number>(40).fill(1) },
      tcp: { sport: 1001, dport: 2001, flags: ['ACK'] },
    },
    key: { family: 4, ...V4, srcPort: 1001, dstPort: 2001, protocol: IPPROTO.TCP },
    ipLen: 60 + 20,
    tcpFlags: TCP_FLAGS.ACK,
  },
  {
    name: 'IPv4 first fragment (MF, offset 0) keeps its ports',
    spec: { ipv4: { ...V4, mf: true, id: 0x1234 }, udp: { sport: 3000, dport: 4000 }, payload: 100 },
    key: { family: 4, ...V4, srcPort: 3000, dstPort: 4000, protocol: IPPROTO.UDP },
    ipLen: 20 + 8 + 100,
  },
  {
    name: 'IPv4 non-first fragment: no ports, protocol kept',
    spec: { ipv4: { ...V4, mf: true, fragOffset: 185, id: 0x1234 }, protocol: IPPROTO.UDP, payload: 64 },
    key: { family: 4, ...V4, srcPort: 0, dstPort: 0, protocol: IPPROTO.UDP },
    ipLen: 20 + 64,
  },
  {
    name: 'IPv4 last fragment shorter than a TCP header is a flow, not L4_TRUNC',
    spec: { ipv4: { ...V4, fragOffset: 10 }, protocol: IPPROTO.TCP, payload: 4 },
    key: { family: 4, ...V4, srcPort: 0, dstPort: 0, protocol: IPPROTO.TCP },
    ipLen: 20 + 4,
  },
  {
    name: 'IPv4 GRE: a flow without ports',
    spec: { ipv4: V4, protocol: IPPROTO.GRE, payload: 24 },
    key: { family: 4, ...V4, srcPort: 0, dstPort: 0, protocol: IPPROTO.GRE },
    ipLen: 20 + 24,
  },
  {
    name: '802.1Q tag: vlan is the id without PCP/DEI bits',
    spec: { vlans: [{ vid: 100, pcp: 5, dei: true }], ipv4: V4, udp: { sport: 1, dport: 2 }, payload: 10 },
    key: { family: 4, ...V4, srcPort: 1, dstPort: 2, protocol: IPPROTO.UDP, vlan: 100 },
    ipLen: 20 + 8 + 10,
  },
  {
    name: '802.1ad + 802.1Q: vlan is the outer (S) id, innerVlan the inner (C) id',
    spec: { vlans: [200, 300], ipv4: V4, tcp: { sport: 3, dport: 4, flags: ['RST'] } },
    key: { family: 4, ...V4, srcPort: 3, dstPort: 4, protocol: IPPROTO.TCP, vlan: 200, innerVlan: 300 },
    ipLen: 20 + 20,
    tcpFlags: TCP_FLAGS.RST,
  },
  {
    name: 'two 802.1Q tags (0x8100 outer) around IPv6',
    spec: {
      vlans: [
        { vid: 4094, tpid: ETHERTYPE.VLAN },
        { vid: 1, tpid: ETHERTYPE.VLAN },
      ],
      ipv6: V6,
      udp: { sport: 5, dport: 6 },
    },
    key: { family: 6, ...V6, srcPort: 5, dstPort: 6, protocol: IPPROTO.UDP, vlan: 4094, innerVlan: 1 },
    ipLen: 40 + 8,
  },
  {
    name: 'IPv6 TCP',
    spec: { ipv6: V6, tcp: { sport: 50000, dport: 22, flags: ['PSH', 'ACK'] }, payload: 30 },
    key: { family: 6, ...V6, srcPort: 50000, dstPort: 22, protocol: IPPROTO.TCP },
    ipLen: 40 + 20 + 30,
    tcpFlags: TCP_FLAGS.PSH | TCP_FLAGS.ACK,
  },
  {
    name: 'IPv6 UDP',
    spec: { ipv6: V6, udp: { sport: 546, dport: 547 }, payload: 12 },
    key: { family: 6, ...V6, srcPort: 546, dstPort: 547, protocol: IPPROTO.UDP },
    ipLen: 40 + 8 + 12,
  },
  {
    name: 'IPv6 SCTP',
    spec: { ipv6: V6, sctp: { sport: 9899, dport: 9900 } },
    key: { family: 6, ...V6, srcPort: 9899, dstPort: 9900, protocol: IPPROTO.SCTP },
    ipLen: 40 + 12,
  },
  {
    name: 'ICMPv6 echo request: type 128 in srcPort, code 0 in dstPort',
    spec: { ipv6: V6, icmpv6: { type: 128, code: 0, id: 1, seq: 2 }, payload: 8 },
    key: { family: 6, ...V6, srcPort: 128, dstPort: 0, protocol: IPPROTO.ICMPV6 },
    ipLen: 40 + 8 + 8,
  },
  {
    name: 'ICMPv6 destination unreachable: type 1, code 4',
    spec: { ipv6: V6, icmpv6: { type: 1, code: 4 }, payload: 48 },
    key: { family: 6, ...V6, srcPort: 1, dstPort: 4, protocol: IPPROTO.ICMPV6 },
    ipLen: 40 + 8 + 48,
  },
  {
    name: 'IPv6 hop-by-hop options, then UDP',
    spec: {
      ipv6: { ...V6, ext: [{ type: 'hop', options: [0x05, 0x02, 0x00, 0x00] }] },
      udp: { sport: 7, dport: 8 },
      payload: 4,
    },
    key: { family: 6, ...V6, srcPort: 7, dstPort: 8, protocol: IPPROTO.UDP },
    ipLen: 40 + 8 + 8 + 4,
  },
  {
    name: 'IPv6 routing header, then TCP',
    spec: { ipv6: { ...V6, ext: [{ type: 'routing' }] }, tcp: { sport: 9, dport: 10, flags: ['FIN'] } },
    key: { family: 6, ...V6, srcPort: 9, dstPort: 10, protocol: IPPROTO.TCP },
    ipLen: 40 + 8 + 20,
    tcpFlags: TCP_FLAGS.FIN,
  },
  {
    name: 'IPv6 destination options of 24 octets (Hdr Ext Len 2), then UDP',
    spec: {
      ipv6: { ...V6, ext: [{ type: 'dest', options: [0x1e, 18, ...new Array<number>(18).fill(0xab)] }] },
      udp: { sport: 11, dport: 12 },
    },
    key: { family: 6, ...V6, srcPort: 11, dstPort: 12, protocol: IPPROTO.UDP },
    ipLen: 40 + 24 + 8,
  },
  {
    name: 'IPv6 AH (length in 4-octet units, 24 octets), then TCP',
    spec: { ipv6: { ...V6, ext: [{ type: 'ah' }] }, tcp: { sport: 13, dport: 14, flags: ['ACK'] } },
    key: { family: 6, ...V6, srcPort: 13, dstPort: 14, protocol: IPPROTO.TCP },
    ipLen: 40 + 24 + 20,
    tcpFlags: TCP_FLAGS.ACK,
  },
  {
    name: 'IPv6 AH with a 16-octet ICV (32 octets, Payload Len 6), then UDP',
    spec: {
      ipv6: { ...V6, ext: [{ type: 'ah', icv: new Array<number>(16).fill(0x5a) }] },
      udp: { sport: 15, dport: 16 },
    },
    key: { family: 6, ...V6, srcPort: 15, dstPort: 16, protocol: IPPROTO.UDP },
    ipLen: 40 + 32 + 8,
  },
  {
    name: 'IPv6 fragment header, first fragment: ports present',
    spec: {
      ipv6: { ...V6, ext: [{ type: 'frag', offset: 0, more: true, id: 7 }] },
      udp: { sport: 7000, dport: 8000 },
      payload: 16,
    },
    key: { family: 6, ...V6, srcPort: 7000, dstPort: 8000, protocol: IPPROTO.UDP },
    ipLen: 40 + 8 + 8 + 16,
  },
  {
    name: 'IPv6 non-first fragment: no ports, protocol from the fragment header',
    spec: {
      ipv6: { ...V6, ext: [{ type: 'frag', offset: 100, more: false, id: 7 }] },
      protocol: IPPROTO.UDP,
      payload: 16,
    },
    key: { family: 6, ...V6, srcPort: 0, dstPort: 0, protocol: IPPROTO.UDP },
    ipLen: 40 + 8 + 16,
  },
  {
    name: 'IPv6 hop-by-hop then non-first fragment of TCP shorter than a TCP header',
    spec: {
      ipv6: { ...V6, ext: [{ type: 'hop' }, { type: 'frag', offset: 5, more: true }] },
      protocol: IPPROTO.TCP,
      payload: 8,
    },
    key: { family: 6, ...V6, srcPort: 0, dstPort: 0, protocol: IPPROTO.TCP },
    ipLen: 40 + 8 + 8 + 8,
  },
  {
    name: 'IPv6 chain hop, dest, routing, fragment (first), AH, dest, then TCP',
    spec: {
      ipv6: {
        ...V6,
        ext: [
          { type: 'hop' },
          { type: 'dest' },
          { type: 'routing' },
          { type: 'frag', more: true },
          { type: 'ah' },
          { type: 'dest' },
        ],
      },
      tcp: { sport: 17, dport: 18, flags: ['SYN'] },
      payload: 5,
    },
    key: { family: 6, ...V6, srcPort: 17, dstPort: 18, protocol: IPPROTO.TCP },
    ipLen: 40 + 8 + 8 + 8 + 8 + 24 + 8 + 20 + 5,
    tcpFlags: TCP_FLAGS.SYN,
  },
  {
    name: 'IPv6 chain of eight extension headers (the walk limit), then UDP',
    spec: { ipv6: { ...V6, ext: [{ type: 'hop' }, ...dest(7)] }, udp: { sport: 19, dport: 20 } },
    key: { family: 6, ...V6, srcPort: 19, dstPort: 20, protocol: IPPROTO.UDP },
    ipLen: 40 + 8 * 8 + 8,
  },
  {
    name: 'IPv6 ESP: a flow without ports',
    spec: { ipv6: V6, protocol: IPPROTO.ESP, payload: 40 },
    key: { family: 6, ...V6, srcPort: 0, dstPort: 0, protocol: IPPROTO.ESP },
    ipLen: 40 + 40,
  },
  {
    name: 'IPv6 hop-by-hop then ESP: protocol is the last header of the chain',
    spec: { ipv6: { ...V6, ext: [{ type: 'hop' }] }, protocol: IPPROTO.ESP, payload: 16 },
    key: { family: 6, ...V6, srcPort: 0, dstPort: 0, protocol: IPPROTO.ESP },
    ipLen: 40 + 8 + 16,
  },
  {
    name: 'IPv6 no next header (59)',
    spec: { ipv6: V6, protocol: IPPROTO.NONE },
    key: { family: 6, ...V6, srcPort: 0, dstPort: 0, protocol: IPPROTO.NONE },
    ipLen: 40,
  },
  {
    name: 'IPv6 payload length 0 (jumbogram): bytes run to the end of the frame',
    spec: { ipv6: { ...V6, payloadLength: 0 }, udp: { sport: 21, dport: 22 }, payload: 10 },
    key: { family: 6, ...V6, srcPort: 21, dstPort: 22, protocol: IPPROTO.UDP },
    ipLen: 40 + 8 + 10,
  },
];

const PARSER_HOOKS: Hook[] = ['xdp', 'tc_egress'];

test('parser: every well-formed shape → exact key and counters on xdp and tc_egress', async (t) => {
  await withDatapath(t, async (dp) => {
    for (const c of PARSER_CASES) {
      await t.test(c.name, async () => {
        const frame = buildFrame(c.spec);
        assert.equal(ipPacketLength(frame), c.ipLen, 'frame builder and hand-computed IP length agree');
        const { flows, stats } = await measure(dp, () => {
          for (const hook of PARSER_HOOKS) send(dp, hook, frame);
        });
        assertFlows(
          flows,
          PARSER_HOOKS.map((hook) =>
            expected(c.key, { direction: DIRECTION[hook], packets: 1, bytes: c.ipLen, tcpFlags: c.tcpFlags }),
          ),
        );
        assert.equal(stats.length, PARSER_HOOKS.length);
        for (const hook of PARSER_HOOKS) {
          assertIface(stats, LOOPBACK, DIRECTION[hook], {
            seen_packets: 1,
            seen_bytes: frame.length,
            passed_packets: 1,
            ip_packets: 1,
            new_flows: 1,
          });
        }
      });
    }
  });
});

const TC_INGRESS_SUBSET = [
  'IPv4 TCP: addresses IPv4-mapped, ports, protocol 6, SYN',
  'IPv4 non-first fragment: no ports, protocol kept',
  '802.1ad + 802.1Q: vlan is the outer (S) id, innerVlan the inner (C) id',
  'IPv6 chain hop, dest, routing, fragment (first), AH, dest, then TCP',
  'IPv6 non-first fragment: no ports, protocol from the fragment header',
  'ICMPv6 echo request: type 128 in srcPort, code 0 in dstPort',
];

test('parser: tc_ingress yields the same keys as XDP for a subset of shapes', async (t) => {
  await withDatapath(t, async (dp) => {
    const cases = TC_INGRESS_SUBSET.map((name) => {
      const c = PARSER_CASES.find((p) => p.name === name);
      assert.ok(c, `case ${name}`);
      return c;
    });
    let bytes = 0;
    for (const c of cases) {
      const frame = buildFrame(c.spec);
      send(dp, 'tc_ingress', frame);
      bytes += frame.length;
    }
    assertFlows(
      await drainFlows(dp),
      cases.map((c) => expected(c.key, { direction: 'ingress', packets: 1, bytes: c.ipLen, tcpFlags: c.tcpFlags })),
    );
    const stats = await dp.ifaceStats();
    assert.equal(stats.length, 1);
    const n = cases.length;
    assertIface(stats, LOOPBACK, 'ingress', {
      seen_packets: n,
      seen_bytes: bytes,
      passed_packets: n,
      ip_packets: n,
      new_flows: n,
    });
  });
});

test('family tells an IPv4 packet from an IPv6 packet with the same IPv4-mapped addresses', async (t) => {
  await withDatapath(t, async (dp) => {
    const v4 = buildFrame({ ipv4: { src: '10.0.0.9', dst: '10.0.0.10' }, udp: { sport: 999, dport: 53 } });
    const v6 = buildFrame({
      ipv6: { src: '::ffff:10.0.0.9', dst: '::ffff:10.0.0.10' },
      udp: { sport: 999, dport: 53 },
    });
    send(dp, 'xdp', v4);
    send(dp, 'xdp', v6);
    const flows = await drainFlows(dp);
    assertFlows(flows, [
      expected(
        { family: 4, src: '10.0.0.9', dst: '10.0.0.10', srcPort: 999, dstPort: 53, protocol: 17 },
        { packets: 1, bytes: 28 },
      ),
      expected(
        { family: 6, src: '::ffff:10.0.0.9', dst: '::ffff:10.0.0.10', srcPort: 999, dstPort: 53, protocol: 17 },
        { packets: 1, bytes: 48 },
      ),
    ]);
    // Both keys hold the very same 16 address octets: only the family field keeps them apart.
    assert.deepEqual(flows[0]!.srcAddr, flows[1]!.srcAddr);
    assert.deepEqual(flows[0]!.srcAddr, Buffer.from('00000000000000000000ffff0a000009', 'hex'));
  });
});

test('bytes count the IP packet length, not the Ethernet frame with its padding', async (t) => {
  await withDatapath(t, async (dp) => {
    const frames = [
      buildFrame({ ipv4: V4, udp: { sport: 1, dport: 9 }, padTo: 60 }),
      buildFrame({ ipv4: V4, tcp: { sport: 2, dport: 9, flags: ['ACK'] }, padTo: 60 }),
      buildFrame({ ipv6: V6, udp: { sport: 3, dport: 9 }, padTo: 80 }),
      buildFrame({ vlans: [5], ipv4: V4, icmp: { type: 0 }, padTo: 64 }),
    ];
    assert.deepEqual(
      frames.map((f) => f.length),
      [60, 60, 80, 64],
    );
    for (const f of frames) send(dp, 'xdp', f);
    assertFlows(await drainFlows(dp), [
      expected({ family: 4, ...V4, srcPort: 1, dstPort: 9, protocol: 17 }, { packets: 1, bytes: 28 }),
      expected(
        { family: 4, ...V4, srcPort: 2, dstPort: 9, protocol: 6 },
        { packets: 1, bytes: 40, tcpFlags: TCP_FLAGS.ACK },
      ),
      expected({ family: 6, ...V6, srcPort: 3, dstPort: 9, protocol: 17 }, { packets: 1, bytes: 48 }),
      expected({ family: 4, ...V4, srcPort: 0, dstPort: 0, protocol: 1, vlan: 5 }, { packets: 1, bytes: 28 }),
    ]);
    // The interface counts frame bytes as the hook saw them, padding included.
    assertIface(await dp.ifaceStats(), LOOPBACK, 'ingress', {
      seen_packets: 4,
      seen_bytes: 60 + 60 + 80 + 64,
      passed_packets: 4,
      ip_packets: 4,
      new_flows: 4,
    });
  });
});

// ---------------------------------------------------------------------------
// Accounting over several packets
// ---------------------------------------------------------------------------

test('TCP flags are OR-ed over the packets of a flow: SYN, ACK, FIN|ACK → 0x13', async (t) => {
  await withDatapath(t, async (dp) => {
    const seg = (flags: FrameSpec['tcp'], payload: number): Buffer =>
      buildFrame({ ipv4: V4, tcp: { sport: 40100, dport: 80, ...flags }, payload });
    send(dp, 'xdp', seg({ flags: ['SYN'] }, 0));
    send(dp, 'xdp', seg({ flags: ['ACK'] }, 100));
    send(dp, 'xdp', seg({ flags: ['FIN', 'ACK'] }, 0));
    // The reply direction is a flow of its own.
    send(
      dp,
      'xdp',
      buildFrame({ ipv4: { src: V4.dst, dst: V4.src }, tcp: { sport: 80, dport: 40100, flags: ['SYN', 'ACK'] } }),
    );
    assertFlows(await drainFlows(dp), [
      expected(
        { family: 4, ...V4, srcPort: 40100, dstPort: 80, protocol: 6 },
        { packets: 3, bytes: 40 + 140 + 40, tcpFlags: 0x13 },
      ),
      expected(
        { family: 4, src: V4.dst, dst: V4.src, srcPort: 80, dstPort: 40100, protocol: 6 },
        { packets: 1, bytes: 40, tcpFlags: 0x12 },
      ),
    ]);
  });
});

test('TCP flags include NS (bit 8) and CWR/ECE: NS|ACK then CWR|ECE then SYN → 0x1d2', async (t) => {
  await withDatapath(t, async (dp) => {
    const seg = (flags: number): Buffer => buildFrame({ ipv6: V6, tcp: { sport: 1234, dport: 5678, flags } });
    send(dp, 'tc_egress', seg(TCP_FLAGS.NS | TCP_FLAGS.ACK));
    send(dp, 'tc_egress', seg(TCP_FLAGS.CWR | TCP_FLAGS.ECE));
    send(dp, 'tc_egress', seg(TCP_FLAGS.SYN));
    assertFlows(await drainFlows(dp), [
      expected(
        { family: 6, ...V6, srcPort: 1234, dstPort: 5678, protocol: 6 },
        { direction: 'egress', packets: 3, bytes: 3 * 60, tcpFlags: 0x1d2 },
      ),
    ]);
  });
});

test('a flow counts exactly the packets sent (repeat and separate runs), first_seen <= last_seen on the monotonic clock', async (t) => {
  await withDatapath(t, async (dp) => {
    const frame = buildFrame({ ipv4: V4, udp: { sport: 6000, dport: 7000 }, payload: 72 });
    const before = process.hrtime.bigint();
    send(dp, 'xdp', frame, { repeat: 7 });
    await sleep(25);
    for (let i = 0; i < 3; i++) send(dp, 'xdp', frame);
    send(dp, 'xdp', frame, { repeat: 90 });
    const after = process.hrtime.bigint();

    const flows = await drainFlows(dp);
    assertFlows(flows, [
      expected({ family: 4, ...V4, srcPort: 6000, dstPort: 7000, protocol: 17 }, { packets: 100, bytes: 100 * 100 }),
    ]);
    const f = flows[0]!;
    // bpf_ktime_get_ns() and process.hrtime() both read CLOCK_MONOTONIC.
    assert.ok(before <= f.firstSeenNs, `first_seen ${f.firstSeenNs} after the first run started (${before})`);
    assert.ok(
      f.firstSeenNs + 10_000_000n <= f.lastSeenNs,
      'last_seen moved on with the runs 25 ms later (less one tick of a coarse clock)',
    );
    assert.ok(f.lastSeenNs <= after, `last_seen ${f.lastSeenNs} before the last run ended (${after})`);
    assertIface(await dp.ifaceStats(), LOOPBACK, 'ingress', {
      seen_packets: 100,
      seen_bytes: 100 * frame.length,
      passed_packets: 100,
      ip_packets: 100,
      new_flows: 1,
    });
  });
});

test('a drain takes the flows away: the next packets start new flows in the other slot', async (t) => {
  await withDatapath(t, async (dp) => {
    const frame = buildFrame({ ipv4: V4, tcp: { sport: 1, dport: 2, flags: ['SYN'] } });
    const key: Key = { family: 4, ...V4, srcPort: 1, dstPort: 2, protocol: 6 };
    send(dp, 'xdp', frame, { repeat: 2 });
    assertFlows(await drainFlows(dp), [expected(key, { packets: 2, bytes: 80, tcpFlags: TCP_FLAGS.SYN })]);
    send(dp, 'xdp', buildFrame({ ipv4: V4, tcp: { sport: 1, dport: 2, flags: ['ACK'] } }), { repeat: 3 });
    assertFlows(await drainFlows(dp), [expected(key, { packets: 3, bytes: 120, tcpFlags: TCP_FLAGS.ACK })]);
    assertFlows(await drainFlows(dp), []);
  });
});

// ---------------------------------------------------------------------------
// Hooks, directions, interfaces
// ---------------------------------------------------------------------------

test('direction and ifindex: xdp and tc_ingress are ingress, tc_egress egress, loopback without a context', async (t) => {
  await withDatapath(t, async (dp) => {
    const frame = buildFrame({ ipv4: V4, udp: { sport: 10, dport: 20 } });
    const key: Key = { family: 4, ...V4, srcPort: 10, dstPort: 20, protocol: 17 };
    send(dp, 'xdp', frame);
    send(dp, 'tc_ingress', frame);
    send(dp, 'tc_egress', frame, { repeat: 3 });
    send(dp, 'xdp', frame, { ifindex: LOOPBACK });
    assertFlows(await drainFlows(dp), [
      expected(key, { direction: 'ingress', ifindex: LOOPBACK, packets: 3, bytes: 3 * 28 }),
      expected(key, { direction: 'egress', ifindex: LOOPBACK, packets: 3, bytes: 3 * 28 }),
    ]);
    const stats = await dp.ifaceStats();
    assert.equal(stats.length, 2);
    const c = (n: number): Partial<Counters> => ({
      seen_packets: n,
      seen_bytes: n * frame.length,
      passed_packets: n,
      ip_packets: n,
      new_flows: 1,
    });
    assertIface(stats, LOOPBACK, 'ingress', c(3));
    assertIface(stats, LOOPBACK, 'egress', c(3));
  });
});

test('ifindex from the test-run context lands in the key and the interface counters', async (t) => {
  const other = otherInterface();
  if (!other) {
    t.skip('no interface besides loopback in this network namespace');
    return;
  }
  t.diagnostic(`using ${other.name} (ifindex ${other.ifindex})`);
  await withDatapath(t, async (dp) => {
    const frame = buildFrame({ ipv6: V6, tcp: { sport: 11, dport: 22, flags: ['SYN'] } });
    const key: Key = { family: 6, ...V6, srcPort: 11, dstPort: 22, protocol: 6 };
    send(dp, 'xdp', frame, { ifindex: other.ifindex });
    send(dp, 'tc_egress', frame, { ifindex: other.ifindex, repeat: 2 });
    send(dp, 'tc_ingress', frame, { ifindex: other.ifindex });
    send(dp, 'xdp', frame);
    const f = (direction: DirectionName, ifindex: number, packets: number): RecordWithoutTimes =>
      expected(key, { direction, ifindex, packets, bytes: packets * 60, tcpFlags: TCP_FLAGS.SYN });
    assertFlows(await drainFlows(dp), [
      f('ingress', other.ifindex, 2),
      f('egress', other.ifindex, 2),
      f('ingress', LOOPBACK, 1),
    ]);
    const stats = await dp.ifaceStats();
    assert.equal(stats.length, 3);
    const c = (n: number): Partial<Counters> => ({
      seen_packets: n,
      seen_bytes: n * frame.length,
      passed_packets: n,
      ip_packets: n,
      new_flows: 1,
    });
    assertIface(stats, other.ifindex, 'ingress', c(2));
    assertIface(stats, other.ifindex, 'egress', c(2));
    assertIface(stats, LOOPBACK, 'ingress', c(1));
  });
});

// ---------------------------------------------------------------------------
// TC GSO super-packets
// ---------------------------------------------------------------------------

interface GsoCase {
  name: string;
  spec: FrameSpec;
  segs: number;
  key: Key;
  ipLen: number;
  /** L3 + L4 header octets, repeated in every segment after the first. */
  hdrLen: number;
  tcpFlags?: number;
}

const GSO_CASES: GsoCase[] = [
  {
    name: 'IPv4 TCP with options, 4 segments',
    spec: {
      ipv4: V4,
      tcp: { sport: 1, dport: 2, flags: ['ACK'], options: new Array<number>(12).fill(1) },
      payload: 2000,
    },
    segs: 4,
    key: { family: 4, ...V4, srcPort: 1, dstPort: 2, protocol: 6 },
    ipLen: 20 + 32 + 2000,
    hdrLen: 20 + 32,
    tcpFlags: TCP_FLAGS.ACK,
  },
  {
    name: 'IPv4 with IP options and TCP, 4 segments',
    spec: { ipv4: { ...V4, options: [1, 1, 1, 1] }, tcp: { sport: 3, dport: 4, flags: ['PSH', 'ACK'] }, payload: 1200 },
    segs: 4,
    key: { family: 4, ...V4, srcPort: 3, dstPort: 4, protocol: 6 },
    ipLen: 24 + 20 + 1200,
    hdrLen: 24 + 20,
    tcpFlags: TCP_FLAGS.PSH | TCP_FLAGS.ACK,
  },
  {
    name: 'IPv6 hop-by-hop and TCP, 3 segments',
    spec: { ipv6: { ...V6, ext: [{ type: 'hop' }] }, tcp: { sport: 5, dport: 6, flags: ['ACK'] }, payload: 1500 },
    segs: 3,
    key: { family: 6, ...V6, srcPort: 5, dstPort: 6, protocol: 6 },
    ipLen: 40 + 8 + 20 + 1500,
    hdrLen: 40 + 8 + 20,
    tcpFlags: TCP_FLAGS.ACK,
  },
  {
    name: 'IPv4 UDP (USO), 2 segments',
    spec: { ipv4: V4, udp: { sport: 7, dport: 8 }, payload: 1000 },
    segs: 2,
    key: { family: 4, ...V4, srcPort: 7, dstPort: 8, protocol: 17 },
    ipLen: 20 + 8 + 1000,
    hdrLen: 20 + 8,
  },
];

test('TC GSO: a super-packet counts as its segments, bytes = ipLen + (segs - 1) * (L3 + L4 headers)', async (t) => {
  await withDatapath(t, async (dp) => {
    for (const c of GSO_CASES) {
      await t.test(c.name, async () => {
        const frame = buildFrame(c.spec);
        assert.equal(ipPacketLength(frame), c.ipLen);
        const { flows, stats } = await measure(dp, () => {
          send(dp, 'tc_egress', frame, { gsoSegs: c.segs, gsoSize: 1000 });
        });
        assertFlows(flows, [
          expected(c.key, {
            direction: 'egress',
            packets: c.segs,
            bytes: c.ipLen + (c.segs - 1) * c.hdrLen,
            tcpFlags: c.tcpFlags,
          }),
        ]);
        // The interface counts the frame the hook saw: one.
        assert.equal(stats.length, 1);
        assertIface(stats, LOOPBACK, 'egress', {
          seen_packets: 1,
          seen_bytes: frame.length,
          passed_packets: 1,
          ip_packets: 1,
          new_flows: 1,
        });
      });
    }
  });
});

test('TC GSO: gso_segs 0 or 1 is one packet', async (t) => {
  await withDatapath(t, async (dp) => {
    const frame = buildFrame({ ipv4: V4, tcp: { sport: 9, dport: 10, flags: ['ACK'] }, payload: 500 });
    send(dp, 'tc_egress', frame, { gsoSegs: 1, gsoSize: 500 });
    send(dp, 'tc_egress', frame, { gsoSegs: 0 });
    send(dp, 'tc_egress', frame);
    assertFlows(await drainFlows(dp), [
      expected(
        { family: 4, ...V4, srcPort: 9, dstPort: 10, protocol: 6 },
        { direction: 'egress', packets: 3, bytes: 3 * 540, tcpFlags: TCP_FLAGS.ACK },
      ),
    ]);
  });
});

test('TC GSO: BIG TCP super-packets (IPv4 total length 0, IPv6 payload length 0) run to the end of the skb', async (t) => {
  // Beyond 64 KiB the kernel writes IPv4 tot_len 0 on a TCP GSO skb (iph_set_totlen)
  // and IPv6 payload_len 0: the IP packet is the rest of the skb (iph_totlen, ipv6_payload_len).
  await withDatapath(t, async (dp) => {
    const gso = { gsoSegs: 4, gsoSize: 1000 };
    const v4 = buildFrame({
      ipv4: { ...V4, totalLength: 0 },
      tcp: { sport: 11, dport: 12, flags: ['ACK'] },
      payload: 1000,
    });
    const v6 = buildFrame({
      ipv6: { ...V6, payloadLength: 0 },
      tcp: { sport: 13, dport: 14, flags: ['ACK'] },
      payload: 1000,
    });
    // Only TCP has BIG TCP: a UDP packet with total length 0 stays malformed even under GSO.
    const udp = buildFrame({ ipv4: { ...V4, totalLength: 0 }, udp: { sport: 15, dport: 16 }, payload: 1000 });
    send(dp, 'tc_egress', v4, gso);
    send(dp, 'tc_egress', v6, gso);
    send(dp, 'tc_egress', udp, gso);
    assertFlows(await drainFlows(dp), [
      expected(
        { family: 4, ...V4, srcPort: 11, dstPort: 12, protocol: 6 },
        { direction: 'egress', packets: 4, bytes: 20 + 20 + 1000 + 3 * (20 + 20), tcpFlags: TCP_FLAGS.ACK },
      ),
      expected(
        { family: 6, ...V6, srcPort: 13, dstPort: 14, protocol: 6 },
        { direction: 'egress', packets: 4, bytes: 40 + 20 + 1000 + 3 * (40 + 20), tcpFlags: TCP_FLAGS.ACK },
      ),
    ]);
    assertIface(
      await dp.ifaceStats(),
      LOOPBACK,
      'egress',
      {
        seen_packets: 3,
        seen_bytes: v4.length + v6.length + udp.length,
        passed_packets: 3,
        ip_packets: 2,
        new_flows: 2,
      },
      { ipv4_len: 1 },
    );
  });
});

// ---------------------------------------------------------------------------
// Malformed and non-IP frames: passed, counted once under their reason, no flow
// ---------------------------------------------------------------------------

interface MalformedCase {
  name: string;
  reason: MalformedReason;
  frame: () => Buffer;
  /**
   * The kernel's TC test-run refuses (EINVAL) an untagged IPv4/IPv6 frame
   * shorter than the fixed IP header, before the program runs: such a case
   * only reaches the parser through XDP.
   */
  tcRefused?: boolean;
}

const ipv4Udp = (): Buffer => buildFrame({ ipv4: V4, udp: { sport: 1, dport: 2 }, payload: 8 });
const ipv6Udp = (): Buffer => buildFrame({ ipv6: V6, udp: { sport: 1, dport: 2 }, payload: 8 });

const MALFORMED_CASES: MalformedCase[] = [
  {
    name: 'frame ends inside the only VLAN tag',
    reason: 'vlan_trunc',
    frame: () => truncate(buildFrame({ vlans: [100], ipv4: V4, udp: {} }), 16),
  },
  {
    name: 'frame ends right after a VLAN TPID',
    reason: 'vlan_trunc',
    frame: () => truncate(buildFrame({ vlans: [100], ipv4: V4, udp: {} }), 14),
  },
  {
    name: 'frame ends inside the inner VLAN tag',
    reason: 'vlan_trunc',
    frame: () => truncate(buildFrame({ vlans: [100, 200], ipv4: V4, udp: {} }), 20),
  },
  { name: 'three VLAN tags', reason: 'vlan_depth', frame: () => buildFrame({ vlans: [1, 2, 3], ipv4: V4, udp: {} }) },
  {
    name: 'three 802.1Q tags around ARP',
    reason: 'vlan_depth',
    frame: () =>
      buildFrame({
        vlans: [1, 2, 3].map((vid) => ({ vid, tpid: ETHERTYPE.VLAN })),
        eth: { type: ETHERTYPE.ARP },
        payload: 28,
      }),
  },
  {
    name: 'IPv4 frame ends inside the fixed header',
    reason: 'ipv4_trunc',
    frame: () => truncate(ipv4Udp(), ETH_HLEN + 19),
    tcRefused: true,
  },
  {
    name: 'IPv4 EtherType with no header at all',
    reason: 'ipv4_trunc',
    frame: () => truncate(ipv4Udp(), ETH_HLEN),
    tcRefused: true,
  },
  {
    name: 'IPv4 IHL 15 with only 36 octets of packet',
    reason: 'ipv4_trunc',
    frame: () => buildFrame({ ipv4: { ...V4, ihl: 15 }, udp: {}, payload: 8 }),
  },
  {
    name: 'IPv4 behind a VLAN tag, cut inside the header',
    reason: 'ipv4_trunc',
    frame: () => truncate(buildFrame({ vlans: [7], ipv4: V4, udp: {} }), ETH_HLEN + 4 + 10),
  },
  { name: 'IPv4 version 5', reason: 'ipv4_hdr', frame: () => buildFrame({ ipv4: { ...V4, version: 5 }, udp: {} }) },
  {
    name: 'IPv4 EtherType carrying version 6',
    reason: 'ipv4_hdr',
    frame: () => buildFrame({ ipv4: { ...V4, version: 6 }, udp: {} }),
  },
  { name: 'IPv4 IHL 4', reason: 'ipv4_hdr', frame: () => buildFrame({ ipv4: { ...V4, ihl: 4 }, udp: {} }) },
  { name: 'IPv4 IHL 0', reason: 'ipv4_hdr', frame: () => buildFrame({ ipv4: { ...V4, ihl: 0 }, udp: {} }) },
  {
    name: 'IPv4 total length 19, below the header',
    reason: 'ipv4_len',
    frame: () => buildFrame({ ipv4: { ...V4, totalLength: 19 }, udp: {} }),
  },
  {
    name: 'IPv4 total length 22, below a 24-octet header with options',
    reason: 'ipv4_len',
    frame: () => buildFrame({ ipv4: { ...V4, options: [1, 1, 1, 1], totalLength: 22 }, udp: {} }),
  },
  {
    name: 'IPv4 total length 0 on a packet that is not GSO',
    reason: 'ipv4_len',
    frame: () => buildFrame({ ipv4: { ...V4, totalLength: 0 }, tcp: {}, payload: 8 }),
  },
  {
    name: 'IPv4 total length one octet beyond the frame',
    reason: 'ipv4_len',
    frame: () => buildFrame({ ipv4: { ...V4, totalLength: 20 + 8 + 8 + 1 }, udp: {}, payload: 8 }),
  },
  {
    name: 'IPv4 total length beyond the frame even counting its padding',
    reason: 'ipv4_len',
    frame: () => buildFrame({ ipv4: { ...V4, totalLength: 60 - ETH_HLEN + 1 }, udp: {}, padTo: 60 }),
  },
  {
    name: 'IPv6 frame ends inside the fixed header',
    reason: 'ipv6_trunc',
    frame: () => truncate(ipv6Udp(), ETH_HLEN + 39),
    tcRefused: true,
  },
  {
    name: 'IPv6 EtherType with 8 octets of header',
    reason: 'ipv6_trunc',
    frame: () => truncate(ipv6Udp(), ETH_HLEN + 8),
    tcRefused: true,
  },
  { name: 'IPv6 version 4', reason: 'ipv6_hdr', frame: () => buildFrame({ ipv6: { ...V6, version: 4 }, udp: {} }) },
  { name: 'IPv6 version 0', reason: 'ipv6_hdr', frame: () => buildFrame({ ipv6: { ...V6, version: 0 }, udp: {} }) },
  {
    name: 'IPv6 payload length one octet beyond the frame',
    reason: 'ipv6_len',
    frame: () => buildFrame({ ipv6: { ...V6, payloadLength: 8 + 8 + 1 }, udp: {}, payload: 8 }),
  },
  {
    name: 'IPv6 payload length 65535',
    reason: 'ipv6_len',
    frame: () => buildFrame({ ipv6: { ...V6, payloadLength: 0xffff }, udp: {}, payload: 8 }),
  },
  {
    name: 'hop-by-hop claiming 80 octets in a 16-octet payload',
    reason: 'ext_trunc',
    frame: () => buildFrame({ ipv6: { ...V6, ext: [{ type: 'hop', hdrExtLen: 9 }] }, udp: {} }),
  },
  {
    name: 'AH claiming 88 octets',
    reason: 'ext_trunc',
    frame: () => buildFrame({ ipv6: { ...V6, ext: [{ type: 'ah', payloadLen: 20 }] }, udp: {} }),
  },
  {
    name: 'fragment header cut short by the payload length',
    reason: 'ext_trunc',
    frame: () => buildFrame({ ipv6: { ...V6, nextHeader: IPPROTO.FRAGMENT }, payload: 4 }),
  },
  {
    name: 'extension header reaching into the Ethernet padding',
    reason: 'ext_trunc',
    frame: () =>
      buildFrame({ ipv6: { ...V6, ext: [{ type: 'hop', hdrExtLen: 1 }] }, protocol: IPPROTO.NONE, padTo: 100 }),
  },
  {
    name: 'nine extension headers',
    reason: 'ext_depth',
    frame: () => buildFrame({ ipv6: { ...V6, ext: [{ type: 'hop' }, ...dest(8)] }, udp: {} }),
  },
  {
    name: 'ten mixed extension headers',
    reason: 'ext_depth',
    frame: () =>
      buildFrame({
        ipv6: {
          ...V6,
          ext: [
            { type: 'hop' },
            { type: 'dest' },
            { type: 'routing' },
            { type: 'ah' },
            { type: 'frag' },
            ...dest(3),
            { type: 'routing' },
            { type: 'ah' },
          ],
        },
        tcp: {},
      }),
  },
  {
    name: 'IPv4 total length 30 with a TCP header (frame holds all of it)',
    reason: 'l4_trunc',
    frame: () => buildFrame({ ipv4: { ...V4, totalLength: 30 }, tcp: {} }),
  },
  {
    name: 'IPv4 UDP header cut by total length 27',
    reason: 'l4_trunc',
    frame: () => buildFrame({ ipv4: { ...V4, totalLength: 27 }, udp: {} }),
  },
  {
    name: 'IPv4 ICMP with 3 octets',
    reason: 'l4_trunc',
    frame: () => buildFrame({ ipv4: { ...V4, totalLength: 23 }, icmp: {} }),
  },
  {
    name: 'IPv6 SCTP with 11 octets',
    reason: 'l4_trunc',
    frame: () => buildFrame({ ipv6: { ...V6, payloadLength: 11 }, sctp: {} }),
  },
  {
    name: 'ICMPv6 with 3 octets',
    reason: 'l4_trunc',
    frame: () => buildFrame({ ipv6: { ...V6, payloadLength: 3 }, icmpv6: {} }),
  },
  {
    name: 'TCP cut after an extension header',
    reason: 'l4_trunc',
    frame: () => buildFrame({ ipv6: { ...V6, ext: [{ type: 'dest' }], payloadLength: 8 + 10 }, tcp: {} }),
  },
  {
    name: 'UDP header in the Ethernet padding only',
    reason: 'l4_trunc',
    frame: () => buildFrame({ ipv4: { ...V4, totalLength: 20 }, udp: {}, padTo: 60 }),
  },
  { name: 'TCP data offset 4', reason: 'tcp_doff', frame: () => buildFrame({ ipv4: V4, tcp: { dataOffset: 4 } }) },
  { name: 'TCP data offset 0', reason: 'tcp_doff', frame: () => buildFrame({ ipv6: V6, tcp: { dataOffset: 0 } }) },
  {
    name: 'TCP data offset 15 in a 20-octet segment',
    reason: 'tcp_doff',
    frame: () => buildFrame({ ipv4: V4, tcp: { dataOffset: 15 } }),
  },
  {
    name: 'TCP data offset reaching into the Ethernet padding',
    reason: 'tcp_doff',
    frame: () => buildFrame({ ipv4: V4, tcp: { dataOffset: 6 }, padTo: 100 }),
  },
];

test('malformed: each shape is passed, counted once under its reason, and makes no flow', async (t) => {
  await withDatapath(t, async (dp) => {
    for (const c of MALFORMED_CASES) {
      const hooks: Hook[] = c.tcRefused ? ['xdp'] : ['xdp', 'tc_egress'];
      await t.test(`${c.reason}: ${c.name} (${hooks.join(', ')})`, async () => {
        const frame = c.frame();
        const { flows, stats } = await measure(dp, () => {
          for (const hook of hooks) send(dp, hook, frame);
          if (c.tcRefused) assert.throws(() => dp.testRun('tc_egress', frame), { code: 'EINVAL' });
        });
        assertFlows(flows, []);
        assert.equal(stats.length, hooks.length);
        for (const hook of hooks) {
          assertIface(
            stats,
            LOOPBACK,
            DIRECTION[hook],
            { seen_packets: 1, seen_bytes: frame.length, passed_packets: 1 },
            { [c.reason]: 1 },
          );
        }
      });
    }
  });
});

test('every malformed reason but eth_trunc has a crafted case', () => {
  const covered = new Set(MALFORMED_CASES.map((c) => c.reason));
  assert.deepEqual(
    MALFORMED_REASONS.filter((r) => !covered.has(r)),
    ['eth_trunc'],
  );
});

test('malformed eth_trunc: the kernel refuses test-run frames shorter than Ethernet, and nothing is counted', async (t) => {
  // FG_MAL_ETH_TRUNC cannot be reached through BPF_PROG_TEST_RUN: bpf_test_init()
  // rejects data shorter than ETH_HLEN before the program runs.
  await withDatapath(t, async (dp) => {
    const short = truncate(ipv4Udp(), ETH_HLEN - 1);
    for (const hook of ['xdp', 'tc_egress', 'tc_ingress'] as const) {
      assert.throws(() => dp.testRun(hook, short), { code: 'EINVAL' }, hook);
      assert.throws(() => dp.testRun(hook, Buffer.alloc(0)), { code: 'EINVAL' }, hook);
    }
    assertFlows(await drainFlows(dp), []);
    assert.deepEqual(await dp.ifaceStats(), []);
  });
});

test('non-IP frames (ARP, VLAN-tagged ARP, LLDP) are passed and counted as non_ip, no flow', async (t) => {
  await withDatapath(t, async (dp) => {
    const frames = [
      buildFrame({ eth: { type: ETHERTYPE.ARP, dst: 'ff:ff:ff:ff:ff:ff' }, payload: 28 }),
      buildFrame({ vlans: [42], eth: { type: ETHERTYPE.ARP }, payload: 28 }),
      buildFrame({ vlans: [42, 43], eth: { type: ETHERTYPE.LLDP }, payload: 40 }),
      buildFrame({ eth: { type: ETHERTYPE.LLDP }, payload: 0 }),
    ];
    for (const f of frames) {
      send(dp, 'xdp', f);
      send(dp, 'tc_egress', f);
    }
    assertFlows(await drainFlows(dp), []);
    const bytes = frames.reduce((n, f) => n + f.length, 0);
    const stats = await dp.ifaceStats();
    assert.equal(stats.length, 2);
    for (const direction of ['ingress', 'egress'] as const) {
      assertIface(stats, LOOPBACK, direction, {
        seen_packets: 4,
        seen_bytes: bytes,
        passed_packets: 4,
        non_ip_packets: 4,
      });
    }
  });
});

test('interface totals: seen = ip + non_ip + every malformed reason, over a mixed batch', async (t) => {
  await withDatapath(t, async (dp) => {
    const good = [
      buildFrame({ ipv4: V4, tcp: { sport: 1, dport: 2, flags: ['SYN'] } }),
      buildFrame({ ipv4: V4, tcp: { sport: 1, dport: 2, flags: ['ACK'] }, payload: 10 }),
      buildFrame({ ipv6: V6, udp: { sport: 3, dport: 4 }, payload: 2 }),
      buildFrame({ vlans: [9], ipv6: V6, icmpv6: { type: 135 } }),
    ];
    const nonIp = [buildFrame({ eth: { type: ETHERTYPE.ARP }, payload: 28 })];
    // One frame of each reachable reason (the first case of each).
    const bad = MALFORMED_REASONS.flatMap((r) => MALFORMED_CASES.find((c) => c.reason === r) ?? []);
    assert.equal(bad.length, MALFORMED_REASONS.length - 1);
    const all = [...good, ...nonIp, ...bad.map((c) => c.frame())];
    for (const f of all) send(dp, 'xdp', f);

    assertFlows(await drainFlows(dp), [
      expected(
        { family: 4, ...V4, srcPort: 1, dstPort: 2, protocol: 6 },
        { packets: 2, bytes: 40 + 50, tcpFlags: 0x12 },
      ),
      expected({ family: 6, ...V6, srcPort: 3, dstPort: 4, protocol: 17 }, { packets: 1, bytes: 50 }),
      expected({ family: 6, ...V6, srcPort: 135, dstPort: 0, protocol: 58, vlan: 9 }, { packets: 1, bytes: 48 }),
    ]);
    const malformed = Object.fromEntries(bad.map((c) => [c.reason, 1])) as Partial<Malformed>;
    assertIface(
      await dp.ifaceStats(),
      LOOPBACK,
      'ingress',
      {
        seen_packets: all.length,
        seen_bytes: all.reduce((n, f) => n + f.length, 0),
        passed_packets: all.length,
        ip_packets: 4,
        non_ip_packets: 1,
        new_flows: 3,
      },
      malformed,
    );
  });
});

// ---------------------------------------------------------------------------
// Return codes with a drop rule
// ---------------------------------------------------------------------------

test('verdicts: XDP_DROP (1) / TC_ACT_SHOT (2) for a dropped flow, XDP_PASS (2) / TC_ACT_UNSPEC (-1) otherwise', async (t) => {
  await withDatapath(t, async (dp) => {
    await loadRuleSpecs(dp, [{ id: 5, action: 'drop', protocol: 'udp', dstPorts: '9999' }]);
    const blocked = buildFrame({ ipv4: V4, udp: { sport: 1, dport: 9999 }, payload: 12 });
    const allowed = buildFrame({ ipv4: V4, udp: { sport: 1, dport: 53 }, payload: 12 });
    const retvals: Record<Hook, number[]> = { xdp: [], tc_egress: [], tc_ingress: [] };
    for (const hook of ['xdp', 'tc_egress', 'tc_ingress'] as const) {
      retvals[hook].push(signed(dp.testRun(hook, blocked).retval), signed(dp.testRun(hook, allowed).retval));
    }
    assert.deepEqual(retvals, {
      xdp: [DROP.xdp, PASS.xdp],
      tc_egress: [DROP.tc_egress, PASS.tc_egress],
      tc_ingress: [DROP.tc_ingress, PASS.tc_ingress],
    });

    const blockedKey: Key = { family: 4, ...V4, srcPort: 1, dstPort: 9999, protocol: 17 };
    const allowedKey: Key = { family: 4, ...V4, srcPort: 1, dstPort: 53, protocol: 17 };
    // xdp and tc_ingress share the ingress keys on loopback.
    assertFlows(await drainFlows(dp), [
      expected(blockedKey, {
        direction: 'ingress',
        packets: 2,
        bytes: 80,
        droppedPackets: 2,
        droppedBytes: 80,
        ruleId: 5,
      }),
      expected(blockedKey, {
        direction: 'egress',
        packets: 1,
        bytes: 40,
        droppedPackets: 1,
        droppedBytes: 40,
        ruleId: 5,
      }),
      expected(allowedKey, { direction: 'ingress', packets: 2, bytes: 80 }),
      expected(allowedKey, { direction: 'egress', packets: 1, bytes: 40 }),
    ]);
    const stats = await dp.ifaceStats();
    const per = (n: number): Partial<Counters> => ({
      seen_packets: 2 * n,
      seen_bytes: 2 * n * blocked.length,
      passed_packets: n,
      dropped_packets: n,
      dropped_bytes: n * blocked.length,
      ip_packets: 2 * n,
      new_flows: 2,
    });
    assertIface(stats, LOOPBACK, 'ingress', per(2));
    assertIface(stats, LOOPBACK, 'egress', per(1));
    assert.deepEqual(dp.ruleStats(5), { packets: 3, bytes: 120 });
  });
});
