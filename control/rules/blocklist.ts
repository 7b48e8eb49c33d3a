/**
 * Blocklists → rule specs, for `flowgate rules import` (issue 4).
 *
 * One prefix or address per line; `;` and `#` start a comment; blank lines
 * are skipped. A comment on the same line as a prefix becomes the rule's
 * comment, which is how the Spamhaus DROP/EDROP text lists carry their ids:
 *
 *   ; Spamhaus DROP List 2024/05/01 - (c) 2024 The Spamhaus Project SLU
 *   1.10.16.0/20 ; SBL256894
 *
 * Spamhaus' newer JSON-lines lists (drop_v4.json, drop_v6.json) are read
 * too: `{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}` per line,
 * and the closing `{"type":"metadata",…}` line is skipped.
 *
 * Every prefix is checked here (the same parser as the agent's), so a bad
 * line is reported by its number before anything is sent, and a prefix
 * with host bits set is normalised with a warning naming its line.
 */
import { readFile } from 'node:fs/promises';
import { parsePrefix, PrefixError } from './prefix.js';
import type { RuleSpec } from './rule.js';

export interface BlocklistOptions {
  /** The rules' action (default drop). */
  action?: 'drop' | 'allow';
  /** Match the prefix as the source (default) or the destination address. */
  direction?: 'src' | 'dst';
  /** The rules' priority (default: the agent's default). */
  priority?: number;
  /** Put in front of every rule's comment, e.g. the list's name: "spamhaus-drop: SBL256894". */
  comment?: string;
}

export interface Blocklist {
  rules: RuleSpec[];
  /** e.g. "line 12: 10.1.2.3/8 has host bits set; imported as 10.0.0.0/8". */
  warnings: string[];
}

/** A line that is not a prefix: `line 7: "10.0.0.0/33" is not a valid IPv4 prefix: …`. */
export class BlocklistError extends Error {
  constructor(
    readonly line: number,
    readonly text: string,
    message: string,
    readonly file?: string,
  ) {
    super(`${file ? `${file}: ` : ''}line ${line}: ${message}`);
    this.name = 'BlocklistError';
  }
}

/** The rule model's limit on comments. */
const MAX_COMMENT = 1024;

/** Cut a comment to the rule model's limit: a long note must not fail a million-line import. */
function clip(comment: string): string {
  return comment.length <= MAX_COMMENT ? comment : `${comment.slice(0, MAX_COMMENT - 1)}…`;
}

function shown(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 77)}...` : text);
}

interface Entry {
  prefix: string;
  note: string;
}

/** A Spamhaus JSON line → its prefix and id, or undefined for the metadata line. */
function jsonEntry(body: string, lineNo: number, file: string | undefined): Entry | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    throw new BlocklistError(lineNo, body, `${shown(body)} is neither a prefix nor a JSON object`, file);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new BlocklistError(lineNo, body, `${shown(body)} is not a JSON object`, file);
  }
  const o = value as Record<string, unknown>;
  if (o.type === 'metadata') return undefined;
  if (typeof o.cidr !== 'string') {
    throw new BlocklistError(lineNo, body, `${shown(body)} has no "cidr" string`, file);
  }
  const note = typeof o.sblid === 'string' ? o.sblid : '';
  return { prefix: o.cidr, note };
}

/** Blocklist text → rule specs; throws BlocklistError naming the first bad line. */
export function parseBlocklist(text: string, opts: BlocklistOptions = {}, file?: string): Blocklist {
  const action = opts.action ?? 'drop';
  const direction = opts.direction ?? 'src';
  const rules: RuleSpec[] = [];
  const warnings: string[] = [];
  /** Canonical prefix → the line that first listed it: a repeated prefix would be a duplicate rule. */
  const seen = new Map<string, number>();
  const input = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  let lineNo = 0;
  let start = 0;
  // By index rather than split(): a million-line list stays one string.
  while (start <= input.length) {
    let end = input.indexOf('\n', start);
    if (end < 0) end = input.length;
    const raw = input.slice(start, end);
    start = end + 1;
    lineNo++;
    const line = raw.trim();
    if (line === '' || line[0] === '#' || line[0] === ';') continue;

    let entry: Entry | undefined;
    if (line[0] === '{') {
      entry = jsonEntry(line, lineNo, file);
      if (!entry) continue;
    } else {
      const cut = line.search(/[;#]/);
      const prefix = (cut < 0 ? line : line.slice(0, cut)).trim();
      const note = cut < 0 ? '' : line.slice(cut + 1).trim();
      if (/\s/.test(prefix)) {
        throw new BlocklistError(lineNo, raw, `${shown(prefix)} is not one prefix (start a comment with ; or #)`, file);
      }
      entry = { prefix, note };
    }

    let cidr: string;
    try {
      const p = parsePrefix(entry.prefix);
      cidr = p.cidr;
      if (p.normalised) warnings.push(`line ${lineNo}: ${entry.prefix} has host bits set; imported as ${cidr}`);
    } catch (err) {
      if (err instanceof PrefixError) throw new BlocklistError(lineNo, raw, err.message, file);
      throw err;
    }
    const first = seen.get(cidr);
    if (first !== undefined) {
      warnings.push(`line ${lineNo}: ${cidr} is listed on line ${first} already; skipped`);
      continue;
    }
    seen.set(cidr, lineNo);

    const rule: RuleSpec = { action };
    rule[direction] = cidr;
    if (opts.priority !== undefined) rule.priority = opts.priority;
    const comment = opts.comment && entry.note ? `${opts.comment}: ${entry.note}` : opts.comment || entry.note;
    if (comment) rule.comment = clip(comment);
    rules.push(rule);
  }
  return { rules, warnings };
}

/** Read and parse a blocklist file; errors name the file and the line. */
export async function readBlocklist(file: string, opts: BlocklistOptions = {}): Promise<Blocklist> {
  const text = await readFile(file, 'utf8');
  return parseBlocklist(text, opts, file);
}
