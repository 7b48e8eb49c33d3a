/**
 * The REST API (DESIGN.md "Public contracts"): fastify under /api/v1, plus
 * GET /metrics at the root. Talks to the agent only through AgentApi.
 *
 *   const app = await buildApi({ agent, metrics, token, logger });
 *   const address = await listenApi(app, '127.0.0.1:7650', token);
 *   …
 *   await app.close();
 *
 * - Auth: with a token, every route needs `Authorization: Bearer <token>`
 *   except GET /api/v1/health (routes opt out with `config: { public: true }`).
 *   Without a token, listenApi() refuses any address but loopback.
 * - Errors: always `{error, message}` (errors.ts); schema violations are 400
 *   naming the field (`body/sql must be string`).
 * - Rate limit: every non-GET route (mutations and queries), per client IP.
 * - Bodies: `bodyLimit` (default 1 MiB); a route that needs more (PUT /rules)
 *   sets `bodyLimit: ctx.largeBodyLimit` in its route options.
 * - OpenAPI 3 at /api/v1/openapi.json, docs UI at /api/v1/docs (made on first request: docs.ts).
 * - TLS: `https: {cert, key}` (flowgate run --tls-cert/--tls-key) serves HTTPS.
 */
import { BlockList, isIP } from 'node:net';
import AjvCompiler from '@fastify/ajv-compiler';
import rateLimit from '@fastify/rate-limit';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyRequest,
  type FastifySchemaCompiler,
} from 'fastify';
import type { AgentApi } from '../agent/types.js';
import type { Metrics } from '../metrics.js';
import { startBulkAllocation } from '../util/young-generation.js';
import { installAuth, tokenDigest } from './auth.js';
import type { ApiContext } from './context.js';
import { installDocs } from './docs.js';
import { formatSchemaErrors, installErrorHandlers } from './errors.js';
import { healthRoutes } from './routes/health.js';
import { interfaceRoutes } from './routes/interfaces.js';
import { metricsRoutes } from './routes/metrics.js';
import { openapiRoutes } from './routes/openapi.js';
import { queryRoutes } from './routes/query.js';
import { ruleRoutes } from './routes/rules.js';
import { statusRoutes } from './routes/status.js';
import { flowgateVersion } from './version.js';

export const API_PREFIX = '/api/v1';
export const DEFAULT_LISTEN = '127.0.0.1:7650';
/** Default body limit of every route: 1 MiB. */
export const DEFAULT_BODY_LIMIT = 1024 * 1024;
/** Default limit for routes that opt into large bodies (ctx.largeBodyLimit): 256 MiB. */
export const DEFAULT_LARGE_BODY_LIMIT = 256 * 1024 * 1024;
/** Default rate limit of non-GET routes: 100 requests per second per client. */
export const DEFAULT_RATE_LIMIT = { max: 100, timeWindowMs: 1000 } as const;

export interface ApiOptions {
  agent: AgentApi;
  metrics: Metrics;
  /** Bearer token; unset or empty means no auth (then listenApi allows loopback only). */
  token?: string;
  /** A pino logger; without one the API logs nothing. */
  logger?: FastifyBaseLogger;
  /** Body limit of every route, bytes (default DEFAULT_BODY_LIMIT). */
  bodyLimit?: number;
  /** Body limit of routes that opt into large bodies (default DEFAULT_LARGE_BODY_LIMIT). */
  largeBodyLimit?: number;
  /** Per-client limit on non-GET requests; false turns it off (default DEFAULT_RATE_LIMIT). */
  rateLimit?: { max: number; timeWindowMs: number } | false;
  /** Reported by /health and the OpenAPI document (default: package.json's). */
  version?: string;
  /** Serve HTTPS with this PEM certificate (chain) and key; listenApi() then reports https://. */
  https?: { cert: string | Buffer; key: string | Buffer };
}

/** What buildApi() was built with, for listenApi() to check. */
const builtWith = new WeakMap<FastifyInstance, { tokenDigest?: Buffer; tls: boolean }>();

type CompileRequest = Parameters<FastifySchemaCompiler<unknown>>[0];
type Compile = (req: CompileRequest) => ReturnType<FastifySchemaCompiler<unknown>>;

/**
 * Bodies are validated strictly (no type coercion: `{"sql": 1}` is an error,
 * not "1"; unknown members are errors, not silently dropped); params and
 * query strings are text, so they are coerced to the schema's types.
 */
function validatorCompiler(): FastifySchemaCompiler<unknown> {
  // package.json names ajv@8 itself only so that npm installs it at the top
  // of node_modules: otherwise eslint's ajv@6 is there, and this compiler,
  // ajv-formats and fast-json-stringify (response serializers) each load a
  // copy of their own (~1.5 MB of heap).
  const factory = AjvCompiler();
  // allowUnionTypes: `type: ['string', 'integer']` (a rule's protocol and ports) is plain JSON
  // Schema, and @fastify/swagger turns it into an OpenAPI 3.0 anyOf; without it ajv warns on stderr.
  const common = {
    useDefaults: true,
    removeAdditional: false,
    allErrors: false,
    verbose: true,
    allowUnionTypes: true,
  } as const;
  // @fastify/ajv-compiler's typings describe the pool function's result as ajv's
  // compile(schema); at runtime it takes fastify's {schema, method, url, httpPart}.
  const body = factory({}, { customOptions: { ...common, coerceTypes: false } }) as unknown as Compile;
  const parts = factory({}, { customOptions: { ...common, coerceTypes: 'array' } }) as unknown as Compile;
  return (req) => (req.httpPart === 'body' ? body(req) : parts(req));
}

/**
 * A request body over this many bytes is a bulk job (PUT /rules with up to
 * a million rules: ~45 MB): from its parsing to its response the young
 * generation may grow (control/util/young-generation.ts).
 */
const BULK_BODY_BYTES = 8 * 2 ** 20;

function installBulkBodies(app: FastifyInstance): void {
  const bulk = new WeakMap<FastifyRequest, () => void>();
  const end = async (request: FastifyRequest): Promise<void> => {
    bulk.get(request)?.();
    bulk.delete(request);
  };
  app.addHook('preParsing', async (request) => {
    if (Number(request.headers['content-length']) > BULK_BODY_BYTES) bulk.set(request, startBulkAllocation());
  });
  app.addHook('onResponse', end);
  app.addHook('onRequestAbort', end);
}

export async function buildApi(opts: ApiOptions): Promise<FastifyInstance> {
  const token = opts.token ? opts.token : undefined;
  const version = opts.version ?? flowgateVersion();
  const app = Fastify({
    ...(opts.logger ? { loggerInstance: opts.logger } : { logger: false }),
    ...(opts.https ? { https: { cert: opts.https.cert, key: opts.https.key } } : {}),
    bodyLimit: opts.bodyLimit ?? DEFAULT_BODY_LIMIT,
    // Per-request logs at debug level only (the onResponse hook below).
    logController: new LogController({ disableRequestLogging: true }),
    schemaErrorFormatter: formatSchemaErrors,
    return503OnClosing: true,
  }) as unknown as FastifyInstance;
  builtWith.set(app, { tokenDigest: token === undefined ? undefined : tokenDigest(token), tls: !!opts.https });

  app.setValidatorCompiler(validatorCompiler());
  installErrorHandlers(app);
  app.addHook('onResponse', async (request, reply) => {
    request.log.debug(
      { method: request.method, url: request.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) },
      'request',
    );
  });
  if (token !== undefined) installAuth(app, token);
  installBulkBodies(app);

  // Before any route: the docs record the routes as they are added.
  const docs = installDocs(app, {
    routePrefix: `${API_PREFIX}/docs`,
    version,
    ...(opts.logger ? { logger: opts.logger } : {}),
  });

  const limit = opts.rateLimit === undefined ? DEFAULT_RATE_LIMIT : opts.rateLimit;
  if (limit !== false) {
    await app.register(rateLimit, {
      global: true,
      max: limit.max,
      timeWindow: limit.timeWindowMs,
      // Reads are cheap and idempotent; every other method (mutations, queries) is limited.
      allowList: (request) => request.method === 'GET' || request.method === 'HEAD' || request.method === 'OPTIONS',
    });
  }

  const ctx: ApiContext = {
    agent: opts.agent,
    metrics: opts.metrics,
    version,
    largeBodyLimit: opts.largeBodyLimit ?? DEFAULT_LARGE_BODY_LIMIT,
  };
  await app.register(
    async (api) => {
      healthRoutes(api, ctx);
      statusRoutes(api, ctx);
      interfaceRoutes(api, ctx);
      queryRoutes(api, ctx);
      ruleRoutes(api, ctx);
      openapiRoutes(api, docs);
    },
    { prefix: API_PREFIX },
  );
  metricsRoutes(app, ctx);
  await app.ready();
  return app;
}

/** `host:port`, `[v6]:port`; throws naming the value when it is not one. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(listen.trim());
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || host === undefined || !Number.isInteger(port) || port > 65535) {
    throw new Error(`listen address must be host:port (e.g. 127.0.0.1:7650 or [::1]:7650), got '${listen}'`);
  }
  if (m[1] !== undefined && isIP(m[1]) !== 6) throw new Error(`listen address: '${m[1]}' is not an IPv6 address`);
  return { host, port };
}

const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

/** 127.0.0.0/8, ::1 (also written long, or ::ffff:127.x.y.z), localhost. */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true;
  const family = isIP(host);
  return family !== 0 && loopback.check(host, family === 4 ? 'ipv4' : 'ipv6');
}

/**
 * Listen on `listen` (host:port). Without a token (the one buildApi() was
 * given) it refuses any address but loopback. `token`, when given, must be
 * the one buildApi() was built with. Resolves to the bound address
 * (http://host:port, or https:// when built with `https`; the real port
 * when `listen` asked for port 0).
 */
export async function listenApi(app: FastifyInstance, listen: string, token?: string): Promise<string> {
  const built = builtWith.get(app);
  if (!built) throw new Error('listenApi: the app was not made by buildApi()');
  if (token && (!built.tokenDigest || !tokenDigest(token).equals(built.tokenDigest))) {
    throw new Error('listenApi: the token differs from the one the API was built with');
  }
  const { host, port } = parseListen(listen);
  if (!built.tokenDigest && !isLoopbackHost(host)) {
    throw new Error(
      `refusing to listen on ${listen}: the API has no token, so it listens on loopback only ` +
        `(127.0.0.1, ::1 or localhost); set a token (--api-token-file) to listen on other addresses`,
    );
  }
  await app.listen({ host: host === '' ? '::' : host, port });
  const scheme = built.tls ? 'https' : 'http';
  const addr = app.server.address();
  if (addr && typeof addr === 'object') {
    const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return `${scheme}://${h}:${addr.port}`;
  }
  return `${scheme}://${listen}`;
}
