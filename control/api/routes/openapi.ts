/**
 * GET /api/v1/openapi.json: the OpenAPI 3 document @fastify/swagger builds
 * from the route schemas; GET /api/v1/docs…: the docs UI (@fastify/swagger-ui).
 * Both are made on first request (docs.ts).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Docs } from '../docs.js';

export function openapiRoutes(app: FastifyInstance, docs: Docs): void {
  app.get('/openapi.json', { schema: { hide: true } }, async () => docs.document());
  // Every path of the UI (/docs, /docs/, /docs/json, /docs/static/…) goes to the
  // router of the docs instance, which answers on the raw response; this
  // reply's onResponse hooks still run when that response ends.
  const ui = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const instance = await docs.ui();
    reply.hijack();
    instance.routing(request.raw, reply.raw);
  };
  app.get('/docs', { schema: { hide: true } }, ui);
  app.get('/docs/*', { schema: { hide: true } }, ui);
}
