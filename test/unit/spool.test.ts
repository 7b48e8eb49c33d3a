/**
 * The spool's batch files, written a chunk at a time (SpoolWriter) and read
 * a slice at a time (BatchReader): the same bytes as a whole write and a
 * whole read, the same file format as before (a header line, then the
 * records), and nothing on disk for a batch that was aborted or empty.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Spool, batchToken, type BatchMeta } from '../../control/agent/spool.js';
import { readBatch, writeBatch } from '../lib/spool.js';

const RECORD = 120;
const meta: BatchMeta = { host: 'hôst', monoToEpochOffsetNs: '1700000000123456789', ifaces: { 3: 'eth0' } };

function records(n: number, seed = 0): Buffer {
  const buf = Buffer.alloc(n * RECORD);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 7 + seed) & 0xff;
  return buf;
}

function withSpool(fn: (spool: Spool, dir: string) => void): void {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-spool-'));
  try {
    fn(new Spool(dir, 1 << 30), dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('spool', () => {
  it('a batch appended in chunks reads back whole and in slices, byte for byte', () => {
    withSpool((spool) => {
      const token = batchToken('h', 0xabc, 7);
      const all = records(1000);
      let asked = 0;
      const w = spool.writer(
        token,
        () => {
          asked++;
          return meta;
        },
        RECORD,
      );
      for (const [from, to] of [
        [0, 1],
        [1, 400],
        [400, 1000],
      ] as const) {
        w.append(all.subarray(from * RECORD, to * RECORD));
      }
      assert.equal(w.flows, 1000);
      assert.deepEqual(w.commit(), []);
      assert.equal(asked, 1, 'meta is taken once, at the first records');

      const [info] = spool.list();
      assert.equal(info!.token, token);
      assert.equal(info!.rows, 1000);
      const batch = readBatch(spool, info!);
      assert.deepEqual(batch.meta, meta);
      assert.equal(batch.flows, 1000);
      assert.ok(batch.records.equals(all));

      const reader = spool.open(info!);
      try {
        assert.equal(reader.token, token);
        assert.equal(reader.flows, 1000);
        assert.deepEqual(reader.meta, meta);
        const buf = Buffer.alloc(300 * RECORD);
        const sizes: number[] = [];
        const parts: Buffer[] = [];
        for (const slice of reader.slices(buf)) {
          assert.equal(slice.buffer, buf.buffer, 'each slice is a view of the caller buffer');
          sizes.push(slice.length / RECORD);
          parts.push(Buffer.from(slice));
        }
        assert.deepEqual(sizes, [300, 300, 300, 100]);
        assert.ok(Buffer.concat(parts).equals(all));
      } finally {
        reader.close();
      }
    });
  });

  it('the header is one JSON line (padded with blanks), as a reader of the old format expects', () => {
    withSpool((spool) => {
      const token = batchToken('h', 1, 1);
      const w = spool.writer(token, () => meta, RECORD);
      w.append(records(3));
      w.commit();
      const data = readFileSync(spool.fileOf(token));
      const nl = data.indexOf(0x0a);
      const header = JSON.parse(data.subarray(0, nl).toString('utf8')) as Record<string, unknown>;
      assert.deepEqual(header, { magic: 'flowgate-spool-v1', token, rows: 3, meta });
      assert.equal(data.length - nl - 1, 3 * RECORD);
    });
  });

  it('pads the header to whole records, so the file reads in place as records (the header first)', () => {
    withSpool((spool) => {
      const token = batchToken('h', 1, 1);
      const w = spool.writer(token, () => meta, RECORD);
      w.append(records(5));
      w.commit();
      const data = readFileSync(spool.fileOf(token));
      const headerBytes = data.indexOf(0x0a) + 1;
      assert.equal(headerBytes % RECORD, 0);
      const reader = spool.open(spool.list()[0]!);
      try {
        const at = reader.inPlace(RECORD);
        assert.ok(at, 'a padded batch reads in place');
        assert.equal(at.skipRecords, headerBytes / RECORD);
        // The path reaches the open file even once the spool dropped it.
        spool.remove(spool.list()[0]!);
        const bytes = readFileSync(at.path);
        assert.ok(bytes.subarray(at.skipRecords * RECORD).equals(records(5)));
        // Any other record size does not divide the header: no in-place read.
        assert.equal(reader.inPlace(RECORD + 1), undefined);
      } finally {
        reader.close();
      }
    });
  });

  it('an old or damaged batch is not read in place', () => {
    withSpool((spool) => {
      const old = batchToken('h', 1, 1);
      const header = JSON.stringify({ magic: 'flowgate-spool-v1', token: old, rows: 2, meta });
      // An earlier version's header: no padding (one blank if it happens to fill whole records).
      const line = (Buffer.byteLength(header) + 1) % RECORD === 0 ? `${header} \n` : `${header}\n`;
      writeFileSync(spool.fileOf(old), Buffer.concat([Buffer.from(line), records(2)]));
      const cut = batchToken('h', 1, 2);
      const w = spool.writer(cut, () => meta, RECORD);
      w.append(records(3));
      w.commit();
      truncateSync(spool.fileOf(cut), statSync(spool.fileOf(cut)).size - 1);
      for (const info of spool.list()) {
        const reader = spool.open(info);
        try {
          assert.equal(reader.inPlace(RECORD), undefined, info.token);
        } finally {
          reader.close();
        }
      }
    });
  });

  it('reads batches written whole by write() and by an earlier version (no padding)', () => {
    withSpool((spool) => {
      const a = batchToken('h', 1, 1);
      writeBatch(spool, { token: a, flows: 2, meta, records: records(2, 1) });
      const b = batchToken('h', 1, 2);
      const old = JSON.stringify({ magic: 'flowgate-spool-v1', token: b, rows: 4, meta });
      writeFileSync(spool.fileOf(b), Buffer.concat([Buffer.from(`${old}\n`), records(4, 2)]));
      const [ia, ib] = spool.list();
      assert.deepEqual([ia!.rows, ib!.rows], [2, 4]);
      assert.ok(readBatch(spool, ia!).records.equals(records(2, 1)));
      const reader = spool.open(ib!);
      try {
        const parts: Buffer[] = [];
        for (const slice of reader.slices(Buffer.alloc(RECORD))) parts.push(Buffer.from(slice));
        assert.ok(Buffer.concat(parts).equals(records(4, 2)));
      } finally {
        reader.close();
      }
    });
  });

  it('an empty batch writes nothing, an aborted one leaves nothing behind', () => {
    withSpool((spool, dir) => {
      const empty = spool.writer(batchToken('h', 1, 1), () => assert.fail('no meta without records'), RECORD);
      assert.deepEqual(empty.commit(), []);
      const aborted = spool.writer(batchToken('h', 1, 2), () => meta, RECORD);
      aborted.append(records(5));
      assert.ok(
        readdirSync(dir).some((f) => f.endsWith('.tmp')),
        'the batch is written as it comes',
      );
      aborted.abort();
      assert.deepEqual(readdirSync(dir), []);
      assert.throws(() => aborted.append(records(1)), /already committed or aborted/);
      const bad = spool.writer(batchToken('h', 1, 3), () => meta, RECORD);
      assert.throws(() => bad.append(Buffer.alloc(RECORD + 1)), /whole number of records/);
      bad.abort();
      assert.deepEqual(readdirSync(dir), []);
    });
  });

  it('lists past a batch that goes while it lists (the other process removed it)', () => {
    withSpool((spool, dir) => {
      writeBatch(spool, { token: batchToken('h', 1, 1), flows: 2, meta, records: records(2) });
      // Named like a batch, gone by the time it is opened: what a removal between readdir and open looks like.
      symlinkSync(path.join(dir, 'gone'), path.join(dir, 'h_00000001_0000000002.batch'));
      assert.deepEqual(
        spool.list().map((b) => b.token),
        [batchToken('h', 1, 1)],
      );
      assert.deepEqual(spool.totals().batches, 1);
    });
  });

  it('a commit past the bound drops the oldest batches, never the new one', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-spool-'));
    try {
      const spool = new Spool(dir, 1.5 * 100 * RECORD); // room for one batch of 100 records, not two
      for (let epoch = 1; epoch <= 3; epoch++) {
        const w = spool.writer(batchToken('h', 1, epoch), () => meta, RECORD);
        w.append(records(100));
        const dropped = w.commit();
        assert.deepEqual(
          dropped.map((d) => d.rows),
          epoch === 1 ? [] : [100],
        );
      }
      assert.deepEqual(
        spool.list().map((b) => b.token),
        [batchToken('h', 1, 3)],
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
