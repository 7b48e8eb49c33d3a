/**
 * The frame builder is the ground truth of every crafted-packet test, so it
 * is checked against bytes computed independently (by hand or with a
 * separate implementation), not against itself.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  buildFrame,
  crc32c,
  inetChecksum,
  ipPacketLength,
  ipv4Mapped,
  ipv6Bytes,
  l3Offset,
  mulberry32,
  mutateFrame,
  randomFrame,
  randomSpec,
  tcpFlagBits,
  truncate,
} from '../lib/frames.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ETH = 14;

describe('addresses', () => {
  it('expands IPv6 text forms', () => {
    assert.deepEqual(ipv6Bytes('2001:db8::1'), hex('20010db8 00000000 00000000 00000001'));
    assert.deepEqual(ipv6Bytes('::'), Buffer.alloc(16));
    assert.deepEqual(ipv6Bytes('fe80::1:2:3:4'), hex('fe800000 00000000 00010002 00030004'));
    assert.deepEqual(ipv6Bytes('1:2:3:4:5:6:7:8'), hex('00010002 00030004 00050006 00070008'));
    assert.deepEqual(ipv6Bytes('::ffff:10.0.0.1'), hex('00000000 00000000 0000ffff 0a000001'));
    assert.deepEqual(ipv6Bytes('1::'), hex('00010000 00000000 00000000 00000000'));
  });

  it('rejects what is not an IPv6 address', () => {
    for (const bad of ['10.0.0.1', '1::2::3', 'fe80::1%eth0', '']) {
      assert.throws(() => ipv6Bytes(bad), TypeError, bad);
    }
  });

  it('maps IPv4 into ::ffff:a.b.c.d like the flow key', () => {
    assert.deepEqual(ipv4Mapped('192.0.2.33'), hex('00000000 00000000 0000ffff c0000221'));
    assert.throws(() => ipv4Mapped('2001:db8::1'), TypeError);
  });
});

describe('checksums', () => {
  it('computes the RFC 1071 sum of a textbook IPv4 header', () => {
    // The classic worked example: its checksum is 0xb861.
    assert.equal(inetChecksum(hex('4500 0073 0000 4000 4011 0000 c0a8 0001 c0a8 00c7')), 0xb861);
  });

  it('computes CRC32c with the standard check value', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  });
});

describe('Ethernet and VLAN', () => {
  it('writes MACs and the EtherType of an untagged frame', () => {
    const frame = buildFrame({
      eth: { dst: 'ff:ff:ff:ff:ff:ff', src: '02-00-00-00-00-0a', type: 0x0806 },
      payload: 28,
    });
    assert.equal(frame.length, ETH + 28);
    assert.deepEqual(frame.subarray(0, 14), hex('ffffffffffff 02000000000a 0806'));
    assert.equal(ipPacketLength(frame), undefined);
  });

  it('puts a single 802.1Q tag before the EtherType', () => {
    const frame = buildFrame({ vlans: [{ vid: 100, pcp: 5, dei: true }], ipv4: {}, udp: {} });
    assert.deepEqual(frame.subarray(12, 18), hex('8100 b064 0800'));
    assert.deepEqual(l3Offset(frame), { offset: 18, etherType: 0x0800 });
    assert.equal(frame.readUInt8(18), 0x45);
  });

  it('uses an 802.1ad outer tag for QinQ', () => {
    const frame = buildFrame({ vlans: [100, 200], ipv6: {}, udp: {} });
    assert.deepEqual(frame.subarray(12, 22), hex('88a8 0064 8100 00c8 86dd'));
    assert.deepEqual(l3Offset(frame), { offset: 22, etherType: 0x86dd });
    assert.equal(frame.readUInt8(22) >> 4, 6);
  });

  it('builds extra tags and explicit TPIDs for negative tests', () => {
    const frame = buildFrame({ vlans: [1, 2, { vid: 3, tpid: 0x88a8 }], ipv4: {}, tcp: {} });
    assert.deepEqual(frame.subarray(12, 26), hex('88a8 0001 8100 0002 88a8 0003 0800'));
  });

  it('rejects a VLAN id that does not fit 12 bits', () => {
    assert.throws(() => buildFrame({ vlans: [4096], ipv4: {} }), RangeError);
  });

  it('requires an EtherType when there is no IP layer', () => {
    assert.throws(() => buildFrame({ payload: 4 }), TypeError);
    assert.throws(() => buildFrame({ tcp: {} }), TypeError);
  });
});

describe('IPv4', () => {
  it('matches the textbook header byte for byte', () => {
    const frame = buildFrame({
      ipv4: { src: '192.168.0.1', dst: '192.168.0.199', df: true, ttl: 64 },
      udp: {},
      payload: 0x73 - 20 - 8,
    });
    assert.deepEqual(frame.subarray(ETH, ETH + 20), hex('4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7'));
    assert.equal(ipPacketLength(frame), 0x73);
  });

  it('matches an independently computed TCP SYN packet', () => {
    const frame = buildFrame({
      ipv4: { df: true },
      tcp: { sport: 40000, dport: 80, seq: 1, flags: ['SYN'], options: [2, 4, 5, 0xb4] },
    });
    const expected = '4500002c00004000400626ca0a0000010a000002' + '9c40005000000001000000006002ffffe7920000020405b4';
    assert.equal(frame.subarray(ETH).toString('hex'), expected);
  });

  it('pads options to 32-bit words and keeps the checksum valid', () => {
    const frame = buildFrame({ ipv4: { options: [0x94, 0x04, 0, 0, 0x01] }, tcp: {} });
    assert.equal(frame.readUInt8(ETH) & 0xf, 7); // 20 + 5 option octets padded to 8
    assert.deepEqual(frame.subarray(ETH + 20, ETH + 28), hex('9404000001000000'));
    assert.equal(inetChecksum(frame.subarray(ETH, ETH + 28)), 0);
    assert.equal(frame.readUInt8(ETH + 28 + 12) >> 4, 5); // TCP starts after the options
  });

  it('encodes MF and the fragment offset in 8-octet units', () => {
    const frame = buildFrame({ ipv4: { mf: true, fragOffset: 185 }, protocol: 17, payload: 8 });
    assert.equal(frame.readUInt16BE(ETH + 6), 0x2000 | 185);
    assert.equal(frame.readUInt8(ETH + 9), 17);
    assert.equal(buildFrame({ ipv4: { flags: 0b111, fragOffset: 8191 }, payload: 0 }).readUInt16BE(ETH + 6), 0xffff);
  });

  it('writes overrides verbatim, and the checksum covers them', () => {
    const frame = buildFrame({ ipv4: { version: 5, ihl: 4, totalLength: 9000, id: 0xbeef, tos: 0xb8 }, udp: {} });
    assert.equal(frame.readUInt8(ETH), 0x54);
    assert.equal(frame.readUInt16BE(ETH + 2), 9000);
    assert.equal(frame.readUInt16BE(ETH + 4), 0xbeef);
    assert.equal(frame.readUInt8(ETH + 1), 0xb8);
    assert.equal(inetChecksum(frame.subarray(ETH, ETH + 20)), 0);
    assert.equal(buildFrame({ ipv4: { checksum: 0x1234 }, payload: 1 }).readUInt16BE(ETH + 10), 0x1234);
  });

  it('rejects options that IHL cannot express, unless IHL is overridden', () => {
    assert.throws(() => buildFrame({ ipv4: { options: new Array<number>(44).fill(1) } }), RangeError);
    const frame = buildFrame({ ipv4: { options: new Array<number>(44).fill(1), ihl: 15 }, payload: 0 });
    assert.equal(frame.length, ETH + 64);
  });

  it('labels a raw payload with any protocol number', () => {
    const frame = buildFrame({ ipv4: {}, protocol: 47, payload: [0, 0, 0x08, 0] });
    assert.equal(frame.readUInt8(ETH + 9), 47);
    assert.deepEqual(frame.subarray(ETH + 20), hex('00000800'));
    assert.equal(buildFrame({ ipv4: {}, payload: 0 }).readUInt8(ETH + 9), 253);
  });
});

describe('IPv6', () => {
  it('builds the fixed header with flow label, hop limit and payload length', () => {
    const frame = buildFrame({
      ipv6: { src: '2001:db8::1', dst: '2001:db8::2', trafficClass: 0xa5, flowLabel: 0x12345, hopLimit: 7 },
      udp: { sport: 40000, dport: 53 },
      payload: 4,
    });
    assert.deepEqual(frame.subarray(ETH, ETH + 8), hex('6a512345 000c 11 07'));
    assert.deepEqual(
      frame.subarray(ETH + 8, ETH + 40),
      Buffer.concat([ipv6Bytes('2001:db8::1'), ipv6Bytes('2001:db8::2')]),
    );
    // UDP checksum computed separately over the IPv6 pseudo-header.
    assert.deepEqual(frame.subarray(ETH + 40), hex('9c40 0035 000c 05e8 00010203'));
    assert.equal(ipPacketLength(frame), 40 + 12);
  });

  it('chains extension headers and sizes hop-by-hop in 8-octet units minus 1', () => {
    const frame = buildFrame({
      ipv6: { ext: [{ type: 'hop' }, { type: 'hop', options: [0x1e, 8, 1, 2, 3, 4, 5, 6, 7, 8] }, { type: 'frag' }] },
      tcp: {},
    });
    const l3 = ETH;
    assert.equal(frame.readUInt8(l3 + 6), 0); // fixed header → hop-by-hop
    // Empty hop-by-hop: one PadN of 4 fills the first 8 octets.
    assert.deepEqual(frame.subarray(l3 + 40, l3 + 48), hex('00 00 0104 00000000'));
    // 2 + 10 option octets → 16: Hdr Ext Len 1, then PadN of 2 (4 octets).
    const second = l3 + 48;
    assert.deepEqual(frame.subarray(second, second + 16), hex('2c 01 1e08 0102030405060708 0102 0000'));
    assert.deepEqual(frame.subarray(second + 16, second + 24), hex('06 00 0000 00000000'));
    assert.equal(frame.readUInt16BE(l3 + 4), 8 + 16 + 8 + 20);
  });

  it('uses Pad1 when a single octet is missing', () => {
    const frame = buildFrame({ ipv6: { ext: [{ type: 'dest', options: [0x1e, 3, 9, 9, 9] }] }, protocol: 59 });
    assert.deepEqual(frame.subarray(ETH + 40, ETH + 48), hex('3b 00 1e03 090909 00'));
    assert.equal(frame.readUInt8(ETH + 6), 60);
  });

  it('sizes AH in 4-octet units minus 2', () => {
    const frame = buildFrame({ ipv6: { ext: [{ type: 'ah', spi: 0x1000, seq: 5 }] }, udp: {} });
    // 12 fixed octets + 12 octet ICV = 24 octets = 6 words → Payload Len 4.
    assert.deepEqual(frame.subarray(ETH + 40, ETH + 52), hex('11 04 0000 00001000 00000005'));
    assert.equal(frame.readUInt8(ETH + 6), 51);
    // A 16-octet ICV makes 28 octets, padded to 32 for IPv6 alignment → Payload Len 6.
    const longer = buildFrame({ ipv6: { ext: [{ type: 'ah', icv: new Array<number>(16).fill(0xaa) }] }, udp: {} });
    assert.equal(longer.readUInt8(ETH + 41), 6);
    assert.equal(longer.readUInt16BE(ETH + 4), 32 + 8);
  });

  it('encodes the fragment offset, M flag and id', () => {
    const frame = buildFrame({ ipv6: { ext: [{ type: 'frag', offset: 185, more: true, id: 0xdeadbeef }] }, udp: {} });
    assert.deepEqual(frame.subarray(ETH + 40, ETH + 48), hex('11 00 05c9 deadbeef'));
    const last = buildFrame({ ipv6: { ext: [{ type: 'frag', offset: 8191 }] }, protocol: 6, payload: 8 });
    assert.equal(last.readUInt16BE(ETH + 42), 0xfff8);
  });

  it('builds routing headers and pads their data to 8 octets', () => {
    const frame = buildFrame({
      ipv6: { ext: [{ type: 'routing', routingType: 4, segmentsLeft: 1, data: new Array<number>(12).fill(0xee) }] },
      icmpv6: {},
    });
    assert.deepEqual(frame.subarray(ETH + 40, ETH + 44), hex('3a 01 04 01'));
    assert.equal(frame.readUInt16BE(ETH + 4), 16 + 8);
  });

  it('applies raw overrides of lengths and chaining', () => {
    const frame = buildFrame({
      ipv6: {
        nextHeader: 60,
        payloadLength: 0xffff,
        ext: [
          { type: 'hop', hdrExtLen: 200, nextHeader: 44 },
          { type: 'ah', payloadLen: 0 },
          { type: 'raw', protocol: 135, bytes: [0xff, 7, 1, 2, 3, 4, 5, 6] },
        ],
      },
      udp: {},
    });
    assert.equal(frame.readUInt8(ETH + 6), 60);
    assert.equal(frame.readUInt16BE(ETH + 4), 0xffff);
    assert.deepEqual(frame.subarray(ETH + 40, ETH + 42), hex('2c c8'));
    assert.deepEqual(frame.subarray(ETH + 48, ETH + 50), hex('87 00')); // AH chains to the raw header
    assert.deepEqual(frame.subarray(ETH + 72, ETH + 80), hex('11 07 010203040506'));
  });

  it('computes the ICMPv6 checksum over the pseudo-header', () => {
    const frame = buildFrame({ ipv6: {}, icmpv6: { id: 7, seq: 1 } });
    assert.deepEqual(frame.subarray(ETH + 40), hex('80 00 2440 0007 0001'));
  });

  it('counts a payload length of 0 as a jumbogram spanning the frame', () => {
    const frame = buildFrame({ ipv6: { payloadLength: 0 }, tcp: {}, payload: 100, padTo: 200 });
    assert.equal(ipPacketLength(frame), 200 - ETH);
  });
});

describe('transports', () => {
  it('sets the TCP data offset from the options, and NS in the offset octet', () => {
    const frame = buildFrame({ ipv4: {}, tcp: { flags: ['NS', 'SYN', 'ACK'], options: [2, 4, 5, 0xb4, 1, 3, 3] } });
    const tcp = ETH + 20;
    assert.equal(frame.readUInt8(tcp + 12), 0x71); // 20 + 8 option octets = 7 words; NS
    assert.equal(frame.readUInt8(tcp + 13), 0x12);
    assert.deepEqual(frame.subarray(tcp + 20, tcp + 28), hex('020405b4 01030300'));
  });

  it('writes a data offset override without changing the header bytes', () => {
    const frame = buildFrame({ ipv4: {}, tcp: { dataOffset: 4, flags: 0x1ff } });
    assert.equal(frame.readUInt8(ETH + 20 + 12), 0x41);
    assert.equal(frame.readUInt8(ETH + 20 + 13), 0xff);
    assert.equal(frame.length, ETH + 40);
  });

  it('maps flag names to the datapath bits', () => {
    assert.equal(tcpFlagBits(['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS']), 0x1ff);
    assert.equal(tcpFlagBits([]), 0);
    assert.throws(() => tcpFlagBits(0x200), RangeError);
  });

  it('writes UDP length and checksum overrides, including checksum 0', () => {
    const frame = buildFrame({ ipv4: {}, udp: { length: 3, checksum: 0 }, payload: 10 });
    assert.equal(frame.readUInt16BE(ETH + 20 + 4), 3);
    assert.equal(frame.readUInt16BE(ETH + 20 + 6), 0);
  });

  it('computes a UDP checksum that verifies over the IPv4 pseudo-header', () => {
    const frame = buildFrame({ ipv4: { src: '198.51.100.7', dst: '203.0.113.9' }, udp: {}, payload: 33 });
    const udp = frame.subarray(ETH + 20);
    const pseudo = Buffer.concat([hex('c6336407 cb007109 0011'), Buffer.from([0, udp.length])]);
    assert.equal(inetChecksum(pseudo, udp), 0);
  });

  it('builds the SCTP common header with a CRC32c', () => {
    const frame = buildFrame({ ipv4: {}, sctp: { sport: 40000, dport: 5000, vtag: 0x11223344 }, payload: 4 });
    assert.deepEqual(frame.subarray(ETH + 20), hex('9c40 1388 11223344 85709ee5 00010203'));
    assert.equal(frame.readUInt8(ETH + 9), 132);
  });

  it('builds ICMP echo with its checksum', () => {
    const frame = buildFrame({ ipv4: {}, icmp: { id: 7, seq: 1 }, payload: 4 });
    assert.deepEqual(frame.subarray(ETH + 20), hex('08 00 f5f3 0007 0001 00010203'));
    const unreachable = buildFrame({ ipv4: {}, icmp: { type: 3, code: 4 } });
    assert.deepEqual(unreachable.subarray(ETH + 20, ETH + 22), hex('0304'));
  });

  it('lets the protocol number mislabel a built header', () => {
    const frame = buildFrame({ ipv6: { ext: [{ type: 'dest' }] }, tcp: {}, protocol: 17 });
    assert.equal(frame.readUInt8(ETH + 40), 17);
    assert.equal(frame.readUInt8(ETH + 48 + 12) >> 4, 5);
  });

  it('refuses two transports at once', () => {
    assert.throws(() => buildFrame({ ipv4: {}, tcp: {}, udp: {} }), TypeError);
  });
});

describe('frame-level helpers', () => {
  it('counts the IP length, not Ethernet padding', () => {
    const frame = buildFrame({ vlans: [7], ipv4: {}, udp: {}, payload: 2, padTo: 60 });
    assert.equal(frame.length, 60);
    assert.equal(ipPacketLength(frame), 30);
    assert.deepEqual(frame.subarray(18 + 30), Buffer.alloc(60 - 48));
  });

  it('fills a numeric payload with a counting pattern', () => {
    const frame = buildFrame({ ipv4: {}, protocol: 253, payload: 300 });
    assert.equal(frame.readUInt8(ETH + 20 + 255), 255);
    assert.equal(frame.readUInt8(ETH + 20 + 256), 0);
  });

  it('truncates to a copy', () => {
    const frame = buildFrame({ ipv4: {}, tcp: {} });
    const cut = truncate(frame, 20);
    assert.equal(cut.length, 20);
    cut[0] = 0x99;
    assert.notEqual(frame[0], 0x99);
    assert.equal(truncate(frame, 1000).length, frame.length);
  });
});

describe('random frames and mutation', () => {
  it('mulberry32 repeats its sequence for a seed', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const xs = Array.from({ length: 100 }, () => a());
    assert.deepEqual(
      Array.from({ length: 100 }, () => b()),
      xs,
    );
    assert.ok(xs.every((x) => x >= 0 && x < 1));
    assert.notDeepEqual(mulberry32(43)(), xs[0]);
  });

  it('builds every random spec, and IP frames carry their own length', () => {
    const rng = mulberry32(1);
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) {
      const spec = randomSpec(rng);
      const frame = buildFrame(spec);
      const l3 = l3Offset(frame);
      assert.ok(l3 !== undefined);
      seen.add(l3.etherType);
      const ipLength = ipPacketLength(frame);
      if (spec.ipv4 !== undefined || spec.ipv6 !== undefined) {
        assert.ok(ipLength !== undefined);
        assert.ok(l3.offset + ipLength <= frame.length, `frame ${i}`);
        if (spec.padTo === undefined) assert.equal(l3.offset + ipLength, frame.length, `frame ${i}`);
      }
    }
    assert.ok(seen.has(0x0800) && seen.has(0x86dd) && seen.size > 2);
  });

  it('randomFrame is deterministic for a seed', () => {
    const a = mulberry32(7);
    const b = mulberry32(7);
    for (let i = 0; i < 200; i++) assert.deepEqual(randomFrame(a), randomFrame(b));
  });

  it('mutateFrame is deterministic for a seed and leaves its input alone', () => {
    const base = buildFrame({ vlans: [5], ipv6: { ext: [{ type: 'hop' }, { type: 'frag' }] }, tcp: {}, payload: 40 });
    const original = Buffer.from(base);
    const run = (seed: number): Buffer[] => {
      const rng = mulberry32(seed);
      return Array.from({ length: 300 }, () => mutateFrame(base, rng));
    };
    const first = run(99);
    assert.deepEqual(run(99), first);
    assert.notDeepEqual(run(100), first);
    assert.deepEqual(base, original);
    // Mutations actually change frames, in content and in length.
    assert.ok(first.filter((f) => !f.equals(base)).length > 250);
    assert.ok(first.some((f) => f.length < base.length) && first.some((f) => f.length > base.length));
  });

  it('survives mutating its own output repeatedly', () => {
    const rng = mulberry32(2024);
    for (let i = 0; i < 500; i++) {
      let frame = randomFrame(rng);
      for (let round = 0; round < 5; round++) frame = mutateFrame(frame, rng);
      ipPacketLength(frame); // must not throw on garbage
    }
  });
});
