/**
 * A ClickHouse server for tests, over the real HTTP interface, backed by the
 * embedded engine (chdb) in a CHILD PROCESS (test/lib/clickhouse-http-child.ts):
 *
 *   const ch = await startClickHouseHttp({ dataDir, user: 'flowgate', password: 's3cret' });
 *   const client = createClient({ url: ch.url });      // http://flowgate:s3cret@127.0.0.1:PORT
 *   await ch.setFault({ status: 503 });                  // every request answers 503
 *   await ch.setFault(null);
 *   await ch.stop();                                     // SIGKILL: connections now refused
 *   await ch.restart();                                  // same data dir, same port, data kept
 *
 * Why a child: chdb binds ONE data directory per process, so the test process
 * stays free to open its own embedded store; and stop() is a real outage (the
 * process dies, the port refuses) rather than a simulated one.
 *
 * Listens on 127.0.0.1 only. The fault/counter control endpoint needs a secret
 * that only this process knows. Always call stop() (e.g. in `after`); if the
 * test process dies first, the child notices its stdin closing and exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export interface ClickHouseHttpOptions {
  /** chdb data directory of the server; kept across restart(). */
  dataDir: string;
  /** The one user the server accepts (default "default"). */
  user?: string;
  /** Its password (default ""). */
  password?: string;
  /** Port on 127.0.0.1; 0 or absent picks a free one (restart() keeps it). */
  port?: number;
}

export interface ClickHouseFault {
  /** Answer every request with this HTTP status and a plain-text body, as a failing proxy would (e.g. 503). */
  status?: number;
  /** Hang this long before answering each request (for client timeouts); nothing runs if the client gave up. */
  delayMs?: number;
  /** Run each request, then hang this long before answering: the work is done even if the client times out. */
  delayAfterMs?: number;
  /** The next N requests fail with HTTP 500 and a ClickHouse exception (Code: 1002, UNKNOWN_EXCEPTION), not run. */
  failNext?: number;
  /** The next N requests get their TCP connection reset with no answer (ECONNRESET), not run. */
  resetNext?: number;
}

export interface ClickHouseHttp {
  /** http://user:password@127.0.0.1:PORT (user and password URL-encoded). */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  readonly user: string;
  readonly password: string;
  /** Kill the server with SIGKILL; resolves once the port refuses connections. Idempotent. */
  stop(): Promise<void>;
  /** stop() if running, then start again on the same data directory and port. */
  restart(): Promise<void>;
  /** Replace the fault set (null clears it). Control requests are never faulted or counted. */
  setFault(fault: ClickHouseFault | null): Promise<void>;
  /** Requests served (including failed and faulted ones) since this server process started. */
  requests(): Promise<number>;
}

const CHILD = fileURLToPath(new URL('./clickhouse-http-child.ts', import.meta.url));
const REPO_ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const READY_TIMEOUT_MS = 30_000;

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

async function spawnChild(
  opts: Required<ClickHouseHttpOptions>,
  token: string,
): Promise<{ child: ChildProcess; port: number }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_TEST_CONTEXT; // the child is not a test file
  Object.assign(env, {
    TZ: 'UTC',
    FLOWGATE_CH_DATA_DIR: opts.dataDir,
    FLOWGATE_CH_PORT: String(opts.port),
    FLOWGATE_CH_USER: opts.user,
    FLOWGATE_CH_PASSWORD: opts.password,
    FLOWGATE_CH_CONTROL_TOKEN: token,
  });
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
    cwd: REPO_ROOT,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  live.add(child);
  installExitHook();
  child.once('exit', () => live.delete(child));

  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    stderr = (stderr + d).slice(-16_384);
  });
  const port = await new Promise<number>((resolvePort, reject) => {
    let stdout = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(`did not get ready within ${READY_TIMEOUT_MS} ms`);
    }, READY_TIMEOUT_MS);
    function fail(why: string): void {
      clearTimeout(timer);
      reject(new Error(`clickhouse-http-child ${why}; stderr:\n${stderr}`));
    }
    child.once('error', (e) => fail(`failed to spawn: ${e.message}`));
    child.once('exit', (code, signal) => fail(`exited before ready (code ${code}, signal ${signal})`));
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      stdout += d;
      for (const line of stdout.split('\n')) {
        if (!line.startsWith('{"flowgateClickHouseReady"')) continue;
        clearTimeout(timer);
        child.removeAllListeners('exit');
        child.once('exit', () => live.delete(child));
        resolvePort((JSON.parse(line) as { port: number }).port);
        return;
      }
    });
  });
  // Do not keep the test process alive for the child's sake; stop() is still expected.
  child.unref();
  for (const s of [child.stdin, child.stdout, child.stderr]) {
    (s as unknown as { unref?: () => void } | null)?.unref?.();
  }
  return { child, port };
}

function refuses(port: number): Promise<boolean> {
  return new Promise((resolveRefused) => {
    const sock = connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolveRefused(false);
    });
    sock.once('error', () => resolveRefused(true));
  });
}

function control(port: number, token: string, method: 'GET' | 'POST', path: string, body?: string): Promise<unknown> {
  return new Promise((resolveReply, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent: false,
        headers: {
          'X-Flowgate-Control-Token': token,
          ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        },
        timeout: 10_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          if (res.statusCode !== 200) reject(new Error(`control ${path}: HTTP ${res.statusCode}: ${text}`));
          else resolveReply(JSON.parse(text) as unknown);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`control ${path}: timeout`)));
    req.on('error', reject);
    req.end(body);
  });
}

export async function startClickHouseHttp(options: ClickHouseHttpOptions): Promise<ClickHouseHttp> {
  const opts: Required<ClickHouseHttpOptions> = {
    dataDir: resolve(options.dataDir),
    user: options.user ?? 'default',
    password: options.password ?? '',
    port: options.port ?? 0,
  };
  mkdirSync(opts.dataDir, { recursive: true });
  const token = randomBytes(24).toString('hex');
  const first = await spawnChild(opts, token);
  let child: ChildProcess | undefined = first.child;
  const port = first.port;
  opts.port = port;

  async function stop(): Promise<void> {
    const c = child;
    child = undefined;
    if (c !== undefined && !exited(c)) {
      const gone = new Promise<void>((r) => c.once('exit', () => r()));
      c.ref(); // keep this process alive until the exit is seen
      c.kill('SIGKILL');
      await gone;
    }
    for (let i = 0; i < 100 && !(await refuses(port)); i++) await sleep(20);
  }

  async function restart(): Promise<void> {
    await stop();
    // The port was just ours; retry briefly in case the kernel has not let go yet.
    for (let attempt = 0; ; attempt++) {
      try {
        child = (await spawnChild(opts, token)).child;
        return;
      } catch (e) {
        if (attempt >= 5 || !String(e).includes('EADDRINUSE')) throw e;
        await sleep(200);
      }
    }
  }

  return {
    url: `http://${encodeURIComponent(opts.user)}:${encodeURIComponent(opts.password)}@127.0.0.1:${port}`,
    port,
    dataDir: opts.dataDir,
    user: opts.user,
    password: opts.password,
    stop,
    restart,
    async setFault(fault) {
      await control(port, token, 'POST', '/__fault', JSON.stringify(fault));
    },
    async requests() {
      const r = (await control(port, token, 'GET', '/__requests')) as { requests: number };
      return r.requests;
    },
  };
}
