/**
 * The agent's Prometheus metrics, served at GET /metrics (control/api).
 *
 * One `Metrics` owns one prom-client Registry (the default process and
 * Node.js metrics included unless `defaultMetrics: false`). The agent updates
 * the typed fields; nothing registers into prom-client's global registry.
 *
 * Names (stable; dashboards and alerts use them):
 *
 * | field | metric | type | labels |
 * | --- | --- | --- | --- |
 * | ifacePackets | flowgate_iface_packets_total | counter | iface, direction |
 * | ifaceBytes | flowgate_iface_bytes_total | counter | iface, direction |
 * | ifaceDroppedPackets | flowgate_iface_dropped_packets_total | counter | iface, direction |
 * | ifaceNonIpPackets | flowgate_iface_non_ip_packets_total | counter | iface, direction |
 * | ifaceMalformedPackets | flowgate_iface_malformed_packets_total | counter | iface, direction, reason |
 * | flowsDrained | flowgate_flows_drained_total | counter | |
 * | flowsEvicted | flowgate_flows_evicted_total | counter | |
 * | flowInsertFailures | flowgate_flow_insert_failures_total | counter | |
 * | drainDuration | flowgate_drain_duration_seconds | histogram | |
 * | drains | flowgate_drains_total | counter | trigger = interval, early, shutdown |
 * | spoolBytes | flowgate_spool_bytes | gauge | |
 * | spoolBatches | flowgate_spool_batches | gauge | |
 * | spoolDroppedFlows | flowgate_spool_dropped_flows_total | counter | |
 * | storeInsertDuration | flowgate_store_insert_duration_seconds | histogram | |
 * | storeErrors | flowgate_store_errors_total | counter | |
 * | storeRowsInserted | flowgate_store_rows_inserted_total | counter | |
 * | activeFlowSlotFillRatio | flowgate_active_flow_slot_fill_ratio | gauge | |
 * | ruleEnforceLatency | flowgate_rule_enforce_latency_seconds | histogram | |
 * | rules | flowgate_rules | gauge | |
 * | rulesSyncs | flowgate_rules_syncs_total | counter | result = ok, failed (--rules-source store) |
 * | rulesLastSync | flowgate_rules_last_sync_timestamp_seconds | gauge | (last check the store answered) |
 *
 * The agent feeds it through AgentMetricsSink (control/agent/agent.ts):
 * drained(), inserted(), storeError(), spool(), fill(), ifaceStats(). Rules
 * code sets `rules` and observes `ruleEnforceLatency` directly.
 *
 * The kernel keeps per-interface counters as running totals; they go in with
 * `ifaceStats()` / `setIfaceTotals()` (or `setTotal()` for any counter), which
 * add the difference since the last call, so the Prometheus counters follow
 * the kernel's totals without ever going down.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AgentMetricsSink } from './agent/agent.js';
import type { DrainSummary } from './agent/collector.js';
import type { IfaceStats } from './datapath/layout.js';

export type Direction = 'ingress' | 'egress';

type IfaceLabels = 'iface' | 'direction';

/** Running totals of one interface in one direction, as the kernel counts them. */
export interface IfaceTotals {
  packets?: number;
  bytes?: number;
  droppedPackets?: number;
  nonIpPackets?: number;
  /** Malformed frames by reason. */
  malformed?: Record<string, number>;
}

export interface MetricsOptions {
  /** Collect prom-client's default process/Node.js metrics (default true). */
  defaultMetrics?: boolean;
}

/** Latency buckets (seconds) from 1 ms to 30 s: drains and store inserts. */
const IO_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** From an API call to enforcement in the kernel: 100 µs to 10 s. */
const ENFORCE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];

export class Metrics implements AgentMetricsSink {
  readonly registry: Registry;

  readonly ifacePackets: Counter<IfaceLabels>;
  readonly ifaceBytes: Counter<IfaceLabels>;
  readonly ifaceDroppedPackets: Counter<IfaceLabels>;
  readonly ifaceNonIpPackets: Counter<IfaceLabels>;
  readonly ifaceMalformedPackets: Counter<IfaceLabels | 'reason'>;

  readonly flowsDrained: Counter;
  readonly flowsEvicted: Counter;
  readonly flowInsertFailures: Counter;
  readonly drainDuration: Histogram;
  /** trigger: interval, early, shutdown (and recovery: finishing a drain an earlier run began). */
  readonly drains: Counter<'trigger'>;

  readonly spoolBytes: Gauge;
  readonly spoolBatches: Gauge;
  readonly spoolDroppedFlows: Counter;

  readonly storeInsertDuration: Histogram;
  readonly storeErrors: Counter;
  readonly storeRowsInserted: Counter;

  readonly activeFlowSlotFillRatio: Gauge;
  readonly ruleEnforceLatency: Histogram;
  readonly rules: Gauge;
  readonly rulesSyncs: Counter<'result'>;
  readonly rulesLastSync: Gauge;

  /** Last total seen by setTotal(), per counter and label set. */
  private readonly lastTotals = new WeakMap<Counter<string>, Map<string, number>>();

  constructor(opts: MetricsOptions = {}) {
    this.registry = new Registry();
    const registers = [this.registry];
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });

    const ifaceLabels: IfaceLabels[] = ['iface', 'direction'];
    this.ifacePackets = new Counter({
      name: 'flowgate_iface_packets_total',
      help: 'Packets the XDP (ingress) or TC (egress) hook saw on an interface.',
      labelNames: ifaceLabels,
      registers,
    });
    this.ifaceBytes = new Counter({
      name: 'flowgate_iface_bytes_total',
      help: 'Bytes (IP packet length) the hook saw on an interface.',
      labelNames: ifaceLabels,
      registers,
    });
    this.ifaceDroppedPackets = new Counter({
      name: 'flowgate_iface_dropped_packets_total',
      help: 'Packets a rule dropped on an interface.',
      labelNames: ifaceLabels,
      registers,
    });
    this.ifaceNonIpPackets = new Counter({
      name: 'flowgate_iface_non_ip_packets_total',
      help: 'Frames that were not IPv4 or IPv6 (passed, not counted as flows).',
      labelNames: ifaceLabels,
      registers,
    });
    this.ifaceMalformedPackets = new Counter({
      name: 'flowgate_iface_malformed_packets_total',
      help: 'Truncated or malformed frames (passed, not counted as flows), by reason.',
      labelNames: [...ifaceLabels, 'reason'],
      registers,
    });

    this.flowsDrained = new Counter({
      name: 'flowgate_flows_drained_total',
      help: 'Flow entries read out of the kernel flow maps.',
      registers,
    });
    this.flowsEvicted = new Counter({
      name: 'flowgate_flows_evicted_total',
      help: 'Flow entries the kernel LRU evicted before a drain (inserts minus drained): lost flows.',
      registers,
    });
    this.flowInsertFailures = new Counter({
      name: 'flowgate_flow_insert_failures_total',
      help: 'Failed flow-map inserts in the kernel.',
      registers,
    });
    this.drainDuration = new Histogram({
      name: 'flowgate_drain_duration_seconds',
      help: 'Time of one drain: slot flip, grace period, batch read-and-delete, merge.',
      buckets: IO_BUCKETS,
      registers,
    });
    this.drains = new Counter({
      name: 'flowgate_drains_total',
      help: 'Drains, by what triggered them: the interval, an early drain of a filling map, or shutdown.',
      labelNames: ['trigger'],
      registers,
    });

    this.spoolBytes = new Gauge({
      name: 'flowgate_spool_bytes',
      help: 'Bytes of flow batches spooled while the store is unavailable.',
      registers,
    });
    this.spoolBatches = new Gauge({
      name: 'flowgate_spool_batches',
      help: 'Flow batches spooled while the store is unavailable.',
      registers,
    });
    this.spoolDroppedFlows = new Counter({
      name: 'flowgate_spool_dropped_flows_total',
      help: 'Flow rows dropped because the spool was full.',
      registers,
    });

    this.storeInsertDuration = new Histogram({
      name: 'flowgate_store_insert_duration_seconds',
      help: 'Time of one flow-batch INSERT into the store.',
      buckets: IO_BUCKETS,
      registers,
    });
    this.storeErrors = new Counter({
      name: 'flowgate_store_errors_total',
      help: 'Failed store operations (inserts, migrations, pings).',
      registers,
    });
    this.storeRowsInserted = new Counter({
      name: 'flowgate_store_rows_inserted_total',
      help: 'Flow rows inserted into the store.',
      registers,
    });

    this.activeFlowSlotFillRatio = new Gauge({
      name: 'flowgate_active_flow_slot_fill_ratio',
      help: 'Inserts into the active flow map over its capacity (the agent drains early before 1).',
      registers,
    });
    this.ruleEnforceLatency = new Histogram({
      name: 'flowgate_rule_enforce_latency_seconds',
      help: 'From accepting a rule change to the kernel enforcing it.',
      buckets: ENFORCE_BUCKETS,
      registers,
    });
    this.rules = new Gauge({
      name: 'flowgate_rules',
      help: 'Rules in the active rule set.',
      registers,
    });

    this.rulesSyncs = new Counter({
      name: 'flowgate_rules_syncs_total',
      help: "Checks of the fleet's rule set in the store (--rules-source store), by whether the store answered.",
      labelNames: ['result'],
      registers,
    });
    this.rulesLastSync = new Gauge({
      name: 'flowgate_rules_last_sync_timestamp_seconds',
      help: "When the fleet's rule set was last checked successfully (alert when it falls behind).",
      registers,
    });

    // Make the drain triggers visible at 0 before the first drain.
    for (const trigger of ['interval', 'early', 'shutdown']) this.drains.inc({ trigger }, 0);
  }

  // ---- AgentMetricsSink ---------------------------------------------------

  /** After every drain. */
  drained(summary: DrainSummary): void {
    this.drains.inc({ trigger: summary.trigger });
    this.drainDuration.observe(summary.durationMs / 1000);
    this.flowsDrained.inc(summary.flows);
    this.flowsEvicted.inc(summary.evicted);
    this.flowInsertFailures.inc(summary.insertFailed);
    let dropped = 0;
    for (const batch of summary.droppedFromSpool) dropped += batch.rows;
    this.spoolDroppedFlows.inc(dropped);
  }

  /** A flow batch reached the store. */
  inserted(rows: number, seconds: number): void {
    this.storeRowsInserted.inc(rows);
    this.storeInsertDuration.observe(seconds);
  }

  storeError(): void {
    this.storeErrors.inc();
  }

  spool(batches: number, bytes: number): void {
    this.spoolBatches.set(batches);
    this.spoolBytes.set(bytes);
  }

  /** Inserts into the active flow map over its capacity. */
  fill(ratio: number): void {
    this.activeFlowSlotFillRatio.set(ratio);
  }

  /** The kernel's per-interface running totals (see setTotal). */
  ifaceStats(stats: IfaceStats[], ifaceName: (ifindex: number) => string): void {
    for (const s of stats) {
      this.setIfaceTotals(ifaceName(s.ifindex), s.direction, {
        packets: s.counters.seen_packets,
        bytes: s.counters.seen_bytes,
        droppedPackets: s.counters.dropped_packets,
        nonIpPackets: s.counters.non_ip_packets,
        malformed: s.malformed,
      });
    }
  }

  /** After each check of the fleet's rule set. */
  rulesSynced(ok: boolean): void {
    this.rulesSyncs.inc({ result: ok ? 'ok' : 'failed' });
    if (ok) this.rulesLastSync.set(Date.now() / 1000);
  }

  // ---- exposition and helpers ---------------------------------------------

  /** The Content-Type of `render()`'s text. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Every metric in the Prometheus text exposition format. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  /**
   * Bring a counter to a running total kept elsewhere (a kernel counter):
   * adds `total - last total` for these labels. A total lower than the last
   * one (the kernel counter was reset) is added in full.
   */
  setTotal<T extends string>(counter: Counter<T>, labels: Partial<Record<T, string | number>>, total: number): void {
    if (!Number.isFinite(total) || total < 0) return;
    let seen = this.lastTotals.get(counter as Counter<string>);
    if (!seen) this.lastTotals.set(counter as Counter<string>, (seen = new Map()));
    const key = labelKey(labels);
    const last = seen.get(key);
    seen.set(key, total);
    const delta = last === undefined || total < last ? total : total - last;
    if (delta > 0 || last === undefined) counter.inc(labels, delta);
  }

  /** The per-interface counters from the kernel's running totals (see setTotal). */
  setIfaceTotals(iface: string, direction: Direction, totals: IfaceTotals): void {
    const labels = { iface, direction };
    if (totals.packets !== undefined) this.setTotal(this.ifacePackets, labels, totals.packets);
    if (totals.bytes !== undefined) this.setTotal(this.ifaceBytes, labels, totals.bytes);
    if (totals.droppedPackets !== undefined) this.setTotal(this.ifaceDroppedPackets, labels, totals.droppedPackets);
    if (totals.nonIpPackets !== undefined) this.setTotal(this.ifaceNonIpPackets, labels, totals.nonIpPackets);
    for (const [reason, n] of Object.entries(totals.malformed ?? {})) {
      this.setTotal(this.ifaceMalformedPackets, { ...labels, reason }, n);
    }
  }

  /** Forget a detached interface: its series disappear from /metrics. */
  async removeIface(iface: string): Promise<void> {
    const perIface: Array<Counter<string>> = [
      this.ifacePackets,
      this.ifaceBytes,
      this.ifaceDroppedPackets,
      this.ifaceNonIpPackets,
      this.ifaceMalformedPackets,
    ];
    for (const counter of perIface) {
      const seen = this.lastTotals.get(counter);
      for (const key of [...(seen?.keys() ?? [])]) {
        if ((JSON.parse(key) as Record<string, string>).iface === iface) seen?.delete(key);
      }
      // prom-client removes by exact label set, and `reason` varies: remove what the counter holds.
      for (const { labels } of (await counter.get()).values) {
        if (labels.iface === iface) counter.remove(labels as Record<string, string>);
      }
    }
  }
}

function labelKey(labels: Record<string, string | number | undefined>): string {
  const sorted: Record<string, string> = {};
  for (const name of Object.keys(labels).sort()) {
    const v = labels[name];
    if (v !== undefined) sorted[name] = String(v);
  }
  return JSON.stringify(sorted);
}
