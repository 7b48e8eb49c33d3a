import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ClickHouseFlowStore } from '../control/store/flow-store.js';
import { encodeFlowRows } from '../control/store/flow-rows.js';
import { syntheticDrain, syntheticContext } from './store.js';

const n = Number(process.argv[2] ?? 200000);
const variant = process.argv[3] ?? 'base';
const dir = mkdtempSync(path.join(tmpdir(), 'exp-'));
const store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
const w = (store as any).clients.writer;
if (variant === 'nomv') {
  await w.command({ query: 'DROP VIEW flowgate.flows_1m_mv' });
  await w.command({ query: 'DROP VIEW flowgate.talkers_1h_mv' });
}
if (variant === 'noidx') {
  await w.command({ query: 'DROP VIEW flowgate.flows_1m_mv' });
  await w.command({ query: 'DROP VIEW flowgate.talkers_1h_mv' });
  await w.command({ query: 'ALTER TABLE flowgate.flows DROP INDEX dst_addr_bloom' });
  await w.command({ query: 'ALTER TABLE flowgate.flows DROP INDEX dst_port_set' });
}
const rows = encodeFlowRows(syntheticDrain(n), syntheticContext());
for (let b = 0; b < 4; b++) {
  const t0 = performance.now();
  if (variant === 'null') {
    const f = path.join(dir, 'x.tsv'); writeFileSync(f, rows.body);
    await w.command({ query: `INSERT INTO FUNCTION null('${'host String, iface String, direction String, first_seen DateTime64(6), last_seen DateTime64(6), src_addr IPv6, dst_addr IPv6, src_port UInt16, dst_port UInt16, protocol UInt8, vlan UInt16, inner_vlan UInt16, tcp_flags UInt8, tcp_flags_ns UInt8, packets UInt64, bytes UInt64, dropped_packets UInt64, dropped_bytes UInt64, rule_id UInt32'}') FROM INFILE '${f}' FORMAT TabSeparated` });
  } else if (variant === 'raw') {
    await w.command({query: 'SELECT 1'});
  } else await store.insertFlows(rows, `bench:${b}`);
  console.log(variant, b, ((n / (performance.now() - t0)) * 1000).toFixed(0), 'rows/s');
}
await store.close();
rmSync(dir, { recursive: true, force: true });
