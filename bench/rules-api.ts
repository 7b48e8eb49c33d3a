/**
 * Rules through the agent's API, as a user sees them: a real `flowgate run`
 * on a veth.
 *
 * - POST → enforced: from the request's arrival at the agent to the kernel
 *   switching to the new tables, as the agent reports it in the response's
 *   Server-Timing header (p50, p99 over `posts` requests, one at a time),
 *   with `background` prefixes already loaded. Also the whole round trip as
 *   the client sees it (the answer waits for the rules file's fdatasync
 *   too), against GET /api/v1/health's round trip in the same run.
 * - Replace: PUT /rules with one million /24 prefixes, end to end (JSON
 *   upload, validation, compile, kernel load, rules file).
 */
import { startAgent } from '../test/lib/agent.js';
import { createVethPair } from '../test/lib/netns.js';

export interface RulesApiResult {
  background: number;
  posts: number;
  /** Request arrival → kernel switch (Server-Timing: enforce). */
  enforceP50Ms: number;
  enforceP99Ms: number;
  /** The client's round trip of a POST. */
  postP50Ms: number;
  postP99Ms: number;
  healthP50Ms: number;
  targetP99Ms: number;
  replacePrefixes: number;
  replaceSeconds: number;
  targetReplaceSeconds: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function prefixes(n: number, firstOctet = 1): Array<{ action: string; src: string }> {
  const out: Array<{ action: string; src: string }> = [];
  for (let i = 0; out.length < n; i++) {
    const a = firstOctet + Math.floor(i / 65536);
    if (a === 127 || a === 198) continue;
    out.push({ action: 'drop', src: `${a}.${(i >> 8) & 255}.${i & 255}.0/24` });
  }
  return out;
}

async function request(url: string, init?: RequestInit): Promise<{ ms: number; enforceMs?: number }> {
  const t0 = performance.now();
  const res = await fetch(url, init);
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`${init?.method ?? 'GET'} ${url}: ${res.status}`);
  const ms = performance.now() - t0;
  const m = /enforce;dur=([\d.]+)/.exec(res.headers.get('server-timing') ?? '');
  return { ms, enforceMs: m ? Number(m[1]) : undefined };
}

async function timed(url: string, init?: RequestInit): Promise<number> {
  return (await request(url, init)).ms;
}

export async function benchRulesApi(opts: {
  background: number;
  posts: number;
  replacePrefixes: number;
}): Promise<RulesApiResult> {
  const veth = createVethPair('fgb');
  const agent = await startAgent({ ifaces: [veth.host], args: ['--drain-interval', '5s'] });
  try {
    const api = `${agent.api}/api/v1`;
    const json = { 'content-type': 'application/json' };
    await timed(`${api}/rules`, {
      method: 'PUT',
      headers: json,
      body: JSON.stringify({ rules: prefixes(opts.background, 100) }),
    });
    const health: number[] = [];
    const posts: number[] = [];
    const enforce: number[] = [];
    for (let i = 0; i < opts.posts; i++) {
      // Spaced under the API's rate limit of mutations (100 a second per client).
      await new Promise((r) => setTimeout(r, 12));
      health.push(await timed(`${api}/health`));
      const r = await request(`${api}/rules`, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ action: 'drop', src: `10.${i >> 8}.${i & 255}.0/24` }),
      });
      posts.push(r.ms);
      if (r.enforceMs === undefined) throw new Error('POST /rules answered without Server-Timing: enforce');
      enforce.push(r.enforceMs);
    }
    posts.sort((a, b) => a - b);
    health.sort((a, b) => a - b);
    enforce.sort((a, b) => a - b);
    const body = JSON.stringify({ rules: prefixes(opts.replacePrefixes) });
    const t0 = performance.now();
    await timed(`${api}/rules`, { method: 'PUT', headers: json, body });
    const replaceSeconds = (performance.now() - t0) / 1000;
    return {
      background: opts.background,
      posts: opts.posts,
      enforceP50Ms: percentile(enforce, 50),
      enforceP99Ms: percentile(enforce, 99),
      postP50Ms: percentile(posts, 50),
      postP99Ms: percentile(posts, 99),
      healthP50Ms: percentile(health, 50),
      targetP99Ms: 5,
      replacePrefixes: opts.replacePrefixes,
      replaceSeconds,
      targetReplaceSeconds: 10,
    };
  } finally {
    await agent.stop();
    agent.cleanup();
    veth.destroy();
  }
}
