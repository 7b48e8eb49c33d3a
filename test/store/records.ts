/**
 * Crafted drain records for the store tests, built with layout.ts's own
 * encoders (so the tests exercise the same offsets the agent reads).
 */
import {
  FLOW_KEY,
  FLOW_RECORD_SIZE,
  encodeFlowKey,
  encodeFlowValue,
  type FlowRecord,
} from '../../control/datapath/layout.js';
import type { FlowRowContext } from '../../control/store/flow-rows.js';

export function v4(addr: string): Buffer {
  const b = Buffer.alloc(16);
  b[10] = 0xff;
  b[11] = 0xff;
  addr.split('.').forEach((o, i) => (b[12 + i] = Number(o)));
  return b;
}

/** Full 8-group IPv6 text (no '::') to bytes. */
export function v6(groups: string): Buffer {
  const b = Buffer.alloc(16);
  groups.split(':').forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

export type Flow = Omit<FlowRecord, 'family'> & { family?: 4 | 6 };

/** Pack flows into a drain buffer (key||value per record). */
export function drain(flows: Flow[]): Buffer {
  const buf = Buffer.alloc(flows.length * FLOW_RECORD_SIZE);
  flows.forEach((f, i) => {
    const at = i * FLOW_RECORD_SIZE;
    encodeFlowKey({ ...f, family: f.family ?? 4 }, buf, at);
    encodeFlowValue(f, buf, at + FLOW_KEY.size);
  });
  return buf;
}

export function flow(over: Partial<Flow>): Flow {
  return {
    srcAddr: v4('10.0.0.1'),
    dstAddr: v4('10.0.0.2'),
    srcPort: 40000,
    dstPort: 80,
    protocol: 6,
    vlan: 0,
    innerVlan: 0,
    ifindex: 2,
    direction: 'ingress',
    packets: 1,
    bytes: 60,
    droppedPackets: 0,
    droppedBytes: 0,
    firstSeenNs: 1_000_000_000n,
    lastSeenNs: 1_000_000_000n,
    ruleId: 0,
    tcpFlags: 0,
    ...over,
  };
}

/** Monotonic ns = epoch ns − offset: `epochNs(mono)` is what the store must show. */
export function context(offsetNs: bigint, names: Record<number, string> = { 2: 'eth0', 3: 'eth1' }): FlowRowContext {
  return {
    host: 'test-host',
    ifaceName: (i) => names[i] ?? `if${i}`,
    monoToEpochNs: (ns) => ns + offsetNs,
  };
}

/** One IPv4 flow with every field set to a distinctive value (both store tests check it column by column). */
export function sampleV4Flow(): Partial<Flow> {
  return {
    srcAddr: v4('10.1.2.3'),
    dstAddr: v4('192.0.2.200'),
    srcPort: 51000,
    dstPort: 443,
    protocol: 6,
    vlan: 100,
    innerVlan: 200,
    ifindex: 2,
    direction: 'ingress',
    packets: 10,
    bytes: 12345,
    droppedPackets: 2,
    droppedBytes: 120,
    firstSeenNs: 5_000_000_000n,
    lastSeenNs: 7_500_000_999n,
    ruleId: 42,
    tcpFlags: 0x1ff,
  };
}
