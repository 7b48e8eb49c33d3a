/**
 * Fuzzing the datapath parser through BPF_PROG_TEST_RUN: thousands of
 * random well-formed frames and mutations of them (seeded, deterministic),
 * on XDP and on TC egress, with no rules loaded. Every run must pass the
 * frame untouched, and the accounting must be exact: every frame is seen
 * once and lands in exactly one of ip / non_ip / one malformed reason, and
 * the drained flows hold exactly the IP packets.
 *
 * On top of those invariants, each frame is checked against a reference
 * parser written here from the contract (DESIGN.md, the comments of
 * fg_malformed_reason and fg_flow_key in datapath/include/flowgate.h): the
 * class the kernel counted, per frame, and the drained flow table, key by
 * key, must both agree with it.
 *
 * Reproduce a failure with its seed: FLOWGATE_FUZZ_SEED=<seed> (and
 * FLOWGATE_FUZZ_FRAMES=<n> to change the count).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';

import { requirePrivileges } from '../lib/privileges.js';
import { openTestDatapath } from '../lib/datapath.js';
import { mulberry32, mutateFrame, randInt, randomFrame, type Rng } from '../lib/frames.js';
import {
  MALFORMED_REASONS,
  decodeFlowRecords,
  decodeIfaceStats,
  encodeIfaceKey,
  type DirectionName,
  type FlowRecord,
  type IfaceStats,
  type MalformedReason,
} from '../../control/datapath/layout.js';
import type { Datapath } from '../../control/datapath/datapath.js';
import type { Hook } from '../../native/index.js';

const DEFAULT_SEED = 0x5eed_f10;
const SEED = envInt('FLOWGATE_FUZZ_SEED', DEFAULT_SEED) >>> 0;
const FRAMES = envInt('FLOWGATE_FUZZ_FRAMES', 5000);
/** Large enough that no flow is ever evicted: the drained table must be complete. */
const MAX_FLOWS = 65536;
const LOOPBACK = 1;
const ETH_HLEN = 14;
const PASS: Record<Hook, number> = { xdp: 2, tc_egress: -1, tc_ingress: -1 };
const DIRECTION: Record<Hook, DirectionName> = { xdp: 'ingress', tc_egress: 'egress', tc_ingress: 'ingress' };

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${raw}`);
  return n;
}

/** The same frames for every test of this file: half random, half mutated. */
function fuzzFrames(seed: number, count: number): Buffer[] {
  const rng = mulberry32(seed);
  return Array.from({ length: count }, () => {
    const frame = randomFrame(rng);
    return rng() < 0.5 ? frame : mutateFrame(frame, rng);
  });
}

// ---------------------------------------------------------------------------
// Reference parser
// ---------------------------------------------------------------------------

interface ModelKey {
  family: 4 | 6;
  src: Buffer;
  dst: Buffer;
  srcPort: number;
  dstPort: number;
  protocol: number;
  vlan: number;
  innerVlan: number;
}

type Parsed =
  | { kind: 'ip'; key: ModelKey; ipLen: number; hdrLen: number; tcpFlags: number }
  | { kind: 'non_ip' }
  | { kind: 'malformed'; reason: MalformedReason };

type Base = Omit<ModelKey, 'srcPort' | 'dstPort'>;

const VLAN_TPIDS = new Set([0x8100, 0x88a8]);
/** IPv6 extension headers the chain walk steps over. */
const EXT_HEADERS = new Set([0, 43, 44, 51, 60]);
/** Walk bound of the extension chain (more is EXT_DEPTH). */
const MAX_EXT = 8;
/** Octets of each transport header the parser needs before the IP packet ends. */
const L4_NEED: Record<number, number> = { 6: 20, 17: 8, 132: 12, 1: 4, 58: 4 };

const malformed = (reason: MalformedReason): Parsed => ({ kind: 'malformed', reason });

function ip(base: Base, srcPort: number, dstPort: number, ipLen: number, hdrLen: number, tcpFlags = 0): Parsed {
  return { kind: 'ip', key: { ...base, srcPort, dstPort }, ipLen, hdrLen, tcpFlags };
}

function mapped(v4: Buffer): Buffer {
  return Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), v4]);
}

/**
 * What parse.h must make of `frame`: a flow (with its accounting), non-IP,
 * or one malformed reason. `gso`: the frame is a TC GSO super-packet.
 */
function referenceParse(frame: Buffer, gso = false): Parsed {
  const n = frame.length;
  if (n < ETH_HLEN) return malformed('eth_trunc');
  let type = frame.readUInt16BE(12);
  let at = ETH_HLEN;
  const vlans: number[] = [];
  while (VLAN_TPIDS.has(type) && vlans.length < 2) {
    if (at + 4 > n) return malformed('vlan_trunc');
    vlans.push(frame.readUInt16BE(at) & 0x0fff);
    type = frame.readUInt16BE(at + 2);
    at += 4;
  }
  if (VLAN_TPIDS.has(type)) return malformed('vlan_depth');
  const vlan = vlans[0] ?? 0;
  const innerVlan = vlans[1] ?? 0;
  if (type === 0x0800) return ipv4(frame, at, vlan, innerVlan, gso);
  if (type === 0x86dd) return ipv6(frame, at, vlan, innerVlan);
  return { kind: 'non_ip' };
}

function ipv4(frame: Buffer, l3: number, vlan: number, innerVlan: number, gso: boolean): Parsed {
  const avail = frame.length - l3;
  if (avail < 20) return malformed('ipv4_trunc');
  const b0 = frame[l3]!;
  if (b0 >> 4 !== 4 || (b0 & 0xf) < 5) return malformed('ipv4_hdr');
  const hlen = (b0 & 0xf) * 4;
  if (hlen > avail) return malformed('ipv4_trunc');
  let total = frame.readUInt16BE(l3 + 2);
  // IPv4 BIG TCP: total length 0 on a TCP GSO packet means the rest of the skb (iph_totlen()).
  if (total === 0 && gso && frame[l3 + 9] === 6) total = avail;
  if (total < hlen || total > avail) return malformed('ipv4_len');
  const base: Base = {
    family: 4,
    src: mapped(frame.subarray(l3 + 12, l3 + 16)),
    dst: mapped(frame.subarray(l3 + 16, l3 + 20)),
    protocol: frame[l3 + 9]!,
    vlan,
    innerVlan,
  };
  // Fragment offset != 0: no transport header in this packet.
  if (frame.readUInt16BE(l3 + 6) & 0x1fff) return ip(base, 0, 0, total, hlen);
  return l4(frame, l3 + hlen, l3 + total, base, total, hlen);
}

function ipv6(frame: Buffer, l3: number, vlan: number, innerVlan: number): Parsed {
  const avail = frame.length - l3;
  if (avail < 40) return malformed('ipv6_trunc');
  if (frame[l3]! >> 4 !== 6) return malformed('ipv6_hdr');
  const payload = frame.readUInt16BE(l3 + 4);
  // Payload length 0: a jumbogram / BIG TCP packet, which is the rest of the frame.
  const ipLen = payload === 0 ? avail : payload + 40;
  if (ipLen > avail) return malformed('ipv6_len');
  const end = l3 + ipLen;
  const addrs = { family: 6 as const, src: frame.subarray(l3 + 8, l3 + 24), dst: frame.subarray(l3 + 24, l3 + 40) };
  let next = frame[l3 + 6]!;
  let cur = l3 + 40;
  for (let i = 0; i < MAX_EXT && EXT_HEADERS.has(next); i++) {
    let len: number;
    if (next === 44) {
      if (cur + 8 > end) return malformed('ext_trunc');
      next = frame[cur]!;
      if (frame.readUInt16BE(cur + 2) & 0xfff8) {
        // Non-first fragment: the protocol is known, the ports are not here.
        return ip({ ...addrs, protocol: next, vlan, innerVlan }, 0, 0, ipLen, cur + 8 - l3);
      }
      len = 8;
    } else {
      if (cur + 2 > end) return malformed('ext_trunc');
      // AH counts 4-octet units minus 2, the others 8-octet units minus 1.
      len = next === 51 ? (frame[cur + 1]! + 2) * 4 : (frame[cur + 1]! + 1) * 8;
      next = frame[cur]!;
    }
    if (cur + len > end) return malformed('ext_trunc');
    cur += len;
  }
  if (EXT_HEADERS.has(next)) return malformed('ext_depth');
  return l4(frame, cur, end, { ...addrs, protocol: next, vlan, innerVlan }, ipLen, cur - l3);
}

function l4(frame: Buffer, at: number, end: number, base: Base, ipLen: number, l3Len: number): Parsed {
  const need = L4_NEED[base.protocol];
  if (need === undefined) return ip(base, 0, 0, ipLen, l3Len);
  if (at + need > end) return malformed('l4_trunc');
  if (base.protocol === 1 || base.protocol === 58) {
    // ICMP type and code where ports would be; GSO would repeat an 8-octet ICMP header.
    return ip(base, frame[at]!, frame[at + 1]!, ipLen, l3Len + 8);
  }
  const sport = frame.readUInt16BE(at);
  const dport = frame.readUInt16BE(at + 2);
  if (base.protocol !== 6) return ip(base, sport, dport, ipLen, l3Len + need);
  const doff = (frame[at + 12]! >> 4) * 4;
  if (doff < 20 || at + doff > end) return malformed('tcp_doff');
  const flags = frame[at + 13]! | ((frame[at + 12]! & 1) << 8);
  return ip(base, sport, dport, ipLen, l3Len + doff, flags);
}

/** What the kernel's test-run refuses before the program runs (EINVAL). */
function kernelRefuses(hook: Hook, frame: Buffer): boolean {
  if (frame.length < ETH_HLEN) return true;
  if (hook === 'xdp') return false;
  // TC test-run (bpf_prog_test_run_skb) wants the fixed IP header of an untagged IP frame.
  const type = frame.readUInt16BE(12);
  return (type === 0x0800 && frame.length < ETH_HLEN + 20) || (type === 0x86dd && frame.length < ETH_HLEN + 40);
}

// ---------------------------------------------------------------------------
// Running and checking
// ---------------------------------------------------------------------------

function className(p: Parsed): string {
  return p.kind === 'malformed' ? p.reason : p.kind;
}

function keyString(direction: DirectionName, k: ModelKey | FlowRecord): string {
  const src = 'src' in k ? k.src : k.srcAddr;
  const dst = 'dst' in k ? k.dst : k.dstAddr;
  return [
    direction,
    k.family,
    src.toString('hex'),
    dst.toString('hex'),
    k.srcPort,
    k.dstPort,
    k.protocol,
    k.vlan,
    k.innerVlan,
  ].join('|');
}

interface FlowTotals {
  packets: number;
  bytes: number;
  tcpFlags: number;
}

interface Mismatch {
  index: number;
  hook: Hook;
  what: string;
  frame: Buffer;
}

function describe(m: Mismatch): string {
  return `frame #${m.index} on ${m.hook}: ${m.what}\n    ${m.frame.toString('hex')}`;
}

/** The one iface_stats entry of this hook, read directly (cheap enough per frame). */
function ifaceNow(dp: Datapath, hook: Hook): IfaceStats | undefined {
  const key = encodeIfaceKey(LOOPBACK, DIRECTION[hook]);
  const value = dp.native.lookup('iface_stats', key);
  return value ? decodeIfaceStats(Buffer.concat([key, value]))[0] : undefined;
}

/** Which class the counters say one frame went to: the one counter that moved. */
function countedAs(before: IfaceStats | undefined, after: IfaceStats | undefined): string {
  if (!after) return 'nothing counted';
  const moved: string[] = [];
  const d = (a: number, b: number | undefined): number => a - (b ?? 0);
  if (d(after.counters.seen_packets, before?.counters.seen_packets) !== 1) moved.push('seen != +1');
  if (d(after.counters.ip_packets, before?.counters.ip_packets) === 1) moved.push('ip');
  if (d(after.counters.non_ip_packets, before?.counters.non_ip_packets) === 1) moved.push('non_ip');
  for (const r of MALFORMED_REASONS) if (d(after.malformed[r], before?.malformed[r]) === 1) moved.push(r);
  return moved.join('+') || 'no class counter moved';
}

interface RunSummary {
  sent: number;
  refused: number;
  expected: Map<string, FlowTotals>;
  classes: Map<string, number>;
}

/**
 * Send every frame through `hook`, checking each one's verdict, output and
 * class against the reference; returns what the kernel should now hold.
 */
function runAll(
  dp: Datapath,
  hook: Hook,
  frames: Buffer[],
  mismatches: Mismatch[],
  gsoSegs?: (i: number) => number,
): RunSummary {
  const summary: RunSummary = { sent: 0, refused: 0, expected: new Map(), classes: new Map() };
  frames.forEach((frame, index) => {
    const fail = (what: string): void => void mismatches.push({ index, hook, what, frame });
    if (kernelRefuses(hook, frame)) {
      summary.refused++;
      try {
        dp.testRun(hook, frame);
        fail('the kernel was expected to refuse this frame (EINVAL) but ran it');
      } catch (err) {
        if ((err as { code?: string }).code !== 'EINVAL') fail(`refused with ${String(err)}, expected EINVAL`);
      }
      return;
    }
    const segs = gsoSegs?.(index);
    const before = ifaceNow(dp, hook);
    let res;
    try {
      // gso_size != 0 makes the skb a GSO packet (skb_is_gso); gso_segs 0 stands for a plain one.
      res = dp.testRun(hook, frame, segs === undefined ? undefined : { gsoSegs: segs, gsoSize: segs ? 1000 : 0 });
    } catch (err) {
      fail(`test-run failed: ${String(err)}`);
      return;
    }
    summary.sent++;
    if ((res.retval | 0) !== PASS[hook]) fail(`verdict ${res.retval}, expected ${PASS[hook]}`);
    if (!res.frameOut.equals(frame)) fail('the program changed the frame');

    const want = referenceParse(frame, segs !== undefined && segs > 0);
    const wantClass = className(want);
    summary.classes.set(wantClass, (summary.classes.get(wantClass) ?? 0) + 1);
    const got = countedAs(before, ifaceNow(dp, hook));
    if (got !== wantClass) fail(`counted as ${got}, reference says ${wantClass}`);

    if (want.kind === 'ip') {
      const k = keyString(DIRECTION[hook], want.key);
      const t = summary.expected.get(k) ?? { packets: 0, bytes: 0, tcpFlags: 0 };
      const n = segs !== undefined && segs > 1 ? segs : 1;
      t.packets += n;
      t.bytes += want.ipLen + (n - 1) * want.hdrLen;
      t.tcpFlags |= want.tcpFlags;
      summary.expected.set(k, t);
    }
  });
  return summary;
}

function formatMismatches(mismatches: Mismatch[], seed: number): string {
  return (
    `${mismatches.length} frame(s) disagree (seed ${seed}, reproduce with FLOWGATE_FUZZ_SEED=${seed}):\n  ` +
    mismatches.slice(0, 10).map(describe).join('\n  ')
  );
}

async function fuzzHook(t: TestContext, hook: Hook, gso: boolean): Promise<void> {
  if (!requirePrivileges(t, ['root', 'bpf'])) return;
  t.diagnostic(`seed ${SEED} (FLOWGATE_FUZZ_SEED), ${FRAMES} frames (FLOWGATE_FUZZ_FRAMES), hook ${hook}`);
  const frames = fuzzFrames(SEED, FRAMES);
  const segRng: Rng = mulberry32(SEED ^ 0x9e3779b9);
  const segs = frames.map(() => randInt(segRng, 0, 64));
  const env = openTestDatapath({ maxFlows: MAX_FLOWS });
  try {
    const dp = env.dp;
    const mismatches: Mismatch[] = [];
    const run = runAll(dp, hook, frames, mismatches, gso ? (i) => segs[i]! : undefined);
    assert.deepEqual(mismatches, [], formatMismatches(mismatches, SEED));
    t.diagnostic(
      `sent ${run.sent}, refused by the kernel ${run.refused}; classes ${JSON.stringify(Object.fromEntries(run.classes))}`,
    );
    assert.equal(run.sent + run.refused, frames.length);

    // Interface accounting: every frame sent seen once, and in exactly one class.
    const stats = await dp.ifaceStats();
    assert.equal(stats.length, 1, 'one interface entry: loopback in the hook direction');
    const st = stats[0]!;
    assert.equal(st.ifindex, LOOPBACK);
    assert.equal(st.direction, DIRECTION[hook]);
    const c = st.counters;
    const sumMalformed = MALFORMED_REASONS.reduce((n, r) => n + st.malformed[r], 0);
    assert.equal(c.seen_packets, run.sent, 'seen_packets = frames sent');
    assert.equal(
      c.seen_bytes,
      sumLengths(frames, (f) => !kernelRefuses(hook, f)),
      'seen_bytes = octets sent',
    );
    assert.equal(c.ip_packets + c.non_ip_packets + sumMalformed, c.seen_packets, 'ip + non_ip + malformed = seen');
    assert.equal(c.passed_packets, c.seen_packets, 'everything passed');
    assert.equal(c.dropped_packets, 0);
    assert.equal(c.flow_insert_failed, 0);
    assert.equal(c.ip_packets, run.classes.get('ip') ?? 0);
    assert.equal(c.non_ip_packets, run.classes.get('non_ip') ?? 0);
    for (const r of MALFORMED_REASONS) assert.equal(st.malformed[r], run.classes.get(r) ?? 0, `malformed ${r}`);
    assert.equal(c.new_flows, run.expected.size, 'one new flow per distinct key');

    // The drained table: complete (no eviction) and exactly the reference's flows.
    const drain = await dp.drain();
    assert.equal(drain.evicted, 0, 'no flow evicted');
    assert.equal(drain.insertFailed, 0);
    assert.equal(drain.count, drain.newFlows);
    const records = [...decodeFlowRecords(drain.records)];
    const drainedPackets = records.reduce((n, r) => n + r.packets, 0);
    if (!gso) assert.equal(drainedPackets, c.ip_packets, 'flow packets = ip_packets');
    else
      assert.equal(
        drainedPackets,
        sumValues(run.expected, (v) => v.packets),
        'flow packets = GSO segments',
      );

    const actual = new Map<string, FlowTotals>();
    for (const r of records) {
      assert.equal(r.ifindex, LOOPBACK);
      assert.equal(r.droppedPackets, 0);
      assert.equal(r.droppedBytes, 0);
      assert.equal(r.ruleId, 0);
      assert.ok(r.firstSeenNs <= r.lastSeenNs);
      const k = keyString(r.direction, r);
      assert.ok(!actual.has(k), `key ${k} drained twice`);
      actual.set(k, { packets: r.packets, bytes: r.bytes, tcpFlags: r.tcpFlags });
    }
    const missing = [...run.expected.keys()].filter((k) => !actual.has(k));
    const extra = [...actual.keys()].filter((k) => !run.expected.has(k));
    const differ = [...run.expected]
      .filter(([k, v]) => actual.has(k) && JSON.stringify(actual.get(k)) !== JSON.stringify(v))
      .map(([k, v]) => `${k}: kernel ${JSON.stringify(actual.get(k))}, reference ${JSON.stringify(v)}`);
    assert.deepEqual(
      { missing: missing.slice(0, 10), extra: extra.slice(0, 10), differ: differ.slice(0, 10) },
      { missing: [], extra: [], differ: [] },
      `drained flows disagree with the reference (seed ${SEED})`,
    );
  } finally {
    env.destroy();
  }
}

function sumLengths(frames: Buffer[], keep: (f: Buffer) => boolean): number {
  return frames.reduce((n, f) => (keep(f) ? n + f.length : n), 0);
}

function sumValues<K>(m: Map<K, FlowTotals>, pick: (v: FlowTotals) => number): number {
  let n = 0;
  for (const v of m.values()) n += pick(v);
  return n;
}

test(`fuzz xdp: ${FRAMES} random and mutated frames all pass, accounting exact, flows match the reference parser`, async (t) => {
  await fuzzHook(t, 'xdp', false);
});

test(`fuzz tc_egress: ${FRAMES} random and mutated frames all pass, accounting exact, flows match the reference parser`, async (t) => {
  await fuzzHook(t, 'tc_egress', false);
});

test(`fuzz tc_egress with random gso_segs: every flow counts its segments and their repeated headers`, async (t) => {
  await fuzzHook(t, 'tc_egress', true);
});

test('fuzz frames are deterministic for a seed, and varied enough to reach every reachable class', () => {
  const a = fuzzFrames(SEED, 300);
  const b = fuzzFrames(SEED, 300);
  assert.deepEqual(a, b);
  assert.notDeepEqual(fuzzFrames(SEED + 1, 300), a);
  // The default frames must exercise every class test-run can reach (all but eth_trunc).
  if (SEED === DEFAULT_SEED && FRAMES >= 5000) {
    const classes = new Set(
      fuzzFrames(SEED, FRAMES)
        .filter((f) => f.length >= ETH_HLEN)
        .map((f) => className(referenceParse(f))),
    );
    assert.deepEqual(
      [...classes].sort(),
      ['ip', 'non_ip', ...MALFORMED_REASONS.filter((r) => r !== 'eth_trunc')].sort(),
    );
  }
});
