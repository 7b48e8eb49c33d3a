/**
 * An in-memory RuleApi (control/rules/types.ts) for API and CLI tests: no
 * kernel, the real rule model (parseRule) for validation, the contract's
 * error kinds (RuleRequestError 400 naming the field, 404, 409), and every
 * call recorded. Plus an AgentApi around it for buildApi().
 */
import type { AgentApi, AgentStatus, InterfaceStatus } from '../../control/agent/types.js';
import { parsePrefix, type ParsedPrefix } from '../../control/rules/prefix.js';
import { parseRule, PROTOCOLS, RuleError, type Rule, type RuleSpec } from '../../control/rules/rule.js';
import {
  RuleRequestError,
  type MutationHooks,
  type RuleApi,
  type RuleChange,
  type RuleListQuery,
  type RulePage,
  type RuleReplace,
  type RuleWithStats,
  type StoredRule,
} from '../../control/rules/types.js';
import type { QueryResult } from '../../control/store/types.js';

/** At most this many warnings are listed by replace() (as the service does). */
export const FAKE_MAX_WARNINGS = 100;

const PROTOCOL_NAMES = new Map(Object.entries(PROTOCOLS).map(([name, n]) => [n, name]));

function ports(range: [number, number] | undefined): string | undefined {
  if (!range) return undefined;
  return range[0] === range[1] ? String(range[0]) : `${range[0]}-${range[1]}`;
}

function toBigInt(p: ParsedPrefix): bigint {
  return BigInt(`0x${p.addr.toString('hex')}`);
}

/** True when one prefix contains the other. */
function overlaps(a: ParsedPrefix, b: ParsedPrefix): boolean {
  if (a.family !== b.family) return false;
  const len = Math.min(a.len, b.len);
  const shift = BigInt(128 - len);
  return toBigInt(a) >> shift === toBigInt(b) >> shift;
}

function bare(err: RuleError): string {
  const prefix = `${err.field}: `;
  return err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
}

export class FakeRules implements RuleApi {
  readonly calls: Array<{ op: 'list' | 'get' | 'add' | 'remove' | 'replace'; arg: unknown }> = [];
  readonly rules = new Map<number, StoredRule>();
  readonly stats = new Map<number, { packets: number; bytes: number }>();
  /** Thrown by the next mutation, when set (then cleared). */
  failNext?: Error;
  /** The clock of createdAt, updatedAt and ttlSeconds. */
  now = (): Date => new Date('2025-01-02T03:04:05.000Z');

  get size(): number {
    return this.rules.size;
  }

  list(query: RuleListQuery): RulePage {
    this.calls.push({ op: 'list', arg: { ...query } });
    const limit = query.limit ?? 100;
    const offset = query.offset ?? 0;
    const filter = query.prefix === undefined ? undefined : parsePrefix(query.prefix);
    const needle = query.comment?.toLowerCase();
    const matching = [...this.rules.values()]
      .filter((r) => query.action === undefined || r.action === query.action)
      .filter(
        (r) =>
          !filter ||
          (r.src !== undefined && overlaps(parsePrefix(r.src), filter)) ||
          (r.dst !== undefined && overlaps(parsePrefix(r.dst), filter)),
      )
      .filter((r) => needle === undefined || (r.comment ?? '').toLowerCase().includes(needle))
      .sort((a, b) => a.id - b.id);
    return { rules: matching.slice(offset, offset + limit), total: matching.length, offset, limit };
  }

  get(id: number): RuleWithStats | undefined {
    this.calls.push({ op: 'get', arg: id });
    const rule = this.rules.get(id);
    if (!rule) return undefined;
    const s = this.stats.get(id) ?? { packets: 0, bytes: 0 };
    return { ...rule, matchedPackets: s.packets, matchedBytes: s.bytes };
  }

  async add(spec: RuleSpec, hooks?: MutationHooks): Promise<RuleChange> {
    this.calls.push({ op: 'add', arg: spec });
    this.failIfAsked();
    if (spec.id !== undefined && this.rules.has(spec.id)) {
      throw new RuleRequestError(409, 'id', `rule ${spec.id} already exists`);
    }
    const { rule, warnings } = this.parse(spec, spec.id ?? this.nextId(), '');
    this.rules.set(rule.id, rule);
    hooks?.onEnforced?.();
    return { rule, warnings };
  }

  async remove(id: number): Promise<StoredRule | undefined> {
    this.calls.push({ op: 'remove', arg: id });
    this.failIfAsked();
    const rule = this.rules.get(id);
    this.rules.delete(id);
    this.stats.delete(id);
    return rule;
  }

  async replace(specs: readonly RuleSpec[]): Promise<RuleReplace> {
    this.calls.push({ op: 'replace', arg: specs.length });
    this.failIfAsked();
    const taken = new Map<number, number>();
    specs.forEach((s, i) => {
      if (s.id === undefined) return;
      const j = taken.get(s.id);
      if (j !== undefined) throw new RuleRequestError(400, `rules/${i}/id`, `id ${s.id} is also rules/${j}'s`);
      taken.set(s.id, i);
    });
    let next = Math.max(0, ...taken.keys()) + 1;
    const out = new Map<number, StoredRule>();
    const warnings: string[] = [];
    let warningCount = 0;
    specs.forEach((s, i) => {
      const id = s.id ?? next++;
      const old = this.rules.get(id);
      const { rule, warnings: w } = this.parse(s, id, `rules/${i}/`, old?.createdAt);
      out.set(id, rule);
      warningCount += w.length;
      for (const text of w) if (warnings.length < FAKE_MAX_WARNINGS) warnings.push(text);
    });
    // All checked: swap the whole set at once.
    this.rules.clear();
    for (const [id, rule] of out) this.rules.set(id, rule);
    return { count: out.size, warnings, warningCount };
  }

  private failIfAsked(): void {
    const err = this.failNext;
    if (err) {
      this.failNext = undefined;
      throw err;
    }
  }

  private nextId(): number {
    return Math.max(0, ...this.rules.keys()) + 1;
  }

  private parse(
    spec: RuleSpec,
    id: number,
    fieldPrefix: string,
    createdAt?: string,
  ): { rule: StoredRule; warnings: string[] } {
    const now = this.now();
    let parsed: Rule;
    try {
      parsed = parseRule(spec, id, now);
    } catch (err) {
      if (err instanceof RuleError) throw new RuleRequestError(400, `${fieldPrefix}${err.field}`, bare(err));
      throw err;
    }
    const warnings: string[] = [];
    for (const side of ['src', 'dst'] as const) {
      const p = parsed[side];
      if (p?.normalised) warnings.push(`${fieldPrefix}${side}: ${spec[side]} has host bits set; stored as ${p.cidr}`);
    }
    const rule: StoredRule = { id, action: parsed.action, priority: parsed.priority, createdAt: '', updatedAt: '' };
    if (parsed.src) rule.src = parsed.src.cidr;
    if (parsed.dst) rule.dst = parsed.dst.cidr;
    if (parsed.protocol !== undefined) rule.protocol = PROTOCOL_NAMES.get(parsed.protocol) ?? parsed.protocol;
    const sp = ports(parsed.srcPorts);
    const dp = ports(parsed.dstPorts);
    if (sp) rule.srcPorts = sp;
    if (dp) rule.dstPorts = dp;
    if (parsed.iface) rule.iface = parsed.iface;
    if (parsed.expiresAt) rule.expiresAt = parsed.expiresAt.toISOString();
    if (parsed.comment !== undefined) rule.comment = parsed.comment;
    rule.createdAt = createdAt ?? now.toISOString();
    rule.updatedAt = now.toISOString();
    return { rule, warnings };
  }
}

/** An AgentApi with no interfaces and no store: only `rules` does anything. */
export class FakeRulesAgent implements AgentApi {
  readonly rules: FakeRules;

  constructor(rules = new FakeRules()) {
    this.rules = rules;
  }

  status(): AgentStatus {
    return {
      version: '0.0.0',
      host: 'test',
      startedAt: '2025-01-01T00:00:00.000Z',
      adopted: false,
      drainIntervalMs: 5000,
      flowsDrained: 0,
      flowsEvicted: 0,
      interfaces: [],
      store: { kind: 'embedded', location: '/nonexistent', healthy: true, spooledBatches: 0, spooledBytes: 0 },
    };
  }
  interfaces(): InterfaceStatus[] {
    return [];
  }
  async attach(name: string): Promise<InterfaceStatus> {
    throw Object.assign(new Error(`no such network interface: ${name}`), { code: 'ENODEV' });
  }
  async detach(): Promise<boolean> {
    return false;
  }
  async query(): Promise<QueryResult> {
    return { columns: [], rows: [] };
  }
}
