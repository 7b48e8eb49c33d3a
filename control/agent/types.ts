/**
 * What the REST API and the CLI see of a running agent. The agent
 * (agent.ts) implements it; the API (control/api) only talks to this.
 */
import type { RuleApi } from '../rules/types.js';
import type { QueryLimits, QueryResult } from '../store/types.js';

export type XdpModeOption = 'auto' | 'native' | 'generic';

export interface InterfaceStatus {
  name: string;
  ifindex: number;
  /** XDP mode in use. */
  xdpMode: 'native' | 'generic';
  egress: boolean;
  /** Counters since the agent (re)started: flow-derived and kernel reason counters. */
  counters: {
    rxPackets: number;
    rxBytes: number;
    txPackets: number;
    txBytes: number;
    droppedPackets: number;
    nonIpPackets: number;
    malformed: Record<string, number>;
  };
}

export interface StoreStatus {
  kind: 'embedded' | 'server';
  /** Embedded: the directory; server: the URL without credentials. */
  location: string;
  healthy: boolean;
  lastError?: string;
  spooledBatches: number;
  spooledBytes: number;
}

export interface AgentStatus {
  version: string;
  host: string;
  startedAt: string;
  adopted: boolean;
  drainIntervalMs: number;
  lastDrainAt?: string;
  flowsDrained: number;
  flowsEvicted: number;
  interfaces: InterfaceStatus[];
  store: StoreStatus;
}

export interface AgentApi {
  status(): AgentStatus;
  interfaces(): InterfaceStatus[];
  /** Attach a NIC (XDP + egress TC per the agent's flags); errors name the interface. */
  attach(name: string, xdpMode?: XdpModeOption): Promise<InterfaceStatus>;
  detach(name: string): Promise<boolean>;
  query(sql: string, limits?: Partial<QueryLimits>): Promise<QueryResult>;
  /** The rule set: REST /rules and `flowgate rules` (control/rules/types.ts). */
  readonly rules: RuleApi;
}
