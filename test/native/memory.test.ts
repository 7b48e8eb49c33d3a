/**
 * The addon's process-memory calls (native/src/memory.cc): releaseFilePages
 * drops this process's mappings of a library's pages, which come back on the
 * next touch; tuneMalloc refuses bad options. No privileges needed.
 *
 * node --import tsx --test test/native/memory.test.ts
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { loadNative } from '../../native/index.js';

// A library the addon links but this test does not call into between the
// release and the look at its pages (a page touched faults in its
// neighbours too, so the addon's own code cannot show an empty mapping).
const LIBRARY = 'libbpf.so';

interface MappingRss {
  range: string;
  perms: string;
  rssKb: number;
  anonKb: number;
}

/** This process's mappings of a file, with their resident and anonymous (copy-on-write) kB. */
function mappingsOf(fragment: string): MappingRss[] {
  const out: MappingRss[] = [];
  let current: MappingRss | undefined;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^([0-9a-f]+-[0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      current = head[3]!.includes(fragment) ? { range: head[1]!, perms: head[2]!, rssKb: 0, anonKb: 0 } : undefined;
      if (current) out.push(current);
      continue;
    }
    const field = /^(Rss|Anonymous):\s+(\d+) kB/.exec(line);
    if (current && field) current[field[1] === 'Rss' ? 'rssKb' : 'anonKb'] = Number(field[2]);
  }
  return out;
}

test('releaseFilePages unmaps the read-only, unmodified pages of a library, which come back when used', () => {
  const native = loadNative();
  const before = mappingsOf(LIBRARY);
  const releasable = before.filter((m) => !m.perms.includes('w') && m.anonKb === 0);
  const kept = before.filter((m) => m.perms.includes('w') || m.anonKb > 0);
  assert.ok(
    releasable.some((m) => m.perms.includes('x') && m.rssKb > 0),
    'the addon has resident code to release',
  );

  const released = native.releaseFilePages(LIBRARY);

  const after = new Map(mappingsOf(LIBRARY).map((m) => [m.range, m]));
  const expectedBytes = releasable.reduce((n, m) => {
    const [start, end] = m.range.split('-').map((h) => parseInt(h, 16));
    return n + (end! - start!);
  }, 0);
  assert.equal(released, expectedBytes);
  // The released mappings hold nothing until touched; the writable ones and
  // the relocated (copy-on-write) ones are left alone: their pages exist nowhere else.
  for (const m of releasable) assert.equal(after.get(m.range)?.rssKb, 0, `${m.range} ${m.perms} released`);
  for (const m of kept) assert.ok((after.get(m.range)?.rssKb ?? 0) >= m.anonKb, `${m.range} ${m.perms} kept`);
});

test('code whose pages were released runs again (faulted back in from the page cache)', () => {
  const native = loadNative();
  const constants = native.constants();
  const layout = JSON.stringify(native.layout());
  assert.ok(native.releaseFilePages('flowgate_native.node') > 0);
  assert.deepEqual(native.constants(), constants);
  assert.equal(JSON.stringify(native.layout()), layout);
  assert.ok(mappingsOf('flowgate_native.node').some((m) => m.perms.includes('x') && m.rssKb > 0));
});

test('releaseFilePages of a path no mapping has releases nothing', () => {
  assert.equal(loadNative().releaseFilePages('/no/such/library-flowgate.so'), 0);
});

test('releaseFilePages and tuneMalloc refuse bad arguments with a message naming them', () => {
  const native = loadNative() as unknown as Record<string, (...args: unknown[]) => unknown>;
  assert.throws(() => native.releaseFilePages!(''), /releaseFilePages\(pathFragment: non-empty string\)/);
  assert.throws(() => native.releaseFilePages!(42), /releaseFilePages\(pathFragment: non-empty string\)/);
  assert.throws(() => native.tuneMalloc!({ arenaMax: 0 }), /arenaMax must be an integer from 1 to 1024/);
  assert.throws(() => native.tuneMalloc!({ mmapThreshold: 1.5 }), /mmapThreshold must be an integer/);
});
