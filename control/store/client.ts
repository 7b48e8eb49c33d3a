/**
 * @clickhouse/client instances for the store: the embedded engine (chDB via
 * chdb/connection, loaded only in that mode) or a ClickHouse server by URL.
 *
 * Two kinds of client, because chDB's connection applies a request's
 * clickhouse_settings as `SET …` on its session, where they stay:
 * - the write client (migrations, inserts) lives as long as the store; each
 *   insert sets every setting it relies on, explicitly.
 * - a query client per read-only query: embedded, a fresh session on the same
 *   data directory (cheap: ~2 ms), so readonly=1 ends with the query; on a
 *   server, settings are per request anyway and one shared client serves.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { rootCertificates } from 'node:tls';
import {
  ClickHouseLogLevel,
  createClient,
  type ClickHouseClient,
  type ClickHouseClientConfigOptions,
} from '@clickhouse/client';
import { toStoreError } from './errors.js';
import { StoreError, type StoreOptions, type StoreTarget } from './types.js';

export const DATABASE = 'flowgate';
const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

export interface QueryClient {
  client: ClickHouseClient;
  release(): Promise<void>;
}

export interface StoreClients {
  kind: StoreTarget['kind'];
  /** Embedded: the chDB data directory; server: the URL without credentials. */
  location: string;
  /** Migrations and inserts. Default database: `default` (statements name flowgate.* in full). */
  writer: ClickHouseClient;
  /** A client whose default database is flowgate, for one query; release it after. */
  queryClient(): Promise<QueryClient>;
  /**
   * Embedded only: a directory for batch files the engine reads itself
   * (INSERT … FROM INFILE), five times faster in chDB than the same rows
   * inline in the INSERT's text.
   */
  scratchDir?: string;
  close(): Promise<void>;
}

/** The chDB data directory under --store (the agent keeps other things, e.g. its spool, beside it). */
export function embeddedDataDir(storeDir: string): string {
  return path.join(storeDir, 'chdb');
}

export interface ServerUrl {
  /** The URL to connect to: no credentials, no query string. */
  url: string;
  username?: string;
  password?: string;
  https: boolean;
}

/** Split http(s)://user:pass@host:port[/?database=flowgate] into a bare URL and credentials. */
export function parseServerUrl(raw: string): ServerUrl {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new StoreError(`--clickhouse-url: not a URL: ${JSON.stringify(raw)}`, false);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new StoreError(`--clickhouse-url: must be http:// or https://, not ${u.protocol}//`, false);
  }
  // A database may be named as ?database= or as the path (clickhouse-js reads the path so); it can only be ours.
  for (const database of [u.searchParams.get('database'), u.pathname.replace(/^\/+|\/+$/g, '') || null]) {
    if (database !== null && database !== DATABASE) {
      throw new StoreError(`--clickhouse-url: the database is always ${DATABASE} (got ${database})`, false);
    }
  }
  u.pathname = '/';
  const username = u.username ? decodeURIComponent(u.username) : undefined;
  const password = u.password ? decodeURIComponent(u.password) : undefined;
  u.username = '';
  u.password = '';
  u.search = '';
  u.hash = '';
  return { url: u.toString().replace(/\/$/, ''), username, password, https: u.protocol === 'https:' };
}

/**
 * CA certificates for https: the operating system's bundle (where an
 * enterprise CA gets installed), Node's own roots, and NODE_EXTRA_CA_CERTS,
 * since giving TLS a `ca` list replaces Node's defaults instead of adding.
 */
export function systemCaBundle(): Buffer | undefined {
  const bundles = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem'];
  const parts: string[] = [];
  for (const file of bundles) {
    try {
      parts.push(readFileSync(file, 'utf8'));
      break;
    } catch {
      // not this distribution's path
    }
  }
  if (parts.length === 0) return undefined; // Node's defaults, untouched
  const extra = process.env.NODE_EXTRA_CA_CERTS;
  if (extra) {
    try {
      parts.push(readFileSync(extra, 'utf8'));
    } catch {
      // Node warns about an unreadable NODE_EXTRA_CA_CERTS itself
    }
  }
  parts.push(...rootCertificates);
  return Buffer.from(parts.join('\n'));
}

function serverClient(s: ServerUrl, database: string, timeoutMs: number): ClickHouseClient {
  const ca = s.https ? systemCaBundle() : undefined;
  return createClient({
    url: s.url,
    username: s.username ?? 'default',
    password: s.password ?? '',
    database,
    request_timeout: timeoutMs,
    keep_alive: { enabled: true },
    // Big inserts are text that compresses well, but gzip on the agent's one thread costs more than the wire.
    compression: { request: false, response: false },
    ...(ca ? { tls: { ca_cert: ca } } : {}),
    application: 'flowgate',
    // Every failure reaches the caller as a StoreError, and the agent logs it there; the client would log it twice.
    log: { level: ClickHouseLogLevel.OFF },
  });
}

async function openServer(target: StoreTarget & { kind: 'server' }, opts: StoreOptions): Promise<StoreClients> {
  const s = parseServerUrl(target.url);
  if (s.password === undefined && target.password !== undefined) s.password = target.password;
  const timeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const writer = serverClient(s, 'default', timeoutMs);
  // Queries stop themselves (max_execution_time) and carry their own abort signal (flow-store.ts).
  const reader = serverClient(s, DATABASE, Math.max(timeoutMs, 5 * 60_000));
  return {
    kind: 'server',
    location: s.url,
    writer,
    queryClient: () => Promise.resolve({ client: reader, release: () => Promise.resolve() }),
    close: async () => {
      await Promise.allSettled([writer.close(), reader.close()]);
    },
  };
}

/** Batch files are named flows-<pid>-<n>.bin; those of a dead process are leftovers of a crash (still spooled). */
function removeStaleBatchFiles(scratchDir: string): void {
  for (const name of readdirSync(scratchDir)) {
    const pid = Number(/^flows-(\d+)-/.exec(name)?.[1]);
    if (!pid || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
      continue; // alive: another store of the same directory is using it
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    rmSync(path.join(scratchDir, name), { force: true });
  }
}

async function openEmbedded(dir: string): Promise<StoreClients> {
  const dataDir = embeddedDataDir(dir);
  const scratchDir = path.join(dir, 'chdb-insert');
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o750 });
    mkdirSync(scratchDir, { recursive: true, mode: 0o700 });
    removeStaleBatchFiles(scratchDir);
  } catch (err) {
    throw new StoreError(`--store ${dir}: cannot create ${dataDir}: ${(err as Error).message}`, false);
  }
  // Loaded here only: a server deployment never maps libchdb (hundreds of MB).
  const { createChdbConnection } = await import('chdb/connection');
  const connect = (): ClickHouseClient => {
    try {
      // chdb types its connection against the client-common package, the client bundles its own copy of the same types.
      const connection = createChdbConnection({
        path: dataDir,
      }) as unknown as ClickHouseClientConfigOptions['connection'];
      return createClient({ connection, log: { level: ClickHouseLogLevel.OFF } });
    } catch (err) {
      // e.g. another data directory already open in this process (chDB binds one per process).
      throw new StoreError(`embedded ClickHouse at ${dataDir}: ${(err as Error).message}`, false);
    }
  };
  const writer = connect();
  return {
    kind: 'embedded',
    location: dataDir,
    writer,
    scratchDir,
    queryClient: async () => {
      const client = connect();
      try {
        await client.command({ query: `USE ${DATABASE}` });
      } catch (err) {
        await client.close();
        throw toStoreError(err);
      }
      return { client, release: () => client.close() };
    },
    close: () => writer.close(),
  };
}

export function openStoreClients(opts: StoreOptions): Promise<StoreClients> {
  return opts.target.kind === 'embedded' ? openEmbedded(opts.target.dir) : openServer(opts.target, opts);
}
