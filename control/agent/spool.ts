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
 * flows instead. The batches of the insert in flight are kept (hard links
 * in shipping/, with the insert's record in ship.intent): a retry must
 * carry exactly them, so the spool may exceed its bound by that one insert
 * (at most FLOW_GROUP_MAX_ROWS rows, or one bigger batch).
 *
 * A batch goes in and out in pieces (SpoolWriter, BatchReader): a drain
 * appends chunk after chunk as it reads the kernel map, the shipper reads a
 * slice at a time, so neither holds a whole batch in memory. The file is
 * one JSON header line, then the records; the header is written last, over
 * room reserved for it (JSON allows the blanks that pad it to that room).
 * The room is padded to a whole number of records, so the file reads as
 * fixed-size records (the header's first): the embedded engine reads a
 * batch where it lies, skipping those (BatchReader.inPlace).
 */
import {
  closeSync,
  fstatSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';

const SUFFIX = '.batch';
const INTENT = 'ship.intent';
const LANDED = 'landed.json';
/** Landed tokens remembered: a drain's batch needs it only until its slot is cleared, a moment later. */
const LANDED_KEPT = 256;
const MAGIC = 'flowgate-spool-v1';
/** Room reserved in a header for the digits of its row count. */
const ROWS_ROOM = 16;

/** What rows need besides the records, fixed at drain time. */
export interface BatchMeta {
  host: string;
  /** Wall clock minus CLOCK_MONOTONIC at the drain, ns (decimal string: a bigint). */
  monoToEpochOffsetNs: string;
  /** ifindex → interface name at the drain. */
  ifaces: Record<string, string>;
}

export interface BatchInfo {
  token: string;
  file: string;
  bytes: number;
  rows: number;
}

/**
 * The insert the shipper is attempting: its token and the batches it
 * carries. Recorded before the attempt and cleared after its batches are
 * removed, so a batch is only ever retried under the token it was first
 * sent with, even across a crash (shipper.ts).
 */
export interface ShipIntent {
  token: string;
  batches: string[];
}

export interface DroppedBatch {
  token: string;
  rows: number;
}

/** An open spooled batch, read a slice at a time (Spool.open). */
export interface BatchReader {
  token: string;
  flows: number;
  meta: BatchMeta;
  /**
   * The records, read into `buf` (reused: each slice is a view of it, valid
   * until the next one) `buf.length` bytes at a time; the last slice may be
   * shorter. Make buf a whole number of records.
   */
  slices(buf: Buffer): Generator<Buffer>;
  /**
   * Where the records can be read in place by another reader in this
   * process while the batch is open (a /proc/self/fd path: it reaches the
   * file even once the spool dropped it), and how many records' worth of
   * header come first; undefined when the header is not a whole number of
   * records (a batch spooled before headers were padded) or the file's
   * size does not match its header.
   */
  inPlace(recordSize: number): { path: string; skipRecords: number } | undefined;
  close(): void;
}

function headerLine(token: string, rows: number, meta: BatchMeta, room?: number): Buffer {
  const json = JSON.stringify({ magic: MAGIC, token, rows, meta });
  const bytes = Buffer.byteLength(json);
  const size = (room ?? bytes + ROWS_ROOM) + 1;
  if (size - 1 < bytes) throw new Error(`spool header of ${token} does not fit its room`);
  const line = Buffer.alloc(size, ' ');
  line.write(json, 0, 'utf8');
  line[size - 1] = 0x0a;
  return line;
}

/**
 * One batch being written: records appended as they come, then commit()
 * makes it durable under its token. Nothing is written until the first
 * records; a batch of none is no file at all.
 */
export class SpoolWriter {
  private fd?: number;
  private temp = '';
  private headerRoom = 0;
  private position = 0;
  private rows = 0;
  private meta?: BatchMeta;
  private done = false;

  constructor(
    private readonly spool: Spool,
    readonly token: string,
    /** The batch's meta, asked for once, when the first records come. */
    private readonly metaOf: () => BatchMeta,
    private readonly recordSize: number,
  ) {}

  get flows(): number {
    return this.rows;
  }

  /** Append records (a whole number of recordSize records): written at once, so `records` may be reused after. */
  append(records: Buffer, rows = records.length / this.recordSize): void {
    if (this.done) throw new Error(`spool batch ${this.token} is already committed or aborted`);
    if (records.length === 0) return;
    if (!Number.isInteger(rows)) {
      throw new Error(`spool batch ${this.token}: ${records.length} bytes is not a whole number of records`);
    }
    if (this.fd === undefined) {
      this.meta = this.metaOf();
      this.temp = `${this.spool.fileOf(this.token)}.tmp`;
      const line = headerLine(this.token, 0, this.meta).length;
      this.headerRoom = Math.ceil(line / this.recordSize) * this.recordSize - 1;
      const placeholder = headerLine(this.token, 0, this.meta, this.headerRoom);
      this.fd = openSync(this.temp, 'w', 0o600);
      this.position = this.writeAll(placeholder, 0);
    }
    this.position = this.writeAll(records, this.position);
    this.rows += rows;
  }

  /** Header with the row count, fsync, rename, fsync of the directory. Returns the batches dropped to stay under the spool's bound. */
  commit(): DroppedBatch[] {
    if (this.done) throw new Error(`spool batch ${this.token} is already committed or aborted`);
    this.done = true;
    if (this.fd === undefined) return [];
    const fd = this.fd;
    try {
      this.writeAll(headerLine(this.token, this.rows, this.meta!, this.headerRoom), 0);
      fsyncSync(fd);
    } catch (err) {
      this.discard();
      throw err;
    }
    closeSync(fd);
    this.fd = undefined;
    renameSync(this.temp, this.spool.fileOf(this.token));
    fsyncDir(this.spool.dir);
    return this.spool.enforceLimit(this.token);
  }

  /** Drop what was written (a failed drain: its slot is read again, so nothing is lost). */
  abort(): void {
    if (this.done) return;
    this.done = true;
    this.discard();
  }

  private discard(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      // closing is all that is left to do
    }
    this.fd = undefined;
    try {
      unlinkSync(this.temp);
    } catch {
      // removeIncomplete() takes it at the next start
    }
  }

  private writeAll(buf: Buffer, position: number): number {
    let off = 0;
    while (off < buf.length) off += writeSync(this.fd!, buf, off, buf.length - off, position + off);
    return position + buf.length;
  }
}

/** Token of a drained batch: which maps (instance) and which drain (epoch). */
export function batchToken(host: string, instance: number, epoch: number): string {
  return `${host}:${instance.toString(16).padStart(8, '0')}:${epoch.toString().padStart(10, '0')}`;
}

function fileName(token: string): string {
  return `${token.replace(/[^A-Za-z0-9._-]/g, '_')}${SUFFIX}`;
}

/** Replace a small file whole, durably: temp file, fsync, rename, fsync of the directory. */
function writeDurably(file: string, body: Buffer, dir: string): void {
  const fd = openSync(`${file}.tmp`, 'w', 0o600);
  try {
    let off = 0;
    while (off < body.length) off += writeSync(fd, body, off, body.length - off, off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(`${file}.tmp`, file);
  fsyncDir(dir);
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** fn(), or undefined when the file it opens, reads or moves is not there (ENOENT); other errors throw. */
function unlessMissing<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** A batch file's listing (token and rows from its header, bytes on disk), or undefined when it is gone. */
function infoOf(file: string): BatchInfo | undefined {
  const fd = unlessMissing(() => openSync(file, 'r'));
  if (fd === undefined) return undefined;
  try {
    const { header } = readHeaderLine(fd, file);
    return { token: header.token, file, bytes: fstatSync(fd).size, rows: header.rows };
  } finally {
    closeSync(fd);
  }
}

/** One header buffer for every read of a header line (the agent reads them all at every drain). */
const headerScratch = Buffer.allocUnsafe(64 * 1024);

/** The JSON header line of a batch file, and its length with the newline. */
function readHeaderLine(fd: number, file: string): { header: { token: string; rows: number }; bytes: number } {
  const n = readSync(fd, headerScratch, 0, headerScratch.length, 0);
  const nl = headerScratch.subarray(0, n).indexOf(0x0a);
  if (nl < 0) throw new Error(`${file} is not a flowgate spool batch`);
  const h = JSON.parse(headerScratch.toString('utf8', 0, nl)) as { magic: string; token: string; rows: number };
  if (h.magic !== MAGIC) throw new Error(`${file} is not a flowgate spool batch`);
  return { header: h, bytes: nl + 1 };
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

  /** A batch of this token is spooled, or was spooled and has landed lately (so it is not drained twice). */
  has(token: string): boolean {
    try {
      statSync(path.join(this.dir, fileName(token)));
      return true;
    } catch {
      return this.landed().includes(token);
    }
  }

  /**
   * The tokens of the batches that landed last, newest last. A drain that
   * died after its batch was spooled but before its slot was cleared reads
   * the slot again unless the batch is spooled (Collector.recover); once the
   * shipper has landed and removed it, this list is what says so. Without
   * it the batch would be spooled again under its token, and could go in
   * another group than the first time, under another token: twice stored.
   */
  landed(): string[] {
    try {
      const list = JSON.parse(readFileSync(path.join(this.dir, LANDED), 'utf8')) as unknown;
      return Array.isArray(list) ? list.filter((t): t is string => typeof t === 'string') : [];
    } catch {
      return [];
    }
  }

  /** The file a batch of this token lives in. */
  fileOf(token: string): string {
    return path.join(this.dir, fileName(token));
  }

  /** Write a batch durably, a piece at a time: append(), then commit(). */
  writer(token: string, meta: () => BatchMeta, recordSize: number): SpoolWriter {
    return new SpoolWriter(this, token, meta, recordSize);
  }

  /** Oldest first (tokens sort by epoch within one instance). */
  list(): BatchInfo[] {
    const out: BatchInfo[] = [];
    for (const name of readdirSync(this.dir)) {
      const file = path.join(this.dir, name);
      if (!name.endsWith(SUFFIX)) continue;
      // The agent and the ship process share the spool: a batch may go between readdir and here.
      const info = infoOf(file);
      if (info) out.push(info);
    }
    return out.sort((a, b) => (a.token < b.token ? -1 : a.token > b.token ? 1 : 0));
  }

  /** A batch to read a slice at a time (close it after). */
  open(info: BatchInfo): BatchReader {
    const fd = openSync(info.file, 'r');
    try {
      const { header, bytes } = readHeaderLine(fd, info.file);
      const h = header as { token: string; rows: number; meta: BatchMeta };
      return {
        token: h.token,
        flows: h.rows,
        meta: h.meta,
        *slices(buf: Buffer): Generator<Buffer> {
          let position = bytes;
          for (;;) {
            let got = 0;
            while (got < buf.length) {
              const n = readSync(fd, buf, got, buf.length - got, position + got);
              if (n === 0) break;
              got += n;
            }
            if (got > 0) yield buf.subarray(0, got);
            if (got < buf.length) return;
            position += got;
          }
        },
        inPlace(recordSize: number) {
          if (bytes % recordSize !== 0 || fstatSync(fd).size !== bytes + h.rows * recordSize) return undefined;
          return { path: `/proc/self/fd/${fd}`, skipRecords: bytes / recordSize };
        },
        close: () => closeSync(fd),
      };
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** The insert an earlier attempt recorded (shipper.ts), if one is still open. */
  readIntent(): ShipIntent | undefined {
    const file = path.join(this.dir, INTENT);
    const text = unlessMissing(() => readFileSync(file, 'utf8'));
    if (text === undefined) return undefined;
    const intent = JSON.parse(text) as Partial<ShipIntent> & { magic?: string };
    if (
      intent.magic !== MAGIC ||
      typeof intent.token !== 'string' ||
      !Array.isArray(intent.batches) ||
      !intent.batches.every((t) => typeof t === 'string')
    ) {
      throw new Error(`${file} is not a flowgate ship intent`);
    }
    return { token: intent.token, batches: intent.batches };
  }

  /** Record an insert durably before it is attempted. */
  writeIntent(intent: ShipIntent): ShipIntent {
    const body = Buffer.from(JSON.stringify({ magic: MAGIC, token: intent.token, batches: intent.batches }));
    writeDurably(path.join(this.dir, INTENT), body, this.dir);
    return intent;
  }

  /**
   * Take batches for an insert: a hard link to each in the spool's
   * shipping/ directory, out of reach of the bound (enforceLimit drops the
   * spool's own names only), so the insert can be retried with exactly the
   * same batches until it lands, even after a crash. Returns the batches
   * taken (one the bound dropped meanwhile is not), read from their links.
   */
  claim(infos: readonly BatchInfo[]): BatchInfo[] {
    mkdirSync(this.shippingDir, { recursive: true, mode: 0o700 });
    const taken: BatchInfo[] = [];
    for (const info of infos) {
      const link = path.join(this.shippingDir, path.basename(info.file));
      try {
        linkSync(info.file, link);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') continue; // dropped by the bound just now
        if (code !== 'EEXIST') throw err;
      }
      taken.push({ ...info, file: link });
    }
    fsyncDir(this.shippingDir);
    return taken;
  }

  /** The taken batches of these tokens (an intent's), as claim() returned them; a missing one is left out. */
  claimed(tokens: readonly string[]): BatchInfo[] {
    return tokens.flatMap((token) => infoOf(path.join(this.shippingDir, fileName(token))) ?? []);
  }

  /** These batches landed: record their tokens (landed()), then remove them from the spool. */
  recordLanded(tokens: readonly string[]): void {
    if (tokens.length === 0) return;
    const list = [...this.landed().filter((t) => !tokens.includes(t)), ...tokens].slice(-LANDED_KEPT);
    writeDurably(path.join(this.dir, LANDED), Buffer.from(JSON.stringify(list)), this.dir);
    for (const token of tokens) this.remove({ token, file: this.fileOf(token), bytes: 0, rows: 0 });
  }

  /** Drop every batch taken (claim()): its insert landed, or was never attempted. */
  dropClaims(): void {
    for (const name of unlessMissing(() => readdirSync(this.shippingDir)) ?? []) {
      unlinkSync(path.join(this.shippingDir, name));
    }
  }

  private get shippingDir(): string {
    return path.join(this.dir, 'shipping');
  }

  /** Move an unreadable intent out of the way (kept beside the spool for a post-mortem). */
  setIntentAside(): void {
    const file = path.join(this.dir, INTENT);
    unlessMissing(() => renameSync(file, `${file}.damaged-${Date.now()}`));
  }

  /** The recorded insert is done: its batches are removed. */
  clearIntent(): void {
    unlessMissing(() => unlinkSync(path.join(this.dir, INTENT)));
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

  /** Drop the oldest batches (never `keep`) until the spool is within maxBytes. */
  enforceLimit(keep: string): DroppedBatch[] {
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
