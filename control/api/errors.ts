/**
 * Every API error is `{error, message}` JSON: `error` a stable snake_case
 * code, `message` one human sentence that names the offending field or
 * resource. 5xx answers carry a message but never a stack.
 */
import type { FastifyError, FastifyInstance, FastifySchemaValidationError } from 'fastify';

export interface ErrorBody {
  error: string;
  message: string;
}

/** Throw from a route to answer `status` with `{error, message}`. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly error: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

const CODES: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  406: 'not_acceptable',
  408: 'request_timeout',
  409: 'conflict',
  411: 'length_required',
  413: 'payload_too_large',
  414: 'uri_too_long',
  415: 'unsupported_media_type',
  422: 'unprocessable',
  429: 'rate_limited',
  500: 'internal',
  501: 'not_implemented',
  503: 'unavailable',
  504: 'timeout',
};

export function errorCodeFor(status: number): string {
  return CODES[status] ?? (status >= 500 ? 'internal' : 'bad_request');
}

/** JSON Schema of an error body, for the OpenAPI document. */
export const errorSchema = {
  type: 'object',
  description: 'An error: a stable code and a message naming the field or resource.',
  properties: {
    error: { type: 'string', description: 'stable code, e.g. bad_request, unauthorized, not_found, bad_query' },
    message: { type: 'string' },
  },
  required: ['error', 'message'],
} as const;

/**
 * Ajv errors → one message naming the field, e.g. `body/sql must be string`,
 * `body/name is required`, `body/xdpMode must be one of auto, native, generic`,
 * `body/mode is not allowed`. Only the first error is reported (allErrors is
 * off: validating everything is a DoS vector).
 */
export function formatSchemaErrors(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const e = errors[0];
  if (!e) return new Error(`${dataVar} is invalid`);
  const path = `${dataVar}${e.instancePath ?? ''}`;
  const params = e.params as Record<string, unknown>;
  const parent = (e as { parentSchema?: { description?: unknown } }).parentSchema;
  let message: string;
  switch (e.keyword) {
    case 'required':
      message = `${path}/${String(params.missingProperty)} is required`;
      break;
    case 'additionalProperties':
      message = `${path}/${String(params.additionalProperty)} is not allowed`;
      break;
    case 'enum':
      message = `${path} must be one of ${(params.allowedValues as unknown[]).map(String).join(', ')}`;
      break;
    case 'const':
      message = `${path} must be ${JSON.stringify(params.allowedValue)}`;
      break;
    case 'pattern':
    case 'format':
      message =
        typeof parent?.description === 'string'
          ? `${path} must be ${parent.description}`
          : `${path} ${e.message ?? 'is invalid'}`;
      break;
    default:
      message = `${path} ${e.message ?? 'is invalid'}`;
  }
  return new Error(message);
}

/** The error and not-found handlers every response goes through. */
export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | ApiError, request, reply) => {
    let status =
      typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
    let code: string;
    let message = err.message || errorCodeFor(status);
    if ('validation' in err && err.validation) {
      status = 400;
      code = 'bad_request';
    } else if (err instanceof ApiError) {
      code = err.error;
    } else {
      code = errorCodeFor(status);
      if (status === 400 && (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err instanceof SyntaxError)) {
        message = 'body is not valid JSON';
      } else if (err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
        message = 'body must be object, got an empty body';
      }
    }
    if (status >= 500) request.log.error({ err }, 'request failed');
    else request.log.debug({ status, code, message }, 'request rejected');
    if (message.includes('\n')) message = message.replace(/\s*\n\s*/g, ' ');
    void reply
      .code(status)
      .type('application/json; charset=utf-8')
      .send({ error: code, message } satisfies ErrorBody);
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? request.url;
    void reply
      .code(404)
      .send({ error: 'not_found', message: `no route ${request.method} ${path}` } satisfies ErrorBody);
  });
}
