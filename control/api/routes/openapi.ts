/** GET /api/v1/openapi.json: the OpenAPI 3 document @fastify/swagger builds from the route schemas. */
import type { FastifyInstance } from 'fastify';

export function openapiRoutes(app: FastifyInstance): void {
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
