/**
 * The fast insert path: a drained buffer of packed key||value records
 * becomes ONE TabSeparated string for `INSERT INTO flowgate.flows`, read
 * straight from the bytes at layout.ts's offsets, with no object per row.
 * A drain can hold millions of flows; an object per flow would cost more
 * than the drain itself.
 *
 * Text encodings (what ClickHouse's TSV input parses):
 * - addresses: IPv4-mapped as `::ffff:a.b.c.d`, others as eight uncompressed
 *   hex groups (`2001:db8:0:0:0:0:0:1`); both parse into IPv6.
 * - DateTime64(6,'UTC'): decimal epoch seconds `1700000000.123456`, which the
 *   default date_time_input_format='basic' reads exactly (insert sets it).
 * - direction: the enum's name; u64 counters exactly, even past 2^53.
 */
import { constants } from 'node:buffer';
import { FLOW_RECORD_OFFSETS as O, FLOW_RECORD_SIZE, flowRecordCount } from '../datapath/layout.js';
import type { EncodedRows } from './types.js';

/** Records per encodeFlowRows call that stay well inside V8's string limit (~512 MiB; rows take ~140 bytes). */
export const MAX_ROWS_PER_BODY = 2_000_000;

/** Column order of the encoded rows: the DESIGN.md columns plus two extras (schema/001_flows.sql). */
export const FLOW_COLUMNS = Object.freeze([
  'host',
  'iface',
  'direction',
  'first_seen',
  'last_seen',
  'src_addr',
  'dst_addr',
  'src_port',
  'dst_port',
  'protocol',
  'vlan',
  'inner_vlan',
  'tcp_flags',
  'tcp_flags_ns',
  'packets',
  'bytes',
  'dropped_packets',
  'dropped_bytes',
  'rule_id',
] as const);

export interface FlowRowContext {
  host: string;
  /** Name of an interface by ifindex (called once per ifindex and direction per batch). */
  ifaceName(ifindex: number): string;
  /** CLOCK_MONOTONIC ns (what the programs stamp) to Unix epoch ns. */
  monoToEpochNs(monoNs: bigint): bigint;
  /**
   * Optional fast path: when the conversion is `mono + epochOffsetNs` for the
   * whole batch, say so, and monoToEpochNs is not called (saves BigInt work
   * on every row: about a fifth of the encoding time).
   */
  epochOffsetNs?: bigint;
}

function floorMod(a: bigint, m: bigint): bigint {
  const r = a % m;
  return r < 0n ? r + m : r;
}

/** Escape a value for a TSV field (host and interface names come from the system, not from us). */
export function tsvEscape(s: string): string {
  return s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'));
}

const TAB = 0x09;
const NL = 0x0a;
const DOT = 0x2e;
const COLON = 0x3a;
const ZERO = 0x30;
const HEX_DIGIT = Buffer.from('0123456789abcdef', 'latin1');
/** '00'…'99': numbers are written two digits per step. */
const PAIRS = Buffer.from(Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0')).join(''), 'latin1');
const MAPPED_PREFIX = Buffer.from('::ffff:', 'latin1');
/** Longest row without the host/iface/direction prefix: 2 times, 2 full IPv6, 11 numbers, tabs. */
const MAX_ROW_TAIL = 2 * 27 + 2 * 40 + 11 * 21 + 16;
/** A typical row, to size the output before growing it. */
const TYPICAL_ROW = 160;

/*
 * Rows are written as bytes into one Buffer by small functions that take and
 * return the write position: no string per field (string pieces per field
 * spend most of a million-row batch in the GC). The Buffer is kept between
 * batches, up to KEEP_BYTES, because touching fresh memory (page faults) is
 * a large part of the cost of a big batch.
 */
const KEEP_BYTES = 256 * 1024 * 1024;
let scratch: Buffer = Buffer.allocUnsafe(0);

function grow(buf: Buffer, used: number, need: number): Buffer {
  const next = Buffer.allocUnsafe(Math.max(buf.length * 2, used + need, 64 * 1024));
  buf.copy(next, 0, 0, used);
  return next;
}

function digitCount(v: number): number {
  if (v < 1e5) return v < 10 ? 1 : v < 100 ? 2 : v < 1e3 ? 3 : v < 1e4 ? 4 : 5;
  let d = 6;
  for (let t = 1e6; v >= t && d < 16; t *= 10) d++;
  return d;
}

/** A non-negative integer below 2^53, in decimal. */
function putUint(buf: Buffer, pos: number, v: number): number {
  let at = pos + digitCount(v);
  const end = at;
  while (v >= 100) {
    const q = Math.floor(v / 100);
    const r = (v - q * 100) * 2;
    buf[--at] = PAIRS[r + 1]!;
    buf[--at] = PAIRS[r]!;
    v = q;
  }
  if (v >= 10) {
    buf[--at] = PAIRS[v * 2 + 1]!;
    buf[--at] = PAIRS[v * 2]!;
  } else {
    buf[--at] = ZERO + v;
  }
  return end;
}

function putBytes(buf: Buffer, pos: number, src: Buffer): number {
  for (let i = 0; i < src.length; i++) buf[pos++] = src[i]!;
  return pos;
}

/** A u64 counter, exactly: doubles while exact (always, in practice), BigInt text past 2^53. */
function putU64(buf: Buffer, pos: number, src: Buffer, at: number): number {
  const hi = src.readUInt32LE(at + 4);
  if (hi < 0x200000) return putUint(buf, pos, hi * 4294967296 + src.readUInt32LE(at));
  return putBytes(buf, pos, Buffer.from(src.readBigUInt64LE(at).toString(), 'latin1'));
}

/** Epoch microseconds (an exact double) as DateTime64(6) text: seconds '.' six digits. */
function putMicros(buf: Buffer, pos: number, us: number): number {
  if (us < 0) us = 0; // before 1970: a broken clock; clamp rather than write a '-'
  const sec = Math.floor(us / 1e6);
  let frac = us - sec * 1e6;
  pos = putUint(buf, pos, sec);
  buf[pos] = DOT;
  for (let i = 6; i >= 2; i -= 2) {
    const q = Math.floor(frac / 100);
    const r = (frac - q * 100) * 2;
    buf[pos + i] = PAIRS[r + 1]!;
    buf[pos + i - 1] = PAIRS[r]!;
    frac = q;
  }
  return pos + 7;
}

/** floor(a / 1000) for an integer double |a| < 2^53, exactly, whatever the division rounded to. */
function div1000(a: number): number {
  let q = Math.floor(a / 1000);
  if (q * 1000 > a) q--;
  else if ((q + 1) * 1000 <= a) q++;
  return q;
}

/**
 * Epoch ns (from ctx.monoToEpochNs) to microseconds with one BigInt
 * subtraction per row instead of a division: times are taken relative to a
 * whole second near the batch, a delta that is an exact double.
 */
class EpochMicros {
  private baseNs = -1n;
  private baseUs = 0;

  of(epochNs: bigint): number {
    if (this.baseNs < 0n) this.rebase(epochNs);
    const deltaNs = Number(epochNs - this.baseNs);
    if (deltaNs > 4e15 || deltaNs < -4e15) {
      this.rebase(epochNs); // more than 46 days from the base: no longer exact as a double
      return this.of(epochNs);
    }
    return this.baseUs + div1000(deltaNs);
  }

  private rebase(epochNs: bigint): void {
    this.baseNs = epochNs - (epochNs % 1_000_000_000n);
    this.baseUs = Number(this.baseNs / 1000n); // below 2^53 until the year 2255
  }
}

/**
 * CLOCK_MONOTONIC ns straight from the record's two u32 halves plus a fixed
 * offset, all in exact doubles: mono = hi·2^32 + lo = (hi·4294967)·1000 + (hi·296 + lo).
 */
function monoToEpochMicros(src: Buffer, at: number, offsetUs: number, offsetRemNs: number): number {
  const hi = src.readUInt32LE(at + 4);
  const lo = src.readUInt32LE(at);
  return hi * 4294967 + offsetUs + div1000(hi * 296 + lo + offsetRemNs);
}

function putOctet(buf: Buffer, pos: number, v: number): number {
  if (v >= 100) {
    const h = v >= 200 ? 2 : 1;
    buf[pos++] = ZERO + h;
    v -= h * 100;
    buf[pos++] = PAIRS[v * 2]!;
    buf[pos++] = PAIRS[v * 2 + 1]!;
  } else if (v >= 10) {
    buf[pos++] = PAIRS[v * 2]!;
    buf[pos++] = PAIRS[v * 2 + 1]!;
  } else {
    buf[pos++] = ZERO + v;
  }
  return pos;
}

/** 16 address bytes: IPv4-mapped as ::ffff:a.b.c.d, anything else as eight hex groups without leading zeros. */
function putIp(buf: Buffer, pos: number, src: Buffer, at: number): number {
  if (
    src[at + 10] === 0xff &&
    src[at + 11] === 0xff &&
    (src[at]! | src[at + 1]! | src[at + 2]! | src[at + 3]! | src[at + 4]!) === 0 &&
    (src[at + 5]! | src[at + 6]! | src[at + 7]! | src[at + 8]! | src[at + 9]!) === 0
  ) {
    pos = putBytes(buf, pos, MAPPED_PREFIX);
    pos = putOctet(buf, pos, src[at + 12]!);
    buf[pos++] = DOT;
    pos = putOctet(buf, pos, src[at + 13]!);
    buf[pos++] = DOT;
    pos = putOctet(buf, pos, src[at + 14]!);
    buf[pos++] = DOT;
    return putOctet(buf, pos, src[at + 15]!);
  }
  for (let g = 0; g < 16; g += 2) {
    if (g > 0) buf[pos++] = COLON;
    const hi = src[at + g]!;
    const lo = src[at + g + 1]!;
    if (hi >= 0x10) buf[pos++] = HEX_DIGIT[hi >> 4]!;
    if (hi > 0) buf[pos++] = HEX_DIGIT[hi & 15]!;
    if (hi > 0 || lo >= 0x10) buf[pos++] = HEX_DIGIT[lo >> 4]!;
    buf[pos++] = HEX_DIGIT[lo & 15]!;
  }
  return pos;
}

/** Encode every record of a drain buffer (a whole number of FLOW_RECORD_SIZE records). */
export function encodeFlowRows(records: Buffer, ctx: FlowRowContext): EncodedRows {
  const n = flowRecordCount(records);
  // "host\tiface\tdirection\t" is the same for every flow of an interface and direction.
  const prefixes = new Map<number, Buffer>();
  const host = tsvEscape(ctx.host);
  let ascii = /^[\x20-\x7e]*$/.test(host);
  let buf = scratch.length >= n * TYPICAL_ROW ? scratch : Buffer.allocUnsafe(n * TYPICAL_ROW);
  let pos = 0;
  const times = new EpochMicros();
  // A fixed offset (what a clock sampled once per drain gives) avoids BigInt per row altogether.
  const fixed = ctx.epochOffsetNs !== undefined;
  const offsetUs = fixed ? Number((ctx.epochOffsetNs! - floorMod(ctx.epochOffsetNs!, 1000n)) / 1000n) : 0;
  const offsetRemNs = fixed ? Number(floorMod(ctx.epochOffsetNs!, 1000n)) : 0;
  for (let b = 0; b < n * FLOW_RECORD_SIZE; b += FLOW_RECORD_SIZE) {
    const ifindex = records.readUInt32LE(b + O.ifindex);
    const egress = records[b + O.direction] === 2;
    const prefixKey = ifindex * 2 + (egress ? 1 : 0);
    let prefix = prefixes.get(prefixKey);
    if (prefix === undefined) {
      const text = `${host}\t${tsvEscape(ctx.ifaceName(ifindex))}\t${egress ? 'egress' : 'ingress'}\t`;
      ascii &&= /^[\x20-\x7e\t]*$/.test(text);
      prefix = Buffer.from(text, 'utf8');
      prefixes.set(prefixKey, prefix);
    }
    if (pos + prefix.length + MAX_ROW_TAIL > buf.length) buf = grow(buf, pos, prefix.length + MAX_ROW_TAIL);
    pos = putBytes(buf, pos, prefix);
    if (fixed) {
      pos = putMicros(buf, pos, monoToEpochMicros(records, b + O.firstSeenNs, offsetUs, offsetRemNs));
      buf[pos++] = TAB;
      pos = putMicros(buf, pos, monoToEpochMicros(records, b + O.lastSeenNs, offsetUs, offsetRemNs));
    } else {
      pos = putMicros(buf, pos, times.of(ctx.monoToEpochNs(records.readBigUInt64LE(b + O.firstSeenNs))));
      buf[pos++] = TAB;
      pos = putMicros(buf, pos, times.of(ctx.monoToEpochNs(records.readBigUInt64LE(b + O.lastSeenNs))));
    }
    buf[pos++] = TAB;
    pos = putIp(buf, pos, records, b + O.srcAddr);
    buf[pos++] = TAB;
    pos = putIp(buf, pos, records, b + O.dstAddr);
    buf[pos++] = TAB;
    pos = putUint(buf, pos, records.readUInt16LE(b + O.srcPort));
    buf[pos++] = TAB;
    pos = putUint(buf, pos, records.readUInt16LE(b + O.dstPort));
    buf[pos++] = TAB;
    pos = putUint(buf, pos, records[b + O.protocol]!);
    buf[pos++] = TAB;
    pos = putUint(buf, pos, records.readUInt16LE(b + O.vlan));
    buf[pos++] = TAB;
    pos = putUint(buf, pos, records.readUInt16LE(b + O.innerVlan));
    buf[pos++] = TAB;
    const tcpFlags = records.readUInt32LE(b + O.tcpFlags);
    pos = putUint(buf, pos, tcpFlags & 0xff);
    buf[pos++] = TAB;
    pos = putUint(buf, pos, (tcpFlags >>> 8) & 1);
    buf[pos++] = TAB;
    pos = putU64(buf, pos, records, b + O.packets);
    buf[pos++] = TAB;
    pos = putU64(buf, pos, records, b + O.bytes);
    buf[pos++] = TAB;
    pos = putU64(buf, pos, records, b + O.droppedPackets);
    buf[pos++] = TAB;
    pos = putU64(buf, pos, records, b + O.droppedBytes);
    buf[pos++] = TAB;
    pos = putUint(buf, pos, records.readUInt32LE(b + O.ruleId));
    buf[pos++] = NL;
  }
  if (buf.length <= KEEP_BYTES && buf.length > scratch.length) scratch = buf;
  if (pos > constants.MAX_STRING_LENGTH) {
    throw new RangeError(
      `${n} flows encode to ${pos} bytes, more than one string can hold: encode the drain buffer in parts ` +
        `(about ${MAX_ROWS_PER_BODY} records each), each with its own token`,
    );
  }
  // latin1 makes a one-byte string by a plain copy; names outside ASCII need the UTF-8 decode.
  const body = buf.toString(ascii ? 'latin1' : 'utf8', 0, pos);
  return { body, format: 'TabSeparated', rows: n, columns: FLOW_COLUMNS };
}
