/**
 * The rule set on local disk, so it survives restarts and reboots (pinned
 * maps survive a restart, not a reboot). Two files under the state
 * directory:
 *
 * - rules.json: a snapshot. A header line, then one rule per line (JSON
 *   lines: a million-rule set is written and read in a streaming way, not as
 *   one giant JSON value). Written to a temporary file, fsynced and renamed
 *   over the old one, so a crash leaves the old snapshot or the new one.
 * - rules.journal: every change since the snapshot, one line each, appended
 *   and fdatasynced before the change is acknowledged. A crash can leave a
 *   torn last line: that change was never acknowledged, so it is dropped.
 *
 * Records say what the rule with an id IS after the change (put) or that it
 * is gone (del), so replaying the journal over a snapshot that already has
 * some of its changes (a crash between the rename and the truncation) gives
 * the same set. The journal is folded into a new snapshot when it grows long
 * and after each replace.
 */
import {
  closeSync,
  existsSync,
  fdatasyncSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import type { StoredRule } from './types.js';

const FORMAT = 'flowgate-rules';
const VERSION = 1;
/** Fold the journal into a snapshot after this many changes. */
export const COMPACT_AFTER = 10_000;

export interface RuleFileState {
  rules: Map<number, StoredRule>;
}

type JournalRecord = { op: 'put'; rule: StoredRule } | { op: 'del'; id: number };

export class RuleFileError extends Error {}

export interface PreparedSnapshot {
  commit(): void;
  discard(): void;
}

interface SnapshotHeader {
  format?: string;
  version?: number;
  count?: number;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Write the first `length` bytes of `buf` (writeSync may write less than asked). */
function writeBytes(fd: number, buf: Buffer, length: number): void {
  let done = 0;
  while (done < length) done += writeSync(fd, buf, done, length - done);
}

function writeAll(fd: number, text: string): void {
  const buf = Buffer.from(text, 'utf8');
  writeBytes(fd, buf, buf.length);
}

/** Text that JSON.stringify would write as it is, between quotes. */
const PLAIN = /^[\w.:/+-]*$/;

/**
 * One rule as a JSON line. The common members are written by hand (a
 * million-rule snapshot spends most of its time in JSON.stringify
 * otherwise); anything unusual goes through JSON.stringify.
 */
export function ruleLine(rule: StoredRule): string {
  const { id, action, priority, src, dst, createdAt, updatedAt, ...rest } = rule;
  if (![action, src ?? '', dst ?? '', createdAt, updatedAt].every((t) => PLAIN.test(t))) return JSON.stringify(rule);
  let line = `{"id":${id},"action":"${action}","priority":${priority}`;
  if (src !== undefined) line += `,"src":"${src}"`;
  if (dst !== undefined) line += `,"dst":"${dst}"`;
  line += `,"createdAt":"${createdAt}","updatedAt":"${updatedAt}"`;
  for (const [k, v] of Object.entries(rest)) if (v !== undefined) line += `,"${k}":${JSON.stringify(v)}`;
  return line + '}';
}

export class RuleFile {
  readonly snapshotPath: string;
  readonly journalPath: string;
  private journalFd?: number;
  private journalLength = 0;

  constructor(readonly dir: string) {
    this.snapshotPath = path.join(dir, 'rules.json');
    this.journalPath = path.join(dir, 'rules.journal');
  }

  /** Changes appended since the last snapshot. */
  get journalEntries(): number {
    return this.journalLength;
  }

  /** Read the snapshot and replay the journal (both optional: a first start has neither). */
  load(): RuleFileState {
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    const state: RuleFileState = { rules: new Map() };
    if (existsSync(this.snapshotPath)) this.readSnapshot(state);
    this.journalLength = 0;
    if (existsSync(this.journalPath)) {
      const lines = readFileSync(this.journalPath, 'utf8').split('\n');
      // The last element is '' after a complete final line, or a torn write never acknowledged.
      lines.pop();
      for (const [i, line] of lines.entries()) {
        let rec: JournalRecord;
        try {
          rec = JSON.parse(line) as JournalRecord;
        } catch {
          throw new RuleFileError(
            `${this.journalPath}:${i + 1}: not a journal record; move the file away to start over`,
          );
        }
        if (rec.op === 'put') state.rules.set(rec.rule.id, rec.rule);
        else state.rules.delete(rec.id);
        this.journalLength++;
      }
    }
    this.journalFd = openSync(this.journalPath, 'a', 0o640);
    return state;
  }

  private readSnapshot(state: RuleFileState): void {
    const text = readFileSync(this.snapshotPath, 'utf8');
    let start = 0;
    let lineNo = 0;
    let header: SnapshotHeader | undefined;
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = text.length;
      const line = text.slice(start, end);
      start = end + 1;
      lineNo++;
      if (line.length === 0) continue;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        throw new RuleFileError(`${this.snapshotPath}:${lineNo}: not JSON`);
      }
      if (!header) {
        header = value as SnapshotHeader;
        if (header?.format !== FORMAT || header.version !== VERSION) {
          throw new RuleFileError(`${this.snapshotPath}: not a ${FORMAT} v${VERSION} file`);
        }
        continue;
      }
      const rule = value as StoredRule;
      state.rules.set(rule.id, rule);
    }
    if (!header) throw new RuleFileError(`${this.snapshotPath}: empty`);
    if (header.count !== undefined && header.count !== state.rules.size) {
      throw new RuleFileError(`${this.snapshotPath}: has ${state.rules.size} rules, its header says ${header.count}`);
    }
  }

  /** Append changes and make them durable (one fdatasync for all of them). */
  append(records: readonly JournalRecord[]): void {
    if (this.journalFd === undefined) throw new RuleFileError('rule file not loaded');
    if (records.length === 0) return;
    writeAll(this.journalFd, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
    fdatasyncSync(this.journalFd);
    this.journalLength += records.length;
  }

  put(rule: StoredRule): void {
    this.append([{ op: 'put', rule }]);
  }

  del(id: number): void {
    this.append([{ op: 'del', id }]);
  }

  /** Write a new snapshot (atomically), then empty the journal. */
  async snapshot(rules: Iterable<StoredRule>, count: number): Promise<void> {
    (await this.prepareSnapshot(rules, count)).commit();
  }

  /**
   * Write a snapshot to a temporary file and fsync it; commit() puts it in
   * place (rename, directory fsync) and empties the journal, discard()
   * removes it. Two steps so a replace can write the file while the kernel
   * loads, and keep the old snapshot if the kernel refuses. It yields to
   * the event loop between buffers, so the kernel writes it overlaps with
   * (callbacks on this thread between batch calls) keep going.
   */
  async prepareSnapshot(rules: Iterable<StoredRule>, count: number): Promise<PreparedSnapshot> {
    const tmp = `${this.snapshotPath}.tmp`;
    const fd = openSync(tmp, 'w', 0o640);
    try {
      writeAll(fd, JSON.stringify({ format: FORMAT, version: VERSION, count }) + '\n');
      // Lines go straight into a reused buffer, written out when full: joining a million
      // strings first costs more than making them.
      const buf = Buffer.allocUnsafe(4 << 20);
      let used = 0;
      for (const rule of rules) {
        const line = ruleLine(rule);
        if (used + 3 * line.length + 1 > buf.length) {
          writeBytes(fd, buf, used);
          used = 0;
          await new Promise((resolve) => setImmediate(resolve));
          if (3 * line.length + 1 > buf.length) {
            writeAll(fd, line + '\n');
            continue;
          }
        }
        used += buf.write(line, used, 'utf8');
        buf[used++] = 0x0a;
      }
      writeBytes(fd, buf, used);
      fsyncSync(fd);
    } catch (err) {
      closeSync(fd);
      rmSync(tmp, { force: true });
      throw err;
    }
    closeSync(fd);
    return {
      commit: () => {
        renameSync(tmp, this.snapshotPath);
        fsyncDir(this.dir);
        // The snapshot has every journaled change now; replaying them again would be harmless, but slow.
        if (this.journalFd !== undefined) {
          ftruncateSync(this.journalFd, 0);
          fdatasyncSync(this.journalFd);
        }
        this.journalLength = 0;
      },
      discard: () => rmSync(tmp, { force: true }),
    };
  }

  close(): void {
    if (this.journalFd !== undefined) closeSync(this.journalFd);
    this.journalFd = undefined;
  }
}
