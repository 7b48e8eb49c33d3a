/**
 * Rules through the agent's API, as a user sees them: a real `flowgate run`
 * on a veth.
 *
 * - POST → enforced: time from sending a single-rule POST until its
 *   response, which the agent sends only after the kernel switched to the
 *   new tables (p50, p99 over `posts` requests, one at a time), with
 *   `background` prefixes already loaded. Baseline in the same run: GET
 *   /api/v1/health, the API's own round trip.
 * - Replace: PUT /rules with one million /24 prefixes, end to end (JSON
 *   upload, validation, compile, kernel load, rules file).
 */
import { startAgent } from '../test/lib/agent.js';
import { createVethPair } from '../test/lib/netns.js';

export interface RulesApiResult {
  background: number;
  posts: number;
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

async function timed(url: string, init?: RequestInit): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(url, init);
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`${init?.method ?? 'GET'} ${url}: ${res.status}`);
  return performance.now() - t0;
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
    for (let i = 0; i < opts.posts; i++) {
      health.push(await timed(`${api}/health`));
      posts.push(
        await timed(`${api}/rules`, {
          method: 'POST',
          headers: json,
          body: JSON.stringify({ action: 'drop', src: `10.${i >> 8}.${i & 255}.0/24` }),
        }),
      );
    }
    posts.sort((a, b) => a - b);
    health.sort((a, b) => a - b);
    const body = JSON.stringify({ rules: prefixes(opts.replacePrefixes) });
    const t0 = performance.now();
    await timed(`${api}/rules`, { method: 'PUT', headers: json, body });
    const replaceSeconds = (performance.now() - t0) / 1000;
    return {
      background: opts.background,
      posts: opts.posts,
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
