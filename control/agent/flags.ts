/**
 * Values of `flowgate run` flags: each parser throws FlagError naming the
 * flag and what it accepts, which the CLI prints as one line.
 */
import { isIP } from 'node:net';

export class FlagError extends Error {
  constructor(
    readonly flag: string,
    message: string,
  ) {
    super(`${flag} ${message}`);
  }
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "500ms", "5s", "1m", "2h", "30d" → milliseconds. */
export function parseDuration(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) throw new FlagError(flag, `must be a duration like 500ms, 5s, 1m, 2h or 30d, got "${text}"`);
  const ms = Number(m[1]) * UNITS[m[2]!]!;
  if (!(ms > 0)) throw new FlagError(flag, `must be longer than zero, got "${text}"`);
  return ms;
}

export function parsePositiveInt(flag: string, text: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(text.trim())) throw new FlagError(flag, `must be a whole number, got "${text}"`);
  const n = Number(text);
  if (n < min || n > max) throw new FlagError(flag, `must be from ${min} to ${max}, got ${n}`);
  return n;
}

/** "a,b" → ["a","b"]: Linux interface names (1-15 chars, no '/', ':' or spaces). */
export function parseIfaces(flag: string, text: string): string[] {
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (names.length === 0) throw new FlagError(flag, 'needs at least one interface name');
  for (const n of names) {
    if (!/^[^\s/:]{1,15}$/.test(n)) throw new FlagError(flag, `"${n}" is not an interface name`);
  }
  if (new Set(names).size !== names.length) throw new FlagError(flag, 'names an interface twice');
  return names;
}

export interface ListenAddress {
  host: string;
  port: number;
}

/** "127.0.0.1:7650", "[::1]:7650", "localhost:7650". */
export function parseListen(flag: string, text: string): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text.trim());
  if (!m) throw new FlagError(flag, `must be host:port (e.g. 127.0.0.1:7650 or [::1]:7650), got "${text}"`);
  const host = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (port > 65535) throw new FlagError(flag, `port ${port} is beyond 65535`);
  if (host !== 'localhost' && !isIP(host)) throw new FlagError(flag, `"${host}" is not an IP address or localhost`);
  return { host, port };
}

export function parseXdpMode(flag: string, text: string): 'auto' | 'native' | 'generic' {
  if (text === 'auto' || text === 'native' || text === 'generic') return text;
  throw new FlagError(flag, `must be auto, native or generic, got "${text}"`);
}

export function parseClickHouseUrl(flag: string, text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new FlagError(flag, `must be a URL like http://user:pass@host:8123, got "${text}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new FlagError(flag, `must use http or https, got ${url.protocol.replace(':', '')}`);
  }
  return text;
}
