/**
 * The one TypeScript view of datapath/include/flowgate.h: offsets, sizes and
 * enums, plus the decoders and encoders built on them. Nothing else in
 * control/ knows a struct layout. test/unit/layout.test.ts pins every offset
 * here against the native addon's offsetof() of the C header.
 */

export const LAYOUT_VERSION = 2;

export const Direction = { ingress: 1, egress: 2 } as const;
export type DirectionName = keyof typeof Direction;

export const Family = { ipv4: 4, ipv6: 6 } as const;
export type FamilyNumber = (typeof Family)[keyof typeof Family];

export const Action = { none: 0, drop: 1, allow: 2 } as const;
export type ActionName = 'drop' | 'allow';

export const RuleFlag = { proto: 1, sport: 2, dport: 4, src: 8, dst: 16, iface: 32 } as const;

/** enum fg_malformed_reason, in order: the index is the reason's number. */
export const MALFORMED_REASONS = [
  'eth_trunc',
  'vlan_trunc',
  'vlan_depth',
  'ipv4_trunc',
  'ipv4_hdr',
  'ipv4_len',
  'ipv6_trunc',
  'ipv6_hdr',
  'ipv6_len',
  'ext_trunc',
  'ext_depth',
  'l4_trunc',
  'tcp_doff',
] as const;
export type MalformedReason = (typeof MALFORMED_REASONS)[number];

export const MAX_COMPLEX_RULES = 4096;
export const LPM_DATA_BYTES = 17;

export interface Field {
  offset: number;
  size: number;
}
export interface Struct {
  size: number;
  fields: Record<string, Field>;
}

/** Build a Struct from [name, size] pairs laid out back to back (the header has no implicit padding). */
function struct(size: number, members: Array<[string, number]>): Struct {
  const fields: Record<string, Field> = {};
  let offset = 0;
  for (const [name, fieldSize] of members) {
    fields[name] = { offset, size: fieldSize };
    offset += fieldSize;
  }
  if (offset !== size) throw new Error(`layout: members add up to ${offset}, struct is ${size}`);
  return { size, fields };
}

export const FLOW_KEY = struct(48, [
  ['src_addr', 16],
  ['dst_addr', 16],
  ['src_port', 2],
  ['dst_port', 2],
  ['ifindex', 4],
  ['vlan', 2],
  ['inner_vlan', 2],
  ['protocol', 1],
  ['family', 1],
  ['direction', 1],
  ['pad', 1],
]);

export const FLOW_VALUE = struct(72, [
  ['packets', 8],
  ['bytes', 8],
  ['dropped_packets', 8],
  ['dropped_bytes', 8],
  ['first_seen_ns', 8],
  ['last_seen_ns', 8],
  ['rule_id', 4],
  ['tcp_flags', 4],
  ['rule_gen', 4],
  ['cached_rule', 4],
  ['verdict', 1],
  ['pad', 7],
]);

export const CONFIG = struct(60, [
  ['layout_version', 4],
  ['flow_slot', 4],
  ['rule_gen', 4],
  ['complex_count', 8],
  ['src_prefixes', 8],
  ['dst_prefixes', 8],
  ['max_flows', 4],
  ['max_rules', 4],
  ['max_prefixes', 4],
  ['slot_epoch', 8],
  ['instance', 4],
]);

export const LPM_KEY = struct(24, [
  ['prefixlen', 4],
  ['data', LPM_DATA_BYTES],
  ['pad', 3],
]);

export const LPM_VERDICT = struct(12, [
  ['rule_id', 4],
  ['priority', 4],
  ['action', 1],
  ['pad', 3],
]);

export const RULE = struct(88, [
  ['src_net', 16],
  ['src_mask', 16],
  ['dst_net', 16],
  ['dst_mask', 16],
  ['id', 4],
  ['priority', 4],
  ['ifindex', 4],
  ['sport_lo', 2],
  ['sport_hi', 2],
  ['dport_lo', 2],
  ['dport_hi', 2],
  ['protocol', 1],
  ['action', 1],
  ['flags', 1],
  ['family', 1],
]);

export const RULE_STATS = struct(16, [
  ['packets', 8],
  ['bytes', 8],
]);

export const IFACE_KEY = struct(8, [
  ['ifindex', 4],
  ['direction', 4],
]);

/** The u64 counters of struct fg_iface_stats before malformed[], in order. */
export const IFACE_COUNTERS = [
  'seen_packets',
  'seen_bytes',
  'passed_packets',
  'dropped_packets',
  'dropped_bytes',
  'ip_packets',
  'non_ip_packets',
  'new_flows',
  'flow_insert_failed',
] as const;

export const IFACE_STATS = struct(8 * (IFACE_COUNTERS.length + MALFORMED_REASONS.length), [
  ...IFACE_COUNTERS.map((name): [string, number] => [name, 8]),
  ['malformed', 8 * MALFORMED_REASONS.length],
]);

export const SLOT_STATS = struct(16, [
  ['new_flows', 8],
  ['insert_failed', 8],
]);

/** Every struct the pin test compares with the C header, by its C name. */
export const STRUCTS: Record<string, Struct> = {
  fg_flow_key: FLOW_KEY,
  fg_flow_value: FLOW_VALUE,
  fg_config: CONFIG,
  fg_lpm_key: LPM_KEY,
  fg_lpm_verdict: LPM_VERDICT,
  fg_rule: RULE,
  fg_rule_stats: RULE_STATS,
  fg_iface_key: IFACE_KEY,
  fg_iface_stats: IFACE_STATS,
  fg_slot_stats: SLOT_STATS,
};

export const FLOW_RECORD_SIZE = FLOW_KEY.size + FLOW_VALUE.size;

function off(s: Struct, name: string): number {
  const f = s.fields[name];
  if (!f) throw new Error(`layout: no field ${name}`);
  return f.offset;
}

/* Offsets used on hot paths, resolved once. */
const K = Object.fromEntries(Object.keys(FLOW_KEY.fields).map((n) => [n, off(FLOW_KEY, n)])) as Record<string, number>;
const V = Object.fromEntries(
  Object.keys(FLOW_VALUE.fields).map((n) => [n, FLOW_KEY.size + off(FLOW_VALUE, n)]),
) as Record<string, number>;

/**
 * Byte offsets of the fields of one packed key||value drain record, for bulk
 * readers that must not build an object per record (store/flow-rows.ts).
 * Multi-byte fields are little-endian; addresses are 16 bytes, IPv4-mapped.
 */
export const FLOW_RECORD_OFFSETS = Object.freeze({
  srcAddr: K.src_addr!,
  dstAddr: K.dst_addr!,
  srcPort: K.src_port!,
  dstPort: K.dst_port!,
  ifindex: K.ifindex!,
  vlan: K.vlan!,
  innerVlan: K.inner_vlan!,
  protocol: K.protocol!,
  family: K.family!,
  direction: K.direction!,
  packets: V.packets!,
  bytes: V.bytes!,
  droppedPackets: V.dropped_packets!,
  droppedBytes: V.dropped_bytes!,
  firstSeenNs: V.first_seen_ns!,
  lastSeenNs: V.last_seen_ns!,
  ruleId: V.rule_id!,
  tcpFlags: V.tcp_flags!,
});

/** Byte offset of a config field (for NativeDatapath.writeConfigU32). */
export function configOffset(name: keyof typeof CONFIG.fields | string, index = 0): number {
  return off(CONFIG, name) + 4 * index;
}

export interface DatapathConfig {
  layoutVersion: number;
  flowSlot: number;
  ruleGen: number;
  complexCount: [number, number];
  srcPrefixes: [number, number];
  dstPrefixes: [number, number];
  maxFlows: number;
  maxRules: number;
  maxPrefixes: number;
  slotEpoch: [number, number];
  instance: number;
}

export function decodeConfig(buf: Buffer): DatapathConfig {
  const u32 = (name: string, i = 0): number => buf.readUInt32LE(configOffset(name, i));
  return {
    layoutVersion: u32('layout_version'),
    flowSlot: u32('flow_slot'),
    ruleGen: u32('rule_gen'),
    complexCount: [u32('complex_count', 0), u32('complex_count', 1)],
    srcPrefixes: [u32('src_prefixes', 0), u32('src_prefixes', 1)],
    dstPrefixes: [u32('dst_prefixes', 0), u32('dst_prefixes', 1)],
    maxFlows: u32('max_flows'),
    maxRules: u32('max_rules'),
    maxPrefixes: u32('max_prefixes'),
    slotEpoch: [u32('slot_epoch', 0), u32('slot_epoch', 1)],
    instance: u32('instance'),
  };
}

/** One flow as drained from the kernel. Counters of one drain interval fit a double exactly. */
export interface FlowRecord {
  family: FamilyNumber;
  /** 16 bytes; IPv4 as IPv4-mapped IPv6, as the flows table stores it. */
  srcAddr: Buffer;
  dstAddr: Buffer;
  srcPort: number;
  dstPort: number;
  protocol: number;
  vlan: number;
  innerVlan: number;
  ifindex: number;
  direction: DirectionName;
  packets: number;
  bytes: number;
  droppedPackets: number;
  droppedBytes: number;
  /** CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns). */
  firstSeenNs: bigint;
  lastSeenNs: bigint;
  ruleId: number;
  tcpFlags: number;
}

function readU64(buf: Buffer, at: number): number {
  return Number(buf.readBigUInt64LE(at));
}

/** Decode the i-th packed key||value record of a drain buffer. */
export function decodeFlowRecord(buf: Buffer, i: number): FlowRecord {
  const b = i * FLOW_RECORD_SIZE;
  const family = buf[b + K.family!] as FamilyNumber;
  return {
    family,
    srcAddr: Buffer.from(buf.subarray(b + K.src_addr!, b + K.src_addr! + 16)),
    dstAddr: Buffer.from(buf.subarray(b + K.dst_addr!, b + K.dst_addr! + 16)),
    srcPort: buf.readUInt16LE(b + K.src_port!),
    dstPort: buf.readUInt16LE(b + K.dst_port!),
    protocol: buf[b + K.protocol!]!,
    vlan: buf.readUInt16LE(b + K.vlan!),
    innerVlan: buf.readUInt16LE(b + K.inner_vlan!),
    ifindex: buf.readUInt32LE(b + K.ifindex!),
    direction: buf[b + K.direction!] === Direction.egress ? 'egress' : 'ingress',
    packets: readU64(buf, b + V.packets!),
    bytes: readU64(buf, b + V.bytes!),
    droppedPackets: readU64(buf, b + V.dropped_packets!),
    droppedBytes: readU64(buf, b + V.dropped_bytes!),
    firstSeenNs: buf.readBigUInt64LE(b + V.first_seen_ns!),
    lastSeenNs: buf.readBigUInt64LE(b + V.last_seen_ns!),
    ruleId: buf.readUInt32LE(b + V.rule_id!),
    tcpFlags: buf.readUInt32LE(b + V.tcp_flags!),
  };
}

export function flowRecordCount(buf: Buffer): number {
  if (buf.length % FLOW_RECORD_SIZE !== 0) {
    throw new Error(`drain buffer of ${buf.length} bytes is not a whole number of ${FLOW_RECORD_SIZE}-byte records`);
  }
  return buf.length / FLOW_RECORD_SIZE;
}

export function* decodeFlowRecords(buf: Buffer): Generator<FlowRecord> {
  const n = flowRecordCount(buf);
  for (let i = 0; i < n; i++) yield decodeFlowRecord(buf, i);
}

/** Encode a flow key (tests and benchmarks seed maps with these). */
export function encodeFlowKey(
  k: Omit<FlowRecord, keyof FlowCounters>,
  out = Buffer.alloc(FLOW_KEY.size),
  at = 0,
): Buffer {
  k.srcAddr.copy(out, at + K.src_addr!);
  k.dstAddr.copy(out, at + K.dst_addr!);
  out.writeUInt16LE(k.srcPort, at + K.src_port!);
  out.writeUInt16LE(k.dstPort, at + K.dst_port!);
  out.writeUInt32LE(k.ifindex, at + K.ifindex!);
  out.writeUInt16LE(k.vlan, at + K.vlan!);
  out.writeUInt16LE(k.innerVlan, at + K.inner_vlan!);
  out[at + K.protocol!] = k.protocol;
  out[at + K.family!] = k.family;
  out[at + K.direction!] = Direction[k.direction];
  return out;
}

type FlowCounters = Pick<
  FlowRecord,
  'packets' | 'bytes' | 'droppedPackets' | 'droppedBytes' | 'firstSeenNs' | 'lastSeenNs' | 'ruleId' | 'tcpFlags'
>;

export function encodeFlowValue(v: FlowCounters, out = Buffer.alloc(FLOW_VALUE.size), at = 0): Buffer {
  const base = at - FLOW_KEY.size;
  out.writeBigUInt64LE(BigInt(v.packets), base + V.packets!);
  out.writeBigUInt64LE(BigInt(v.bytes), base + V.bytes!);
  out.writeBigUInt64LE(BigInt(v.droppedPackets), base + V.dropped_packets!);
  out.writeBigUInt64LE(BigInt(v.droppedBytes), base + V.dropped_bytes!);
  out.writeBigUInt64LE(v.firstSeenNs, base + V.first_seen_ns!);
  out.writeBigUInt64LE(v.lastSeenNs, base + V.last_seen_ns!);
  out.writeUInt32LE(v.ruleId, base + V.rule_id!);
  out.writeUInt32LE(v.tcpFlags, base + V.tcp_flags!);
  return out;
}

export type IfaceCounterName = (typeof IFACE_COUNTERS)[number];

export interface IfaceStats {
  ifindex: number;
  direction: DirectionName;
  counters: Record<IfaceCounterName, number>;
  malformed: Record<MalformedReason, number>;
}

/** Decode key||summed-value records of the iface_stats map. */
export function decodeIfaceStats(buf: Buffer): IfaceStats[] {
  const rec = IFACE_KEY.size + IFACE_STATS.size;
  const out: IfaceStats[] = [];
  for (let b = 0; b + rec <= buf.length; b += rec) {
    const v = b + IFACE_KEY.size;
    const counters = {} as Record<IfaceCounterName, number>;
    for (const name of IFACE_COUNTERS) counters[name] = readU64(buf, v + off(IFACE_STATS, name));
    const malformed = {} as Record<MalformedReason, number>;
    MALFORMED_REASONS.forEach((reason, i) => {
      malformed[reason] = readU64(buf, v + off(IFACE_STATS, 'malformed') + 8 * i);
    });
    out.push({
      ifindex: buf.readUInt32LE(b + off(IFACE_KEY, 'ifindex')),
      direction: buf.readUInt32LE(b + off(IFACE_KEY, 'direction')) === Direction.egress ? 'egress' : 'ingress',
      counters,
      malformed,
    });
  }
  return out;
}

export function decodeSlotStats(buf: Buffer): { newFlows: number; insertFailed: number } {
  return {
    newFlows: readU64(buf, off(SLOT_STATS, 'new_flows')),
    insertFailed: readU64(buf, off(SLOT_STATS, 'insert_failed')),
  };
}

export function decodeRuleStats(buf: Buffer): { packets: number; bytes: number } {
  return { packets: readU64(buf, off(RULE_STATS, 'packets')), bytes: readU64(buf, off(RULE_STATS, 'bytes')) };
}

export function u32Key(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

export function encodeIfaceKey(ifindex: number, direction: DirectionName): Buffer {
  const b = Buffer.alloc(IFACE_KEY.size);
  b.writeUInt32LE(ifindex, off(IFACE_KEY, 'ifindex'));
  b.writeUInt32LE(Direction[direction], off(IFACE_KEY, 'direction'));
  return b;
}

/** A prefix in the datapath's terms: family, 16 address bytes (IPv4 in the first 4), length. */
export interface PrefixBytes {
  family: FamilyNumber;
  addr: Buffer;
  len: number;
  /** IPv4 only, when at hand: the address as a number (reading it saves creating `addr`). */
  readonly v4?: number;
}

/** An IPv4 prefix's address as a number. */
export function ipv4Value(p: PrefixBytes): number {
  return p.v4 ?? p.addr.readUInt32BE(0);
}

export interface LpmEntry {
  prefix: PrefixBytes;
  ruleId: number;
  priority: number;
  action: ActionName;
}

/** Encode LPM entries into the key and value arrays a batch update takes. */
export function encodeLpmEntries(entries: readonly LpmEntry[]): { keys: Buffer; values: Buffer } {
  const keys = Buffer.alloc(entries.length * LPM_KEY.size);
  const values = Buffer.alloc(entries.length * LPM_VERDICT.size);
  const dataAt = off(LPM_KEY, 'data');
  entries.forEach((e, i) => {
    const k = i * LPM_KEY.size;
    const addrBytes = e.prefix.family === Family.ipv4 ? 4 : 16;
    keys.writeUInt32LE(8 + e.prefix.len, k + off(LPM_KEY, 'prefixlen'));
    keys[k + dataAt] = e.prefix.family;
    if (addrBytes === 4) keys.writeUInt32BE(ipv4Value(e.prefix), k + dataAt + 1);
    else e.prefix.addr.copy(keys, k + dataAt + 1, 0, addrBytes);
    const v = i * LPM_VERDICT.size;
    values.writeUInt32LE(e.ruleId, v + off(LPM_VERDICT, 'rule_id'));
    values.writeUInt32LE(e.priority, v + off(LPM_VERDICT, 'priority'));
    values[v + off(LPM_VERDICT, 'action')] = Action[e.action];
  });
  return { keys, values };
}

/** A multi-field rule, compiled: addresses IPv4-mapped, prefixes as net and mask. */
export interface ComplexRule {
  id: number;
  priority: number;
  action: ActionName;
  family: 0 | FamilyNumber;
  src?: PrefixBytes;
  dst?: PrefixBytes;
  protocol?: number;
  srcPorts?: [number, number];
  dstPorts?: [number, number];
  ifindex?: number;
}

/** 16-byte mapped network and mask for a prefix. */
function netAndMask(p: PrefixBytes): { net: Buffer; mask: Buffer } {
  const net = Buffer.alloc(16);
  const mask = Buffer.alloc(16);
  let bits: number;
  if (p.family === Family.ipv4) {
    net[10] = 0xff;
    net[11] = 0xff;
    p.addr.copy(net, 12, 0, 4);
    bits = 96 + p.len;
  } else {
    p.addr.copy(net, 0, 0, 16);
    bits = p.len;
  }
  for (let i = 0; i < 16; i++) {
    const b = Math.max(0, Math.min(8, bits - 8 * i));
    mask[i] = (0xff << (8 - b)) & 0xff;
    net[i] = net[i]! & mask[i]!;
  }
  return { net, mask };
}

export function encodeComplexRules(rules: readonly ComplexRule[]): { keys: Buffer; values: Buffer } {
  const keys = Buffer.alloc(rules.length * 4);
  const values = Buffer.alloc(rules.length * RULE.size);
  rules.forEach((r, i) => {
    keys.writeUInt32LE(i, i * 4);
    const b = i * RULE.size;
    let flags = 0;
    if (r.src) {
      const { net, mask } = netAndMask(r.src);
      net.copy(values, b + off(RULE, 'src_net'));
      mask.copy(values, b + off(RULE, 'src_mask'));
      flags |= RuleFlag.src;
    }
    if (r.dst) {
      const { net, mask } = netAndMask(r.dst);
      net.copy(values, b + off(RULE, 'dst_net'));
      mask.copy(values, b + off(RULE, 'dst_mask'));
      flags |= RuleFlag.dst;
    }
    if (r.protocol !== undefined) {
      values[b + off(RULE, 'protocol')] = r.protocol;
      flags |= RuleFlag.proto;
    }
    if (r.srcPorts) {
      values.writeUInt16LE(r.srcPorts[0], b + off(RULE, 'sport_lo'));
      values.writeUInt16LE(r.srcPorts[1], b + off(RULE, 'sport_hi'));
      flags |= RuleFlag.sport;
    }
    if (r.dstPorts) {
      values.writeUInt16LE(r.dstPorts[0], b + off(RULE, 'dport_lo'));
      values.writeUInt16LE(r.dstPorts[1], b + off(RULE, 'dport_hi'));
      flags |= RuleFlag.dport;
    }
    if (r.ifindex !== undefined) {
      values.writeUInt32LE(r.ifindex, b + off(RULE, 'ifindex'));
      flags |= RuleFlag.iface;
    }
    values.writeUInt32LE(r.id, b + off(RULE, 'id'));
    values.writeUInt32LE(r.priority, b + off(RULE, 'priority'));
    values[b + off(RULE, 'action')] = Action[r.action];
    values[b + off(RULE, 'flags')] = flags;
    values[b + off(RULE, 'family')] = r.family;
  });
  return { keys, values };
}
