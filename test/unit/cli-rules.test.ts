/**
 * `flowgate rules list|add|delete|import` as users run them (node
 * bin/flowgate.js …) against the real API (buildApi on port 0) over an
 * in-memory rule set: exact output, one line naming the flag for every bad
 * value, API errors as one line, and import as one atomic PUT.
 */
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { buildApi, listenApi } from '../../control/api/server.js';
import { buildProgram } from '../../control/cli/commands.js';
import { reportError } from '../../control/cli/index.js';
import { mergeImport, renderRulePage, specFromFlags } from '../../control/cli/rules.js';
import { Metrics } from '../../control/metrics.js';
import { FakeRules, FakeRulesAgent } from '../lib/fake-rules.js';
import { pool } from '../lib/pool.js';

const BIN = fileURLToPath(new URL('../../bin/flowgate.js', import.meta.url));
const TOKEN = 'cli-rules-token';
const NOW = '2025-01-02T03:04:05.000Z';

let app: FastifyInstance;
let api: string;
let dir: string;
const fake = new FakeRules();

before(async () => {
  app = await buildApi({
    agent: new FakeRulesAgent(fake),
    metrics: new Metrics({ defaultMetrics: false }),
    token: TOKEN,
    rateLimit: false,
  });
  api = await listenApi(app, '127.0.0.1:0', TOKEN);
  dir = await mkdtemp(path.join(tmpdir(), 'flowgate-cli-rules-'));
});

after(async () => {
  await app.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  fake.rules.clear();
  fake.stats.clear();
  fake.calls.length = 0;
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function flowgate(args: string[], env: Record<string, string | undefined> = {}, input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
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
    child.stdin?.end(input ?? '');
  });
}

/** Parse and run `args` in this process, as main() does; only for commands that fail before writing. */
async function inProcess(args: string[]): Promise<Run> {
  let stderr = '';
  try {
    await buildProgram().parseAsync(['node', 'flowgate', ...args]);
    return { code: 0, stdout: '', stderr };
  } catch (err) {
    const code = reportError(err, (s) => {
      stderr += s;
    });
    return { code, stdout: '', stderr };
  }
}

function assertOk(r: Run): void {
  assert.equal(r.stderr, '', 'nothing on stderr');
  assert.equal(r.code, 0, `exit code (stderr: ${r.stderr})`);
}

/** Exactly one stderr line starting "flowgate: ", non-zero exit. */
function assertOneLineError(r: Run, pattern: RegExp, label: string, stdout = ''): void {
  assert.notEqual(r.code, 0, `${label}: exit code`);
  assert.equal(r.stdout, stdout, `${label}: stdout`);
  const lines = r.stderr.split('\n');
  assert.equal(lines.length, 2, `${label}: one line on stderr, got ${JSON.stringify(r.stderr)}`);
  assert.equal(lines[1], '', `${label}: the line ends with a newline`);
  assert.match(lines[0] ?? '', /^flowgate: /, label);
  assert.match(lines[0] ?? '', pattern, label);
}

async function seed(): Promise<void> {
  await fake.replace([
    { action: 'drop', src: '198.51.100.0/24', protocol: 'tcp', dstPorts: '443', priority: 200, comment: 'scanner' },
    { action: 'allow', src: '2001:db8::/32', iface: 'eth0', expiresAt: '2099-01-02T04:04:05Z' },
    {
      action: 'drop',
      dst: '203.0.113.0/24',
      protocol: 'udp',
      srcPorts: '1000-2000',
      dstPorts: 53,
      comment: 'tab\there',
    },
  ]);
  fake.calls.length = 0;
}

test('rules add prints the created rule and its warnings', async () => {
  const r = await flowgate([
    'rules',
    'add',
    '--api',
    api,
    '--action',
    'drop',
    '--src',
    '198.51.100.7/24',
    '--protocol',
    'TCP',
    '--dst-ports',
    '443',
    '--priority',
    '200',
    '--iface',
    'eth0',
    '--ttl',
    '10m',
    '--comment',
    'scanner',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    [
      'added rule 1',
      'ID  ACTION  SRC              DST  PROTO  PORTS    PRIORITY  IFACE  EXPIRES               COMMENT',
      '--  ------  ---------------  ---  -----  -------  --------  -----  --------------------  -------',
      ' 1  drop    198.51.100.0/24  -    tcp    dst 443       200  eth0   2025-01-02T03:14:05Z  scanner',
      '',
    ].join('\n'),
  );
  assert.equal(r.stderr, 'flowgate: warning: src: 198.51.100.7/24 has host bits set; stored as 198.51.100.0/24\n');
  assert.deepEqual(fake.calls.at(0), {
    op: 'add',
    arg: {
      action: 'drop',
      src: '198.51.100.7/24',
      protocol: 'tcp',
      dstPorts: '443',
      priority: 200,
      iface: 'eth0',
      ttlSeconds: 600,
      comment: 'scanner',
    },
  });

  const json = await flowgate([
    'rules',
    'add',
    '--api',
    api,
    '--action',
    'allow',
    '--dst',
    '2001:db8::/32',
    '--format',
    'json',
  ]);
  assertOk(json);
  assert.deepEqual(JSON.parse(json.stdout), {
    rule: { id: 2, action: 'allow', dst: '2001:db8::/32', priority: 100, createdAt: NOW, updatedAt: NOW },
    warnings: [],
  });
});

test('rules list prints an aligned table, filters and pages', async () => {
  await seed();
  const r = await flowgate(['rules', 'list', '--api', api]);
  assertOk(r);
  assert.equal(
    r.stdout,
    [
      'ID  ACTION  SRC              DST             PROTO  PORTS                 PRIORITY  IFACE  EXPIRES               COMMENT',
      '--  ------  ---------------  --------------  -----  --------------------  --------  -----  --------------------  ---------',
      ' 1  drop    198.51.100.0/24  -               tcp    dst 443                    200  -      -                     scanner',
      ' 2  allow   2001:db8::/32    -               -      -                          100  eth0   2099-01-02T04:04:05Z  -',
      ' 3  drop    -                203.0.113.0/24  udp    src 1000-2000 dst 53       100  -      -                     tab\\there',
      '(3 rules)',
      '',
    ].join('\n'),
  );
  assert.deepEqual(fake.calls.at(-1), { op: 'list', arg: { limit: 100, offset: 0 } });

  const filtered = await flowgate([
    'rules',
    'list',
    '--api',
    api,
    '--action',
    'drop',
    '--prefix',
    '198.51.0.0/16',
    '--comment',
    'SCAN',
    '--limit',
    '5',
    '--offset',
    '0',
  ]);
  assertOk(filtered);
  assert.match(filtered.stdout, /^ 1 {2}drop .*\n\(1 rule\)\n$/m);
  assert.deepEqual(fake.calls.at(-1), {
    op: 'list',
    arg: { action: 'drop', prefix: '198.51.0.0/16', comment: 'SCAN', limit: 5, offset: 0 },
  });

  const paged = await flowgate(['rules', 'list', '--api', api, '--limit', '1', '--offset', '1']);
  assertOk(paged);
  assert.match(paged.stdout, /\n 2 {2}allow .*\n\(rules 2-2 of 3; next page: --offset 2\)\n$/);

  const json = await flowgate(['rules', 'list', '--api', api, '--format', 'json', '--limit', '2']);
  assertOk(json);
  const page = JSON.parse(json.stdout) as { rules: Array<{ id: number }>; total: number; limit: number };
  assert.deepEqual(
    page.rules.map((x) => x.id),
    [1, 2],
  );
  assert.equal(page.total, 3);

  fake.rules.clear();
  const empty = await flowgate(['rules', 'list', '--api', api]);
  assertOk(empty);
  assert.match(empty.stdout, /\(no rules\)\n$/);
});

test('rules delete removes each id; one that is gone is one error line at the end', async () => {
  await seed();
  const r = await flowgate(['rules', 'delete', '--api', api, '1', '3']);
  assertOk(r);
  assert.equal(
    r.stdout,
    'deleted rule 1 drop src 198.51.100.0/24 tcp ports dst 443 priority 200\n' +
      'deleted rule 3 drop dst 203.0.113.0/24 udp ports src 1000-2000 dst 53 priority 100\n',
  );
  assert.deepEqual([...fake.rules.keys()], [2]);

  const partly = await flowgate(['rules', 'delete', '--api', api, '9', '2']);
  assertOneLineError(
    partly,
    /^flowgate: not_found: rule 9 does not exist \(1 of 2 deleted\)$/,
    'delete a missing id',
    'deleted rule 2 allow src 2001:db8::/32 priority 100 on eth0 until 2099-01-02T04:04:05Z\n',
  );
  assert.equal(partly.code, 1);
  assert.equal(fake.rules.size, 0);
});

test('rules import adds a blocklist to the current rules in one PUT; again adds nothing; --replace replaces', async () => {
  await seed();
  const file = path.join(dir, 'drop.txt');
  await writeFile(
    file,
    '; Spamhaus DROP List 2024/05/01\n1.10.16.0/20 ; SBL256894\n1.19.0.0/16 ; SBL434604\n2.56.192.1/22 ; SBL459831\n',
  );
  const r = await flowgate(['rules', 'import', '--api', api, file, '--comment', 'spamhaus']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'imported 3 rules; the rule set now has 6 rules\n');
  assert.equal(r.stderr, 'flowgate: warning: line 4: 2.56.192.1/22 has host bits set; imported as 2.56.192.0/22\n');
  // One read of the current set, then one atomic replace.
  assert.deepEqual(
    fake.calls.map((c) => c.op),
    ['list', 'replace'],
  );
  const rules = [...fake.rules.values()].sort((a, b) => a.id - b.id);
  assert.deepEqual(
    rules.map((x) => [x.id, x.action, x.src ?? x.dst, x.comment]),
    [
      [1, 'drop', '198.51.100.0/24', 'scanner'],
      [2, 'allow', '2001:db8::/32', undefined],
      [3, 'drop', '203.0.113.0/24', 'tab\there'],
      [4, 'drop', '1.10.16.0/20', 'spamhaus: SBL256894'],
      [5, 'drop', '1.19.0.0/16', 'spamhaus: SBL434604'],
      [6, 'drop', '2.56.192.0/22', 'spamhaus: SBL459831'],
    ],
  );
  assert.equal(rules[1]?.expiresAt, '2099-01-02T04:04:05.000Z', 'kept rules keep their expiry');

  const again = await flowgate(['rules', 'import', '--api', api, file]);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stdout, 'imported 0 rules (3 rules already present); the rule set now has 6 rules\n');

  const replaced = await flowgate(
    ['rules', 'import', '--api', api, '--replace', '--dst', '--action', 'allow', '-'],
    {},
    '192.0.2.0/24\n',
  );
  assertOk(replaced);
  assert.equal(replaced.stdout, 'replaced the rule set with 1 rule\n');
  assert.deepEqual(
    [...fake.rules.values()].map((x) => [x.action, x.src, x.dst]),
    [['allow', undefined, '192.0.2.0/24']],
  );
});

test('rules import: a bad line or an unreadable file is one line, and nothing changes', async () => {
  await seed();
  const bad = path.join(dir, 'bad.txt');
  await writeFile(bad, '1.10.16.0/20 ; SBL256894\n\n1.19.0.0/33 ; SBL434604\n');
  const empty = path.join(dir, 'empty.txt');
  await writeFile(empty, '; nothing here\n');
  const runs = await pool([
    () => flowgate(['rules', 'import', '--api', api, bad]),
    () => flowgate(['rules', 'import', '--api', api, path.join(dir, 'missing.txt')]),
    () => flowgate(['rules', 'import', '--api', api, '--replace', empty]),
  ]);
  assertOneLineError(runs[0]!, /^flowgate: import: .*bad\.txt: line 3: .*1\.19\.0\.0\/33/, 'bad line');
  assert.equal(runs[0]!.code, 1);
  assertOneLineError(runs[1]!, /^flowgate: import: cannot read .*missing\.txt: ENOENT/, 'missing file');
  assert.equal(runs[1]!.code, 2);
  assertOneLineError(runs[2]!, /^flowgate: import: .*empty\.txt holds no prefixes$/, 'empty list');
  assert.deepEqual(fake.calls, [], 'the agent was not asked anything');
  assert.equal(fake.rules.size, 3);
});

test('API errors are one line: a taken id, a wrong token', async () => {
  await seed();
  const runs = await pool([
    () => flowgate(['rules', 'add', '--api', api, '--action', 'drop', '--id', '1']),
    () => flowgate(['rules', 'list', '--api', api], { FLOWGATE_API_TOKEN: 'wrong' }),
  ]);
  assertOneLineError(runs[0]!, /^flowgate: conflict: body\/id: rule 1 already exists$/, 'taken id');
  assertOneLineError(runs[1]!, /^flowgate: unauthorized: .*FLOWGATE_API_TOKEN/, 'wrong token');
});

test('each bad flag or value exits 2 with one line naming the flag', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['rules', 'add', '--src', '10.0.0.0/8'], /required option '--action <action>' not specified/],
    [['rules', 'add', '--action', 'reject'], /^flowgate: --action must be one of drop, allow, got "reject"$/],
    [['rules', 'add', '--action', 'drop', '--src', '10.0.0.0/33'], /^flowgate: --src "10\.0\.0\.0\/33" /],
    [
      ['rules', 'add', '--action', 'drop', '--src', '10.0.0.0/8', '--dst', '2001:db8::/32'],
      /^flowgate: --dst is IPv6 but src is IPv4$/,
    ],
    [
      ['rules', 'add', '--action', 'drop', '--dst-ports', '80'],
      /^flowgate: --dst-ports needs protocol tcp, udp or sctp$/,
    ],
    [
      ['rules', 'add', '--action', 'drop', '--protocol', 'tcp', '--src-ports', '9-1'],
      /^flowgate: --src-ports "9-1" is an empty range/,
    ],
    [['rules', 'add', '--action', 'drop', '--protocol', 'tcpp'], /^flowgate: --protocol "tcpp" is not one of/],
    [['rules', 'add', '--action', 'drop', '--priority', '1000001'], /^flowgate: --priority must be from 0 to 1000000/],
    [['rules', 'add', '--action', 'drop', '--ttl', '5'], /^flowgate: --ttl must be a duration/],
    [['rules', 'add', '--action', 'drop', '--ttl', '1500ms'], /^flowgate: --ttl must be whole seconds, got "1500ms"$/],
    [
      ['rules', 'add', '--action', 'drop', '--ttl', '1m', '--expires', '2099-01-01T00:00:00Z'],
      /^flowgate: --ttl and --expires exclude each other/,
    ],
    [
      ['rules', 'add', '--action', 'drop', '--expires', 'someday'],
      /^flowgate: --expires must be an ISO-8601 date-time/,
    ],
    [['rules', 'add', '--action', 'drop', '--expires', '2001-01-01T00:00:00Z'], /^flowgate: --expires is in the past/],
    [['rules', 'add', '--action', 'drop', '--iface', 'eth/0'], /^flowgate: --iface "eth\/0" is not an interface name$/],
    [
      ['rules', 'add', '--action', 'drop', '--comment', 'x'.repeat(1025)],
      /^flowgate: --comment must be a string of at most 1024/,
    ],
    [['rules', 'add', '--action', 'drop', '--id', '0'], /^flowgate: --id must be from 1 to 4294967295, got 0$/],
    [['rules', 'list', '--limit', '0'], /^flowgate: --limit must be from 1 to 10000, got 0$/],
    [['rules', 'list', '--limit', '10001'], /^flowgate: --limit must be from 1 to 10000, got 10001$/],
    [['rules', 'list', '--prefix', 'banana'], /^flowgate: --prefix .*banana/],
    [['rules', 'list', '--action', 'block'], /^flowgate: --action must be one of drop, allow, got "block"$/],
    [['rules', 'list', '--format', 'csv'], /^flowgate: --format must be one of table, json, got "csv"$/],
    [['rules', 'delete'], /missing required argument 'id'/],
    [['rules', 'delete', '1', 'abc'], /^flowgate: rule id must be a whole number, got "abc"$/],
    [['rules', 'import'], /missing required argument 'file'/],
    [['rules', 'import', 'x.txt', '--action', 'deny'], /^flowgate: --action must be one of drop, allow, got "deny"$/],
    [['rules', 'nosuch'], /unknown command 'nosuch'/],
  ];
  // In process (the same parse and error path as the binary, without a node start per case)…
  for (const [args, pattern] of cases) {
    const r = await inProcess(args);
    assertOneLineError(r, pattern, args.join(' '));
    assert.equal(r.code, 2, `${args.join(' ')}: usage errors exit 2`);
  }
  // …and one through the binary.
  const r = await flowgate(['rules', 'add', '--action', 'drop', '--src', '10.0.0.0/33']);
  assertOneLineError(r, /^flowgate: --src "10\.0\.0\.0\/33" /, 'binary');
  assert.equal(r.code, 2);
  assert.deepEqual(fake.calls, [], 'no bad command reached the agent');
});

test('rule output and import merging, in process', () => {
  assert.equal(
    renderRulePage({ rules: [], total: 5, offset: 10, limit: 100 }).split('\n').at(-2),
    '(no rules at offset 10; 5 in all)',
  );
  assert.deepEqual(specFromFlags({ action: 'drop', protocol: '6', dstPorts: '22' }), {
    action: 'drop',
    protocol: 6,
    dstPorts: '22',
  });
  const current = [
    { id: 1, action: 'drop' as const, src: '10.0.0.0/8', priority: 100, createdAt: NOW, updatedAt: NOW },
    {
      id: 2,
      action: 'drop' as const,
      src: '10.1.0.0/16',
      priority: 100,
      expiresAt: NOW,
      createdAt: NOW,
      updatedAt: NOW,
    },
  ];
  const merged = mergeImport(
    current,
    [
      { action: 'drop', src: '10.0.0.0/8', comment: 'again' },
      { action: 'drop', src: '10.1.0.0/16' },
      { action: 'drop', src: '10.0.0.0/8', priority: 5 },
    ],
    false,
    Date.parse(NOW) - 1000,
  );
  // Only a permanent plain rule with the same action, prefix and priority counts as present.
  assert.equal(merged.present, 1);
  assert.equal(merged.added, 2);
  assert.deepEqual(merged.rules.slice(0, 2), [
    { id: 1, action: 'drop', src: '10.0.0.0/8', priority: 100 },
    { id: 2, action: 'drop', src: '10.1.0.0/16', priority: 100, expiresAt: NOW },
  ]);
  // Once rule 2 has expired it is not sent back (the agent would refuse a past expiry), and its prefix is new again.
  const later = mergeImport(current, [{ action: 'drop', src: '10.1.0.0/16' }], false, Date.parse(NOW) + 1000);
  assert.deepEqual(
    later.rules.map((r) => r.id),
    [1, undefined],
  );
  assert.equal(later.added, 1);
});
