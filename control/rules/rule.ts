/**
 * The rule model: what users send (RuleSpec, the REST/CLI shape from
 * DESIGN.md) and what the compiler takes (Rule, validated and normalised).
 * Every validation error names the field it is about.
 */
import type { ActionName } from '../datapath/layout.js';
import { parsePrefix, PrefixError, type ParsedPrefix } from './prefix.js';

export interface RuleSpec {
  id?: number;
  action: string;
  src?: string;
  dst?: string;
  protocol?: string | number;
  srcPorts?: string | number;
  dstPorts?: string | number;
  priority?: number;
  iface?: string;
  expiresAt?: string;
  ttlSeconds?: number;
  comment?: string;
}

export interface Rule {
  id: number;
  action: ActionName;
  src?: ParsedPrefix;
  dst?: ParsedPrefix;
  protocol?: number;
  srcPorts?: [number, number];
  dstPorts?: [number, number];
  priority: number;
  iface?: string;
  expiresAt?: Date;
  comment?: string;
}

export const DEFAULT_PRIORITY = 100;
export const MAX_PRIORITY = 1_000_000;

export const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 };
const PORTED = new Set([PROTOCOLS.tcp, PROTOCOLS.udp, PROTOCOLS.sctp]);

/** A rule that cannot be accepted; `field` is the offending member. */
export class RuleError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

function prefixField(field: string, value: unknown): ParsedPrefix {
  if (typeof value !== 'string') throw new RuleError(field, 'must be a CIDR string such as 192.0.2.0/24');
  try {
    return parsePrefix(value);
  } catch (err) {
    if (err instanceof PrefixError) throw new RuleError(field, err.message);
    throw err;
  }
}

export function parseProtocol(value: string | number, field = 'protocol'): number {
  if (typeof value === 'number' || /^\d+$/.test(String(value))) {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0 || n > 255)
      throw new RuleError(field, `${value} is not an IP protocol number (0-255)`);
    return n;
  }
  const n = PROTOCOLS[String(value).toLowerCase()];
  if (n === undefined) {
    throw new RuleError(field, `"${value}" is not one of ${Object.keys(PROTOCOLS).join(', ')} or a number`);
  }
  return n;
}

/** "80" or "1000-2000" (or a number) → [lo, hi]. */
export function parsePorts(value: string | number, field: string): [number, number] {
  const m = /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(String(value));
  if (!m) throw new RuleError(field, `"${value}" is not a port or a port range like 1000-2000`);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo > 65535 || hi > 65535) throw new RuleError(field, `"${value}" is beyond port 65535`);
  if (lo > hi) throw new RuleError(field, `"${value}" is an empty range (start after end)`);
  return [lo, hi];
}

/** Validate and normalise one rule. `now` anchors ttlSeconds. */
export function parseRule(spec: RuleSpec, id: number, now = new Date()): Rule {
  if (spec.action !== 'drop' && spec.action !== 'allow') {
    throw new RuleError('action', `must be "drop" or "allow", got ${JSON.stringify(spec.action)}`);
  }
  const rule: Rule = { id, action: spec.action, priority: DEFAULT_PRIORITY };
  if (spec.src !== undefined) rule.src = prefixField('src', spec.src);
  if (spec.dst !== undefined) rule.dst = prefixField('dst', spec.dst);
  if (rule.src && rule.dst && rule.src.family !== rule.dst.family) {
    throw new RuleError('dst', `is IPv${rule.dst.family} but src is IPv${rule.src.family}`);
  }
  if (spec.protocol !== undefined) rule.protocol = parseProtocol(spec.protocol);
  for (const field of ['srcPorts', 'dstPorts'] as const) {
    const value = spec[field];
    if (value === undefined) continue;
    if (rule.protocol === undefined || !PORTED.has(rule.protocol)) {
      throw new RuleError(field, 'needs protocol tcp, udp or sctp');
    }
    rule[field] = parsePorts(value, field);
  }
  if (spec.priority !== undefined) {
    if (!Number.isInteger(spec.priority) || spec.priority < 0 || spec.priority > MAX_PRIORITY) {
      throw new RuleError('priority', `must be an integer from 0 to ${MAX_PRIORITY}`);
    }
    rule.priority = spec.priority;
  }
  if (spec.iface !== undefined) {
    if (typeof spec.iface !== 'string' || !/^[^\s/]{1,15}$/.test(spec.iface)) {
      throw new RuleError('iface', 'must be an interface name (1-15 characters, no spaces or slashes)');
    }
    rule.iface = spec.iface;
  }
  if (spec.expiresAt !== undefined && spec.ttlSeconds !== undefined) {
    throw new RuleError('ttlSeconds', 'give expiresAt or ttlSeconds, not both');
  }
  if (spec.expiresAt !== undefined) {
    const t = new Date(spec.expiresAt);
    if (typeof spec.expiresAt !== 'string' || Number.isNaN(t.getTime())) {
      throw new RuleError('expiresAt', 'must be an ISO-8601 date-time');
    }
    rule.expiresAt = t;
  }
  if (spec.ttlSeconds !== undefined) {
    if (!Number.isInteger(spec.ttlSeconds) || spec.ttlSeconds <= 0) {
      throw new RuleError('ttlSeconds', 'must be a positive whole number of seconds');
    }
    rule.expiresAt = new Date(now.getTime() + spec.ttlSeconds * 1000);
  }
  if (spec.comment !== undefined) {
    if (typeof spec.comment !== 'string' || spec.comment.length > 1024) {
      throw new RuleError('comment', 'must be a string of at most 1024 characters');
    }
    rule.comment = spec.comment;
  }
  return rule;
}
