/**
 * The CLI's client of a running agent's REST API (fetch, Node 20). Every
 * failure becomes a CliError with one line to print.
 */
import type { AgentStatus } from '../agent/types.js';
import type { QueryResult } from '../store/types.js';

export const DEFAULT_API = 'http://127.0.0.1:7650';
export const TOKEN_ENV = 'FLOWGATE_API_TOKEN';

/** An error the CLI prints as `flowgate: <message>` and exits with `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export interface ClientOptions {
  /** Base URL, e.g. http://127.0.0.1:7650. */
  api: string;
  token?: string;
  timeoutMs?: number;
}

function oneLine(s: string): string {
  return s.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}

/** Why fetch failed, from its cause (ECONNREFUSED…), in one line. */
function fetchFailure(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
    return `no answer within ${timeoutMs / 1000}s`;
  }
  const cause = err instanceof Error ? (err.cause as { code?: string; message?: string } | undefined) : undefined;
  if (cause?.message) return oneLine(cause.message);
  if (cause?.code) return cause.code;
  return oneLine(err instanceof Error ? err.message : String(err));
}

export class ApiClient {
  readonly api: string;
  private readonly token?: string;
  private readonly timeoutMs: number;

  constructor(opts: ClientOptions) {
    this.api = opts.api.replace(/\/+$/, '');
    this.token = opts.token || undefined;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const timeout = AbortSignal.timeout(this.timeoutMs);
    let res: Response;
    let text: string;
    try {
      res = await fetch(`${this.api}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      text = await res.text();
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new CliError(`cannot reach the agent at ${this.api}: ${fetchFailure(err, this.timeoutMs)}`);
    }
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const e = json as { error?: unknown; message?: unknown } | undefined;
      if (e && typeof e.message === 'string') {
        const code = typeof e.error === 'string' ? e.error : `HTTP ${res.status}`;
        const hint =
          res.status === 401 ? (this.token ? ` (check ${TOKEN_ENV})` : ` (set ${TOKEN_ENV} to the agent's token)`) : '';
        throw new CliError(`${code}: ${oneLine(e.message)}${hint}`);
      }
      throw new CliError(`the agent at ${this.api} answered HTTP ${res.status} ${res.statusText}`.trim());
    }
    if (json === undefined && text) {
      throw new CliError(`the agent at ${this.api} answered something that is not JSON (is --api the flowgate API?)`);
    }
    return json as T;
  }

  query(sql: string, signal?: AbortSignal): Promise<QueryResult> {
    return this.request<QueryResult>('POST', '/api/v1/query', { sql }, signal);
  }

  status(signal?: AbortSignal): Promise<AgentStatus> {
    return this.request<AgentStatus>('GET', '/api/v1/status', undefined, signal);
  }
}
