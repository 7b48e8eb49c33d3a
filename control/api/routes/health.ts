/** GET /api/v1/health: liveness, without the token. */
import type { FastifyInstance } from 'fastify';
import type { ApiContext } from '../context.js';

export function healthRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.get(
    '/health',
    {
      config: { public: true },
      schema: {
        summary: 'Liveness of the agent (no token needed)',
        tags: ['agent'],
        security: [],
        response: {
          200: {
            type: 'object',
            properties: { status: { type: 'string', enum: ['ok'] }, version: { type: 'string' } },
            required: ['status', 'version'],
          },
        },
      },
    },
    async () => ({ status: 'ok', version: ctx.version }),
  );
}
