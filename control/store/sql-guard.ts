/**
 * The upfront check of a read-only query, before ClickHouse's readonly=1
 * sees it. readonly=1 refuses writes, DDL, settings and table functions, but
 * not everything a query can do in the embedded engine, which runs inside the
 * agent (as root): `INTO OUTFILE` writes a file there and the file() function
 * reads one — both allowed under readonly in clickhouse-local. So:
 * - one statement, starting with SELECT, WITH, SHOW, DESCRIBE/DESC, EXPLAIN
 *   or EXISTS (no SYSTEM, KILL, BACKUP, …);
 * - no INTO OUTFILE, no functions that touch the local filesystem.
 * A tokenizer, not a regex: keywords inside strings, quoted identifiers and
 * comments must neither trigger nor hide a refusal.
 */
import { StoreError } from './types.js';

const FIRST_WORDS = new Set(['select', 'with', 'show', 'describe', 'desc', 'explain', 'exists']);
/** Functions that read or load local files (names compared in lower case: some are case-insensitive). */
const LOCAL_FILE_FUNCTIONS = new Set(['file', 'catboostevaluate', 'modelevaluate']);

interface Token {
  kind: 'word' | 'quoted' | 'symbol';
  text: string;
  start: number;
}

function tokenize(sql: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '-' && sql[i + 1] === '-') {
      while (i < n && sql[i] !== '\n') i++;
    } else if (c === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2);
      i = end < 0 ? n : end + 2;
    } else if (c === "'" || c === '"' || c === '`') {
      // A string literal, or a quoted identifier: backslash escapes and doubled quotes.
      const start = i++;
      let text = '';
      while (i < n) {
        const d = sql[i]!;
        if (d === '\\' && i + 1 < n) {
          text += sql[i + 1];
          i += 2;
        } else if (d === c && sql[i + 1] === c) {
          text += c;
          i += 2;
        } else if (d === c) {
          i++;
          break;
        } else {
          text += d;
          i++;
        }
      }
      out.push({ kind: c === "'" ? 'symbol' : 'quoted', text: c === "'" ? "'" : text, start });
    } else if (/[A-Za-z_]/.test(c)) {
      const start = i;
      while (i < n && /[A-Za-z0-9_$]/.test(sql[i]!)) i++;
      out.push({ kind: 'word', text: sql.slice(start, i), start });
    } else {
      out.push({ kind: 'symbol', text: c, start: i });
      i++;
    }
  }
  return out;
}

function refuse(message: string): never {
  throw new StoreError(`query refused: ${message}`, false);
}

/**
 * Check a query and return the single statement to run: trimmed, without
 * the trailing ';' (the client appends FORMAT after it).
 */
export function guardReadOnlySql(sql: string): string {
  const tokens = tokenize(sql);
  const first = tokens.find((t) => t.text !== '(');
  if (!first) refuse('the query is empty');
  if (first.kind !== 'word' || !FIRST_WORDS.has(first.text.toLowerCase())) {
    refuse(`only read-only queries (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS) are allowed, not ${first.text}`);
  }
  const semi = tokens.findIndex((t) => t.text === ';' && t.kind === 'symbol');
  if (semi >= 0 && tokens.slice(semi).some((t) => t.text !== ';' || t.kind !== 'symbol')) {
    refuse('one statement at a time');
  }
  const body = semi >= 0 ? tokens.slice(0, semi) : tokens;
  for (let i = 0; i < body.length; i++) {
    const t = body[i]!;
    const name = t.text.toLowerCase();
    if (t.kind === 'word' && name === 'into' && body[i + 1]?.text.toLowerCase() === 'outfile') {
      refuse('INTO OUTFILE writes files on the agent host');
    }
    if ((t.kind === 'word' || t.kind === 'quoted') && LOCAL_FILE_FUNCTIONS.has(name) && body[i + 1]?.text === '(') {
      refuse(`${t.text}() reads files on the agent host`);
    }
  }
  return (semi >= 0 ? sql.slice(0, tokens[semi]!.start) : sql).trim();
}
