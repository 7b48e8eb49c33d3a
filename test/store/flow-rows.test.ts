/**
 * encodeFlowRows: the drained bytes become exactly the RowBinary ClickHouse
 * reads. A reader written here from the format's definition turns each row
 * back into text (no engine here; store.test.ts round-trips through chDB).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FLOW_RECORD_OFFSETS, FLOW_RECORD_SIZE } from '../../control/datapath/layout.js';
import { FLOW_COLUMNS, encodeFlowRows } from '../../control/store/flow-rows.js';
import { benchEncode } from '../../bench/store.js';
import { context, drain, flow, sampleV4Flow, v6, type Flow } from './records.js';

/** RowBinary rows of FLOW_COLUMNS as text: addresses as ClickHouse prints IPv6 (mapped v4 as ::ffff:a.b.c.d, else 8 groups). */
function fields(body: Buffer): Array<Record<string, string>> {
  const rows: Array<Record<string, string>> = [];
  let at = 0;
  const str = (): string => {
    let len = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = body[at++]!;
      len |= (byte & 0x7f) << shift;
      if (byte < 0x80) break;
    }
    at += len;
    return body.toString('utf8', at - len, at);
  };
  const u = (bytes: 1 | 2 | 4 | 8): string => {
    const v = bytes === 8 ? body.readBigUInt64LE(at) : body.readUIntLE(at, bytes);
    at += bytes;
    return v.toString();
  };
  const time = (): string => {
    const us = body.readBigInt64LE(at);
    at += 8;
    return `${us / 1_000_000n}.${String(us % 1_000_000n).padStart(6, '0')}`;
  };
  const ip = (): string => {
    const a = body.subarray(at, (at += 16));
    if (a.subarray(0, 10).every((x) => x === 0) && a[10] === 0xff && a[11] === 0xff) {
      return `::ffff:${[...a.subarray(12)].join('.')}`;
    }
    return Array.from({ length: 8 }, (_, g) => a.readUInt16BE(g * 2).toString(16)).join(':');
  };
  while (at < body.length) {
    const host = str();
    const iface = str();
    const direction = body[at++] === 2 ? 'egress' : 'ingress';
    rows.push({
      host,
      iface,
      direction,
      first_seen: time(),
      last_seen: time(),
      src_addr: ip(),
      dst_addr: ip(),
      src_port: u(2),
      dst_port: u(2),
      protocol: u(1),
      vlan: u(2),
      inner_vlan: u(2),
      tcp_flags: u(1),
      tcp_flags_ns: u(1),
      packets: u(8),
      bytes: u(8),
      dropped_packets: u(8),
      dropped_bytes: u(8),
      rule_id: u(4),
    });
    assert.deepEqual(Object.keys(rows.at(-1)!), [...FLOW_COLUMNS]);
  }
  assert.equal(at, body.length, 'the body ends with a whole row');
  return rows;
}

describe('encodeFlowRows', () => {
  // Epoch = mono + offset; 1 700 000 000.123 456 789 s at mono 5 s.
  const offset = 1_700_000_000_123_456_789n - 5_000_000_000n;

  it('writes every column from the record bytes', () => {
    const records = drain([
      flow(sampleV4Flow()),
      flow({
        family: 6,
        srcAddr: v6('2001:0db8:0000:0000:0000:0000:0000:0001'),
        dstAddr: v6('fe80:0000:0000:0000:0a0b:0c0d:0e0f:ffff'),
        srcPort: 128,
        dstPort: 0,
        protocol: 58,
        ifindex: 3,
        direction: 'egress',
        packets: 0,
        bytes: 0,
        tcpFlags: 0x12,
      }),
    ]);
    // Past 2^53 (not a JS number): straight into the record's bytes.
    records.writeBigUInt64LE(2n ** 53n + 1n, FLOW_RECORD_SIZE + FLOW_RECORD_OFFSETS.packets);
    const enc = encodeFlowRows(records, context(offset));
    assert.equal(enc.rows, 2);
    assert.equal(enc.format, 'RowBinary');
    assert.deepEqual([...enc.columns], [...FLOW_COLUMNS]);
    const [a, b] = fields(enc.body);
    assert.deepEqual(a, {
      host: 'test-host',
      iface: 'eth0',
      direction: 'ingress',
      first_seen: '1700000000.123456',
      last_seen: '1700000002.623457',
      src_addr: '::ffff:10.1.2.3',
      dst_addr: '::ffff:192.0.2.200',
      src_port: '51000',
      dst_port: '443',
      protocol: '6',
      vlan: '100',
      inner_vlan: '200',
      tcp_flags: '255',
      tcp_flags_ns: '1',
      packets: '10',
      bytes: '12345',
      dropped_packets: '2',
      dropped_bytes: '120',
      rule_id: '42',
    });
    assert.equal(b!.iface, 'eth1');
    assert.equal(b!.direction, 'egress');
    assert.equal(b!.src_addr, '2001:db8:0:0:0:0:0:1');
    assert.equal(b!.dst_addr, 'fe80:0:0:0:a0b:c0d:e0f:ffff');
    assert.equal(b!.packets, '9007199254740993', 'u64 counters are exact past 2^53');
    assert.equal(b!.tcp_flags, '18');
    assert.equal(b!.tcp_flags_ns, '0');
  });

  it('writes host and interface names as they are, UTF-8 included', () => {
    const enc = encodeFlowRows(drain([flow({ ifindex: 9 })]), {
      ...context(offset, { 9: 'we\tird\\' }),
      host: 'hôst',
    });
    const [row] = fields(enc.body);
    assert.equal(row!.host, 'hôst');
    assert.equal(row!.iface, 'we\tird\\');
  });

  it('sizes each body for its own rows (a long host name, then a short batch)', () => {
    const host = 'h'.repeat(300);
    const records = drain(Array.from({ length: 1000 }, (_, i) => flow({ srcPort: i })));
    const long = fields(encodeFlowRows(records, { ...context(offset), host }).body);
    assert.equal(long.length, 1000);
    assert.ok(long.every((r, i) => r.host === host && r.src_port === String(i)));
    const short = fields(encodeFlowRows(drain([flow({ srcPort: 7 })]), context(offset)).body);
    assert.deepEqual(
      short.map((r) => [r.host, r.src_port]),
      [['test-host', '7']],
    );
  });

  it('the epochOffsetNs fast path gives the same bytes as monoToEpochNs', () => {
    const flows: Flow[] = [];
    let seed = 12345;
    const rnd = (): bigint => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return BigInt(seed);
    };
    for (let i = 0; i < 2000; i++) {
      // Monotonic times from boot to ~2^62 ns (146 years of uptime), all digits exercised.
      const first = (rnd() << 31n) | rnd();
      flows.push(flow({ firstSeenNs: first, lastSeenNs: first + rnd() }));
    }
    for (const off of [offset, 1_700_000_000_000_000_001n, 999n, 1_764_000_000_999_999_999n - 3n * 10n ** 15n]) {
      const ctx = context(off);
      const slow = encodeFlowRows(drain(flows), ctx).body;
      let calls = 0;
      const fast = encodeFlowRows(drain(flows), {
        ...ctx,
        epochOffsetNs: off,
        monoToEpochNs: (ns) => {
          calls++;
          return ns + off;
        },
      }).body;
      assert.ok(fast.equals(slow));
      assert.equal(calls, 0);
      // And both agree with plain BigInt arithmetic.
      const want = flows.map((f) => {
        const us = (f.firstSeenNs + off) / 1000n;
        return `${us / 1_000_000n}.${String(us % 1_000_000n).padStart(6, '0')}`;
      });
      assert.deepEqual(
        fields(slow).map((r) => r.first_seen),
        want,
      );
    }
  });

  it('rejects a buffer that is not whole records, and encodes an empty one', () => {
    assert.throws(() => encodeFlowRows(Buffer.alloc(FLOW_RECORD_SIZE + 1), context(offset)), /whole number/);
    const empty = encodeFlowRows(Buffer.alloc(0), context(offset));
    assert.equal(empty.rows, 0);
    assert.equal(empty.body.length, 0);
  });

  it('encodes a million records in one pass', () => {
    const r = benchEncode(1_000_000, 1);
    assert.equal(r.rows, 1_000_000);
    assert.ok(r.bytes > 100 * 1_000_000, `${r.bytes} bytes`);
    console.log(`encodeFlowRows: 1M records in ${r.seconds.toFixed(2)} s (${Math.round(r.rowsPerSec)} rows/s)`);
  });
});
