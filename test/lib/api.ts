/**
 * Helpers for tests of the REST API (buildApi) by inject(): an app with its
 * own metrics, closed after the test, and the check of the {error, message}
 * body every error answers with.
 */
import assert from 'node:assert/strict';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildApi, type ApiOptions } from '../../control/api/server.js';
import { Metrics } from '../../control/metrics.js';

/**
 * Build the API with `opts` and new Metrics (no default metrics; options in
 * `opts` win), run `fn` on it, and close it.
 */
export async function withTestApi(
  opts: Partial<ApiOptions> & Pick<ApiOptions, 'agent'>,
  fn: (app: FastifyInstance, metrics: Metrics) => Promise<void>,
): Promise<void> {
  const metrics = new Metrics({ defaultMetrics: false });
  const app = await buildApi({ metrics, ...opts });
  try {
    await fn(app, metrics);
  } finally {
    await app.close();
  }
}

/**
 * The response is `status` with a JSON body of exactly {error, message}:
 * `error` as given, `message` a string with no stack trace in it, equal to
 * `message` (a string) or matching it (a RegExp) when one is given.
 */
export function assertError(
  res: LightMyRequestResponse,
  status: number,
  error: string,
  message?: RegExp | string,
): void {
  assert.equal(res.statusCode, status, `status of ${res.body}`);
  assert.match(String(res.headers['content-type']), /^application\/json/);
  const body = res.json() as Record<string, unknown>;
  assert.deepEqual(Object.keys(body).sort(), ['error', 'message'], res.body);
  assert.equal(body.error, error, res.body);
  assert.equal(typeof body.message, 'string');
  assert.ok(!/\n\s+at /.test(String(body.message)), 'no stack in the message');
  if (typeof message === 'string') assert.equal(body.message, message);
  else if (message) assert.match(String(body.message), message);
}
