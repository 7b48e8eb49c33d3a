/**
 * Rule counters read for history (DatapathRules.counterDeltas): crafted
 * frames by BPF_PROG_TEST_RUN hit two drop rules; the read covers the ids
 * in use only (not all --max-rules), gives exact per-interval deltas, and a
 * partial read of the array (Datapath.ruleStatsAll(below)) returns exactly
 * the ids below the bound.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withTestDatapath } from '../lib/datapath.js';
import { ipPacketLength, tcpSyn } from '../lib/frames.js';
import { DatapathRules } from '../../control/rules/kernel-rules.js';
import { parseRule } from '../../control/rules/rule.js';

const XDP_DROP = 1;

test('rule counter deltas are exact and read only the ids in use', async (t) => {
  await withTestDatapath(t, async ({ dp }) => {
    const rules = new DatapathRules(dp);
    await rules.load([
      parseRule({ action: 'drop', src: '192.0.2.0/24' }, 5),
      parseRule({ action: 'drop', src: '198.51.100.0/24' }, 300),
    ]);
    const a = tcpSyn('192.0.2.7', '10.0.0.1');
    const b = tcpSyn('198.51.100.7', '10.0.0.1', 443);
    const send = (frame: Buffer, n: number): void => {
      for (let i = 0; i < n; i++) assert.equal(dp.testRun('xdp', frame).retval, XDP_DROP);
    };
    send(a, 3);
    send(b, 2);
    assert.deepEqual(await rules.counterDeltas(), [
      { ruleId: 5, packets: 3, bytes: 3 * ipPacketLength(a)! },
      { ruleId: 300, packets: 2, bytes: 2 * ipPacketLength(b)! },
    ]);
    send(b, 4);
    assert.deepEqual(await rules.counterDeltas(), [{ ruleId: 300, packets: 4, bytes: 4 * ipPacketLength(b)! }]);
    assert.deepEqual(await rules.counterDeltas(), [], 'nothing new, no rows');

    // Partial reads of the array: ids below the bound, and nothing past it.
    assert.deepEqual(
      [...(await dp.ruleStatsAll(301)).keys()].sort((x, y) => x - y),
      [5, 300],
    );
    assert.deepEqual([...(await dp.ruleStatsAll(300)).keys()], [5]);
    assert.deepEqual(
      [...(await dp.ruleStatsAll()).keys()].sort((x, y) => x - y),
      [5, 300],
    );
    assert.deepEqual((await dp.ruleStatsAll(6)).get(5), { packets: 3, bytes: 3 * ipPacketLength(a)! });
    // Two reads at once (a replace's reset during a drain's history) do not share a buffer.
    const [x, y] = await Promise.all([dp.ruleStatsAll(301), dp.ruleStatsAll(6)]);
    assert.deepEqual(
      [...x.keys()].sort((p, q) => p - q),
      [5, 300],
    );
    assert.deepEqual([...y.keys()], [5]);
  });
});
