/** What every route module receives from buildApi(). */
import type { AgentApi } from '../agent/types.js';
import type { Metrics } from '../metrics.js';

export interface ApiContext {
  agent: AgentApi;
  metrics: Metrics;
  /** flowgate's version (GET /health, the OpenAPI document). */
  version: string;
  /**
   * Body limit (bytes) for a route that takes large bodies (PUT /rules with a
   * big blocklist): set `bodyLimit: ctx.largeBodyLimit` in its route options.
   * Every other route keeps the small default limit.
   */
  largeBodyLimit: number;
}
