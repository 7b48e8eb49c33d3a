/**
 * Output helpers of the CLI: aligned tables, CSV (RFC 4180 quoting), JSON,
 * and human-readable byte counts and rates.
 */

export type Align = 'left' | 'right';

/** One cell as table text: NULL for null, JSON for arrays/objects, control characters escaped. */
export function cellText(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'string') return escapeControl(v);
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  return escapeControl(JSON.stringify(v, jsonReplacer) ?? String(v));
}

/** Terminal-safe: tabs, newlines, escape sequences and other C0/C1 controls become visible escapes. */
function escapeControl(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
}

function width(s: string): number {
  // Code points, not UTF-16 units; good enough for the ASCII this prints.
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/**
 * An aligned table: a header, a rule of dashes, one line per row; columns
 * two spaces apart, no trailing spaces. `align` per column (default left).
 */
export function formatTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  align: readonly Align[] = [],
): string {
  const widths = header.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ''))));
  const line = (cells: readonly string[]): string =>
    widths
      .map((w, i) => {
        const c = cells[i] ?? '';
        const pad = ' '.repeat(w - width(c));
        return align[i] === 'right' ? pad + c : c + pad;
      })
      .join('  ')
      .trimEnd();
  const out = [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
  return `${out.join('\n')}\n`;
}

/** A CSV field: quoted when it holds a comma, quote, CR or LF, or starts/ends with a space. */
export function csvField(v: unknown): string {
  let s: string;
  if (v === null || v === undefined) s = '';
  else if (typeof v === 'string') s = v;
  else if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') s = String(v);
  else s = JSON.stringify(v, jsonReplacer) ?? String(v);
  return /[",\r\n]|^\s|\s$/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** CSV with a header line; lines end with \n. */
export function formatCsv(header: readonly string[], rows: readonly (readonly unknown[])[]): string {
  const lines = [header, ...rows].map((r) => r.map(csvField).join(','));
  return `${lines.join('\n')}\n`;
}

/**
 * JSON: an array of one object per row, keyed by column name (a repeated
 * name gets _2, _3…), pretty-printed.
 */
export function formatJson(header: readonly string[], rows: readonly (readonly unknown[])[]): string {
  const keys: string[] = [];
  const used = new Set<string>();
  for (const h of header) {
    let k = h;
    for (let n = 2; used.has(k); n++) k = `${h}_${n}`;
    used.add(k);
    keys.push(k);
  }
  const objects = rows.map((r) => Object.fromEntries(keys.map((k, i) => [k, r[i] ?? null])));
  return `${JSON.stringify(objects, jsonReplacer, 2)}\n`;
}

function jsonReplacer(_key: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

/** ClickHouse types whose values read best right-aligned. */
export function isNumericType(type: string): boolean {
  return /^(?:(?:Nullable|LowCardinality)\()*(?:U?Int\d+|Float\d+|Decimal)/.test(type);
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.5 KiB"; below 1 KiB exact ("512 B"). */
export function humanBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < BYTE_UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${BYTE_UNITS[u]}`;
}

const RATE_UNITS = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'];

/** Bits per second, SI units: 1500 → "1.5 kbit/s". */
export function humanBitRate(bitsPerSecond: number): string {
  let v = bitsPerSecond;
  let u = 0;
  while (Math.abs(v) >= 1000 && u < RATE_UNITS.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0 ? `${Math.round(v)} ${RATE_UNITS[0]}` : `${v.toFixed(1)} ${RATE_UNITS[u]}`;
}

/** Milliseconds as a short duration: 10000 → "10s", 90000 → "1m30s", 250 → "250ms". */
export function humanDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let s = Math.round(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
  ] as const) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  if (s > 0 || parts.length === 0) parts.push(`${s}s`);
  return parts.join('');
}
