/**
 * The agent holds V8's young generation at its initial 2 × 1 MB
 * (bin/flowgate.js: --semi-space-growth-factor=1): V8 would otherwise grow
 * it to 2 × 16 MB under the drains' garbage and keep it, 25–45 MB resident
 * for objects that live microseconds. A bulk job is the opposite case: a
 * million rules parsed from one request body, compiled and loaded are
 * hundreds of MB of objects that live on, and a 1 MB nursery makes V8 copy
 * every one of them through hundreds of extra scavenges (a million-rule PUT
 * measured 15 s instead of 10 s). While a bulk job runs, the young
 * generation may grow as V8 grows it by default (×2 a step); afterwards the
 * cap is back, and V8 shrinks the young generation again once allocation
 * slows.
 */
import v8 from 'node:v8';

/** Set by bin/flowgate.js when it capped the young generation (not set: nothing here changes anything). */
const CAPPED = process.env.FLOWGATE_YOUNG_GENERATION_CAPPED === '1';
const V8_DEFAULT_GROWTH = 2;

let bulkJobs = 0;

/** The young generation may grow until the returned function is called (jobs nest; a second call does nothing). */
export function startBulkAllocation(): () => void {
  if (!CAPPED) return () => undefined;
  if (bulkJobs++ === 0) v8.setFlagsFromString(`--semi-space-growth-factor=${V8_DEFAULT_GROWTH}`);
  let ended = false;
  return () => {
    if (ended) return;
    ended = true;
    if (--bulkJobs === 0) v8.setFlagsFromString('--semi-space-growth-factor=1');
  };
}

/** fn() as a bulk job. */
export async function bulkAllocation<T>(fn: () => Promise<T>): Promise<T> {
  const end = startBulkAllocation();
  try {
    return await fn();
  } finally {
    end();
  }
}
