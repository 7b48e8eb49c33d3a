/** JSON Schemas shared by routes (they also make the OpenAPI document). */
import { errorSchema } from './errors.js';

/** Linux dev_valid_name(): 1–15 bytes, not "." or "..", no '/', ':' or whitespace. */
export const ifaceNameSchema = {
  type: 'string',
  minLength: 1,
  maxLength: 15,
  pattern: '^(?!\\.\\.?$)[^\\s/:]+$',
  description: "a network interface name (1 to 15 characters, not '.' or '..', no '/', ':' or whitespace)",
} as const;

export const xdpModeOptionSchema = {
  type: 'string',
  enum: ['auto', 'native', 'generic'],
  description: 'XDP attach mode: native (driver) or generic (skb); auto tries native first',
} as const;

export const interfaceStatusSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    name: { type: 'string' },
    ifindex: { type: 'integer' },
    xdpMode: { type: 'string', enum: ['native', 'generic'], description: 'XDP mode in use' },
    egress: { type: 'boolean', description: 'TC egress program attached' },
    counters: {
      type: 'object',
      additionalProperties: true,
      description: 'since the agent (re)started',
      properties: {
        rxPackets: { type: 'number' },
        rxBytes: { type: 'number' },
        txPackets: { type: 'number' },
        txBytes: { type: 'number' },
        droppedPackets: { type: 'number' },
        nonIpPackets: { type: 'number' },
        malformed: { type: 'object', additionalProperties: { type: 'number' }, description: 'by reason' },
      },
    },
  },
} as const;

/** Standard error responses, to spread into a route's `response`. */
export function errorResponses(...codes: number[]): Record<number, typeof errorSchema> {
  const out: Record<number, typeof errorSchema> = {};
  for (const code of codes) out[code] = errorSchema;
  return out;
}
