/**
 * The agent's rule set (RuleApi): validation, ids, the kernel tables, the
 * file on disk, expiry and history, kept in step.
 *
 * Every mutation runs alone (a serial queue) and in this order:
 *   validate → kernel (atomic switch) → file (fdatasync) → answer
 * If the kernel refuses, nothing changed. If the file write fails after the
 * kernel switched, the kernel is switched back before the error is
 * returned. So a change is in both or in neither, and a response is only
 * sent once the kernel enforces it.
 *
 * Expiry: one timer for the earliest expiresAt; when it fires, every rule
 * due by then is removed like a DELETE (history op "expire"). Rules that
 * expired while the agent was down are removed when it starts.
 *
 * In a fleet (--rules-source store, fleet.ts) an upstream holds the set the
 * agents share: a mutation is written there after validation and before the
 * kernel (a store that cannot be reached changes nothing), and sync() takes
 * the set the store has, changes made elsewhere included. The rules file is
 * then this agent's last good copy of it.
 */
import type { Logger } from 'pino';
import { SerialQueue } from '../util/serial.js';
import { bulkAllocation } from '../util/young-generation.js';
import { parsePrefix, PrefixError, prefixesOverlap, type ParsedPrefix } from './prefix.js';
import { PROTOCOLS, RuleError, parseRule, type Rule, type RuleSpec } from './rule.js';
import { COMPACT_AFTER, RuleFile } from './rule-file.js';
import {
  RuleRequestError,
  type RuleApi,
  type RuleChange,
  type MutationHooks,
  type RuleListQuery,
  type RulePage,
  type RuleReplace,
  type RuleWithStats,
  type StoredRule,
} from './types.js';

/** What the service needs of the kernel side (kernel-rules.ts implements it over the Datapath). */
export interface KernelRules {
  /** Make the kernel enforce exactly `rules` (atomically). */
  load(rules: readonly Rule[]): Promise<void>;
  /** A small change to the set loaded before (atomically); `all` is the set after it. */
  change(added: readonly Rule[], removed: readonly Rule[], all: () => Rule[]): Promise<void>;
  /** Packets and bytes a rule matched. */
  stats(id: number): { packets: number; bytes: number };
  /** Zero rules' counters (ids given to new rules). */
  resetStats(ids: readonly number[]): Promise<void>;
}

/**
 * Where a fleet's rule set is kept (fleet.ts). Every method throws a
 * RuleRequestError (503) when it cannot be reached.
 */
export interface RuleUpstream {
  /** Record a new rule under its id; false when another writer holds that id (not yet synced here). */
  claim(rule: StoredRule): Promise<boolean>;
  /** Record rules (new versions) and ids that no longer have one. */
  write(put: Iterable<StoredRule>, removed: readonly number[]): Promise<void>;
  /** Make the set exactly `all` (every other id removed). */
  replace(all: Iterable<StoredRule>): Promise<void>;
}

/** What sync() did. */
export interface SyncResult {
  added: number;
  removed: number;
  changed: number;
  /** Rules of the upstream set this agent refused, each naming the field (`rule 42: src: …`). */
  refused: string[];
}

export type RuleHistoryOp = 'add' | 'delete' | 'expire' | 'replace';

export interface RuleHistoryRow {
  ts: Date;
  op: RuleHistoryOp;
  ruleId: number;
  /** The rule before and after as JSON; '' when there was none. */
  before: string;
  after: string;
}

export interface RuleServiceDeps {
  kernel: KernelRules;
  /** Directory of rules.json and rules.journal. */
  dir: string;
  /** Does an interface of that name exist (a rule scoped to a missing NIC is refused)? */
  ifaceExists(name: string): boolean;
  log: Logger;
  /** Rows for the rule history table (best effort: the file is the rule set's durable record). */
  history?(rows: RuleHistoryRow[]): void;
  /** Defaults to the wall clock (tests move it). */
  now?: () => Date;
  /** Largest rule id: the kernel counts rule traffic in an array indexed by id (--max-rules). */
  maxId?: number;
  /** The fleet's shared set (--rules-source store); mutations go there first. */
  upstream?: RuleUpstream;
}

/** Ids tried for one new fleet rule before giving up (each lost claim means another writer took it). */
const MAX_CLAIMS = 16;
/** Replace lists this many warnings (the count covers all). */
const MAX_WARNINGS = 100;
/** Detailed history rows for a replace; beyond this one summary row says how many more changed. */
const MAX_REPLACE_HISTORY = 10_000;
/** setTimeout's longest delay; a later expiry is re-armed when this one fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A rule and its times. The stored (API) form is made when first asked for:
 * a million-rule replace would otherwise keep a second object per rule.
 */
interface Entry {
  rule: Rule;
  createdAt: string;
  updatedAt: string;
  stored?: StoredRule;
}

function storedOf(e: Entry): StoredRule {
  e.stored ??= storedRule(e.rule, e.createdAt, e.updatedAt);
  return e.stored;
}

/** The stored form without keeping it (snapshots of a million rules). */
function storedCopy(e: Entry): StoredRule {
  return e.stored ?? storedRule(e.rule, e.createdAt, e.updatedAt);
}

/** Stored forms one at a time: each dies young instead of a million living at once. */
function* storedCopies(entries: Iterable<Entry>): Generator<StoredRule> {
  for (const e of entries) yield storedCopy(e);
}

function samePrefix(a: ParsedPrefix | undefined, b: ParsedPrefix | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.cidr === b.cidr);
}

function samePorts(a: [number, number] | undefined, b: [number, number] | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a[0] === b[0] && a[1] === b[1]);
}

/** Same rule, whatever its id and times. */
function sameRule(a: Rule, b: Rule): boolean {
  return (
    a.action === b.action &&
    a.priority === b.priority &&
    samePrefix(a.src, b.src) &&
    samePrefix(a.dst, b.dst) &&
    a.protocol === b.protocol &&
    samePorts(a.srcPorts, b.srcPorts) &&
    samePorts(a.dstPorts, b.dstPorts) &&
    a.iface === b.iface &&
    a.expiresAt?.getTime() === b.expiresAt?.getTime() &&
    a.comment === b.comment
  );
}

const PROTOCOL_NAMES = new Map(Object.entries(PROTOCOLS).map(([name, n]) => [n, name]));

function portText(p: [number, number] | undefined): string | undefined {
  if (!p) return undefined;
  return p[0] === p[1] ? String(p[0]) : `${p[0]}-${p[1]}`;
}

/** The stored (and returned) form of a validated rule. Members in a fixed order, absent ones left out. */
export function storedRule(rule: Rule, createdAt: string, updatedAt: string): StoredRule {
  const s: StoredRule = { id: rule.id, action: rule.action, priority: rule.priority, createdAt, updatedAt };
  if (rule.src) s.src = rule.src.cidr;
  if (rule.dst) s.dst = rule.dst.cidr;
  if (rule.protocol !== undefined) s.protocol = PROTOCOL_NAMES.get(rule.protocol) ?? rule.protocol;
  const sp = portText(rule.srcPorts);
  const dp = portText(rule.dstPorts);
  if (sp) s.srcPorts = sp;
  if (dp) s.dstPorts = dp;
  if (rule.iface !== undefined) s.iface = rule.iface;
  if (rule.expiresAt) s.expiresAt = rule.expiresAt.toISOString();
  if (rule.comment !== undefined) s.comment = rule.comment;
  return s;
}

/** Warnings for what was normalised (host bits), naming the field. */
function normaliseWarnings(spec: RuleSpec, rule: Rule, at: string): string[] {
  const out: string[] = [];
  for (const field of ['src', 'dst'] as const) {
    const p = rule[field];
    if (p?.normalised) out.push(`${at}${field}: ${String(spec[field])} has host bits set; stored as ${p.cidr}`);
  }
  return out;
}

function bareMessage(err: RuleError): string {
  const prefix = `${err.field}: `;
  return err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
}

export class RuleService implements RuleApi {
  private entries = new Map<number, Entry>();
  private sortedIds?: number[];
  /** Every id below this is taken (where the search for a free id starts). */
  private lowFree = 1;
  /** Ids of rules that expire (the expiry timer looks at these only). */
  private expiring = new Set<number>();
  private readonly queue = new SerialQueue();
  private readonly file: RuleFile;
  private expiryTimer?: NodeJS.Timeout;
  private closed = false;

  private constructor(private readonly deps: RuleServiceDeps) {
    this.file = new RuleFile(deps.dir);
  }

  private now(): Date {
    return this.deps.now ? this.deps.now() : new Date();
  }

  /**
   * Read the persisted set, drop what expired meanwhile, and load the rest
   * into the kernel (a full, atomic load: after a restart that adopted the
   * pinned maps, enforcement switches from the old tables to the same rules).
   */
  static open(deps: RuleServiceDeps): Promise<RuleService> {
    // A persisted set can hold a million rules: read, compiled and loaded as one bulk job.
    return bulkAllocation(() => RuleService.load(deps));
  }

  private static async load(deps: RuleServiceDeps): Promise<RuleService> {
    const svc = new RuleService(deps);
    const state = svc.file.load();
    const now = svc.now();
    const expired: StoredRule[] = [];
    for (const stored of state.rules.values()) {
      let rule: Rule;
      try {
        rule = parseRule(stored, stored.id, now);
      } catch (err) {
        // Only a hand-edited file gets here: keep going without that rule, loudly.
        deps.log.error({ rule: stored, err: (err as Error).message }, 'persisted rule is invalid: not loaded');
        continue;
      }
      if (rule.expiresAt && rule.expiresAt <= now) expired.push(stored);
      else svc.entries.set(rule.id, { rule, createdAt: stored.createdAt, updatedAt: stored.updatedAt, stored });
    }
    for (const e of svc.entries.values()) {
      if (e.rule.iface !== undefined && !deps.ifaceExists(e.rule.iface)) {
        deps.log.warn(
          { id: e.rule.id, iface: e.rule.iface },
          'rule names an interface that does not exist: it matches nothing until it does',
        );
      }
    }
    await deps.kernel.load(svc.all());
    if (expired.length) {
      for (const s of expired) svc.file.del(s.id);
      svc.recordHistory(
        expired.map((s) => ({ ts: now, op: 'expire', ruleId: s.id, before: JSON.stringify(s), after: '' })),
      );
      deps.log.info({ rules: expired.map((s) => s.id) }, 'rules expired while the agent was down: removed');
    }
    if (svc.file.journalEntries >= COMPACT_AFTER) await svc.compact();
    svc.reindex();
    svc.armExpiry();
    deps.log.info({ rules: svc.entries.size, file: svc.file.snapshotPath }, 'rule set loaded');
    return svc;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Every rule, for a full kernel load. */
  all(): Rule[] {
    return Array.from(this.entries.values(), (e) => e.rule);
  }

  private ids(): number[] {
    this.sortedIds ??= [...this.entries.keys()].sort((a, b) => a - b);
    return this.sortedIds;
  }

  list(q: RuleListQuery): RulePage {
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 10_000);
    const offset = Math.max(q.offset ?? 0, 0);
    let prefix: ParsedPrefix | undefined;
    if (q.prefix !== undefined) {
      try {
        prefix = parsePrefix(q.prefix);
      } catch (err) {
        if (err instanceof PrefixError) throw new RuleRequestError(400, 'prefix', err.message);
        throw err;
      }
    }
    const comment = q.comment?.toLowerCase();
    const filtered = q.action !== undefined || prefix !== undefined || comment !== undefined;
    if (!filtered) {
      // A page of the whole set: no walk over a million rules for it.
      const ids = this.ids().slice(offset, offset + limit);
      return { rules: ids.map((id) => storedOf(this.entries.get(id)!)), total: this.entries.size, offset, limit };
    }
    const rules: StoredRule[] = [];
    let total = 0;
    for (const id of this.ids()) {
      const e = this.entries.get(id)!;
      if (filtered) {
        if (q.action !== undefined && e.rule.action !== q.action) continue;
        if (comment !== undefined && !(e.rule.comment ?? '').toLowerCase().includes(comment)) continue;
        if (
          prefix &&
          !(e.rule.src && prefixesOverlap(e.rule.src, prefix)) &&
          !(e.rule.dst && prefixesOverlap(e.rule.dst, prefix))
        ) {
          continue;
        }
      }
      if (total >= offset && rules.length < limit) rules.push(storedOf(e));
      total++;
    }
    return { rules, total, offset, limit };
  }

  get(id: number): RuleWithStats | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    const s = this.deps.kernel.stats(id);
    return { ...storedOf(e), matchedPackets: s.packets, matchedBytes: s.bytes };
  }

  /** Validate one spec; errors name `${at}${field}`. */
  private parse(spec: RuleSpec, id: number, now: Date, at = ''): Rule {
    let rule: Rule;
    try {
      rule = parseRule(spec, id, now);
    } catch (err) {
      if (err instanceof RuleError) throw new RuleRequestError(400, `${at}${err.field}`, bareMessage(err));
      throw err;
    }
    if (rule.expiresAt && rule.expiresAt <= now) {
      const field = spec.ttlSeconds !== undefined ? 'ttlSeconds' : 'expiresAt';
      throw new RuleRequestError(400, `${at}${field}`, `${rule.expiresAt.toISOString()} is not in the future`);
    }
    if (rule.iface !== undefined && !this.deps.ifaceExists(rule.iface)) {
      throw new RuleRequestError(400, `${at}iface`, `no interface named ${rule.iface} on this host`);
    }
    return rule;
  }

  private get maxId(): number {
    return this.deps.maxId ?? 0xffffffff;
  }

  private checkId(id: unknown, at: string): number {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 1 || id > this.maxId) {
      throw new RuleRequestError(400, `${at}id`, `must be a whole number from 1 to ${this.maxId}`);
    }
    return id;
  }

  /**
   * The lowest id ≥ `from` that `taken` does not hold. Ids are reused after
   * a delete (the kernel's counters are zeroed when an id is given again;
   * history rows tell the two rules apart by time).
   */
  private freeId(from: number, taken: (id: number) => boolean): number {
    let id = from;
    while (taken(id)) id++;
    if (id > this.maxId) {
      throw new RuleRequestError(400, 'rules', `no rule id left: at most ${this.maxId} rules (--max-rules)`);
    }
    return id;
  }

  add(spec: RuleSpec, hooks?: MutationHooks): Promise<RuleChange> {
    return this.mutate(async () => {
      const now = this.now();
      let id: number;
      if (spec.id === undefined) {
        id = this.lowFree = this.freeId(this.lowFree, (i) => this.entries.has(i));
      } else id = this.checkId(spec.id, '');
      if (this.entries.has(id)) throw new RuleRequestError(409, 'id', `a rule with id ${id} exists already`);
      const stamp = now.toISOString();
      let entry: Entry = { rule: this.parse(spec, id, now), createdAt: stamp, updatedAt: stamp };
      const upstream = this.deps.upstream;
      if (upstream) {
        // Another agent may have given the id to a rule this one has not synced yet: the store decides.
        for (let claims = 1; !(await upstream.claim(storedOf(entry))); claims++) {
          if (spec.id !== undefined) {
            throw new RuleRequestError(409, 'id', `a rule with id ${id} exists already in the fleet's rule set`);
          }
          if (claims >= MAX_CLAIMS) {
            throw new RuleRequestError(503, undefined, `no free rule id could be claimed in ${MAX_CLAIMS} tries`);
          }
          id = this.freeId(id + 1, (i) => this.entries.has(i));
          entry = { rule: { ...entry.rule, id }, createdAt: stamp, updatedAt: stamp };
        }
      }
      const { rule } = entry;
      const stored = storedOf(entry);
      // Undo the claim when this agent cannot apply the rule (best effort: the error says what failed).
      const unclaim = (): Promise<void> => upstream?.write([], [id]).catch(() => undefined) ?? Promise.resolve();
      await this.deps.kernel.resetStats([id]);
      this.setEntry(entry);
      try {
        await this.deps.kernel.change([rule], [], () => this.all());
      } catch (err) {
        this.deleteEntry(id);
        await unclaim();
        throw err;
      }
      hooks?.onEnforced?.();
      try {
        this.file.put(stored);
      } catch (err) {
        this.deleteEntry(id);
        await this.deps.kernel.change([], [rule], () => this.all());
        await unclaim();
        throw err;
      }
      this.recordHistory([{ ts: now, op: 'add', ruleId: id, before: '', after: JSON.stringify(stored) }]);
      this.armExpiry();
      return { rule: stored, warnings: normaliseWarnings(spec, rule, '') };
    });
  }

  remove(id: number, hooks?: MutationHooks): Promise<StoredRule | undefined> {
    return this.mutate(() => this.removeNow([id], 'delete', hooks).then((gone) => gone[0]));
  }

  /** Remove rules (those that exist) in one kernel change. */
  private async removeNow(
    ids: readonly number[],
    op: 'delete' | 'expire',
    hooks?: MutationHooks,
  ): Promise<StoredRule[]> {
    const gone = ids.map((id) => this.entries.get(id)).filter((e): e is Entry => e !== undefined);
    if (gone.length === 0) return [];
    // A delete is the fleet's; an expiry happens on every agent by itself (the store keeps the row, expired).
    const upstream = op === 'delete' ? this.deps.upstream : undefined;
    await upstream?.write(
      [],
      gone.map((e) => e.rule.id),
    );
    const undo = (): Promise<void> =>
      upstream?.write(gone.map(storedOf), []).catch(() => undefined) ?? Promise.resolve();
    for (const e of gone) this.deleteEntry(e.rule.id);
    try {
      await this.deps.kernel.change(
        [],
        gone.map((e) => e.rule),
        () => this.all(),
      );
    } catch (err) {
      for (const e of gone) this.setEntry(e);
      await undo();
      throw err;
    }
    hooks?.onEnforced?.();
    try {
      this.file.append(gone.map((e) => ({ op: 'del' as const, id: e.rule.id })));
    } catch (err) {
      for (const e of gone) this.setEntry(e);
      await this.deps.kernel.change(
        gone.map((e) => e.rule),
        [],
        () => this.all(),
      );
      await undo();
      throw err;
    }
    const ts = this.now();
    this.recordHistory(
      gone.map((e) => ({ ts, op, ruleId: e.rule.id, before: JSON.stringify(storedOf(e)), after: '' })),
    );
    this.armExpiry();
    return gone.map(storedOf);
  }

  replace(specs: readonly RuleSpec[], hooks?: MutationHooks): Promise<RuleReplace> {
    return this.mutate(async () => {
      const now = this.now();
      const stamp = now.toISOString();
      // Ids first: named ids are kept, the others get the lowest ids no named rule holds.
      const named = new Set<number>();
      for (let i = 0; i < specs.length; i++) {
        const spec = specs[i]!;
        if (spec.id === undefined) continue;
        const id = this.checkId(spec.id, `rules/${i}/`);
        if (named.has(id)) throw new RuleRequestError(400, `rules/${i}/id`, `${id} appears twice in the set`);
        named.add(id);
      }
      let cursor = 1;
      const next = new Map<number, Entry>();
      const warnings: string[] = [];
      let warningCount = 0;
      for (let i = 0; i < specs.length; i++) {
        const spec = specs[i]!;
        let id = spec.id;
        if (id === undefined) {
          id = cursor = this.freeId(cursor, (x) => named.has(x));
          cursor++;
        }
        const rule = this.parse(spec, id, now, `rules/${i}/`);
        const old = this.entries.get(id);
        // A rule that is the same as before stays as it was (times and counters).
        if (old && sameRule(old.rule, rule)) next.set(id, old);
        else next.set(id, { rule, createdAt: old?.createdAt ?? stamp, updatedAt: stamp });
        if (rule.src?.normalised || rule.dst?.normalised) {
          const w = normaliseWarnings(spec, rule, `rules/${i}/`);
          warningCount += w.length;
          if (warnings.length < MAX_WARNINGS) warnings.push(...w.slice(0, MAX_WARNINGS - warnings.length));
        }
      }
      const before = this.entries; // not changed until the swap below
      // Counters restart for an id that now names a different rule (a named id keeps its rule's count).
      const fresh: number[] = [];
      for (const [id, e] of next) {
        const old = before.get(id);
        if (!old || (old !== e && !named.has(id))) fresh.push(id);
      }
      const upstream = this.deps.upstream;
      await upstream?.replace(storedCopies(next.values()));
      try {
        await this.install(next, fresh, now, hooks);
      } catch (err) {
        await upstream?.replace(storedCopies(before.values())).catch(() => undefined);
        throw err;
      }
      return { count: next.size, warnings, warningCount };
    });
  }

  /**
   * Take the set the fleet's store has (fleet.ts): its ids and times, no
   * upstream write. A rule this agent refuses (a row typed in by hand) is
   * left out and named in `refused`; expired rules are left out. An
   * interface missing on this host is no reason to refuse: the rule matches
   * nothing here.
   */
  sync(rules: readonly StoredRule[]): Promise<SyncResult> {
    return this.mutate(async () => {
      const now = this.now();
      const result: SyncResult = { added: 0, removed: 0, changed: 0, refused: [] };
      const next = new Map<number, Entry>();
      const fresh: number[] = [];
      let retimed = false;
      for (const s of rules) {
        let rule: Rule;
        try {
          if (!Number.isInteger(s.id) || s.id < 1 || s.id > this.maxId) {
            throw new RuleError('id', `must be a whole number from 1 to ${this.maxId}`);
          }
          rule = parseRule(s, s.id, now);
        } catch (err) {
          if (!(err instanceof RuleError)) throw err;
          result.refused.push(`rule ${s.id}: ${err.message}`);
          continue;
        }
        if (rule.expiresAt && rule.expiresAt <= now) continue;
        const old = this.entries.get(rule.id);
        if (old && sameRule(old.rule, rule)) {
          // The store's times are the fleet's: take them, nothing to enforce.
          if (old.createdAt !== s.createdAt || old.updatedAt !== s.updatedAt) {
            old.createdAt = s.createdAt;
            old.updatedAt = s.updatedAt;
            old.stored = undefined;
            retimed = true;
          }
          next.set(rule.id, old);
          continue;
        }
        next.set(rule.id, { rule, createdAt: s.createdAt, updatedAt: s.updatedAt });
        fresh.push(rule.id);
        if (old) result.changed++;
        else result.added++;
      }
      for (const id of this.entries.keys()) if (!next.has(id)) result.removed++;
      if (fresh.length || result.removed) await this.install(next, fresh, now);
      else if (retimed) await this.file.snapshot(storedCopies(this.entries.values()), this.entries.size);
      return result;
    });
  }

  /**
   * Make `next` the set: counters of `fresh` ids zeroed, the kernel loaded
   * (diffed against what it holds) while the snapshot is written beside it,
   * the snapshot committed once the kernel switched. On failure the kernel
   * is back on the old set and the old snapshot stays.
   */
  private async install(next: Map<number, Entry>, fresh: number[], now: Date, hooks?: MutationHooks): Promise<void> {
    const before = this.entries;
    await this.deps.kernel.resetStats(fresh);
    // The kernel's batch writes run on the thread pool: meanwhile this thread writes the new
    // snapshot to a temporary file. It replaces the old one only once the kernel has switched.
    const loaded = this.deps.kernel.load(Array.from(next.values(), (e) => e.rule)).then(() => hooks?.onEnforced?.());
    const preparing = this.file.prepareSnapshot(storedCopies(next.values()), next.size);
    const [kernel, file] = await Promise.allSettled([loaded, preparing]);
    const prepared = file.status === 'fulfilled' ? file.value : undefined;
    if (kernel.status === 'rejected') {
      prepared?.discard();
      throw kernel.reason;
    }
    try {
      if (file.status === 'rejected') throw file.reason;
      prepared!.commit();
    } catch (err) {
      prepared?.discard();
      await this.deps.kernel.load(Array.from(before.values(), (e) => e.rule));
      throw err;
    }
    this.entries = next;
    this.reindex();
    this.recordReplaceHistory(before, next, now);
    this.armExpiry();
  }

  private recordReplaceHistory(before: Map<number, Entry>, after: Map<number, Entry>, ts: Date): void {
    if (!this.deps.history) return;
    const rows: RuleHistoryRow[] = [];
    let more = 0;
    // Past the cap only the count goes on: no JSON is made for rows nobody stores.
    const full = (): boolean => {
      if (rows.length < MAX_REPLACE_HISTORY) return false;
      more++;
      return true;
    };
    for (const [id, e] of before) {
      const now = after.get(id);
      if (now === e || full()) continue;
      rows.push({
        ts,
        op: 'replace',
        ruleId: id,
        before: JSON.stringify(storedCopy(e)),
        after: now ? JSON.stringify(storedCopy(now)) : '',
      });
    }
    for (const [id, e] of after) {
      if (before.has(id) || full()) continue;
      rows.push({ ts, op: 'replace', ruleId: id, before: '', after: JSON.stringify(storedCopy(e)) });
    }
    if (more) {
      // Rule id 0 is never a rule: a summary row.
      rows.push({ ts, op: 'replace', ruleId: 0, before: '', after: JSON.stringify({ unrecordedChanges: more }) });
    }
    this.recordHistory(rows);
  }

  private recordHistory(rows: RuleHistoryRow[]): void {
    if (rows.length && this.deps.history) this.deps.history(rows);
  }

  private setEntry(e: Entry): void {
    this.entries.set(e.rule.id, e);
    if (e.rule.expiresAt) this.expiring.add(e.rule.id);
    this.sortedIds = undefined;
  }

  private deleteEntry(id: number): void {
    this.entries.delete(id);
    this.expiring.delete(id);
    if (id < this.lowFree) this.lowFree = id;
    this.sortedIds = undefined;
  }

  /** Recompute what setEntry/deleteEntry keep, after the whole set changed. */
  private reindex(): void {
    this.sortedIds = undefined;
    this.lowFree = 1;
    this.expiring = new Set();
    for (const [id, e] of this.entries) if (e.rule.expiresAt) this.expiring.add(id);
  }

  /** Run a mutation alone; fold the journal into a snapshot when it has grown long. */
  private mutate<T>(job: () => Promise<T>): Promise<T> {
    return this.queue.run(async () => {
      if (this.closed) throw new RuleRequestError(400, undefined, 'the agent is stopping');
      const result = await job();
      if (this.file.journalEntries >= COMPACT_AFTER) await this.compact();
      return result;
    });
  }

  private async compact(): Promise<void> {
    try {
      await this.file.snapshot(storedCopies(this.entries.values()), this.entries.size);
    } catch (err) {
      // The journal still has every change; compaction is retried after the next one.
      this.deps.log.warn({ err: (err as Error).message }, 'rule snapshot failed; the journal keeps the changes');
    }
  }

  /** One timer for the earliest expiry. */
  private armExpiry(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    if (this.closed) return;
    let earliest = Infinity;
    for (const id of this.expiring) {
      const t = this.entries.get(id)?.rule.expiresAt?.getTime();
      if (t !== undefined && t < earliest) earliest = t;
    }
    if (earliest === Infinity) return;
    const delay = Math.min(Math.max(earliest - this.now().getTime(), 0), MAX_TIMER_MS);
    this.expiryTimer = setTimeout(() => void this.expireDue(), delay);
    this.expiryTimer.unref();
  }

  /** Remove every rule due by now (a mutation like DELETE, so it waits its turn). */
  expireDue(): Promise<number> {
    return this.mutate(async () => {
      const now = this.now().getTime();
      const due: number[] = [];
      for (const id of this.expiring) {
        const t = this.entries.get(id)?.rule.expiresAt?.getTime();
        if (t !== undefined && t <= now) due.push(id);
      }
      try {
        const gone = await this.removeNow(due, 'expire');
        if (gone.length) this.deps.log.info({ rules: gone.map((s) => s.id) }, 'rules expired: removed');
        // Always re-arm: a timer can fire a little before the wall clock reaches the expiry,
        // and then nothing was due yet.
        this.armExpiry();
        return gone.length;
      } catch (err) {
        this.deps.log.error({ err: (err as Error).message }, 'expiring rules failed: retrying in 1 s');
        this.expiryTimer = setTimeout(() => void this.expireDue(), 1000);
        this.expiryTimer.unref();
        return 0;
      }
    });
  }

  /** Stop the expiry timer and wait for a running mutation; the kernel keeps enforcing the set. */
  async close(): Promise<void> {
    await this.queue.run(() => {
      this.closed = true;
      if (this.expiryTimer) clearTimeout(this.expiryTimer);
      this.file.close();
      return Promise.resolve();
    });
  }
}
