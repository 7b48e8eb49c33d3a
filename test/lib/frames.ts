/**
 * frames.ts — a declarative builder of raw Ethernet frames for crafted-packet
 * tests of the datapath parser (datapath/parse.h), plus a seeded PRNG and
 * random frame generation / mutation for fuzzing it.
 *
 *   buildFrame({ vlans: [100], ipv4: { src: '10.0.0.1', dst: '10.0.0.2' },
 *                tcp: { sport: 1234, dport: 80, flags: ['SYN'] }, payload: 10 })
 *
 * Every length and checksum field is computed from what is actually written,
 * and every one of them can be overridden, because the parser's job is to
 * catch the frames where they disagree. What parse.h reports, and the spec
 * that provokes it (enum fg_malformed_reason in datapath/include/flowgate.h):
 *
 *   ETH_TRUNC   truncate(frame, 13)
 *   VLAN_TRUNC  vlans: [100], then truncate inside the tag (14..17 octets)
 *   VLAN_DEPTH  vlans: [1, 2, 3] (the parser walks two tags)
 *   IPV4_TRUNC  truncate inside the 20-byte header, or ihl larger than the bytes present
 *   IPV4_HDR    ipv4: { version: 5 } or ipv4: { ihl: 4 }
 *   IPV4_LEN    ipv4: { totalLength } below ihl * 4 or beyond the frame
 *   IPV6_TRUNC  truncate inside the 40-byte fixed header
 *   IPV6_HDR    ipv6: { version: 4 }
 *   IPV6_LEN    ipv6: { payloadLength } beyond the frame (0 means jumbogram: accepted)
 *   EXT_TRUNC   an extension header past the packet end, e.g. { type: 'hop', hdrExtLen: 9 }
 *   EXT_DEPTH   nine or more extension headers (the parser walks eight)
 *   L4_TRUNC    TCP < 20, UDP < 8, SCTP < 12, ICMP < 4 octets before the IP end,
 *               e.g. ipv4: { totalLength: 30 } with tcp
 *   TCP_DOFF    tcp: { dataOffset } below 5, or reaching past the IP end
 *
 * Length fields are checked against the frame before any header past the
 * fixed IP header is read, so truncating an IP frame gives IPV4_LEN/IPV6_LEN
 * unless the length field is lowered to match.
 *
 * Padding (padTo) sits after the IP packet: the parser must count the IP
 * length, not the frame, and must not read a header out of the padding.
 */
import { Buffer } from 'node:buffer';
import { isIPv4, isIPv6 } from 'node:net';

/** Raw bytes, as a Buffer/Uint8Array or a plain array of octets. */
export type Bytes = Uint8Array | readonly number[];

export const ETHERTYPE = {
  IPV4: 0x0800,
  ARP: 0x0806,
  VLAN: 0x8100, // 802.1Q C-tag
  IPV6: 0x86dd,
  QINQ: 0x88a8, // 802.1ad S-tag
  LOCAL_EXPERIMENTAL: 0x88b5,
  LLDP: 0x88cc,
} as const;

export const IPPROTO = {
  HOPOPTS: 0,
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  ROUTING: 43,
  FRAGMENT: 44,
  GRE: 47,
  ESP: 50,
  AH: 51,
  ICMPV6: 58,
  NONE: 59,
  DSTOPTS: 60,
  SCTP: 132,
  /** RFC 3692 experimental: the default for a raw payload, a port-less flow to the parser. */
  EXPERIMENTAL: 253,
} as const;

/** TCP flag bits as the datapath stores them: CWR..FIN in the low byte, NS as bit 8. */
export const TCP_FLAGS = {
  FIN: 0x001,
  SYN: 0x002,
  RST: 0x004,
  PSH: 0x008,
  ACK: 0x010,
  URG: 0x020,
  ECE: 0x040,
  CWR: 0x080,
  NS: 0x100,
} as const;
export type TcpFlag = keyof typeof TCP_FLAGS;

// ---------------------------------------------------------------------------
// Spec types
// ---------------------------------------------------------------------------

export interface EthernetSpec {
  /** "aa:bb:cc:dd:ee:ff"; default 02:00:00:00:00:02 (locally administered). */
  dst?: string;
  /** Default 02:00:00:00:00:01. */
  src?: string;
  /** EtherType after the VLAN tags. Implied by ipv4/ipv6; required without them. */
  type?: number;
}

export interface VlanTagSpec {
  vid: number;
  pcp?: number;
  dei?: boolean;
  /** Default: 0x88A8 (802.1ad) for the outermost of several tags, else 0x8100. */
  tpid?: number;
}
/** A bare number is a VLAN id. */
export type VlanTag = number | VlanTagSpec;

export interface Ipv4Spec {
  /** Default 10.0.0.1. */
  src?: string;
  /** Default 10.0.0.2. */
  dst?: string;
  tos?: number;
  id?: number;
  /** Default 64. */
  ttl?: number;
  df?: boolean;
  mf?: boolean;
  /** Fragment offset in 8-octet units, as on the wire (0..8191). */
  fragOffset?: number;
  /** Raw 3-bit flags (reserved, DF, MF); replaces df/mf. */
  flags?: number;
  /** Option bytes, zero-padded (End of Options) to a 4-octet multiple. */
  options?: Bytes;
  /** Overrides the computed total length (header + transport + payload). */
  totalLength?: number;
  /** Overrides the computed IHL (in 4-octet words); the header bytes stay as built. */
  ihl?: number;
  /** Default 4. */
  version?: number;
  /** Overrides the computed header checksum. */
  checksum?: number;
}

interface ExtOverrides {
  /** Overrides the Next Header this header would get from the chain. */
  nextHeader?: number;
}

/** Hop-by-hop (0) or destination options (60): Hdr Ext Len in 8-octet units minus 1. */
export interface OptionsExt extends ExtOverrides {
  type: 'hop' | 'dest';
  /** TLV-encoded options; Pad1/PadN are appended to reach an 8-octet multiple. */
  options?: Bytes;
  hdrExtLen?: number;
}

/** Routing header (43): Hdr Ext Len in 8-octet units minus 1. */
export interface RoutingExt extends ExtOverrides {
  type: 'routing';
  /** Default 0 with segmentsLeft 0, which a node ignores (RFC 8200 4.4). */
  routingType?: number;
  segmentsLeft?: number;
  /** Type-specific data after the first 4 octets; default 4 reserved zero octets. Zero-padded to 8. */
  data?: Bytes;
  hdrExtLen?: number;
}

/** Fragment header (44): always 8 octets, no length field. */
export interface FragmentExt extends ExtOverrides {
  type: 'frag';
  /** Fragment offset in 8-octet units (0..8191). */
  offset?: number;
  /** The M (more fragments) flag. */
  more?: boolean;
  id?: number;
}

/** Authentication header (51): Payload Len in 4-octet units minus 2. */
export interface AuthExt extends ExtOverrides {
  type: 'ah';
  spi?: number;
  seq?: number;
  /** Integrity check value; default 12 octets (HMAC-SHA1-96). Zero-padded so the header is 8-octet aligned. */
  icv?: Bytes;
  payloadLen?: number;
}

/** Arbitrary bytes announced as `protocol`; byte 0 gets the chained Next Header. */
export interface RawExt extends ExtOverrides {
  type: 'raw';
  protocol: number;
  bytes: Bytes;
}

export type Ipv6Ext = OptionsExt | RoutingExt | FragmentExt | AuthExt | RawExt;

export interface Ipv6Spec {
  /** Default 2001:db8::1. */
  src?: string;
  /** Default 2001:db8::2. */
  dst?: string;
  trafficClass?: number;
  flowLabel?: number;
  /** Default 64. */
  hopLimit?: number;
  /** Extension headers in wire order, chained through their Next Header fields. */
  ext?: readonly Ipv6Ext[];
  /** Overrides the computed payload length (extensions + transport + payload); 0 = jumbogram. */
  payloadLength?: number;
  /** Overrides the fixed header's Next Header. */
  nextHeader?: number;
  /** Default 6. */
  version?: number;
}

export interface TcpSpec {
  /** Default 40000. */
  sport?: number;
  /** Default 80. */
  dport?: number;
  /** Default 1. */
  seq?: number;
  ack?: number;
  /** Names, or the 9-bit value (NS = 0x100). Default ['SYN']. */
  flags?: readonly TcpFlag[] | number;
  /** Default 65535. */
  window?: number;
  urgent?: number;
  /** Option bytes, zero-padded (End of Option List) to a 4-octet multiple. */
  options?: Bytes;
  /** Overrides the computed data offset (4-octet words); the header bytes stay as built. */
  dataOffset?: number;
  checksum?: number;
}

export interface UdpSpec {
  /** Default 40000. */
  sport?: number;
  /** Default 53. */
  dport?: number;
  /** Overrides the computed length (header + payload). */
  length?: number;
  /** Overrides the computed checksum; 0 means "no checksum" (IPv4 only, RFC 768). */
  checksum?: number;
}

export interface SctpSpec {
  /** Default 40000. */
  sport?: number;
  /** Default 5000. */
  dport?: number;
  vtag?: number;
  /** Overrides the computed CRC32c (stored as the wire bytes of a little-endian u32). */
  checksum?: number;
}

export interface IcmpSpec {
  /** Default: echo request (8 for ICMP, 128 for ICMPv6). */
  type?: number;
  code?: number;
  /** Identifier and sequence number: the second word of an echo message. */
  id?: number;
  seq?: number;
  checksum?: number;
}

export interface FrameSpec {
  eth?: EthernetSpec;
  vlans?: readonly VlanTag[];
  ipv4?: Ipv4Spec;
  ipv6?: Ipv6Spec;
  tcp?: TcpSpec;
  udp?: UdpSpec;
  sctp?: SctpSpec;
  icmp?: IcmpSpec;
  icmpv6?: IcmpSpec;
  /**
   * The transport protocol number the IP header (or the last IPv6 extension)
   * names. Implied by tcp/udp/sctp/icmp/icmpv6; set it for a raw payload
   * (GRE, ESP, …) or to mislabel a built transport header.
   */
  protocol?: number;
  /** Payload bytes, or a length of the pattern 00 01 02 … ff 00 … (easy to spot in a hex dump). */
  payload?: number | Bytes;
  /** Zero-pad the frame to at least this many octets (60 is Ethernet's minimum without FCS). */
  padTo?: number;
}

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

export function ipv4Bytes(addr: string): Buffer {
  if (!isIPv4(addr)) throw new TypeError(`not an IPv4 address: ${addr}`);
  return Buffer.from(addr.split('.').map(Number));
}

/** 16 octets of an IPv6 address, including "::" and an embedded dotted quad. */
export function ipv6Bytes(addr: string): Buffer {
  // Zones (fe80::1%eth0) name an interface, not bytes on the wire.
  if (!isIPv6(addr) || addr.includes('%')) throw new TypeError(`not an IPv6 address: ${addr}`);
  const [head = '', tail] = addr.split('::');
  const left = hexGroups(head);
  const right = tail === undefined ? [] : hexGroups(tail);
  const zeros = tail === undefined ? 0 : 8 - left.length - right.length;
  const groups = [...left, ...new Array<number>(zeros).fill(0), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((group, i) => out.writeUInt16BE(group, i * 2));
  return out;
}

function hexGroups(part: string): number[] {
  if (part === '') return [];
  return part.split(':').flatMap((group) => {
    if (!group.includes('.')) return [parseInt(group, 16)];
    // A trailing dotted quad stands for the last two 16-bit groups.
    const quad = ipv4Bytes(group);
    return [quad.readUInt16BE(0), quad.readUInt16BE(2)];
  });
}

/** ::ffff:a.b.c.d — how the flow key stores an IPv4 address. */
export function ipv4Mapped(addr: string): Buffer {
  const out = Buffer.alloc(16);
  out.writeUInt16BE(0xffff, 10);
  ipv4Bytes(addr).copy(out, 12);
  return out;
}

export function macBytes(mac: string): Buffer {
  if (!/^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$/i.test(mac)) throw new TypeError(`not a MAC address: ${mac}`);
  return Buffer.from(mac.split(/[:-]/).map((octet) => parseInt(octet, 16)));
}

// ---------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------

/** RFC 1071 Internet checksum over the concatenation of `parts`. */
export function inetChecksum(...parts: readonly Uint8Array[]): number {
  const data = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  // An odd trailing octet is summed as if followed by a zero octet.
  if (data.length % 2 === 1) sum += data.readUInt8(data.length - 1) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

const CRC32C_TABLE = ((): Uint32Array => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC32c (Castagnoli), the SCTP checksum (RFC 9260 appendix A). */
export function crc32c(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const octet of data) crc = (CRC32C_TABLE[(crc ^ octet) & 0xff] ?? 0) ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------

const DEFAULT_ETH_SRC = '02:00:00:00:00:01';
const DEFAULT_ETH_DST = '02:00:00:00:00:02';
const DEFAULT_SPORT = 40000;

type TransportKind = 'tcp' | 'udp' | 'sctp' | 'icmp' | 'icmpv6';
const TRANSPORT_PROTOCOL: Record<TransportKind, number> = {
  tcp: IPPROTO.TCP,
  udp: IPPROTO.UDP,
  sctp: IPPROTO.SCTP,
  icmp: IPPROTO.ICMP,
  icmpv6: IPPROTO.ICMPV6,
};

const EXT_PROTOCOL = { hop: 0, routing: 43, frag: 44, ah: 51, dest: 60 } as const;

/** The addresses a transport checksum's pseudo-header needs. */
interface IpEndpoints {
  family: 4 | 6;
  src: Buffer;
  dst: Buffer;
}

/** Build one frame from a declarative spec. */
export function buildFrame(spec: FrameSpec): Buffer {
  const packet = networkPacket(spec);
  const type = spec.eth?.type ?? packet.etherType;
  if (type === undefined) throw new TypeError('eth.type is required for a frame without ipv4/ipv6');
  const header = ethernetHeader(spec.eth ?? {}, spec.vlans ?? [], type);
  return padFrame(Buffer.concat([header, packet.bytes]), spec.padTo ?? 0);
}

/** A TCP SYN from src to dst: IPv6 when src is an IPv6 address, else IPv4. */
export function tcpSyn(src: string, dst: string, dport = 80, sport = 40000): Buffer {
  const spec: FrameSpec = src.includes(':')
    ? { ipv6: { src, dst }, tcp: { sport, dport, flags: ['SYN'] } }
    : { ipv4: { src, dst }, tcp: { sport, dport, flags: ['SYN'] } };
  return buildFrame(spec);
}

function networkPacket(spec: FrameSpec): { etherType: number | undefined; bytes: Buffer } {
  const kind = transportKind(spec);
  const payload = payloadBytes(spec.payload);
  if (spec.ipv4 !== undefined && spec.ipv6 !== undefined) throw new TypeError('ipv4 and ipv6 are exclusive');
  if (spec.ipv4 === undefined && spec.ipv6 === undefined) {
    if (kind !== undefined || spec.protocol !== undefined) throw new TypeError('a transport needs ipv4 or ipv6');
    return { etherType: undefined, bytes: payload };
  }
  const ip = endpoints(spec);
  const segment = kind === undefined ? payload : transportSegment(kind, spec, payload, ip);
  const protocol = spec.protocol ?? (kind === undefined ? IPPROTO.EXPERIMENTAL : TRANSPORT_PROTOCOL[kind]);
  if (spec.ipv4 !== undefined) {
    return { etherType: ETHERTYPE.IPV4, bytes: ipv4Packet(spec.ipv4, ip, protocol, segment) };
  }
  return { etherType: ETHERTYPE.IPV6, bytes: ipv6Packet(spec.ipv6 ?? {}, ip, protocol, segment) };
}

function transportKind(spec: FrameSpec): TransportKind | undefined {
  const kinds = (Object.keys(TRANSPORT_PROTOCOL) as TransportKind[]).filter((k) => spec[k] !== undefined);
  if (kinds.length > 1) throw new TypeError(`one transport per frame, got ${kinds.join(', ')}`);
  return kinds[0];
}

function endpoints(spec: FrameSpec): IpEndpoints {
  if (spec.ipv4 !== undefined) {
    return { family: 4, src: ipv4Bytes(spec.ipv4.src ?? '10.0.0.1'), dst: ipv4Bytes(spec.ipv4.dst ?? '10.0.0.2') };
  }
  const v6 = spec.ipv6 ?? {};
  return { family: 6, src: ipv6Bytes(v6.src ?? '2001:db8::1'), dst: ipv6Bytes(v6.dst ?? '2001:db8::2') };
}

function payloadBytes(payload: number | Bytes | undefined): Buffer {
  if (payload === undefined) return Buffer.alloc(0);
  if (typeof payload !== 'number') return toBuffer(payload);
  checkRange('payload', payload, 0, 0xffffff);
  return Buffer.from(Array.from({ length: payload }, (_, i) => i & 0xff));
}

function padFrame(frame: Buffer, minLength: number): Buffer {
  if (frame.length >= minLength) return frame;
  return Buffer.concat([frame, Buffer.alloc(minLength - frame.length)]);
}

// --- Ethernet and VLAN -----------------------------------------------------

function ethernetHeader(eth: EthernetSpec, vlans: readonly VlanTag[], type: number): Buffer {
  const header = Buffer.alloc(14 + 4 * vlans.length);
  macBytes(eth.dst ?? DEFAULT_ETH_DST).copy(header, 0);
  macBytes(eth.src ?? DEFAULT_ETH_SRC).copy(header, 6);
  // Each tag's TPID takes the place of the EtherType; the real type follows the last tag.
  let at = 12;
  vlans.forEach((tag, i) => {
    vlanTag(tag, defaultTpid(i, vlans.length)).copy(header, at);
    at += 4;
  });
  header.writeUInt16BE(checkBits('eth.type', type, 16), at);
  return header;
}

/** 802.1ad puts the service (S) tag outermost; a lone or inner tag is 802.1Q. */
function defaultTpid(index: number, count: number): number {
  return count >= 2 && index === 0 ? ETHERTYPE.QINQ : ETHERTYPE.VLAN;
}

function vlanTag(tag: VlanTag, tpid: number): Buffer {
  const spec: VlanTagSpec = typeof tag === 'number' ? { vid: tag } : tag;
  const tci =
    (checkBits('vlan.pcp', spec.pcp ?? 0, 3) << 13) |
    (spec.dei === true ? 0x1000 : 0) |
    checkBits('vlan.vid', spec.vid, 12);
  const out = Buffer.alloc(4);
  out.writeUInt16BE(checkBits('vlan.tpid', spec.tpid ?? tpid, 16), 0);
  out.writeUInt16BE(tci, 2);
  return out;
}

// --- IPv4 ------------------------------------------------------------------

function ipv4Packet(spec: Ipv4Spec, ip: IpEndpoints, protocol: number, segment: Buffer): Buffer {
  // IHL counts 32-bit words, so options are padded with End of Options.
  const options = padToMultiple(toBuffer(spec.options ?? []), 4);
  const header = Buffer.alloc(20 + options.length);
  const ihl = spec.ihl ?? header.length / 4;
  const flags = spec.flags ?? ipv4Flags(spec);
  header.writeUInt8((checkBits('ipv4.version', spec.version ?? 4, 4) << 4) | checkBits('ipv4.ihl', ihl, 4), 0);
  header.writeUInt8(checkBits('ipv4.tos', spec.tos ?? 0, 8), 1);
  header.writeUInt16BE(checkBits('ipv4.totalLength', spec.totalLength ?? header.length + segment.length, 16), 2);
  header.writeUInt16BE(checkBits('ipv4.id', spec.id ?? 0, 16), 4);
  header.writeUInt16BE(
    (checkBits('ipv4.flags', flags, 3) << 13) | checkBits('ipv4.fragOffset', spec.fragOffset ?? 0, 13),
    6,
  );
  header.writeUInt8(checkBits('ipv4.ttl', spec.ttl ?? 64, 8), 8);
  header.writeUInt8(checkBits('protocol', protocol, 8), 9);
  ip.src.copy(header, 12);
  ip.dst.copy(header, 16);
  options.copy(header, 20);
  header.writeUInt16BE(checkBits('ipv4.checksum', spec.checksum ?? inetChecksum(header), 16), 10);
  return Buffer.concat([header, segment]);
}

/** The 3 flag bits are reserved, DF, MF from the most significant down. */
function ipv4Flags(spec: Ipv4Spec): number {
  return (spec.df === true ? 0b010 : 0) | (spec.mf === true ? 0b001 : 0);
}

// --- IPv6 ------------------------------------------------------------------

function ipv6Packet(spec: Ipv6Spec, ip: IpEndpoints, protocol: number, segment: Buffer): Buffer {
  const exts = spec.ext ?? [];
  const chain = extensionChain(exts, protocol);
  const first = exts[0];
  const next = spec.nextHeader ?? (first === undefined ? protocol : extProtocol(first));
  const header = Buffer.alloc(40);
  const word0 =
    (checkBits('ipv6.version', spec.version ?? 6, 4) << 28) |
    (checkBits('ipv6.trafficClass', spec.trafficClass ?? 0, 8) << 20) |
    checkBits('ipv6.flowLabel', spec.flowLabel ?? 0, 20);
  header.writeUInt32BE(word0 >>> 0, 0);
  header.writeUInt16BE(checkBits('ipv6.payloadLength', spec.payloadLength ?? chain.length + segment.length, 16), 4);
  header.writeUInt8(checkBits('ipv6.nextHeader', next, 8), 6);
  header.writeUInt8(checkBits('ipv6.hopLimit', spec.hopLimit ?? 64, 8), 7);
  ip.src.copy(header, 8);
  ip.dst.copy(header, 24);
  return Buffer.concat([header, chain, segment]);
}

function extProtocol(ext: Ipv6Ext): number {
  return ext.type === 'raw' ? ext.protocol : EXT_PROTOCOL[ext.type];
}

/** Each header names the one after it; the last names the transport. */
function extensionChain(exts: readonly Ipv6Ext[], transport: number): Buffer {
  return Buffer.concat(
    exts.map((ext, i) => {
      const following = exts[i + 1];
      const next = ext.nextHeader ?? (following === undefined ? transport : extProtocol(following));
      return extensionHeader(ext, checkBits('ext.nextHeader', next, 8));
    }),
  );
}

function extensionHeader(ext: Ipv6Ext, next: number): Buffer {
  switch (ext.type) {
    case 'hop':
    case 'dest':
      return optionsHeader(ext, next);
    case 'routing':
      return routingHeader(ext, next);
    case 'frag':
      return fragmentHeader(ext, next);
    case 'ah':
      return authHeader(ext, next);
    case 'raw':
      return rawHeader(ext, next);
  }
}

function optionsHeader(ext: OptionsExt, next: number): Buffer {
  // Hdr Ext Len counts 8-octet units beyond the first, so options are padded with Pad1/PadN.
  const options = toBuffer(ext.options ?? []);
  const header = Buffer.concat([Buffer.from([next, 0]), options, optionPadding(2 + options.length)]);
  header.writeUInt8(checkBits('ext.hdrExtLen', ext.hdrExtLen ?? header.length / 8 - 1, 8), 1);
  return header;
}

/** RFC 8200 4.2: one octet is Pad1, more is a PadN option covering the gap. */
function optionPadding(length: number): Buffer {
  const gap = (8 - (length % 8)) % 8;
  if (gap === 0) return Buffer.alloc(0);
  if (gap === 1) return Buffer.from([0]);
  return Buffer.concat([Buffer.from([1, gap - 2]), Buffer.alloc(gap - 2)]);
}

function routingHeader(ext: RoutingExt, next: number): Buffer {
  const fixed = Buffer.from([
    next,
    0,
    checkBits('routing.routingType', ext.routingType ?? 0, 8),
    checkBits('routing.segmentsLeft', ext.segmentsLeft ?? 0, 8),
  ]);
  const header = padToMultiple(Buffer.concat([fixed, toBuffer(ext.data ?? [0, 0, 0, 0])]), 8);
  header.writeUInt8(checkBits('ext.hdrExtLen', ext.hdrExtLen ?? header.length / 8 - 1, 8), 1);
  return header;
}

function fragmentHeader(ext: FragmentExt, next: number): Buffer {
  const header = Buffer.alloc(8);
  header.writeUInt8(next, 0);
  // Offset in the top 13 bits, two reserved bits, then M.
  header.writeUInt16BE((checkBits('frag.offset', ext.offset ?? 0, 13) << 3) | (ext.more === true ? 1 : 0), 2);
  header.writeUInt32BE(checkBits('frag.id', ext.id ?? 0, 32), 4);
  return header;
}

function authHeader(ext: AuthExt, next: number): Buffer {
  const fixed = Buffer.alloc(12);
  fixed.writeUInt8(next, 0);
  fixed.writeUInt32BE(checkBits('ah.spi', ext.spi ?? 0x100, 32), 4);
  fixed.writeUInt32BE(checkBits('ah.seq', ext.seq ?? 1, 32), 8);
  // In IPv6 the whole AH must be 8-octet aligned (RFC 4302 2.2), so the ICV is padded.
  const header = padToMultiple(Buffer.concat([fixed, toBuffer(ext.icv ?? new Array<number>(12).fill(0))]), 8);
  // Unlike the other extensions, AH's length is in 4-octet units minus 2.
  header.writeUInt8(checkBits('ah.payloadLen', ext.payloadLen ?? header.length / 4 - 2, 8), 1);
  return header;
}

function rawHeader(ext: RawExt, next: number): Buffer {
  const header = toBuffer(ext.bytes);
  if (header.length > 0) header.writeUInt8(next, 0);
  return header;
}

// --- Transports ------------------------------------------------------------

function transportSegment(kind: TransportKind, spec: FrameSpec, payload: Buffer, ip: IpEndpoints): Buffer {
  switch (kind) {
    case 'tcp':
      return tcpSegment(spec.tcp ?? {}, payload, ip);
    case 'udp':
      return udpDatagram(spec.udp ?? {}, payload, ip);
    case 'sctp':
      return sctpPacket(spec.sctp ?? {}, payload);
    case 'icmp':
      return icmpMessage(spec.icmp ?? {}, 8, payload, undefined);
    case 'icmpv6':
      return icmpMessage(spec.icmpv6 ?? {}, 128, payload, ip);
  }
}

/** The TCP/UDP/ICMPv6 checksum covers a pseudo-header of addresses, protocol and length. */
function pseudoHeader(ip: IpEndpoints, protocol: number, length: number): Buffer {
  if (ip.family === 4) {
    const header = Buffer.alloc(12);
    ip.src.copy(header, 0);
    ip.dst.copy(header, 4);
    header.writeUInt8(protocol, 9);
    header.writeUInt16BE(length & 0xffff, 10);
    return header;
  }
  const header = Buffer.alloc(40);
  ip.src.copy(header, 0);
  ip.dst.copy(header, 16);
  header.writeUInt32BE(length, 32);
  header.writeUInt8(protocol, 39);
  return header;
}

export function tcpFlagBits(flags: readonly TcpFlag[] | number): number {
  if (typeof flags === 'number') return checkBits('tcp.flags', flags, 9);
  return flags.reduce((bits, name) => bits | TCP_FLAGS[name], 0);
}

function tcpSegment(tcp: TcpSpec, payload: Buffer, ip: IpEndpoints): Buffer {
  // Data offset counts 32-bit words, so options are padded with End of Option List.
  const options = padToMultiple(toBuffer(tcp.options ?? []), 4);
  const header = Buffer.alloc(20 + options.length);
  const flags = tcpFlagBits(tcp.flags ?? ['SYN']);
  const dataOffset = checkBits('tcp.dataOffset', tcp.dataOffset ?? header.length / 4, 4);
  header.writeUInt16BE(checkBits('tcp.sport', tcp.sport ?? DEFAULT_SPORT, 16), 0);
  header.writeUInt16BE(checkBits('tcp.dport', tcp.dport ?? 80, 16), 2);
  header.writeUInt32BE(checkBits('tcp.seq', tcp.seq ?? 1, 32), 4);
  header.writeUInt32BE(checkBits('tcp.ack', tcp.ack ?? 0, 32), 8);
  // NS is the low bit of the data-offset octet; CWR..FIN fill the next octet.
  header.writeUInt8((dataOffset << 4) | (flags >> 8), 12);
  header.writeUInt8(flags & 0xff, 13);
  header.writeUInt16BE(checkBits('tcp.window', tcp.window ?? 65535, 16), 14);
  header.writeUInt16BE(checkBits('tcp.urgent', tcp.urgent ?? 0, 16), 18);
  options.copy(header, 20);
  const segment = Buffer.concat([header, payload]);
  const checksum = tcp.checksum ?? inetChecksum(pseudoHeader(ip, IPPROTO.TCP, segment.length), segment);
  segment.writeUInt16BE(checkBits('tcp.checksum', checksum, 16), 16);
  return segment;
}

function udpDatagram(udp: UdpSpec, payload: Buffer, ip: IpEndpoints): Buffer {
  const datagram = Buffer.concat([Buffer.alloc(8), payload]);
  datagram.writeUInt16BE(checkBits('udp.sport', udp.sport ?? DEFAULT_SPORT, 16), 0);
  datagram.writeUInt16BE(checkBits('udp.dport', udp.dport ?? 53, 16), 2);
  datagram.writeUInt16BE(checkBits('udp.length', udp.length ?? datagram.length, 16), 4);
  datagram.writeUInt16BE(checkBits('udp.checksum', udp.checksum ?? udpChecksum(datagram, ip), 16), 6);
  return datagram;
}

/** A computed 0 is sent as 0xFFFF, because 0 on the wire means "no checksum". */
function udpChecksum(datagram: Buffer, ip: IpEndpoints): number {
  return inetChecksum(pseudoHeader(ip, IPPROTO.UDP, datagram.length), datagram) || 0xffff;
}

function sctpPacket(sctp: SctpSpec, payload: Buffer): Buffer {
  const packet = Buffer.concat([Buffer.alloc(12), payload]);
  packet.writeUInt16BE(checkBits('sctp.sport', sctp.sport ?? DEFAULT_SPORT, 16), 0);
  packet.writeUInt16BE(checkBits('sctp.dport', sctp.dport ?? 5000, 16), 2);
  packet.writeUInt32BE(checkBits('sctp.vtag', sctp.vtag ?? 0, 32), 4);
  // The reflected CRC32c goes on the wire least significant octet first (as Linux and Wireshark do).
  packet.writeUInt32LE(checkBits('sctp.checksum', sctp.checksum ?? crc32c(packet), 32), 8);
  return packet;
}

/** ICMP sums the message alone; ICMPv6 (given `ip`) adds the pseudo-header. */
function icmpMessage(icmp: IcmpSpec, echoType: number, payload: Buffer, ip: IpEndpoints | undefined): Buffer {
  const message = Buffer.concat([Buffer.alloc(8), payload]);
  message.writeUInt8(checkBits('icmp.type', icmp.type ?? echoType, 8), 0);
  message.writeUInt8(checkBits('icmp.code', icmp.code ?? 0, 8), 1);
  message.writeUInt16BE(checkBits('icmp.id', icmp.id ?? 0, 16), 4);
  message.writeUInt16BE(checkBits('icmp.seq', icmp.seq ?? 0, 16), 6);
  const pseudo = ip === undefined ? Buffer.alloc(0) : pseudoHeader(ip, IPPROTO.ICMPV6, message.length);
  message.writeUInt16BE(checkBits('icmp.checksum', icmp.checksum ?? inetChecksum(pseudo, message), 16), 2);
  return message;
}

// --- Small helpers ---------------------------------------------------------

function toBuffer(bytes: Bytes): Buffer {
  // Always a copy: headers are patched in place after assembly.
  return bytes instanceof Uint8Array ? Buffer.from(bytes) : Buffer.from(bytes);
}

function padToMultiple(bytes: Buffer, unit: number): Buffer {
  const gap = (unit - (bytes.length % unit)) % unit;
  return gap === 0 ? bytes : Buffer.concat([bytes, Buffer.alloc(gap)]);
}

/** Fail loudly on a field that does not fit, instead of letting it wrap silently. */
function checkBits(name: string, value: number, bits: number): number {
  return checkRange(name, value, 0, 2 ** bits - 1);
}

function checkRange(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${value}`);
  }
  return value;
}

// ---------------------------------------------------------------------------
// Reading a built frame back
// ---------------------------------------------------------------------------

/** Copy of the first n octets (all of them if the frame is shorter). */
export function truncate(frame: Uint8Array, n: number): Buffer {
  checkRange('truncate length', n, 0, Number.MAX_SAFE_INTEGER);
  return Buffer.from(frame.subarray(0, n));
}

/**
 * Where the network header starts and which EtherType announces it, walking
 * any number of VLAN tags. Undefined if the frame ends first.
 */
export function l3Offset(frame: Uint8Array): { offset: number; etherType: number } | undefined {
  const buf = asBuffer(frame);
  let at = 12;
  while (at + 2 <= buf.length) {
    const type = buf.readUInt16BE(at);
    if (type !== ETHERTYPE.VLAN && type !== ETHERTYPE.QINQ) return { offset: at + 2, etherType: type };
    at += 4;
  }
  return undefined;
}

/**
 * The IP packet length the flow's bytes count (NetFlow octets): IPv4 total
 * length, IPv6 payload length + 40, and for an IPv6 payload length of 0
 * (jumbogram / BIG TCP) everything from the IPv6 header to the frame's end,
 * as parse.h does. Read from the frame's own fields, so overrides show.
 * Undefined for a non-IP frame or one too short to hold the field.
 */
export function ipPacketLength(frame: Uint8Array): number | undefined {
  const buf = asBuffer(frame);
  const l3 = l3Offset(buf);
  if (l3 === undefined) return undefined;
  if (l3.etherType === ETHERTYPE.IPV4 && l3.offset + 4 <= buf.length) return buf.readUInt16BE(l3.offset + 2);
  if (l3.etherType === ETHERTYPE.IPV6 && l3.offset + 6 <= buf.length) {
    const payloadLength = buf.readUInt16BE(l3.offset + 4);
    return payloadLength === 0 ? buf.length - l3.offset : payloadLength + 40;
  }
  return undefined;
}

function asBuffer(frame: Uint8Array): Buffer {
  return Buffer.isBuffer(frame) ? frame : Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
}

// ---------------------------------------------------------------------------
// Seeded randomness for fuzzing
// ---------------------------------------------------------------------------

/** Uniform in [0, 1). */
export type Rng = () => number;

/** mulberry32: tiny, fast, and the same sequence for the same seed everywhere. */
export function mulberry32(seed: number): Rng {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Integer in [min, max], both inclusive. */
export function randInt(rng: Rng, min: number, max: number): number {
  return min + Math.floor(rng() * (max - min + 1));
}

export function pick<T>(rng: Rng, items: readonly T[]): T {
  const item = items[randInt(rng, 0, items.length - 1)];
  if (item === undefined) throw new RangeError('pick from an empty list');
  return item;
}

function chance(rng: Rng, p: number): boolean {
  return rng() < p;
}

function randomBytes(rng: Rng, n: number): Buffer {
  return Buffer.from(Array.from({ length: n }, () => randInt(rng, 0, 255)));
}

// --- Random valid-ish frames -----------------------------------------------

/**
 * A random, well-formed spec: 0–2 VLAN tags (rarely 3), IPv4 with options
 * and fragments, IPv6 with extension chains up to 10 long (past the
 * parser's walk of 8, so EXT_DEPTH shows up too), every transport, and a
 * few non-IP frames. Exposed so a fuzz test can derive expectations.
 */
export function randomSpec(rng: Rng): FrameSpec {
  const spec: FrameSpec = { vlans: randomVlans(rng), payload: randomPayloadLength(rng) };
  if (chance(rng, 0.3)) spec.padTo = 60;
  const roll = rng();
  if (roll < 0.06) {
    spec.eth = { type: pick(rng, [ETHERTYPE.ARP, ETHERTYPE.LLDP, ETHERTYPE.LOCAL_EXPERIMENTAL]) };
    return spec;
  }
  if (roll < 0.53) spec.ipv4 = randomIpv4(rng);
  else spec.ipv6 = randomIpv6(rng);
  addRandomTransport(spec, rng);
  return spec;
}

export function randomFrame(rng: Rng): Buffer {
  return buildFrame(randomSpec(rng));
}

function randomVlans(rng: Rng): VlanTag[] {
  // Mostly untagged; a rare third tag keeps VLAN_DEPTH in the mix without crowding out IP.
  const roll = rng();
  const count = roll < 0.55 ? 0 : roll < 0.8 ? 1 : roll < 0.97 ? 2 : 3;
  return Array.from({ length: count }, () => randInt(rng, 0, 4095));
}

function randomPayloadLength(rng: Rng): number {
  const roll = rng();
  if (roll < 0.2) return 0;
  if (roll < 0.7) return randInt(rng, 1, 64);
  return randInt(rng, 65, 1400);
}

function randomIpv4(rng: Rng): Ipv4Spec {
  const spec: Ipv4Spec = {
    src: `10.${randInt(rng, 0, 255)}.${randInt(rng, 0, 255)}.${randInt(rng, 1, 254)}`,
    dst: `192.0.2.${randInt(rng, 1, 254)}`,
    ttl: randInt(rng, 1, 255),
    id: randInt(rng, 0, 0xffff),
  };
  if (chance(rng, 0.2)) spec.options = randomBytes(rng, 4 * randInt(rng, 1, 10));
  if (chance(rng, 0.15)) {
    spec.mf = chance(rng, 0.5);
    spec.fragOffset = chance(rng, 0.5) ? 0 : randInt(rng, 1, 8191);
  } else {
    spec.df = chance(rng, 0.5);
  }
  return spec;
}

function randomIpv6(rng: Rng): Ipv6Spec {
  const spec: Ipv6Spec = {
    src: chance(rng, 0.05) ? `::ffff:10.0.0.${randInt(rng, 1, 254)}` : randomV6Address(rng),
    dst: randomV6Address(rng),
    hopLimit: randInt(rng, 1, 255),
    flowLabel: randInt(rng, 0, 0xfffff),
  };
  const depth = chance(rng, 0.5) ? 0 : chance(rng, 0.85) ? randInt(rng, 1, 3) : randInt(rng, 4, 10);
  if (depth > 0) spec.ext = Array.from({ length: depth }, () => randomExt(rng));
  return spec;
}

function randomV6Address(rng: Rng): string {
  const prefix = pick(rng, ['2001:db8', 'fe80', 'fd00:1']);
  return `${prefix}::${randInt(rng, 0, 0xffff).toString(16)}:${randInt(rng, 1, 0xffff).toString(16)}`;
}

function randomExt(rng: Rng): Ipv6Ext {
  switch (pick(rng, ['hop', 'dest', 'routing', 'frag', 'ah'] as const)) {
    case 'hop':
      return { type: 'hop', options: randomOption(rng) };
    case 'dest':
      return { type: 'dest', options: randomOption(rng) };
    case 'routing':
      return { type: 'routing', data: randomBytes(rng, 4 + 8 * randInt(rng, 0, 2)) };
    case 'frag':
      return {
        type: 'frag',
        offset: chance(rng, 0.7) ? 0 : randInt(rng, 1, 8191),
        more: chance(rng, 0.5),
        id: randInt(rng, 0, 0xffffffff),
      };
    case 'ah':
      return { type: 'ah', spi: randInt(rng, 256, 0xffffffff), icv: randomBytes(rng, pick(rng, [12, 16, 32])) };
  }
}

/** One TLV of an RFC 4727 experimental type whose top bits say "skip if unknown". */
function randomOption(rng: Rng): Buffer {
  const data = randomBytes(rng, randInt(rng, 0, 20));
  return Buffer.concat([Buffer.from([0x1e, data.length]), data]);
}

const SYN_OPTIONS = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
const COMMON_FLAG_SETS: readonly (readonly TcpFlag[])[] = [
  ['SYN'],
  ['SYN', 'ACK'],
  ['ACK'],
  ['PSH', 'ACK'],
  ['FIN', 'ACK'],
  ['RST'],
];

function addRandomTransport(spec: FrameSpec, rng: Rng): void {
  const icmpKind = spec.ipv4 !== undefined ? 'icmp' : 'icmpv6';
  const kind = pick(rng, ['tcp', 'tcp', 'udp', 'udp', 'sctp', icmpKind, 'raw'] as const);
  const sport = randInt(rng, 1, 65535);
  const dport = randInt(rng, 1, 65535);
  switch (kind) {
    case 'tcp':
      spec.tcp = {
        sport,
        dport,
        seq: randInt(rng, 0, 0xffffffff),
        flags: chance(rng, 0.3) ? randInt(rng, 0, 0x1ff) : pick(rng, COMMON_FLAG_SETS),
        options: pick(rng, [[], [2, 4, 5, 0xb4], SYN_OPTIONS]),
      };
      return;
    case 'udp':
      spec.udp = { sport, dport };
      return;
    case 'sctp':
      spec.sctp = { sport, dport, vtag: randInt(rng, 0, 0xffffffff) };
      return;
    case 'icmp':
    case 'icmpv6':
      spec[kind] = { type: randInt(rng, 0, 255), code: randInt(rng, 0, 255) };
      return;
    case 'raw':
      spec.protocol = pick(rng, [IPPROTO.GRE, IPPROTO.ESP, IPPROTO.NONE, IPPROTO.EXPERIMENTAL]);
      return;
  }
}

// --- Mutation --------------------------------------------------------------

/**
 * 1–3 random mutations of a copy of `frame`: bit flips, truncation,
 * length-field corruption (IHL, total/payload length, extension lengths,
 * TCP data offset, UDP length), Next Header / EtherType rewrites, inserted
 * extension headers, trailing garbage. The same rng state gives the same
 * result; the input is never modified.
 */
export function mutateFrame(frame: Uint8Array, rng: Rng): Buffer {
  let out: Buffer = Buffer.from(frame);
  const rounds = randInt(rng, 1, 3);
  for (let i = 0; i < rounds; i++) out = pick(rng, MUTATIONS)(out, rng);
  return out;
}

type Mutation = (frame: Buffer, rng: Rng) => Buffer;

/** Header octets are where the parser decides things; aim most mutations there. */
function headerBiasedIndex(frame: Buffer, rng: Rng): number {
  const limit = chance(rng, 0.75) ? Math.min(frame.length, 128) : frame.length;
  return randInt(rng, 0, limit - 1);
}

const flipBits: Mutation = (frame, rng) => {
  if (frame.length === 0) return frame;
  const flips = randInt(rng, 1, 4);
  for (let i = 0; i < flips; i++) {
    const at = headerBiasedIndex(frame, rng);
    frame.writeUInt8(frame.readUInt8(at) ^ (1 << randInt(rng, 0, 7)), at);
  }
  return frame;
};

const truncateRandomly: Mutation = (frame, rng) =>
  frame.length === 0 ? frame : truncate(frame, headerBiasedIndex(frame, rng));

const appendGarbage: Mutation = (frame, rng) => Buffer.concat([frame, randomBytes(rng, randInt(rng, 1, 64))]);

const corruptLengthField: Mutation = (frame, rng) => {
  const fields = frameFields(frame).lengths;
  if (fields.length === 0) return flipBits(frame, rng);
  const field = pick(rng, fields);
  const max = FIELD_MAX[field.width];
  const old = readField(frame, field);
  // Off-by-one and off-by-a-unit values find boundary bugs; extremes find overflow bugs.
  const value = pick(rng, [0, 1, max, old + 1, old - 1, old + 8, old - 8, old * 2, randInt(rng, 0, max)]);
  writeField(frame, field, value & max);
  return frame;
};

const EXT_AND_TRANSPORT = [0, 43, 44, 51, 60, 6, 17, 132, 1, 58, 59, 50];

const corruptNextHeader: Mutation = (frame, rng) => {
  const fields = frameFields(frame).nextHeaders;
  if (fields.length === 0) return flipBits(frame, rng);
  frame.writeUInt8(chance(rng, 0.8) ? pick(rng, EXT_AND_TRANSPORT) : randInt(rng, 0, 255), pick(rng, fields));
  return frame;
};

const corruptEtherType: Mutation = (frame, rng) => {
  const fields = frameFields(frame).etherTypes;
  if (fields.length === 0) return flipBits(frame, rng);
  const type = pick(rng, [ETHERTYPE.VLAN, ETHERTYPE.QINQ, ETHERTYPE.IPV4, ETHERTYPE.IPV6, randInt(rng, 0, 0xffff)]);
  frame.writeUInt16BE(type, pick(rng, fields));
  return frame;
};

/** Splice a random extension header after the IPv6 fixed header, fixing the payload length only sometimes. */
const insertExtension: Mutation = (frame, rng) => {
  const l3 = frameFields(frame).ipv6;
  if (l3 === undefined) return corruptLengthField(frame, rng);
  const type = pick(rng, [0, 43, 44, 51, 60]);
  const units = randInt(rng, 0, 3);
  const size = type === 44 ? 8 : type === 51 ? (units + 2) * 4 : (units + 1) * 8;
  const ext = randomBytes(rng, size);
  ext.writeUInt8(frame.readUInt8(l3 + 6), 0);
  if (type !== 44) ext.writeUInt8(units, 1);
  const out = Buffer.concat([frame.subarray(0, l3 + 40), ext, frame.subarray(l3 + 40)]);
  out.writeUInt8(type, l3 + 6);
  if (chance(rng, 0.5)) out.writeUInt16BE((out.readUInt16BE(l3 + 4) + size) & 0xffff, l3 + 4);
  return out;
};

const MUTATIONS: readonly Mutation[] = [
  flipBits,
  truncateRandomly,
  appendGarbage,
  corruptLengthField,
  corruptLengthField,
  corruptNextHeader,
  corruptEtherType,
  insertExtension,
];

// --- Locating fields in an arbitrary (possibly already mutated) frame ------

type FieldWidth = 'u16' | 'u8' | 'hi4' | 'lo4';
interface FieldRef {
  at: number;
  width: FieldWidth;
}
const FIELD_MAX: Record<FieldWidth, number> = { u16: 0xffff, u8: 0xff, hi4: 0xf, lo4: 0xf };

interface FrameFields {
  etherTypes: number[];
  lengths: FieldRef[];
  nextHeaders: number[];
  ipv6?: number;
}

function readField(frame: Buffer, field: FieldRef): number {
  switch (field.width) {
    case 'u16':
      return frame.readUInt16BE(field.at);
    case 'u8':
      return frame.readUInt8(field.at);
    case 'hi4':
      return frame.readUInt8(field.at) >> 4;
    case 'lo4':
      return frame.readUInt8(field.at) & 0xf;
  }
}

function writeField(frame: Buffer, field: FieldRef, value: number): void {
  const octet = field.width === 'u16' ? 0 : frame.readUInt8(field.at);
  switch (field.width) {
    case 'u16':
      return void frame.writeUInt16BE(value, field.at);
    case 'u8':
      return void frame.writeUInt8(value, field.at);
    case 'hi4':
      return void frame.writeUInt8((octet & 0x0f) | (value << 4), field.at);
    case 'lo4':
      return void frame.writeUInt8((octet & 0xf0) | value, field.at);
  }
}

/** A tolerant walk of the frame, bounds-checked at every step since it may be garbage. */
function frameFields(frame: Buffer): FrameFields {
  const fields: FrameFields = { etherTypes: [], lengths: [], nextHeaders: [] };
  let at = 12;
  while (at + 2 <= frame.length && fields.etherTypes.length < 4) {
    fields.etherTypes.push(at);
    const type = frame.readUInt16BE(at);
    if (type === ETHERTYPE.IPV4) ipv4Fields(frame, at + 2, fields);
    if (type === ETHERTYPE.IPV6) ipv6Fields(frame, at + 2, fields);
    if (type !== ETHERTYPE.VLAN && type !== ETHERTYPE.QINQ) break;
    at += 4;
  }
  return fields;
}

function ipv4Fields(frame: Buffer, l3: number, fields: FrameFields): void {
  if (l3 + 20 > frame.length) return;
  fields.lengths.push({ at: l3, width: 'hi4' }, { at: l3, width: 'lo4' }, { at: l3 + 2, width: 'u16' });
  fields.nextHeaders.push(l3 + 9);
  transportFields(frame, l3 + (frame.readUInt8(l3) & 0xf) * 4, frame.readUInt8(l3 + 9), fields);
}

function ipv6Fields(frame: Buffer, l3: number, fields: FrameFields): void {
  if (l3 + 40 > frame.length) return;
  fields.ipv6 = l3;
  fields.lengths.push({ at: l3, width: 'hi4' }, { at: l3 + 4, width: 'u16' });
  let nextAt = l3 + 6;
  let cur = l3 + 40;
  for (let i = 0; i < 12; i++) {
    fields.nextHeaders.push(nextAt);
    const next = frame.readUInt8(nextAt);
    const size = extHeaderSize(frame, cur, next);
    if (size === undefined) return transportFields(frame, cur, next, fields);
    if (next !== IPPROTO.FRAGMENT) fields.lengths.push({ at: cur + 1, width: 'u8' });
    nextAt = cur;
    cur += size;
  }
}

function extHeaderSize(frame: Buffer, at: number, next: number): number | undefined {
  if (at + 8 > frame.length) return undefined;
  switch (next) {
    case IPPROTO.HOPOPTS:
    case IPPROTO.ROUTING:
    case IPPROTO.DSTOPTS:
      return (frame.readUInt8(at + 1) + 1) * 8;
    case IPPROTO.AH:
      return (frame.readUInt8(at + 1) + 2) * 4;
    case IPPROTO.FRAGMENT:
      return 8;
    default:
      return undefined;
  }
}

function transportFields(frame: Buffer, l4: number, protocol: number, fields: FrameFields): void {
  if (protocol === IPPROTO.TCP && l4 + 14 <= frame.length) fields.lengths.push({ at: l4 + 12, width: 'hi4' });
  if (protocol === IPPROTO.UDP && l4 + 8 <= frame.length) fields.lengths.push({ at: l4 + 4, width: 'u16' });
}
