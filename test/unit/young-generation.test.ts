/**
 * control/util/young-generation.ts: with the agent's cap on the young
 * generation (bin/flowgate.js), a bulk job lets it grow, and the cap is
 * back when the job ends; without the cap nothing changes. Each case runs
 * in a child process: V8 flags are process-wide.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MODULE = fileURLToPath(new URL('../../control/util/young-generation.ts', import.meta.url));

interface Sizes {
  before: number;
  during: number;
  after: number;
}

/** New-space sizes (bytes) after churning surviving objects: before, during and after one bulk job. */
function newSpaceSizes(capped: boolean): Sizes {
  const script = `
    import v8 from 'node:v8';
    v8.setFlagsFromString('--semi-space-growth-factor=1');
    const { bulkAllocation } = await import(${JSON.stringify(MODULE)});
    const newSpace = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size;
    const churn = () => { const keep = []; for (let i = 0; i < 400000; i++) keep.push({ i, s: 'x' + i }); return keep.length; };
    churn();
    const before = newSpace();
    const during = await bulkAllocation(async () => { churn(); return newSpace(); });
    churn();
    console.log(JSON.stringify({ before, during, after: newSpace() }));
  `;
  const env = { ...process.env };
  if (capped) env.FLOWGATE_YOUNG_GENERATION_CAPPED = '1';
  else delete env.FLOWGATE_YOUNG_GENERATION_CAPPED;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    env,
    encoding: 'utf8',
  });
  return JSON.parse(out) as Sizes;
}

test('a bulk job lets the capped young generation grow, and the cap holds outside it', () => {
  const { before, during, after } = newSpaceSizes(true);
  assert.ok(during >= 2 * before, `new space ${before} B before, ${during} B during the bulk job`);
  // Once the job ends the space stops growing (V8 shrinks it later, when allocation slows).
  assert.ok(after <= during, `new space ${after} B after, ${during} B during`);
});

test('without the cap (not started by bin/flowgate.js run) a bulk job changes nothing', () => {
  const { before, during } = newSpaceSizes(false);
  assert.equal(during, before);
});
