/**
 * Blocklist parsing for `flowgate rules import`: the Spamhaus DROP text and
 * JSON formats, IPv6, comments, options, and a bad line reported by number.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BlocklistError, parseBlocklist, readBlocklist } from '../../control/rules/blocklist.js';

const SPAMHAUS_DROP = `; Spamhaus DROP List 2024/05/01 - (c) 2024 The Spamhaus Project SLU
; https://www.spamhaus.org/drop/drop.txt
; Last-Modified: Wed, 01 May 2024 12:00:00 GMT
; Expires: Wed, 01 May 2024 13:00:00 GMT
1.10.16.0/20 ; SBL256894
1.19.0.0/16 ; SBL434604
2.56.192.0/22 ; SBL459831
`;

test('the Spamhaus DROP text format: header skipped, the SBL id becomes the comment', () => {
  const list = parseBlocklist(SPAMHAUS_DROP);
  assert.deepEqual(list.rules, [
    { action: 'drop', src: '1.10.16.0/20', comment: 'SBL256894' },
    { action: 'drop', src: '1.19.0.0/16', comment: 'SBL434604' },
    { action: 'drop', src: '2.56.192.0/22', comment: 'SBL459831' },
  ]);
  assert.deepEqual(list.warnings, []);
});

test('the Spamhaus JSON-lines format (drop_v6.json), metadata line skipped', () => {
  const text = [
    '{"cidr":"2001:67c:1bc::/48","sblid":"SBL586315","rir":"ripencc"}',
    '{"cidr":"2a06:e881:7::/48","sblid":"SBL621013","rir":"ripencc"}',
    '{"type":"metadata","timestamp":1714567890,"size":2,"records":2,"copyright":"(c) 2024 The Spamhaus Project SLU"}',
    '',
  ].join('\n');
  assert.deepEqual(parseBlocklist(text).rules, [
    { action: 'drop', src: '2001:67c:1bc::/48', comment: 'SBL586315' },
    { action: 'drop', src: '2a06:e881:7::/48', comment: 'SBL621013' },
  ]);
  assert.throws(() => parseBlocklist('{"cidr": 5}'), /line 1: .* has no "cidr" string/);
  assert.throws(() => parseBlocklist('10.0.0.0/8\n{nope'), /line 2: .* is neither a prefix nor a JSON object/);
});

test('plain lists: IPv6, bare addresses, # and ; comments, blank lines, CRLF, a BOM', () => {
  const text =
    '\ufeff# my list\r\n' +
    '\r\n' +
    '  192.0.2.7  \r\n' +
    '2001:db8::/32 # documentation\r\n' +
    '2001:DB8:1::5\r\n' +
    '198.51.100.0/24;tab-less comment\r\n' +
    '\t; indented comment\r\n' +
    '203.0.113.0/24 ; a # inside\r\n';
  assert.deepEqual(parseBlocklist(text).rules, [
    { action: 'drop', src: '192.0.2.7/32' },
    { action: 'drop', src: '2001:db8::/32', comment: 'documentation' },
    { action: 'drop', src: '2001:db8:1::5/128' },
    { action: 'drop', src: '198.51.100.0/24', comment: 'tab-less comment' },
    { action: 'drop', src: '203.0.113.0/24', comment: 'a # inside' },
  ]);
  assert.deepEqual(parseBlocklist('').rules, []);
  assert.deepEqual(parseBlocklist('; only comments\n# here\n\n').rules, []);
});

test('options: action, destination, priority, a comment prefix', () => {
  const list = parseBlocklist('10.0.0.0/8 ; private\n192.0.2.0/24\n', {
    action: 'allow',
    direction: 'dst',
    priority: 500,
    comment: 'spamhaus-drop',
  });
  assert.deepEqual(list.rules, [
    { action: 'allow', dst: '10.0.0.0/8', priority: 500, comment: 'spamhaus-drop: private' },
    { action: 'allow', dst: '192.0.2.0/24', priority: 500, comment: 'spamhaus-drop' },
  ]);
});

test('host bits are normalised and repeated prefixes skipped, each with a warning naming the line', () => {
  const list = parseBlocklist('10.1.2.3/8\n10.0.0.0/8 ; again\n2001:db8::1/32\n');
  assert.deepEqual(list.rules, [
    { action: 'drop', src: '10.0.0.0/8' },
    { action: 'drop', src: '2001:db8::/32' },
  ]);
  assert.deepEqual(list.warnings, [
    'line 1: 10.1.2.3/8 has host bits set; imported as 10.0.0.0/8',
    'line 2: 10.0.0.0/8 is listed on line 1 already; skipped',
    'line 3: 2001:db8::1/32 has host bits set; imported as 2001:db8::/32',
  ]);
});

test('long comments are cut to the rule limit of 1024 characters', () => {
  const [rule] = parseBlocklist(`10.0.0.0/8 ; ${'x'.repeat(2000)}`).rules;
  assert.equal(rule?.comment?.length, 1024);
  assert.ok(rule?.comment?.endsWith('…'));
});

test('a bad line is an error naming its number and its text', () => {
  const cases: Array<[string, RegExp]> = [
    [
      '192.0.2.0/24\n; ok\n10.0.0.0/33 ; SBL1\n',
      /^line 3: "10\.0\.0\.0\/33" .*prefix length|^line 3: .*10\.0\.0\.0\/33/,
    ],
    ['not-an-ip\n', /^line 1: .*not-an-ip/],
    ['1.2.3.4 5.6.7.8\n', /^line 1: "1\.2\.3\.4 5\.6\.7\.8" is not one prefix \(start a comment with ; or #\)$/],
    ['2001:db8::/129\n', /^line 1: .*2001:db8::\/129/],
    ['\n\n\n256.1.1.1\n', /^line 4: .*256\.1\.1\.1/],
  ];
  for (const [text, pattern] of cases) {
    let caught: unknown;
    try {
      parseBlocklist(text);
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof BlocklistError, JSON.stringify(text));
    assert.match(caught.message, pattern);
    assert.ok(!caught.message.includes('\n'), 'one line');
  }
  const e = (() => {
    try {
      parseBlocklist('10.0.0.0/8\nbogus ; comment\n');
    } catch (err) {
      return err as BlocklistError;
    }
    return undefined;
  })();
  assert.equal(e?.line, 2);
  assert.equal(e?.text, 'bogus ; comment');
});

test('readBlocklist reads a file, and its errors name the file', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'flowgate-blocklist-'));
  try {
    const good = path.join(dir, 'drop.txt');
    await writeFile(good, SPAMHAUS_DROP);
    assert.equal((await readBlocklist(good, { comment: 'drop' })).rules[0]?.comment, 'drop: SBL256894');
    const bad = path.join(dir, 'bad.txt');
    await writeFile(bad, '10.0.0.0/8\n10.0.0.0/99\n');
    await assert.rejects(readBlocklist(bad), (err: Error) => {
      assert.match(err.message, new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: line 2: `));
      return true;
    });
    await assert.rejects(readBlocklist(path.join(dir, 'missing.txt')), /ENOENT/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a long list parses in linear time (300,000 lines in seconds)', () => {
  const lines: string[] = [];
  for (let i = 0; i < 300_000; i++) lines.push(`${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}.0/24 ; SBL${i}`);
  const t0 = performance.now();
  const list = parseBlocklist(lines.join('\n'));
  const ms = performance.now() - t0;
  assert.equal(list.rules.length, 300_000);
  assert.ok(ms < 10_000, `took ${Math.round(ms)} ms`);
});
