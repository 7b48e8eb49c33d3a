/**
 * LpmIndex: one LPM table (src or dst) of plain prefix rules, kept resolved
 * so that a rule change yields the few kernel entries it changes instead of
 * a rewrite of the whole table (issue 4: a single POST enforced within
 * milliseconds with a million prefixes loaded).
 *
 * "Resolved" is what resolveLpm (compile.ts) produces: every stored prefix
 * carries the best verdict among its own rules and every shorter prefix
 * covering it. Adding or removing rules at a prefix P can only change P and
 * the prefixes inside P. In address-then-length order those form one
 * contiguous run starting at P, so the index keeps the prefixes sorted and
 * re-resolves only that run, seeded with the resolved verdict of P's nearest
 * stored ancestor (which already folds in every prefix above it).
 *
 * Each prefix keeps all its rules, best first, so taking out the best one
 * falls back to the next. A rule is named by (prefix, rule id): the caller
 * holds the rule, so no id → prefix map has to be kept for a million rules.
 *
 * Memory is the build cost at a million prefixes (allocating is what takes
 * the time), so there is no object per prefix: blocks of parallel arrays
 * hold the sort key, the rules and the resolved verdict.
 */
import { endianness } from 'node:os';
import { Family, encodeLpmEntries, ipv4Value, type LpmEntry, type PrefixBytes } from '../datapath/layout.js';
import { compareRank } from './compile.js';

/** A rule's entry in a table, as the caller names it to take it out. */
export type LpmRef = Pick<LpmEntry, 'prefix' | 'ruleId'>;

/** A change to one table. Removals go first, so a rule can be replaced in one change. */
export interface LpmChange {
  add?: readonly LpmEntry[];
  /** Entries not in the table are ignored: the caller may not know which table holds a rule. */
  remove?: readonly LpmRef[];
}

/** What a change did to the resolved table. */
export interface LpmDelta {
  /** Resolved entries to write: new prefixes, and prefixes whose verdict changed. */
  upsert: LpmEntry[];
  /** Prefixes no rule holds any more. */
  delete: PrefixBytes[];
  /** Entries in the resolved table after the change. */
  count: number;
}

/** An LpmDelta encoded for the batch writes (Datapath.applyDelta). */
export interface EncodedLpmDelta {
  upsertKeys: Buffer;
  upsertValues: Buffer;
  deleteKeys: Buffer;
  /** Entries in the table once the delta is applied. */
  count: number;
}

export function encodeLpmDelta(delta: LpmDelta): EncodedLpmDelta {
  const upsert = encodeLpmEntries(delta.upsert);
  // A delete needs only the key; the verdict is a placeholder.
  const deletes = delta.delete.map((prefix): LpmEntry => ({ prefix, ruleId: 0, priority: 0, action: 'drop' }));
  return {
    upsertKeys: upsert.keys,
    upsertValues: upsert.values,
    deleteKeys: encodeLpmEntries(deletes).keys,
    count: delta.count,
  };
}

/** A prefix's rules: one, or several best first (most prefixes hold one, so no array for them). */
type Rules = LpmEntry | LpmEntry[];

function bestOf(rules: Rules): LpmEntry {
  return Array.isArray(rules) ? rules[0]! : rules;
}

function holds(rules: Rules, ruleId: number): boolean {
  return Array.isArray(rules) ? rules.some((r) => r.ruleId === ruleId) : rules.ruleId === ruleId;
}

function withRule(rules: Rules, e: LpmEntry): LpmEntry[] {
  const list = Array.isArray(rules) ? rules : [rules];
  let i = 0;
  while (i < list.length && compareRank(list[i]!, e) <= 0) i++;
  list.splice(i, 0, e);
  return list;
}

/** The rules left without `ruleId`, undefined when none is. */
function withoutRule(rules: Rules, ruleId: number): Rules | undefined {
  if (!Array.isArray(rules)) return rules.ruleId === ruleId ? undefined : rules;
  const list = rules.filter((r) => r.ruleId !== ruleId);
  return list.length === 0 ? undefined : list.length === 1 ? list[0]! : list;
}

function sameVerdict(a: LpmEntry, b: LpmEntry): boolean {
  return a.ruleId === b.ruleId && a.priority === b.priority && a.action === b.action;
}

type Key = number | string;

/**
 * How one family turns prefixes into sort keys. A key orders by address,
 * then length, so a prefix precedes everything inside it, and everything
 * inside it follows contiguously up to its end key.
 */
interface FamilyKeys<K extends Key> {
  maxLen: number;
  /** Throws when the prefix has host bits set: the kernel would store it under another key. */
  key(p: PrefixBytes): K;
  len(key: K): number;
  /** The largest key inside the prefix: its last address at full length. */
  end(key: K): K;
  /** The key of the prefix of length `len` that covers the prefix of `key`. */
  ancestor(key: K, len: number): K;
}

/** 2^(32 - len): how many addresses an IPv4 /len spans. */
const SPAN4 = Array.from({ length: 33 }, (_, len) => 2 ** (32 - len));

function ipv4HostBits(addr: number, len: number): RangeError {
  const text = [addr >>> 24, (addr >>> 16) & 255, (addr >>> 8) & 255, addr & 255].join('.');
  return new RangeError(`${text}/${len} has host bits set`);
}

/* IPv4: address * 64 + length, exact in a double (below 2^38). */
const IPV4_KEYS: FamilyKeys<number> = {
  maxLen: 32,
  key(p) {
    const addr = ipv4Value(p);
    if (addr % SPAN4[p.len]! !== 0) throw ipv4HostBits(addr, p.len);
    return addr * 64 + p.len;
  },
  len(key) {
    return key % 64;
  },
  end(key) {
    const len = key % 64;
    return ((key - len) / 64 + SPAN4[len]! - 1) * 64 + 32;
  },
  ancestor(key, len) {
    const addr = (key - (key % 64)) / 64;
    return (addr - (addr % SPAN4[len]!)) * 64 + len;
  },
};

/* IPv6: 32 hex digits of address, then 2 of length: string order is numeric order. */
const LEN_HEX = Array.from({ length: 129 }, (_, len) => len.toString(16).padStart(2, '0'));
const ZEROS = '0'.repeat(32);
const EFFS = 'f'.repeat(32);

/** The first `len` bits of a 32-digit hex address, the rest of the bits set to `fill`. */
function hexPrefix(hex: string, len: number, fill: 0 | 1): string {
  const whole = len >> 2;
  const rest = len & 3;
  let out = hex.slice(0, whole);
  if (rest) {
    const keep = (0xf0 >> rest) & 0xf;
    const nibble = parseInt(hex[whole]!, 16) & keep;
    out += (fill ? nibble | (~keep & 0xf) : nibble).toString(16);
  }
  return out + (fill ? EFFS : ZEROS).slice(out.length);
}

const IPV6_KEYS: FamilyKeys<string> = {
  maxLen: 128,
  key(p) {
    const hex = p.addr.toString('hex', 0, 16);
    if (hexPrefix(hex, p.len, 0) !== hex) throw new RangeError(`IPv6 prefix ${hex}/${p.len} has host bits set`);
    return hex + LEN_HEX[p.len]!;
  },
  len(key) {
    return parseInt(key.slice(32), 16);
  },
  end(key) {
    return hexPrefix(key, parseInt(key.slice(32), 16), 1) + LEN_HEX[128]!;
  },
  ancestor(key, len) {
    return hexPrefix(key, len, 0) + LEN_HEX[len]!;
  },
};

/** Prefixes per block; a block splits at twice this, so an insert moves at most that many. */
const BLOCK = 512;

/** A run of consecutive prefixes, as parallel arrays. */
class Block<K extends Key> {
  keys: K[] = [];
  rules: Rules[] = [];
  /** Undefined only between an insert and the resolve that follows it. */
  resolved: (LpmEntry | undefined)[] = [];
}

/** A prefix's resolved verdict at the start of a change (null: absent) and now. */
interface Touch {
  before: LpmEntry | null;
  after: LpmEntry | null;
}

function note<K extends Key>(
  touched: Map<K, Touch>,
  key: K,
  before: LpmEntry | undefined,
  after: LpmEntry | null,
): void {
  const t = touched.get(key);
  if (t) t.after = after;
  else touched.set(key, { before: before ?? null, after });
}

/** The prefixes of one family, sorted, in blocks. */
class FamilyTable<K extends Key> {
  private blocks: Block<K>[] = [];
  /** The last key of each block, for the binary search. */
  private lasts: K[] = [];
  private count = 0;
  /** Stored prefixes per length: the ancestor search skips lengths nobody uses. */
  private readonly lengths: Int32Array;

  /** `keys[i]` is the key of `entries[i]`, ascending; equal keys are one prefix's rules. */
  constructor(
    private readonly fam: FamilyKeys<K>,
    keys: ArrayLike<K>,
    entries: readonly LpmEntry[],
  ) {
    this.lengths = new Int32Array(fam.maxLen + 1);
    // The fold of resolveLpm: a stack of the open ancestors, by end key and resolved verdict.
    const ends: K[] = [];
    const verdicts: LpmEntry[] = [];
    let block = new Block<K>();
    for (let j = 0; j < entries.length;) {
      const key = keys[j]!;
      let rules: Rules = entries[j++]!;
      for (; j < entries.length && keys[j] === key; j++) {
        if (holds(rules, entries[j]!.ruleId)) throw duplicate(entries[j]!);
        rules = withRule(rules, entries[j]!);
      }
      while (ends.length && ends[ends.length - 1]! < key) {
        ends.pop();
        verdicts.pop();
      }
      const own = bestOf(rules);
      const parent = verdicts[verdicts.length - 1];
      const resolved = parent && compareRank(parent, own) < 0 ? { ...parent, prefix: own.prefix } : own;
      ends.push(fam.end(key));
      verdicts.push(resolved);
      block.keys.push(key);
      block.rules.push(rules);
      block.resolved.push(resolved);
      if (block.keys.length === BLOCK) {
        this.pushBlock(block);
        block = new Block<K>();
      }
      this.lengths[fam.len(key)]!++;
      this.count++;
    }
    if (block.keys.length) this.pushBlock(block);
  }

  private pushBlock(block: Block<K>): void {
    this.blocks.push(block);
    this.lasts.push(block.keys[block.keys.length - 1]!);
  }

  get size(): number {
    return this.count;
  }

  /** Where `key` is or would go: [block, index]; block === blocks.length when past every key. */
  private seek(key: K): [number, number] {
    let lo = 0;
    let hi = this.lasts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.lasts[mid]! < key) lo = mid + 1;
      else hi = mid;
    }
    const block = this.blocks[lo];
    if (!block) return [lo, 0];
    const keys = block.keys;
    let a = 0;
    let b = keys.length;
    while (a < b) {
      const mid = (a + b) >>> 1;
      if (keys[mid]! < key) a = mid + 1;
      else b = mid;
    }
    return [lo, a];
  }

  /** The rules at a prefix and where they are, if it is stored. */
  private find(key: K): [Block<K>, number] | undefined {
    const [b, i] = this.seek(key);
    const block = this.blocks[b];
    return block && block.keys[i] === key ? [block, i] : undefined;
  }

  holds(key: K, ruleId: number): boolean {
    const at = this.find(key);
    return at !== undefined && holds(at[0].rules[at[1]]!, ruleId);
  }

  add(e: LpmEntry, key: K, touched: Map<K, Touch>): void {
    const [b, i] = this.seek(key);
    const block = this.blocks[b];
    if (block && block.keys[i] === key) block.rules[i] = withRule(block.rules[i]!, e);
    else this.insertAt(b, i, key, e);
    this.resolve(key, this.inherited(key), touched);
  }

  remove(ref: LpmRef, key: K, touched: Map<K, Touch>): void {
    const [b, i] = this.seek(key);
    const block = this.blocks[b];
    if (!block || block.keys[i] !== key || !holds(block.rules[i]!, ref.ruleId)) return;
    const left = withoutRule(block.rules[i]!, ref.ruleId);
    if (left) block.rules[i] = left;
    else {
      note(touched, key, block.resolved[i], null);
      this.removeAt(b, i);
    }
    // With the prefix gone the run starts at whatever followed it: everything inside it.
    this.resolve(key, this.inherited(key), touched);
  }

  private insertAt(b: number, i: number, key: K, e: LpmEntry): void {
    if (this.blocks.length === 0) this.pushBlock(new Block<K>());
    if (b === this.blocks.length) {
      // Past every key: the end of the last block.
      b--;
      i = this.blocks[b]!.keys.length;
    }
    const block = this.blocks[b]!;
    block.keys.splice(i, 0, key);
    block.rules.splice(i, 0, e);
    block.resolved.splice(i, 0, undefined);
    if (block.keys.length > 2 * BLOCK) {
      const tail = new Block<K>();
      tail.keys = block.keys.splice(BLOCK);
      tail.rules = block.rules.splice(BLOCK);
      tail.resolved = block.resolved.splice(BLOCK);
      this.blocks.splice(b + 1, 0, tail);
      this.lasts.splice(b, 1, block.keys[block.keys.length - 1]!, tail.keys[tail.keys.length - 1]!);
    } else {
      this.lasts[b] = block.keys[block.keys.length - 1]!;
    }
    this.lengths[this.fam.len(key)]!++;
    this.count++;
  }

  private removeAt(b: number, i: number): void {
    const block = this.blocks[b]!;
    const [key] = block.keys.splice(i, 1);
    block.rules.splice(i, 1);
    block.resolved.splice(i, 1);
    if (block.keys.length === 0) {
      this.blocks.splice(b, 1);
      this.lasts.splice(b, 1);
    } else {
      this.lasts[b] = block.keys[block.keys.length - 1]!;
    }
    this.lengths[this.fam.len(key!)]!--;
    this.count--;
  }

  /** The resolved verdict of the nearest stored prefix strictly covering `key`'s. */
  private inherited(key: K): LpmEntry | undefined {
    for (let len = this.fam.len(key) - 1; len >= 0; len--) {
      if (this.lengths[len] === 0) continue;
      const at = this.find(this.fam.ancestor(key, len));
      if (at) return at[0].resolved[at[1]];
    }
    return undefined;
  }

  /** Re-resolve the run of prefixes inside `key`'s prefix under `inherited`, noting each change. */
  private resolve(key: K, inherited: LpmEntry | undefined, touched: Map<K, Touch>): void {
    const last = this.fam.end(key);
    const ends: K[] = [];
    const verdicts: LpmEntry[] = [];
    let [b, i] = this.seek(key);
    for (; b < this.blocks.length; b++, i = 0) {
      const block = this.blocks[b]!;
      for (; i < block.keys.length; i++) {
        const k = block.keys[i]!;
        if (k > last) return;
        while (ends.length && ends[ends.length - 1]! < k) {
          ends.pop();
          verdicts.pop();
        }
        const parent = verdicts.length ? verdicts[verdicts.length - 1] : inherited;
        const own = bestOf(block.rules[i]!);
        const win = parent && compareRank(parent, own) < 0 ? parent : own;
        let current = block.resolved[i];
        if (!current || !sameVerdict(current, win)) {
          const next = win === own ? own : { ...win, prefix: own.prefix };
          note(touched, k, current, next);
          block.resolved[i] = current = next;
        }
        ends.push(this.fam.end(k));
        verdicts.push(current);
      }
    }
  }

  resolvedInto(out: LpmEntry[]): void {
    for (const block of this.blocks) for (const r of block.resolved) out.push(r!);
  }
}

function duplicate(e: LpmRef): RangeError {
  return new RangeError(`rule ${e.ruleId} is twice at one prefix of an LPM table`);
}

/* Packed sort keys for IPv4: address in the high word, then length (6 bits) and entry index (26). */
const HI = endianness() === 'LE' ? 1 : 0;
const MAX_V4_ENTRIES = 2 ** 26;

/**
 * IPv4 entries in key order. A million objects sorted by a comparator take
 * seconds here; one native sort of packed 64-bit words takes milliseconds.
 */
function sortIpv4(entries: readonly LpmEntry[]): { keys: Float64Array; sorted: LpmEntry[] } {
  const n = entries.length;
  if (n >= MAX_V4_ENTRIES) throw new RangeError(`${n} IPv4 prefixes in one table: at most ${MAX_V4_ENTRIES - 1}`);
  const packed = new BigUint64Array(n);
  const words = new Uint32Array(packed.buffer);
  for (let i = 0; i < n; i++) {
    const p = entries[i]!.prefix;
    const addr = ipv4Value(p);
    if (addr % SPAN4[p.len]! !== 0) throw ipv4HostBits(addr, p.len);
    words[2 * i + HI] = addr;
    words[2 * i + 1 - HI] = ((p.len << 26) | i) >>> 0;
  }
  packed.sort();
  const keys = new Float64Array(n);
  const sorted = new Array<LpmEntry>(n);
  for (let i = 0; i < n; i++) {
    const low = words[2 * i + 1 - HI]!;
    keys[i] = words[2 * i + HI]! * 64 + (low >>> 26);
    sorted[i] = entries[low & (MAX_V4_ENTRIES - 1)]!;
  }
  return { keys, sorted };
}

function sortIpv6(entries: readonly LpmEntry[]): { keys: string[]; sorted: LpmEntry[] } {
  const keyed = entries.map((e) => ({ key: IPV6_KEYS.key(e.prefix), e }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { keys: keyed.map((x) => x.key), sorted: keyed.map((x) => x.e) };
}

export class LpmIndex {
  private readonly v4: FamilyTable<number>;
  private readonly v6: FamilyTable<string>;

  /** Build from ranked rules at prefixes (what compileRules folds); several may share a prefix. */
  constructor(entries: readonly LpmEntry[] = []) {
    const v4 = sortIpv4(entries.filter((e) => e.prefix.family === Family.ipv4));
    const v6 = sortIpv6(entries.filter((e) => e.prefix.family !== Family.ipv4));
    this.v4 = new FamilyTable(IPV4_KEYS, v4.keys, v4.sorted);
    this.v6 = new FamilyTable(IPV6_KEYS, v6.keys, v6.sorted);
  }

  /** Entries of the resolved table: distinct prefixes, both families. */
  get size(): number {
    return this.v4.size + this.v6.size;
  }

  /**
   * Apply a change and return what it did to the resolved table. Checked
   * before anything moves: when it throws, the index is as it was.
   */
  change(change: LpmChange): LpmDelta {
    const removes = (change.remove ?? []).map((ref) => ({ ref, key: keyOf(ref.prefix) }));
    const adds = (change.add ?? []).map((e) => ({ e, key: keyOf(e.prefix) }));
    const named = (key: Key, ruleId: number): string => `${key}/${ruleId}`;
    const removed = new Set(removes.map((r) => named(r.key, r.ref.ruleId)));
    const added = new Set<string>();
    for (const { e, key } of adds) {
      const name = named(key, e.ruleId);
      const held = typeof key === 'number' ? this.v4.holds(key, e.ruleId) : this.v6.holds(key, e.ruleId);
      if (added.has(name) || (held && !removed.has(name))) throw duplicate(e);
      added.add(name);
    }
    const touched4 = new Map<number, Touch>();
    const touched6 = new Map<string, Touch>();
    for (const { ref, key } of removes) {
      if (typeof key === 'number') this.v4.remove(ref, key, touched4);
      else this.v6.remove(ref, key, touched6);
    }
    for (const { e, key } of adds) {
      if (typeof key === 'number') this.v4.add(e, key, touched4);
      else this.v6.add(e, key, touched6);
    }
    const delta: LpmDelta = { upsert: [], delete: [], count: this.size };
    for (const touched of [touched4.values(), touched6.values()]) {
      for (const { before, after } of touched) {
        if (after) {
          if (!before || !sameVerdict(before, after)) delta.upsert.push(after);
        } else if (before) {
          delta.delete.push(before.prefix);
        }
      }
    }
    return delta;
  }

  add(entries: readonly LpmEntry[]): LpmDelta {
    return this.change({ add: entries });
  }

  remove(refs: readonly LpmRef[]): LpmDelta {
    return this.change({ remove: refs });
  }

  /** The whole resolved table in resolveLpm's order: IPv4 then IPv6, address then length. */
  resolved(): LpmEntry[] {
    const out: LpmEntry[] = [];
    this.v4.resolvedInto(out);
    this.v6.resolvedInto(out);
    return out;
  }
}

function keyOf(p: PrefixBytes): Key {
  return p.family === Family.ipv4 ? IPV4_KEYS.key(p) : IPV6_KEYS.key(p);
}
