/** `flowgate status`: the agent's interfaces, modes, counters, drains and store. */
import type { Command } from 'commander';
import type { AgentStatus } from '../agent/types.js';
import { formatTable, humanBytes, humanDuration } from './format.js';
import { addClientOptions, choice, clientFrom, type ClientFlags } from './options.js';

const STATUS_FORMATS = ['table', 'json'] as const;

/** The status as text for people. */
export function renderStatus(s: AgentStatus): string {
  const out: string[] = [];
  out.push(
    `flowgate ${s.version} on ${s.host}, started ${s.startedAt}${s.adopted ? ' (adopted pinned programs and maps)' : ''}`,
  );
  out.push(
    `drains: every ${humanDuration(s.drainIntervalMs)}, last ${s.lastDrainAt ?? 'never'}; ` +
      `flows drained ${s.flowsDrained}, evicted ${s.flowsEvicted}`,
  );
  const st = s.store;
  out.push(
    `store:  ${st.kind} ${st.location}, ${st.healthy ? 'healthy' : 'UNHEALTHY'}; ` +
      `spooled ${st.spooledBatches} ${st.spooledBatches === 1 ? 'batch' : 'batches'}, ${humanBytes(st.spooledBytes)}`,
  );
  if (st.lastError) out.push(`        last error: ${st.lastError.replace(/\s*\n\s*/g, ' ')}`);
  out.push('');
  if (s.interfaces.length === 0) {
    out.push('no interfaces attached');
    return `${out.join('\n')}\n`;
  }
  const header = [
    'IFACE',
    'IFINDEX',
    'XDP',
    'EGRESS',
    'RX PKTS',
    'RX BYTES',
    'TX PKTS',
    'TX BYTES',
    'DROPPED',
    'NON-IP',
    'MALFORMED',
  ];
  const align = [
    'left',
    'right',
    'left',
    'left',
    'right',
    'right',
    'right',
    'right',
    'right',
    'right',
    'right',
  ] as const;
  const rows = s.interfaces.map((i) => {
    const c = i.counters;
    const malformed = Object.values(c.malformed).reduce((a, b) => a + b, 0);
    return [
      i.name,
      String(i.ifindex),
      i.xdpMode,
      i.egress ? 'yes' : 'no',
      String(c.rxPackets),
      humanBytes(c.rxBytes),
      String(c.txPackets),
      humanBytes(c.txBytes),
      String(c.droppedPackets),
      String(c.nonIpPackets),
      String(malformed),
    ];
  });
  let text = formatTable(header, rows, align);
  for (const i of s.interfaces) {
    const reasons = Object.entries(i.counters.malformed).filter(([, n]) => n > 0);
    if (reasons.length) text += `malformed on ${i.name}: ${reasons.map(([r, n]) => `${r} ${n}`).join(', ')}\n`;
  }
  return `${out.join('\n')}\n${text}`;
}

export function registerStatus(program: Command): void {
  addClientOptions(
    program
      .command('status')
      .description("show the agent's interfaces, XDP modes, counters, drains and store state")
      .option('--format <format>', 'table or json', choice('--format', STATUS_FORMATS), 'table' as 'table' | 'json'),
  ).action(async (flags: ClientFlags & { format: 'table' | 'json' }) => {
    const status = await clientFrom(flags).status();
    process.stdout.write(flags.format === 'json' ? `${JSON.stringify(status, null, 2)}\n` : renderStatus(status));
  });
}
