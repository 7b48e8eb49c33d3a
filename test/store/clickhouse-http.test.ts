/**
 * The ClickHouse-over-HTTP path, tested against test/lib/clickhouse-http-server.ts:
 * a real HTTP endpoint in a child process backed by chdb. A plain
 * createClient({ url }) from @clickhouse/client must see what it would see from
 * a ClickHouse server: formats, summaries, ClickHouse errors with their codes,
 * authentication, per-request settings, and real outages (killed process,
 * 503s, hangs, resets) followed by recovery.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';

import {
  ClickHouseError,
  ClickHouseLogLevel,
  createClient,
  type ClickHouseClient,
  type ClickHouseClientConfigOptions,
} from '@clickhouse/client';

import { startClickHouseHttp, type ClickHouseHttp } from '../lib/clickhouse-http-server.js';

const USER = 'flowgate';
const PASSWORD = 'p@ss: w/rd';

function client(ch: ClickHouseHttp, extra: ClickHouseClientConfigOptions = {}): ClickHouseClient {
  return createClient({ url: ch.url, log: { level: ClickHouseLogLevel.OFF }, ...extra });
}

/** Run `fn`, expect it to throw, return what it threw. */
async function thrown(fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  assert.fail('expected an error');
}

async function chError(fn: () => Promise<unknown>, code: string, type: string): Promise<ClickHouseError> {
  const e = await thrown(fn);
  assert.ok(e instanceof ClickHouseError, `expected a ClickHouseError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  assert.equal(e.type, type, e.message);
  return e;
}

interface RawReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A hand-made HTTP request, for what the client library does not let us shape. */
function raw(
  ch: ClickHouseHttp,
  opts: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer },
): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: ch.port,
        method: opts.method ?? 'POST',
        path: opts.path,
        headers: opts.headers,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
        );
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

const basic = (user: string, password: string): string =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

describe('ClickHouse HTTP endpoint (chdb in a child process) with @clickhouse/client', () => {
  let dir: string;
  let ch: ClickHouseHttp;
  let db: ClickHouseClient;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'flowgate-ch-http-'));
    ch = await startClickHouseHttp({ dataDir: join(dir, 'data'), user: USER, password: PASSWORD });
    db = client(ch);
  });

  after(async () => {
    await db?.close();
    await ch?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('url, ping and DDL through command()', async () => {
    assert.match(ch.url, /^http:\/\/flowgate:p%40ss%3A%20w%2Frd@127\.0\.0\.1:\d+$/);
    assert.deepEqual(await db.ping(), { success: true });
    assert.equal((await db.ping({ select: true })).success, true);
    await db.command({ query: 'CREATE DATABASE IF NOT EXISTS t1' });
    await db.command({
      query: `CREATE TABLE t1.events (id UInt32, name String, at DateTime64(6, 'UTC'), n UInt64)
              ENGINE = MergeTree ORDER BY id`,
    });
    const r = await db.query({ query: "SELECT name FROM system.tables WHERE database = 't1'", format: 'JSONEachRow' });
    assert.deepEqual(await r.json(), [{ name: 'events' }]);
  });

  test('insert JSONEachRow and TabSeparated; select JSON, JSONCompact, JSONEachRow', async () => {
    const a = await db.insert({
      table: 't1.events',
      values: [
        { id: 1, name: 'a', at: '2024-01-02 03:04:05.123456', n: '18446744073709551615' },
        { id: 2, name: "quote'd\ttab", at: '2024-01-02 03:04:06', n: 2 },
      ],
      format: 'JSONEachRow',
    });
    assert.equal(a.summary?.written_rows, '2');
    assert.match(a.query_id, /^[0-9a-f-]{36}$/);

    const b = await db.insert({
      table: 't1.events',
      columns: ['id', 'name', 'at', 'n'],
      values: Readable.from(['3\tthree\t1704164646.5\t3\n', '4\tfour\\nline\t1704164647\t4\n'], { objectMode: false }),
      format: 'TabSeparated',
    });
    assert.equal(b.summary?.written_rows, '2');

    // ClickHouse >= 25.8 writes 64-bit integers unquoted by default; the URL setting must reach the engine.
    const json = await db.query({
      query: 'SELECT id, name, n FROM t1.events ORDER BY id',
      format: 'JSON',
      clickhouse_settings: { output_format_json_quote_64bit_integers: 1 },
    });
    assert.equal(json.response_headers['x-clickhouse-format'], 'JSON');
    assert.equal(json.response_headers['x-clickhouse-timezone'], 'UTC');
    assert.match(String(json.response_headers['content-type']), /^application\/json/);
    const body = await json.json<{ id: number; name: string; n: string }>();
    assert.equal(body.rows, 4);
    assert.deepEqual(
      body.meta?.map((m) => m.type),
      ['UInt32', 'String', 'UInt64'],
    );
    assert.deepEqual(body.data[0], { id: 1, name: 'a', n: '18446744073709551615' });
    assert.equal(body.data[1]?.name, "quote'd\ttab");
    assert.equal(body.data[3]?.name, 'four\nline');

    const compact = await db.query({
      query: 'SELECT id, toString(at) FROM t1.events WHERE id IN (1, 3) ORDER BY id',
      format: 'JSONCompact',
    });
    assert.deepEqual((await compact.json<[number, string]>()).data, [
      [1, '2024-01-02 03:04:05.123456'],
      [3, '2024-01-02 03:04:06.500000'],
    ]);

    const each = await db.query({ query: 'SELECT count() AS c, sum(id) AS s FROM t1.events', format: 'JSONEachRow' });
    assert.deepEqual(await each.json(), [{ c: 4, s: 10 }]);
    const summary = JSON.parse(String(each.response_headers['x-clickhouse-summary'])) as Record<string, string>;
    assert.equal(summary.result_rows, '1');
    assert.equal(each.query_id, each.response_headers['x-clickhouse-query-id']);

    const text = await db.query({ query: 'SELECT id FROM t1.events ORDER BY id', format: 'TabSeparated' });
    assert.equal(await text.text(), '1\n2\n3\n4\n');
  });

  test('other insert shapes: binary RowBinary body, inline VALUES, exec()', async () => {
    await db.command({ query: 'CREATE TABLE t1.kv (k UInt32, v String) ENGINE = MergeTree ORDER BY k' });
    // RowBinary: UInt32 little-endian, then a String as varint length + bytes.
    const rowBinary = Buffer.concat([Buffer.from([7, 0, 0, 0, 4]), Buffer.from('\u00ff\u0000ab', 'latin1')]);
    const r = await raw(ch, {
      path: `/?query=${encodeURIComponent('INSERT INTO t1.kv FORMAT RowBinary')}`,
      headers: { Authorization: basic(USER, PASSWORD) },
      body: rowBinary,
    });
    assert.equal(r.status, 200, r.body);
    await db.command({ query: "INSERT INTO t1.kv VALUES (8, 'semi;colon'), (9, 'x')" });
    const out = await db.exec({ query: 'SELECT k, hex(v) AS v FROM t1.kv ORDER BY k FORMAT JSONCompactEachRow' });
    let text = '';
    for await (const chunk of out.stream) text += String(chunk);
    assert.equal(text, '[7, "FF006162"]\n[8, "73656D693B636F6C6F6E"]\n[9, "78"]\n');
  });

  test('ClickHouse errors keep their code, type and message', async () => {
    const e = await chError(() => db.query({ query: 'SELECT * FROM t1.nope' }), '60', 'UNKNOWN_TABLE');
    assert.match(e.message, /nope/);
    await chError(() => db.query({ query: 'SELEC 1' }), '62', 'SYNTAX_ERROR');
    await chError(
      () => db.command({ query: 'CREATE TABLE t1.events (x UInt8) ENGINE = Memory' }),
      '57',
      'TABLE_ALREADY_EXISTS',
    );
    await chError(
      () =>
        db.insert({
          table: 't1.events',
          values: Readable.from(['x\ty\n'], { objectMode: false }),
          format: 'TabSeparated',
        }),
      '27',
      'CANNOT_PARSE_INPUT_ASSERTION_FAILED',
    );
    // A real server refuses more than one statement per request (chdb alone would run both).
    const multi = await chError(() => db.command({ query: 'SELECT 1; SELECT 2' }), '62', 'SYNTAX_ERROR');
    assert.match(multi.message, /Multi-statements are not allowed/);
    await db.command({ query: "SELECT ';' -- ; not a second statement\n" });

    // On the wire: status from exceptionCodeToHTTPStatus, the code in a header, the text in the body.
    const r = await raw(ch, {
      path: '/?query=SELECT%20*%20FROM%20t1.nope',
      method: 'GET',
      headers: { Authorization: basic(USER, PASSWORD) },
    });
    assert.equal(r.status, 404);
    assert.equal(r.headers['x-clickhouse-exception-code'], '60');
    assert.match(r.body, /^Code: 60\. DB::Exception: .*\(UNKNOWN_TABLE\) \(version [\d.]+\)\n$/s);
  });

  test('authentication: wrong password, X-ClickHouse-User/Key, URL parameters', async () => {
    const wrong = client(ch, { url: ch.url.replace(encodeURIComponent(PASSWORD), 'nope') });
    try {
      const e = await chError(() => wrong.query({ query: 'SELECT 1' }), '516', 'AUTHENTICATION_FAILED');
      assert.match(e.message, /Authentication failed/);
      assert.equal((await wrong.ping({ select: true })).success, false);
    } finally {
      await wrong.close();
    }
    // /ping does not authenticate, as on a server.
    assert.deepEqual(await raw(ch, { method: 'GET', path: '/ping' }).then((r) => [r.status, r.body]), [200, 'Ok.\n']);

    const viaHeaders = await raw(ch, {
      path: '/',
      headers: { 'X-ClickHouse-User': USER, 'X-ClickHouse-Key': PASSWORD },
      body: 'SELECT 40 + 2',
    });
    assert.deepEqual([viaHeaders.status, viaHeaders.body], [200, '42\n']);
    const viaParams = await raw(ch, {
      path: `/?user=${USER}&password=${encodeURIComponent(PASSWORD)}`,
      body: 'SELECT 7',
    });
    assert.deepEqual([viaParams.status, viaParams.body], [200, '7\n']);
    const noCredentials = await raw(ch, { path: '/', body: 'SELECT 1' });
    assert.equal(noCredentials.status, 403);
    assert.match(noCredentials.body, /^Code: 516\. .*default: Authentication failed/);
    const mixed = await raw(ch, {
      path: '/',
      headers: { 'X-ClickHouse-User': USER, 'X-ClickHouse-Key': PASSWORD, Authorization: basic(USER, PASSWORD) },
      body: 'SELECT 1',
    });
    assert.equal(mixed.headers['x-clickhouse-exception-code'], '516');
    assert.match(mixed.body, /not allowed to use X-ClickHouse HTTP headers and Authorization HTTP header/);
  });

  test('URL settings and query parameters apply to their own request only', async () => {
    await chError(
      () =>
        db.insert({
          table: 't1.events',
          values: [{ id: 9, name: 'ro', at: 0, n: 0 }],
          format: 'JSONEachRow',
          clickhouse_settings: { readonly: '1' },
        }),
      '164',
      'READONLY',
    );
    await chError(
      () =>
        db.command({ query: 'CREATE TABLE t1.x (a UInt8) ENGINE = Memory', clickhouse_settings: { readonly: '1' } }),
      '164',
      'READONLY',
    );
    // readonly=1 together with other settings in one request, as the flow store's query() sends them.
    const limited = await db.query({
      query: "SELECT getSetting('readonly') AS ro, getSetting('max_result_rows') AS mr FROM system.one",
      format: 'JSONEachRow',
      clickhouse_settings: {
        readonly: '1',
        max_result_rows: '10',
        result_overflow_mode: 'throw',
        max_execution_time: 5,
      },
    });
    assert.deepEqual(await limited.json(), [{ ro: 1, mr: 10 }]);
    await chError(
      () =>
        db.query({
          query: 'SELECT number FROM system.numbers LIMIT 100',
          clickhouse_settings: { max_result_rows: '10', result_overflow_mode: 'throw' },
        }),
      '396',
      'TOO_MANY_ROWS_OR_BYTES',
    );
    await chError(
      () => db.query({ query: 'SELECT 1', clickhouse_settings: { no_such_setting: 1 } as never }),
      '115',
      'UNKNOWN_SETTING',
    );
    // Nothing leaked into the next request.
    const next = await db.query({
      query: "SELECT getSetting('readonly') AS ro, getSetting('max_result_rows') AS mr",
      format: 'JSONEachRow',
    });
    assert.deepEqual(await next.json(), [{ ro: 0, mr: 0 }]);
    await db.insert({ table: 't1.events', values: [{ id: 5, name: 'rw', at: 0, n: 5 }], format: 'JSONEachRow' });

    // Concurrent requests with different settings do not see each other's.
    const parallel = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        db
          .query({
            query: "SELECT getSetting('max_threads') AS m, {i:UInt32} AS i",
            query_params: { i },
            format: 'JSONEachRow',
            clickhouse_settings: { max_threads: i + 1 },
          })
          .then((r) => r.json<{ m: number; i: number }>()),
      ),
    );
    assert.deepEqual(
      parallel.map((rows) => rows[0]),
      Array.from({ length: 16 }, (_, i) => ({ m: i + 1, i })),
    );
    // max_execution_time is the engine's: TIMEOUT_EXCEEDED (HTTP 408 on the wire).
    await chError(
      () => db.query({ query: 'SELECT count() FROM system.numbers', clickhouse_settings: { max_execution_time: 1 } }),
      '159',
      'TIMEOUT_EXCEEDED',
    );

    const params = await db.query({
      query: 'SELECT {s:String} AS s, toString({n:UInt64}) AS n, {a:Array(UInt8)} AS a',
      query_params: { s: "it's a\ttab\\", n: '12345678901234567890', a: [1, 2] },
      format: 'JSONEachRow',
    });
    assert.deepEqual(await params.json(), [{ s: "it's a\ttab\\", n: '12345678901234567890', a: [1, 2] }]);

    const inDb = client(ch, { database: 't1' });
    try {
      const r = await inDb.query({
        query: 'SELECT currentDatabase() AS d, count() AS c FROM events',
        format: 'JSONEachRow',
      });
      assert.deepEqual(await r.json(), [{ d: 't1', c: 5 }]);
      await inDb.insert({ table: 'events', values: [{ id: 6, name: 'db', at: 0, n: 6 }], format: 'JSONEachRow' });
    } finally {
      await inDb.close();
    }
    // GET requests are readonly=2, as on a server.
    const get = await raw(ch, {
      method: 'GET',
      path: `/?query=${encodeURIComponent('CREATE TABLE t1.g (a UInt8) ENGINE = Memory')}`,
      headers: { Authorization: basic(USER, PASSWORD) },
    });
    assert.equal(get.headers['x-clickhouse-exception-code'], '164');
  });

  test('insert_deduplication_token drops a retried insert', async () => {
    await db.command({
      query: `CREATE TABLE t1.dedup (id UInt32) ENGINE = MergeTree ORDER BY id
              SETTINGS non_replicated_deduplication_window = 100`,
    });
    for (let i = 0; i < 2; i++) {
      await db.insert({
        table: 't1.dedup',
        values: Readable.from(['1\n2\n3\n'], { objectMode: false }),
        format: 'TabSeparated',
        clickhouse_settings: { insert_deduplication_token: 'batch-1' },
      });
    }
    await db.insert({
      table: 't1.dedup',
      values: Readable.from(['1\n2\n3\n'], { objectMode: false }),
      format: 'TabSeparated',
      clickhouse_settings: { insert_deduplication_token: 'batch-2' },
    });
    const r = await db.query({ query: 'SELECT count() AS c FROM t1.dedup', format: 'JSONEachRow' });
    assert.deepEqual(await r.json(), [{ c: 6 }]);
  });

  test('gzip request and response compression', async () => {
    const gz = client(ch, { compression: { request: true, response: true } });
    try {
      const rows = Array.from({ length: 2000 }, (_, i) => ({ id: 1000 + i, name: `row-${i}`, at: 0, n: i }));
      const ins = await gz.insert({ table: 't1.events', values: rows, format: 'JSONEachRow' });
      assert.equal(ins.summary?.written_rows, '2000');
      const r = await gz.query({ query: 'SELECT count() AS c FROM t1.events WHERE id >= 1000', format: 'JSONEachRow' });
      assert.equal(r.response_headers['content-encoding'], 'gzip');
      assert.deepEqual(await r.json(), [{ c: 2000 }]);
      await chError(() => gz.query({ query: 'SELECT * FROM t1.nope' }), '60', 'UNKNOWN_TABLE');
    } finally {
      await gz.close();
    }
  });

  test('faults: 503, failNext, hang past request_timeout, reset; then recovery', async () => {
    const before = await ch.requests();
    try {
      await ch.setFault({ status: 503 });
      const e503 = await thrown(() => db.query({ query: 'SELECT 1' }));
      assert.ok(e503 instanceof Error && !(e503 instanceof ClickHouseError), String(e503));
      assert.match(e503.message, /503/);
      assert.equal((await db.ping()).success, false);
      await ch.setFault(null);
      assert.deepEqual(await (await db.query({ query: 'SELECT 1 AS x', format: 'JSONEachRow' })).json(), [{ x: 1 }]);

      await ch.setFault({ failNext: 2 });
      await chError(() => db.command({ query: 'SELECT 1' }), '1002', 'UNKNOWN_EXCEPTION');
      await chError(() => db.command({ query: 'SELECT 1' }), '1002', 'UNKNOWN_EXCEPTION');
      await db.command({ query: 'SELECT 1' });

      const quick = client(ch, { request_timeout: 400 });
      try {
        await ch.setFault({ delayMs: 5_000 });
        const started = Date.now();
        const timeout = await thrown(() => quick.query({ query: 'SELECT 1' }));
        assert.match(String(timeout), /Timeout error/);
        assert.ok(Date.now() - started < 3_000, 'the client timed out, not the server answered');
        await ch.setFault(null);
        assert.deepEqual(await (await quick.query({ query: 'SELECT 2 AS x', format: 'JSONEachRow' })).json(), [
          { x: 2 },
        ]);

        // delayAfterMs: the insert lands although the client gave up on it.
        await ch.setFault({ delayAfterMs: 1_500 });
        await thrown(() =>
          quick.insert({ table: 't1.events', values: [{ id: 77, name: 'late', at: 0, n: 0 }], format: 'JSONEachRow' }),
        );
        await ch.setFault(null);
        const landed = await db.query({
          query: 'SELECT count() AS c FROM t1.events WHERE id = 77',
          format: 'JSONEachRow',
        });
        assert.deepEqual(await landed.json(), [{ c: 1 }]);
      } finally {
        await quick.close();
      }

      await ch.setFault({ resetNext: 1 });
      const reset = (await thrown(() => db.query({ query: 'SELECT 1' }))) as NodeJS.ErrnoException;
      assert.ok(reset.code === 'ECONNRESET' || /socket hang up/.test(reset.message), String(reset));
      await db.command({ query: 'SELECT 1' });
    } finally {
      await ch.setFault(null);
    }
    assert.ok((await ch.requests()) - before >= 12);
  });

  test('stop() is an outage (ECONNREFUSED); restart() brings back the same data on the same port', async () => {
    const count = async (): Promise<unknown> =>
      (await db.query({ query: 'SELECT count() AS c FROM t1.events', format: 'JSONEachRow' })).json();
    const was = await count();
    const port = ch.port;
    await ch.stop();
    const down = (await thrown(() => db.query({ query: 'SELECT 1' }))) as NodeJS.ErrnoException;
    assert.equal(down.code, 'ECONNREFUSED', String(down));
    assert.equal((await db.ping()).success, false);
    await ch.stop(); // idempotent
    await ch.restart();
    assert.equal(ch.port, port);
    assert.deepEqual(await count(), was);
    await db.insert({ table: 't1.events', values: [{ id: 100, name: 'after', at: 0, n: 0 }], format: 'JSONEachRow' });
    await ch.restart();
    const r = await db.query({ query: 'SELECT name FROM t1.events WHERE id = 100', format: 'JSONEachRow' });
    assert.deepEqual(await r.json(), [{ name: 'after' }]);
  });
});
