/**
 * control/metrics.ts: what the agent's AgentMetricsSink calls turn into, and
 * kernel running totals becoming monotonic Prometheus counters.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Metrics } from '../../control/metrics.js';
import type { IfaceStats } from '../../control/datapath/layout.js';

function value(text: string, series: string): number | undefined {
  const escaped = series.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = new RegExp(`^${escaped} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

test('running totals become counters: deltas added, a reset added in full', async () => {
  const m = new Metrics({ defaultMetrics: false });
  m.setIfaceTotals('eth0', 'ingress', { packets: 100, bytes: 5000, droppedPackets: 0, malformed: { eth_trunc: 0 } });
  m.setIfaceTotals('eth0', 'ingress', { packets: 150, bytes: 7000, droppedPackets: 4, malformed: { eth_trunc: 2 } });
  m.setIfaceTotals('eth0', 'egress', { packets: 9 });
  let text = await m.render();
  assert.equal(value(text, 'flowgate_iface_packets_total{iface="eth0",direction="ingress"}'), 150);
  assert.equal(value(text, 'flowgate_iface_bytes_total{iface="eth0",direction="ingress"}'), 7000);
  assert.equal(value(text, 'flowgate_iface_dropped_packets_total{iface="eth0",direction="ingress"}'), 4);
  assert.equal(
    value(text, 'flowgate_iface_malformed_packets_total{iface="eth0",direction="ingress",reason="eth_trunc"}'),
    2,
  );
  assert.equal(value(text, 'flowgate_iface_packets_total{iface="eth0",direction="egress"}'), 9);

  // The kernel counter restarted from 0 (maps recreated): the new total is added, never subtracted.
  m.setIfaceTotals('eth0', 'ingress', { packets: 30 });
  text = await m.render();
  assert.equal(value(text, 'flowgate_iface_packets_total{iface="eth0",direction="ingress"}'), 180);

  await m.removeIface('eth0');
  text = await m.render();
  assert.doesNotMatch(text, /iface="eth0"/);
  // After removal the next total starts the series afresh.
  m.setIfaceTotals('eth0', 'ingress', { packets: 40 });
  assert.equal(value(await m.render(), 'flowgate_iface_packets_total{iface="eth0",direction="ingress"}'), 40);
});

test('AgentMetricsSink calls update the drain, store, spool and fill metrics', async () => {
  const m = new Metrics({ defaultMetrics: false });
  m.drained({
    trigger: 'early',
    token: 't1',
    flows: 1000,
    evicted: 3,
    insertFailed: 1,
    readMs: 0,
    spoolMs: 0,
    releaseMs: 0,
    durationMs: 20,
    alreadySpooled: false,
    droppedFromSpool: [
      { token: 'a', rows: 10 },
      { token: 'b', rows: 5 },
    ],
  });
  m.drained({
    trigger: 'interval',
    token: 't2',
    flows: 10,
    evicted: 0,
    insertFailed: 0,
    readMs: 0,
    spoolMs: 0,
    releaseMs: 0,
    durationMs: 2,
    alreadySpooled: false,
    droppedFromSpool: [],
  });
  m.inserted(1010, 0.05);
  m.storeError();
  m.spool(2, 4096);
  m.fill(0.25);
  const stats: IfaceStats[] = [
    {
      ifindex: 3,
      direction: 'egress',
      counters: {
        seen_packets: 7,
        seen_bytes: 700,
        passed_packets: 7,
        dropped_packets: 0,
        dropped_bytes: 0,
        ip_packets: 6,
        non_ip_packets: 1,
        new_flows: 2,
        flow_insert_failed: 0,
      },
      malformed: {} as IfaceStats['malformed'],
    },
  ];
  m.ifaceStats(stats, (i) => `veth${i}`);
  m.rules.set(12);
  m.ruleEnforceLatency.observe(0.002);

  const text = await m.render();
  assert.equal(value(text, 'flowgate_drains_total{trigger="early"}'), 1);
  assert.equal(value(text, 'flowgate_drains_total{trigger="interval"}'), 1);
  assert.equal(value(text, 'flowgate_drains_total{trigger="shutdown"}'), 0);
  assert.equal(value(text, 'flowgate_flows_drained_total'), 1010);
  assert.equal(value(text, 'flowgate_flows_evicted_total'), 3);
  assert.equal(value(text, 'flowgate_flow_insert_failures_total'), 1);
  assert.equal(value(text, 'flowgate_spool_dropped_flows_total'), 15);
  assert.equal(value(text, 'flowgate_drain_duration_seconds_count'), 2);
  assert.equal(value(text, 'flowgate_drain_duration_seconds_sum'), 0.022);
  assert.equal(value(text, 'flowgate_store_rows_inserted_total'), 1010);
  assert.equal(value(text, 'flowgate_store_insert_duration_seconds_count'), 1);
  assert.equal(value(text, 'flowgate_store_errors_total'), 1);
  assert.equal(value(text, 'flowgate_spool_batches'), 2);
  assert.equal(value(text, 'flowgate_spool_bytes'), 4096);
  assert.equal(value(text, 'flowgate_active_flow_slot_fill_ratio'), 0.25);
  assert.equal(value(text, 'flowgate_iface_packets_total{iface="veth3",direction="egress"}'), 7);
  assert.equal(value(text, 'flowgate_iface_non_ip_packets_total{iface="veth3",direction="egress"}'), 1);
  assert.equal(value(text, 'flowgate_rules'), 12);
  assert.equal(value(text, 'flowgate_rule_enforce_latency_seconds_count'), 1);
  assert.equal(m.contentType.split(';')[0], 'text/plain');
});

test('two Metrics do not share a registry', async () => {
  const a = new Metrics({ defaultMetrics: false });
  const b = new Metrics({ defaultMetrics: false });
  a.storeError();
  assert.equal(value(await a.render(), 'flowgate_store_errors_total'), 1);
  assert.equal(value(await b.render(), 'flowgate_store_errors_total'), 0);
});
