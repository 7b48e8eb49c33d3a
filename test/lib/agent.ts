/**
 * A real agent for end-to-end tests: `flowgate run` in a child process on a
 * loopback port, with its own store, spool and bpffs under a temp dir.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { removeBpffs } from './datapath.js';

const BIN = fileURLToPath(new URL('../../bin/flowgate.js', import.meta.url));

export interface AgentProcess {
  api: string;
  dir: string;
  storeDir: string;
  bpffs: string;
  proc: ChildProcess;
  /** Everything the agent wrote to stderr (its logs). */
  logs(): string;
  query<T = unknown[]>(sql: string): Promise<T[]>;
  /** SIGTERM (or another signal) and wait for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Start again with the same dirs and flags (adopts the pins). */
  restart(extra?: string[]): Promise<AgentProcess>;
  /** Remove the temp dir and bpffs (after the agent exited). */
  cleanup(): void;
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  srv.close();
  return port;
}

export interface AgentOptions {
  ifaces: string[];
  args?: string[];
  dir?: string;
}

export async function startAgent(opts: AgentOptions): Promise<AgentProcess> {
  const dir = opts.dir ?? mkdtempSync(path.join(os.tmpdir(), 'flowgate-agent-'));
  const storeDir = path.join(dir, 'store');
  const bpffs = path.join(dir, 'bpffs');
  const port = await freePort();
  const api = `http://127.0.0.1:${port}`;
  const args = [
    BIN,
    'run',
    '--iface',
    opts.ifaces.join(','),
    '--store',
    storeDir,
    '--bpffs',
    bpffs,
    '--listen',
    `127.0.0.1:${port}`,
    ...(opts.args ?? []),
  ];
  const proc = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    // Tests run the sources (never a stale build); the benchmark sets FLOWGATE_FROM_SOURCE=0 to measure dist/.
    env: { ...process.env, FLOWGATE_LOG_LEVEL: 'debug', FLOWGATE_FROM_SOURCE: process.env.FLOWGATE_FROM_SOURCE ?? '1' },
  });
  let logs = '';
  proc.stdout!.on('data', (d: Buffer) => (logs += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
  const exited = once(proc, 'exit');

  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`agent exited with ${proc.exitCode} before it was ready:\n${logs}`);
    try {
      const res = await fetch(`${api}/api/v1/health`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`agent not ready within 60 s:\n${logs}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  const agent: AgentProcess = {
    api,
    dir,
    storeDir,
    bpffs,
    proc,
    logs: () => logs,
    async query<T>(sql: string): Promise<T[]> {
      const res = await fetch(`${api}/api/v1/query`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sql }),
      });
      const body = (await res.json()) as { rows: T[]; message?: string };
      if (!res.ok) throw new Error(`query failed (${res.status}): ${body.message}`);
      return body.rows;
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const [code] = (await exited) as [number | null];
      return code;
    },
    restart(extra?: string[]) {
      return startAgent({ ifaces: opts.ifaces, args: extra ?? opts.args, dir });
    },
    cleanup() {
      removeBpffs(bpffs);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return agent;
}
