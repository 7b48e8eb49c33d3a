/**
 * The rules routes against an in-memory RuleApi (test/lib/fake-rules.ts):
 * every validation error naming its field, 201/404/409, filters and pages
 * passed through, PUT all-or-nothing (one bad rule: 400 naming it, the set
 * unchanged), auth, the OpenAPI document, body limits (a million-rule PUT
 * passes, a >1 MiB POST does not), metrics.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import type { ApiOptions } from '../../control/api/server.js';
import { Metrics } from '../../control/metrics.js';
import type { RuleSpec } from '../../control/rules/rule.js';
import { RuleRequestError } from '../../control/rules/types.js';
import { FakeRules, FakeRulesAgent } from '../lib/fake-rules.js';
import { assertError, withTestApi } from '../lib/api.js';

const TOKEN = 'rules-test-token';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const NOW = '2025-01-02T03:04:05.000Z';

async function withApi(
  opts: Partial<ApiOptions>,
  fn: (app: FastifyInstance, rules: FakeRules, metrics: Metrics) => Promise<void>,
): Promise<void> {
  const agent = new FakeRulesAgent();
  await withTestApi({ agent, token: TOKEN, ...opts }, (app, metrics) => fn(app, agent.rules, metrics));
}

function post(app: FastifyInstance, payload: unknown): Promise<LightMyRequestResponse> {
  return app.inject({
    method: 'POST',
    url: '/api/v1/rules',
    headers: { ...AUTH, 'content-type': 'application/json' },
    payload: JSON.stringify(payload),
  });
}

function put(app: FastifyInstance, payload: unknown): Promise<LightMyRequestResponse> {
  return app.inject({
    method: 'PUT',
    url: '/api/v1/rules',
    headers: { ...AUTH, 'content-type': 'application/json' },
    payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });
}

/** GET /metrics (the gauge of rules is read at scrape time). */
async function scrape(app: FastifyInstance): Promise<string> {
  return (await get(app, '/metrics')).body;
}

function get(app: FastifyInstance, url: string): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'GET', url, headers: AUTH });
}

test('POST /rules adds a rule: 201 with the stored rule, warnings and a location', async () => {
  await withApi({}, async (app, rules, metrics) => {
    const res = await post(app, {
      action: 'drop',
      src: '198.51.100.7/24',
      protocol: 'TCP',
      dstPorts: 443,
      priority: 200,
      iface: 'eth0',
      ttlSeconds: 600,
      comment: 'scanner',
    });
    assert.equal(res.statusCode, 201, res.body);
    assert.equal(res.headers.location, '/api/v1/rules/1');
    // How long from the request's arrival to the kernel enforcing it, for clients and the bench.
    assert.match(String(res.headers['server-timing']), /^enforce;dur=\d+\.\d{3}$/);
    assert.deepEqual(res.json(), {
      rule: {
        id: 1,
        action: 'drop',
        src: '198.51.100.0/24',
        protocol: 'tcp',
        dstPorts: '443',
        priority: 200,
        iface: 'eth0',
        expiresAt: '2025-01-02T03:14:05.000Z',
        comment: 'scanner',
        createdAt: NOW,
        updatedAt: NOW,
      },
      warnings: ['src: 198.51.100.7/24 has host bits set; stored as 198.51.100.0/24'],
    });
    const second = await post(app, { action: 'allow', dst: '2001:db8::/32', protocol: 58, id: 10 });
    assert.equal(second.statusCode, 201);
    assert.deepEqual(second.json(), {
      rule: {
        id: 10,
        action: 'allow',
        dst: '2001:db8::/32',
        protocol: 'icmpv6',
        priority: 100,
        createdAt: NOW,
        updatedAt: NOW,
      },
      warnings: [],
    });
    assert.equal(rules.rules.size, 2);

    // Request-to-enforcement is observed, and the rule count follows.
    const text = await metrics.render();
    assert.match(text, /^flowgate_rule_enforce_latency_seconds_count 2$/m);
    assert.match(text, /^flowgate_rule_enforce_latency_seconds_bucket\{le="0\.0001"\} \d+$/m);
    assert.match(await scrape(app), /^flowgate_rules 2$/m);
  });
});

test('POST /rules: every invalid rule is a 400 naming the field, and nothing is added', async () => {
  await withApi({}, async (app, rules) => {
    const cases: Array<[unknown, string | RegExp]> = [
      // the schema
      [{}, 'body/action is required'],
      [{ action: 'reject' }, 'body/action must be one of drop, allow'],
      [{ action: 1 }, 'body/action must be string'],
      [{ action: 'drop', src: 10 }, 'body/src must be string'],
      [{ action: 'drop', src: '' }, 'body/src must NOT have fewer than 1 characters'],
      [{ action: 'drop', dst: 'x'.repeat(65) }, 'body/dst must NOT have more than 64 characters'],
      [{ action: 'drop', protocol: true }, 'body/protocol must be string,integer'],
      [{ action: 'drop', protocol: 256 }, 'body/protocol must be <= 255'],
      [{ action: 'drop', protocol: 'tcp', dstPorts: 70000 }, 'body/dstPorts must be <= 65535'],
      [{ action: 'drop', protocol: 'tcp', srcPorts: 1.5 }, 'body/srcPorts must be string,integer'],
      [{ action: 'drop', priority: 1_000_001 }, 'body/priority must be <= 1000000'],
      [{ action: 'drop', priority: -1 }, 'body/priority must be >= 0'],
      [{ action: 'drop', priority: 2.5 }, 'body/priority must be integer'],
      [{ action: 'drop', priority: '5' }, 'body/priority must be integer'],
      [{ action: 'drop', iface: 'eth/0' }, /^body\/iface must be a network interface name/],
      [{ action: 'drop', iface: 'x'.repeat(16) }, 'body/iface must NOT have more than 15 characters'],
      [{ action: 'drop', expiresAt: 'tomorrow' }, /^body\/expiresAt must be an ISO-8601 date-time with a time zone/],
      [{ action: 'drop', expiresAt: '2030-01-01T00:00:00' }, /^body\/expiresAt must be an ISO-8601 date-time/],
      [{ action: 'drop', ttlSeconds: 0 }, 'body/ttlSeconds must be >= 1'],
      [{ action: 'drop', ttlSeconds: '60' }, 'body/ttlSeconds must be integer'],
      [{ action: 'drop', comment: 'x'.repeat(1025) }, 'body/comment must NOT have more than 1024 characters'],
      [{ action: 'drop', id: 0 }, 'body/id must be >= 1'],
      [{ action: 'drop', id: 2 ** 32 }, 'body/id must be <= 4294967295'],
      [{ action: 'drop', scr: '192.0.2.0/24' }, 'body/scr is not allowed'],
      [{ action: 'drop', createdAt: NOW }, 'body/createdAt is not allowed'],
      [[{ action: 'drop' }], 'body must be object'],
      // the rule model (the service's RuleRequestError)
      [{ action: 'drop', src: '10.0.0.0/33' }, /^body\/src: "10\.0\.0\.0\/33" /],
      [{ action: 'drop', src: 'not-an-ip' }, /^body\/src: .*not-an-ip/],
      [{ action: 'drop', dst: '2001:db8::/129' }, /^body\/dst: .*2001:db8::\/129/],
      [{ action: 'drop', src: '192.0.2.0/24', dst: '2001:db8::/32' }, 'body/dst: is IPv6 but src is IPv4'],
      [{ action: 'drop', dstPorts: 80 }, 'body/dstPorts: needs protocol tcp, udp or sctp'],
      [{ action: 'drop', protocol: 'icmp', srcPorts: '80' }, 'body/srcPorts: needs protocol tcp, udp or sctp'],
      [
        { action: 'drop', protocol: 'udp', dstPorts: '2000-1000' },
        'body/dstPorts: "2000-1000" is an empty range (start after end)',
      ],
      [{ action: 'drop', protocol: 'udp', dstPorts: '80-90000' }, 'body/dstPorts: "80-90000" is beyond port 65535'],
      [{ action: 'drop', protocol: 'tcp', dstPorts: 'http' }, /^body\/dstPorts: "http" is not a port/],
      [{ action: 'drop', protocol: 'tcpp' }, /^body\/protocol: "tcpp" is not one of icmp, tcp, udp/],
      [{ action: 'drop', protocol: '300' }, 'body/protocol: 300 is not an IP protocol number (0-255)'],
      [
        { action: 'drop', expiresAt: '2030-01-01T00:00:00Z', ttlSeconds: 60 },
        'body/ttlSeconds: give expiresAt or ttlSeconds, not both',
      ],
      [{ action: 'drop', expiresAt: '2030-13-01T00:00:00Z' }, 'body/expiresAt: must be an ISO-8601 date-time'],
    ];
    for (const [payload, message] of cases) {
      assertError(await post(app, payload), 400, 'bad_request', message);
    }
    assert.equal(rules.rules.size, 0, 'nothing was added');
  });
});

test('POST /rules with a taken id is 409; a >1 MiB body is 413 before the service sees it', async () => {
  await withApi({}, async (app, rules) => {
    assert.equal((await post(app, { action: 'drop', src: '192.0.2.0/24', id: 7 })).statusCode, 201);
    assertError(await post(app, { action: 'allow', id: 7 }), 409, 'conflict', 'body/id: rule 7 already exists');
    const calls = rules.calls.length;
    assertError(await post(app, { action: 'drop', comment: 'x'.repeat(1024 * 1024) }), 413, 'payload_too_large');
    assert.equal(rules.calls.length, calls, 'the service was not called');
  });
});

test('GET /rules/:id answers the rule with its counters, or 404', async () => {
  await withApi({}, async (app, rules) => {
    await post(app, { action: 'drop', src: '192.0.2.0/24', comment: 'x' });
    rules.stats.set(1, { packets: 12, bytes: 3456 });
    const res = await get(app, '/api/v1/rules/1');
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), {
      id: 1,
      action: 'drop',
      src: '192.0.2.0/24',
      priority: 100,
      comment: 'x',
      createdAt: NOW,
      updatedAt: NOW,
      matchedPackets: 12,
      matchedBytes: 3456,
    });
    assertError(await get(app, '/api/v1/rules/2'), 404, 'not_found', 'rule 2 does not exist');
    assertError(await get(app, '/api/v1/rules/abc'), 400, 'bad_request', 'params/id must be integer');
    assertError(await get(app, '/api/v1/rules/0'), 400, 'bad_request', 'params/id must be >= 1');
  });
});

test('DELETE /rules/:id answers the removed rule, then 404', async () => {
  await withApi({}, async (app, rules) => {
    await post(app, { action: 'drop', src: '192.0.2.0/24' });
    await post(app, { action: 'drop', src: '198.51.100.0/24' });
    const del = (id: string): Promise<LightMyRequestResponse> =>
      app.inject({ method: 'DELETE', url: `/api/v1/rules/${id}`, headers: AUTH });
    const res = await del('1');
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), {
      rule: { id: 1, action: 'drop', src: '192.0.2.0/24', priority: 100, createdAt: NOW, updatedAt: NOW },
    });
    assert.deepEqual([...rules.rules.keys()], [2]);
    assertError(await del('1'), 404, 'not_found', 'rule 1 does not exist');
    assertError(await del('x'), 400, 'bad_request', 'params/id must be integer');
    assert.match(await scrape(app), /^flowgate_rules 1$/m);
    // A rule that goes away without a request (it expired) is gone from the next scrape.
    rules.rules.clear();
    assert.match(await scrape(app), /^flowgate_rules 0$/m);
  });
});

test('GET /rules passes filters and pages through, and checks them', async () => {
  await withApi({}, async (app, rules) => {
    await put(app, {
      rules: [
        { action: 'drop', src: '10.0.0.0/8', comment: 'Spamhaus SBL1' },
        { action: 'allow', src: '10.1.0.0/16' },
        { action: 'drop', dst: '2001:db8::/32', comment: 'spamhaus SBL2' },
        { action: 'drop', src: '192.0.2.0/24' },
      ],
    });
    const page = await get(app, '/api/v1/rules');
    assert.equal(page.statusCode, 200);
    const body = page.json() as { rules: Array<{ id: number }>; total: number; offset: number; limit: number };
    assert.deepEqual(
      body.rules.map((r) => r.id),
      [1, 2, 3, 4],
    );
    assert.deepEqual(
      { total: body.total, offset: body.offset, limit: body.limit },
      { total: 4, offset: 0, limit: 100 },
    );
    assert.deepEqual(rules.calls.at(-1), { op: 'list', arg: { limit: 100, offset: 0 } });

    const filtered = await get(app, '/api/v1/rules?action=drop&prefix=10.2.0.0/16&comment=SPAMHAUS&limit=1&offset=0');
    assert.equal(filtered.statusCode, 200);
    assert.deepEqual(rules.calls.at(-1), {
      op: 'list',
      arg: { action: 'drop', prefix: '10.2.0.0/16', comment: 'SPAMHAUS', limit: 1, offset: 0 },
    });
    const f = filtered.json() as { rules: Array<{ id: number }>; total: number };
    assert.deepEqual(
      f.rules.map((r) => r.id),
      [1],
    );
    assert.equal(f.total, 1);

    const second = (await get(app, '/api/v1/rules?limit=2&offset=2').then((r) => r.json())) as {
      rules: Array<{ id: number }>;
      total: number;
    };
    assert.deepEqual(
      second.rules.map((r) => r.id),
      [3, 4],
    );
    assert.equal(second.total, 4);

    const bad: Array<[string, string | RegExp]> = [
      ['action=reject', 'querystring/action must be one of drop, allow'],
      ['limit=0', 'querystring/limit must be >= 1'],
      ['limit=10001', 'querystring/limit must be <= 10000'],
      ['limit=ten', 'querystring/limit must be integer'],
      ['offset=-1', 'querystring/offset must be >= 0'],
      ['prefix=10.0.0.0/40', /^querystring\/prefix: .*10\.0\.0\.0\/40/],
      ['prefix=banana', /^querystring\/prefix: .*banana/],
      ['sort=id', 'querystring/sort is not allowed'],
    ];
    const before = rules.calls.length;
    for (const [query, message] of bad) {
      assertError(await get(app, `/api/v1/rules?${query}`), 400, 'bad_request', message);
    }
    assert.equal(rules.calls.length, before, 'bad filters never reach the service');
  });
});

test('PUT /rules replaces the set; one bad rule is a 400 naming it and the set is unchanged', async () => {
  await withApi({}, async (app, rules) => {
    await post(app, { action: 'drop', src: '203.0.113.0/24', id: 5 });
    const before = [...rules.rules.values()];

    const ok = await put(app, {
      rules: [
        { action: 'drop', src: '10.1.2.3/8', comment: 'SBL1' },
        { id: 5, action: 'allow', src: '203.0.113.0/24' },
        { action: 'drop', dst: '2001:db8::1/32' },
      ],
    });
    assert.equal(ok.statusCode, 200, ok.body);
    assert.deepEqual(ok.json(), {
      count: 3,
      warnings: [
        'rules/0/src: 10.1.2.3/8 has host bits set; stored as 10.0.0.0/8',
        'rules/2/dst: 2001:db8::1/32 has host bits set; stored as 2001:db8::/32',
      ],
      warningCount: 2,
    });
    assert.deepEqual(
      [...rules.rules.keys()].sort((a, b) => a - b),
      [5, 6, 7],
    );
    assert.equal(rules.rules.get(5)?.action, 'allow');
    assert.equal(rules.rules.get(5)?.createdAt, before[0]?.createdAt, 'a kept id keeps its creation time');
    assert.match(await scrape(app), /^flowgate_rules 3$/m);

    const after = new Map(rules.rules);
    const cases: Array<[unknown, string | RegExp]> = [
      [{}, 'body/rules is required'],
      [{ rules: {} }, 'body/rules must be array'],
      [{ rules: [], extra: 1 }, 'body/extra is not allowed'],
      [{ rules: [{ action: 'drop' }, 'x'] }, 'body/rules/1 must be object'],
      [{ rules: [{ action: 'drop' }, { action: 'drop', scr: '10.0.0.0/8' }] }, 'body/rules/1/scr is not allowed'],
      [{ rules: [{ action: 'drop' }, {}, { action: 'drop' }] }, 'body/rules/1/action is required'],
      [{ rules: [{ action: 'drop', priority: 1e7 }] }, 'body/rules/0/priority must be <= 1000000'],
      [
        {
          rules: [
            { action: 'drop', src: '10.0.0.0/8' },
            { action: 'drop', src: '10.1.0.0/16' },
            { action: 'drop', protocol: 'tcp', dstPorts: '90-80' },
          ],
        },
        'body/rules/2/dstPorts: "90-80" is an empty range (start after end)',
      ],
      [
        { rules: [{ action: 'drop', src: '192.0.2.0/24', dst: '2001:db8::/32' }] },
        'body/rules/0/dst: is IPv6 but src is IPv4',
      ],
      [
        {
          rules: [
            { action: 'drop', src: '10.0.0.0/8' },
            { action: 'drop', src: '1.2.3' },
          ],
        },
        /^body\/rules\/1\/src: /,
      ],
    ];
    for (const [payload, message] of cases) assertError(await put(app, payload), 400, 'bad_request', message);
    assert.deepEqual(rules.rules, after, 'the set is unchanged');

    // An empty list is a valid (empty) set.
    const empty = await put(app, { rules: [] });
    assert.deepEqual(empty.json(), { count: 0, warnings: [], warningCount: 0 });
    assert.equal(rules.rules.size, 0);
  });
});

test('PUT /rules takes a million rules in one body; more is a 400; the large limit is its own', async () => {
  await withApi({}, async (app, rules) => {
    // The route is under test, not the fake: count what arrives.
    let got: readonly RuleSpec[] = [];
    rules.replace = async (specs) => {
      got = specs;
      return { count: specs.length, warnings: [], warningCount: 0 };
    };
    const million: RuleSpec[] = [];
    for (let i = 0; i < 1_000_000; i++) {
      million.push({ action: 'drop', src: `${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}.0/24`, comment: 'SBL1' });
    }
    const body = JSON.stringify({ rules: million });
    assert.ok(body.length > 50 * 1024 * 1024, 'far over the 1 MiB default limit');
    const res = await put(app, body);
    assert.equal(res.statusCode, 200, res.body.slice(0, 200));
    assert.equal((res.json() as { count: number }).count, 1_000_000);
    assert.equal(got.length, 1_000_000);
    assert.deepEqual(got[999_999], million[999_999]);

    const tooMany = `{"rules":[${'{},'.repeat(1_000_000)}{}]}`;
    assertError(await put(app, tooMany), 400, 'bad_request', 'body/rules must NOT have more than 1000000 items');
  });
  await withApi({ largeBodyLimit: 64 * 1024 }, async (app) => {
    const rules = Array.from({ length: 3000 }, (_, i) => ({ action: 'drop', src: `10.${i >> 8}.${i & 255}.0/24` }));
    assertError(await put(app, { rules }), 413, 'payload_too_large');
  });
});

test('service failures: RuleRequestError keeps its status and field, anything else is a 500 without a stack', async () => {
  await withApi({}, async (app, rules) => {
    rules.failNext = new RuleRequestError(400, 'rules', 'more prefixes than the kernel tables hold (1100000)');
    assertError(
      await put(app, { rules: [{ action: 'drop' }] }),
      400,
      'bad_request',
      'body/rules: more prefixes than the kernel tables hold (1100000)',
    );
    rules.failNext = new RuleRequestError(400, undefined, 'the rule set is being replaced; try again');
    assertError(await post(app, { action: 'drop' }), 400, 'bad_request', 'the rule set is being replaced; try again');
    rules.failNext = new RuleRequestError(404, undefined, 'rule 9 does not exist');
    assertError(
      await app.inject({ method: 'DELETE', url: '/api/v1/rules/9', headers: AUTH }),
      404,
      'not_found',
      'rule 9 does not exist',
    );
    rules.failNext = new RuleRequestError(409, 'rules/3/id', 'id 4 is taken twice');
    assertError(
      await put(app, { rules: [{ action: 'drop' }] }),
      409,
      'conflict',
      'body/rules/3/id: id 4 is taken twice',
    );
    rules.failNext = new Error('bpf_map_update_batch: Cannot allocate memory');
    assertError(await post(app, { action: 'drop' }), 500, 'internal', 'bpf_map_update_batch: Cannot allocate memory');
    assert.equal(rules.rules.size, 0);
  });
});

test('every rules route needs the token; mutations are rate limited, reads are not', async () => {
  await withApi({ rateLimit: { max: 2, timeWindowMs: 60_000 } }, async (app, rules) => {
    rules.calls.length = 0;
    const routes: InjectOptions[] = [
      { method: 'GET', url: '/api/v1/rules' },
      { method: 'GET', url: '/api/v1/rules/1' },
      { method: 'POST', url: '/api/v1/rules', payload: { action: 'drop' } },
      { method: 'PUT', url: '/api/v1/rules', payload: { rules: [] } },
      { method: 'DELETE', url: '/api/v1/rules/1' },
    ];
    for (const route of routes) {
      for (const headers of [{}, { authorization: 'Bearer wrong' }]) {
        assertError(await app.inject({ ...route, headers }), 401, 'unauthorized', /bearer token/);
      }
    }
    assert.deepEqual(rules.calls, [], 'the service saw no unauthenticated call');

    assert.equal((await post(app, { action: 'drop', src: '10.0.0.0/8' })).statusCode, 201);
    assert.equal((await post(app, { action: 'drop', src: '10.1.0.0/16' })).statusCode, 201);
    assertError(await post(app, { action: 'drop' }), 429, 'rate_limited');
    assertError(await put(app, { rules: [] }), 429, 'rate_limited');
    for (let i = 0; i < 5; i++) assert.equal((await get(app, '/api/v1/rules')).statusCode, 200);
    assert.equal(rules.rules.size, 2);
  });
});

test('the OpenAPI document lists the rules routes with their schemas', async () => {
  await withApi({}, async (app) => {
    const res = await get(app, '/api/v1/openapi.json');
    assert.equal(res.statusCode, 200);
    interface Op {
      parameters?: Array<{ name: string; in: string; schema: Record<string, unknown> }>;
      requestBody?: { content: Record<string, { schema: Record<string, unknown> }> };
      responses: Record<string, { content?: Record<string, { schema: Record<string, unknown> }> }>;
    }
    const doc = res.json() as { paths: Record<string, Record<string, Op>> };
    const rulesPath = doc.paths['/api/v1/rules'];
    const idPath = doc.paths['/api/v1/rules/{id}'];
    assert.deepEqual(Object.keys(rulesPath ?? {}).sort(), ['get', 'post', 'put']);
    assert.deepEqual(Object.keys(idPath ?? {}).sort(), ['delete', 'get']);

    const json = (op: Op | undefined): Record<string, unknown> | undefined =>
      op?.requestBody?.content['application/json']?.schema;
    const postBody = json(rulesPath?.post) as {
      additionalProperties: boolean;
      required: string[];
      properties: Record<string, Record<string, unknown>>;
    };
    assert.equal(postBody.additionalProperties, false);
    assert.deepEqual(postBody.required, ['action']);
    assert.deepEqual(
      Object.keys(postBody.properties).sort(),
      [
        'action',
        'comment',
        'dst',
        'dstPorts',
        'expiresAt',
        'id',
        'iface',
        'priority',
        'protocol',
        'src',
        'srcPorts',
        'ttlSeconds',
      ].sort(),
    );
    assert.deepEqual(postBody.properties.action?.enum, ['drop', 'allow']);
    // OpenAPI 3.0 has no type arrays: string-or-integer is an anyOf.
    assert.deepEqual(
      (postBody.properties.protocol?.anyOf as Array<{ type: string }>).map((s) => s.type),
      ['string', 'integer'],
    );
    assert.equal(postBody.properties.comment?.maxLength, 1024);
    assert.equal(postBody.properties.priority?.maximum, 1_000_000);

    // PUT documents the whole item schema, and the million-rule bound.
    const putBody = json(rulesPath?.put) as {
      properties: { rules: { maxItems: number; items: { additionalProperties: boolean; properties: object } } };
    };
    assert.equal(putBody.properties.rules.maxItems, 1_000_000);
    assert.equal(putBody.properties.rules.items.additionalProperties, false);
    assert.deepEqual(Object.keys(putBody.properties.rules.items.properties), Object.keys(postBody.properties));

    const params = (rulesPath?.get?.parameters ?? []).map((p) => `${p.in}:${p.name}`).sort();
    assert.deepEqual(params, ['query:action', 'query:comment', 'query:limit', 'query:offset', 'query:prefix']);
    const limit = rulesPath?.get?.parameters?.find((p) => p.name === 'limit');
    assert.deepEqual({ max: limit?.schema.maximum, def: limit?.schema.default }, { max: 10_000, def: 100 });
    assert.deepEqual(
      (idPath?.get?.parameters ?? []).map((p) => `${p.in}:${p.name}`),
      ['path:id'],
    );

    const schemaOf = (op: Op | undefined, status: string): string =>
      JSON.stringify(op?.responses[status]?.content?.['application/json']?.schema);
    assert.match(schemaOf(idPath?.get, '200'), /"matchedPackets"/);
    assert.match(schemaOf(idPath?.get, '200'), /"createdAt"/);
    assert.match(schemaOf(rulesPath?.get, '200'), /"total"/);
    assert.match(schemaOf(rulesPath?.post, '201'), /"warnings"/);
    assert.match(schemaOf(rulesPath?.put, '200'), /"warningCount"/);
    assert.match(schemaOf(idPath?.delete, '200'), /"rule"/);
    for (const [op, code] of [
      [rulesPath?.post, '400'],
      [rulesPath?.put, '413'],
      [idPath?.get, '404'],
      [rulesPath?.post, '409'],
    ] as const) {
      assert.match(schemaOf(op, code), /"error"/, code);
    }
  });
});
