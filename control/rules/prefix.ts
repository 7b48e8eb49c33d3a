/**
 * Prefix parsing for rules: ip-num validates and normalises, we keep the
 * result as bytes because that is what the kernel tables take.
 */
import { IPv4, IPv6, Validator } from 'ip-num';
import { Family, ipv4Value, type PrefixBytes } from '../datapath/layout.js';

export interface ParsedPrefix extends PrefixBytes {
  /** Canonical text, host bits cleared ("10.0.0.0/8", "2001:db8::/32"). */
  cidr: string;
  /** True when the input had host bits set and was normalised. */
  normalised: boolean;
}

export class PrefixError extends Error {}

function bigintBytes(value: bigint, length: number): Buffer {
  const out = Buffer.alloc(16);
  let v = value;
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** Compress an IPv6 address the way people write it (RFC 5952). */
export function formatIPv6(bytes: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLen).join(':');
  return `${head}::${tail}`;
}

/** Format 16 flow-key bytes: IPv4-mapped addresses as dotted quads. */
export function formatAddress(bytes: Buffer): string {
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  return formatIPv6(bytes);
}

/* Strict dotted-quad CIDR, no leading zeros: the shape of nearly every blocklist line. */
const PLAIN_IPV4 =
  /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\/(3[0-2]|[12]?\d))?$/;

/**
 * An IPv4 prefix that makes its bytes and its text only when asked: a
 * million-prefix blocklist spends most of its parse time allocating, and
 * the kernel tables read the address as a number (PrefixBytes.v4).
 */
class Ipv4Prefix implements ParsedPrefix {
  readonly family = Family.ipv4;
  private bytes?: Buffer;
  private text?: string;

  constructor(
    readonly v4: number,
    readonly len: number,
    readonly normalised: boolean,
    /** The input, when it is already the canonical text. */
    canonical?: string,
  ) {
    this.text = canonical;
  }

  get addr(): Buffer {
    if (!this.bytes) {
      this.bytes = Buffer.alloc(16);
      this.bytes.writeUInt32BE(this.v4, 0);
    }
    return this.bytes;
  }

  get cidr(): string {
    const v = this.v4;
    this.text ??= `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}/${this.len}`;
    return this.text;
  }
}

function ipv4Prefix(value: number, len: number, input?: string): ParsedPrefix {
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const net = (value & mask) >>> 0;
  return new Ipv4Prefix(net, len, net !== value, net === value ? input : undefined);
}

/** Parse "a.b.c.d[/n]" or "x::y[/n]"; a bare address is a host prefix. */
export function parsePrefix(text: string): ParsedPrefix {
  const input = text.trim();
  // Fast path for well-formed IPv4 (a million-line blocklist must parse in
  // about a second; ip-num takes ~7 µs a prefix). Anything else, including
  // every malformed input, goes through ip-num and its error messages.
  const m = PLAIN_IPV4.exec(input);
  if (m) {
    const value = ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
    // The pattern admits no leading zeros: with an explicit length the input is canonical text.
    return ipv4Prefix(value, m[5] === undefined ? 32 : Number(m[5]), m[5] === undefined ? undefined : input);
  }
  const slash = input.indexOf('/');
  const addr = slash < 0 ? input : input.slice(0, slash);
  const isV6 = addr.includes(':');
  const lenText = slash < 0 ? (isV6 ? '128' : '32') : input.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText)) throw new PrefixError(`"${text}" has an invalid prefix length`);
  const len = Number(lenText);
  const cidr = `${addr}/${len}`;
  // Validator checks syntax and range; the address parse gives the number we
  // mask ourselves (ip-num's range objects cost ~7 µs each: too slow for a
  // million-prefix blocklist).
  if (isV6) {
    const [ok, errors] = Validator.isValidIPv6CidrNotation(cidr);
    if (!ok) throw new PrefixError(`"${text}" is not a valid IPv6 prefix: ${errors.join('; ')}`);
    const value = IPv6.fromString(addr).getValue();
    const hostBits = BigInt(128 - len);
    const net = (value >> hostBits) << hostBits;
    const bytes = bigintBytes(net, 16);
    return { family: Family.ipv6, addr: bytes, len, cidr: `${formatIPv6(bytes)}/${len}`, normalised: net !== value };
  }
  const [ok, errors] = Validator.isValidIPv4CidrNotation(cidr);
  if (!ok) throw new PrefixError(`"${text}" is not a valid IPv4 prefix: ${errors.join('; ')}`);
  return ipv4Prefix(Number(IPv4.fromDecimalDottedString(addr).getValue()), len);
}

/** Is every address of `inner` inside `outer`? Different families never are. */
export function prefixContains(outer: PrefixBytes, inner: PrefixBytes): boolean {
  if (outer.family !== inner.family || outer.len > inner.len) return false;
  if (outer.family === Family.ipv4) {
    const scale = 2 ** (32 - outer.len);
    return Math.floor(ipv4Value(outer) / scale) === Math.floor(ipv4Value(inner) / scale);
  }
  const full = outer.len >> 3;
  if (outer.addr.compare(inner.addr, 0, full, 0, full) !== 0) return false;
  const rest = outer.len & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (outer.addr[full]! & mask) === (inner.addr[full]! & mask);
}

/** Do two prefixes share an address (one contains the other)? */
export function prefixesOverlap(a: PrefixBytes, b: PrefixBytes): boolean {
  return a.len <= b.len ? prefixContains(a, b) : prefixContains(b, a);
}
