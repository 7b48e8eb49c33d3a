/**
 * The flowgate CLI as users run it (node bin/flowgate.js …) against a small
 * fake of the agent's REST API: exact table/CSV/JSON output of `sql`,
 * `status`, `top --once`, one clear stderr line (naming the flag) for every
 * bad flag, and one line when the agent is unreachable.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { AgentStatus } from '../../control/agent/types.js';
import type { QueryResult } from '../../control/store/types.js';
import { flowgateVersion } from '../../control/api/version.js';
import { pool } from '../lib/pool.js';

const BIN = fileURLToPath(new URL('../../bin/flowgate.js', import.meta.url));
const TOKEN = 'cli-test-token';

const SQL_RESULT: QueryResult = {
  columns: [
    { name: 'iface', type: 'LowCardinality(String)' },
    { name: 'packets', type: 'UInt64' },
    { name: 'note', type: 'Nullable(String)' },
  ],
  rows: [
    ['eth0', '12', 'a,b'],
    ['veth-long', '3456', 'say "hi"'],
    ['lo', '0', null],
  ],
};

const TOP_RESULT: QueryResult = {
  columns: [
    { name: 'src_addr', type: 'IPv6' },
    { name: 'dst_addr', type: 'IPv6' },
    { name: 'protocol', type: 'UInt8' },
    { name: 'src_port', type: 'UInt16' },
    { name: 'dst_port', type: 'UInt16' },
    { name: 'packets', type: 'UInt64' },
    { name: 'bytes', type: 'UInt64' },
    { name: 'dropped', type: 'UInt64' },
  ],
  rows: [
    ['::ffff:10.0.0.1', '::ffff:10.0.0.2', 6, 40000, 443, '1000', '1500000', '0'],
    ['2001:db8::1', '2001:db8::2', 17, 5353, 53, '20', '2400', '20'],
    ['::ffff:192.0.2.9', '::ffff:10.0.0.1', 1, 8, 0, '3', '252', '0'],
  ],
};

const STATUS: AgentStatus = {
  version: '0.1.0',
  host: 'node1',
  startedAt: '2025-01-02T03:04:05.000Z',
  adopted: true,
  drainIntervalMs: 10_000,
  lastDrainAt: '2025-01-02T03:10:05.000Z',
  flowsDrained: 123456,
  flowsEvicted: 7,
  interfaces: [
    {
      name: 'eth0',
      ifindex: 2,
      xdpMode: 'native',
      egress: true,
      counters: {
        rxPackets: 1000,
        rxBytes: 1_572_864,
        txPackets: 900,
        txBytes: 512,
        droppedPackets: 12,
        nonIpPackets: 3,
        malformed: { ipv4_trunc: 2, tcp_trunc: 1, eth_trunc: 0 },
      },
    },
    {
      name: 'veth-test1',
      ifindex: 14,
      xdpMode: 'generic',
      egress: false,
      counters: {
        rxPackets: 0,
        rxBytes: 0,
        txPackets: 0,
        txBytes: 0,
        droppedPackets: 0,
        nonIpPackets: 0,
        malformed: {},
      },
    },
  ],
  store: {
    kind: 'embedded',
    location: '/var/lib/flowgate',
    healthy: false,
    lastError: 'disk full',
    spooledBatches: 3,
    spooledBytes: 2048,
  },
};

interface Seen {
  method: string;
  url: string;
  auth?: string;
  body?: { sql?: string };
}

let server: Server;
let api: string;
const seen: Seen[] = [];

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

before(async () => {
  server = createServer((req, res) => {
    void (async () => {
      const text = await readBody(req);
      const entry: Seen = { method: req.method ?? '', url: req.url ?? '', auth: req.headers.authorization };
      if (text) entry.body = JSON.parse(text) as { sql?: string };
      seen.push(entry);
      const send = (status: number, body: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        return send(401, { error: 'unauthorized', message: 'a valid bearer token is required' });
      }
      if (req.method === 'GET' && req.url === '/api/v1/status') return send(200, STATUS);
      if (req.method === 'POST' && req.url === '/api/v1/query') {
        const sql = entry.body?.sql ?? '';
        if (sql.startsWith('SELECT FRM')) {
          return send(400, { error: 'bad_query', message: 'Code: 62. Syntax error:\nfailed at position 8' });
        }
        if (sql.includes('FROM flowgate.flows') && sql.includes('sum(bytes) AS bytes')) return send(200, TOP_RESULT);
        if (sql === 'SELECT nothing') return send(200, { columns: SQL_RESULT.columns, rows: [] });
        return send(200, SQL_RESULT);
      }
      send(404, { error: 'not_found', message: `no route ${req.method} ${req.url}` });
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function flowgate(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        env: { ...process.env, FLOWGATE_FROM_SOURCE: '1', FLOWGATE_API_TOKEN: TOKEN, NO_COLOR: '1', ...env },
        timeout: 60_000,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function assertOk(r: Run): void {
  assert.equal(r.stderr, '', 'nothing on stderr');
  assert.equal(r.code, 0, `exit code (stderr: ${r.stderr})`);
}

/** Exactly one stderr line starting "flowgate: ", nothing on stdout, non-zero exit. */
function assertOneLineError(r: Run, pattern: RegExp, label: string): void {
  assert.notEqual(r.code, 0, `${label}: exit code`);
  assert.equal(r.stdout, '', `${label}: nothing on stdout`);
  const lines = r.stderr.split('\n');
  assert.equal(lines.length, 2, `${label}: one line on stderr, got ${JSON.stringify(r.stderr)}`);
  assert.equal(lines[1], '', `${label}: the line ends with a newline`);
  assert.match(lines[0] ?? '', /^flowgate: /, label);
  assert.match(lines[0] ?? '', pattern, label);
}

test('sql prints an aligned table by default (numbers right-aligned, NULL shown)', async () => {
  const r = await flowgate(['sql', '--api', api, 'SELECT iface, packets, note FROM t']);
  assertOk(r);
  assert.equal(
    r.stdout,
    [
      'iface      packets  note',
      '---------  -------  --------',
      'eth0            12  a,b',
      'veth-long     3456  say "hi"',
      'lo               0  NULL',
      '(3 rows)',
      '',
    ].join('\n'),
  );
  const q = seen.at(-1);
  assert.deepEqual(q, {
    method: 'POST',
    url: '/api/v1/query',
    auth: `Bearer ${TOKEN}`,
    body: { sql: 'SELECT iface, packets, note FROM t' },
  });
});

test('sql --format csv quotes what needs quoting', async () => {
  const r = await flowgate(['sql', '--format', 'csv', '--api', api, 'SELECT 1']);
  assertOk(r);
  assert.equal(r.stdout, 'iface,packets,note\neth0,12,"a,b"\nveth-long,3456,"say ""hi"""\nlo,0,\n');
});

test('sql --format json prints one object per row', async () => {
  const r = await flowgate(['sql', '--api', api, '--format', 'json', 'SELECT 1']);
  assertOk(r);
  assert.equal(
    r.stdout,
    `${JSON.stringify(
      [
        { iface: 'eth0', packets: '12', note: 'a,b' },
        { iface: 'veth-long', packets: '3456', note: 'say "hi"' },
        { iface: 'lo', packets: '0', note: null },
      ],
      null,
      2,
    )}\n`,
  );
});

test('sql with no rows, and an API error as one line', async () => {
  const empty = await flowgate(['sql', '--api', api, 'SELECT nothing']);
  assertOk(empty);
  assert.equal(empty.stdout, 'iface  packets  note\n-----  -------  ----\n(0 rows)\n');

  const bad = await flowgate(['sql', '--api', api, 'SELECT FRM x']);
  assert.equal(bad.code, 1);
  assertOneLineError(bad, /^flowgate: bad_query: Code: 62\. Syntax error: failed at position 8$/, 'bad query');

  const unauthorized = await flowgate(['status', '--api', api], { FLOWGATE_API_TOKEN: 'wrong' });
  assertOneLineError(unauthorized, /^flowgate: unauthorized: .*FLOWGATE_API_TOKEN/, 'wrong token');
  const noToken = await flowgate(['status', '--api', api], { FLOWGATE_API_TOKEN: undefined });
  assertOneLineError(noToken, /^flowgate: unauthorized: .*set FLOWGATE_API_TOKEN/, 'no token');
  assert.equal(seen.at(-1)?.auth, undefined, 'no Authorization header without a token');
});

test('status prints the agent, drains, store and an interface table', async () => {
  const r = await flowgate(['status', '--api', api]);
  assertOk(r);
  assert.equal(
    r.stdout,
    [
      'flowgate 0.1.0 on node1, started 2025-01-02T03:04:05.000Z (adopted pinned programs and maps)',
      'drains: every 10s, last 2025-01-02T03:10:05.000Z; flows drained 123456, evicted 7',
      'store:  embedded /var/lib/flowgate, UNHEALTHY; spooled 3 batches, 2.0 KiB',
      '        last error: disk full',
      '',
      'IFACE       IFINDEX  XDP      EGRESS  RX PKTS  RX BYTES  TX PKTS  TX BYTES  DROPPED  NON-IP  MALFORMED',
      '----------  -------  -------  ------  -------  --------  -------  --------  -------  ------  ---------',
      'eth0              2  native   yes        1000   1.5 MiB      900     512 B       12       3          3',
      'veth-test1       14  generic  no            0       0 B        0       0 B        0       0          0',
      'malformed on eth0: ipv4_trunc 2, tcp_trunc 1',
      '',
    ].join('\n'),
  );
  assert.deepEqual(seen.at(-1), { method: 'GET', url: '/api/v1/status', auth: `Bearer ${TOKEN}` });

  const json = await flowgate(['status', '--api', api, '--format', 'json']);
  assertOk(json);
  assert.deepEqual(JSON.parse(json.stdout), STATUS);
});

test('top --once prints one frame of the top talkers', async () => {
  const r = await flowgate(['top', '--once', '--api', api, '--window', '10s', '--limit', '5', '--iface', 'eth0']);
  assertOk(r);
  assert.equal(
    r.stdout,
    [
      'flowgate top: flows with the most bytes over the last 10s on eth0',
      '',
      'SRC                 DST               PROTO     PACKETS    BYTES        RATE  DROPPED',
      '------------------  ----------------  --------  -------  -------  ----------  -------',
      '10.0.0.1:40000      10.0.0.2:443      tcp          1000  1.4 MiB  1.2 Mbit/s        0',
      '[2001:db8::1]:5353  [2001:db8::2]:53  udp            20  2.3 KiB  1.9 kbit/s       20',
      '192.0.2.9           10.0.0.1          icmp 8/0        3    252 B   202 bit/s        0',
      '',
    ].join('\n'),
  );
  const sql = seen.at(-1)?.body?.sql ?? '';
  assert.match(sql, /FROM flowgate\.flows/);
  assert.match(sql, /toIntervalMillisecond\(10000\)/);
  assert.match(sql, /iface = 'eth0'/);
  assert.match(sql, /ORDER BY bytes DESC/);
  assert.match(sql, /LIMIT 5$/);
});

test('each bad flag or value exits non-zero with one line naming the flag', async () => {
  const passwordFile = (url: string, file: string): string[] => [
    'run',
    '--iface',
    'fgnone0',
    '--clickhouse-url',
    url,
    '--clickhouse-password-file',
    file,
  ];
  const cases: Array<[string[], RegExp]> = [
    [['sql', '--format', 'xml', 'SELECT 1'], /^flowgate: --format must be one of table, json, csv, got "xml"$/],
    [['sql', '--api', 'not a url', 'SELECT 1'], /--api must be a URL/],
    [['sql', '--api', 'ftp://host:21', 'SELECT 1'], /--api must be an http:\/\/ or https:\/\/ URL/],
    [['sql', '--formt', 'csv', 'SELECT 1'], /unknown option '--formt'.*--format/],
    [['sql'], /missing required argument 'query'/],
    [['sql', 'SELECT 1', 'extra'], /too many arguments/],
    [['sql', '--format'], /--format/],
    [['status', '--format', 'csv'], /^flowgate: --format must be one of table, json, got "csv"$/],
    [['status', '--api'], /--api/],
    [['top', '--window', '5'], /^flowgate: --window must be a duration/],
    [['top', '--interval', 'soon'], /^flowgate: --interval must be a duration/],
    [['top', '--limit', '0'], /^flowgate: --limit must be from 1 to 10000, got 0$/],
    [['top', '--limit', 'ten'], /^flowgate: --limit must be a whole number/],
    [['top', '--iface', 'eth/0'], /^flowgate: --iface "eth\/0" is not an interface name$/],
    [['top', '--bogus'], /unknown option '--bogus'/],
    [['nosuchcommand'], /unknown command 'nosuchcommand'/],
    // Refused before the agent starts (no such interface either, should that ever change).
    [
      ['run', '--iface', 'fgnone0', '--clickhouse-cluster', 'c1'],
      /^flowgate: --clickhouse-cluster needs --clickhouse-url \(the embedded store is a single node\)$/,
    ],
    [
      ['run', '--iface', 'fgnone0', '--clickhouse-url', 'http://127.0.0.1:1', '--clickhouse-cluster', "c1' --"],
      /^flowgate: --clickhouse-cluster must be a cluster name \(letters, digits, '_', '-', '\.'\), got "c1' --"$/,
    ],
    [['run', '--iface', 'fgnone0', '--clickhouse-cluster'], /--clickhouse-cluster/],
    [
      ['run', '--iface', 'fgnone0', '--rules-source', 'store'],
      /^flowgate: --rules-source store needs --clickhouse-url: the agents share the rule set through one ClickHouse server$/,
    ],
    [
      ['run', '--iface', 'fgnone0', '--rules-source', 'fleet'],
      /^flowgate: --rules-source must be local or store, got "fleet"$/,
    ],
    [
      ['run', '--iface', 'fgnone0', '--rules-sync-interval', '10'],
      /^flowgate: --rules-sync-interval must be a duration/,
    ],
    [
      ['run', '--iface', 'fgnone0', '--clickhouse-password-file', '/etc/hostname'],
      /^flowgate: --clickhouse-password-file needs --clickhouse-url \(the embedded store has no password\)$/,
    ],
    [
      passwordFile('http://u:pw@127.0.0.1:1', '/etc/hostname'),
      /^flowgate: --clickhouse-password-file --clickhouse-url holds a password already: give it in one place$/,
    ],
    [
      passwordFile('http://u@127.0.0.1:1', '/no/such/file'),
      /^flowgate: --clickhouse-password-file cannot be read: ENOENT/,
    ],
    [passwordFile('http://u@127.0.0.1:1', '/dev/null'), /^flowgate: --clickhouse-password-file \/dev\/null is empty$/],
  ];
  const runs = await pool(
    cases.map(
      ([args]) =>
        () =>
          flowgate([...args]),
    ),
  );
  runs.forEach((r, i) => {
    const [args, pattern] = cases[i]!;
    assertOneLineError(r, pattern, args.join(' '));
    assert.equal(r.code, 2, `${args.join(' ')}: usage errors exit 2`);
  });
});

test('an unreachable agent is one line naming the URL and the reason', async () => {
  // A port that was just free: connecting is refused.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const runs = await pool([
    () => flowgate(['sql', '--api', url, 'SELECT 1']),
    () => flowgate(['status', '--api', url]),
    () => flowgate(['top', '--once', '--api', url]),
    () => flowgate(['top', '--api', url]),
  ]);
  for (const r of runs) {
    assert.equal(r.code, 1);
    assertOneLineError(r, new RegExp(`^flowgate: cannot reach the agent at ${url}: .*ECONNREFUSED`), 'unreachable');
  }
});

test('--version and --help work, also through the build when there is one', async () => {
  const fromSource = await flowgate(['--version']);
  assertOk(fromSource);
  assert.equal(fromSource.stdout, `${flowgateVersion()}\n`);
  const asShipped = await flowgate(['--version'], { FLOWGATE_FROM_SOURCE: undefined });
  assertOk(asShipped);
  assert.equal(asShipped.stdout, `${flowgateVersion()}\n`);
  const help = await flowgate(['--help']);
  assertOk(help);
  for (const cmd of ['run', 'sql', 'top', 'status']) assert.match(help.stdout, new RegExp(`^  ${cmd} `, 'm'));
});
