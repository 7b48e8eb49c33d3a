/**
 * encodeFlowRows: the drained bytes become exactly the TSV ClickHouse reads
 * (no engine here; store.test.ts round-trips through chDB).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FLOW_RECORD_OFFSETS, FLOW_RECORD_SIZE } from '../../control/datapath/layout.js';
import { FLOW_COLUMNS, encodeFlowRows, tsvEscape } from '../../control/store/flow-rows.js';
import { benchEncode } from '../../bench/store.js';
import { context, drain, flow, sampleV4Flow, v6, type Flow } from './records.js';

function fields(body: string): Array<Record<string, string>> {
  return body
    .split('\n')
    .filter((l) => l.length > 0)
    .map((line) => {
      const cells = line.split('\t');
      assert.equal(cells.length, FLOW_COLUMNS.length, `row has ${cells.length} fields: ${line}`);
      return Object.fromEntries(FLOW_COLUMNS.map((c, i) => [c, cells[i]!]));
    });
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
    assert.equal(enc.format, 'TabSeparated');
    assert.deepEqual([...enc.columns], [...FLOW_COLUMNS]);
    assert.ok(enc.body.endsWith('\n'));
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

  it('escapes host and interface names for TSV', () => {
    assert.equal(tsvEscape('a\tb\\c\nd\re'), 'a\\tb\\\\c\\nd\\re');
    const enc = encodeFlowRows(drain([flow({ ifindex: 9 })]), {
      ...context(offset, { 9: 'we\tird\\' }),
      host: 'hôst',
    });
    const [row] = fields(enc.body);
    assert.equal(row!.host, 'hôst');
    assert.equal(row!.iface, 'we\\tird\\\\');
  });

  it('grows its buffer for rows longer than usual, and reuses it for the next batch', () => {
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

  it('the epochOffsetNs fast path gives the same text as monoToEpochNs', () => {
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
      assert.equal(fast, slow);
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
    assert.equal(empty.body, '');
  });

  it('encodes a million records in one pass', () => {
    const r = benchEncode(1_000_000, 1);
    assert.equal(r.rows, 1_000_000);
    assert.ok(r.bytes > 100 * 1_000_000, `${r.bytes} bytes`);
    console.log(`encodeFlowRows: 1M records in ${r.seconds.toFixed(2)} s (${Math.round(r.rowsPerSec)} rows/s)`);
  });
});
