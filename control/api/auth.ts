/**
 * Bearer-token auth. Every route requires the token when one is set, except
 * routes whose config says `public: true` (GET /api/v1/health): deny by
 * default, so a route added later is protected without doing anything.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { ApiError } from './errors.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Answer without the bearer token (health only). */
    public?: boolean;
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** True when `header` is `Bearer <token>` with the expected token (constant time). */
export function bearerMatches(header: string | undefined, expected: Buffer): boolean {
  if (typeof header !== 'string') return false;
  const m = /^Bearer +(\S+) *$/i.exec(header);
  // Compare digests (equal length) even when the header is malformed, so
  // timing does not tell a malformed header from a wrong token.
  const got = digest(m?.[1] ?? '');
  return timingSafeEqual(got, expected) && m !== null;
}

export function installAuth(app: FastifyInstance, token: string): void {
  const expected = digest(token);
  app.addHook('onRequest', async (request, reply) => {
    if (request.routeOptions.config?.public === true) return;
    if (bearerMatches(request.headers.authorization, expected)) return;
    void reply.header('www-authenticate', 'Bearer realm="flowgate"');
    throw new ApiError(401, 'unauthorized', 'a valid bearer token is required (Authorization: Bearer <token>)');
  });
}

/** The token's digest, to tell whether two tokens are the same without keeping either. */
export function tokenDigest(token: string): Buffer {
  return digest(token);
}
