/**
 * The SQL cookbook (docs/sql-cookbook.md, and the README's "SQL cookbook"
 * section) against the schema: every statement of every ```sql block runs
 * through the store's read-only query path (the one behind POST /query and
 * `flowgate sql`) on an embedded store holding known flows, counters and
 * rule history, and returns rows; for the recipes the docs lead with (top
 * talkers, a host's peers, what was dropped, scans, address ranges, VLANs)
 * the rows are exactly those the data says. The recipes use relative times
 * (now() - INTERVAL …), so the data is stamped minutes before now. chDB binds
 * one data directory per process: one store, opened once, for the whole file.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { encodeFlowRows } from '../../control/store/flow-rows.js';
import { ClickHouseFlowStore } from '../../control/store/flow-store.js';
import type { IfaceCounterRow, QueryLimits, QueryResult } from '../../control/store/types.js';
import { context, drain, flow, v4, v6, type Flow } from './records.js';

const COOKBOOK_FILE = fileURLToPath(new URL('../../docs/sql-cookbook.md', import.meta.url));
const README_FILE = fileURLToPath(new URL('../../README.md', import.meta.url));
const LIMITS: QueryLimits = { maxSeconds: 30, maxRows: 10_000 };

// ---- the recipes ------------------------------------------------------------------------

interface Recipe {
  /** The heading the block sits under. */
  heading: string;
  /** Position of the statement among those under the same heading (0-based). */
  index: number;
  /** Line of the block's opening fence, for messages. */
  line: number;
  sql: string;
}

/** True when a statement is only comments and blank lines. */
function onlyComments(sql: string): boolean {
  return sql.split('\n').every((l) => l.trim() === '' || l.trim().startsWith('--'));
}

/**
 * Every statement of every ```sql block of a markdown text, with the heading
 * it sits under. A block may hold several statements, each ending with ';'
 * at the end of a line (as the README's does).
 */
function sqlRecipes(markdown: string): Recipe[] {
  const out: Recipe[] = [];
  const perHeading = new Map<string, number>();
  const lines = markdown.split('\n');
  let heading = '';
  for (let i = 0; i < lines.length; i++) {
    const h = /^#{1,6}\s+(.*)$/.exec(lines[i]!);
    if (h) {
      heading = h[1]!.trim();
      continue;
    }
    if (!/^```sql\s*$/.test(lines[i]!)) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    assert.ok(i < lines.length, `the sql block at line ${start + 1} is not closed`);
    for (const chunk of body.join('\n').split(/;[ \t]*$/m)) {
      const sql = chunk.trim();
      if (!sql || onlyComments(sql)) continue;
      const index = perHeading.get(heading) ?? 0;
      perHeading.set(heading, index + 1);
      out.push({ heading, index, line: start + 1, sql });
    }
  }
  return out;
}

/** The README's "SQL cookbook" section: from its heading to the next heading of the same or a higher level. */
function readmeCookbook(readme: string): string {
  const lines = readme.split('\n');
  const start = lines.findIndex((l) => /^#{2,3}\s+SQL cookbook\s*$/.test(l));
  assert.ok(start >= 0, 'README.md has no "SQL cookbook" section');
  const level = /^(#+)/.exec(lines[start]!)![1]!.length;
  let end = start + 1;
  while (end < lines.length && !(/^(#+)\s/.exec(lines[end]!) && /^(#+)/.exec(lines[end]!)![1]!.length <= level)) end++;
  return lines.slice(start, end).join('\n');
}

const cookbook = sqlRecipes(readFileSync(COOKBOOK_FILE, 'utf8'));
const readmeRecipes = sqlRecipes(readmeCookbook(readFileSync(README_FILE, 'utf8')));

// ---- the data ---------------------------------------------------------------------------

const dir = mkdtempSync(path.join(tmpdir(), 'flowgate-cookbook-test-'));
const NOW_MS = Date.now();
/** Monotonic 5 s (records.ts's default first_seen is 1 s) is ten minutes ago. */
const OFFSET = BigInt(NOW_MS - 600_000) * 1_000_000n - 5_000_000_000n;
const sec = (s: number): bigint => BigInt(s) * 1_000_000_000n;

const TCP = 6;
const UDP = 17;
const SYN = 0x02;
const RST_ACK = 0x14;
const FULL = 0x1b; // FIN, SYN, PSH, ACK: a whole short connection

/** One flow seen in seconds [at, at + 1] after monotonic 5 s. */
function f(at: number, over: Partial<Flow>): Flow {
  return flow({ firstSeenNs: sec(5 + at), lastSeenNs: sec(6 + at), ...over });
}

// test-host: ifindex 2 = eth0, 3 = eth1. 10.0.0.5 is the host under study.
const testFlows: Flow[] = [
  // A, B: a TLS connection from 10.0.0.5 to 192.0.2.10, both directions on eth0.
  f(0, {
    srcAddr: v4('10.0.0.5'),
    dstAddr: v4('192.0.2.10'),
    srcPort: 40000,
    dstPort: 443,
    direction: 'egress',
    packets: 100,
    bytes: 150_000,
    tcpFlags: FULL,
  }),
  f(0, {
    srcAddr: v4('192.0.2.10'),
    dstAddr: v4('10.0.0.5'),
    srcPort: 443,
    dstPort: 40000,
    direction: 'ingress',
    packets: 80,
    bytes: 40_000,
    tcpFlags: FULL,
  }),
  // C, D: a DNS query and its answer.
  f(1, {
    srcAddr: v4('10.0.0.5'),
    dstAddr: v4('198.51.100.53'),
    srcPort: 53000,
    dstPort: 53,
    protocol: UDP,
    direction: 'egress',
    packets: 2,
    bytes: 150,
  }),
  f(1, {
    srcAddr: v4('198.51.100.53'),
    dstAddr: v4('10.0.0.5'),
    srcPort: 53,
    dstPort: 53000,
    protocol: UDP,
    direction: 'ingress',
    packets: 2,
    bytes: 300,
  }),
  // E: 203.0.113.7 scans six ports of 10.0.0.5 with SYNs; rule 7 drops them all.
  ...[22, 23, 80, 443, 3389, 8080].map((port, i) =>
    f(2 + i, {
      srcAddr: v4('203.0.113.7'),
      dstAddr: v4('10.0.0.5'),
      srcPort: 61000,
      dstPort: port,
      packets: 1,
      bytes: 40,
      droppedPackets: 1,
      droppedBytes: 40,
      ruleId: 7,
      tcpFlags: SYN,
    }),
  ),
  // F: telnet attempts, dropped by rule 9.
  f(3, {
    srcAddr: v4('203.0.113.8'),
    dstAddr: v4('10.0.0.5'),
    srcPort: 61001,
    dstPort: 23,
    packets: 3,
    bytes: 120,
    droppedPackets: 3,
    droppedBytes: 120,
    ruleId: 9,
    tcpFlags: SYN,
  }),
  // G: IPv6 on eth1, VLAN 100.
  f(4, {
    family: 6,
    srcAddr: v6('2001:0db8:0000:0000:0000:0000:0001:0005'),
    dstAddr: v6('2001:0db8:0000:0000:0000:0000:0000:0010'),
    srcPort: 50000,
    dstPort: 443,
    ifindex: 3,
    direction: 'egress',
    vlan: 100,
    packets: 10,
    bytes: 5000,
    tcpFlags: FULL,
  }),
  // H: QinQ traffic on eth1 (outer 100, inner 200), allowed by rule 11.
  f(5, {
    srcAddr: v4('10.0.1.20'),
    dstAddr: v4('10.0.0.5'),
    srcPort: 45000,
    dstPort: 8080,
    ifindex: 3,
    vlan: 100,
    innerVlan: 200,
    packets: 20,
    bytes: 20_000,
    ruleId: 11,
    tcpFlags: FULL,
  }),
  // I: pings (ICMP echo request: type 8 in src_port, code 0 in dst_port).
  f(6, {
    srcAddr: v4('10.0.0.9'),
    dstAddr: v4('10.0.0.5'),
    srcPort: 8,
    dstPort: 0,
    protocol: 1,
    packets: 4,
    bytes: 336,
  }),
  // J: a SYN to a closed port, answered with RST.
  f(7, {
    srcAddr: v4('10.0.0.9'),
    dstAddr: v4('10.0.0.5'),
    srcPort: 50001,
    dstPort: 25,
    packets: 1,
    bytes: 60,
    tcpFlags: SYN,
  }),
  f(7, {
    srcAddr: v4('10.0.0.5'),
    dstAddr: v4('10.0.0.9'),
    srcPort: 25,
    dstPort: 50001,
    direction: 'egress',
    packets: 1,
    bytes: 40,
    tcpFlags: RST_ACK,
  }),
];

// other-host: its own rule 7 (rule ids are per host).
const otherFlows: Flow[] = [
  f(8, {
    srcAddr: v4('10.9.9.9'),
    dstAddr: v4('192.0.2.1'),
    srcPort: 61002,
    dstPort: 22,
    packets: 5,
    bytes: 350,
    droppedPackets: 5,
    droppedBytes: 350,
    ruleId: 7,
    tcpFlags: SYN,
  }),
];

function counters(over: Partial<IfaceCounterRow['counters']> = {}): IfaceCounterRow['counters'] {
  return {
    seen_packets: 1000,
    seen_bytes: 100_000,
    passed_packets: 990,
    dropped_packets: 10,
    dropped_bytes: 400,
    ip_packets: 995,
    non_ip_packets: 2,
    new_flows: 20,
    flow_insert_failed: 0,
    ...over,
  };
}

const rule7 = { id: 7, action: 'drop', src: '203.0.113.0/24', priority: 100, comment: 'scanner' };
const rule9 = { id: 9, action: 'drop', protocol: 'tcp', dstPorts: '23', priority: 200, comment: 'telnet' };
const rule9v2 = { ...rule9, comment: 'no telnet' };
const rule11 = { id: 11, action: 'allow', src: '10.0.1.0/24', priority: 300 };
const rule12 = { id: 12, action: 'drop', dst: '192.0.2.99/32', priority: 100 };
const otherRule7 = { id: 7, action: 'drop', src: '10.9.9.0/24', priority: 100, comment: 'other host rule' };

let store: ClickHouseFlowStore;

before(async () => {
  store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
  await store.insertFlows(encodeFlowRows(drain(testFlows), context(OFFSET)), 'cookbook:test-host');
  await store.insertFlows(
    encodeFlowRows(drain(otherFlows), { ...context(OFFSET), host: 'other-host' }),
    'cookbook:other-host',
  );
  const ts = NOW_MS - 300_000;
  await store.insertIfaceCounters([
    {
      ts,
      host: 'test-host',
      iface: 'eth0',
      direction: 'ingress',
      counters: counters({ dropped_packets: 9, flow_insert_failed: 1 }),
      malformed: { eth_trunc: 2, tcp_doff: 1 },
    },
    { ts, host: 'test-host', iface: 'eth0', direction: 'egress', counters: counters(), malformed: {} },
    {
      ts: ts + 5000,
      host: 'test-host',
      iface: 'eth1',
      direction: 'ingress',
      counters: counters(),
      malformed: { vlan_depth: 3 },
    },
    { ts, host: 'other-host', iface: 'eth0', direction: 'ingress', counters: counters(), malformed: {} },
  ]);
  await store.insertRuleCounters([
    { ts, host: 'test-host', ruleId: 7, packets: 6, bytes: 240 },
    { ts, host: 'test-host', ruleId: 9, packets: 3, bytes: 120 },
    { ts, host: 'test-host', ruleId: 11, packets: 20, bytes: 20_000 },
    { ts, host: 'other-host', ruleId: 7, packets: 5, bytes: 350 },
  ]);
  const t0 = NOW_MS - 3_600_000;
  await store.insertRuleHistory([
    { ts: t0, host: 'test-host', op: 'add', ruleId: 7, before: '', after: JSON.stringify(rule7) },
    { ts: t0, host: 'test-host', op: 'add', ruleId: 9, before: '', after: JSON.stringify(rule9) },
    { ts: t0, host: 'test-host', op: 'add', ruleId: 11, before: '', after: JSON.stringify(rule11) },
    { ts: t0, host: 'test-host', op: 'add', ruleId: 12, before: '', after: JSON.stringify(rule12) },
    { ts: t0 + 60_000, host: 'test-host', op: 'delete', ruleId: 12, before: JSON.stringify(rule12), after: '' },
    {
      ts: t0 + 120_000,
      host: 'test-host',
      op: 'replace',
      ruleId: 9,
      before: JSON.stringify(rule9),
      after: JSON.stringify(rule9v2),
    },
    { ts: t0, host: 'other-host', op: 'add', ruleId: 7, before: '', after: JSON.stringify(otherRule7) },
  ]);
});

after(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

// ---- running ----------------------------------------------------------------------------

async function run(r: Recipe, what: string): Promise<QueryResult> {
  try {
    return await store.query(r.sql, LIMITS);
  } catch (err) {
    throw new Error(`${what} (block at line ${r.line}): ${(err as Error).message}\n--- SQL ---\n${r.sql}`);
  }
}

/** Rows as objects by column name. */
function objects(r: QueryResult): Array<Record<string, unknown>> {
  return r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c.name, row[i]])));
}

function recipe(heading: string, index = 0): Recipe {
  const r = cookbook.find((x) => x.heading === heading && x.index === index);
  assert.ok(r, `docs/sql-cookbook.md has no recipe #${index} under "${heading}"`);
  return r;
}

const results = new Map<Recipe, QueryResult>();
async function rowsOf(heading: string, index = 0): Promise<Array<Record<string, unknown>>> {
  const r = recipe(heading, index);
  let res = results.get(r);
  if (!res) {
    res = await run(r, `${heading} #${index}`);
    results.set(r, res);
  }
  return objects(res);
}

// ---- the tests --------------------------------------------------------------------------

describe('extracting the recipes', () => {
  it('reads every statement of a block, with the heading it sits under', () => {
    const md = [
      '# T',
      '## A',
      '```sql',
      '-- a comment',
      'SELECT 1;',
      '',
      'SELECT 2',
      'FROM x;',
      '```',
      '```sh',
      'echo SELECT 3;',
      '```',
      '### B',
      '```sql',
      'SELECT 4',
      '```',
    ].join('\n');
    assert.deepEqual(
      sqlRecipes(md).map((r) => [r.heading, r.index, r.sql]),
      [
        ['A', 0, '-- a comment\nSELECT 1'],
        ['A', 1, 'SELECT 2\nFROM x'],
        ['B', 0, 'SELECT 4'],
      ],
    );
  });

  it('finds the cookbook and the README section', () => {
    assert.ok(cookbook.length >= 30, `only ${cookbook.length} recipes in docs/sql-cookbook.md`);
    assert.ok(readmeRecipes.length >= 4, `only ${readmeRecipes.length} statements in the README's SQL cookbook`);
    for (const r of readmeRecipes) assert.match(r.sql, /^(SELECT|WITH)\b/);
  });
});

/**
 * Recipes over tables this file does not fill: flowgate.rules is written by
 * agents with --rules-source store through a ClickHouse server, which the
 * embedded store here is not.
 */
const MAY_BE_EMPTY = new Set(["The fleet's rule set"]);

describe('every recipe of docs/sql-cookbook.md runs and returns rows', () => {
  for (const r of cookbook) {
    it(`${r.heading} #${r.index} (line ${r.line})`, async () => {
      const res = await run(r, `${r.heading} #${r.index}`);
      results.set(r, res);
      assert.ok(res.columns.length > 0, 'no columns');
      if (!MAY_BE_EMPTY.has(r.heading)) assert.ok(res.rows.length > 0, `no rows:\n${r.sql}`);
    });
  }
});

describe("every statement of the README's SQL cookbook runs", () => {
  for (const r of readmeRecipes) {
    it(`README: ${r.sql.split('\n')[0]!.slice(0, 70)}`, async () => {
      const res = await run(r, 'README cookbook');
      assert.ok(res.columns.length > 0, 'no columns');
    });
  }
});

describe('the recipes answer what the data says', () => {
  it('top talkers: the ten largest pairs of both hosts, from the hourly rollup', async () => {
    const rows = await rowsOf('Top talkers');
    assert.deepEqual(
      rows.map((r) => [r.src_addr, r.dst_addr, r.bytes, r.packets]),
      [
        ['::ffff:10.0.0.5', '::ffff:192.0.2.10', 150_000, 100],
        ['::ffff:192.0.2.10', '::ffff:10.0.0.5', 40_000, 80],
        ['::ffff:10.0.1.20', '::ffff:10.0.0.5', 20_000, 20],
        ['2001:db8::1:5', '2001:db8::10', 5000, 10],
        ['::ffff:10.0.0.9', '::ffff:10.0.0.5', 336 + 60, 5],
        ['::ffff:10.9.9.9', '::ffff:192.0.2.1', 350, 5],
        ['::ffff:198.51.100.53', '::ffff:10.0.0.5', 300, 2],
        ['::ffff:203.0.113.7', '::ffff:10.0.0.5', 240, 6],
        ['::ffff:10.0.0.5', '::ffff:198.51.100.53', 150, 2],
        ['::ffff:203.0.113.8', '::ffff:10.0.0.5', 120, 3],
      ],
    );
    // The same from the flows themselves (last 15 minutes), at the top.
    const raw = await rowsOf('Top talkers', 1);
    assert.deepEqual(
      raw.slice(0, 2).map((r) => [r.src_addr, r.src_port, r.dst_addr, r.dst_port, r.protocol, r.bytes]),
      [
        ['::ffff:10.0.0.5', 40000, '::ffff:192.0.2.10', 443, TCP, 150_000],
        ['::ffff:192.0.2.10', 443, '::ffff:10.0.0.5', 40000, TCP, 40_000],
      ],
    );
  });

  it("a host's peers: both directions, by peer, largest first (flows and rollup agree)", async () => {
    const expected = [
      ['::ffff:192.0.2.10', 150_000, 40_000],
      ['::ffff:10.0.1.20', 0, 20_000],
      ['::ffff:198.51.100.53', 150, 300],
      ['::ffff:10.0.0.9', 40, 336 + 60],
      ['::ffff:203.0.113.7', 0, 240],
      ['::ffff:203.0.113.8', 0, 120],
    ];
    const rows = await rowsOf("A host's peers");
    assert.deepEqual(
      rows.map((r) => [r.peer, r.bytes_sent, r.bytes_received]),
      expected,
    );
    const protocols = Object.fromEntries(
      rows.map((r) => [r.peer, [...(r.protocols as number[])].sort((a, b) => a - b)]),
    );
    assert.deepEqual(protocols['::ffff:10.0.0.9'], [1, TCP]);
    assert.deepEqual(protocols['::ffff:198.51.100.53'], [UDP]);
    const rollup = await rowsOf("A host's peers", 1);
    assert.deepEqual(
      rollup.map((r) => [r.peer, r.bytes_sent, r.bytes_received]),
      expected,
    );
  });

  it('what was dropped: per host and rule, and with the rule as last added or replaced', async () => {
    const rows = await rowsOf('What was dropped, and by which rule');
    assert.deepEqual(
      rows.map((r) => [r.host, r.rule_id, r.packets, r.bytes, r.sources]),
      [
        ['test-host', 7, 6, 240, 1],
        ['other-host', 7, 5, 350, 1],
        ['test-host', 9, 3, 120, 1],
      ],
    );
    const withRules = await rowsOf('What was dropped, and by which rule', 1);
    assert.deepEqual(
      withRules.map((r) => [r.host, r.rule_id, r.packets, r.bytes, r.action, r.src, r.dst, r.comment]),
      [
        ['test-host', 7, 6, 240, 'drop', '203.0.113.0/24', '', 'scanner'],
        ['other-host', 7, 5, 350, 'drop', '10.9.9.0/24', '', 'other host rule'],
        ['test-host', 9, 3, 120, 'drop', '', '', 'no telnet'],
      ],
    );
    // Rule 7's sources: a rule id is per host, so both hosts' rule 7 are there.
    const sources = await rowsOf('What was dropped, and by which rule', 2);
    assert.equal(sources.length, 7);
    assert.equal(
      sources.reduce((n, r) => n + (r.packets as number), 0),
      6 + 5,
    );
    assert.deepEqual(sources[0], { src_addr: '::ffff:10.9.9.9', dst_port: 22, protocol: TCP, packets: 5, bytes: 350 });
  });

  it('scans: only the source that sent SYN-only flows to many ports', async () => {
    const rows = await rowsOf('TCP SYN-only flows (scans)');
    assert.deepEqual(rows, [{ src_addr: '::ffff:203.0.113.7', targets: 1, ports: 6, packets: 6, dropped: 6 }]);
  });

  it('connections refused: the RST from port 25', async () => {
    const rows = await rowsOf('Connections refused or reset');
    assert.deepEqual(rows, [{ dst_port: 50001, direction: 'egress', flow_rows: 1, sources: 1 }]);
  });

  it('IPv4 ranges: BETWEEN, IPv4CIDRToRange and isIPAddressInRange give the same sources of 10.0.0.0/8', async () => {
    const expected = [
      { src_addr: '::ffff:10.0.0.5', bytes: 150_000 + 150 + 40 },
      { src_addr: '::ffff:10.0.1.20', bytes: 20_000 },
      { src_addr: '::ffff:10.0.0.9', bytes: 336 + 60 },
      { src_addr: '::ffff:10.9.9.9', bytes: 350 },
    ];
    for (const index of [0, 1, 2]) assert.deepEqual(await rowsOf('IPv4 and IPv6 addresses', index), expected);
    assert.deepEqual(await rowsOf('IPv4 and IPv6 addresses', 3), [
      { src_addr: '2001:db8::1:5', dst_addr: '2001:db8::10', bytes: 5000 },
    ]);
    const families = await rowsOf('IPv4 and IPv6 addresses', 4);
    assert.deepEqual(families.slice(0, 4), [
      { family: 'IPv4', source: '10.0.0.5', bytes: 150_190 },
      { family: 'IPv4', source: '192.0.2.10', bytes: 40_000 },
      { family: 'IPv4', source: '10.0.1.20', bytes: 20_000 },
      { family: 'IPv6', source: '2001:db8::1:5', bytes: 5000 },
    ]);
    const nets = await rowsOf('IPv4 and IPv6 addresses', 5);
    assert.deepEqual(nets.slice(0, 4), [
      { source_net: '::ffff:10.0.0.0', bytes: 150_190 + 396, sources: 2 },
      { source_net: '::ffff:192.0.2.0', bytes: 40_000, sources: 1 },
      { source_net: '::ffff:10.0.1.0', bytes: 20_000, sources: 1 },
      { source_net: '2001:db8::', bytes: 5000, sources: 1 },
    ]);
  });

  it('per VLAN: the tagged flows with their outer and inner tags', async () => {
    const rows = await rowsOf('Traffic per VLAN');
    const tagged = rows.filter((r) => r.vlan !== 0);
    assert.deepEqual(tagged, [
      {
        host: 'test-host',
        iface: 'eth1',
        direction: 'ingress',
        vlan: 100,
        inner_vlan: 200,
        bytes: 20_000,
        packets: 20,
      },
      { host: 'test-host', iface: 'eth1', direction: 'egress', vlan: 100, inner_vlan: 0, bytes: 5000, packets: 10 },
    ]);
  });

  it('interfaces: drops and malformed frames by reason from iface_counters', async () => {
    const rows = await rowsOf('Per-interface drops and malformed frames');
    const eth0In = rows.find((r) => r.host === 'test-host' && r.iface === 'eth0' && r.direction === 'ingress');
    assert.deepEqual(eth0In, {
      host: 'test-host',
      iface: 'eth0',
      direction: 'ingress',
      seen: 1000,
      dropped: 9,
      non_ip: 2,
      flow_insert_failed: 1,
      malformed: { eth_trunc: 2, tcp_doff: 1 },
    });
    const reasons = await rowsOf('Per-interface drops and malformed frames', 1);
    assert.deepEqual(
      reasons.map((r) => [r.iface, r.direction, r.reason, r.frames]),
      [
        ['eth1', 'ingress', 'vlan_depth', 3],
        ['eth0', 'ingress', 'eth_trunc', 2],
        ['eth0', 'ingress', 'tcp_doff', 1],
      ],
    );
  });

  it('rule history: newest first, with the rule before and after', async () => {
    const rows = await rowsOf('Rule changes over time');
    assert.deepEqual(rows.map((r) => [r.host, r.op, r.rule_id, r.action, r.comment]).slice(0, 2), [
      ['test-host', 'replace', 9, 'drop', 'no telnet'],
      ['test-host', 'delete', 12, 'drop', ''],
    ]);
    const deleted = rows.find((r) => r.op === 'delete');
    assert.equal(deleted?.dst, '192.0.2.99/32', 'a delete shows the rule it removed');
  });
});
