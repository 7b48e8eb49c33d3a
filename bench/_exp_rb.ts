import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ClickHouseFlowStore } from '../control/store/flow-store.js';
import { FLOW_RECORD_OFFSETS as O, FLOW_RECORD_SIZE } from '../control/datapath/layout.js';
import { syntheticDrain, syntheticContext } from './store.js';

function enc(records: Buffer, host: string, offsetUs: number): Buffer {
  const n = records.length / FLOW_RECORD_SIZE;
  const hb = Buffer.from(host);
  const out = Buffer.allocUnsafe(n * 200);
  let p = 0;
  for (let b = 0; b < records.length; b += FLOW_RECORD_SIZE) {
    out[p++] = hb.length; hb.copy(out, p); p += hb.length;
    const ifn = Buffer.from('eth' + records.readUInt32LE(b + O.ifindex));
    out[p++] = ifn.length; ifn.copy(out, p); p += ifn.length;
    out[p++] = records[b + O.direction]!;
    const f = records.readUInt32LE(b + O.firstSeenNs + 4) * 4294967.296 + records.readUInt32LE(b + O.firstSeenNs) / 1000;
    out.writeBigInt64LE(BigInt(Math.floor(f + offsetUs)), p); p += 8;
    out.writeBigInt64LE(BigInt(Math.floor(f + offsetUs)), p); p += 8;
    records.copy(out, p, b + O.srcAddr, b + O.srcAddr + 16); p += 16;
    records.copy(out, p, b + O.dstAddr, b + O.dstAddr + 16); p += 16;
    out.writeUInt16LE(records.readUInt16LE(b + O.srcPort), p); p += 2;
    out.writeUInt16LE(records.readUInt16LE(b + O.dstPort), p); p += 2;
    out[p++] = records[b + O.protocol]!;
    out.writeUInt16LE(records.readUInt16LE(b + O.vlan), p); p += 2;
    out.writeUInt16LE(records.readUInt16LE(b + O.innerVlan), p); p += 2;
    out[p++] = records[b + O.tcpFlags]!;
    out[p++] = records[b + O.tcpFlags + 1]! & 1;
    for (const o of [O.packets, O.bytes, O.droppedPackets, O.droppedBytes]) { records.copy(out, p, b + o, b + o + 8); p += 8; }
    out.writeUInt32LE(records.readUInt32LE(b + O.ruleId), p); p += 4;
  }
  return out.subarray(0, p);
}
const n = Number(process.argv[2] ?? 200000);
const variant = process.argv[3] ?? 'base';
const dir = mkdtempSync(path.join(tmpdir(), 'exp-'));
const store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
const w = (store as any).clients.writer;
const recs = syntheticDrain(n);
let t0 = performance.now();
let body = enc(recs, 'bench-host', Date.now() * 1000 - 5e9);
console.log('encode', ((n / (performance.now() - t0)) * 1000).toFixed(0));
t0 = performance.now();
body = enc(recs, 'bench-host', Date.now() * 1000 - 5e9);
console.log('encode', ((n / (performance.now() - t0)) * 1000).toFixed(0), body.length / n);
if (variant === 'nomv') {
  await w.command({ query: 'DROP VIEW flowgate.flows_1m_mv' });
  await w.command({ query: 'DROP VIEW flowgate.talkers_1h_mv' });
}
const cols = 'host, iface, direction, first_seen, last_seen, src_addr, dst_addr, src_port, dst_port, protocol, vlan, inner_vlan, tcp_flags, tcp_flags_ns, packets, bytes, dropped_packets, dropped_bytes, rule_id';
for (let b = 0; b < 4; b++) {
  const f = path.join(dir, 'x.bin');
  const t0 = performance.now();
  writeFileSync(f, body);
  if (variant === 'null') {
    await w.command({ query: `INSERT INTO FUNCTION null('${'host String, iface String, direction Int8, first_seen DateTime64(6), last_seen DateTime64(6), src_addr IPv6, dst_addr IPv6, src_port UInt16, dst_port UInt16, protocol UInt8, vlan UInt16, inner_vlan UInt16, tcp_flags UInt8, tcp_flags_ns UInt8, packets UInt64, bytes UInt64, dropped_packets UInt64, dropped_bytes UInt64, rule_id UInt32'}') FROM INFILE '${f}' FORMAT RowBinary` });
  } else {
    await w.command({ query: `INSERT INTO flowgate.flows (${cols}) FROM INFILE '${f}' SETTINGS insert_deduplication_token='t${b}', deduplicate_blocks_in_dependent_materialized_views=1, parallel_view_processing=${process.env.PVP ?? 0}, optimize_on_insert=${process.env.OOI ?? 1} FORMAT RowBinary` });
  }
  console.log(variant, b, ((n / (performance.now() - t0)) * 1000).toFixed(0), 'rows/s');
}
const r = await w.query({ query: 'SELECT count(), uniqExact(src_addr), min(first_seen), any(host), any(direction) FROM flowgate.flows', format: 'JSONCompact' });
console.log(JSON.stringify((await r.json()).data));
await store.close();
rmSync(dir, { recursive: true, force: true });
