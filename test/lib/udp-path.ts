/**
 * What a filter lets through, measured end to end: UDP frames sent from a
 * veth pair's namespace side (crafted bytes, trafgen) to a socket bound on
 * the agent's side, and the agent's REST API called over HTTP.
 */
import { once } from 'node:events';
import { createSocket, type Socket } from 'node:dgram';
import type { AgentProcess } from './agent.js';
import { buildFrame } from './frames.js';
import { sendFrames, sh, type VethPair } from './netns.js';

export interface Receiver {
  count(): number;
  close(): Promise<void>;
}

/** Give the pair a /24: `hostIp` on the host side, `peerIp` in the namespace. */
export function addressPair(veth: VethPair, hostIp: string, peerIp: string): void {
  sh('ip', ['addr', 'add', `${hostIp}/24`, 'dev', veth.host]);
  sh('ip', ['-n', veth.ns, 'addr', 'add', `${peerIp}/24`, 'dev', veth.peer]);
}

/** A UDP socket on the agent's side of the veth: what the filter let through reaches it. */
export async function receiver(ip: string, port: number): Promise<Receiver> {
  const sock: Socket = createSocket('udp4');
  let n = 0;
  sock.on('message', () => n++);
  sock.bind(port, ip);
  await once(sock, 'listening');
  return {
    count: () => n,
    close: () => new Promise((r) => sock.close(() => r())),
  };
}

/** A UDP frame from `src` (in the namespace) to `dst`:`port` on the host side of `veth`. */
export function udpFrame(veth: VethPair, src: string, dst: string, port: number): Buffer {
  return buildFrame({
    eth: { src: veth.peerMac, dst: veth.hostMac },
    ipv4: { src, dst },
    udp: { sport: 5555, dport: port },
    payload: 32,
  });
}

/** Send `count` copies of `frame` and return how many reached the receiver. */
export async function deliver(veth: VethPair, rx: Receiver, frame: Buffer, count: number): Promise<number> {
  const before = rx.count();
  sendFrames(frame, { dev: veth.peer, ns: veth.ns, count });
  // Delivery to the socket is asynchronous: wait until the count settles.
  let last = -1;
  for (let i = 0; i < 50 && rx.count() !== last; i++) {
    last = rx.count();
    await new Promise((r) => setTimeout(r, 40));
  }
  return rx.count() - before;
}

/** One REST call to a running agent: status and JSON body. */
export async function callApi<T = Record<string, unknown>>(
  agent: AgentProcess,
  method: string,
  url: string,
  body?: unknown,
  token?: string,
): Promise<{ status: number; body: T }> {
  const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${agent.api}/api/v1${url}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  // A 204 (DELETE /interfaces/:name) has no body.
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}
