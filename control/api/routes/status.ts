/** GET /api/v1/status: the agent's state (interfaces, drains, store). */
import type { FastifyInstance } from 'fastify';
import type { ApiContext } from '../context.js';
import { errorResponses, interfaceStatusSchema } from '../schemas.js';

const statusSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    version: { type: 'string' },
    host: { type: 'string' },
    startedAt: { type: 'string', format: 'date-time' },
    adopted: { type: 'boolean', description: 'the agent adopted pinned programs and maps of an earlier run' },
    drainIntervalMs: { type: 'number' },
    lastDrainAt: { type: 'string', format: 'date-time' },
    flowsDrained: { type: 'number' },
    flowsEvicted: { type: 'number' },
    interfaces: { type: 'array', items: interfaceStatusSchema },
    store: {
      type: 'object',
      additionalProperties: true,
      properties: {
        kind: { type: 'string', enum: ['embedded', 'server'] },
        location: { type: 'string' },
        healthy: { type: 'boolean' },
        lastError: { type: 'string' },
        spooledBatches: { type: 'number' },
        spooledBytes: { type: 'number' },
      },
    },
  },
} as const;

export function statusRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.get(
    '/status',
    {
      schema: {
        summary: 'Agent status: interfaces, modes, counters, drains and store state',
        tags: ['agent'],
        response: { 200: statusSchema, ...errorResponses(401) },
      },
    },
    async () => ctx.agent.status(),
  );
}
