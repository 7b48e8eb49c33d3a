/**
 * Fleet rules (`--rules-source store`): every agent sharing one ClickHouse
 * store enforces one rule set, kept in `flowgate.rules` (a version per
 * change; schema/005_rules.sql).
 *
 * - StoreUpstream: what this agent's API changes is written to the store
 *   first (RuleService calls it after validation, before the kernel), so a
 *   store that cannot be reached is a 503 and changes nothing.
 * - FleetSync: every --rules-sync-interval, a cheap fingerprint of the table;
 *   when it moved, the whole set is read and RuleService.sync() applies the
 *   difference. A change pushed to any agent, or inserted with SQL, so
 *   reaches every agent within one interval. While the store is down the
 *   agent keeps enforcing the last set it had (also across restarts: the
 *   rules file holds it).
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { RuleVersionInfo } from '../store/rule-store.js';
import { bulkAllocation } from '../util/young-generation.js';
import type { RuleService, RuleUpstream } from './service.js';
import { RuleRequestError, type StoredRule } from './types.js';

/** What the fleet code needs of the store (ClickHouseRuleStore; tests use a fake). */
export interface FleetRuleStore {
  fingerprint(): Promise<string>;
  read(): Promise<StoredRule[]>;
  newest(id: number): Promise<RuleVersionInfo | undefined>;
  write(put: readonly StoredRule[], deleted: readonly number[], origin: string, token: string): Promise<void>;
}

function unreachable(err: unknown): RuleRequestError {
  return new RuleRequestError(
    503,
    undefined,
    `the fleet's rule store cannot be reached (--rules-source store): ${(err as Error).message}; nothing was changed`,
  );
}

export class StoreUpstream implements RuleUpstream {
  constructor(
    private readonly store: FleetRuleStore,
    /** Written as each version's origin: which agent made the change. */
    private readonly origin: string,
  ) {}

  private async call<T>(job: () => Promise<T>): Promise<T> {
    try {
      return await job();
    } catch (err) {
      throw err instanceof RuleRequestError ? err : unreachable(err);
    }
  }

  /**
   * Insert the rule with a deduplication token made of the id and the id's
   * newest version as this agent read it. Two agents claiming the same
   * free id at once send the same token, and ClickHouse keeps only the
   * first insert; reading the id back tells each whether it won.
   */
  claim(rule: StoredRule): Promise<boolean> {
    return this.call(async () => {
      const prior = await this.store.newest(rule.id);
      if (prior && !prior.free) return false;
      const nonce = randomUUID();
      const origin = `${this.origin}#${nonce.slice(0, 8)}`;
      await this.store.write([rule], [], origin, `rule-claim:${rule.id}:${prior?.version ?? '0'}`);
      const now = await this.store.newest(rule.id);
      return now?.origin === origin;
    });
  }

  write(put: Iterable<StoredRule>, removed: readonly number[]): Promise<void> {
    return this.call(() => this.store.write([...put], removed, this.origin, `rule-write:${randomUUID()}`));
  }

  /** The new set, and a delete for every id the store has that the set does not (synced here or not). */
  replace(all: Iterable<StoredRule>): Promise<void> {
    return this.call(async () => {
      const rules = [...all];
      const keep = new Set(rules.map((r) => r.id));
      const removed = (await this.store.read()).map((r) => r.id).filter((id) => !keep.has(id));
      await this.store.write(rules, removed, this.origin, `rule-replace:${randomUUID()}`);
    });
  }
}

export interface FleetSyncOptions {
  service: RuleService;
  store: FleetRuleStore;
  intervalMs: number;
  log: Logger;
  /** After each attempt: whether the store answered. */
  onSync?(ok: boolean): void;
}

export type SyncOutcome = 'unchanged' | 'applied' | 'failed';

export class FleetSync {
  private timer?: NodeJS.Timeout;
  private lastFingerprint?: string;
  private down = false;
  private running?: Promise<SyncOutcome>;
  private stopped = false;

  constructor(private readonly opts: FleetSyncOptions) {}

  /** First sync now, then one per interval. */
  start(): void {
    const tick = (): void => {
      void this.syncOnce().finally(() => {
        if (this.stopped) return;
        this.timer = setTimeout(tick, this.opts.intervalMs);
        this.timer.unref();
      });
    };
    tick();
  }

  /** One sync (a running one is joined, not doubled). */
  syncOnce(): Promise<SyncOutcome> {
    this.running ??= this.sync().finally(() => (this.running = undefined));
    return this.running;
  }

  private async sync(): Promise<SyncOutcome> {
    const { store, service, log } = this.opts;
    let outcome: SyncOutcome = 'unchanged';
    try {
      const fingerprint = await store.fingerprint();
      if (fingerprint !== this.lastFingerprint) {
        // The whole set, up to a million rules: a bulk job.
        const r = await bulkAllocation(async () => service.sync(await store.read()));
        for (const refused of r.refused) log.error(`fleet rule refused, not enforced: ${refused}`);
        if (r.added || r.removed || r.changed) {
          log.info(
            { added: r.added, removed: r.removed, changed: r.changed, rules: service.size },
            'fleet rules synced',
          );
          outcome = 'applied';
        }
        this.lastFingerprint = fingerprint;
      }
      if (this.down) log.info('fleet rule store reachable again');
      this.down = false;
      this.opts.onSync?.(true);
    } catch (err) {
      outcome = 'failed';
      // Once per outage: the agent keeps enforcing what it has, and says so.
      if (!this.down) {
        log.warn(
          { err: (err as Error).message, rules: service.size },
          'fleet rule store unreachable: enforcing the last rule set synced',
        );
      }
      this.down = true;
      this.opts.onSync?.(false);
    }
    return outcome;
  }

  get healthy(): boolean {
    return !this.down;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }
}
