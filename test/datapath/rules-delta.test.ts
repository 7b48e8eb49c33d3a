/**
 * Incremental rule changes in the kernel (Datapath.applyDelta with deltas
 * from LpmIndex): after each change, crafted frames by BPF_PROG_TEST_RUN get
 * the verdicts the rule set says, and both rule slots hold exactly what a
 * full compile of the current rule set would load. Also: a delta switches
 * every table at once under load, and a handle that adopted pinned maps
 * loads in full before it writes deltas.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { requirePrivileges } from '../lib/privileges.js';
import { openTestDatapath, TEST_LIMITS, withTestDatapath, type TestDatapath } from '../lib/datapath.js';
import { tcpSyn as tcp } from '../lib/frames.js';
import { Datapath, type RuleTablesDelta } from '../../control/datapath/datapath.js';
import { LPM_KEY, LPM_VERDICT, RULE, type LpmEntry } from '../../control/datapath/layout.js';
import { compileRules, encodeRuleTables, isPlain, type RuleTables } from '../../control/rules/compile.js';
import { LpmIndex, encodeLpmDelta } from '../../control/rules/lpm-index.js';
import { parseRule, type Rule, type RuleSpec } from '../../control/rules/rule.js';
import { loadNative } from '../../native/index.js';

const XDP_DROP = 1;
const XDP_PASS = 2;
const P = XDP_PASS;
const D = XDP_DROP;

const ifindexOf = (name: string): number => loadNative().ifindex(name);

function rule(spec: RuleSpec & { id: number }): Rule {
  return parseRule(spec, spec.id);
}

function lpmEntry(r: Rule, table: 'src' | 'dst'): LpmEntry {
  return { prefix: r[table]!, ruleId: r.id, priority: r.priority, action: r.action };
}

/**
 * What a rule service keeps: the rules, an LpmIndex per table, and the
 * deltas it sends the datapath. Multi-field rules are few: their whole
 * table goes with any change that touches one.
 */
class Rules {
  readonly held = new Map<number, Rule>();
  private src = new LpmIndex();
  private dst = new LpmIndex();

  constructor(readonly dp: Datapath) {}

  /** Take a rule set as the one loaded, without loading it. */
  track(rules: Rule[]): void {
    this.held.clear();
    for (const r of rules) this.held.set(r.id, r);
    this.src = new LpmIndex(rules.filter((r) => isPlain(r) === 'src').map((r) => lpmEntry(r, 'src')));
    this.dst = new LpmIndex(rules.filter((r) => isPlain(r) === 'dst').map((r) => lpmEntry(r, 'dst')));
  }

  async load(rules: Rule[]): Promise<void> {
    this.track(rules);
    await this.dp.loadRules(this.full());
  }

  full(): RuleTables {
    return encodeRuleTables(compileRules([...this.held.values()], ifindexOf));
  }

  delta(add: Rule[], removeIds: number[]): RuleTablesDelta {
    const removed = removeIds.map((id) => this.held.get(id)!);
    for (const r of removed) this.held.delete(r.id);
    for (const r of add) this.held.set(r.id, r);
    const delta: RuleTablesDelta = {};
    for (const table of ['src', 'dst'] as const) {
      const of = (rs: Rule[]): LpmEntry[] => rs.filter((r) => isPlain(r) === table).map((r) => lpmEntry(r, table));
      const d = this[table].change({ add: of(add), remove: of(removed) });
      if (d.upsert.length || d.delete.length) delta[table] = encodeLpmDelta(d);
    }
    if ([...add, ...removed].some((r) => isPlain(r) === undefined)) delta.complex = this.full().complex;
    return delta;
  }

  /** Apply a change and wait until both slots hold it. */
  async change(add: Rule[], removeIds: number[] = []): Promise<void> {
    const before = this.dp.config().ruleGen;
    const { gen, settled } = await this.dp.applyDelta(this.delta(add, removeIds));
    assert.equal(gen, before + 1);
    assert.equal(this.dp.config().ruleGen, gen, 'switched when applyDelta resolves');
    await settled;
    assert.ok(this.dp.ruleSlotsInSync);
  }
}

/** key||value records of a map, as hex strings. */
function records(buf: Buffer, size: number, count = buf.length / size): string[] {
  return Array.from({ length: count }, (_, i) => buf.subarray(i * size, (i + 1) * size).toString('hex'));
}

function pairs(keys: Buffer, values: Buffer, keySize: number, valueSize: number): string[] {
  return Array.from(
    { length: keys.length / keySize },
    (_, i) =>
      keys.subarray(i * keySize, (i + 1) * keySize).toString('hex') +
      values.subarray(i * valueSize, (i + 1) * valueSize).toString('hex'),
  );
}

/** Both slots hold what a full compile of the held rules gives, entry for entry. */
async function assertSlotsMatch(rules: Rules, where: string): Promise<void> {
  const want = rules.full();
  const cfg = rules.dp.config();
  const lpm = LPM_KEY.size + LPM_VERDICT.size;
  for (const slot of [0, 1]) {
    for (const table of ['src', 'dst'] as const) {
      const got = records(await rules.dp.native.dumpAll(`${table}_lpm_${slot}`), lpm).sort();
      const expected = pairs(want[table].keys, want[table].values, LPM_KEY.size, LPM_VERDICT.size).sort();
      assert.deepEqual(got, expected, `${where}: ${table}_lpm_${slot}`);
    }
    assert.equal(cfg.srcPrefixes[slot], want.src.count, `${where}: src count of slot ${slot}`);
    assert.equal(cfg.dstPrefixes[slot], want.dst.count, `${where}: dst count of slot ${slot}`);
    assert.equal(cfg.complexCount[slot], want.complex.count, `${where}: complex count of slot ${slot}`);
    // The array holds every index; the programs read the first complex_count, best first.
    const complex = records(await rules.dp.native.dumpAll(`complex_${slot}`), 4 + RULE.size, want.complex.count);
    assert.deepEqual(complex, pairs(want.complex.keys, want.complex.values, 4, RULE.size), `${where}: complex_${slot}`);
  }
}

/** Every test here opens its datapath with room for 65,536 prefixes and rules. */
function withDatapath(t: TestContext, fn: (env: TestDatapath) => Promise<void>): Promise<void> {
  return withTestDatapath(t, fn, { maxPrefixes: 1 << 16, maxRules: 1 << 16 });
}

function verdicts(dp: Datapath, frames: Buffer[]): number[] {
  return frames.map((f) => dp.testRun('xdp', f).retval);
}

test('deltas: verdicts follow every change, and both slots equal a full compile', async (t) => {
  await withDatapath(t, async ({ dp }) => {
    const rules = new Rules(dp);
    await rules.load([
      rule({ id: 1, action: 'drop', src: '10.1.1.0/24' }),
      rule({ id: 2, action: 'allow', src: '10.1.2.0/24' }),
      rule({ id: 3, action: 'drop', src: '10.1.3.0/24', priority: 150 }),
      // Two rules at one prefix: 4 wins, 5 is next.
      rule({ id: 4, action: 'drop', src: '10.1.4.0/24', priority: 300 }),
      rule({ id: 5, action: 'allow', src: '10.1.4.0/24', priority: 200 }),
      rule({ id: 6, action: 'drop', dst: '192.0.2.0/24', priority: 50 }),
      rule({ id: 7, action: 'drop', protocol: 'tcp', dstPorts: '22', priority: 120 }),
      rule({ id: 8, action: 'drop', src: '2001:db8:1::/48' }),
      // Enough /24s under one /16 that covering them makes a delta too big for single updates.
      ...Array.from({ length: 40 }, (_, i) => rule({ id: 100 + i, action: 'drop', src: `10.2.${i}.0/24` })),
    ]);
    await rules.dp.rulesSettled();
    assert.ok(dp.ruleSlotsInSync, 'a full load leaves both slots the same');
    await assertSlotsMatch(rules, 'loaded');

    const v4 = [
      tcp('10.1.1.9', '198.51.100.1'),
      tcp('10.1.2.9', '198.51.100.1'),
      tcp('10.1.3.9', '198.51.100.1'),
      tcp('10.1.4.9', '198.51.100.1'),
      tcp('10.9.9.9', '198.51.100.1'),
      tcp('172.16.0.1', '192.0.2.1'),
      tcp('172.16.0.1', '198.51.100.1', 22),
    ];
    assert.deepEqual(verdicts(dp, v4), [D, P, D, D, P, D, D]);

    // A covering /8 allow above everything under it.
    await rules.change([rule({ id: 10, action: 'allow', src: '10.0.0.0/8', priority: 250 })]);
    await assertSlotsMatch(rules, 'covering /8 added');
    assert.deepEqual(verdicts(dp, v4), [P, P, P, D, P, D, D], 'the /8 (250) beats all but rule 4 (300)');

    await rules.change([], [10]);
    await assertSlotsMatch(rules, 'covering /8 removed');
    assert.deepEqual(verdicts(dp, v4), [D, P, D, D, P, D, D]);

    // 41 entries change (the /16 and the 40 /24s under it): written as a batch.
    const under16 = [tcp('10.2.0.9', '198.51.100.1'), tcp('10.2.39.9', '198.51.100.1'), tcp('10.2.40.9', '1.1.1.1')];
    assert.deepEqual(verdicts(dp, under16), [D, D, P]);
    await rules.change([rule({ id: 14, action: 'allow', src: '10.2.0.0/16', priority: 500 })]);
    await assertSlotsMatch(rules, 'covering /16 added');
    assert.deepEqual(verdicts(dp, under16), [P, P, P]);
    await rules.change([], [14]);
    await assertSlotsMatch(rules, 'covering /16 removed');
    assert.deepEqual(verdicts(dp, under16), [D, D, P]);

    // The best rule of a shared prefix goes: the next one there takes over.
    await rules.change([], [4]);
    await assertSlotsMatch(rules, 'best of a shared prefix removed');
    assert.deepEqual(verdicts(dp, v4), [D, P, D, P, P, D, D]);

    // IPv6, nested: an allow over the /48, a drop inside it, then the allow goes.
    const v6 = [tcp('2001:db8:1::5', '2001:db8:ff::1'), tcp('2001:db8:1:2::5', '2001:db8:ff::1')];
    assert.deepEqual(verdicts(dp, v6), [D, D]);
    await rules.change([
      rule({ id: 11, action: 'allow', src: '2001:db8::/32', priority: 200 }),
      rule({ id: 12, action: 'drop', src: '2001:db8:1:2::/64', priority: 300 }),
    ]);
    await assertSlotsMatch(rules, 'IPv6 added');
    assert.deepEqual(verdicts(dp, v6), [P, D]);
    await rules.change([], [11]);
    await assertSlotsMatch(rules, 'IPv6 allow removed');
    assert.deepEqual(verdicts(dp, v6), [D, D]);
    assert.deepEqual(verdicts(dp, v4), [D, P, D, P, P, D, D], 'IPv4 untouched by IPv6 changes');

    // One change across all three tables: a multi-field allow, the dst drop out, a rule replaced.
    await rules.change(
      [
        rule({ id: 13, action: 'allow', src: '10.1.1.0/24', protocol: 'tcp', dstPorts: '22', priority: 400 }),
        rule({ id: 1, action: 'drop', src: '10.1.0.0/16', priority: 90 }),
      ],
      [6, 1],
    );
    await assertSlotsMatch(rules, 'three tables at once');
    assert.deepEqual(verdicts(dp, [...v4, tcp('10.1.1.9', '198.51.100.1', 22), tcp('10.1.9.9', '198.51.100.1')]), [
      D,
      P,
      D,
      P,
      P,
      P,
      D,
      P,
      D,
    ]);

    // Everything out by deltas: empty tables, nothing matches.
    await rules.change([], [...rules.held.keys()]);
    await assertSlotsMatch(rules, 'all removed');
    assert.equal(dp.config().srcPrefixes[dp.config().ruleGen & 1], 0);
    assert.deepEqual(verdicts(dp, [...v4, ...v6]), [P, P, P, P, P, P, P, P, P]);
  });
});

test('a delta switches every table at once, even under load', async (t) => {
  await withDatapath(t, async ({ dp, bpffs }) => {
    // As the bulk-replace test in rules.test.ts: the hammer's packet 10.0.0.1 → 192.0.2.1 tcp/80
    // matches rule 1 under set A and rule 6 under set B; any mix of tables lets 2, 3, 4 or 5 win.
    const setA = [
      rule({ id: 1, action: 'drop', src: '10.0.0.0/8', priority: 100 }),
      rule({ id: 2, action: 'allow', dst: '192.0.2.0/24', priority: 50 }),
      rule({ id: 3, action: 'drop', protocol: 'tcp', dstPorts: '80', priority: 10 }),
    ];
    const setB = [
      rule({ id: 4, action: 'allow', src: '10.0.0.0/8', priority: 10 }),
      rule({ id: 5, action: 'drop', dst: '192.0.2.0/24', priority: 20 }),
      rule({ id: 6, action: 'allow', protocol: 'tcp', dstPorts: '80', priority: 30 }),
    ];
    const rules = new Rules(dp);
    await rules.load(setA);
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', fileURLToPath(new URL('./helpers/hammer.ts', import.meta.url)), bpffs],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    while (!out.includes('ready')) await new Promise((r) => setTimeout(r, 20));
    const ids = (set: Rule[]): number[] => set.map((r) => r.id);
    try {
      // Back to back, not waiting for the catch-up: each change still starts on identical slots.
      const switches = [];
      for (let i = 0; i < 200; i++) {
        const [from, to] = i % 2 ? [setB, setA] : [setA, setB];
        switches.push(await dp.applyDelta(rules.delta(to, ids(from))));
      }
      await Promise.all(switches.map((s) => s.settled));
    } finally {
      child.stdin.end(); // the hammer runs until its stdin closes
    }
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 0);
    const runs = Number(out.trim().split('\n').pop());
    assert.ok(runs > 1000, `hammer ran ${runs} times`);
    const matched = [1, 2, 3, 4, 5, 6].map((id) => dp.ruleStats(id).packets);
    assert.equal(matched[1]! + matched[2]! + matched[3]! + matched[4]!, 0, `mixed tables seen: ${matched}`);
    assert.ok(matched[0]! > 0 && matched[5]! > 0, `both sets were in force: ${matched}`);
    assert.equal(matched[0]! + matched[5]!, runs, 'every run matched exactly one rule');
    await assertSlotsMatch(rules, 'after 200 switches');
  });
});

test('a handle that adopted pinned maps loads in full before it applies deltas', async (t) => {
  await withDatapath(t, async ({ dp, bpffs }) => {
    const before = [rule({ id: 1, action: 'drop', src: '10.1.1.0/24' })];
    await new Rules(dp).load(before);
    await dp.rulesSettled();
    // A restarted agent: the same pins, a new handle that cannot know what the slots hold.
    const adopted = Datapath.open({ ...TEST_LIMITS, maxPrefixes: 1 << 16, maxRules: 1 << 16, bpffs });
    try {
      assert.ok(adopted.adopted);
      assert.equal(adopted.ruleSlotsInSync, false);
      const rules = new Rules(adopted);
      rules.track(before);
      const delta = rules.delta([rule({ id: 2, action: 'drop', src: '10.1.2.0/24' })], []);
      const gen = adopted.config().ruleGen;
      await assert.rejects(adopted.applyDelta(delta), /loadRules/);
      assert.equal(adopted.config().ruleGen, gen, 'a refused delta does not switch');
      // With the full tables at hand the same call loads them instead.
      const { settled } = await adopted.applyDelta(delta, () => rules.full());
      await settled;
      assert.ok(adopted.ruleSlotsInSync);
      await assertSlotsMatch(rules, 'full load through applyDelta');
      const frames = [tcp('10.1.1.9', '198.51.100.1'), tcp('10.1.2.9', '198.51.100.1'), tcp('10.1.3.9', '1.1.1.1')];
      assert.deepEqual(verdicts(adopted, frames), [D, D, P]);
      // From here on deltas alone.
      await rules.change([rule({ id: 3, action: 'drop', src: '10.1.3.0/24' })], [1]);
      await assertSlotsMatch(rules, 'delta after the full load');
      assert.deepEqual(verdicts(adopted, frames), [P, D, D]);
    } finally {
      adopted.close();
    }
  });
});

test('a delta beyond the table capacity is refused before anything is written', async (t) => {
  if (!requirePrivileges(t, ['root', 'bpf'])) return;
  const env = openTestDatapath({ maxPrefixes: 4, maxRules: 64 });
  try {
    const rules = new Rules(env.dp);
    await rules.load([1, 2, 3].map((i) => rule({ id: i, action: 'drop', src: `10.0.${i}.0/24` })));
    const gen = env.dp.config().ruleGen;
    await assert.rejects(
      env.dp.applyDelta(
        rules.delta(
          [4, 5].map((i) => rule({ id: i, action: 'drop', src: `10.0.${i}.0/24` })),
          [],
        ),
      ),
      /capacity of 4/,
    );
    assert.equal(env.dp.config().ruleGen, gen);
    assert.ok(env.dp.ruleSlotsInSync, 'nothing was written: the slots still match');
  } finally {
    env.destroy();
  }
});
