/**
 * The flow store over HTTP (--clickhouse-url), against test/lib's ClickHouse
 * HTTP endpoint (chDB in a child process): the same migrations, inserts and
 * queries as embedded, plus what only a server has — credentials in the URL,
 * outages and proxies — and how each error is classified for the shipper.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createServer as createTlsServer, rootCertificates } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { parseServerUrl, systemCaBundle } from '../../control/store/client.js';
import { encodeFlowRows } from '../../control/store/flow-rows.js';
import { ClickHouseFlowStore } from '../../control/store/flow-store.js';
import { FLOW_RECORD_SIZE } from '../../control/datapath/layout.js';
import { StoreError, type FlowRecordBatch, type QueryLimits } from '../../control/store/types.js';
import { startClickHouseHttp, type ClickHouseHttp } from '../lib/clickhouse-http-server.js';
import { context, drain, flow, v4 } from './records.js';

const LIMITS: QueryLimits = { maxSeconds: 20, maxRows: 10_000 };
const dir = mkdtempSync(path.join(tmpdir(), 'flowgate-server-test-'));
const OFFSET = BigInt(Date.now() - 3_600_000) * 1_000_000n - 5_000_000_000n;
const batch = encodeFlowRows(
  drain([flow({ srcAddr: v4('10.0.0.1'), bytes: 100 }), flow({ srcAddr: v4('10.0.0.2'), bytes: 200, ifindex: 3 })]),
  context(OFFSET),
);

let ch: ClickHouseHttp;
let store: ClickHouseFlowStore;

function isStoreError(retryable: boolean, message?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof StoreError, `not a StoreError: ${String(e)}`);
    assert.equal(e.retryable, retryable, `retryable should be ${retryable}: ${e.message}`);
    if (message) assert.match(e.message, message);
    return true;
  };
}

before(async () => {
  ch = await startClickHouseHttp({ dataDir: path.join(dir, 'server'), user: 'flowgate', password: 'p@ss: w/rd' });
  store = await ClickHouseFlowStore.open({ target: { kind: 'server', url: ch.url }, retentionDays: 30 });
});

after(async () => {
  await store?.close();
  await ch?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('server URL', () => {
  it('takes the credentials out of the URL', () => {
    assert.deepEqual(parseServerUrl('https://fg%40x:p%3Ass@ch.example:8443/?database=flowgate'), {
      url: 'https://ch.example:8443',
      username: 'fg@x',
      password: 'p:ss',
      https: true,
    });
    assert.deepEqual(parseServerUrl('http://127.0.0.1:8123'), {
      url: 'http://127.0.0.1:8123',
      username: undefined,
      password: undefined,
      https: false,
    });
    assert.throws(() => parseServerUrl('ftp://x'), isStoreError(false, /http/));
    assert.throws(() => parseServerUrl('not a url'), isStoreError(false, /not a URL/));
    assert.throws(() => parseServerUrl('http://h:1/?database=other'), isStoreError(false, /always flowgate/));
    assert.throws(() => parseServerUrl('http://h:1/other'), isStoreError(false, /always flowgate/));
    assert.equal(parseServerUrl('http://h:1/flowgate').url, 'http://h:1');
  });

  it('trusts the system CA bundle and Node’s roots for https', () => {
    const ca = systemCaBundle();
    assert.ok(ca, 'this Debian machine has /etc/ssl/certs/ca-certificates.crt');
    const text = ca.toString();
    assert.ok(text.includes(rootCertificates[0]!.trim()));
    assert.ok((text.match(/BEGIN CERTIFICATE/g) ?? []).length > rootCertificates.length);
  });

  it('shows no credentials in the store location', () => {
    assert.equal(store.kind, 'server');
    assert.equal(store.location, `http://127.0.0.1:${ch.port}`);
  });
});

describe('over HTTP', () => {
  it('migrates, inserts exactly once by token, and queries read-only', async () => {
    assert.deepEqual(await store.migrate(), []);
    await store.insertFlows(batch, 'server:1');
    await store.insertFlows(batch, 'server:1');
    const r = await store.query('SELECT iface, sum(bytes) FROM flows GROUP BY iface ORDER BY iface', LIMITS);
    assert.deepEqual(r.rows, [
      ['eth0', 100],
      ['eth1', 200],
    ]);
    assert.deepEqual((await store.query('SELECT sum(bytes) FROM flows_1m', LIMITS)).rows, [[300]]);
    await store.insertRuleCounters([{ ts: Date.now(), host: 'h', ruleId: 1, packets: 1, bytes: 2 }]);
    assert.equal(await store.ping(), true);
  });

  it('refuses writes and reports bad SQL as not retryable, with ClickHouse’s message', async () => {
    await assert.rejects(store.query('DROP TABLE flows', LIMITS), isStoreError(false, /refused/));
    await assert.rejects(store.query('SELECT nope FROM flows', LIMITS), (e: unknown) => {
      isStoreError(false, /nope/)(e);
      assert.equal((e as StoreError).clickhouseCode, '47');
      return true;
    });
    await assert.rejects(
      store.query('SELECT number FROM numbers(100)', { maxSeconds: 5, maxRows: 10 }),
      isStoreError(false, /Limit for result exceeded/),
    );
  });
});

describe('error classification', () => {
  it('a proxy’s 503 is retryable, and the store recovers', async () => {
    await ch.setFault({ status: 503 });
    try {
      await assert.rejects(store.insertFlows(batch, 'server:2'), isStoreError(true, /503/));
      assert.equal(await store.ping(), false);
    } finally {
      await ch.setFault(null);
    }
    await store.insertFlows(batch, 'server:2');
  });

  it('a server-side exception (HTTP 500, UNKNOWN_EXCEPTION) is retryable', async () => {
    await ch.setFault({ failNext: 1 });
    await assert.rejects(store.insertFlows(batch, 'server:3'), (e: unknown) => {
      isStoreError(true)(e);
      assert.equal((e as StoreError).clickhouseCode, '1002');
      return true;
    });
    await store.insertFlows(batch, 'server:3');
  });

  it('a reset connection is retryable', async () => {
    await ch.setFault({ resetNext: 1 });
    await assert.rejects(store.insertFlows(batch, 'server:4'), isStoreError(true, /unreachable/));
    await store.insertFlows(batch, 'server:4');
  });

  it('a request timeout is retryable; the retried insert still lands once', async () => {
    const slow = await ClickHouseFlowStore.open({
      target: { kind: 'server', url: ch.url },
      retentionDays: 30,
      requestTimeoutMs: 300,
    });
    try {
      // The server does the insert, then answers too late: the retry must not duplicate it.
      await ch.setFault({ delayAfterMs: 1000 });
      await assert.rejects(slow.insertFlows(batch, 'server:5'), isStoreError(true, /unreachable/));
    } finally {
      await ch.setFault(null);
    }
    await slow.insertFlows(batch, 'server:5');
    await slow.close();
    // 'server:1' … 'server:5': five batches of two rows.
    assert.deepEqual((await store.query('SELECT count() FROM flows', LIMITS)).rows, [[10]]);
  });

  it('a stopped server is retryable (connection refused), and a restart brings it back', async () => {
    await ch.stop();
    await assert.rejects(store.insertFlows(batch, 'server:6'), isStoreError(true, /ECONNREFUSED/));
    await assert.rejects(
      ClickHouseFlowStore.open({ target: { kind: 'server', url: ch.url }, retentionDays: 30 }),
      isStoreError(true, /ECONNREFUSED/),
    );
    assert.equal(await store.ping(), false);
    await ch.restart();
    // The first request may still meet a socket of the dead server; the shipper retries like this.
    for (let i = 0; ; i++) {
      try {
        await store.insertFlows(batch, 'server:6');
        break;
      } catch (e) {
        if (!(e instanceof StoreError) || !e.retryable || i >= 3) throw e;
      }
    }
    assert.deepEqual((await store.query('SELECT count() FROM flows', LIMITS)).rows, [[12]]);
  });

  it('takes the password from the target (--clickhouse-password-file) when the URL holds none', async () => {
    const url = new URL(ch.url);
    url.password = '';
    // As the file holds it: not URL-encoded ('%' included).
    const fromFile = await ClickHouseFlowStore.open({
      target: { kind: 'server', url: url.toString(), password: 'p@ss: w/rd' },
      retentionDays: 30,
    });
    try {
      assert.deepEqual((await fromFile.query('SELECT 1', LIMITS)).rows, [[1]]);
    } finally {
      await fromFile.close();
    }
    await assert.rejects(
      ClickHouseFlowStore.open({
        target: { kind: 'server', url: url.toString(), password: 'p%40ss' },
        retentionDays: 30,
      }),
      isStoreError(false),
    );
  });

  it('wrong credentials are not retryable', async () => {
    const url = new URL(ch.url);
    url.password = 'wrong';
    await assert.rejects(
      ClickHouseFlowStore.open({ target: { kind: 'server', url: url.toString() }, retentionDays: 30 }),
      isStoreError(false),
    );
  });
});

describe('https', () => {
  let certDir: string;
  let proxy: Server;
  let port: number;

  before(async () => {
    // A self-signed certificate for 127.0.0.1, and a TLS front for the test server (as a load balancer would be).
    certDir = mkdtempSync(path.join(tmpdir(), 'flowgate-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=flowgate test',
        '-addext',
        'subjectAltName=IP:127.0.0.1,DNS:localhost',
        '-keyout',
        path.join(certDir, 'key.pem'),
        '-out',
        path.join(certDir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    proxy = createTlsServer(
      { key: readFileSync(path.join(certDir, 'key.pem')), cert: readFileSync(path.join(certDir, 'cert.pem')) },
      (tlsSocket) => {
        const upstream = connect(ch.port, '127.0.0.1');
        tlsSocket.pipe(upstream).pipe(tlsSocket);
        tlsSocket.on('error', () => upstream.destroy());
        upstream.on('error', () => tlsSocket.destroy());
      },
    );
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    port = (proxy.address() as AddressInfo).port;
  });

  after(async () => {
    delete process.env.NODE_EXTRA_CA_CERTS;
    await new Promise((resolve) => proxy?.close(resolve));
    rmSync(certDir, { recursive: true, force: true });
  });

  it('refuses an untrusted certificate (not retryable), and works once its CA is trusted', async () => {
    const url = new URL(ch.url);
    url.protocol = 'https:';
    url.port = String(port);
    await assert.rejects(
      ClickHouseFlowStore.open({ target: { kind: 'server', url: url.toString() }, retentionDays: 30 }),
      isStoreError(false, /TLS/),
    );
    // Read when the store opens, like Node itself reads it at start.
    process.env.NODE_EXTRA_CA_CERTS = path.join(certDir, 'cert.pem');
    const tlsStore = await ClickHouseFlowStore.open({
      target: { kind: 'server', url: url.toString() },
      retentionDays: 30,
    });
    try {
      assert.equal(tlsStore.location, `https://127.0.0.1:${port}`);
      assert.equal(await tlsStore.ping(), true);
      await tlsStore.insertFlows(batch, 'server:tls');
      assert.deepEqual((await tlsStore.query('SELECT count() FROM flows', LIMITS)).rows, [[14]]);
    } finally {
      await tlsStore.close();
    }
  });
});

// Last: it adds rows that the counts above do not expect.
describe('raw drain records over HTTP', () => {
  it('streams raw drain records as RowBinary a slice at a time: the same rows, once per token', async () => {
    const n = 40_000;
    const records = drain(
      Array.from({ length: n }, (_, i) =>
        flow({ srcAddr: v4(`10.7.${(i >> 8) & 255}.${i & 255}`), bytes: i, ifindex: 2 + (i % 3), srcPort: i % 60000 }),
      ),
    );
    const raw = (slices: number): FlowRecordBatch => ({
      format: 'FlowRecords',
      rows: n,
      host: 'raw-host',
      ifaces: { 2: 'eth0', 3: 'eth1' },
      epochOffsetNs: OFFSET,
      *records() {
        const step = Math.ceil(n / slices) * FLOW_RECORD_SIZE;
        const buf = Buffer.alloc(step); // reused: each slice is valid until the next, as the spool's are
        for (let at = 0; at < records.length; at += step) {
          const len = Math.min(step, records.length - at);
          records.copy(buf, 0, at, at + len);
          yield buf.subarray(0, len);
        }
      },
    });
    await store.insertFlows(raw(37), 'server:raw');
    await store.insertFlows(raw(5), 'server:raw');
    await store.insertFlows(
      encodeFlowRows(records, { ...context(OFFSET, { 2: 'eth0', 3: 'eth1' }), host: 'enc-host' }),
      'server:enc',
    );
    const sums = async (host: string): Promise<unknown[][]> =>
      (
        await store.query(
          `SELECT iface, count(), sum(bytes), sum(src_port), min(first_seen), max(last_seen) FROM flows
           WHERE host = '${host}' GROUP BY iface ORDER BY iface`,
          LIMITS,
        )
      ).rows;
    const want = await sums('enc-host');
    assert.equal(want.length, 3);
    assert.deepEqual(await sums('raw-host'), want);

    // Records that break off mid-stream: the insert fails and stores nothing.
    const broken: FlowRecordBatch = {
      ...raw(10),
      host: 'broken-host',
      *records() {
        yield records.subarray(0, 1000 * FLOW_RECORD_SIZE);
        throw new Error('spool read failed');
      },
    };
    await assert.rejects(store.insertFlows(broken, 'server:broken'));
    assert.deepEqual((await store.query("SELECT count() FROM flows WHERE host = 'broken-host'", LIMITS)).rows, [[0]]);
  });

  it('sends several batches as one insert, each with its own meta, and a retry of it lands nothing', async () => {
    const n = 3000;
    const records = drain(
      Array.from({ length: n }, (_, i) => flow({ srcAddr: v4(`10.8.${i >> 8}.${i & 255}`), bytes: i })),
    );
    const batch = (host: string, offset: bigint): FlowRecordBatch => ({
      format: 'FlowRecords',
      rows: n,
      host,
      ifaces: { 2: `${host}-if` },
      epochOffsetNs: offset,
      records: () => [records],
    });
    const group = [batch('group-1', OFFSET), batch('group-2', OFFSET + 60_000_000_000n)];
    await store.insertFlows(group, 'server:group');
    await store.insertFlows(group, 'server:group');
    const rows = await store.query(
      `SELECT host, any(iface), count(), sum(bytes), toUInt32(max(first_seen) - min(first_seen)) FROM flows
       WHERE host LIKE 'group-%' GROUP BY host ORDER BY host`,
      LIMITS,
    );
    const bytes = (n * (n - 1)) / 2;
    const span = (
      await store.query("SELECT toUInt32(max(first_seen) - min(first_seen)) FROM flows WHERE host = 'group-1'", LIMITS)
    ).rows[0]![0] as number;
    assert.deepEqual(rows.rows, [
      ['group-1', 'group-1-if', n, bytes, span],
      ['group-2', 'group-2-if', n, bytes, span],
    ]);
    const minutes = await store.query(
      "SELECT toUInt32(min(first_seen)) FROM flows WHERE host LIKE 'group-%' GROUP BY host ORDER BY host",
      LIMITS,
    );
    const [[a], [b]] = minutes.rows as [[number], [number]];
    assert.equal(b - a, 60); // each batch's own clock offset
  });
});
