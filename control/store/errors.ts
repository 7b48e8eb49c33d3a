/**
 * Every error out of the store is a StoreError, and `retryable` says whether
 * trying the same thing later can work: the store is down, unreachable, slow
 * or overloaded (retry with backoff) — or the request itself is wrong (bad
 * SQL, a refused write, a limit hit, bad credentials: retrying cannot help).
 */
import { StoreError } from './types.js';

/** Socket-level failures: the server is down, restarting or unreachable. */
const RETRYABLE_SYSCALL = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND', // DNS can be what is down; a typo'd host fails the same way, and retrying it costs nothing
  'UND_ERR_SOCKET',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/**
 * ClickHouse error codes that describe the server's state, not the request:
 * overload, shutdown, lost connections inside a cluster, a replica that is
 * read-only for the moment, an insert whose fate is unknown (its token makes
 * the retry safe).
 */
const RETRYABLE_CLICKHOUSE = new Set([
  '3', // UNEXPECTED_END_OF_FILE: a body cut off in transit
  '202', // TOO_MANY_SIMULTANEOUS_QUERIES
  '203', // NO_FREE_CONNECTION
  '209', // SOCKET_TIMEOUT
  '210', // NETWORK_ERROR
  '236', // ABORTED
  '241', // MEMORY_LIMIT_EXCEEDED (server-wide pressure)
  '242', // TABLE_IS_READ_ONLY
  '252', // TOO_MANY_PARTS
  '279', // ALL_CONNECTION_TRIES_FAILED
  '285', // TOO_FEW_LIVE_REPLICAS
  '319', // UNKNOWN_STATUS_OF_INSERT
  '394', // QUERY_WAS_CANCELLED (server shutting down)
  '425', // SYSTEM_ERROR
  '439', // CANNOT_SCHEDULE_TASK (thread pool exhausted)
  '999', // KEEPER_EXCEPTION
  '1001', // STD_EXCEPTION: the server failed inside, not the request
  '1002', // UNKNOWN_EXCEPTION: likewise
]);

/**
 * The ClickHouse error code of an exception ClickHouse raised. Duck-typed:
 * @clickhouse/client bundles its own ClickHouseError class and the chDB
 * connection throws client-common's, so instanceof would miss one of them.
 */
function clickhouseCode(err: unknown, message: string): string | undefined {
  if (err && typeof err === 'object') {
    const { code, type } = err as { code?: unknown; type?: unknown };
    if (typeof code === 'string' && /^\d+$/.test(code) && typeof type === 'string') return code;
  }
  return /\bCode: (\d+)\. DB::Exception\b/.exec(message)?.[1];
}

/** Certificate and TLS failures: configuration (a CA to trust, a hostname), which waiting does not fix. */
function tlsCode(err: unknown): string | undefined {
  const code = err && typeof err === 'object' ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /CERT|TLS|SSL|SIGNATURE|ISSUER/.test(code) ? code : undefined;
}

function syscallCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && typeof e === 'object' && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && RETRYABLE_SYSCALL.has(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Classify anything thrown by @clickhouse/client (HTTP or chDB connection).
 * `server` says the error came from the HTTP path, where an answer that is
 * not a ClickHouse exception is a proxy or load balancer speaking (a 502/503
 * page): retryable. The embedded engine has no such middlemen.
 */
export function toStoreError(err: unknown, server = false): StoreError {
  if (err instanceof StoreError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const chCode = clickhouseCode(err, message);
  if (chCode !== undefined) {
    // Keep ClickHouse's own words: the API shows them to whoever wrote the SQL.
    return withCause(new StoreError(message.trim(), RETRYABLE_CLICKHOUSE.has(chCode), chCode), err);
  }
  const tls = tlsCode(err);
  if (tls) return withCause(new StoreError(`ClickHouse TLS: ${tls}: ${message}`, false), err);
  const code = syscallCode(err);
  if (code) return withCause(new StoreError(`ClickHouse unreachable: ${code}: ${message}`, true), err);
  // clickhouse-js's own request timeout, and a socket dropped mid-response.
  if (/^Timeout error\.|socket hang up|ECONNRESET|other side closed/i.test(message)) {
    return withCause(new StoreError(`ClickHouse unreachable: ${message}`, true), err);
  }
  if (server && err instanceof Error && !(err instanceof TypeError) && !(err instanceof RangeError)) {
    return withCause(new StoreError(`ClickHouse server answered with an error: ${message.slice(0, 500)}`, true), err);
  }
  return withCause(new StoreError(message, false), err);
}

function withCause(e: StoreError, cause: unknown): StoreError {
  Object.defineProperty(e, 'cause', { value: cause, enumerable: false });
  e.name = 'StoreError';
  return e;
}
