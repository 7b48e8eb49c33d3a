/**
 * The agent: attaches the NICs, drains flows on an interval (and early when
 * the active map fills), spools and ships them to the store, and serves the
 * API. On SIGTERM/SIGINT it drains once more and flushes; the pins stay so
 * enforcement and counting go on until the next start adopts them.
 */
import os from 'node:os';
import path from 'node:path';
import { Datapath } from '../datapath/datapath.js';
import type { IfaceStats } from '../datapath/layout.js';
import type { Logger } from '../log.js';
import { loadNative } from '../../native/index.js';
import type { QueryLimits, QueryResult, StoreTarget } from '../store/types.js';
import { MonotonicClock } from './clock.js';
import { Collector, type DrainSummary, type DrainTrigger } from './collector.js';
import { LocalShip } from './local-ship.js';
import { ShipClient, type Ship } from './ship-client.js';
import { insertIntervalMs } from './shipper.js';
import { Spool } from './spool.js';
import { IfaceHistory } from './iface-history.js';
import { RuleService, type RuleUpstream } from '../rules/service.js';
import { FleetSync, StoreUpstream } from '../rules/fleet.js';
import { ClickHouseRuleStore } from '../store/rule-store.js';
import { DatapathRules, ifaceExists } from '../rules/kernel-rules.js';
import type { RuleApi } from '../rules/types.js';
import type { AgentApi, AgentStatus, InterfaceStatus, XdpModeOption } from './types.js';

export const VERSION = '0.1.0';

export interface AgentConfig {
  ifaces: string[];
  xdpMode: XdpModeOption;
  egress: boolean;
  store: StoreTarget;
  spoolDir: string;
  spoolMaxBytes: number;
  retentionDays: number;
  drainIntervalMs: number;
  /** Drain early when the active map holds this share of --max-flows. */
  earlyDrainFill: number;
  maxFlows: number;
  maxRules: number;
  maxPrefixes: number;
  bpffs: string;
  host: string;
  /** Remove pins and detach on exit (enforcement stops). */
  unpinOnExit: boolean;
  /** Where the rule set is kept (rules.json, rules.journal); default <spool dir>/../rules. */
  rulesDir?: string;
  /**
   * local: this agent's own set (default). store: the fleet's set in the
   * ClickHouse server (a server store only), checked every syncIntervalMs;
   * the rules directory then holds the last set synced.
   */
  rules?: { source: 'local' } | { source: 'store'; syncIntervalMs: number };
}

/** What the agent reports to metrics; control/metrics.ts implements it. */
export interface AgentMetricsSink {
  drained(summary: DrainSummary): void;
  inserted(rows: number, seconds: number): void;
  storeError(): void;
  spool(batches: number, bytes: number): void;
  fill(ratio: number): void;
  ifaceStats(stats: IfaceStats[], ifaceName: (ifindex: number) => string): void;
  /** After each check of the fleet's rule set (--rules-source store): did the store answer. */
  rulesSynced?(ok: boolean): void;
}

export interface AgentDeps {
  log: Logger;
  metrics: AgentMetricsSink;
}

const FILL_POLL_MS = 50;
const DEFAULT_LIMITS: QueryLimits = { maxSeconds: 30, maxRows: 100_000 };

interface Attached {
  name: string;
  ifindex: number;
  xdpMode: 'native' | 'generic';
  egress: boolean;
}

export class Agent implements AgentApi {
  private readonly clock = new MonotonicClock();
  private readonly attached = new Map<string, Attached>();
  private readonly startedAt = new Date();
  private collector!: Collector;
  private shipper!: Ship;
  private spool!: Spool;
  private drainTimer?: NodeJS.Timeout;
  private fillTimer?: NodeJS.Timeout;
  private draining = false;
  private lastDrainAt?: Date;
  private flowsDrained = 0;
  private flowsEvicted = 0;
  private kernelStats: IfaceStats[] = [];
  private readonly ifaceHistory = new IfaceHistory();
  private stopping?: Promise<void>;
  private ruleService!: RuleService;
  private readonly kernelRules: DatapathRules;
  private ruleStore?: ClickHouseRuleStore;
  private fleetSync?: FleetSync;

  private constructor(
    readonly config: AgentConfig,
    readonly dp: Datapath,
    private readonly deps: AgentDeps,
  ) {
    this.kernelRules = new DatapathRules(dp);
  }

  get rules(): RuleApi {
    return this.ruleService;
  }

  static async start(config: AgentConfig, deps: AgentDeps): Promise<Agent> {
    // Every NIC must exist before anything is loaded or pinned (ENODEV names it).
    for (const name of config.ifaces) loadNative().ifindex(name);
    const dp = Datapath.open({
      bpffs: config.bpffs,
      maxFlows: config.maxFlows,
      maxRules: config.maxRules,
      maxPrefixes: config.maxPrefixes,
    });
    const agent = new Agent(config, dp, deps);
    try {
      await agent.init();
    } catch (err) {
      await agent.fleetSync?.stop();
      await agent.ruleStore?.close().catch(() => undefined);
      await agent.shipper?.stop(1000).catch(() => undefined);
      dp.close();
      throw err;
    }
    return agent;
  }

  private async init(): Promise<void> {
    const { config, dp, deps } = this;
    const { log } = deps;
    if (dp.adopted) {
      log.info({ bpffs: config.bpffs }, 'adopted pinned programs and maps: counting and enforcement never stopped');
    }
    if (dp.adopted && dp.config().maxFlows !== config.maxFlows) {
      log.warn(
        { pinned: dp.config().maxFlows, asked: config.maxFlows },
        '--max-flows differs from the adopted maps: keeping the pinned size (restart with --unpin to resize)',
      );
    }
    if (dp.adopted && dp.config().maxRules !== config.maxRules) {
      log.warn(
        { pinned: dp.config().maxRules, asked: config.maxRules },
        '--max-rules differs from the adopted maps: keeping the pinned size (restart with --unpin to resize)',
      );
    }

    this.spool = new Spool(config.spoolDir, config.spoolMaxBytes);
    const incomplete = this.spool.removeIncomplete();
    if (incomplete)
      log.warn({ files: incomplete }, 'removed spool writes a crash cut short (their flows are drained again)');
    const shipOpts = {
      spoolDir: config.spoolDir,
      spoolMaxBytes: config.spoolMaxBytes,
      store: { target: config.store, retentionDays: config.retentionDays },
      minInsertIntervalMs: insertIntervalMs(config.drainIntervalMs),
    };
    const shipEvents = {
      onInserted: (rows: number, seconds: number) => deps.metrics.inserted(rows, seconds),
      onError: () => deps.metrics.storeError(),
      onWorkerExit: (reason: string, delayMs: number) =>
        log.error({ reason, restartInMs: delayMs }, 'ship process died: flows stay spooled; restarting it'),
    };
    // The embedded engine ships from a child process; a server's inserts are I/O, shipped from here.
    this.shipper =
      config.store.kind === 'embedded'
        ? new ShipClient(shipOpts, shipEvents)
        : new LocalShip(shipOpts, shipEvents, log);
    // The rule set first: a fresh start enforces it from the first packet (in a fleet, the last set synced).
    const rulesLog = log.child({ part: 'rules' });
    let upstream: RuleUpstream | undefined;
    const fleet = config.rules?.source === 'store';
    if (fleet) {
      if (config.store.kind !== 'server') throw new Error('--rules-source store needs --clickhouse-url');
      this.ruleStore = await ClickHouseRuleStore.open(config.store);
      upstream = new StoreUpstream(this.ruleStore, config.host);
    }
    this.ruleService = await RuleService.open({
      kernel: this.kernelRules,
      dir: config.rulesDir ?? path.join(path.dirname(config.spoolDir), 'rules'),
      // A fleet's rule may name a NIC other hosts have: here it matches nothing.
      ifaceExists: fleet ? () => true : ifaceExists,
      log: rulesLog,
      maxId: dp.config().maxRules - 1,
      history: (rows) => this.shipper?.ruleHistory(rows.map((r) => ({ ...r, host: config.host }))),
      upstream,
    });
    if (this.ruleStore && config.rules?.source === 'store') {
      this.fleetSync = new FleetSync({
        service: this.ruleService,
        store: this.ruleStore,
        intervalMs: config.rules.syncIntervalMs,
        log: rulesLog,
        onSync: (ok) => deps.metrics.rulesSynced?.(ok),
      });
      this.fleetSync.start();
    }
    for (const name of config.ifaces) await this.attach(name);
    await this.adoptApiAttachments();

    this.collector = new Collector({
      dp,
      spool: this.spool,
      clock: this.clock,
      host: config.host,
      ifaceNames: () => Object.fromEntries([...this.attached.values()].map((a) => [String(a.ifindex), a.name])),
      log,
      onDrain: (s) => this.afterDrain(s),
    });
    // A drain an earlier agent flipped but did not finish comes first.
    await this.collector.recover();
    this.drainTimer = setInterval(() => void this.drain('interval'), config.drainIntervalMs);
    this.fillTimer = setInterval(() => this.checkFill(), FILL_POLL_MS);
    log.info(
      { ifaces: config.ifaces, drainIntervalMs: config.drainIntervalMs, store: this.storeLocation() },
      'flowgate agent running',
    );
  }

  /**
   * Interfaces attached through the API (POST /interfaces) by an earlier
   * agent stay attached across its exit: their XDP link pins are the record.
   * Adopt them, so they are listed, named in rows and detachable again, in
   * the mode they run in. A DELETE removed the pin, so what was detached
   * stays detached.
   */
  private async adoptApiAttachments(): Promise<void> {
    for (const a of this.dp.attachments()) {
      if (a.hook !== 'xdp' || this.attached.has(a.ifname)) continue;
      try {
        await this.attach(a.ifname, a.mode ?? this.config.xdpMode);
        this.deps.log.info({ iface: a.ifname }, 'adopted an interface attached through the API before the restart');
      } catch (err) {
        this.deps.log.warn(
          { iface: a.ifname, err: (err as Error).message },
          'an interface attached before the restart could not be adopted',
        );
      }
    }
  }

  /** One drain now; skipped (returns undefined) when one is already running. */
  async drain(trigger: DrainTrigger): Promise<DrainSummary | undefined> {
    if (this.draining && trigger !== 'shutdown') return undefined;
    this.draining = true;
    try {
      return await this.collector.drain(trigger);
    } catch (err) {
      this.deps.log.error({ err: (err as Error).message, trigger }, 'drain failed');
      return undefined;
    } finally {
      this.draining = false;
    }
  }

  private checkFill(): void {
    if (this.draining) return;
    const fill = this.dp.activeFill();
    const ratio = fill.capacity ? fill.newFlows / fill.capacity : 0;
    this.deps.metrics.fill(ratio);
    if (ratio >= this.config.earlyDrainFill) void this.drain('early');
  }

  private afterDrain(s: DrainSummary): void {
    this.lastDrainAt = new Date();
    this.flowsDrained += s.flows;
    this.flowsEvicted += s.evicted;
    this.deps.metrics.drained(s);
    const totals = this.spool.totals();
    this.deps.metrics.spool(totals.batches, totals.bytes);
    this.shipper.wake();
    void this.kernelRules.counterDeltas().then(
      (deltas) => this.shipper.ruleCounters(deltas.map((d) => ({ ts: new Date(), host: this.config.host, ...d }))),
      () => undefined,
    );
    void this.dp.ifaceStats().then(
      (stats) => {
        this.kernelStats = stats;
        this.deps.metrics.ifaceStats(stats, (i) => this.ifaceName(i));
        this.shipper.ifaceCounters(
          this.ifaceHistory.rows(stats, new Date(), this.config.host, (i) => this.ifaceName(i)),
        );
      },
      () => undefined,
    );
  }

  private ifaceName(ifindex: number): string {
    for (const a of this.attached.values()) if (a.ifindex === ifindex) return a.name;
    return `if${ifindex}`;
  }

  private storeLocation(): string {
    const t = this.config.store;
    if (t.kind === 'embedded') return t.dir;
    const url = new URL(t.url);
    url.username = '';
    url.password = '';
    return url.toString();
  }

  async attach(name: string, xdpMode?: XdpModeOption): Promise<InterfaceStatus> {
    // An absent interface: the native attach throws ENODEV naming it.
    const results = this.dp.attach(name, { xdpMode: xdpMode ?? this.config.xdpMode, egress: this.config.egress });
    const xdp = results.find((r) => r.hook === 'xdp')!;
    if (xdp.warning) this.deps.log.warn({ iface: name }, xdp.warning);
    this.attached.set(name, {
      name,
      ifindex: xdp.ifindex,
      xdpMode: xdp.mode ?? 'generic',
      egress: this.config.egress,
    });
    this.deps.log.info({ iface: name, mode: xdp.mode, adopted: xdp.adopted, egress: this.config.egress }, 'attached');
    return this.interfaceStatus(this.attached.get(name)!);
  }

  async detach(name: string): Promise<boolean> {
    const was = this.dp.detach(name);
    this.attached.delete(name);
    return was;
  }

  private interfaceStatus(a: Attached): InterfaceStatus {
    const dir = (d: 'ingress' | 'egress'): IfaceStats | undefined =>
      this.kernelStats.find((s) => s.ifindex === a.ifindex && s.direction === d);
    const rx = dir('ingress');
    const tx = dir('egress');
    const malformed: Record<string, number> = {};
    for (const s of [rx, tx]) {
      for (const [reason, n] of Object.entries(s?.malformed ?? {})) malformed[reason] = (malformed[reason] ?? 0) + n;
    }
    return {
      name: a.name,
      ifindex: a.ifindex,
      xdpMode: a.xdpMode,
      egress: a.egress,
      counters: {
        rxPackets: rx?.counters.seen_packets ?? 0,
        rxBytes: rx?.counters.seen_bytes ?? 0,
        txPackets: tx?.counters.seen_packets ?? 0,
        txBytes: tx?.counters.seen_bytes ?? 0,
        droppedPackets: (rx?.counters.dropped_packets ?? 0) + (tx?.counters.dropped_packets ?? 0),
        nonIpPackets: (rx?.counters.non_ip_packets ?? 0) + (tx?.counters.non_ip_packets ?? 0),
        malformed,
      },
    };
  }

  interfaces(): InterfaceStatus[] {
    return [...this.attached.values()].map((a) => this.interfaceStatus(a));
  }

  status(): AgentStatus {
    const totals = this.spool.totals();
    return {
      version: VERSION,
      host: this.config.host,
      startedAt: this.startedAt.toISOString(),
      adopted: this.dp.adopted,
      drainIntervalMs: this.config.drainIntervalMs,
      lastDrainAt: this.lastDrainAt?.toISOString(),
      flowsDrained: this.flowsDrained,
      flowsEvicted: this.flowsEvicted,
      interfaces: this.interfaces(),
      store: {
        kind: this.config.store.kind,
        location: this.storeLocation(),
        healthy: this.shipper.healthy,
        lastError: this.shipper.lastError,
        spooledBatches: totals.batches,
        spooledBytes: totals.bytes,
      },
    };
  }

  query(sql: string, limits?: Partial<QueryLimits>): Promise<QueryResult> {
    return this.shipper.query(sql, { ...DEFAULT_LIMITS, ...limits });
  }

  /** Final drain and flush; pins stay unless --unpin. Safe to call twice. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.drainTimer);
    clearInterval(this.fillTimer);
    const { log } = this.deps;
    await this.fleetSync?.stop();
    await this.ruleService?.close();
    await this.ruleStore?.close();
    const last = await this.drain('shutdown');
    log.info({ flows: last?.flows ?? 0 }, 'final drain done; flushing the spool');
    await this.shipper.stop(10_000);
    const left = this.spool.totals();
    if (left.batches)
      log.warn(
        { batches: left.batches, dir: this.spool.dir },
        'store unreachable: batches stay spooled for the next start',
      );
    if (this.config.unpinOnExit) {
      this.dp.unpinAll();
      log.info('detached and unpinned: enforcement stopped');
    }
    this.dp.close();
  }
}

export function defaultHost(): string {
  return os.hostname();
}

export function defaultSpoolDir(storeDir: string): string {
  return path.join(storeDir, 'spool');
}
