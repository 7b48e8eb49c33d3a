/**
 * The child process behind test/lib/clickhouse-http-server.ts: a ClickHouse
 * HTTP-interface endpoint (the subset @clickhouse/client 1.x uses) backed by the
 * embedded engine chdb. Run only by startClickHouseHttp(); configured by env:
 *
 *   FLOWGATE_CH_DATA_DIR       chdb data directory (one per process)
 *   FLOWGATE_CH_PORT           port on 127.0.0.1 (0 = any)
 *   FLOWGATE_CH_USER           the one user (default "default")
 *   FLOWGATE_CH_PASSWORD       its password (default "")
 *   FLOWGATE_CH_CONTROL_TOKEN  secret for the /__fault and /__requests control endpoints
 *
 * Prints one line `{"flowgateClickHouseReady":true,"port":N}` on stdout when it
 * listens, and exits when its stdin closes (the parent died) or on SIGTERM.
 *
 * Every request gets its own chdb Session on the shared data directory, so URL
 * settings (readonly, max_result_rows, …), `param_*` query parameters and
 * `database` apply to that request only, as on a real server. The whole result is
 * computed before the first byte is sent (like wait_end_of_query=1), so an error
 * is always an HTTP error status, never a 200 with an exception mid-body.
 */
import { randomUUID, timingSafeEqual } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { STATUS_CODES, createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';

import { Session } from 'chdb';

// ---- configuration ----------------------------------------------------------------

function requiredEnv(name: string): string {
  const v = process.env[name];
  if (v === undefined || v === '') {
    process.stderr.write(`clickhouse-http-child: ${name} is not set\n`);
    process.exit(2);
  }
  return v;
}

const DATA_DIR = requiredEnv('FLOWGATE_CH_DATA_DIR');
const CONTROL_TOKEN = Buffer.from(requiredEnv('FLOWGATE_CH_CONTROL_TOKEN'));
const USER = process.env.FLOWGATE_CH_USER || 'default';
const PASSWORD = process.env.FLOWGATE_CH_PASSWORD ?? '';
const PORT = Number(process.env.FLOWGATE_CH_PORT ?? '0');
const DISPLAY_NAME = 'flowgate-test-clickhouse';
const INFILE_DIR = join(DATA_DIR, 'http_infile_tmp');

// ---- faults -------------------------------------------------------------------------

interface Fault {
  /** Answer every request with this HTTP status (a plain-text body, as a proxy would). */
  status?: number;
  /** Hang this long (after reading the request) before answering; nothing runs if the client gave up. */
  delayMs?: number;
  /** Run the request, then hang this long before answering (the work is done even if the client gave up). */
  delayAfterMs?: number;
  /** The next N requests fail with HTTP 500 and a ClickHouse exception (code 1002), without running. */
  failNext?: number;
  /** The next N requests have their connection reset without an answer, without running. */
  resetNext?: number;
}

let fault: Fault = {};
let requestCount = 0;

function parseFault(v: unknown): Fault {
  if (v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new Error('fault must be an object or null');
  const f: Fault = {};
  const o = v as Record<string, unknown>;
  for (const [k, val] of Object.entries(o)) {
    if (val === undefined || val === null) continue;
    if (typeof val !== 'number' || !Number.isInteger(val) || val < 0) {
      throw new Error(`fault.${k} must be a non-negative integer`);
    }
    switch (k) {
      case 'status':
        if (val < 100 || val > 599) throw new Error('fault.status must be an HTTP status (100..599)');
        f.status = val;
        break;
      case 'delayMs':
      case 'delayAfterMs':
      case 'failNext':
      case 'resetNext':
        f[k] = val;
        break;
      default:
        throw new Error(`unknown fault field ${k}`);
    }
  }
  return f;
}

// ---- ClickHouse errors ----------------------------------------------------------------

/** A ClickHouse exception: rendered as `Code: N. DB::Exception: msg. (TYPE) (version …)`. */
class ChException extends Error {
  constructor(
    readonly code: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
  render(): string {
    return `Code: ${this.code}. DB::Exception: ${this.message}. (${this.type})`;
  }
}

/** src/Server/HTTP/exceptionCodeToHTTPStatus.cpp, keyed by error name. */
const STATUS_BY_ERROR_NAME: Record<string, number> = {};
function statusFor(names: string[], status: number): void {
  for (const n of names) STATUS_BY_ERROR_NAME[n] = status;
}
statusFor(['REQUIRED_PASSWORD'], 401);
statusFor(['UNKNOWN_USER', 'WRONG_PASSWORD', 'AUTHENTICATION_FAILED', 'SET_NON_GRANTED_ROLE', 'ACCESS_DENIED'], 403);
statusFor(
  [
    'BAD_ARGUMENTS',
    'CANNOT_COMPILE_REGEXP',
    'CANNOT_PARSE_TEXT',
    'CANNOT_PARSE_ESCAPE_SEQUENCE',
    'CANNOT_PARSE_QUOTED_STRING',
    'CANNOT_PARSE_DATE',
    'CANNOT_PARSE_DATETIME',
    'CANNOT_PARSE_NUMBER',
    'CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING',
    'CANNOT_PARSE_IPV4',
    'CANNOT_PARSE_IPV6',
    'CANNOT_PARSE_INPUT_ASSERTION_FAILED',
    'CANNOT_PARSE_UUID',
    'DUPLICATE_COLUMN',
    'ILLEGAL_COLUMN',
    'UNKNOWN_ELEMENT_IN_AST',
    'UNKNOWN_TYPE_OF_AST_NODE',
    'THERE_IS_NO_COLUMN',
    'TOO_DEEP_AST',
    'TOO_BIG_AST',
    'UNEXPECTED_AST_STRUCTURE',
    'SYNTAX_ERROR',
    'INCORRECT_DATA',
    'TYPE_MISMATCH',
    'VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE',
  ],
  400,
);
statusFor(
  [
    'UNKNOWN_TABLE',
    'UNKNOWN_FUNCTION',
    'UNKNOWN_IDENTIFIER',
    'UNKNOWN_TYPE',
    'UNKNOWN_STORAGE',
    'UNKNOWN_DATABASE',
    'UNKNOWN_SETTING',
    'UNKNOWN_DIRECTION_OF_SORTING',
    'UNKNOWN_AGGREGATE_FUNCTION',
    'UNKNOWN_FORMAT',
    'UNKNOWN_DATABASE_ENGINE',
    'UNKNOWN_TYPE_OF_QUERY',
    'UNKNOWN_ROLE',
  ],
  404,
);
statusFor(['QUERY_IS_TOO_LARGE'], 413);
statusFor(['NOT_IMPLEMENTED'], 501);
statusFor(['SOCKET_TIMEOUT', 'CANNOT_OPEN_FILE', 'CANNOT_SCHEDULE_TASK'], 503);
statusFor(['HTTP_LENGTH_REQUIRED'], 411);
statusFor(['TIMEOUT_EXCEEDED'], 408);
statusFor(['UNSUPPORTED_MEDIA_TYPE'], 415);

interface ErrorReply {
  status: number;
  code: number;
  /** The exception text without the version suffix. */
  text: string;
}

/** Turn anything thrown while serving a query into ClickHouse's error reply. */
function toErrorReply(e: unknown): ErrorReply {
  if (e instanceof ChException) {
    return { status: STATUS_BY_ERROR_NAME[e.type] ?? 500, code: e.code, text: e.render() };
  }
  const message = e instanceof Error ? e.message : String(e);
  // chdb errors carry ClickHouse's own text: "Code: 60. DB::Exception: … (UNKNOWN_TABLE)".
  const m = /^Code: (\d+)\. /.exec(message);
  if (m?.[1] !== undefined) {
    const code = Number(m[1]);
    const types = [...message.matchAll(/\(([A-Z0-9_]*[A-Z]{3}[A-Z0-9_]*)\)/g)];
    const type = types.length > 0 ? types[types.length - 1]?.[1] : undefined;
    return { status: (type !== undefined ? STATUS_BY_ERROR_NAME[type] : undefined) ?? 500, code, text: message };
  }
  const clickhouseCode = (e as { clickhouseCode?: unknown } | null)?.clickhouseCode;
  if (typeof clickhouseCode === 'number') {
    return { status: 500, code: clickhouseCode, text: `Code: ${clickhouseCode}. DB::Exception: ${message}` };
  }
  return {
    status: 500,
    code: 1001,
    text: new ChException(1001, 'STD_EXCEPTION', message.replace(/\.$/, '')).render(),
  };
}

// ---- the engine -------------------------------------------------------------------------

mkdirSync(DATA_DIR, { recursive: true });
/** Held for the life of the process, so the engine stays up between requests. */
const anchor = new Session(DATA_DIR);
const engineInfo = (await anchor.queryAsync('SELECT version(), timezone()', { format: 'TabSeparated' }))
  .text()
  .trim()
  .split('\t');
const VERSION = engineInfo[0] ?? 'unknown';
const TIMEZONE = engineInfo[1] ?? 'UTC';

// ---- SQL scanning ---------------------------------------------------------------------------

interface SqlScan {
  /** First keyword, upper case (SELECT, INSERT, CREATE, …). */
  kind: string;
  /** The name after a top-level FORMAT, if any. */
  format?: string;
  /** For INSERT … FORMAT X / VALUES: index where the inline data begins. */
  dataStart?: number;
  /** Index of a ';' that is followed by another statement. */
  multiStatementAt?: number;
}

function skipQuoted(sql: string, i: number, quote: string): number {
  let j = i + 1;
  while (j < sql.length) {
    const c = sql[j];
    if (c === '\\') j += 2;
    else if (c === quote) {
      if (sql[j + 1] === quote) j += 2;
      else return j + 1;
    } else j++;
  }
  return j;
}

/**
 * A small lexer, enough to find what ClickHouse's parser would reject as
 * multi-statements, the output FORMAT, and where an INSERT's inline data starts.
 * Strings, quoted identifiers, heredocs and comments are skipped.
 */
function scanSql(sql: string): SqlScan {
  const n = sql.length;
  let i = 0;
  let depth = 0;
  let kind = '';
  let prevWord: string | undefined;
  let format: string | undefined;
  let semicolonAt: number | undefined;
  while (i < n) {
    const c = sql[i] as string;
    const next = sql[i + 1];
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v') {
      i++;
      continue;
    }
    if ((c === '-' && next === '-') || (c === '#' && (next === ' ' || next === '!'))) {
      const eol = sql.indexOf('\n', i);
      i = eol < 0 ? n : eol + 1;
      continue;
    }
    if (c === '/' && next === '*') {
      let nest = 1;
      i += 2;
      while (i < n && nest > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') {
          nest++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          nest--;
          i += 2;
        } else i++;
      }
      continue;
    }
    if (semicolonAt !== undefined) return { kind, format, multiStatementAt: semicolonAt };
    if (c === ';') {
      semicolonAt = i;
      i++;
      continue;
    }
    if (c === "'" || c === '"' || c === '`') {
      i = skipQuoted(sql, i, c);
      prevWord = undefined;
      continue;
    }
    if (c === '$') {
      const tag = /^\$[A-Za-z0-9_]*\$/.exec(sql.slice(i, i + 64));
      if (tag) {
        const end = sql.indexOf(tag[0], i + tag[0].length);
        i = end < 0 ? n : end + tag[0].length;
        prevWord = undefined;
        continue;
      }
    }
    if (/[A-Za-z0-9_]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_.]/.test(sql[j] as string)) j++;
      const word = sql.slice(i, j);
      const upper = word.toUpperCase();
      if (kind === '') kind = upper;
      if (kind === 'INSERT' && depth === 0) {
        if (prevWord === 'FORMAT') return { kind, format: word, dataStart: j };
        if (upper === 'VALUES' && prevWord !== 'FROM') return { kind, dataStart: j };
      } else if (prevWord === 'FORMAT' && depth === 0) {
        format = word;
      }
      prevWord = upper;
      i = j;
      continue;
    }
    if (c === '(') depth++;
    else if (c === ')') depth--;
    prevWord = undefined;
    i++;
  }
  return { kind, format };
}

// ---- request plumbing -------------------------------------------------------------------------

/** URL parameters the HTTP handler consumes itself (everything else not `param_*` is a setting). */
const RESERVED_PARAMS = new Set([
  'query',
  'database',
  'default_format',
  'user',
  'password',
  'quota_key',
  'query_id',
  'stacktrace',
  'role',
  'session_id',
  'session_timeout',
  'session_check',
  'close_session',
  'client_protocol_version',
  'compress',
  'decompress',
  'wait_end_of_query',
  'buffer_size',
]);
/** Settings that only steer the HTTP layer; handled (or moot) here and not passed to the engine. */
const HTTP_ONLY_SETTINGS = new Set([
  'enable_http_compression',
  'http_zlib_compression_level',
  'http_response_buffer_size',
  'http_wait_end_of_query',
  'send_progress_in_http_headers',
  'http_headers_progress_interval_ms',
  'http_native_compression_disable_checksumming_on_decompress',
  'cancel_http_readonly_queries_on_client_close',
]);
/** Formats chdb's raw insert takes (it then reports rows written). */
const RAW_INSERT_FORMATS = new Set([
  'JSONEachRow',
  'JSONCompactEachRow',
  'TSV',
  'TabSeparated',
  'TSVWithNames',
  'TabSeparatedWithNames',
  'CSV',
  'CSVWithNames',
]);
const IDENT = '[A-Za-z_][A-Za-z0-9_]*';
const SIMPLE_INSERT_RE = new RegExp(
  `^\\s*INSERT\\s+INTO\\s+(?:TABLE\\s+)?(${IDENT}(?:\\.${IDENT})?)\\s*(?:\\(([^()]*)\\))?\\s*FORMAT\\s+(\\w+)\\s*;?\\s*$`,
  'i',
);

function sqlString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}
function sqlIdent(s: string): string {
  return `\`${s.replace(/\\/g, '\\\\').replace(/`/g, '\\`')}\``;
}
function settingLiteral(v: string): string {
  return /^-?\d+(\.\d+)?$/.test(v) ? v : sqlString(v);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** authenticateUserByHTTP.cpp: X-ClickHouse-User/Key, or Basic auth, or user/password params. */
function authenticate(req: IncomingMessage, params: URLSearchParams): void {
  const fail = (msg: string): never => {
    throw new ChException(516, 'AUTHENTICATION_FAILED', msg);
  };
  const hUser = header(req, 'x-clickhouse-user') ?? '';
  const hKey = header(req, 'x-clickhouse-key') ?? '';
  const authorization = header(req, 'authorization');
  const inParams = params.has('user') || params.has('password');
  let user: string;
  let password: string;
  if (hUser !== '' || hKey !== '') {
    if (hUser === '') fail('Got an empty user name from X-ClickHouse HTTP headers');
    const both = 'Invalid authentication: it is not allowed to use X-ClickHouse HTTP headers and';
    if (authorization !== undefined) fail(`${both} Authorization HTTP header simultaneously`);
    if (inParams) fail(`${both} authentication via parameters simultaneously`);
    user = hUser;
    password = hKey;
  } else if (authorization !== undefined) {
    if (inParams) {
      fail(
        'Invalid authentication: it is not allowed to use Authorization HTTP header and authentication via parameters simultaneously',
      );
    }
    const sp = authorization.indexOf(' ');
    const scheme = sp < 0 ? authorization : authorization.slice(0, sp);
    if (scheme.toLowerCase() !== 'basic') {
      fail(`Invalid authentication: '${scheme}' HTTP Authorization scheme is not supported`);
    }
    const decoded = Buffer.from(authorization.slice(sp + 1).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    user = colon < 0 ? decoded : decoded.slice(0, colon);
    password = colon < 0 ? '' : decoded.slice(colon + 1);
    if (user === '') fail('Got an empty user name from Authorization HTTP header');
  } else {
    user = params.get('user') ?? 'default';
    password = params.get('password') ?? '';
    if (user === '') fail('Got an empty user name from authentication via parameters');
  }
  if (user !== USER || !sameSecret(password, PASSWORD)) {
    fail(`${user}: Authentication failed: password is incorrect, or there is no user with such name`);
  }
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const gunzip = promisify(zlib.gunzip);
const inflate = promisify(zlib.inflate);
const brotliDecompress = promisify(zlib.brotliDecompress);

async function decodeBody(raw: Buffer, encoding: string | undefined): Promise<Buffer> {
  const enc = (encoding ?? '').trim().toLowerCase();
  if (enc === '' || enc === 'identity' || raw.length === 0) return raw;
  try {
    if (enc === 'gzip' || enc === 'x-gzip') return await gunzip(raw);
    if (enc === 'deflate') return await inflate(raw);
    if (enc === 'br') return await brotliDecompress(raw);
    if (enc === 'zstd') {
      const z = zlib as unknown as { zstdDecompress?: (b: Buffer, cb: (e: Error | null, r: Buffer) => void) => void };
      if (z.zstdDecompress) return await promisify(z.zstdDecompress)(raw);
    }
  } catch (e) {
    throw new ChException(354, 'ZLIB_INFLATE_FAILED', `Cannot decompress the ${enc} request body: ${String(e)}`);
  }
  throw new ChException(89, 'UNKNOWN_COMPRESSION_METHOD', `Unknown HTTP request Content-Encoding '${enc}'`);
}

function contentTypeFor(format: string): string {
  if (/^JSON.*EachRow/i.test(format) || /^(NDJSON|JSONL|JSONLines)$/i.test(format)) {
    return 'application/x-ndjson; charset=UTF-8';
  }
  if (/^JSON/i.test(format)) return 'application/json; charset=UTF-8';
  if (/^(TSV|TabSeparated)/i.test(format)) return 'text/tab-separated-values; charset=UTF-8';
  if (/^CSV/i.test(format)) {
    return `text/csv; charset=UTF-8; header=${/WithNames/i.test(format) ? 'present' : 'absent'}`;
  }
  if (/^(Native|RowBinary|Parquet|Arrow|ArrowStream|ORC|Avro|MsgPack|Protobuf|CapnProto)/i.test(format)) {
    return 'application/octet-stream';
  }
  return 'text/plain; charset=UTF-8';
}

interface Summary {
  read_rows: number;
  read_bytes: number;
  written_rows: number;
  written_bytes: number;
  result_rows: number;
  result_bytes: number;
  elapsed_ns: bigint;
}

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

function summaryHeader(s: Summary): string {
  return JSON.stringify({
    read_rows: String(s.read_rows),
    read_bytes: String(s.read_bytes),
    written_rows: String(s.written_rows),
    written_bytes: String(s.written_bytes),
    total_rows_to_read: '0',
    result_rows: String(s.result_rows),
    result_bytes: String(s.result_bytes),
    elapsed_ns: String(s.elapsed_ns),
  });
}

function baseHeaders(queryId: string, format: string): Record<string, string> {
  return {
    'X-ClickHouse-Server-Display-Name': DISPLAY_NAME,
    'X-ClickHouse-Query-Id': queryId,
    'X-ClickHouse-Format': format,
    'X-ClickHouse-Timezone': TIMEZONE,
    'Access-Control-Expose-Headers':
      'X-ClickHouse-Query-Id,X-ClickHouse-Summary,X-ClickHouse-Server-Display-Name,X-ClickHouse-Format,X-ClickHouse-Timezone,X-ClickHouse-Exception-Code',
  };
}

function errorReply(e: unknown, queryId: string, format: string, started: bigint): Reply {
  const r = toErrorReply(e);
  const zero = { read_rows: 0, read_bytes: 0, written_rows: 0, written_bytes: 0, result_rows: 0, result_bytes: 0 };
  return {
    status: r.status,
    headers: {
      ...baseHeaders(queryId, format),
      'Content-Type': 'text/plain; charset=UTF-8',
      'X-ClickHouse-Exception-Code': String(r.code),
      'X-ClickHouse-Summary': summaryHeader({ ...zero, elapsed_ns: process.hrtime.bigint() - started }),
    },
    body: Buffer.from(`${r.text.trimEnd()} (version ${VERSION})\n`),
  };
}

function plain(status: number, text: string): Reply {
  return { status, headers: { 'Content-Type': 'text/plain; charset=UTF-8' }, body: Buffer.from(text) };
}

/** Serve `/` (and `/ping`): authenticate, apply the URL settings to a fresh session, run. */
async function serveQuery(req: IncomingMessage, url: URL, rawBody: Buffer): Promise<Reply> {
  const started = process.hrtime.bigint();
  const params = url.searchParams;
  const queryId = params.get('query_id') || randomUUID();
  const defaultFormat = params.get('default_format') || header(req, 'x-clickhouse-format') || 'TabSeparated';
  let format = defaultFormat;
  try {
    if (url.pathname === '/ping') return plain(200, 'Ok.\n');
    if (url.pathname !== '/') {
      return plain(
        404,
        `There is no handle ${url.pathname}\n\nUse / or /ping for health checks.\n\nSend queries from your program with POST method or GET /?query=...\n`,
      );
    }
    const sqlParam = params.get('query') ?? '';
    if (req.method === 'GET' && sqlParam === '') return plain(200, 'Ok.\n');
    if (req.method !== 'GET' && req.method !== 'POST') {
      throw new ChException(1, 'UNSUPPORTED_METHOD', `HTTP method ${req.method ?? ''} is not supported`);
    }
    authenticate(req, params);
    for (const p of ['session_id', 'role'] as const) {
      if (params.has(p)) throw new ChException(48, 'NOT_IMPLEMENTED', `'${p}' is not supported by this test endpoint`);
    }
    for (const p of ['compress', 'decompress'] as const) {
      if (params.get(p) === '1') {
        throw new ChException(
          48,
          'NOT_IMPLEMENTED',
          `ClickHouse native '${p}=1' is not supported by this test endpoint`,
        );
      }
    }
    const body = await decodeBody(rawBody, header(req, 'content-encoding'));

    // What to run: the query parameter, with the body as an INSERT's data or appended to the query.
    let sql: string;
    let insertData: Buffer | undefined;
    if (sqlParam !== '') {
      const scan = scanSql(sqlParam);
      if (body.length > 0 && scan.kind === 'INSERT' && scan.dataStart !== undefined) {
        sql = sqlParam;
        insertData = body;
      } else if (scan.kind === 'INSERT' && scan.dataStart !== undefined && body.length === 0) {
        sql = sqlParam;
        insertData = Buffer.alloc(0);
      } else {
        sql = body.length > 0 ? `${sqlParam}\n${body.toString('utf8')}` : sqlParam;
      }
    } else {
      sql = body.toString('utf8');
    }
    if (sql.trim() === '') throw new ChException(62, 'SYNTAX_ERROR', 'Empty query');
    const scan = scanSql(sql);
    if (scan.multiStatementAt !== undefined) {
      const at = scan.multiStatementAt;
      throw new ChException(
        62,
        'SYNTAX_ERROR',
        `Syntax error (Multi-statements are not allowed): failed at position ${at + 1} (end of query): ${sql.slice(at, at + 40)}`,
      );
    }
    if (scan.format !== undefined && scan.kind !== 'INSERT') format = scan.format;

    // Settings and query parameters from the URL, applied to this request's session only.
    const changes: string[] = [];
    let readonly: string | undefined;
    for (const [k, v] of params) {
      if (k.startsWith('param_')) {
        const name = k.slice('param_'.length);
        if (!new RegExp(`^${IDENT}$`).test(name)) {
          throw new ChException(36, 'BAD_ARGUMENTS', `Bad query parameter name '${name}'`);
        }
        changes.push(`param_${name} = ${sqlString(v)}`);
      } else if (RESERVED_PARAMS.has(k) || HTTP_ONLY_SETTINGS.has(k)) {
        continue;
      } else if (!new RegExp(`^${IDENT}$`).test(k)) {
        throw new ChException(115, 'UNKNOWN_SETTING', `Unknown setting '${k}'`);
      } else if (k === 'readonly') {
        readonly = v;
      } else {
        changes.push(`${k} = ${settingLiteral(v)}`);
      }
    }
    // HTTPHandler: a GET runs with readonly=2 unless the request made it stricter.
    if (req.method === 'GET' && readonly !== '1') readonly = '2';
    // readonly goes last: once it is applied, nothing else may be changed.
    if (readonly !== undefined) changes.push(`readonly = ${settingLiteral(readonly)}`);
    const database = params.get('database') || header(req, 'x-clickhouse-database');

    const session = new Session(DATA_DIR);
    try {
      if (database) await session.queryAsync(`USE ${sqlIdent(database)}`, { format: 'TabSeparated' });
      if (changes.length > 0) await session.queryAsync(`SET ${changes.join(', ')}`, { format: 'TabSeparated' });
      const s: Summary = {
        read_rows: 0,
        read_bytes: 0,
        written_rows: 0,
        written_bytes: 0,
        result_rows: 0,
        result_bytes: 0,
        elapsed_ns: 0n,
      };
      let out: Buffer = Buffer.alloc(0);
      if (insertData !== undefined) {
        const w = await runInsert(session, sql, insertData);
        s.written_rows = w.rows;
        s.written_bytes = w.bytes;
        s.read_rows = w.rows;
        s.read_bytes = w.bytes;
      } else {
        const r = await session.queryAsync(sql, { format: defaultFormat });
        const bytes = r.bytes();
        out = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        s.read_rows = r.rowsRead;
        s.read_bytes = r.bytesRead;
        s.result_rows = r.rowsRead;
        s.result_bytes = out.length;
      }
      s.elapsed_ns = process.hrtime.bigint() - started;
      return {
        status: 200,
        headers: {
          ...baseHeaders(queryId, format),
          'Content-Type': contentTypeFor(format),
          'X-ClickHouse-Summary': summaryHeader(s),
        },
        body: out,
      };
    } finally {
      session.close();
    }
  } catch (e) {
    return errorReply(e, queryId, format, started);
  }
}

let infileSeq = 0;

/** INSERT with the data in the request body; returns rows/bytes written when the engine reports them. */
async function runInsert(session: Session, sql: string, data: Buffer): Promise<{ rows: number; bytes: number }> {
  const m = SIMPLE_INSERT_RE.exec(sql);
  const table = m?.[1];
  const columnList = m?.[2];
  const fmt = m?.[3];
  if (table !== undefined && fmt !== undefined) {
    const columns = columnList?.split(',').map((c) => c.trim());
    const simpleColumns = columns === undefined || columns.every((c) => new RegExp(`^${IDENT}$`).test(c));
    if (RAW_INSERT_FORMATS.has(fmt) && simpleColumns) {
      if (data.length === 0) return { rows: 0, bytes: 0 };
      const r = await session.insert({
        table,
        values: data,
        format: fmt as 'TabSeparated',
        ...(columns !== undefined ? { columns } : {}),
      });
      return { rows: r.rowsWritten, bytes: r.bytesWritten };
    }
    // Any other format (binary ones too): hand the bytes over unchanged through a file.
    mkdirSync(INFILE_DIR, { recursive: true });
    const file = join(INFILE_DIR, `${process.pid}-${++infileSeq}.bin`);
    writeFileSync(file, data);
    try {
      const cols = columnList !== undefined ? ` (${columnList})` : '';
      await session.queryAsync(`INSERT INTO ${table}${cols} FROM INFILE ${sqlString(file)} FORMAT ${fmt}`, {
        format: 'TabSeparated',
      });
    } finally {
      rmSync(file, { force: true });
    }
    return { rows: 0, bytes: 0 };
  }
  // Anything else (SETTINGS in the statement, VALUES, …): inline the data as text, as clickhouse-local would.
  const text = data.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(data)) {
    throw new ChException(
      48,
      'NOT_IMPLEMENTED',
      'This test endpoint takes binary INSERT data only for plain `INSERT INTO t [(cols)] FORMAT X` statements',
    );
  }
  await session.queryAsync(`${sql}\n${text}`, { format: 'TabSeparated' });
  return { rows: 0, bytes: 0 };
}

// ---- response --------------------------------------------------------------------------------

function pickEncoding(accept: string | undefined): 'gzip' | 'deflate' | 'br' | undefined {
  if (accept === undefined) return undefined;
  const offered = accept
    .split(',')
    .map((p) => p.split(';')[0]?.trim().toLowerCase())
    .filter((p): p is string => p !== undefined && p !== '');
  for (const enc of ['gzip', 'deflate', 'br'] as const) if (offered.includes(enc)) return enc;
  return undefined;
}

function send(req: IncomingMessage, res: ServerResponse, url: URL, reply: Reply): void {
  let body = reply.body;
  const headers = { ...reply.headers };
  const compression = url.searchParams.get('enable_http_compression');
  const enc = compression === '1' || compression === 'true' ? pickEncoding(header(req, 'accept-encoding')) : undefined;
  if (enc !== undefined) {
    const level = Number(url.searchParams.get('http_zlib_compression_level') ?? '3');
    body =
      enc === 'gzip'
        ? zlib.gzipSync(body, { level })
        : enc === 'deflate'
          ? zlib.deflateSync(body, { level })
          : zlib.brotliCompressSync(body);
    headers['Content-Encoding'] = enc;
  }
  headers['Content-Length'] = String(body.length);
  res.writeHead(reply.status, headers);
  res.end(body);
}

function sleepUnlessClosed(ms: number, res: ServerResponse): Promise<boolean> {
  return new Promise((resolve) => {
    if (res.destroyed || res.socket?.destroyed) {
      resolve(false);
      return;
    }
    const onClose = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      res.off('close', onClose);
      resolve(true);
    }, ms);
    res.once('close', onClose);
  });
}

// ---- control endpoint -----------------------------------------------------------------------------

function isControl(req: IncomingMessage, url: URL): boolean {
  if (url.pathname !== '/__fault' && url.pathname !== '/__requests') return false;
  const token = header(req, 'x-flowgate-control-token');
  return token !== undefined && sameSecret(token, CONTROL_TOKEN.toString());
}

async function serveControl(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const reply = (status: number, v: unknown): void => {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(v));
  };
  const body = await readBody(req);
  if (url.pathname === '/__requests') {
    reply(200, { requests: requestCount });
    return;
  }
  if (req.method !== 'POST') {
    reply(405, { error: 'POST a JSON fault (or null)' });
    return;
  }
  try {
    fault = parseFault(JSON.parse(body.toString('utf8')) as unknown);
    reply(200, { fault });
  } catch (e) {
    reply(400, { error: e instanceof Error ? e.message : String(e) });
  }
}

// ---- server ---------------------------------------------------------------------------------------

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  if (isControl(req, url)) {
    await serveControl(req, res, url);
    return;
  }
  requestCount++;
  const started = process.hrtime.bigint();
  const rawBody = await readBody(req);
  if ((fault.resetNext ?? 0) > 0) {
    fault.resetNext = (fault.resetNext ?? 1) - 1;
    req.socket.resetAndDestroy();
    return;
  }
  if (fault.delayMs !== undefined && fault.delayMs > 0) {
    if (!(await sleepUnlessClosed(fault.delayMs, res))) return;
  }
  if ((fault.failNext ?? 0) > 0) {
    fault.failNext = (fault.failNext ?? 1) - 1;
    const e = new ChException(1002, 'UNKNOWN_EXCEPTION', 'Injected fault: this request failed on purpose (failNext)');
    send(req, res, url, errorReply(e, url.searchParams.get('query_id') || randomUUID(), 'TabSeparated', started));
    return;
  }
  if (fault.status !== undefined) {
    const status = fault.status;
    send(
      req,
      res,
      url,
      plain(status, `${status} ${STATUS_CODES[status] ?? ''}: injected fault (flowgate test endpoint)\n`),
    );
    return;
  }
  const reply = await serveQuery(req, url, rawBody);
  if (fault.delayAfterMs !== undefined && fault.delayAfterMs > 0) {
    if (!(await sleepUnlessClosed(fault.delayAfterMs, res))) return;
  }
  send(req, res, url, reply);
}

const server = createServer((req, res) => {
  handle(req, res).catch((e: unknown) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    send(req, res, new URL('http://127.0.0.1/'), errorReply(e, randomUUID(), 'TabSeparated', process.hrtime.bigint()));
  });
});
server.keepAliveTimeout = 10_000;

function shutdown(code: number): never {
  try {
    anchor.close();
  } finally {
    process.exit(code);
  }
}

process.on('SIGTERM', () => shutdown(0));
// The parent holds our stdin; when it goes away (even by SIGKILL), so do we.
process.stdin.on('end', () => shutdown(0));
process.stdin.on('error', () => shutdown(0));
process.stdin.resume();

server.on('error', (e) => {
  process.stderr.write(`clickhouse-http-child: ${e.message}\n`);
  process.exit(3);
});
server.listen(PORT, '127.0.0.1', () => {
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : PORT;
  process.stdout.write(`${JSON.stringify({ flowgateClickHouseReady: true, port })}\n`);
});
