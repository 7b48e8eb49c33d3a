/**
 * Rule compiler: a validated rule set → the three kernel tables.
 *
 * Plain prefix rules (a source or a destination prefix and nothing else) go
 * to the LPM tries, where a lookup returns only the longest matching prefix.
 * So each prefix is stored with the best verdict among itself and every
 * shorter prefix covering it: one lookup then answers for the whole table,
 * whatever its size. Everything else is a multi-field rule, stored best
 * first so the program stops at its first match.
 */
import {
  Family,
  MAX_COMPLEX_RULES,
  encodeComplexRules,
  encodeLpmEntries,
  ipv4Value,
  type ActionName,
  type ComplexRule,
  type LpmEntry,
  type PrefixBytes,
} from '../datapath/layout.js';
import { prefixContains } from './prefix.js';
import { RuleError, type Rule } from './rule.js';

export interface CompiledRules {
  src: LpmEntry[];
  dst: LpmEntry[];
  complex: ComplexRule[];
}

/** Encoded for the batch writes: what the datapath stores in a rule slot. */
export interface RuleTables {
  src: { keys: Buffer; values: Buffer; count: number };
  dst: { keys: Buffer; values: Buffer; count: number };
  complex: { keys: Buffer; values: Buffer; count: number };
}

interface Ranked {
  ruleId: number;
  priority: number;
  action: ActionName;
}

/** The order every table agrees on: higher priority, then allow over drop, then lower id. */
export function compareRank(a: Ranked, b: Ranked): number {
  if (a.priority !== b.priority) return b.priority - a.priority;
  if (a.action !== b.action) return a.action === 'allow' ? -1 : 1;
  return a.ruleId - b.ruleId;
}

/** The LPM table a rule goes to, or undefined for the multi-field table. */
export function isPlain(rule: Rule): 'src' | 'dst' | undefined {
  const extra = rule.protocol !== undefined || rule.srcPorts || rule.dstPorts || rule.iface !== undefined;
  if (extra) return undefined;
  if (rule.src && !rule.dst) return 'src';
  if (rule.dst && !rule.src) return 'dst';
  return undefined;
}

/** A prefix as one comparable number (IPv4) or bigint (IPv6) of address bits then length. */
export function prefixOrderKey(p: PrefixBytes): number | bigint {
  if (p.family === Family.ipv4) return ipv4Value(p) * 64 + p.len;
  return (p.addr.readBigUInt64BE(0) << 72n) | (p.addr.readBigUInt64BE(8) << 8n) | BigInt(p.len);
}

/** Dedupe per prefix, then fold every covering prefix's verdict into each prefix. */
export function resolveLpm(entries: LpmEntry[]): LpmEntry[] {
  // IPv4 keys are numbers, IPv6 keys strings: the two never collide.
  const byPrefix = new Map<number | string, LpmEntry>();
  for (const e of entries) {
    const order = prefixOrderKey(e.prefix);
    const key = typeof order === 'number' ? order : order.toString(16);
    const seen = byPrefix.get(key);
    if (!seen || compareRank(e, seen) < 0) byPrefix.set(key, e);
  }
  const sorted = [...byPrefix.values()];
  const v4 = sorted.filter((e) => e.prefix.family === Family.ipv4);
  const v6 = sorted.filter((e) => e.prefix.family === Family.ipv6);
  v4.sort((a, b) => (prefixOrderKey(a.prefix) as number) - (prefixOrderKey(b.prefix) as number));
  v6.sort((a, b) => {
    const x = prefixOrderKey(a.prefix) as bigint;
    const y = prefixOrderKey(b.prefix) as bigint;
    return x < y ? -1 : x > y ? 1 : 0;
  });
  const out: LpmEntry[] = [];
  for (const family of [v4, v6]) {
    // In address-then-length order every ancestor precedes its descendants,
    // so a stack of the open ancestors gives each prefix its covering chain.
    const stack: LpmEntry[] = [];
    for (const e of family) {
      while (stack.length && !prefixContains(stack[stack.length - 1]!.prefix, e.prefix)) stack.pop();
      const parent = stack[stack.length - 1];
      const resolved = parent && compareRank(parent, e) < 0 ? { ...parent, prefix: e.prefix } : e;
      out.push(resolved);
      stack.push(resolved);
    }
  }
  return out;
}

export type IfindexResolver = (iface: string) => number;

export function compileRules(rules: readonly Rule[], ifindexOf: IfindexResolver): CompiledRules {
  const src: LpmEntry[] = [];
  const dst: LpmEntry[] = [];
  const complex: ComplexRule[] = [];
  for (const rule of rules) {
    const rank = { ruleId: rule.id, priority: rule.priority, action: rule.action };
    const plain = isPlain(rule);
    if (plain === 'src') src.push({ prefix: rule.src!, ...rank });
    else if (plain === 'dst') dst.push({ prefix: rule.dst!, ...rank });
    else {
      const family = rule.src?.family ?? rule.dst?.family ?? 0;
      complex.push({
        id: rule.id,
        priority: rule.priority,
        action: rule.action,
        family,
        src: rule.src,
        dst: rule.dst,
        protocol: rule.protocol,
        srcPorts: rule.srcPorts,
        dstPorts: rule.dstPorts,
        ifindex: rule.iface === undefined ? undefined : ifindexOf(rule.iface),
      });
    }
  }
  if (complex.length > MAX_COMPLEX_RULES) {
    throw new RuleError(
      'rules',
      `${complex.length} multi-field rules (protocol, ports, interface, or both src and dst); at most ${MAX_COMPLEX_RULES} fit. Plain prefix rules have no such limit.`,
    );
  }
  complex.sort((a, b) =>
    compareRank(
      { ruleId: a.id, priority: a.priority, action: a.action },
      { ruleId: b.id, priority: b.priority, action: b.action },
    ),
  );
  return { src: resolveLpm(src), dst: resolveLpm(dst), complex };
}

export function encodeRuleTables(compiled: CompiledRules): RuleTables {
  return {
    src: { ...encodeLpmEntries(compiled.src), count: compiled.src.length },
    dst: { ...encodeLpmEntries(compiled.dst), count: compiled.dst.length },
    complex: { ...encodeComplexRules(compiled.complex), count: compiled.complex.length },
  };
}
