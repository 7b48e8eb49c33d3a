/**
 * Test hosts: a network namespace joined to this one by a veth pair. Traffic
 * in tests goes only across such pairs. IPv6 is disabled on both ends so the
 * kernel's own chatter (router solicitations, MLD, DAD) never appears in
 * exact counts.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export interface VethPair {
  /** Namespace holding the peer end. */
  ns: string;
  /** The end in this (the test's) namespace: what flowgate attaches to. */
  host: string;
  /** The end inside `ns`. */
  peer: string;
  hostMac: string;
  peerMac: string;
  destroy(): void;
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function macOf(dev: string, ns?: string): string {
  const out = ns ? sh('ip', ['-n', ns, '-j', 'link', 'show', dev]) : sh('ip', ['-j', 'link', 'show', dev]);
  const [link] = JSON.parse(out) as Array<{ address: string }>;
  return link!.address;
}

export function createVethPair(prefix = 'fgt'): VethPair {
  const id = randomBytes(3).toString('hex');
  const ns = `${prefix}-${id}`;
  const host = `${prefix}h${id}`;
  const peer = `${prefix}p${id}`;
  sh('ip', ['netns', 'add', ns]);
  try {
    sh('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', peer, 'netns', ns]);
    sh('sysctl', ['-qw', `net.ipv6.conf.${host}.disable_ipv6=1`]);
    sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${peer}.disable_ipv6=1`]);
    sh('ip', ['link', 'set', host, 'up']);
    sh('ip', ['-n', ns, 'link', 'set', peer, 'up']);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  } catch (err) {
    sh('ip', ['netns', 'del', ns]);
    throw err;
  }
  return {
    ns,
    host,
    peer,
    hostMac: macOf(host),
    peerMac: macOf(peer, ns),
    destroy() {
      try {
        sh('ip', ['link', 'del', host]);
      } catch {
        // already gone with the namespace
      }
      sh('ip', ['netns', 'del', ns]);
    },
  };
}

export interface SendOptions {
  dev: string;
  /** Run inside this namespace (the peer's side). */
  ns?: string;
  count: number;
  /** Go through the qdisc layer, so TC egress sees the frames (trafgen bypasses it by default). */
  qdisc?: boolean;
}

/** Send `count` copies of one crafted frame with trafgen, single-threaded, and wait for it to finish. */
export function sendFrames(frame: Buffer, opts: SendOptions): void {
  const bytes = [...frame].map((b) => `0x${b.toString(16).padStart(2, '0')}`).join(', ');
  sendTrafgen(`{ ${bytes} }`, opts);
}

/**
 * Send `count` packets of a trafgen packet configuration (its header
 * syntax can vary fields per packet, e.g. `ipv4(saddr=dinc(a, b))`).
 */
export function sendTrafgen(config: string, opts: SendOptions): void {
  const args = ['--dev', opts.dev, '--num', String(opts.count), '--cpus', '1', '--no-cpu-stats', '--notouch-irq'];
  if (opts.qdisc) args.push('--qdisc-path');
  args.push(config);
  if (opts.ns) sh('ip', ['netns', 'exec', opts.ns, 'trafgen', ...args]);
  else sh('trafgen', args);
}
