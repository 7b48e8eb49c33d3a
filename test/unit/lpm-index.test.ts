/**
 * LpmIndex against resolveLpm: after every random change, the previous
 * resolved table plus the returned delta must be exactly resolveLpm of the
 * rules now held, and the delta must touch nothing that did not change.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Family, type ActionName, type LpmEntry, type PrefixBytes } from '../../control/datapath/layout.js';
import { resolveLpm } from '../../control/rules/compile.js';
import { LpmIndex, encodeLpmDelta, type LpmDelta } from '../../control/rules/lpm-index.js';
import { parsePrefix } from '../../control/rules/prefix.js';

/** Small deterministic PRNG (mulberry32): a failure names its seed and replays. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function pick<T>(rand: () => number, xs: readonly T[]): T {
  return xs[Math.floor(rand() * xs.length)]!;
}

function prefixName(p: PrefixBytes): string {
  return `${p.family}:${p.addr.toString('hex')}/${p.len}`;
}

function verdictOf(e: LpmEntry): string {
  return `${e.ruleId}:${e.priority}:${e.action}`;
}

/** The resolved table as prefix → verdict. */
function tableOf(entries: readonly LpmEntry[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of entries) {
    const name = prefixName(e.prefix);
    assert.ok(!out.has(name), `prefix ${name} twice in a resolved table`);
    out.set(name, verdictOf(e));
  }
  return out;
}

/** Clear every bit past `len`: prefixes are stored canonical. */
function masked(family: 4 | 6, addr: Buffer, len: number): PrefixBytes {
  const out = Buffer.alloc(16);
  const bytes = family === 4 ? 4 : 16;
  for (let i = 0; i < bytes; i++) {
    const bits = Math.max(0, Math.min(8, len - 8 * i));
    out[i] = addr[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return { family: family === 4 ? Family.ipv4 : Family.ipv6, addr: out, len };
}

/**
 * Prefixes from a small address space so that nesting and shared prefixes
 * are the common case: IPv4 inside 10.0.0.0/14, IPv6 inside 2001:db8::/30.
 */
function randomPrefix(rand: () => number): PrefixBytes {
  const addr = Buffer.alloc(16);
  if (rand() < 0.6) {
    addr[0] = 10;
    addr[1] = Math.floor(rand() * 4);
    addr[2] = pick(rand, [0, 1, 2, 128, 255, Math.floor(rand() * 256)]);
    addr[3] = pick(rand, [0, 1, 64, Math.floor(rand() * 256)]);
    return masked(4, addr, pick(rand, [0, 8, 12, 14, 15, 16, 17, 20, 23, 24, 25, 28, 31, 32]));
  }
  addr.writeUInt32BE(0x20010db8 + Math.floor(rand() * 4), 0);
  addr[4] = pick(rand, [0, 1, 0x80, Math.floor(rand() * 256)]);
  addr[7] = pick(rand, [0, 1, Math.floor(rand() * 256)]);
  addr[15] = pick(rand, [0, 1, Math.floor(rand() * 256)]);
  return masked(6, addr, pick(rand, [0, 16, 30, 31, 32, 33, 40, 48, 56, 63, 64, 127, 128]));
}

function randomEntry(rand: () => number, ruleId: number, prefixes: PrefixBytes[]): LpmEntry {
  // Reuse a known prefix often: shared prefixes and exact re-adds of removed ones.
  const prefix = prefixes.length && rand() < 0.4 ? pick(rand, prefixes) : randomPrefix(rand);
  prefixes.push(prefix);
  const action: ActionName = rand() < 0.5 ? 'allow' : 'drop';
  return { prefix, ruleId, priority: pick(rand, [0, 50, 100, 100, 100, 200, 1_000_000]), action };
}

/** Apply a delta to a resolved table, checking it only says what changed. */
function applyDelta(table: Map<string, string>, delta: LpmDelta): void {
  const seen = new Set<string>();
  for (const p of delta.delete) {
    const name = prefixName(p);
    assert.ok(!seen.has(name), `${name} twice in one delta`);
    seen.add(name);
    assert.ok(table.has(name), `delta deletes ${name}, which is not in the table`);
    table.delete(name);
  }
  for (const e of delta.upsert) {
    const name = prefixName(e.prefix);
    assert.ok(!seen.has(name), `${name} twice in one delta`);
    seen.add(name);
    assert.notEqual(table.get(name), verdictOf(e), `delta rewrites ${name} with the verdict it already has`);
    table.set(name, verdictOf(e));
  }
}

function runRandom(seed: number, steps: number): void {
  const rand = rng(seed);
  const prefixes: PrefixBytes[] = [];
  let nextId = 1;
  const held = new Map<number, LpmEntry>();
  const initial = Array.from({ length: Math.floor(rand() * 40) }, () => randomEntry(rand, nextId++, prefixes));
  for (const e of initial) held.set(e.ruleId, e);
  const index = new LpmIndex(initial);
  const table = tableOf(index.resolved());
  assert.deepEqual(table, tableOf(resolveLpm(initial)), `seed ${seed}: built table`);

  for (let step = 0; step < steps; step++) {
    const ids = [...held.keys()];
    const remove: LpmEntry[] = [];
    const add: LpmEntry[] = [];
    const kind = rand();
    if (kind < 0.45 || ids.length === 0) {
      for (let n = 1 + Math.floor(rand() * 3); n > 0; n--) add.push(randomEntry(rand, nextId++, prefixes));
    } else if (kind < 0.85) {
      for (let n = 1 + Math.floor(rand() * 2); n > 0 && ids.length; n--) {
        remove.push(held.get(ids.splice(Math.floor(rand() * ids.length), 1)[0]!)!);
      }
      // Entries not held are ignored: an unknown id, or a held id at another prefix.
      if (rand() < 0.1) remove.push({ ...randomEntry(rand, 999_999_999, prefixes) });
      if (rand() < 0.1 && ids.length) remove.push({ ...held.get(pick(rand, ids))!, prefix: randomPrefix(rand) });
    } else {
      // A replacement: the same id at another prefix or rank, plus some noise.
      const id = pick(rand, ids);
      remove.push(held.get(id)!);
      add.push(randomEntry(rand, id, prefixes));
      if (rand() < 0.5) add.push(randomEntry(rand, nextId++, prefixes));
    }
    const delta = index.change({ add, remove });
    for (const r of remove) {
      const e = held.get(r.ruleId);
      if (e && prefixName(e.prefix) === prefixName(r.prefix)) held.delete(r.ruleId);
    }
    for (const e of add) held.set(e.ruleId, e);

    const names = (es: LpmEntry[]): string => es.map((e) => `${e.ruleId}@${prefixName(e.prefix)}`).join(',');
    const where = `seed ${seed} step ${step} (+${names(add)} -${names(remove)})`;
    applyDelta(table, delta);
    const expected = tableOf(resolveLpm([...held.values()]));
    assert.deepEqual(table, expected, `${where}: old table + delta`);
    assert.equal(delta.count, expected.size, `${where}: count`);
    assert.equal(index.size, expected.size, `${where}: size`);
    if (step % 25 === 0) assert.deepEqual(tableOf(index.resolved()), expected, `${where}: full table`);
  }
  assert.deepEqual(
    index.resolved().map((e) => [prefixName(e.prefix), verdictOf(e)]),
    resolveLpm([...held.values()]).map((e) => [prefixName(e.prefix), verdictOf(e)]),
    `seed ${seed}: final table, in resolveLpm's order`,
  );
}

test('random adds and removes: old table + delta = resolveLpm of the rules held', () => {
  for (let seed = 1; seed <= 60; seed++) runRandom(seed, 300);
});

test('removing the best rule of a shared prefix falls back to the next, then to the covering prefix', () => {
  const at = (cidr: string, ruleId: number, priority: number, action: ActionName): LpmEntry => ({
    prefix: parsePrefix(cidr),
    ruleId,
    priority,
    action,
  });
  const rules = [
    at('10.0.0.0/8', 1, 50, 'drop'),
    at('10.1.0.0/16', 2, 200, 'allow'),
    at('10.1.0.0/16', 3, 100, 'drop'),
    at('10.1.2.0/24', 4, 10, 'drop'),
  ];
  const index = new LpmIndex(rules);
  const names = (d: LpmDelta): string[] => d.upsert.map((e) => `${parsePrefixName(e.prefix)}=${e.ruleId}`).sort();
  // The /16 and the /24 under it both resolved to rule 2; without it, to rule 3.
  let d = index.remove([rules[1]!]);
  assert.deepEqual(names(d), ['10.1.0.0/16=3', '10.1.2.0/24=3']);
  assert.deepEqual(d.delete, []);
  // Without 3 the /16 holds no rule: deleted, and the /24 falls to the /8's rule 1 (50 > 10).
  d = index.remove([rules[2]!]);
  assert.deepEqual(names(d), ['10.1.2.0/24=1']);
  assert.deepEqual(d.delete.map(parsePrefixName), ['10.1.0.0/16']);
  assert.equal(d.count, 2);
  // A covering drop above everything rewrites what it beats.
  d = index.add([at('0.0.0.0/0', 5, 60, 'drop')]);
  assert.deepEqual(names(d), ['0.0.0.0/0=5', '10.0.0.0/8=5', '10.1.2.0/24=5']);
  // A lower-ranked rule at a shared prefix changes nothing in the kernel.
  d = index.add([at('10.0.0.0/8', 6, 1, 'allow')]);
  assert.deepEqual(d, { upsert: [], delete: [], count: 3 });
  // Rule 5 moved to another prefix in one change: a delete and the rewrites it causes.
  d = index.change({ remove: [at('0.0.0.0/0', 5, 60, 'drop')], add: [at('10.1.0.0/16', 5, 60, 'drop')] });
  // (The /24 stays rule 5: it had it from the /0 and now has it from the /16.)
  assert.deepEqual(names(d), ['10.0.0.0/8=1', '10.1.0.0/16=5']);
  assert.deepEqual(d.delete.map(parsePrefixName), ['0.0.0.0/0']);
  // Refused changes leave the index as it was.
  const hostBits = {
    ...at('10.0.0.0/8', 7, 1, 'drop'),
    prefix: { family: Family.ipv4, addr: parsePrefix('10.0.0.1').addr, len: 8 },
  };
  assert.throws(() => index.add([at('10.2.0.0/16', 8, 1, 'drop'), hostBits]), /host bits/);
  assert.throws(() => index.add([at('10.0.0.0/8', 6, 1, 'drop')]), /twice/);
  assert.throws(() => index.add([at('10.3.0.0/16', 9, 1, 'drop'), at('10.3.0.0/16', 9, 1, 'drop')]), /twice/);
  assert.deepEqual(
    tableOf(index.resolved()),
    tableOf(resolveLpm([rules[0]!, rules[3]!, at('10.0.0.0/8', 6, 1, 'allow'), at('10.1.0.0/16', 5, 60, 'drop')])),
  );
  assert.throws(() => new LpmIndex([rules[0]!, rules[0]!]), /twice/);
});

function parsePrefixName(p: PrefixBytes): string {
  return p.family === Family.ipv4 ? `${p.addr.subarray(0, 4).join('.')}/${p.len}` : prefixName(p);
}

test('encodeLpmDelta writes the kernel keys of upserts and deletes', () => {
  const index = new LpmIndex([{ prefix: parsePrefix('192.0.2.0/24'), ruleId: 1, priority: 100, action: 'drop' }]);
  const enc = encodeLpmDelta(
    index.change({
      remove: [index.resolved()[0]!],
      add: [{ prefix: parsePrefix('2001:db8::/32'), ruleId: 2, priority: 9, action: 'allow' }],
    }),
  );
  assert.equal(enc.count, 1);
  assert.equal(enc.deleteKeys.length, 24);
  assert.equal(enc.deleteKeys.readUInt32LE(0), 8 + 24);
  assert.deepEqual([...enc.deleteKeys.subarray(4, 9)], [4, 192, 0, 2, 0]);
  assert.equal(enc.upsertKeys.readUInt32LE(0), 8 + 32);
  assert.equal(enc.upsertKeys[4], 6);
  assert.equal(enc.upsertValues.readUInt32LE(0), 2);
});

test('large tables: build and single changes stay cheap', (t) => {
  // 200,000 /24s under a few covering prefixes; timings are diagnostics, the results are checked.
  const entries: LpmEntry[] = [];
  for (let i = 0; i < 200_000; i++) {
    const addr = Buffer.alloc(16);
    addr.writeUInt32BE(((1 << 16) + i) * 256, 0);
    entries.push({ prefix: { family: Family.ipv4, addr, len: 24 }, ruleId: i + 1, priority: 100, action: 'drop' });
  }
  entries.push({ prefix: parsePrefix('1.0.0.0/8'), ruleId: 300_000, priority: 150, action: 'drop' });
  let started = performance.now();
  const index = new LpmIndex(entries);
  t.diagnostic(`built 200,001 prefixes in ${(performance.now() - started).toFixed(0)} ms`);
  assert.equal(index.size, 200_001);
  const singles = Array.from({ length: 1000 }, (_, i): LpmEntry => ({
    prefix: parsePrefix(`100.${i >> 8}.${i & 255}.0/24`),
    ruleId: 400_000 + i,
    priority: 100,
    action: 'drop',
  }));
  started = performance.now();
  for (const e of singles) {
    assert.equal(index.add([e]).upsert.length, 1);
    assert.equal(index.remove([e]).delete.length, 1);
  }
  t.diagnostic(`1000 adds and 1000 removes of a /24: ${((performance.now() - started) / 2000).toFixed(3)} ms each`);
  // A /8 above 65,536 of the /24s rewrites each of them, and removing it restores them.
  const cover: LpmEntry = { prefix: parsePrefix('1.0.0.0/8'), ruleId: 300_001, priority: 300, action: 'allow' };
  assert.equal(index.add([cover]).upsert.length, 65_537);
  assert.equal(index.remove([cover]).upsert.length, 65_537);
  assert.deepEqual(tableOf(index.resolved()), tableOf(resolveLpm(entries)));
});
