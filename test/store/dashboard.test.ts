/**
 * The Grafana dashboard (deploy/grafana/dashboards/flowgate.json) against the
 * schema: every panel query and every variable query, expanded the way the
 * ClickHouse datasource plugin expands them (test/lib/grafana-macros.ts), runs
 * on an embedded store holding flows, counters and rule history, and returns
 * what was put there. chDB binds one data directory per process: one store,
 * opened once, for the whole file.
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
import {
  ALL,
  BACKEND_MACROS,
  applyConditionalAll,
  expandQuery,
  interpolateMacros,
  interpolateVariables,
  type ExpandContext,
  type GrafanaVariable,
} from '../lib/grafana-macros.js';
import { context, drain, flow, sampleV4Flow, v4 } from './records.js';

const DASHBOARD_FILE = fileURLToPath(new URL('../../deploy/grafana/dashboards/flowgate.json', import.meta.url));
const DATASOURCE_FILE = fileURLToPath(
  new URL('../../deploy/grafana/provisioning/datasources/clickhouse.yaml', import.meta.url),
);
const DASHBOARDS_PROVIDER_FILE = fileURLToPath(
  new URL('../../deploy/grafana/provisioning/dashboards/flowgate.yaml', import.meta.url),
);
const PLUGIN = 'grafana-clickhouse-datasource';
const LIMITS: QueryLimits = { maxSeconds: 30, maxRows: 10_000 };

interface Target {
  refId: string;
  datasource?: { type?: string; uid?: string };
  editorType?: string;
  queryType?: string;
  format?: number;
  rawSql?: string;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  interval?: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
}
interface Variable {
  type: string;
  name: string;
  query: string | { rawSql?: string };
  datasource?: { type?: string; uid?: string };
  multi?: boolean;
  includeAll?: boolean;
  allValue?: string | null;
  current?: { value: string | string[] };
}
interface Dashboard {
  uid: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

const dashboard = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard;
const panels = dashboard.panels;
const variables = dashboard.templating.list;
const queryVariables = variables.filter((v) => v.type === 'query');
const panel = (title: string): Panel => {
  const p = panels.find((x) => x.title === title);
  assert.ok(p, `no panel titled ${title}`);
  return p;
};

// ---- the data ---------------------------------------------------------------------------

const dir = mkdtempSync(path.join(tmpdir(), 'flowgate-dashboard-test-'));
const NOW_S = Math.floor(Date.now() / 1000);
/** Monotonic 5 s is one hour ago, at a whole second. */
const OFFSET = BigInt(NOW_S - 3600) * 1_000_000_000n - 5_000_000_000n;
const HOUR_AGO_MS = (NOW_S - 3600) * 1000;
/** The dashboard's time range in the tests: the last three hours. */
const RANGE = { from: new Date((NOW_S - 3 * 3600) * 1000), to: new Date(NOW_S * 1000) };

const testHost = context(OFFSET); // host 'test-host', ifindex 2 = eth0, 3 = eth1
const otherHost = { ...context(OFFSET), host: 'other-host' };
const testFlows = [
  flow(sampleV4Flow()), // 10.1.2.3 -> 192.0.2.200:443 tcp, eth0 ingress, 12345 bytes, rule 42 dropped 2
  flow({
    srcAddr: v4('10.1.2.4'),
    dstAddr: v4('198.51.100.7'),
    srcPort: 40001,
    dstPort: 53,
    protocol: 17,
    ifindex: 3,
    direction: 'egress',
    packets: 2,
    bytes: 180,
    firstSeenNs: 65_000_000_000n,
    lastSeenNs: 66_000_000_000n,
  }),
  flow({
    srcAddr: v4('10.1.2.3'),
    dstAddr: v4('192.0.2.200'),
    srcPort: 8,
    dstPort: 0,
    protocol: 1,
    packets: 3,
    bytes: 252,
    firstSeenNs: 6_000_000_000n,
    lastSeenNs: 7_000_000_000n,
  }),
];
const otherFlows = [flow({ srcAddr: v4('10.9.9.9'), dstAddr: v4('192.0.2.1'), dstPort: 22, bytes: 5000, packets: 7 })];
const BYTES_ALL = 12345 + 180 + 252 + 5000;
const BYTES_TEST_ETH0_INGRESS = 12345 + 252;

function counters(over: Partial<IfaceCounterRow['counters']> = {}): IfaceCounterRow['counters'] {
  return {
    seen_packets: 100,
    seen_bytes: 10_000,
    passed_packets: 95,
    dropped_packets: 5,
    dropped_bytes: 500,
    ip_packets: 99,
    non_ip_packets: 1,
    new_flows: 12,
    flow_insert_failed: 0,
    ...over,
  };
}

const rule42 = {
  id: 42,
  action: 'drop',
  src: '10.1.2.3/32',
  protocol: 'tcp',
  dstPorts: '443',
  comment: 'block scanner',
};
const rule43 = { id: 43, action: 'allow', dst: '198.51.100.0/24', protocol: 17, priority: 10 };
const rule7 = { id: 7, action: 'drop', src: '10.9.9.0/24', comment: 'other host rule' };

let store: ClickHouseFlowStore;

before(async () => {
  store = await ClickHouseFlowStore.open({ target: { kind: 'embedded', dir }, retentionDays: 30 });
  await store.insertFlows(encodeFlowRows(drain(testFlows), testHost), 'dashboard:test-host');
  await store.insertFlows(encodeFlowRows(drain(otherFlows), otherHost), 'dashboard:other-host');
  await store.insertIfaceCounters([
    {
      ts: HOUR_AGO_MS,
      host: 'test-host',
      iface: 'eth0',
      direction: 'ingress',
      counters: counters({ flow_insert_failed: 2 }),
      malformed: { eth_trunc: 3, ipv4_hdr: 1 },
    },
    { ts: HOUR_AGO_MS, host: 'test-host', iface: 'eth1', direction: 'egress', counters: counters(), malformed: {} },
    {
      ts: HOUR_AGO_MS + 1_800_000,
      host: 'other-host',
      iface: 'eth0',
      direction: 'ingress',
      counters: counters(),
      malformed: { tcp_doff: 4 },
    },
  ]);
  await store.insertRuleCounters([
    { ts: HOUR_AGO_MS, host: 'test-host', ruleId: 42, packets: 30, bytes: 1800 },
    { ts: HOUR_AGO_MS + 60_000, host: 'test-host', ruleId: 42, packets: 10, bytes: 600 },
    { ts: HOUR_AGO_MS, host: 'test-host', ruleId: 43, packets: 50, bytes: 5000 },
    { ts: HOUR_AGO_MS, host: 'test-host', ruleId: 44, packets: 1, bytes: 60 },
    { ts: HOUR_AGO_MS, host: 'other-host', ruleId: 7, packets: 6, bytes: 360 },
  ]);
  const defined = HOUR_AGO_MS - 3_600_000;
  await store.insertRuleHistory([
    { ts: defined, host: 'test-host', op: 'add', ruleId: 42, before: '', after: JSON.stringify(rule42) },
    { ts: defined, host: 'test-host', op: 'add', ruleId: 43, before: '', after: JSON.stringify(rule43) },
    { ts: defined, host: 'other-host', op: 'add', ruleId: 7, before: '', after: JSON.stringify(rule7) },
  ]);
});

after(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

// ---- expanding and running --------------------------------------------------------------

/** Grafana's duration strings as panels use them for their minimum interval. */
function durationSeconds(s: string | undefined): number {
  if (!s) return 0;
  const m = /^(\d+)(s|m|h|d)$/.exec(s);
  assert.ok(m, `unexpected interval ${s}`);
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's' | 'm' | 'h' | 'd'];
}

/**
 * The interval Grafana gives a query: the range over the panel's data points,
 * rounded (10 s for three hours on a panel ~1000 px wide), and at least the
 * panel's minimum interval.
 */
function intervalFor(p?: Panel): number {
  return Math.max(10, durationSeconds(p?.interval));
}

function sqlOf(t: Target | Variable): string {
  const sql = 'refId' in t ? t.rawSql : typeof t.query === 'string' ? t.query : t.query.rawSql;
  assert.ok(sql && sql.trim(), 'a query with no SQL');
  return sql;
}

/** Expand with the backend macros in two orders (Go's map order is random): both must agree. */
function expand(sql: string, ctx: ExpandContext): string {
  const names = Object.keys(BACKEND_MACROS);
  const a = expandQuery(sql, ctx, names);
  const b = expandQuery(sql, ctx, [...names].reverse());
  assert.equal(a, b, 'the expansion depends on the order of the backend macros');
  return a;
}

async function run(sql: string, ctx: ExpandContext, what: string): Promise<QueryResult> {
  const expanded = expand(sql, ctx);
  try {
    return await store.query(expanded, LIMITS);
  } catch (err) {
    throw new Error(`${what}: ${(err as Error).message}\n--- expanded SQL ---\n${expanded}`);
  }
}

/** Rows as objects by column name. */
function objects(r: QueryResult): Array<Record<string, unknown>> {
  return r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c.name, row[i]])));
}

/** The variables as the dashboard would have them, options from the variable queries. */
type State = 'all' | 'one';
const options: Record<string, string[]> = {};

function variablesFor(state: State): Record<string, GrafanaVariable> {
  const out: Record<string, GrafanaVariable> = {};
  for (const v of variables) {
    if (v.type === 'datasource') continue;
    const opts = v.type === 'custom' ? String(v.query).split(',') : (options[v.name] ?? []);
    const pick = { host: ['test-host'], iface: ['eth0'], direction: ['ingress'] }[v.name];
    assert.ok(pick, `no test value for variable ${v.name}`);
    out[v.name] = {
      current: state === 'all' ? ALL : pick,
      options: opts,
      multi: v.multi === true,
      allValue: v.allValue ?? undefined,
    };
  }
  return out;
}

function ctxFor(state: State, p?: Panel, range = RANGE): ExpandContext {
  return { ...range, intervalSeconds: intervalFor(p), variables: variablesFor(state) };
}

const results: Record<State, Map<string, QueryResult>> = { all: new Map(), one: new Map() };
const result = (state: State, title: string): Array<Record<string, unknown>> => {
  const r = results[state].get(title);
  assert.ok(r, `${title} did not run in state ${state}`);
  return objects(r);
};

/** What Grafana needs of a long time series frame: a time column first, ascending, in buckets of the interval. */
function checkTimeSeries(p: Panel, r: QueryResult, ctx: ExpandContext): void {
  assert.match(r.columns[0]!.type, /^DateTime/, `${p.title}: the first column is the time`);
  const times = r.rows.map((row) => Date.parse(`${String(row[0]).replace(' ', 'T')}Z`));
  assert.deepEqual(
    times,
    [...times].sort((a, b) => a - b),
    `${p.title}: ascending time`,
  );
  for (const ms of times) {
    assert.ok(ms >= ctx.from.getTime() - ctx.intervalSeconds * 1000 && ms <= ctx.to.getTime(), `${p.title}: in range`);
    assert.equal((ms / 1000) % ctx.intervalSeconds, 0, `${p.title}: buckets of the interval`);
  }
  assert.ok(
    r.columns.slice(1).some((c) => /Float|Int/.test(c.type)),
    `${p.title}: a numeric value column`,
  );
}

// ---- the tests ------------------------------------------------------------------------

describe('the macro expander', () => {
  const ctx: ExpandContext = {
    from: new Date(1_700_000_000_500),
    to: new Date(1_700_003_600_000),
    intervalSeconds: 60,
    variables: {
      host: { current: ['a', "b'c"], options: ['a', "b'c", 'd'], multi: true },
      dir: { current: ALL, options: ['ingress', 'egress'], multi: false },
      one: { current: ['x'], options: ['x'], multi: false },
    },
  };

  it('expands the backend macros as pkg/macros/macros.go writes them', () => {
    assert.equal(
      interpolateMacros('WHERE $__timeFilter(t) AND d >= ($__fromTime) AND d <= ($__toTime)', ctx),
      'WHERE t >= toDateTime(1700000000) AND t <= toDateTime(1700003600) AND d >= (toDateTime(1700000000)) AND d <= (toDateTime(1700003600))',
    );
    assert.equal(
      interpolateMacros('SELECT $__timeInterval(ts) AS time, sum(x) / ($__interval_s)', ctx),
      'SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) AS time, sum(x) / (60)',
    );
    assert.equal(
      interpolateMacros('$__timeFilter_ms(t)', ctx),
      't >= fromUnixTimestamp64Milli(1700000000500) AND t <= fromUnixTimestamp64Milli(1700003600000)',
    );
  });

  it('like sqlutil, a macro without arguments not closed by ")" swallows the next parenthesis', () => {
    // Why the dashboard writes ($__interval_s) and toStartOfHour($__fromTime).
    assert.equal(interpolateMacros('x / $__interval_s AS r FROM t WHERE a IN (1)', ctx), 'x / 60');
  });

  it('$__conditionalAll gives 1=1 for All and the condition otherwise; variables as the plugin formats them', () => {
    const sql =
      '$__conditionalAll(host IN (${host:singlequote}), $host) AND $__conditionalAll(d IN (${dir:singlequote}), $dir)';
    assert.equal(applyConditionalAll(sql, ctx.variables), 'host IN (${host:singlequote}) AND 1=1');
    assert.equal(
      interpolateVariables(applyConditionalAll(sql, ctx.variables), ctx.variables),
      "host IN ('a','b\\'c') AND 1=1",
    );
    assert.equal(
      interpolateVariables('$host|${dir}|$one|${one:sqlstring}|$__interval', ctx.variables),
      "'a','b'c'|'ingress','egress'|x|'x'|$__interval",
    );
    assert.throws(() => expandQuery('SELECT $nope', ctx), /unexpanded \$nope/);
  });
});

describe('the dashboard', () => {
  it('every panel has the ClickHouse datasource, SQL targets and a unique id; the grid has no overlaps', () => {
    assert.ok(panels.length >= 10);
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, `duplicate panel ids: ${ids}`);
    for (const p of panels) {
      assert.deepEqual(p.datasource, { type: PLUGIN, uid: '${datasource}' }, p.title);
      assert.ok(p.targets && p.targets.length > 0, `${p.title}: no targets`);
      assert.ok(['timeseries', 'table'].includes(p.type), `${p.title}: ${p.type}`);
      const refIds = p.targets.map((t) => t.refId);
      assert.equal(new Set(refIds).size, refIds.length, `${p.title}: duplicate refIds`);
      for (const t of p.targets) {
        assert.deepEqual(t.datasource, p.datasource, `${p.title}: target datasource`);
        assert.equal(t.editorType, 'sql', p.title);
        // sqlutil's FormatQueryOption: 0 time series, 1 table.
        assert.equal(t.format, p.type === 'timeseries' ? 0 : 1, `${p.title}: format`);
        assert.equal(t.queryType, p.type === 'timeseries' ? 'timeseries' : 'table', `${p.title}: queryType`);
        assert.ok(t.rawSql?.includes('flowgate.'), `${p.title}: tables by their full name`);
      }
    }
    for (const [i, a] of panels.entries()) {
      assert.ok(a.gridPos.x >= 0 && a.gridPos.x + a.gridPos.w <= 24, `${a.title}: outside the grid`);
      for (const b of panels.slice(i + 1)) {
        const apart =
          a.gridPos.x + a.gridPos.w <= b.gridPos.x ||
          b.gridPos.x + b.gridPos.w <= a.gridPos.x ||
          a.gridPos.y + a.gridPos.h <= b.gridPos.y ||
          b.gridPos.y + b.gridPos.h <= a.gridPos.y;
        assert.ok(apart, `${a.title} overlaps ${b.title}`);
      }
    }
  });

  it('has the panels the issue lists', () => {
    for (const title of [
      'Traffic by interface',
      'Traffic by protocol',
      'Top talkers',
      'Top destination ports',
      'Drops by rule',
      'Flows per second',
      'Datapath health',
      'Agents',
    ]) {
      panel(title);
    }
  });

  it('uses the provisioned datasource: the variable defaults to its uid', () => {
    const ds = variables.find((v) => v.type === 'datasource');
    assert.ok(ds);
    assert.equal(ds.name, 'datasource');
    assert.equal(ds.query, PLUGIN);
    assert.equal(ds.current?.value, 'flowgate-clickhouse');
    const yaml = readFileSync(DATASOURCE_FILE, 'utf8');
    assert.match(yaml, /^\s+uid: flowgate-clickhouse$/m);
    assert.match(yaml, /^\s+type: grafana-clickhouse-datasource$/m);
    assert.match(yaml, /^\s+port: 8123$/m);
    assert.match(yaml, /^\s+protocol: http$/m);
    assert.match(yaml, /^\s+defaultDatabase: flowgate$/m);
    assert.match(yaml, /^\s+username: \$\{\w+\}$/m);
    assert.match(yaml, /^\s+password: \$\{\w+\}$/m);
    const provider = readFileSync(DASHBOARDS_PROVIDER_FILE, 'utf8');
    assert.match(provider, /^\s+type: file$/m);
    assert.match(provider, /^\s+path: \S+$/m);
  });

  it('has host and iface variables from ClickHouse queries', () => {
    assert.deepEqual(
      queryVariables.map((v) => v.name),
      ['host', 'iface'],
    );
    for (const v of queryVariables) {
      assert.deepEqual(v.datasource, { type: PLUGIN, uid: '${datasource}' }, v.name);
      assert.equal(v.includeAll, true, v.name);
    }
  });
});

describe('the dashboard queries on a populated store', () => {
  it('variable queries run and list what is stored', async () => {
    // In order: iface's query uses $host.
    for (const v of queryVariables) {
      const r = await run(sqlOf(v), ctxFor('all'), `variable ${v.name}`);
      assert.equal(r.columns.length, 1, `variable ${v.name}: one column`);
      options[v.name] = r.rows.map((row) => String(row[0]));
    }
    assert.deepEqual(options.host, ['other-host', 'test-host']);
    assert.deepEqual(options.iface, ['eth0', 'eth1']);
    const ifaceVar = queryVariables.find((v) => v.name === 'iface')!;
    const ofTestHost = await run(sqlOf(ifaceVar), ctxFor('one'), 'variable iface, one host');
    assert.deepEqual(ofTestHost.rows, [['eth0'], ['eth1']]);
    const otherOnly = { ...ctxFor('one'), variables: { ...variablesFor('one') } };
    otherOnly.variables.host = { ...otherOnly.variables.host!, current: ['other-host'] };
    assert.deepEqual((await run(sqlOf(ifaceVar), otherOnly, 'variable iface, other host')).rows, [['eth0']]);
  });

  for (const state of ['all', 'one'] as const) {
    it(`every panel query runs and returns rows (${state === 'all' ? 'All' : 'one host, eth0, ingress'})`, async () => {
      const failures: string[] = [];
      for (const p of panels) {
        for (const t of p.targets ?? []) {
          const ctx = ctxFor(state, p);
          try {
            const r = await run(sqlOf(t), ctx, `${p.title} (${state})`);
            assert.ok(r.rows.length > 0, `${p.title} (${state}): no rows`);
            if (p.type === 'timeseries') checkTimeSeries(p, r, ctx);
            results[state].set(p.title, r);
          } catch (err) {
            failures.push((err as Error).message);
          }
        }
      }
      assert.deepEqual(failures, []);
    });
  }

  it('traffic adds up to the bytes stored, per interface and protocol', () => {
    const interval = intervalFor(panel('Traffic by interface'));
    const bytes = (rows: Array<Record<string, unknown>>): number =>
      Math.round(rows.reduce((s, r) => s + (Number(r.bits_per_second) * interval) / 8, 0));
    const all = result('all', 'Traffic by interface');
    assert.equal(bytes(all), BYTES_ALL);
    assert.deepEqual([...new Set(all.map((r) => r.series))].sort(), ['eth0 ingress', 'eth1 egress']);
    const one = result('one', 'Traffic by interface');
    assert.equal(bytes(one), BYTES_TEST_ETH0_INGRESS);
    assert.deepEqual([...new Set(one.map((r) => r.series))], ['eth0 ingress']);
    const protocols = new Set(result('all', 'Traffic by protocol').map((r) => r.series));
    assert.deepEqual([...protocols].sort(), ['icmp ingress', 'tcp ingress', 'udp egress']);
    assert.deepEqual(
      new Set(result('one', 'Traffic by protocol').map((r) => r.series)),
      new Set(['icmp ingress', 'tcp ingress']),
    );
  });

  it('flows per second add up to the flow rows stored', () => {
    const interval = intervalFor(panel('Flows per second'));
    const n = (state: State): number =>
      Math.round(result(state, 'Flows per second').reduce((s, r) => s + Number(r.flows_per_second) * interval, 0));
    assert.equal(n('all'), testFlows.length + otherFlows.length);
    assert.equal(n('one'), 2);
  });

  it('top talkers lead with the biggest pair and follow the host filter', () => {
    const all = result('all', 'Top talkers');
    assert.deepEqual(all[0], {
      source: '10.1.2.3',
      destination: '192.0.2.200',
      bytes: 12345 + 252,
      packets: 13,
      flows: 2,
      dropped_bytes: 120,
    });
    assert.deepEqual(all.map((r) => r.source).sort(), ['10.1.2.3', '10.1.2.4', '10.9.9.9']);
    assert.deepEqual(
      result('one', 'Top talkers').map((r) => r.source),
      ['10.1.2.3'],
    );
  });

  it('top ports are TCP, UDP and SCTP destination ports', () => {
    const ports = (state: State): string[] => result(state, 'Top destination ports').map((r) => `${r.proto}/${r.port}`);
    assert.deepEqual(ports('all').sort(), ['tcp/22', 'tcp/443', 'udp/53']);
    assert.deepEqual(ports('one'), ['tcp/443']);
  });

  it('drops by rule: drop rules and rules without history, named from rule_history; not allow rules', () => {
    const interval = intervalFor(panel('Drops by rule'));
    const byRule = (state: State): Map<string, number> => {
      const m = new Map<string, number>();
      for (const r of result(state, 'Drops by rule')) {
        m.set(String(r.rule), (m.get(String(r.rule)) ?? 0) + Math.round(Number(r.packets_per_second) * interval));
      }
      return m;
    };
    assert.deepEqual(
      byRule('all'),
      new Map([
        ['#42 drop block scanner', 40],
        ['#44 no history', 1],
        ['#7 drop other host rule', 6],
      ]),
    );
    assert.deepEqual([...byRule('one').keys()].sort(), ['#42 drop block scanner', '#44 no history']);
    const rules = result('one', 'Rules: matches in the range');
    assert.deepEqual(
      rules.map((r) => [r.rule, r.action, r.protocol, r.packets]),
      [
        [42, 'drop', 'tcp', 40],
        [44, 'no history', '', 1],
        [43, 'allow', '17', 50],
      ],
    );
    assert.equal(rules[0]!.dst_ports, '443');
    assert.equal(rules[0]!.last_op, 'add');
    assert.deepEqual([rules[1]!.last_op, rules[1]!.last_change], [null, null]);
    const changes = result('all', 'Rule changes');
    assert.deepEqual(changes.map((r) => `${r.host}/${r.rule}/${r.op}`).sort(), [
      'other-host/7/add',
      'test-host/42/add',
      'test-host/43/add',
    ]);
    assert.deepEqual(JSON.parse(String(changes.find((r) => r.rule === 42)!.definition)), rule42);
  });

  it('agent health: per-host counters, malformed frames by reason, last reports', () => {
    const interval = intervalFor(panel('Datapath health'));
    const health = result('all', 'Datapath health');
    const sum = (host: string, col: string): number =>
      Math.round(health.filter((r) => r.host === host).reduce((s, r) => s + Number(r[col]) * interval, 0));
    assert.equal(sum('test-host', 'new_flows'), 24);
    assert.equal(sum('test-host', 'flow_insert_failed'), 2);
    assert.equal(sum('test-host', 'malformed'), 4);
    assert.equal(sum('other-host', 'malformed'), 4);
    assert.deepEqual([...new Set(result('one', 'Datapath health').map((r) => r.host))], ['test-host']);
    assert.deepEqual([...new Set(result('all', 'Malformed frames by reason').map((r) => r.reason))].sort(), [
      'eth_trunc',
      'ipv4_hdr',
      'tcp_doff',
    ]);
    const agents = result('all', 'Agents');
    assert.deepEqual(
      agents.map((r) => [r.host, r.interfaces, r.flow_insert_failed, r.malformed]),
      [
        ['other-host', 1, 0, 4],
        ['test-host', 2, 2, 4],
      ],
    );
    const since = Number(agents[1]!.seconds_since);
    assert.ok(since >= 3590 && since < 3600 + 600, `seconds since the last report: ${since}`);
    assert.deepEqual(
      result('one', 'Agents').map((r) => [r.host, r.interfaces]),
      [['test-host', 1]],
    );
  });

  it('outside the stored range every query runs and returns nothing', async () => {
    const empty = { from: new Date((NOW_S - 10 * 86400) * 1000), to: new Date((NOW_S - 9 * 86400) * 1000) };
    for (const v of queryVariables) {
      assert.deepEqual((await run(sqlOf(v), ctxFor('all', undefined, empty), v.name)).rows, [], v.name);
    }
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        const r = await run(sqlOf(t), ctxFor('all', p, empty), `${p.title} (empty range)`);
        assert.deepEqual(r.rows, [], p.title);
      }
    }
  });
});
