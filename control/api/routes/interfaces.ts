/**
 * Interfaces: GET /api/v1/interfaces, POST /api/v1/interfaces {name, xdpMode?},
 * DELETE /api/v1/interfaces/:name.
 */
import type { FastifyInstance } from 'fastify';
import type { XdpModeOption } from '../../agent/types.js';
import type { ApiContext } from '../context.js';
import { ApiError } from '../errors.js';
import { errorResponses, ifaceNameSchema, interfaceStatusSchema, xdpModeOptionSchema } from '../schemas.js';

interface AttachBody {
  name: string;
  xdpMode?: XdpModeOption;
}

/** An agent error → an ApiError naming `field` (the interface) where the cause is the caller's. */
export function agentError(err: unknown, field: string, notFoundStatus: 400 | 404): unknown {
  if (!(err instanceof Error)) return err;
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENODEV':
    case 'ENOENT':
    case 'ENXIO':
      return notFoundStatus === 404
        ? new ApiError(404, 'not_found', `${field}: ${err.message}`)
        : new ApiError(400, 'bad_request', `${field}: ${err.message}`);
    case 'EEXIST':
    case 'EBUSY':
      return new ApiError(409, 'conflict', `${field}: ${err.message}`);
    case 'EINVAL':
    case 'EOPNOTSUPP':
    case 'ENOTSUP':
      return new ApiError(400, 'bad_request', `${field}: ${err.message}`);
    default:
      return new ApiError(500, 'internal', err.message || 'the agent failed');
  }
}

export function interfaceRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.get(
    '/interfaces',
    {
      schema: {
        summary: 'Attached interfaces with their modes and counters',
        tags: ['interfaces'],
        response: { 200: { type: 'array', items: interfaceStatusSchema }, ...errorResponses(401) },
      },
    },
    async () => ctx.agent.interfaces(),
  );

  app.post<{ Body: AttachBody }>(
    '/interfaces',
    {
      schema: {
        summary: 'Attach a network interface (XDP ingress, and TC egress per the agent flags)',
        tags: ['interfaces'],
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['name'],
          properties: { name: ifaceNameSchema, xdpMode: xdpModeOptionSchema },
        },
        response: { 201: interfaceStatusSchema, ...errorResponses(400, 401, 409, 413, 415, 429, 500) },
      },
    },
    async (request, reply) => {
      const { name, xdpMode } = request.body;
      let iface;
      try {
        iface = await ctx.agent.attach(name, xdpMode);
      } catch (err) {
        throw agentError(err, 'body/name', 400);
      }
      void reply.code(201).header('location', `/api/v1/interfaces/${encodeURIComponent(iface.name)}`);
      return iface;
    },
  );

  app.delete<{ Params: { name: string } }>(
    '/interfaces/:name',
    {
      schema: {
        summary: 'Detach an interface',
        tags: ['interfaces'],
        params: { type: 'object', required: ['name'], properties: { name: ifaceNameSchema } },
        response: {
          204: { type: 'null', description: 'detached' },
          ...errorResponses(400, 401, 404, 429, 500),
        },
      },
    },
    async (request, reply) => {
      const { name } = request.params;
      let detached: boolean;
      try {
        detached = await ctx.agent.detach(name);
      } catch (err) {
        throw agentError(err, `interface ${name}`, 404);
      }
      if (!detached) throw new ApiError(404, 'not_found', `interface ${name} is not attached`);
      return reply.code(204).send();
    },
  );
}
