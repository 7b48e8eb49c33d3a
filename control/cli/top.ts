/**
 * `flowgate top`: the flows with the most bytes over the last --window,
 * from POST /query on flowgate.flows, refreshed every --interval in the
 * terminal (ANSI clear; alternate screen on a TTY). --once prints one frame.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Option, type Command } from 'commander';
import { parseDuration, parsePositiveInt } from '../agent/flags.js';
import type { QueryResult } from '../store/types.js';
import { CliError, type ApiClient } from './client.js';
import { formatTable, humanBitRate, humanBytes, humanDuration } from './format.js';
import { addClientOptions, clientFrom, parseIfaceName, type ClientFlags } from './options.js';

export interface TopOptions {
  windowMs: number;
  limit: number;
  iface?: string;
}

const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp' };
const PORTED = new Set([6, 17, 132]);
const ICMP = new Set([1, 58]);

/** The query behind a frame. `iface` must already be a valid interface name; it is quoted anyway. */
export function topQuery(o: TopOptions): string {
  const where = [`last_seen >= now64(6) - toIntervalMillisecond(${Math.round(o.windowMs)})`];
  if (o.iface !== undefined) where.push(`iface = '${o.iface.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`);
  return [
    'SELECT src_addr, dst_addr, protocol, src_port, dst_port,',
    '  sum(packets) AS packets, sum(bytes) AS bytes, sum(dropped_packets) AS dropped',
    'FROM flowgate.flows',
    `WHERE ${where.join(' AND ')}`,
    'GROUP BY src_addr, dst_addr, protocol, src_port, dst_port',
    'ORDER BY bytes DESC, packets DESC',
    `LIMIT ${o.limit}`,
  ].join('\n');
}

/** IPv4-mapped IPv6 (::ffff:192.0.2.1) back to IPv4. */
function addr(v: unknown): string {
  const s = String(v);
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(s) ? s.slice(7) : s;
}

function endpoint(a: unknown, port: number, proto: number): string {
  const host = addr(a);
  if (!PORTED.has(proto)) return host;
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

function num(v: unknown): number {
  return typeof v === 'number' ? v : Number(v);
}

/** One frame: a title line, then the table (or a line saying there are no flows). */
export function renderTop(result: QueryResult, o: TopOptions, now?: Date): string {
  const title =
    `flowgate top: flows with the most bytes over the last ${humanDuration(o.windowMs)}` +
    (o.iface !== undefined ? ` on ${o.iface}` : '') +
    (now ? `, ${now.toISOString().slice(11, 19)} UTC` : '');
  const col = new Map(result.columns.map((c, i) => [c.name, i]));
  const get = (row: unknown[], name: string): unknown => row[col.get(name) ?? -1];
  if (result.rows.length === 0) return `${title}\n\nno flows in the last ${humanDuration(o.windowMs)}\n`;
  const seconds = o.windowMs / 1000;
  const rows = result.rows.map((r) => {
    const proto = num(get(r, 'protocol'));
    const sport = num(get(r, 'src_port'));
    const dport = num(get(r, 'dst_port'));
    const bytes = num(get(r, 'bytes'));
    const name = PROTO_NAMES[proto] ?? String(proto);
    return [
      endpoint(get(r, 'src_addr'), sport, proto),
      endpoint(get(r, 'dst_addr'), dport, proto),
      ICMP.has(proto) ? `${name} ${sport}/${dport}` : name,
      String(get(r, 'packets')),
      humanBytes(bytes),
      humanBitRate((bytes * 8) / seconds),
      String(get(r, 'dropped')),
    ];
  });
  const header = ['SRC', 'DST', 'PROTO', 'PACKETS', 'BYTES', 'RATE', 'DROPPED'];
  const align = ['left', 'left', 'left', 'right', 'right', 'right', 'right'] as const;
  return `${title}\n\n${formatTable(header, rows, align)}`;
}

async function live(client: ApiClient, o: TopOptions, intervalMs: number): Promise<void> {
  const out = process.stdout;
  const tty = out.isTTY === true;
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // Alternate screen and hidden cursor, like top(1); restored however this ends.
  if (tty) out.write('\x1b[?1049h\x1b[?25l');
  try {
    const sql = topQuery(o);
    for (let first = true; !stop.signal.aborted; first = false) {
      let frame: string;
      try {
        frame = renderTop(await client.query(sql, stop.signal), o, new Date());
      } catch (err) {
        if (stop.signal.aborted) break;
        // A first failure is a wrong --api or token: say so once and exit. Later ones are shown and retried.
        if (first || !(err instanceof CliError)) throw err;
        frame = `flowgate top: ${new Date().toISOString().slice(11, 19)} UTC\n\n${err.message} (retrying)\n`;
      }
      out.write(tty ? `\x1b[H\x1b[2J${frame}` : `${frame}\n`);
      await sleep(intervalMs, undefined, { signal: stop.signal }).catch(() => undefined);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (tty) out.write('\x1b[?25h\x1b[?1049l');
  }
}

export function registerTop(program: Command): void {
  addClientOptions(
    program
      .command('top')
      .description('live top talkers: the flows with the most bytes over the last --window')
      .addOption(
        new Option('--window <duration>', 'how far back to sum flows')
          .argParser((v: string) => parseDuration('--window', v))
          .default(60_000, '60s'),
      )
      .addOption(
        new Option('--interval <duration>', 'refresh period')
          .argParser((v: string) => parseDuration('--interval', v))
          .default(2_000, '2s'),
      )
      .option('--limit <n>', 'flows to show', (v: string) => parsePositiveInt('--limit', v, 1, 10_000), 20)
      .option('--iface <name>', 'only flows on this interface', (v: string) => parseIfaceName('--iface', v))
      .option('--once', 'print one frame and exit'),
  ).action(
    async (
      flags: ClientFlags & { window: number; interval: number; limit: number; iface?: string; once?: boolean },
    ) => {
      const client = clientFrom(flags);
      const o: TopOptions = { windowMs: flags.window, limit: flags.limit, iface: flags.iface };
      if (flags.once) {
        process.stdout.write(renderTop(await client.query(topQuery(o)), o));
        return;
      }
      await live(client, o, flags.interval);
    },
  );
}
