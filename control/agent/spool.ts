/**
 * The spool: drained batches on disk between the kernel and the store.
 * A batch is the drained records as the kernel gave them (key||value
 * bytes: one write, no encoding on the drain's critical path) plus what is
 * needed to turn them into rows later (host, clock offset, interface names).
 *
 * A batch is written (temp file, fsync, rename, fsync of the directory)
 * before its flow map is cleared, and removed only after the store took it.
 * Its name is its token (instance and epoch), so a batch is never written
 * twice and a retried insert carries the same deduplication token.
 *
 * Bounded: past maxBytes the oldest batches are dropped, loudly, and
 * counted — the kernel maps must keep draining or the LRU would drop newer
 * flows instead.
 */
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';

const SUFFIX = '.batch';
const MAGIC = 'flowgate-spool-v1';

/** What rows need besides the records, fixed at drain time. */
export interface BatchMeta {
  host: string;
  /** Wall clock minus CLOCK_MONOTONIC at the drain, ns (decimal string: a bigint). */
  monoToEpochOffsetNs: string;
  /** ifindex → interface name at the drain. */
  ifaces: Record<string, string>;
}

export interface SpooledBatch {
  token: string;
  flows: number;
  meta: BatchMeta;
  /** Packed key||value records (control/datapath/layout.ts). */
  records: Buffer;
}

export interface BatchInfo {
  token: string;
  file: string;
  bytes: number;
  rows: number;
}

export interface DroppedBatch {
  token: string;
  rows: number;
}

/** Token of a drained batch: which maps (instance) and which drain (epoch). */
export function batchToken(host: string, instance: number, epoch: number): string {
  return `${host}:${instance.toString(16).padStart(8, '0')}:${epoch.toString().padStart(10, '0')}`;
}

function fileName(token: string): string {
  return `${token.replace(/[^A-Za-z0-9._-]/g, '_')}${SUFFIX}`;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export class Spool {
  constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /**
   * Remove writes that never finished (a crash mid-write: that slot was not
   * cleared, so its batch is drained again). Only at startup, before any
   * other process or thread uses the spool.
   */
  removeIncomplete(): number {
    let removed = 0;
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith('.tmp')) continue;
      unlinkSync(path.join(this.dir, name));
      removed++;
    }
    return removed;
  }

  has(token: string): boolean {
    try {
      statSync(path.join(this.dir, fileName(token)));
      return true;
    } catch {
      return false;
    }
  }

  /** Write a batch durably. Returns the batches dropped to stay under maxBytes. */
  write(batch: SpooledBatch): DroppedBatch[] {
    const { token } = batch;
    const header = JSON.stringify({ magic: MAGIC, token, rows: batch.flows, meta: batch.meta });
    const final = path.join(this.dir, fileName(token));
    const temp = `${final}.tmp`;
    const fd = openSync(temp, 'w', 0o600);
    try {
      writeFileSync(fd, `${header}\n`);
      writeFileSync(fd, batch.records);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, final);
    fsyncDir(this.dir);
    return this.enforceLimit(token);
  }

  /** Oldest first (tokens sort by epoch within one instance). */
  list(): BatchInfo[] {
    const out: BatchInfo[] = [];
    for (const name of readdirSync(this.dir)) {
      const file = path.join(this.dir, name);
      if (!name.endsWith(SUFFIX)) continue;
      const st = statSync(file);
      const header = this.readHeader(file);
      out.push({ token: header.token, file, bytes: st.size, rows: header.rows });
    }
    return out.sort((a, b) => (a.token < b.token ? -1 : a.token > b.token ? 1 : 0));
  }

  read(info: BatchInfo): SpooledBatch {
    const data = readFileSync(info.file);
    const nl = data.indexOf(0x0a);
    const header = JSON.parse(data.subarray(0, nl).toString('utf8')) as {
      token: string;
      rows: number;
      meta: BatchMeta;
    };
    return { token: header.token, flows: header.rows, meta: header.meta, records: data.subarray(nl + 1) };
  }

  remove(info: BatchInfo): void {
    try {
      unlinkSync(info.file);
    } catch {
      // already gone
    }
  }

  totals(): { batches: number; bytes: number } {
    const all = this.list();
    return { batches: all.length, bytes: all.reduce((n, b) => n + b.bytes, 0) };
  }

  private readHeader(file: string): { token: string; rows: number } {
    const fd = openSync(file, 'r');
    try {
      const buf = Buffer.alloc(64 * 1024);
      const n = readSync(fd, buf, 0, buf.length, 0);
      const line = buf.subarray(0, n).toString('utf8').split('\n', 1)[0]!;
      const h = JSON.parse(line) as { magic: string; token: string; rows: number };
      if (h.magic !== MAGIC) throw new Error(`${file} is not a flowgate spool batch`);
      return h;
    } finally {
      closeSync(fd);
    }
  }

  private enforceLimit(keep: string): DroppedBatch[] {
    const all = this.list();
    let total = all.reduce((n, b) => n + b.bytes, 0);
    const dropped: DroppedBatch[] = [];
    for (const b of all) {
      if (total <= this.maxBytes) break;
      if (b.token === keep) continue;
      this.remove(b);
      total -= b.bytes;
      dropped.push({ token: b.token, rows: b.rows });
    }
    return dropped;
  }
}
