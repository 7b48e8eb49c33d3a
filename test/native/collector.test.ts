/**
 * The collector's drain, a chunk at a time: a retired slot goes to the spool
 * through one reused buffer (CHUNK_RECORDS records), and every flow of the
 * slot is in the batch exactly once, however many chunks it takes.
 *
 * Run as root: node --import tsx --test test/native/collector.test.ts
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { withTestDatapath } from '../lib/datapath.js';
import { CHUNK_RECORDS, Collector, type DrainSummary } from '../../control/agent/collector.js';
import { MonotonicClock } from '../../control/agent/clock.js';
import { Spool } from '../../control/agent/spool.js';
import { readBatch } from '../lib/spool.js';
import {
  FLOW_KEY,
  FLOW_RECORD_SIZE,
  decodeFlowRecords,
  decodeSlotStats,
  encodeFlowKey,
  encodeFlowValue,
  u32Key,
} from '../../control/datapath/layout.js';
import { REPLACE_FLOW_MAP_SHARE, type Datapath } from '../../control/datapath/datapath.js';
import { createLogger } from '../../control/log.js';
import { buildFrame } from '../lib/frames.js';

const MAX_FLOWS = 131_072;
/** Three chunks, the last one partial, either side of the share at which a release replaces the map. */
const RELEASES = [
  { flows: 2 * CHUNK_RECORDS + 12_345, release: 'replaced' },
  { flows: 2 * CHUNK_RECORDS + 1_234, release: 'deleted' },
] as const;

/** n distinct flows as packed records, and as the keys/values updateBatch takes. */
function flows(n: number, from = 0): { records: Buffer; keys: Buffer; values: Buffer } {
  const records = Buffer.alloc(n * FLOW_RECORD_SIZE);
  const keys = Buffer.alloc(n * FLOW_KEY.size);
  const values = Buffer.alloc(n * (FLOW_RECORD_SIZE - FLOW_KEY.size));
  const src = Buffer.alloc(16);
  const dst = Buffer.alloc(16);
  src[10] = src[11] = dst[10] = dst[11] = 0xff;
  dst.writeUInt32BE(0xc6120001, 12);
  for (let i = 0; i < n; i++) {
    src.writeUInt32BE((0x0a000000 + from + i) >>> 0, 12);
    const at = i * FLOW_RECORD_SIZE;
    encodeFlowKey(
      {
        family: 4,
        srcAddr: src,
        dstAddr: dst,
        srcPort: 1024 + (i % 50_000),
        dstPort: 9,
        protocol: 17,
        vlan: 0,
        innerVlan: 0,
        ifindex: 3,
        direction: i % 2 ? 'egress' : 'ingress',
      },
      records,
      at,
    );
    encodeFlowValue(
      {
        packets: i + 1,
        bytes: 100 * (i + 1),
        droppedPackets: 0,
        droppedBytes: 0,
        firstSeenNs: 1_000_000_000n + BigInt(i),
        lastSeenNs: 2_000_000_000n + BigInt(i),
        ruleId: 0,
        tcpFlags: 0,
      },
      records,
      at + FLOW_KEY.size,
    );
    records.copy(keys, i * FLOW_KEY.size, at, at + FLOW_KEY.size);
    records.copy(values, i * (FLOW_RECORD_SIZE - FLOW_KEY.size), at + FLOW_KEY.size, at + FLOW_RECORD_SIZE);
  }
  return { records, keys, values };
}

/** Records as sorted hex strings: an order-free comparison. */
function recordSet(buf: Buffer): string[] {
  const out: string[] = [];
  for (let at = 0; at < buf.length; at += FLOW_RECORD_SIZE) {
    out.push(buf.subarray(at, at + FLOW_RECORD_SIZE).toString('hex'));
  }
  return out.sort();
}

const activeMap = (dp: Datapath): string => ((dp.config().flowSlot & 1) === 0 ? 'flows_a' : 'flows_b');

function testCollector(dp: Datapath, spool: Spool, onDrain: (s: DrainSummary) => void = () => undefined): Collector {
  const log = createLogger('test');
  log.level = 'warn';
  return new Collector({
    dp,
    spool,
    clock: new MonotonicClock(),
    host: 'test-host',
    ifaceNames: () => ({ 3: 'eth3' }),
    log,
    onDrain,
  });
}

function tempSpool(t: TestContext): { dir: string; spool: Spool } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-collector-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, spool: new Spool(dir, 1 << 30) };
}

/** A UDP frame of its own flow (source port 1000 + i). */
const udpFrame = (i: number): Buffer =>
  buildFrame({ ipv4: { src: '10.9.0.1', dst: '10.9.0.2' }, udp: { sport: 1000 + i, dport: 53 }, payload: 10 });

for (const { flows: FLOWS, release } of RELEASES) {
  test(`a drain of more flows than a chunk spools every flow exactly once, and empties the slot (${release})`, async (t) => {
    await withTestDatapath(
      t,
      async ({ dp }) => {
        assert.equal(FLOWS >= MAX_FLOWS * REPLACE_FLOW_MAP_SHARE, release === 'replaced', 'the release path tested');
        const { dir, spool } = tempSpool(t);
        const drained: DrainSummary[] = [];
        const collector = testCollector(dp, spool, (s) => drained.push(s));
        const want = flows(FLOWS);
        const map = activeMap(dp);
        const mapId = dp.native.mapInfo(map).id;
        await dp.native.updateBatch(map, want.keys, want.values);

        const summary = await collector.drain('interval');
        assert.equal(summary.flows, FLOWS);
        assert.equal(summary.evicted, 0);
        assert.equal((await dp.native.dumpAll(map)).length, 0, 'the drained slot is released (empty)');
        assert.equal(dp.native.mapInfo(map).id !== mapId, release === 'replaced', 'a new map only when replaced');

        const [info, ...more] = spool.list();
        assert.equal(more.length, 0);
        assert.equal(info!.token, summary.token);
        assert.equal(info!.rows, FLOWS);
        const batch = readBatch(spool, info!);
        assert.equal(batch.flows, FLOWS);
        assert.deepEqual(batch.meta.ifaces, { 3: 'eth3' });
        assert.equal(batch.records.length, FLOWS * FLOW_RECORD_SIZE);
        assert.deepEqual(recordSet(batch.records), recordSet(want.records));

        // The same batch a slice at a time (what the shipper reads), through a reused buffer.
        const reader = spool.open(info!);
        try {
          const parts: Buffer[] = [];
          for (const slice of reader.slices(Buffer.alloc(1000 * FLOW_RECORD_SIZE))) parts.push(Buffer.from(slice));
          assert.ok(Buffer.concat(parts).equals(batch.records));
        } finally {
          reader.close();
        }

        // A drain of nothing writes no batch at all, and leaves no temp file behind.
        const empty = await collector.drain('interval');
        assert.equal(empty.flows, 0);
        assert.equal(spool.list().length, 1);
        assert.deepEqual(
          readdirSync(dir).filter((f) => f.endsWith('.tmp')),
          [],
        );

        // The programs now write the released slot: they count into its (new or emptied) map, exactly.
        assert.equal(activeMap(dp), map);
        for (let i = 0; i < 3; i++) dp.testRun('xdp', udpFrame(i), { repeat: i + 2 });
        const counted = await collector.drain('interval');
        assert.equal(counted.flows, 3);
        const last = spool.list().find((b) => b.token === counted.token)!;
        const packets = [...decodeFlowRecords(readBatch(spool, last).records)].map((f) => [f.srcPort, f.packets]);
        assert.deepEqual(
          packets.sort((a, b) => a[0]! - b[0]!),
          [
            [1000, 2],
            [1001, 3],
            [1002, 4],
          ],
        );
        assert.equal(drained.length, 3);
      },
      { maxFlows: MAX_FLOWS },
    );
  });
}

/*
 * An agent that died after spooling a batch but before releasing its slot:
 * recover() finds the batch spooled, does not read the slot again, and
 * releases it by its insert counter (nothing read says how full it is).
 */
for (const { share, release } of [
  { share: REPLACE_FLOW_MAP_SHARE + 0.05, release: 'replaced' },
  { share: REPLACE_FLOW_MAP_SHARE - 0.05, release: 'deleted' },
] as const) {
  test(`recovery releases a slot whose batch is already spooled (${release})`, async (t) => {
    const maxFlows = 8192;
    await withTestDatapath(
      t,
      async ({ dp }) => {
        const { spool } = tempSpool(t);
        const n = Math.round(maxFlows * share);
        // Flows the programs inserted (so the slot's insert counter has them), one frame each.
        for (let i = 0; i < n; i++) dp.testRun('xdp', udpFrame(i));
        const map = activeMap(dp);
        const mapId = dp.native.mapInfo(map).id;
        const insertCounter = (): number =>
          decodeSlotStats(dp.native.lookup('slot_stats', u32Key(map === 'flows_a' ? 0 : 1))!).newFlows;
        assert.equal(insertCounter(), n);

        const crashing = testCollector(dp, spool);
        const releaseSlot = dp.releaseSlot.bind(dp);
        dp.releaseSlot = () => Promise.reject(new Error('killed before the release'));
        await assert.rejects(crashing.drain('interval'), /killed before the release/);
        dp.releaseSlot = releaseSlot;
        assert.equal(spool.list().length, 1);
        assert.equal(spool.list()[0]!.rows, n);
        assert.equal(recordSet(await dp.native.dumpAll(map)).length, n, 'the slot is not released');

        const summary = await testCollector(dp, spool).recover();
        assert.equal(summary.alreadySpooled, true);
        assert.equal(spool.list().length, 1, 'spooled once');
        assert.equal((await dp.native.dumpAll(map)).length, 0, 'released');
        assert.equal(dp.native.mapInfo(map).id !== mapId, release === 'replaced', 'a new map only when replaced');
        assert.equal(insertCounter(), 0, 'its insert counter reset');
      },
      { maxFlows },
    );
  });
}

test('a drain that failed after spooling is finished by the next one: no flow spooled twice', async (t) => {
  await withTestDatapath(
    t,
    async ({ dp }) => {
      const { spool } = tempSpool(t);
      const collector = testCollector(dp, spool);
      for (let i = 0; i < 5; i++) dp.testRun('xdp', udpFrame(i));
      // The spool bound fails right after the batch is written: the slot is not released.
      const releaseSlot = dp.releaseSlot.bind(dp);
      dp.releaseSlot = () => Promise.reject(new Error('release failed'));
      await assert.rejects(collector.drain('interval'), /release failed/);
      dp.releaseSlot = releaseSlot;
      for (let i = 5; i < 7; i++) dp.testRun('xdp', udpFrame(i));
      const next = await collector.drain('interval');
      assert.equal(next.flows, 2, 'the next drain has the new flows only');
      const last = await collector.drain('interval');
      assert.equal(last.flows, 0, 'and no drain comes back to the old slot with the first five');
      const ports = spool
        .list()
        .flatMap((b) => [...decodeFlowRecords(readBatch(spool, b).records)].map((f) => f.srcPort))
        .sort((a, b) => a - b);
      assert.deepEqual(ports, [1000, 1001, 1002, 1003, 1004, 1005, 1006]);
    },
    { maxFlows: 8192 },
  );
});

test('readSlotChunks reads a slot exactly even through a buffer smaller than a hash bucket', async (t) => {
  await withTestDatapath(
    t,
    async ({ dp }) => {
      const n = 5000;
      const want = flows(n, 1_000_000);
      const { slot } = dp.idleSlot();
      const map = slot === 0 ? 'flows_a' : 'flows_b';
      await dp.native.updateBatch(map, want.keys, want.values);
      const got: Buffer[] = [];
      // One record at a time: buckets of two or more flows need (and get) a bigger buffer.
      const read = await dp.readSlotChunks(slot, Buffer.alloc(FLOW_RECORD_SIZE), (records) => {
        got.push(Buffer.from(records));
      });
      assert.equal(read.count, n);
      assert.deepEqual(recordSet(Buffer.concat(got)), recordSet(want.records));
      assert.equal(recordSet(await dp.native.dumpAll(map)).length, n, 'reading deletes nothing');
      await dp.releaseSlot(slot);
      assert.equal((await dp.native.dumpAll(map)).length, 0);
    },
    { maxFlows: 8192 },
  );
});
