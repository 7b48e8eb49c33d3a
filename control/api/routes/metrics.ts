/** GET /metrics (at the root, beside /api/v1): Prometheus text format. */
import type { FastifyInstance } from 'fastify';
import type { ApiContext } from '../context.js';
import { errorResponses } from '../schemas.js';

export function metricsRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics (text exposition format)',
        tags: ['agent'],
        response: { 200: { type: 'string', description: 'Prometheus text format 0.0.4' }, ...errorResponses(401) },
      },
    },
    async (_request, reply) => {
      // Read at scrape time: rules also leave the set by expiring, with no request to count them.
      ctx.metrics.rules.set(ctx.agent.rules.size);
      const text = await ctx.metrics.render();
      return reply.type(ctx.metrics.contentType).send(text);
    },
  );
}
