/**
 * The REST API against a fake AgentApi (no kernel, no store): auth, the
 * {error, message} shape of every error, validation naming the field, store
 * error mapping, the OpenAPI document, /metrics, loopback-only listening
 * without a token, rate and body limits.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import type { AgentApi, AgentStatus, InterfaceStatus, XdpModeOption } from '../../control/agent/types.js';
import { buildApi, isLoopbackHost, listenApi, parseListen, type ApiOptions } from '../../control/api/server.js';
import { flowgateVersion } from '../../control/api/version.js';
import { Metrics } from '../../control/metrics.js';
import { StoreError, type QueryResult } from '../../control/store/types.js';
import { FakeRules } from '../lib/fake-rules.js';
import { assertError, withTestApi } from '../lib/api.js';

const TOKEN = 'test-token-0123456789';
const AUTH = { authorization: `Bearer ${TOKEN}` };

function iface(name: string, xdpMode: 'native' | 'generic' = 'native'): InterfaceStatus {
  return {
    name,
    ifindex: 7,
    xdpMode,
    egress: true,
    counters: {
      rxPackets: 10,
      rxBytes: 1000,
      txPackets: 5,
      txBytes: 500,
      droppedPackets: 1,
      nonIpPackets: 2,
      malformed: { ipv4_trunc: 3 },
    },
  };
}

function errno(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/** A scriptable AgentApi: `attachImpl` / `detachImpl` / `queryImpl` decide the outcome; calls are recorded. */
class FakeAgent implements AgentApi {
  calls: string[] = [];
  readonly rules = new FakeRules();
  attached = new Map<string, InterfaceStatus>([['eth0', iface('eth0')]]);
  attachImpl?: (name: string, mode?: XdpModeOption) => Promise<InterfaceStatus>;
  detachImpl?: (name: string) => Promise<boolean>;
  queryImpl: (sql: string) => Promise<QueryResult> = async () => ({
    columns: [
      { name: 'iface', type: 'LowCardinality(String)' },
      { name: 'bytes', type: 'UInt64' },
    ],
    rows: [['eth0', 1234n]],
  });

  status(): AgentStatus {
    this.calls.push('status');
    return {
      version: '9.9.9',
      host: 'testhost',
      startedAt: '2025-01-01T00:00:00.000Z',
      adopted: false,
      drainIntervalMs: 10_000,
      flowsDrained: 42,
      flowsEvicted: 0,
      interfaces: [...this.attached.values()],
      store: { kind: 'embedded', location: '/tmp/store', healthy: true, spooledBatches: 0, spooledBytes: 0 },
    };
  }
  interfaces(): InterfaceStatus[] {
    this.calls.push('interfaces');
    return [...this.attached.values()];
  }
  async attach(name: string, xdpMode?: XdpModeOption): Promise<InterfaceStatus> {
    this.calls.push(`attach ${name} ${xdpMode ?? '-'}`);
    if (this.attachImpl) return this.attachImpl(name, xdpMode);
    const s = iface(name, xdpMode === 'generic' ? 'generic' : 'native');
    this.attached.set(name, s);
    return s;
  }
  async detach(name: string): Promise<boolean> {
    this.calls.push(`detach ${name}`);
    if (this.detachImpl) return this.detachImpl(name);
    return this.attached.delete(name);
  }
  async query(sql: string): Promise<QueryResult> {
    this.calls.push(`query ${sql}`);
    return this.queryImpl(sql);
  }
}

async function withApi(
  opts: Partial<ApiOptions>,
  fn: (app: FastifyInstance, agent: FakeAgent, metrics: Metrics) => Promise<void>,
): Promise<void> {
  const agent = new FakeAgent();
  await withTestApi({ agent, ...opts }, (app, metrics) => fn(app, agent, metrics));
}

test('GET /api/v1/health answers without the token', async () => {
  await withApi({ token: TOKEN }, async (app) => {
    const res = await app.inject({ method: 'GET', url: '/api/v1/health' });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), { status: 'ok', version: flowgateVersion() });
  });
});

test('with a token, every other route is 401 without it or with a wrong one', async () => {
  await withApi({ token: TOKEN }, async (app, agent) => {
    const routes: InjectOptions[] = [
      { method: 'GET', url: '/api/v1/status' },
      { method: 'GET', url: '/api/v1/interfaces' },
      { method: 'POST', url: '/api/v1/interfaces', payload: { name: 'eth1' } },
      { method: 'DELETE', url: '/api/v1/interfaces/eth0' },
      { method: 'POST', url: '/api/v1/query', payload: { sql: 'SELECT 1' } },
      { method: 'GET', url: '/api/v1/openapi.json' },
      { method: 'GET', url: '/api/v1/docs' },
      { method: 'GET', url: '/metrics' },
      { method: 'GET', url: '/api/v1/no-such-route' },
    ];
    const badHeaders: Array<Record<string, string>> = [
      {},
      { authorization: 'Bearer wrong-token' },
      { authorization: `Bearer ${TOKEN}x` },
      { authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` },
      { authorization: TOKEN },
      { authorization: 'Bearer' },
    ];
    for (const route of routes) {
      for (const headers of badHeaders) {
        const res = await app.inject({ ...route, headers });
        assertError(res, 401, 'unauthorized', /bearer token/);
        assert.equal(res.headers['www-authenticate'], 'Bearer realm="flowgate"');
      }
    }
    assert.deepEqual(agent.calls, [], 'the agent saw no unauthenticated call');

    // The right token opens them (the scheme is case-insensitive).
    for (const authorization of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`]) {
      const res = await app.inject({ method: 'GET', url: '/api/v1/status', headers: { authorization } });
      assert.equal(res.statusCode, 200);
    }
    assert.equal((await app.inject({ method: 'GET', url: '/metrics', headers: AUTH })).statusCode, 200);
    assert.equal((await app.inject({ method: 'GET', url: '/api/v1/openapi.json', headers: AUTH })).statusCode, 200);
    assertError(await app.inject({ method: 'GET', url: '/api/v1/no-such-route', headers: AUTH }), 404, 'not_found');
  });
});

test('without a token every route is open', async () => {
  await withApi({}, async (app) => {
    assert.equal((await app.inject({ method: 'GET', url: '/api/v1/status' })).statusCode, 200);
    assert.equal((await app.inject({ method: 'GET', url: '/metrics' })).statusCode, 200);
    assertError(await app.inject({ method: 'GET', url: '/nope' }), 404, 'not_found', 'no route GET /nope');
  });
});

test('GET /status and GET /interfaces return what the agent says', async () => {
  await withApi({ token: TOKEN }, async (app, agent) => {
    const status = await app.inject({ method: 'GET', url: '/api/v1/status', headers: AUTH });
    assert.equal(status.statusCode, 200);
    assert.deepEqual(status.json(), agent.status());
    const list = await app.inject({ method: 'GET', url: '/api/v1/interfaces', headers: AUTH });
    assert.equal(list.statusCode, 200);
    assert.deepEqual(list.json(), [iface('eth0')]);
  });
});

test('POST /interfaces: every invalid body is a 400 naming the field, and the agent is not called', async () => {
  await withApi({ token: TOKEN }, async (app, agent) => {
    const cases: Array<[unknown, RegExp]> = [
      [undefined, /^body must be object, got an empty body$/],
      [[], /^body must be object$/],
      ['eth0', /^body must be object$/],
      [{}, /^body\/name is required$/],
      [{ xdpMode: 'native' }, /^body\/name is required$/],
      [{ name: 5 }, /^body\/name must be string$/],
      [{ name: null }, /^body\/name must be string$/],
      [{ name: '' }, /^body\/name must NOT have fewer than 1 characters$/],
      [{ name: 'x'.repeat(16) }, /^body\/name must NOT have more than 15 characters$/],
      [{ name: 'eth/0' }, /^body\/name must be a network interface name/],
      [{ name: 'eth 0' }, /^body\/name must be a network interface name/],
      [{ name: 'eth0:1' }, /^body\/name must be a network interface name/],
      [{ name: '..' }, /^body\/name must be a network interface name/],
      [{ name: 'eth0', xdpMode: 'fast' }, /^body\/xdpMode must be one of auto, native, generic$/],
      [{ name: 'eth0', xdpMode: 1 }, /^body\/xdpMode must be string$/],
      [{ name: 'eth0', mode: 'native' }, /^body\/mode is not allowed$/],
    ];
    for (const [payload, message] of cases) {
      const res = await app.inject({
        method: 'POST',
        url: '/api/v1/interfaces',
        headers: { ...AUTH, 'content-type': 'application/json' },
        payload: payload === undefined ? undefined : JSON.stringify(payload),
      });
      assertError(res, 400, 'bad_request', message);
    }
    const broken = await app.inject({
      method: 'POST',
      url: '/api/v1/interfaces',
      headers: { ...AUTH, 'content-type': 'application/json' },
      payload: '{"name": "eth0"',
    });
    assertError(broken, 400, 'bad_request', 'body is not valid JSON');
    const noBody = await app.inject({ method: 'POST', url: '/api/v1/interfaces', headers: AUTH });
    assertError(noBody, 400, 'bad_request', 'body must be object');
    assert.deepEqual(agent.calls, []);
  });
});

test('POST /interfaces attaches (201), agent errors map to 400/409/500 naming the interface', async () => {
  await withApi({ token: TOKEN }, async (app, agent) => {
    const ok = await app.inject({
      method: 'POST',
      url: '/api/v1/interfaces',
      headers: AUTH,
      payload: { name: 'veth1', xdpMode: 'generic' },
    });
    assert.equal(ok.statusCode, 201);
    assert.deepEqual(ok.json(), iface('veth1', 'generic'));
    assert.equal(ok.headers.location, '/api/v1/interfaces/veth1');
    assert.deepEqual(agent.calls, ['attach veth1 generic']);

    const post = (name: string): Promise<LightMyRequestResponse> =>
      app.inject({ method: 'POST', url: '/api/v1/interfaces', headers: AUTH, payload: { name } });
    agent.attachImpl = async (name) => {
      throw errno(`no such network interface: ${name}`, 'ENODEV');
    };
    assertError(await post('nic9'), 400, 'bad_request', 'body/name: no such network interface: nic9');
    agent.attachImpl = async (name) => {
      throw errno(`${name} is attached to another XDP program`, 'EEXIST');
    };
    assertError(await post('nic9'), 409, 'conflict', 'body/name: nic9 is attached to another XDP program');
    agent.attachImpl = async (name) => {
      throw new Error(`bpf_link_create on ${name}: Operation not permitted`);
    };
    assertError(await post('nic9'), 500, 'internal', 'bpf_link_create on nic9: Operation not permitted');
  });
});

test('DELETE /interfaces/:name answers 204, or 404 naming the interface', async () => {
  await withApi({ token: TOKEN }, async (app, agent) => {
    const del = (name: string): Promise<LightMyRequestResponse> =>
      app.inject({ method: 'DELETE', url: `/api/v1/interfaces/${name}`, headers: AUTH });
    const ok = await del('eth0');
    assert.equal(ok.statusCode, 204);
    assert.equal(ok.body, '');
    assertError(await del('eth0'), 404, 'not_found', 'interface eth0 is not attached');
    agent.detachImpl = async () => {
      throw errno('no such network interface: gone0', 'ENODEV');
    };
    assertError(await del('gone0'), 404, 'not_found', /gone0/);
    assertError(await del('x'.repeat(16)), 400, 'bad_request', /^params\/name must NOT have more than 15 characters$/);
  });
});

test('POST /query: invalid bodies are 400 naming the field', async () => {
  await withApi({ token: TOKEN }, async (app, agent) => {
    const cases: Array<[unknown, RegExp]> = [
      [undefined, /^body must be object, got an empty body$/],
      [{}, /^body\/sql is required$/],
      [{ sql: 1 }, /^body\/sql must be string$/],
      [{ sql: ['SELECT 1'] }, /^body\/sql must be string$/],
      [{ sql: '' }, /^body\/sql must NOT have fewer than 1 characters$/],
      [{ sql: 'SELECT 1', format: 'csv' }, /^body\/format is not allowed$/],
    ];
    for (const [payload, message] of cases) {
      const res = await app.inject({
        method: 'POST',
        url: '/api/v1/query',
        headers: { ...AUTH, 'content-type': 'application/json' },
        payload: payload === undefined ? undefined : JSON.stringify(payload),
      });
      assertError(res, 400, 'bad_request', message);
    }
    assert.deepEqual(agent.calls, []);
  });
});

test('POST /query: results (64-bit as strings), bad SQL 400 with its message, outage 503, bug 500', async () => {
  await withApi({ token: TOKEN }, async (app, agent) => {
    const q = (sql: string): Promise<LightMyRequestResponse> =>
      app.inject({ method: 'POST', url: '/api/v1/query', headers: AUTH, payload: { sql } });
    const ok = await q('SELECT iface, sum(bytes) AS bytes FROM flowgate.flows GROUP BY iface');
    assert.equal(ok.statusCode, 200);
    assert.deepEqual(ok.json(), {
      columns: [
        { name: 'iface', type: 'LowCardinality(String)' },
        { name: 'bytes', type: 'UInt64' },
      ],
      rows: [['eth0', '1234']],
    });
    assert.deepEqual(agent.calls, ['query SELECT iface, sum(bytes) AS bytes FROM flowgate.flows GROUP BY iface']);

    const chMessage = "Code: 62. DB::Exception: Syntax error: failed at position 8 ('FRM'). (SYNTAX_ERROR)";
    agent.queryImpl = async () => {
      throw new StoreError(chMessage, false, '62');
    };
    assertError(await q('SELECT FRM x'), 400, 'bad_query', chMessage);

    agent.queryImpl = async () => {
      throw new StoreError('connect ECONNREFUSED 127.0.0.1:8123', true);
    };
    assertError(await q('SELECT 1'), 503, 'store_unavailable', /ECONNREFUSED/);

    agent.queryImpl = async () => {
      throw new TypeError('cannot read properties of undefined');
    };
    assertError(await q('SELECT 1'), 500, 'internal', 'cannot read properties of undefined');
  });
});

test('the OpenAPI document lists every route, with bearer auth and body schemas', async () => {
  await withApi({ token: TOKEN }, async (app) => {
    const res = await app.inject({ method: 'GET', url: '/api/v1/openapi.json', headers: AUTH });
    assert.equal(res.statusCode, 200);
    const doc = res.json() as {
      openapi: string;
      info: { version: string };
      paths: Record<string, Record<string, { security?: unknown[]; requestBody?: unknown }>>;
      components: { securitySchemes: Record<string, unknown> };
    };
    assert.match(doc.openapi, /^3\./);
    assert.equal(doc.info.version, flowgateVersion());
    const routes = Object.entries(doc.paths)
      .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
      .sort();
    assert.deepEqual(routes, [
      'DELETE /api/v1/interfaces/{name}',
      'DELETE /api/v1/rules/{id}',
      'GET /api/v1/health',
      'GET /api/v1/interfaces',
      'GET /api/v1/rules',
      'GET /api/v1/rules/{id}',
      'GET /api/v1/status',
      'GET /metrics',
      'POST /api/v1/interfaces',
      'POST /api/v1/query',
      'POST /api/v1/rules',
      'PUT /api/v1/rules',
    ]);
    assert.deepEqual(doc.components.securitySchemes.bearerAuth, { type: 'http', scheme: 'bearer' });
    assert.deepEqual(doc.paths['/api/v1/health']?.get?.security, []);
    assert.match(JSON.stringify(doc.paths['/api/v1/query']?.post?.requestBody), /"sql"/);
    assert.match(JSON.stringify(doc.paths['/api/v1/interfaces']?.post?.requestBody), /"xdpMode"/);

    const ui = await app.inject({ method: 'GET', url: '/api/v1/docs', headers: AUTH });
    assert.ok(ui.statusCode === 200 || ui.statusCode === 302, `docs UI answers (${ui.statusCode})`);
  });
});

test('the docs UI, made on first request, answers behind auth like any route', async () => {
  await withApi({ token: TOKEN }, async (app) => {
    // Before any docs request, and concurrently: both build the docs instance once.
    const [html, json] = await Promise.all([
      app.inject({ method: 'GET', url: '/api/v1/docs/', headers: AUTH }),
      app.inject({ method: 'GET', url: '/api/v1/docs/json', headers: AUTH }),
    ]);
    assert.equal(html.statusCode, 200);
    assert.match(String(html.headers['content-type']), /^text\/html/);
    assert.match(html.body, /swagger-initializer\.js/);
    const doc = await app.inject({ method: 'GET', url: '/api/v1/openapi.json', headers: AUTH });
    assert.deepEqual(json.json(), doc.json(), '/docs/json is the OpenAPI document');

    const js = await app.inject({ method: 'GET', url: '/api/v1/docs/static/swagger-initializer.js', headers: AUTH });
    assert.equal(js.statusCode, 200);
    assert.match(String(js.headers['content-type']), /javascript/);
    const css = await app.inject({ method: 'HEAD', url: '/api/v1/docs/static/swagger-ui.css', headers: AUTH });
    assert.equal(css.statusCode, 200);
    assert.ok(Number(css.headers['content-length']) > 0, 'HEAD tells the length');
    const yaml = await app.inject({ method: 'GET', url: '/api/v1/docs/yaml', headers: AUTH });
    assert.match(yaml.body, /^openapi: 3\./m);

    assertError(await app.inject({ method: 'GET', url: '/api/v1/docs' }), 401, 'unauthorized');
    assertError(await app.inject({ method: 'GET', url: '/api/v1/docs/static/x.js' }), 401, 'unauthorized');
    assertError(
      await app.inject({ method: 'GET', url: '/api/v1/docs/static/nope.js', headers: AUTH }),
      404,
      'not_found',
      'no route GET /api/v1/docs/static/nope.js',
    );
    assertError(
      await app.inject({ method: 'POST', url: '/api/v1/docs', headers: AUTH }),
      404,
      'not_found',
      'no route POST /api/v1/docs',
    );
  });
});

test('GET /metrics serves every flowgate metric in Prometheus text format', async () => {
  const agent = new FakeAgent();
  const metrics = new Metrics();
  const app = await buildApi({ agent, metrics, token: TOKEN });
  try {
    metrics.setIfaceTotals('eth0', 'ingress', { packets: 10, bytes: 1500, malformed: { ipv4_trunc: 2 } });
    const res = await app.inject({ method: 'GET', url: '/metrics', headers: AUTH });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const names = [
      'flowgate_iface_packets_total',
      'flowgate_iface_bytes_total',
      'flowgate_iface_dropped_packets_total',
      'flowgate_iface_non_ip_packets_total',
      'flowgate_iface_malformed_packets_total',
      'flowgate_flows_drained_total',
      'flowgate_flows_evicted_total',
      'flowgate_flow_insert_failures_total',
      'flowgate_drain_duration_seconds',
      'flowgate_drains_total',
      'flowgate_spool_bytes',
      'flowgate_spool_batches',
      'flowgate_spool_dropped_flows_total',
      'flowgate_store_insert_duration_seconds',
      'flowgate_store_errors_total',
      'flowgate_store_rows_inserted_total',
      'flowgate_active_flow_slot_fill_ratio',
      'flowgate_rule_enforce_latency_seconds',
      'flowgate_rules',
    ];
    for (const name of names) assert.match(res.body, new RegExp(`^# TYPE ${name} `, 'm'), name);
    assert.match(res.body, /^flowgate_iface_packets_total\{iface="eth0",direction="ingress"\} 10$/m);
    assert.match(
      res.body,
      /^flowgate_iface_malformed_packets_total\{iface="eth0",direction="ingress",reason="ipv4_trunc"\} 2$/m,
    );
    assert.match(res.body, /^flowgate_drains_total\{trigger="interval"\} 0$/m);
    assert.match(res.body, /^process_cpu_user_seconds_total /m, 'default process metrics');
  } finally {
    await app.close();
  }
});

test('listenApi refuses non-loopback addresses without a token, and listens on loopback', async () => {
  await withApi({}, async (app) => {
    for (const listen of ['0.0.0.0:0', '[::]:0', ':0', '192.0.2.1:0', 'example.com:0', '[::ffff:10.0.0.1]:0']) {
      await assert.rejects(listenApi(app, listen), /refusing to listen on .*no token.*loopback/, listen);
    }
    await assert.rejects(listenApi(app, '127.0.0.1:0', TOKEN), /token differs/);
    const address = await listenApi(app, '127.0.0.1:0');
    assert.match(address, /^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${address}/api/v1/health`);
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { status: string }).status, 'ok');
  });
  await withApi({ token: TOKEN }, async (app) => {
    const address = await listenApi(app, '0.0.0.0:0', TOKEN);
    const port = Number(new URL(address).port);
    const res = await fetch(`http://127.0.0.1:${port}/api/v1/status`, { headers: AUTH });
    assert.equal(res.status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${port}/api/v1/status`)).status, 401);
  });
});

test('listen addresses: parsing and what counts as loopback', () => {
  assert.deepEqual(parseListen('127.0.0.1:7650'), { host: '127.0.0.1', port: 7650 });
  assert.deepEqual(parseListen('[::1]:80'), { host: '::1', port: 80 });
  assert.deepEqual(parseListen('localhost:0'), { host: 'localhost', port: 0 });
  for (const bad of ['7650', '127.0.0.1', '127.0.0.1:99999', '[nope]:1', '::1:80', '127.0.0.1:x']) {
    assert.throws(() => parseListen(bad), /listen address/, bad);
  }
  for (const h of [
    '127.0.0.1',
    '127.255.0.9',
    '::1',
    '0:0:0:0:0:0:0:1',
    '::ffff:127.0.0.1',
    'localhost',
    'LOCALHOST',
  ]) {
    assert.equal(isLoopbackHost(h), true, h);
  }
  for (const h of ['0.0.0.0', '::', '', '10.0.0.1', '128.0.0.1', '::2', 'example.com', 'localhost.evil.com']) {
    assert.equal(isLoopbackHost(h), false, h);
  }
});

test('rate limit: past the limit non-GET routes answer 429, reads go on', async () => {
  await withApi({ token: TOKEN, rateLimit: { max: 3, timeWindowMs: 60_000 } }, async (app) => {
    const q = (): Promise<LightMyRequestResponse> =>
      app.inject({ method: 'POST', url: '/api/v1/query', headers: AUTH, payload: { sql: 'SELECT 1' } });
    for (let i = 0; i < 3; i++) assert.equal((await q()).statusCode, 200);
    const limited = await q();
    assertError(limited, 429, 'rate_limited', /rate limit/i);
    assert.ok(limited.headers['retry-after'], 'retry-after header');
    const del = await app.inject({ method: 'DELETE', url: '/api/v1/interfaces/eth0', headers: AUTH });
    assertError(del, 429, 'rate_limited');
    for (let i = 0; i < 5; i++) {
      assert.equal((await app.inject({ method: 'GET', url: '/api/v1/status', headers: AUTH })).statusCode, 200);
    }
  });
});

test('bodies over the limit are 413', async () => {
  await withApi({ token: TOKEN, bodyLimit: 1024 }, async (app, agent) => {
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/query',
      headers: AUTH,
      payload: { sql: `SELECT '${'x'.repeat(2000)}'` },
    });
    assertError(res, 413, 'payload_too_large');
    assert.deepEqual(agent.calls, []);
  });
});
