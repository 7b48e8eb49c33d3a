/**
 * What the REST API and the CLI see of the agent's rule set (issue 4). The
 * rule service (service.ts) implements RuleApi; routes/rules.ts only talks
 * to this. Every mutation is all-or-nothing: it is in the kernel tables and
 * in the persisted rule set when the promise resolves, or nowhere when it
 * rejects.
 */
import type { RuleSpec } from './rule.js';

export type { RuleSpec } from './rule.js';

/** A rule as stored and returned: normalised text, times as ISO-8601 UTC. */
export interface StoredRule {
  id: number;
  action: 'drop' | 'allow';
  /** Normalised CIDR (host bits cleared), e.g. 192.0.2.0/24 or 2001:db8::/32. */
  src?: string;
  dst?: string;
  /** A name (tcp, udp, icmp, icmpv6, sctp) when there is one, else the number. */
  protocol?: string | number;
  /** "80" or "1000-2000". */
  srcPorts?: string;
  dstPorts?: string;
  priority: number;
  iface?: string;
  expiresAt?: string;
  comment?: string;
  createdAt: string;
  updatedAt: string;
}

/** GET /rules/:id: the rule and what it matched since it was created (kernel counters). */
export interface RuleWithStats extends StoredRule {
  matchedPackets: number;
  matchedBytes: number;
}

export interface RuleListQuery {
  action?: 'drop' | 'allow';
  /** Rules whose src or dst overlaps this CIDR (contains it or lies inside it). */
  prefix?: string;
  /** Case-insensitive substring of the comment. */
  comment?: string;
  /** Page size (default 100, at most 10000) and the number of rules to skip, in id order. */
  limit?: number;
  offset?: number;
}

export interface RulePage {
  rules: StoredRule[];
  /** Rules matching the filter, over all pages. */
  total: number;
  offset: number;
  limit: number;
}

export interface RuleChange {
  rule: StoredRule;
  /** e.g. "src: 10.1.2.3/8 has host bits set; stored as 10.0.0.0/8". */
  warnings: string[];
}

export interface RuleReplace {
  count: number;
  warnings: string[];
  /** At most this many warnings are listed; `warningCount` counts them all. */
  warningCount: number;
}

/**
 * Thrown for a request that cannot be applied. `field` is a JSON path into
 * the request body (`src`, `rules/17/dstPorts`); routes answer 400 with
 * `body/<field>: <message>`. `status` 404 (no such rule) and 409 (id taken)
 * are the other cases, and 503: the fleet's rule store (--rules-source store)
 * cannot be reached, so nothing was changed.
 */
export class RuleRequestError extends Error {
  constructor(
    readonly status: 400 | 404 | 409 | 503,
    readonly field: string | undefined,
    message: string,
  ) {
    super(field ? `${field}: ${message}` : message);
    this.name = 'RuleRequestError';
  }
}

/** Optional callbacks of a mutation. */
export interface MutationHooks {
  /** Called the moment the kernel enforces the change (before the rules file is synced). */
  onEnforced?: () => void;
}

export interface RuleApi {
  /** Rules in the set (cheap: for the flowgate_rules gauge). */
  readonly size: number;
  list(query: RuleListQuery): RulePage;
  get(id: number): RuleWithStats | undefined;
  /** A new rule; `spec.id` may be given (409 if taken), else the next free id. */
  add(spec: RuleSpec, hooks?: MutationHooks): Promise<RuleChange>;
  /** The removed rule, or undefined when there was none with that id. */
  remove(id: number, hooks?: MutationHooks): Promise<StoredRule | undefined>;
  /** Replace the whole set at once. Rules that carry an id keep it; the others get new ids. */
  replace(specs: readonly RuleSpec[], hooks?: MutationHooks): Promise<RuleReplace>;
}
