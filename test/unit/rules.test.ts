/**
 * The rule model and compiler, without a kernel: validation errors name their
 * field, and the LPM folding gives, for every address, the same answer as
 * checking every rule by hand.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRule, RuleError, type Rule } from '../../control/rules/rule.js';
import { compareRank, compileRules, resolveLpm } from '../../control/rules/compile.js';
import { parsePrefix, formatAddress } from '../../control/rules/prefix.js';
import type { LpmEntry, PrefixBytes } from '../../control/datapath/layout.js';

const noIfaces = (name: string): number => {
  throw new Error(`no interface ${name}`);
};

test('prefixes are normalised and formatted', () => {
  const p = parsePrefix('10.1.2.3/8');
  assert.equal(p.cidr, '10.0.0.0/8');
  assert.equal(p.normalised, true);
  assert.equal(parsePrefix('192.0.2.0/24').normalised, false);
  assert.equal(parsePrefix('2001:db8::1/32').cidr, '2001:db8::/32');
  assert.equal(parsePrefix('2001:db8::7').len, 128);
  assert.equal(parsePrefix('198.51.100.7').cidr, '198.51.100.7/32');
  const mapped = Buffer.alloc(16);
  mapped[10] = 0xff;
  mapped[11] = 0xff;
  mapped.set([192, 0, 2, 1], 12);
  assert.equal(formatAddress(mapped), '192.0.2.1');
  assert.equal(formatAddress(parsePrefix('2001:db8:0:1::5').addr), '2001:db8:0:1::5');
});

test('each invalid field is an error naming that field', () => {
  const bad: Array<[Record<string, unknown>, string]> = [
    [{ action: 'reject' }, 'action'],
    [{ action: 'drop', src: '10.0.0.0/33' }, 'src'],
    [{ action: 'drop', dst: 'not-an-ip' }, 'dst'],
    [{ action: 'drop', src: '10.0.0.0/8', dst: '2001:db8::/32' }, 'dst'],
    [{ action: 'drop', protocol: 'tcpp' }, 'protocol'],
    [{ action: 'drop', protocol: 256 }, 'protocol'],
    [{ action: 'drop', protocol: 'tcp', dstPorts: '80-70' }, 'dstPorts'],
    [{ action: 'drop', protocol: 'tcp', srcPorts: '70000' }, 'srcPorts'],
    [{ action: 'drop', dstPorts: '80' }, 'dstPorts'],
    [{ action: 'drop', protocol: 'icmp', dstPorts: '80' }, 'dstPorts'],
    [{ action: 'drop', priority: -1 }, 'priority'],
    [{ action: 'drop', priority: 1.5 }, 'priority'],
    [{ action: 'drop', iface: 'a very long interface name' }, 'iface'],
    [{ action: 'drop', expiresAt: 'tomorrow' }, 'expiresAt'],
    [{ action: 'drop', ttlSeconds: 0 }, 'ttlSeconds'],
    [{ action: 'drop', ttlSeconds: 5, expiresAt: '2030-01-01T00:00:00Z' }, 'ttlSeconds'],
  ];
  for (const [spec, field] of bad) {
    assert.throws(
      () => parseRule(spec as never, 1),
      (err: unknown) => err instanceof RuleError && err.field === field,
      `${JSON.stringify(spec)} should fail on ${field}`,
    );
  }
  const ok = parseRule({ action: 'drop', protocol: 'TCP', dstPorts: '1000-2000', ttlSeconds: 60 }, 7, new Date(0));
  assert.equal(ok.protocol, 6);
  assert.deepEqual(ok.dstPorts, [1000, 2000]);
  assert.equal(ok.expiresAt?.getTime(), 60_000);
});

test('rank: priority, then allow over drop, then lower id', () => {
  const r = (ruleId: number, priority: number, action: 'drop' | 'allow') => ({ ruleId, priority, action });
  assert.ok(compareRank(r(1, 200, 'drop'), r(2, 100, 'allow')) < 0);
  assert.ok(compareRank(r(9, 100, 'allow'), r(2, 100, 'drop')) < 0);
  assert.ok(compareRank(r(2, 100, 'drop'), r(3, 100, 'drop')) < 0);
});

test('rules are sorted into tries and the multi-field list', () => {
  const rules: Rule[] = [
    parseRule({ action: 'drop', src: '10.0.0.0/8' }, 1),
    parseRule({ action: 'drop', dst: '2001:db8::/32' }, 2),
    parseRule({ action: 'drop', src: '10.0.0.0/8', protocol: 'udp' }, 3),
    parseRule({ action: 'allow', src: '10.0.0.0/8', dst: '10.1.0.0/16', priority: 300 }, 4),
    parseRule({ action: 'drop' }, 5),
  ];
  const c = compileRules(rules, noIfaces);
  assert.equal(c.src.length, 1);
  assert.equal(c.dst.length, 1);
  assert.deepEqual(
    c.complex.map((r) => r.id),
    [4, 3, 5],
  );
});

/** Brute force: the best rule among those whose prefix contains the address. */
function bestByHand(entries: LpmEntry[], addr: PrefixBytes): LpmEntry | undefined {
  const covering = entries.filter((e) => {
    if (e.prefix.family !== addr.family) return false;
    const bits = e.prefix.len;
    for (let i = 0; i < bits; i++) {
      const byte = i >> 3;
      const mask = 0x80 >> (i & 7);
      if ((e.prefix.addr[byte]! & mask) !== (addr.addr[byte]! & mask)) return false;
    }
    return true;
  });
  return covering.sort(compareRank)[0];
}

/** Longest-prefix match over the folded table, as the kernel trie does it. */
function longestMatch(entries: LpmEntry[], addr: PrefixBytes): LpmEntry | undefined {
  let best: LpmEntry | undefined;
  for (const e of entries) {
    if (bestByHand([e], addr) && (!best || e.prefix.len > best.prefix.len)) best = e;
  }
  return best;
}

test('LPM folding answers like checking every rule (random overlapping prefixes)', () => {
  let seed = 42;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const entries: LpmEntry[] = [];
  for (let i = 0; i < 300; i++) {
    const v6 = rand(4) === 0;
    const text = v6
      ? `2001:db8:${rand(4).toString(16)}:${rand(4).toString(16)}::/${32 + rand(40)}`
      : `10.${rand(4)}.${rand(4)}.${rand(4)}/${8 + rand(25)}`;
    entries.push({
      prefix: parsePrefix(text),
      ruleId: i + 1,
      priority: 100 * rand(3),
      action: rand(2) ? 'drop' : 'allow',
    });
  }
  const folded = resolveLpm(entries);
  for (let i = 0; i < 2000; i++) {
    const v6 = rand(4) === 0;
    const addr = parsePrefix(
      v6
        ? `2001:db8:${rand(4).toString(16)}:${rand(4).toString(16)}::${rand(9)}`
        : `10.${rand(4)}.${rand(4)}.${rand(6)}`,
    );
    const want = bestByHand(entries, addr);
    const got = longestMatch(folded, addr);
    assert.equal(got?.ruleId, want?.ruleId, `address ${addr.cidr}`);
  }
});
