/** POST /api/v1/query {sql} → {columns, rows}: read-only SQL over the flow store. */
import type { FastifyInstance } from 'fastify';
import { StoreError } from '../../store/types.js';
import type { ApiContext } from '../context.js';
import { ApiError } from '../errors.js';
import { errorResponses } from '../schemas.js';

const resultSchema = {
  type: 'object',
  properties: {
    columns: {
      type: 'array',
      items: {
        type: 'object',
        properties: { name: { type: 'string' }, type: { type: 'string', description: 'ClickHouse type' } },
        required: ['name', 'type'],
      },
    },
    rows: {
      type: 'array',
      description: 'one array per row, values in column order; 64-bit integers as strings',
      items: { type: 'array', items: {} },
    },
  },
  required: ['columns', 'rows'],
} as const;

/** JSON has no bigint: 64-bit values travel as strings (as ClickHouse's JSON formats do). */
function jsonSafe(v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return v.some(needsFix) ? v.map(jsonSafe) : v;
  if (v !== null && typeof v === 'object' && !(v instanceof Date) && Object.values(v).some(needsFix)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonSafe(x)]));
  }
  return v;
}

function needsFix(v: unknown): boolean {
  if (typeof v === 'bigint') return true;
  if (Array.isArray(v)) return v.some(needsFix);
  if (v !== null && typeof v === 'object' && !(v instanceof Date)) return Object.values(v).some(needsFix);
  return false;
}

export function queryRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.post<{ Body: { sql: string } }>(
    '/query',
    {
      schema: {
        summary: 'Run read-only SQL over the flow store (database flowgate, table flows)',
        tags: ['flows'],
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['sql'],
          properties: { sql: { type: 'string', minLength: 1, description: 'one SELECT (read-only)' } },
        },
        response: { 200: resultSchema, ...errorResponses(400, 401, 413, 415, 429, 500, 503) },
      },
    },
    async (request) => {
      let result;
      try {
        result = await ctx.agent.query(request.body.sql);
      } catch (err) {
        if (err instanceof StoreError) {
          if (err.retryable)
            throw new ApiError(503, 'store_unavailable', `the flow store is unavailable: ${err.message}`);
          throw new ApiError(400, 'bad_query', err.message);
        }
        throw err;
      }
      return {
        columns: result.columns,
        rows: result.rows.map((row) => (row.some(needsFix) ? row.map(jsonSafe) : row)),
      };
    },
  );
}
