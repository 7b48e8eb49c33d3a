/**
 * The API over TLS: buildApi({https}) with a throwaway self-signed
 * certificate (openssl), listenApi reporting https://, a request trusting
 * that certificate; and `flowgate run`'s --tls-cert/--tls-key checks.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildApi, listenApi } from '../../control/api/server.js';
import { readTls } from '../../control/cli/run.js';
import { Metrics } from '../../control/metrics.js';
import { FakeRulesAgent } from '../lib/fake-rules.js';

const BIN = fileURLToPath(new URL('../../bin/flowgate.js', import.meta.url));

let dir: string;
let certFile: string;
let keyFile: string;
let otherKeyFile: string;

function selfSigned(name: string): { cert: string; key: string } {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      '/CN=localhost',
      '-days',
      '1',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { stdio: 'ignore' },
  );
  return { cert, key };
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'flowgate-tls-'));
  ({ cert: certFile, key: keyFile } = selfSigned('server'));
  otherKeyFile = selfSigned('other').key;
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function httpsGet(
  url: string,
  ca: Buffer,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the API serves HTTPS with the given certificate and reports an https:// address', async () => {
  const tls = readTls(certFile, keyFile);
  assert.ok(tls);
  const app = await buildApi({
    agent: new FakeRulesAgent(),
    metrics: new Metrics({ defaultMetrics: false }),
    token: 'tls-token',
    https: tls,
  });
  try {
    const address = await listenApi(app, '127.0.0.1:0', 'tls-token');
    assert.match(address, /^https:\/\/127\.0\.0\.1:\d+$/);
    const ca = await readFile(certFile);
    const health = await httpsGet(`${address}/api/v1/health`, ca);
    assert.equal(health.status, 200);
    assert.equal((JSON.parse(health.body) as { status: string }).status, 'ok');
    const rules = await httpsGet(`${address}/api/v1/rules`, ca, { authorization: 'Bearer tls-token' });
    assert.equal(rules.status, 200);
    assert.equal((JSON.parse(rules.body) as { total: number }).total, 0);
    // Without trusting the certificate the connection is refused: it really is TLS with that certificate.
    await assert.rejects(httpsGet(`${address}/api/v1/health`, Buffer.from('')), /self[- ]signed|unable to verify/i);
  } finally {
    await app.close();
  }
});

test('readTls: both or neither, readable files, a certificate and its key', async () => {
  assert.equal(readTls(undefined, undefined), undefined);
  assert.throws(() => readTls(certFile, undefined), /^Error: --tls-key is needed with --tls-cert$/);
  assert.throws(() => readTls(undefined, keyFile), /^Error: --tls-cert is needed with --tls-key$/);
  assert.throws(() => readTls(path.join(dir, 'missing.crt'), keyFile), /^Error: --tls-cert cannot be read: ENOENT/);
  assert.throws(() => readTls(certFile, path.join(dir, 'missing.key')), /^Error: --tls-key cannot be read: ENOENT/);
  assert.throws(() => readTls(keyFile, keyFile), /--tls-cert .* is not a PEM certificate/);
  assert.throws(() => readTls(certFile, certFile), /--tls-key .* is not a PEM private key/);
  assert.throws(() => readTls(certFile, otherKeyFile), /--tls-key .* is not the key of the certificate in /);
});

test('flowgate run: a bad TLS flag is one line naming it, exit 2, before anything starts', async () => {
  const junk = path.join(dir, 'junk.pem');
  await writeFile(junk, 'not a certificate\n');
  const cases: Array<[string[], RegExp]> = [
    [['--tls-cert', certFile], /^flowgate: --tls-key is needed with --tls-cert$/],
    [['--tls-key', keyFile], /^flowgate: --tls-cert is needed with --tls-key$/],
    [['--tls-cert', junk, '--tls-key', keyFile], /^flowgate: --tls-cert .*junk\.pem is not a PEM certificate/],
    [['--tls-cert', certFile, '--tls-key', otherKeyFile], /^flowgate: --tls-key .* is not the key of the certificate/],
  ];
  for (const [args, pattern] of cases) {
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [BIN, 'run', '--iface', 'lo', '--store', path.join(dir, 'store'), '--bpffs', path.join(dir, 'bpffs'), ...args],
        { env: { ...process.env, FLOWGATE_FROM_SOURCE: '1' }, timeout: 60_000 },
        (err, stdout, stderr) =>
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
      );
    });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stdout, '');
    const lines = r.stderr.split('\n');
    assert.equal(lines.length, 2, `one line: ${JSON.stringify(r.stderr)}`);
    assert.match(lines[0] ?? '', pattern);
  }
});
