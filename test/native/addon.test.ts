/**
 * Smoke test of the native addon (native/src, contract in native/index.ts)
 * against the real datapath object: pins, adoption, config mapping, batch
 * map operations, test runs, XDP/TC attach on a veth pair of our own.
 *
 * Run as root: node --import tsx --test test/native/addon.test.ts
 * Without root the kernel-facing tests skip, except under CI=true where they fail.
 * Everything created here (bpffs mounts under /tmp, the fgn0/fgn1 veth pair) is removed at the end.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  datapathBuildDir,
  flowgateObjectPath,
  loadNative,
  type NativeBinding,
  type NativeDatapath,
  type OpenOptions,
} from '../../native/index.js';
import { eventually } from '../lib/eventually.js';
import { requirePrivileges } from '../lib/privileges.js';
import { LAYOUT_VERSION } from '../../control/datapath/layout.js';

const isRoot = process.getuid?.() === 0;

/** A test that needs root: runs as root, fails under CI=true without root, skips otherwise (test/lib/privileges.ts). */
function rootTest(name: string, fn: (t: TestContext) => void | Promise<void>): void {
  test(name, async (t) => {
    if (!requirePrivileges(t, ['root'])) return;
    await fn(t);
  });
}

const VETH_A = 'fgn0';
const VETH_B = 'fgn1';
const MAX_FLOWS = 65536;

const native: NativeBinding = loadNative();
const L = native.layout();
const C = native.constants();
const KEY = L.fg_flow_key!;
const VALUE = L.fg_flow_value!;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function tryIp(...args: string[]): void {
  try {
    ip(...args);
  } catch {
    /* already gone */
  }
}

function errCode(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
  return undefined;
}

/** Records of dumpAll/lookupAndDeleteAll, as hex strings, sorted: order-free comparison. */
function records(buf: Buffer, recordSize: number): string[] {
  assert.equal(buf.length % recordSize, 0);
  const out: string[] = [];
  for (let off = 0; off < buf.length; off += recordSize) out.push(buf.subarray(off, off + recordSize).toString('hex'));
  return out.sort();
}

function flowKey(i: number): Buffer {
  const k = Buffer.alloc(KEY.size);
  k[10] = 0xff;
  k[11] = 0xff;
  k.writeUInt32BE(0x0a000000 + i, 12); // ::ffff:10.x.y.z
  k[26] = 0xff;
  k[27] = 0xff;
  k.writeUInt32BE(0xc0a80001, 28);
  k.writeUInt16LE(1024 + (i % 60000), KEY.fields.src_port!.offset);
  k.writeUInt16LE(443, KEY.fields.dst_port!.offset);
  k.writeUInt32LE(7, KEY.fields.ifindex!.offset);
  k[KEY.fields.protocol!.offset] = 6;
  k[KEY.fields.family!.offset] = C.FG_FAMILY_IPV4!;
  k[KEY.fields.direction!.offset] = C.FG_DIR_INGRESS!;
  return k;
}

function flowValue(i: number): Buffer {
  const v = Buffer.alloc(VALUE.size);
  v.writeBigUInt64LE(BigInt(i + 1), VALUE.fields.packets!.offset);
  v.writeBigUInt64LE(BigInt((i + 1) * 100), VALUE.fields.bytes!.offset);
  return v;
}

function flowBatch(n: number, from = 0): { keys: Buffer; values: Buffer; recs: string[] } {
  const keys: Buffer[] = [];
  const values: Buffer[] = [];
  const recs: string[] = [];
  for (let i = from; i < from + n; i++) {
    const k = flowKey(i);
    const v = flowValue(i);
    keys.push(k);
    values.push(v);
    recs.push(Buffer.concat([k, v]).toString('hex'));
  }
  return { keys: Buffer.concat(keys), values: Buffer.concat(values), recs: recs.sort() };
}

/** Ethernet + IPv4 + UDP, 64 bytes. */
function udpFrame(): Buffer {
  const f = Buffer.alloc(64);
  f.set([0x02, 0, 0, 0, 0, 2], 0);
  f.set([0x02, 0, 0, 0, 0, 1], 6);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f.writeUInt16BE(50, 16);
  f[22] = 64;
  f[23] = 17;
  f.set([10, 0, 0, 1], 26);
  f.set([10, 0, 0, 2], 30);
  f.writeUInt16BE(1234, 34);
  f.writeUInt16BE(53, 36);
  f.writeUInt16BE(30, 38);
  return f;
}

interface BpftoolMap {
  id: number;
  btf_id?: number;
}

function bpftoolMap(...args: string[]): BpftoolMap {
  return JSON.parse(execFileSync('bpftool', ['-j', 'map', ...args], { encoding: 'utf8' })) as BpftoolMap;
}

/** Resolves once no map has this id any more (the kernel frees a map after a grace period). */
function mapFreed(id: number): Promise<true> {
  return eventually(
    async () => {
      try {
        bpftoolMap('show', 'id', String(id));
        return undefined;
      } catch {
        return true;
      }
    },
    `map ${id} to be freed`,
    5_000,
  );
}

/** Packets of the one flow dumpAll found (there must be exactly one). */
function onlyFlowPackets(dump: Buffer): bigint {
  assert.equal(dump.length, KEY.size + VALUE.size, 'exactly one flow');
  return dump.readBigUInt64LE(KEY.size + VALUE.fields.packets!.offset);
}

describe('layout and constants (no root needed)', () => {
  // Sizes and offsets are pinned against the TS decoder in test/unit/layout.test.ts.
  test('every struct is tiled by its fields (no implicit padding)', () => {
    for (const [name, s] of Object.entries(L)) {
      const fields = Object.values(s.fields).sort((a, b) => a.offset - b.offset);
      let at = 0;
      for (const f of fields) {
        assert.equal(f.offset, at, `${name}: gap or overlap at ${at}`);
        at += f.size;
      }
      assert.equal(at, s.size, `${name}: fields end at ${at}, struct is ${s.size}`);
    }
  });

  test('constants', () => {
    assert.equal(C.FG_LAYOUT_VERSION, LAYOUT_VERSION);
    assert.equal(C.XDP_PASS, 2);
    assert.equal(C.XDP_DROP, 1);
    assert.equal(C.TC_ACT_OK, 0);
    assert.equal(C.TC_ACT_SHOT, 2);
    assert.equal(C.TC_ACT_UNSPEC, -1);
    assert.equal(C.FG_MAL_REASONS, 13);
    assert.equal(C.FG_MAX_COMPLEX_RULES, 4096);
    assert.equal(C.FG_TC_HANDLE, 0xf10e);
    assert.equal(typeof C.FG_TC_PRIORITY, 'number');
  });

  test('ifindex, possibleCpus, errors with .code', () => {
    assert.ok(native.possibleCpus() >= 1);
    assert.ok(native.ifindex('lo') >= 1);
    try {
      native.ifindex('fg-no-such0');
      assert.fail('expected ENODEV');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      assert.equal(err.code, 'ENODEV');
      assert.equal(err.errno, 19);
      assert.match(err.message, /fg-no-such0/);
    }
  });

  test('open() validates its options before any syscall', () => {
    const base = {
      objectPath: flowgateObjectPath,
      bpffs: '/nonexistent',
      maxFlows: 4096,
      maxRules: 64,
      maxPrefixes: 64,
    };
    for (const [field, bad] of [
      ['maxFlows', 10],
      ['maxFlows', 5000.5],
      ['maxRules', 0],
      ['maxPrefixes', -1],
      ['bpffs', ''],
      ['objectPath', 3],
    ] as const) {
      assert.throws(
        () => native.open({ ...base, [field]: bad } as unknown as OpenOptions),
        (e: NodeJS.ErrnoException) => e instanceof TypeError && e.message.includes(field) && e.code === 'EINVAL',
        `${field}=${bad}`,
      );
    }
  });
});

describe('datapath (root)', () => {
  let tmp = '';
  let bpffs = '';
  let dp: NativeDatapath | undefined;
  let opts: OpenOptions;
  const mounts: string[] = [];

  const pins = (sub: string): string[] => {
    try {
      return fs.readdirSync(path.join(bpffs, sub)).sort();
    } catch {
      return [];
    }
  };

  /** The flow slot the programs do not write now: its map, the other one, and its pin. */
  const idleFlowMap = (): {
    slotOff: number;
    active: number;
    idle: number;
    name: string;
    other: string;
    pin: string;
  } => {
    const slotOff = L.fg_config!.fields.flow_slot!.offset;
    const active = dp!.readConfig().readUInt32LE(slotOff) & 1;
    const idle = active ^ 1;
    const name = idle ? 'flows_b' : 'flows_a';
    return { slotOff, active, idle, name, other: idle ? 'flows_a' : 'flows_b', pin: path.join(bpffs, 'maps', name) };
  };

  before(() => {
    if (!isRoot) return;
    assert.ok(fs.existsSync(flowgateObjectPath), `${flowgateObjectPath} missing: run make -C datapath`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fg-native-'));
    bpffs = path.join(tmp, 'bpf');
    mounts.push(bpffs);
    opts = { objectPath: flowgateObjectPath, bpffs, maxFlows: MAX_FLOWS, maxRules: 256, maxPrefixes: 4096 };
    tryIp('link', 'del', VETH_A);
    ip('link', 'add', VETH_A, 'type', 'veth', 'peer', 'name', VETH_B);
    ip('link', 'set', VETH_A, 'up');
    ip('link', 'set', VETH_B, 'up');
  });

  after(() => {
    if (!isRoot) return;
    try {
      dp?.unpinAll();
    } catch {
      /* best effort */
    }
    dp?.close();
    tryIp('link', 'del', VETH_A);
    for (const m of mounts.reverse()) {
      try {
        execFileSync('umount', [m], { stdio: 'ignore' });
      } catch {
        /* not mounted */
      }
    }
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  rootTest('open() mounts bpffs and creates every pin', () => {
    dp = native.open(opts);
    assert.equal(dp.adopted, false);
    assert.equal(dp.pinDir, bpffs);
    const mountInfo = fs.readFileSync('/proc/self/mounts', 'utf8');
    assert.ok(mountInfo.split('\n').some((l) => l.split(' ')[1] === bpffs && l.split(' ')[2] === 'bpf'));
    for (const m of ['config', 'flows_a', 'flows_b', 'flow_slots', 'slot_stats', 'iface_stats', 'rule_stats']) {
      assert.ok(pins('maps').includes(m), `maps/${m} pinned`);
    }
    for (const m of ['src_lpm_0', 'src_lpm_1', 'dst_lpm_0', 'dst_lpm_1', 'complex_0', 'complex_1']) {
      assert.ok(pins('maps').includes(m), `maps/${m} pinned`);
    }
    assert.deepEqual(pins('progs'), ['tc_egress', 'tc_ingress', 'xdp']);
    assert.deepEqual(pins('links'), []);

    const flows = dp.mapInfo('flows_a');
    assert.equal(flows.maxEntries, MAX_FLOWS);
    assert.equal(flows.keySize, KEY.size);
    assert.equal(flows.valueSize, VALUE.size);
    assert.equal(flows.perCpu, false);
    assert.equal(dp.mapInfo('rule_stats').maxEntries, 256);
    assert.equal(dp.mapInfo('rule_stats').perCpu, true);
    assert.equal(dp.mapInfo('src_lpm_0').maxEntries, 4096);
    assert.equal(
      errCode(() => dp!.mapInfo('nope')),
      'ENOENT',
    );
  });

  rootTest('a second open() adopts the same maps', () => {
    const again = native.open({ ...opts, maxFlows: 2048 });
    try {
      assert.equal(again.adopted, true);
      for (const m of ['config', 'flows_a', 'flows_b', 'rule_stats', 'src_lpm_1']) {
        assert.equal(again.mapInfo(m).id, dp!.mapInfo(m).id, m);
      }
      assert.equal(again.mapInfo('flows_a').maxEntries, MAX_FLOWS, 'sizes come from the pins');
    } finally {
      again.close();
    }
  });

  rootTest('config: readConfig / writeConfigU32 round trip through the mapping', () => {
    const cfg = L.fg_config!.fields;
    const before = dp!.readConfig();
    assert.equal(before.length, L.fg_config!.size);
    assert.equal(before.readUInt32LE(cfg.layout_version!.offset), C.FG_LAYOUT_VERSION);
    assert.equal(before.readUInt32LE(cfg.max_flows!.offset), MAX_FLOWS);
    assert.equal(before.readUInt32LE(cfg.max_rules!.offset), 256);
    assert.equal(before.readUInt32LE(cfg.max_prefixes!.offset), 4096);

    dp!.writeConfigU32(cfg.rule_gen!.offset, 0xdeadbeef);
    assert.equal(dp!.readConfig().readUInt32LE(cfg.rule_gen!.offset), 0xdeadbeef);
    const other = native.open(opts);
    assert.equal(other.readConfig().readUInt32LE(cfg.rule_gen!.offset), 0xdeadbeef, 'shared with the kernel');
    other.close();
    dp!.writeConfigU32(cfg.rule_gen!.offset, 0);
    dp!.synchronize();

    assert.throws(() => dp!.writeConfigU32(2, 1), RangeError);
    assert.throws(() => dp!.writeConfigU32(L.fg_config!.size, 1), RangeError);
    assert.throws(() => dp!.writeConfigU32(-4, 1), RangeError);
    assert.throws(() => dp!.writeConfigU32(4, 2 ** 32), RangeError);
  });

  rootTest('a layout version mismatch refuses adoption', () => {
    const off = L.fg_config!.fields.layout_version!.offset;
    dp!.writeConfigU32(off, 999);
    try {
      assert.throws(
        () => native.open(opts),
        (e: NodeJS.ErrnoException) => e.code === 'ESTALE' && /layout v999/.test(e.message) && /--unpin/.test(e.message),
      );
    } finally {
      dp!.writeConfigU32(off, C.FG_LAYOUT_VERSION!);
    }
  });

  rootTest('flows_a: updateBatch, dumpAll, lookup, lookupAndDeleteAll', async () => {
    const rec = KEY.size + VALUE.size;
    const { keys, values, recs } = flowBatch(3);
    await dp!.updateBatch('flows_a', keys, values);
    assert.deepEqual(records(await dp!.dumpAll('flows_a'), rec), recs);
    assert.deepEqual(dp!.lookup('flows_a', flowKey(1)), flowValue(1));
    assert.equal(dp!.lookup('flows_a', flowKey(99)), null);
    assert.deepEqual(records(await dp!.lookupAndDeleteAll('flows_a'), rec), recs);
    assert.equal((await dp!.dumpAll('flows_a')).length, 0);
    assert.equal((await dp!.lookupAndDeleteAll('flows_a')).length, 0);

    // Bad shapes reject with TypeError (code EINVAL), never half-apply.
    await assert.rejects(dp!.updateBatch('flows_a', keys.subarray(1), values), TypeError);
    await assert.rejects(dp!.updateBatch('flows_a', keys, values.subarray(0, VALUE.size)), TypeError);
    await assert.rejects(dp!.deleteBatch('flows_a', Buffer.alloc(5)), TypeError);
    await assert.rejects(dp!.dumpAll('nope'), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
    assert.throws(() => dp!.lookup('flows_a', Buffer.alloc(3)), TypeError);
  });

  rootTest('flows_b: many batches, deleteBatch, drainBaseline', async () => {
    const rec = KEY.size + VALUE.size;
    const n = 20000; // several kernel batches
    const big = flowBatch(n);
    await dp!.updateBatch('flows_b', big.keys, big.values);
    const dumped = records(await dp!.dumpAll('flows_b'), rec);
    assert.equal(dumped.length, n);
    assert.deepEqual(dumped, big.recs);

    // Delete the first 100 keys plus one that is absent (skipped, not an error).
    await dp!.deleteBatch('flows_b', Buffer.concat([big.keys.subarray(0, 100 * KEY.size), flowKey(n + 5)]));
    assert.equal(dp!.lookup('flows_b', flowKey(0)), null);
    const drained = records(await dp!.lookupAndDeleteAll('flows_b'), rec);
    assert.equal(drained.length, n - 100);

    await dp!.updateBatch('flows_b', big.keys, big.values);
    const timing = await dp!.drainBaseline('flows_b');
    assert.equal(timing.count, n);
    assert.ok(timing.ns > 0);
    assert.equal((await dp!.dumpAll('flows_b')).length, 0);
    await assert.rejects(dp!.drainBaseline('rule_stats'), (e: NodeJS.ErrnoException) => e.code === 'EINVAL');
  });

  rootTest('flows_b: dumpChunk reads the map exactly once, a reused buffer at a time', async () => {
    const rec = KEY.size + VALUE.size;
    const n = 20000;
    const big = flowBatch(n);
    await dp!.updateBatch('flows_b', big.keys, big.values);
    try {
      // Chunks of a few records, a prime number of them, a kernel batch, and more than the map holds.
      for (const size of [7, 997, 4096, 65536]) {
        const buf = Buffer.alloc(size * rec);
        const got: string[] = [];
        let cursor: Buffer | null = null;
        let calls = 0;
        do {
          const chunk: { count: number; next: Buffer | null } = await dp!.dumpChunk('flows_b', buf, cursor);
          assert.ok(chunk.count <= size);
          assert.ok(chunk.count > 0 || chunk.next === null, 'only the last chunk may be empty');
          got.push(...records(buf.subarray(0, chunk.count * rec), rec));
          cursor = chunk.next;
          calls++;
        } while (cursor);
        assert.equal(got.length, n, `chunks of ${size}: every flow`);
        assert.deepEqual(got.sort(), big.recs, `chunks of ${size}: each flow once`);
        assert.ok(calls >= Math.ceil(n / size), `chunks of ${size}: never more than the buffer holds`);
      }
      // Nothing was deleted.
      assert.equal(records(await dp!.dumpAll('flows_b'), rec).length, n);
      // An empty map: one chunk of nothing, no cursor.
      await dp!.drainBaseline('flows_b');
      assert.deepEqual(await dp!.dumpChunk('flows_b', Buffer.alloc(rec), null), { count: 0, next: null });
      // Bad shapes: a buffer that is not whole records, a foreign cursor, a map that is neither a hash nor an array.
      await assert.rejects(dp!.dumpChunk('flows_b', Buffer.alloc(rec + 1), null), TypeError);
      await assert.rejects(dp!.dumpChunk('flows_b', Buffer.alloc(0), null), TypeError);
      await assert.rejects(dp!.dumpChunk('flows_b', Buffer.alloc(rec), Buffer.alloc(3)), TypeError);
      await assert.rejects(
        dp!.dumpChunk('src_lpm_0', Buffer.alloc(L.fg_lpm_key!.size + L.fg_lpm_verdict!.size), null),
        (e: NodeJS.ErrnoException) => e.code === 'EINVAL',
      );
      // An array reads from index 0: a chunk of three is entries 0, 1 and 2 (rule counters up to the ids in use).
      const statsRec = 4 + L.fg_rule_stats!.size;
      const three = await dp!.dumpChunk('rule_stats', Buffer.alloc(3 * statsRec), null);
      assert.equal(three.count, 3);
    } finally {
      await dp!.drainBaseline('flows_b');
    }
  });

  rootTest('per-CPU maps: values replicated in, summed out', async () => {
    const cpus = native.possibleCpus();
    const key = Buffer.alloc(4);
    key.writeUInt32LE(5);
    const v = Buffer.alloc(L.fg_rule_stats!.size);
    v.writeBigUInt64LE(3n, L.fg_rule_stats!.fields.packets!.offset);
    v.writeBigUInt64LE(100n, L.fg_rule_stats!.fields.bytes!.offset);
    dp!.update('rule_stats', key, v);
    const got = dp!.lookup('rule_stats', key)!;
    assert.equal(got.length, L.fg_rule_stats!.size);
    assert.equal(got.readBigUInt64LE(0), 3n * BigInt(cpus));
    assert.equal(got.readBigUInt64LE(8), 100n * BigInt(cpus));

    const all = await dp!.dumpAll('rule_stats');
    const recSize = 4 + L.fg_rule_stats!.size;
    assert.equal(all.length, 256 * recSize, 'an array dumps every index');
    const at5 = all.subarray(5 * recSize, 6 * recSize);
    assert.equal(at5.readUInt32LE(0), 5);
    assert.equal(at5.readBigUInt64LE(4), 3n * BigInt(cpus));

    // Batch update of a per-CPU array, then clear() zeroes every index.
    const keys = Buffer.alloc(8);
    keys.writeUInt32LE(1, 0);
    keys.writeUInt32LE(2, 4);
    await dp!.updateBatch('rule_stats', keys, Buffer.concat([v, v]));
    assert.equal(dp!.lookup('rule_stats', keys.subarray(4))!.readBigUInt64LE(0), 3n * BigInt(cpus));
    assert.equal(await dp!.clear('rule_stats'), 256);
    assert.equal(dp!.lookup('rule_stats', key)!.readBigUInt64LE(0), 0n);
    await assert.rejects(dp!.lookupAndDeleteAll('rule_stats'), (e: NodeJS.ErrnoException) => e.code === 'EINVAL');
  });

  rootTest('LPM tries: per-element fallback for batch ops, clear()', async () => {
    const lk = L.fg_lpm_key!;
    const lv = L.fg_lpm_verdict!;
    const keys: Buffer[] = [];
    const values: Buffer[] = [];
    for (let i = 0; i < 3; i++) {
      const k = Buffer.alloc(lk.size);
      k.writeUInt32LE(8 + 24, lk.fields.prefixlen!.offset);
      k[lk.fields.data!.offset] = C.FG_FAMILY_IPV4!;
      k.set([10, i, 0, 0], lk.fields.data!.offset + 1);
      const v = Buffer.alloc(lv.size);
      v.writeUInt32LE(i + 1, lv.fields.rule_id!.offset);
      v[lv.fields.action!.offset] = C.FG_ACTION_DROP!;
      keys.push(k);
      values.push(v);
    }
    await dp!.updateBatch('src_lpm_0', Buffer.concat(keys), Buffer.concat(values));
    const rec = lk.size + lv.size;
    assert.equal((await dp!.dumpAll('src_lpm_0')).length, 3 * rec);
    await dp!.deleteBatch('src_lpm_0', keys[0]!);
    assert.equal(dp!.lookup('src_lpm_0', keys[0]!), null);
    assert.deepEqual(dp!.lookup('src_lpm_0', keys[1]!), values[1]);
    assert.equal(await dp!.clear('src_lpm_0'), 2);
    assert.equal((await dp!.dumpAll('src_lpm_0')).length, 0);

    const { keys: fk, values: fv } = flowBatch(10);
    await dp!.clear('flows_a');
    await dp!.updateBatch('flows_a', fk, fv);
    assert.equal(await dp!.clear('flows_a'), 10);
    assert.equal(await dp!.clear('flows_a'), 0);
  });

  rootTest('testRun: XDP passes a UDP frame, TC accepts context options', () => {
    const frame = udpFrame();
    const xdp = dp!.testRun('xdp', frame, { repeat: 10 });
    assert.equal(xdp.retval, C.XDP_PASS);
    assert.ok(xdp.durationNs >= 0);
    assert.deepEqual(xdp.frameOut, frame);
    assert.equal(dp!.testRun('xdp', frame, { ifindex: native.ifindex('lo') }).retval, C.XDP_PASS);

    for (const hook of ['tc_egress', 'tc_ingress'] as const) {
      const tc = dp!.testRun(hook, frame, { ifindex: native.ifindex(VETH_A), gsoSegs: 1, gsoSize: 0 });
      assert.ok([C.TC_ACT_OK, C.TC_ACT_UNSPEC].includes(tc.retval), `${hook} retval ${tc.retval}`);
    }
    assert.equal(
      errCode(() => dp!.testRun('xdp', Buffer.alloc(4))),
      'EINVAL',
      'a frame shorter than Ethernet is refused',
    );
    assert.throws(() => dp!.testRun('bogus' as 'xdp', frame), TypeError);
  });

  rootTest(
    'replaceFlowMap: the idle slot gets a new empty map, pinned, counted into; the old one is freed',
    async () => {
      const { slotOff, active, idle, name, other, pin } = idleFlowMap();
      const big = flowBatch(20000);
      await dp!.updateBatch(name, big.keys, big.values);
      const old = dp!.mapInfo(name);
      const oldPinned = bpftoolMap('show', 'pinned', pin);
      assert.equal(oldPinned.id, old.id);
      assert.ok((oldPinned.btf_id ?? 0) > 0, 'libbpf created the flow maps with BTF');

      await dp!.replaceFlowMap(idle);
      const now = dp!.mapInfo(name);
      assert.notEqual(now.id, old.id);
      assert.deepEqual({ ...now, id: 0 }, { ...old, id: 0 }, 'same type, sizes and max_entries');
      const pinned = bpftoolMap('show', 'pinned', pin);
      assert.equal(pinned.id, now.id, 'the pin names the new map');
      assert.equal(pinned.btf_id, oldPinned.btf_id, 'with the old map’s BTF');
      assert.deepEqual(
        pins('maps').filter((n) => n.endsWith('_new')),
        [],
        'no temporary pin left',
      );
      assert.equal((await dp!.dumpAll(name)).length, 0, 'the 20,000 flows are gone with the old map');
      await mapFreed(old.id);

      // Programs count into the new map once its slot is the active one, and only there.
      const otherBefore = records(await dp!.dumpAll(other), KEY.size + VALUE.size);
      dp!.writeConfigU32(slotOff, idle);
      dp!.synchronize();
      try {
        dp!.testRun('xdp', udpFrame(), { repeat: 7 });
        assert.equal(onlyFlowPackets(await dp!.dumpAll(name)), 7n);
        assert.deepEqual(records(await dp!.dumpAll(other), KEY.size + VALUE.size), otherBefore);
      } finally {
        dp!.writeConfigU32(slotOff, active);
        dp!.synchronize();
      }

      // A restarted agent adopts the new map.
      const again = native.open(opts);
      try {
        assert.equal(again.mapInfo(name).id, now.id);
        assert.equal(onlyFlowPackets(await again.dumpAll(name)), 7n);
      } finally {
        again.close();
      }

      // The slot the programs write is refused; a slot that is neither 0 nor 1 is a TypeError.
      const activeId = dp!.mapInfo(other).id;
      await assert.rejects(dp!.replaceFlowMap(active), (e: NodeJS.ErrnoException) => e.code === 'EBUSY');
      assert.equal(dp!.mapInfo(other).id, activeId);
      await assert.rejects(dp!.replaceFlowMap(2), TypeError);
      await dp!.clear(name);
    },
  );

  rootTest('adoption follows flow_slots when a replace died before its re-pin', async () => {
    const { slotOff, active, idle, name, other, pin } = idleFlowMap();
    const old = dp!.mapInfo(name);
    const createMap = (at: string): number => {
      execFileSync('bpftool', [
        'map',
        'create',
        at,
        'type',
        'lru_hash',
        'key',
        String(KEY.size),
        'value',
        String(VALUE.size),
        'entries',
        String(old.maxEntries),
        'name',
        name,
      ]);
      return bpftoolMap('show', 'pinned', at).id;
    };
    // The idle slot's replace died after the flow_slots update: the new map is in flow_slots and under
    // the temporary pin, the real pin still names the old map.
    const fresh = createMap(`${pin}_new`);
    execFileSync('bpftool', [
      'map',
      'update',
      'pinned',
      path.join(bpffs, 'maps', 'flow_slots'),
      'key',
      String(idle),
      '0',
      '0',
      '0',
      'value',
      'pinned',
      `${pin}_new`,
    ]);
    assert.equal(bpftoolMap('show', 'pinned', pin).id, old.id);
    // The active slot's replace died before it: a temporary pin of a map nothing uses.
    const otherPin = path.join(bpffs, 'maps', other);
    const orphan = createMap(`${otherPin}_new`);

    const again = native.open(opts);
    dp!.close();
    dp = again;
    assert.equal(dp.adopted, true);
    assert.equal(dp.mapInfo(name).id, fresh, 'the map flow_slots holds, not the pinned one');
    assert.equal(bpftoolMap('show', 'pinned', pin).id, fresh, 're-pinned');
    assert.equal(dp.mapInfo(other).id, bpftoolMap('show', 'pinned', otherPin).id);
    assert.notEqual(dp.mapInfo(other).id, orphan);
    assert.deepEqual(
      pins('maps').filter((n) => n.endsWith('_new')),
      [],
      'temporary pins removed',
    );
    await mapFreed(old.id);
    await mapFreed(orphan);

    // The programs count into the adopted map when its slot is active.
    dp.writeConfigU32(slotOff, idle);
    dp.synchronize();
    try {
      dp.testRun('xdp', udpFrame(), { repeat: 3 });
      assert.equal(onlyFlowPackets(await dp.dumpAll(name)), 3n);
    } finally {
      dp.writeConfigU32(slotOff, active);
      dp.synchronize();
    }
    await dp.clear(name);
  });

  rootTest('loadProgram: a separate object, no pins', () => {
    const obj = path.join(datapathBuildDir, 'xdp_pass.bpf.o');
    const h = native.loadProgram(obj, 'xdp_pass');
    assert.equal(h.testRun(udpFrame(), { repeat: 100 }).retval, C.XDP_PASS);
    h.close();
    h.close();
    assert.equal(
      errCode(() => h.testRun(udpFrame())),
      'EBADF',
    );
    assert.equal(
      errCode(() => native.loadProgram(obj, 'nope')),
      'ENOENT',
    );
    assert.equal(
      errCode(() => native.loadProgram('/nonexistent.bpf.o', 'x')),
      'ENOENT',
    );
  });

  rootTest('loadProgram: a verifier rejection carries the verifier log', () => {
    // clang builds datapath/ too (scripts/install-deps.sh), so it is there wherever these tests run.
    const src = path.join(tmp, 'bad.bpf.c');
    const obj = path.join(tmp, 'bad.bpf.o');
    fs.writeFileSync(
      src,
      [
        '#include <linux/bpf.h>',
        '#include <bpf/bpf_helpers.h>',
        'SEC("xdp") int bad(struct xdp_md *ctx) { int *p = (int *)(long)ctx->data; return *p; }',
        'char LICENSE[] SEC("license") = "GPL";',
      ].join('\n'),
    );
    execFileSync('clang', [
      '-O2',
      '-target',
      'bpf',
      `-I/usr/include/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`,
      '-c',
      src,
      '-o',
      obj,
    ]);
    assert.throws(
      () => native.loadProgram(obj, 'bad'),
      (e: NodeJS.ErrnoException) => e.code === 'EACCES' && /invalid access to packet/.test(e.message),
    );
  });

  rootTest('XDP: generic and native attach on a veth, adopt, detach', () => {
    const ifindex = native.ifindex(VETH_A);
    const gen = dp!.attachXdp(VETH_A, 'generic');
    assert.deepEqual(gen, { ifindex, hook: 'xdp', mode: 'generic', adopted: false });
    assert.deepEqual(pins('links'), [`xdp@${VETH_A}`]);
    assert.match(ip('-d', 'link', 'show', VETH_A), /xdpgeneric/);

    const again = dp!.attachXdp(VETH_A, 'generic');
    assert.equal(again.adopted, true);
    assert.equal(again.mode, 'generic');
    assert.deepEqual(
      dp!.attachments().filter((a) => a.hook === 'xdp'),
      [{ ifname: VETH_A, ifindex, hook: 'xdp', mode: 'generic' }],
    );
    // Asking for another mode keeps the running attachment and says so.
    assert.match(dp!.attachXdp(VETH_A, 'native').warning ?? '', /generic/);

    assert.equal(dp!.detach(VETH_A, 'xdp'), true);
    assert.equal(dp!.detach(VETH_A, 'xdp'), false);
    assert.deepEqual(pins('links'), []);
    assert.doesNotMatch(ip('-d', 'link', 'show', VETH_A), /prog\/xdp/);

    const nat = dp!.attachXdp(VETH_A, 'native');
    assert.equal(nat.mode, 'native');
    assert.equal(nat.adopted, false);
    assert.match(ip('-d', 'link', 'show', VETH_A), /xdpdrv|xdp /);
    assert.equal(dp!.detach(VETH_A, 'xdp'), true);

    const auto = dp!.attachXdp(VETH_A, 'auto');
    assert.equal(auto.mode, 'native', 'veth has native XDP');
    assert.equal(auto.warning, undefined);
    assert.equal(dp!.detach(VETH_A, 'xdp'), true);
  });

  rootTest('XDP: a foreign program is never replaced', () => {
    // Attached through netlink by bpftool, pinned in our own bpffs (iproute2's loader would write under /sys/fs/bpf).
    const obj = path.join(datapathBuildDir, 'xdp_pass.bpf.o');
    const foreign = path.join(bpffs, 'foreign_xdp');
    execFileSync('bpftool', ['prog', 'load', obj, foreign, 'type', 'xdp']);
    execFileSync('bpftool', ['net', 'attach', 'xdpgeneric', 'pinned', foreign, 'dev', VETH_B]);
    try {
      for (const mode of ['generic', 'native', 'auto'] as const) {
        assert.throws(
          () => dp!.attachXdp(VETH_B, mode),
          (e: NodeJS.ErrnoException) =>
            (e.code === 'EBUSY' || e.code === 'EEXIST') &&
            /not owned by flowgate/.test(e.message) &&
            e.message.includes(VETH_B),
          mode,
        );
      }
      assert.deepEqual(pins('links'), []);
    } finally {
      ip('link', 'set', 'dev', VETH_B, 'xdpgeneric', 'off');
      fs.unlinkSync(foreign);
    }
    assert.equal(
      errCode(() => dp!.attachXdp('fg-no-such0', 'generic')),
      'ENODEV',
    );
    assert.throws(() => dp!.attachXdp('../maps/config', 'generic'), TypeError);
    assert.throws(() => dp!.attachXdp(VETH_A, 'turbo' as 'native'), TypeError);
  });

  rootTest('TC: egress and ingress attach, adopt, detach', () => {
    const ifindex = native.ifindex(VETH_A);
    assert.deepEqual(dp!.attachTc(VETH_A, 'egress'), { ifindex, hook: 'tc_egress', adopted: false });
    assert.equal(dp!.attachTc(VETH_A, 'egress').adopted, true);
    assert.equal(dp!.attachTc(VETH_A, 'ingress').adopted, false);
    const filters = execFileSync('tc', ['filter', 'show', 'dev', VETH_A, 'egress'], { encoding: 'utf8' });
    assert.match(filters, /handle 0xf10e/);
    assert.match(filters, /direct-action/);

    const tcs = dp!.attachments().filter((a) => a.hook !== 'xdp');
    assert.deepEqual(
      tcs.sort((a, b) => a.hook.localeCompare(b.hook)),
      [
        { ifname: VETH_A, ifindex, hook: 'tc_egress' },
        { ifname: VETH_A, ifindex, hook: 'tc_ingress' },
      ],
    );
    assert.equal(dp!.detach(VETH_A, 'tc_egress'), true);
    assert.equal(dp!.detach(VETH_A, 'tc_egress'), false);
    assert.equal(dp!.detach(VETH_A, 'tc_ingress'), true);
    assert.deepEqual(dp!.attachments(), []);
    assert.equal(dp!.detach('fg-no-such0', 'tc_egress'), false);
  });

  rootTest('a pinned XDP link of a deleted interface is stale, not adopted', () => {
    dp!.attachXdp(VETH_A, 'generic');
    ip('link', 'del', VETH_A);
    ip('link', 'add', VETH_A, 'type', 'veth', 'peer', 'name', VETH_B);
    ip('link', 'set', VETH_A, 'up');
    ip('link', 'set', VETH_B, 'up');
    assert.deepEqual(dp!.attachments(), [], 'the defunct link is not an attachment');
    const res = dp!.attachXdp(VETH_A, 'generic');
    assert.equal(res.adopted, false);
    assert.equal(res.ifindex, native.ifindex(VETH_A));
    ip('link', 'del', VETH_A);
    assert.equal(dp!.detach(VETH_A, 'xdp'), false, 'gone with its interface');
    assert.deepEqual(pins('links'), [], 'stale pin removed');
    ip('link', 'add', VETH_A, 'type', 'veth', 'peer', 'name', VETH_B);
    ip('link', 'set', VETH_A, 'up');
    ip('link', 'set', VETH_B, 'up');
  });

  rootTest('a half-created pin directory is replaced, not adopted; old attachments move over', () => {
    const bpftool = (...args: string[]): { id: number; prog_id?: number } =>
      JSON.parse(execFileSync('bpftool', ['-j', ...args], { encoding: 'utf8' })) as { id: number; prog_id?: number };
    const xdpPin = path.join(bpffs, 'links', `xdp@${VETH_A}`);
    dp!.attachXdp(VETH_A, 'generic');
    dp!.attachTc(VETH_A, 'egress');
    const oldProg = bpftool('prog', 'show', 'pinned', path.join(bpffs, 'progs', 'xdp')).id;
    const oldMap = dp!.mapInfo('flows_a').id;

    // A create that died before pinning maps/config leaves everything but it.
    fs.unlinkSync(path.join(bpffs, 'maps', 'config'));
    dp!.close();
    dp = native.open(opts);
    assert.equal(dp.adopted, false);
    assert.notEqual(dp.mapInfo('flows_a').id, oldMap);
    const newProg = bpftool('prog', 'show', 'pinned', path.join(bpffs, 'progs', 'xdp')).id;
    assert.notEqual(newProg, oldProg);

    // The surviving XDP link is switched to the new program in place; the old TC filter is replaced.
    assert.equal(bpftool('link', 'show', 'pinned', xdpPin).prog_id, oldProg);
    assert.deepEqual(
      dp.attachments().map((a) => a.hook),
      ['xdp'],
      'the old TC program is not ours any more',
    );
    assert.equal(dp.attachXdp(VETH_A, 'generic').adopted, true);
    assert.equal(bpftool('link', 'show', 'pinned', xdpPin).prog_id, newProg);
    assert.equal(dp.attachTc(VETH_A, 'egress').adopted, false);
    assert.equal(dp.attachTc(VETH_A, 'egress').adopted, true);
    assert.equal(dp.attachments().length, 2);
    assert.equal(dp.detach(VETH_A, 'xdp'), true);
    assert.equal(dp.detach(VETH_A, 'tc_egress'), true);
  });

  rootTest('unpinAll detaches everything and leaves no pins; close is idempotent', () => {
    dp!.attachXdp(VETH_A, 'native');
    dp!.attachTc(VETH_A, 'egress');
    dp!.attachTc(VETH_A, 'ingress');
    assert.equal(dp!.attachments().length, 3);
    dp!.unpinAll();
    assert.deepEqual(dp!.attachments(), []);
    assert.deepEqual(
      fs.readdirSync(bpffs).filter((n) => !n.endsWith('.debug')),
      [],
      'maps/ progs/ links/ removed',
    );
    assert.doesNotMatch(ip('-d', 'link', 'show', VETH_A), /prog\/xdp/);
    assert.equal(execFileSync('tc', ['filter', 'show', 'dev', VETH_A, 'egress'], { encoding: 'utf8' }).trim(), '');

    dp!.close();
    dp!.close();
    assert.equal(
      errCode(() => dp!.readConfig()),
      'EBADF',
    );
    assert.equal(
      errCode(() => dp!.attachments()),
      'EBADF',
    );
    assert.equal(dp!.pinDir, bpffs);
    dp = undefined;
  });
});
