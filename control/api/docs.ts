/**
 * The OpenAPI document (GET /api/v1/openapi.json) and the docs UI
 * (/api/v1/docs), made on first request.
 *
 * @fastify/swagger and @fastify/swagger-ui, with what they load (yaml,
 * @fastify/static, glob, …), cost the agent ~4 MB resident for pages that
 * are seldom opened; so the API only records its routes as they are added
 * (the onRoute hook, as @fastify/swagger itself does), and the first request
 * for either builds a second fastify instance, never listening, that holds
 * the two plugins and those routes (their schemas: no handler of it runs).
 * The document is that instance's; the docs routes of the API hand their
 * request to its router, which serves it as the plugin did in the API
 * itself — behind the API's auth and hooks, errors in the same shape.
 */
import type { SwaggerOptions } from '@fastify/swagger';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type RouteOptions } from 'fastify';
import { installErrorHandlers } from './errors.js';

/** What @fastify/swagger reads of a route. */
type DocRoute = Pick<RouteOptions, 'method' | 'url' | 'schema' | 'config'>;

export interface DocsOptions {
  /** Where the UI is served (the plugin's routePrefix). */
  routePrefix: string;
  /** info.version of the document. */
  version: string;
  logger?: FastifyBaseLogger;
}

export interface Docs {
  /** The OpenAPI 3 document (app.swagger() of @fastify/swagger). */
  document(): Promise<unknown>;
  /** The instance serving the docs UI routes (under routePrefix). */
  ui(): Promise<FastifyInstance>;
}

function openapiOptions(version: string): SwaggerOptions {
  return {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'flowgate',
        version,
        description:
          'flowgate agent API: rules, interfaces, flow queries, status. Errors are `{error, message}`. ' +
          'With a token configured, every route except GET /api/v1/health needs `Authorization: Bearer <token>`.',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearerAuth: [] }],
    },
  };
}

function notServed(): never {
  throw new Error('the docs instance serves only the docs UI');
}

async function build(routes: readonly DocRoute[], opts: DocsOptions): Promise<FastifyInstance> {
  const [{ default: swagger }, { default: swaggerUi }] = await Promise.all([
    import('@fastify/swagger'),
    import('@fastify/swagger-ui'),
  ]);
  const docs = Fastify({
    ...(opts.logger ? { loggerInstance: opts.logger } : { logger: false }),
    logController: new LogController({ disableRequestLogging: true }),
  }) as unknown as FastifyInstance;
  // The copied routes are never called: compiling their validators and
  // serializers (ajv, fast-json-stringify) would be work and memory for nothing.
  docs.setValidatorCompiler(() => () => true);
  docs.setSerializerCompiler(() => (data) => JSON.stringify(data));
  installErrorHandlers(docs);
  await docs.register(swagger, openapiOptions(opts.version));
  await docs.register(swaggerUi, { routePrefix: opts.routePrefix });
  for (const route of routes) docs.route({ ...route, handler: notServed });
  await docs.ready();
  return docs;
}

/**
 * Record the routes of `app` from now on (call it before any route is
 * added) and return the lazily built docs. The instance is closed with `app`.
 */
export function installDocs(app: FastifyInstance, opts: DocsOptions): Docs {
  const routes: DocRoute[] = [];
  app.addHook('onRoute', (route) => {
    // Hidden routes (openapi.json, the docs routes themselves) are not in the
    // document; nor are HEAD routes (@fastify/swagger leaves them out, and
    // fastify adds one to each GET route of the docs instance again).
    if (route.method === 'HEAD' || route.schema?.hide === true) return;
    routes.push({ method: route.method, url: route.url, schema: route.schema, config: route.config });
  });
  let built: Promise<FastifyInstance> | undefined;
  const ui = (): Promise<FastifyInstance> => {
    built ??= build(routes, opts).catch((err: unknown) => {
      built = undefined; // the next request tries again
      throw err;
    });
    return built;
  };
  app.addHook('onClose', async () => {
    const docs = await built?.catch(() => undefined);
    await docs?.close();
  });
  return {
    ui,
    document: async () => (await ui()).swagger(),
  };
}
