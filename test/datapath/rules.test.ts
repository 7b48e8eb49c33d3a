/**
 * Rule matching in the kernel, by BPF_PROG_TEST_RUN with crafted frames:
 * overlapping prefixes, priorities, allow over drop, port ranges, IPv4 and
 * IPv6 kept apart, interface scope, cached verdicts expiring on a rule
 * change, per-rule counters, an atomic bulk replace under load, and a
 * one-million-prefix table.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { requirePrivileges } from '../lib/privileges.js';
import { openTestDatapath, withTestDatapath, type TestDatapath } from '../lib/datapath.js';
import { loadRuleSpecs } from '../lib/rules.js';
import { buildFrame, ipPacketLength, tcpSyn as tcp } from '../lib/frames.js';
import { decodeFlowRecords } from '../../control/datapath/layout.js';
import { compileRules, encodeRuleTables } from '../../control/rules/compile.js';
import { parseRule, type Rule } from '../../control/rules/rule.js';

const XDP_DROP = 1;
const XDP_PASS = 2;

function udp(src: string, dst: string, dport: number): Buffer {
  return buildFrame({ ipv4: { src, dst }, udp: { sport: 5000, dport }, payload: 20 });
}

/** Every test here opens its datapath with room for 65,536 prefixes and rules. */
function withDatapath(t: TestContext, fn: (env: TestDatapath) => Promise<void>): Promise<void> {
  return withTestDatapath(t, fn, { maxPrefixes: 1 << 16, maxRules: 1 << 16 });
}

function verdicts(env: TestDatapath, frames: Buffer[]): number[] {
  return frames.map((f) => env.dp.testRun('xdp', f).retval);
}

test('overlapping prefixes: the higher priority wins, whichever is more specific', async (t) => {
  await withDatapath(t, async ({ dp }) => {
    await loadRuleSpecs(dp, [
      { id: 1, action: 'drop', src: '10.0.0.0/8', priority: 100 },
      { id: 2, action: 'allow', src: '10.1.0.0/16', priority: 200 },
      { id: 3, action: 'allow', src: '10.2.0.0/16', priority: 50 },
      { id: 4, action: 'drop', src: '10.1.2.0/24', priority: 300 },
    ]);
    const env = { dp } as TestDatapath;
    assert.deepEqual(
      verdicts(env, [
        tcp('10.9.9.9', '192.0.2.1'), // only /8 → drop
        tcp('10.1.9.9', '192.0.2.1'), // /16 allow (200) beats /8 drop (100)
        tcp('10.2.9.9', '192.0.2.1'), // /16 allow (50) loses to /8 drop (100)
        tcp('10.1.2.3', '192.0.2.1'), // /24 drop (300) beats /16 allow (200)
        tcp('11.0.0.1', '192.0.2.1'), // nothing
      ]),
      [XDP_DROP, XDP_PASS, XDP_DROP, XDP_DROP, XDP_PASS],
    );
    const flows = [...decodeFlowRecords((await dp.drain()).records)];
    const ruleOf = (src: string): number | undefined =>
      flows.find((f) => f.srcAddr.subarray(12).join('.') === src)?.ruleId;
    assert.equal(ruleOf('10.9.9.9'), 1);
    assert.equal(ruleOf('10.1.9.9'), 2);
    assert.equal(ruleOf('10.2.9.9'), 1);
    assert.equal(ruleOf('10.1.2.3'), 4);
    assert.equal(ruleOf('11.0.0.1'), 0);
  });
});

test('at equal priority allow beats drop, across and within tables', async (t) => {
  await withDatapath(t, async (env) => {
    await loadRuleSpecs(env.dp, [
      { id: 1, action: 'drop', src: '10.0.0.0/8' },
      { id: 2, action: 'allow', dst: '192.0.2.0/24' },
      { id: 3, action: 'drop', dst: '198.51.100.0/24', protocol: 'tcp' },
      { id: 4, action: 'allow', dst: '198.51.100.0/24', protocol: 'tcp', dstPorts: '443' },
    ]);
    assert.deepEqual(
      verdicts(env, [
        tcp('10.0.0.1', '192.0.2.1'), // src drop vs dst allow, both 100 → allow
        tcp('10.0.0.1', '203.0.113.1'), // src drop only
        tcp('172.16.0.1', '198.51.100.1', 443), // multi-field: allow :443 beats drop tcp
        tcp('172.16.0.1', '198.51.100.1', 22), // multi-field drop
      ]),
      [XDP_PASS, XDP_DROP, XDP_PASS, XDP_DROP],
    );
  });
});

test('port ranges and protocol are matched inclusively and exactly', async (t) => {
  await withDatapath(t, async (env) => {
    await loadRuleSpecs(env.dp, [
      { id: 1, action: 'drop', protocol: 'tcp', dstPorts: '1000-2000' },
      { id: 2, action: 'drop', protocol: 'udp', srcPorts: '5000', dst: '192.0.2.0/24' },
    ]);
    assert.deepEqual(
      verdicts(env, [
        tcp('10.0.0.1', '203.0.113.1', 999),
        tcp('10.0.0.1', '203.0.113.1', 1000),
        tcp('10.0.0.1', '203.0.113.1', 1500),
        tcp('10.0.0.1', '203.0.113.1', 2000),
        tcp('10.0.0.1', '203.0.113.1', 2001),
        udp('10.0.0.1', '203.0.113.1', 1500), // protocol differs
        udp('10.0.0.1', '192.0.2.9', 53), // udp sport 5000 to 192.0.2.0/24
        udp('10.0.0.1', '192.0.3.9', 53), // wrong destination
      ]),
      [XDP_PASS, XDP_DROP, XDP_DROP, XDP_DROP, XDP_PASS, XDP_PASS, XDP_DROP, XDP_PASS],
    );
  });
});

test('IPv4 and IPv6 rules never cross families', async (t) => {
  await withDatapath(t, async (env) => {
    await loadRuleSpecs(env.dp, [
      { id: 1, action: 'drop', src: '::/0' },
      { id: 2, action: 'drop', dst: '0.0.0.0/0', protocol: 'tcp', dstPorts: '22' },
      { id: 3, action: 'drop', dst: '2001:db8:1::/48' },
      { id: 4, action: 'allow', src: '2001:db8:ffff::/48', priority: 500 },
    ]);
    assert.deepEqual(
      verdicts(env, [
        tcp('10.0.0.1', '192.0.2.1'), // ::/0 must not match IPv4-mapped
        tcp('10.0.0.1', '192.0.2.1', 22), // IPv4 any-destination rule
        tcp('2001:db8:5::1', '2001:db8:2::1', 22), // ::/0 drop; 0.0.0.0/0 rule is IPv4 only
        tcp('2001:db8:ffff::1', '2001:db8:1::1'), // allow 500 beats both drops
      ]),
      [XDP_PASS, XDP_DROP, XDP_DROP, XDP_PASS],
    );
  });
});

test('an interface-scoped rule only applies on that interface', async (t) => {
  await withDatapath(t, async (env) => {
    // Test runs arrive on the loopback (ifindex 1).
    await loadRuleSpecs(env.dp, [{ id: 1, action: 'drop', src: '10.0.0.0/8', iface: 'lo' }]);
    assert.deepEqual(verdicts(env, [tcp('10.0.0.1', '192.0.2.1')]), [XDP_DROP]);
  });
  await withDatapath(t, async (env) => {
    // A rule for another interface: 'lo' exists in every namespace, so use a
    // name resolved to a different index by giving the rule an explicit one.
    const rules: Rule[] = [parseRule({ action: 'drop', src: '10.0.0.0/8', iface: 'other0' }, 1)];
    await env.dp.loadRules(encodeRuleTables(compileRules(rules, () => 9999)));
    assert.deepEqual(verdicts(env, [tcp('10.0.0.1', '192.0.2.1')]), [XDP_PASS]);
  });
});

test('a rule change re-judges established flows; counters agree with the flows', async (t) => {
  await withDatapath(t, async ({ dp }) => {
    const frame = tcp('10.0.0.1', '192.0.2.1');
    const ipLen = ipPacketLength(frame)!;
    assert.equal(dp.testRun('xdp', frame, { repeat: 5 }).retval, XDP_PASS);
    await loadRuleSpecs(dp, [{ id: 7, action: 'drop', src: '10.0.0.1/32' }]);
    assert.equal(dp.testRun('xdp', frame, { repeat: 3 }).retval, XDP_DROP);
    await loadRuleSpecs(dp, []);
    assert.equal(dp.testRun('xdp', frame, { repeat: 2 }).retval, XDP_PASS);

    const [flow, ...rest] = decodeFlowRecords((await dp.drain()).records);
    assert.equal(rest.length, 0);
    assert.equal(flow!.packets, 10);
    assert.equal(flow!.bytes, 10 * ipLen);
    assert.equal(flow!.droppedPackets, 3);
    assert.equal(flow!.droppedBytes, 3 * ipLen);
    assert.equal(flow!.ruleId, 7, 'the rule that last matched stays on the flow');
    assert.deepEqual(dp.ruleStats(7), { packets: 3, bytes: 3 * ipLen });
    const [lo] = (await dp.ifaceStats()).filter((s) => s.ifindex === 1 && s.direction === 'ingress');
    assert.equal(lo!.counters.dropped_packets, 3);
    assert.equal(lo!.counters.passed_packets, 7);
  });
});

test('a bulk replace switches every table at once, even under load', async (t) => {
  await withDatapath(t, async ({ dp, bpffs }) => {
    // Packet: 10.0.0.1 → 192.0.2.1 tcp/80. Under set A rule 1 wins, under B
    // rule 6. Any mix of A's and B's tables would let 2, 3, 4 or 5 win.
    const setA = [
      { id: 1, action: 'drop', src: '10.0.0.0/8', priority: 100 },
      { id: 2, action: 'allow', dst: '192.0.2.0/24', priority: 50 },
      { id: 3, action: 'drop', protocol: 'tcp', dstPorts: '80', priority: 10 },
    ];
    const setB = [
      { id: 4, action: 'allow', src: '10.0.0.0/8', priority: 10 },
      { id: 5, action: 'drop', dst: '192.0.2.0/24', priority: 20 },
      { id: 6, action: 'allow', protocol: 'tcp', dstPorts: '80', priority: 30 },
    ];
    await loadRuleSpecs(dp, setA);
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', fileURLToPath(new URL('./helpers/hammer.ts', import.meta.url)), bpffs],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    while (!out.includes('ready')) await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < 200; i++) await loadRuleSpecs(dp, i % 2 ? setA : setB);
    child.stdin.end();
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 0);
    const runs = Number(out.trim().split('\n').pop());
    assert.ok(runs > 1000, `hammer ran ${runs} times`);
    const matched = [1, 2, 3, 4, 5, 6].map((id) => dp.ruleStats(id).packets);
    assert.equal(matched[1]! + matched[2]! + matched[3]! + matched[4]!, 0, `mixed tables seen: ${matched}`);
    assert.ok(matched[0]! > 0 && matched[5]! > 0, `both sets were in force: ${matched}`);
    assert.equal(matched[0]! + matched[5]!, runs, 'every run matched exactly one rule');
  });
});

test('one million prefixes: every probe answers like the rule list says', async (t) => {
  if (!requirePrivileges(t, ['root', 'bpf'])) return;
  const env = openTestDatapath({ maxPrefixes: 1_100_000, maxRules: 1_100_000 });
  try {
    const rules: Rule[] = [];
    // 1,000,000 distinct /24s: 1.0.0.0/24 … with every 10th one an allow at higher priority.
    for (let i = 0; i < 1_000_000; i++) {
      const net = (1 << 16) + i; // /24 index above 1.0.0.0
      const text = `${net >>> 16}.${(net >>> 8) & 255}.${net & 255}.0/24`;
      rules.push(
        parseRule({ action: i % 10 === 0 ? 'allow' : 'drop', src: text, priority: i % 10 === 0 ? 200 : 100 }, i + 1),
      );
    }
    rules.push(parseRule({ action: 'drop', src: '16.0.0.0/8', priority: 150 }, 1_000_001));
    const started = Date.now();
    await env.dp.loadRules(encodeRuleTables(compileRules(rules, () => 0)));
    t.diagnostic(`compiled and loaded 1,000,001 prefixes in ${Date.now() - started} ms`);
    assert.equal(env.dp.config().srcPrefixes[env.dp.config().ruleGen & 1], 1_000_001);
    const probe = (i: number): number => {
      const net = (1 << 16) + i;
      return env.dp.testRun('xdp', tcp(`${net >>> 16}.${(net >>> 8) & 255}.${net & 255}.7`, '192.0.2.1')).retval;
    };
    // allow (200) > /8 drop (150) > /24 drop (100): every /24 is decided by its own rule or the /8.
    for (const i of [0, 1, 9, 10, 11, 499_999, 500_000, 999_990, 999_999]) {
      assert.equal(probe(i), i % 10 === 0 ? XDP_PASS : XDP_DROP, `prefix #${i}`);
    }
    assert.equal(
      env.dp.testRun('xdp', tcp('16.200.0.1', '192.0.2.1')).retval,
      XDP_DROP,
      'outside the /24s, inside the /8',
    );
    assert.equal(env.dp.testRun('xdp', tcp('100.64.0.1', '192.0.2.1')).retval, XDP_PASS, 'outside everything');
  } finally {
    env.destroy();
  }
});
