/**
 * Rules (issue 4), under /api/v1:
 *   POST   /rules            one rule → 201 {rule, warnings}
 *   GET    /rules            ?action=&prefix=&comment=&limit=&offset= → a page
 *   GET    /rules/:id        the rule with its matched packets and bytes
 *   DELETE /rules/:id        → {rule}
 *   PUT    /rules            {rules: [...]} replaces the whole set atomically
 *
 * The schemas check shape (types, ranges, unknown members); what needs the
 * rule model (CIDR syntax, family pairs, ports need a protocol, expiry) is
 * the rule service's, which reports it as a RuleRequestError naming the
 * field. Both end up as a 400 `body/<field> …` message.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { parsePrefix, PrefixError } from '../../rules/prefix.js';
import { MAX_PRIORITY, RuleError, type RuleSpec } from '../../rules/rule.js';
import { RuleRequestError, type MutationHooks, type RuleListQuery, type RulePage } from '../../rules/types.js';
import type { ApiContext } from '../context.js';
import { ApiError } from '../errors.js';
import { errorResponses, ifaceNameSchema } from '../schemas.js';

/** Page size of GET /rules: default and upper bound (the RuleApi contract's). */
export const DEFAULT_PAGE_LIMIT = 100;
export const MAX_PAGE_LIMIT = 10_000;
/** The most rules one PUT /rules may carry. */
export const MAX_RULES_PER_PUT = 1_000_000;
/** Rule ids are u32 in the kernel tables; 0 means "no rule". */
export const MAX_RULE_ID = 0xffff_ffff;

const prefixText = {
  type: 'string',
  minLength: 1,
  // The longest IPv6 CIDR text is 43 characters; a little room for spaces around it.
  maxLength: 64,
} as const;

const portsSchema = {
  type: ['string', 'integer'],
  minLength: 1,
  maxLength: 16,
  minimum: 0,
  maximum: 65535,
  description: 'a port (80) or an inclusive range ("1000-2000"); needs protocol tcp, udp or sctp',
} as const;

const protocolSchema = {
  type: ['string', 'integer'],
  minLength: 1,
  maxLength: 16,
  minimum: 0,
  maximum: 255,
  description: 'tcp, udp, icmp, icmpv6, sctp, or an IP protocol number (0-255)',
} as const;

const commentSchema = { type: 'string', maxLength: 1024, description: 'free text, at most 1024 characters' } as const;

/** A rule as users send it (POST /rules, and each item of PUT /rules). */
export const ruleSpecSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['action'],
  description:
    'A rule. The highest-priority matching rule decides; ties go to allow, then to the lower id. ' +
    'Without iface it applies on every attached interface.',
  properties: {
    id: {
      type: 'integer',
      minimum: 1,
      maximum: MAX_RULE_ID,
      description: 'a stable id to use (409 when taken); by default the next free id',
    },
    action: { type: 'string', enum: ['drop', 'allow'] },
    src: { ...prefixText, description: 'source prefix, IPv4 or IPv6 (host bits set: normalised, with a warning)' },
    dst: { ...prefixText, description: 'destination prefix, the same family as src' },
    protocol: protocolSchema,
    srcPorts: portsSchema,
    dstPorts: portsSchema,
    priority: { type: 'integer', minimum: 0, maximum: MAX_PRIORITY, description: 'higher wins; default 100' },
    // The description stays the name rule's: schema errors on a pattern quote it.
    iface: ifaceNameSchema,
    expiresAt: {
      type: 'string',
      // A pattern, not `format: date-time`: ajv-formats' date-time check costs ~0.5 s per
      // million rules in a PUT; the rule model rejects impossible dates (month 13) anyway.
      pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,9})?)?(Z|[+-]\\d{2}:?\\d{2})$',
      maxLength: 40,
      description: 'an ISO-8601 date-time with a time zone, e.g. 2030-01-01T00:00:00Z',
    },
    ttlSeconds: {
      type: 'integer',
      minimum: 1,
      // A hundred years: far enough for anyone, near enough that the expiry is a valid date.
      maximum: 3_153_600_000,
      description: 'expire this many seconds from now (instead of expiresAt)',
    },
    comment: commentSchema,
  },
} as const;

/** A rule as stored and returned (StoredRule in control/rules/types.ts). */
export const storedRuleProperties = {
  id: { type: 'integer' },
  action: { type: 'string', enum: ['drop', 'allow'] },
  src: { type: 'string', description: 'normalised CIDR' },
  dst: { type: 'string', description: 'normalised CIDR' },
  protocol: { type: ['string', 'integer'], description: 'a name when there is one, else the number' },
  srcPorts: { type: 'string', description: '"80" or "1000-2000"' },
  dstPorts: { type: 'string' },
  priority: { type: 'integer' },
  iface: { type: 'string' },
  expiresAt: { type: 'string', format: 'date-time' },
  comment: { type: 'string' },
  createdAt: { type: 'string', format: 'date-time' },
  updatedAt: { type: 'string', format: 'date-time' },
} as const;

const storedRuleRequired = ['id', 'action', 'priority', 'createdAt', 'updatedAt'];

export const storedRuleSchema = {
  type: 'object',
  description: 'A rule as stored: prefixes normalised, times in ISO-8601 UTC.',
  properties: storedRuleProperties,
  required: storedRuleRequired,
} as const;

export const ruleWithStatsSchema = {
  type: 'object',
  description: 'A rule and what it matched since it was created (kernel counters).',
  properties: {
    ...storedRuleProperties,
    matchedPackets: { type: 'integer', minimum: 0 },
    matchedBytes: { type: 'integer', minimum: 0 },
  },
  required: [...storedRuleRequired, 'matchedPackets', 'matchedBytes'],
} as const;

export const rulePageSchema = {
  type: 'object',
  properties: {
    rules: { type: 'array', items: storedRuleSchema },
    total: { type: 'integer', description: 'rules matching the filter, over all pages' },
    offset: { type: 'integer' },
    limit: { type: 'integer' },
  },
  required: ['rules', 'total', 'offset', 'limit'],
} as const;

const warningsSchema = {
  type: 'array',
  items: { type: 'string' },
  description: 'what was normalised, e.g. "src: 10.1.2.3/8 has host bits set; stored as 10.0.0.0/8"',
} as const;

export const ruleChangeSchema = {
  type: 'object',
  properties: { rule: storedRuleSchema, warnings: warningsSchema },
  required: ['rule', 'warnings'],
} as const;

export const ruleReplaceSchema = {
  type: 'object',
  properties: {
    count: { type: 'integer', description: 'rules in the new set' },
    warnings: { ...warningsSchema, description: 'the first warnings (see warningCount)' },
    warningCount: { type: 'integer', description: 'all warnings, listed or not' },
  },
  required: ['count', 'warnings', 'warningCount'],
} as const;

/**
 * The PUT /rules body. Every item is validated against the full rule schema:
 * measured with the API's ajv options, 1,000,000 plain prefix rules take
 * ~0.1 s and 1,000,000 rules using every member ~0.25 s (JSON.parse of such
 * a body alone takes ~0.8 s). A shallow check (items: object) would be
 * cheaper but dangerous: the rule model ignores unknown members, so a typo
 * like `scr` would turn a prefix rule into one that matches everything.
 */
export const ruleSetSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['rules'],
  properties: {
    rules: {
      type: 'array',
      maxItems: MAX_RULES_PER_PUT,
      items: ruleSpecSchema,
      description: `the whole new rule set (at most ${MAX_RULES_PER_PUT} rules); rules with an id keep it`,
    },
  },
} as const;

const idParamsSchema = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'integer', minimum: 1, maximum: MAX_RULE_ID } },
} as const;

const listQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    action: { type: 'string', enum: ['drop', 'allow'] },
    prefix: { ...prefixText, description: 'rules whose src or dst overlaps this CIDR (contains it or lies inside)' },
    comment: { type: 'string', minLength: 1, maxLength: 1024, description: 'case-insensitive substring' },
    limit: { type: 'integer', minimum: 1, maximum: MAX_PAGE_LIMIT, default: DEFAULT_PAGE_LIMIT },
    offset: { type: 'integer', minimum: 0, default: 0, description: 'rules to skip, in id order' },
  },
} as const;

interface IdParams {
  id: number;
}

interface ListQuery {
  action?: 'drop' | 'allow';
  prefix?: string;
  comment?: string;
  limit: number;
  offset: number;
}

/** The message of a RuleRequestError without its `field: ` prefix. */
function bareMessage(err: Error, field: string): string {
  const prefix = `${field}: `;
  return err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
}

/**
 * A RuleApi error → ApiError. `part` is where the offending field lives
 * (body, querystring), so messages read like the schema's: `body/src: …`.
 * Anything else is rethrown for the error handler (500, no stack).
 */
export function ruleApiError(err: unknown, part: 'body' | 'querystring' | 'params'): unknown {
  if (err instanceof RuleRequestError) {
    const message = err.field ? `${part}/${err.field}: ${bareMessage(err, err.field)}` : err.message;
    if (err.status === 404) return new ApiError(404, 'not_found', message);
    if (err.status === 409) return new ApiError(409, 'conflict', message);
    if (err.status === 503) return new ApiError(503, 'rule_store_unavailable', message);
    return new ApiError(400, 'bad_request', message);
  }
  // The contract says RuleRequestError, but a RuleError escaping parseRule is still the caller's fault.
  if (err instanceof RuleError) return new ApiError(400, 'bad_request', `${part}/${err.message}`);
  return err;
}

export function ruleRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const rules = ctx.agent.rules;

  /**
   * Run a mutation and time it from the request's arrival to the kernel
   * enforcing it (the service says when: before the rules file is synced):
   * the metric, and a Server-Timing header (`enforce;dur=<ms>`) a client can
   * read. Failures are not enforcements.
   */
  async function enforce<T>(
    part: 'body' | 'params',
    reply: FastifyReply,
    change: (hooks: MutationHooks) => Promise<T>,
  ): Promise<T> {
    let enforcedMs: number | undefined;
    const onEnforced = (): void => {
      enforcedMs = reply.elapsedTime;
    };
    let result: T;
    try {
      result = await change({ onEnforced });
    } catch (err) {
      throw ruleApiError(err, part);
    }
    if (enforcedMs !== undefined) {
      ctx.metrics.ruleEnforceLatency.observe(enforcedMs / 1000);
      void reply.header('server-timing', `enforce;dur=${enforcedMs.toFixed(3)}`);
    }
    return result;
  }

  app.post<{ Body: RuleSpec }>(
    '/rules',
    {
      schema: {
        summary: 'Add a rule; it is enforced when the answer comes',
        tags: ['rules'],
        body: ruleSpecSchema,
        response: { 201: ruleChangeSchema, ...errorResponses(400, 401, 409, 413, 415, 429, 500, 503) },
      },
    },
    async (request, reply) => {
      const change = await enforce('body', reply, (hooks) => rules.add(request.body, hooks));
      void reply.code(201).header('location', `/api/v1/rules/${change.rule.id}`);
      return change;
    },
  );

  app.get<{ Querystring: ListQuery }>(
    '/rules',
    {
      schema: {
        summary: 'List rules in id order, filtered and paginated',
        tags: ['rules'],
        querystring: listQuerySchema,
        response: { 200: rulePageSchema, ...errorResponses(400, 401, 500) },
      },
    },
    async (request) => {
      const { action, prefix, comment, limit, offset } = request.query;
      const query: RuleListQuery = { limit, offset };
      if (action !== undefined) query.action = action;
      if (prefix !== undefined) {
        // Checked here so a bad filter names the query parameter, whatever the service says.
        try {
          parsePrefix(prefix);
        } catch (err) {
          if (err instanceof PrefixError) throw new ApiError(400, 'bad_request', `querystring/prefix: ${err.message}`);
          throw err;
        }
        query.prefix = prefix;
      }
      if (comment !== undefined) query.comment = comment;
      let page: RulePage;
      try {
        page = rules.list(query);
      } catch (err) {
        throw ruleApiError(err, 'querystring');
      }
      return page;
    },
  );

  app.get<{ Params: IdParams }>(
    '/rules/:id',
    {
      schema: {
        summary: 'One rule, with the packets and bytes it matched',
        tags: ['rules'],
        params: idParamsSchema,
        response: { 200: ruleWithStatsSchema, ...errorResponses(400, 401, 404, 500) },
      },
    },
    async (request) => {
      const rule = rules.get(request.params.id);
      if (!rule) throw new ApiError(404, 'not_found', `rule ${request.params.id} does not exist`);
      return rule;
    },
  );

  app.delete<{ Params: IdParams }>(
    '/rules/:id',
    {
      schema: {
        summary: 'Delete a rule; it is no longer enforced when the answer comes',
        tags: ['rules'],
        params: idParamsSchema,
        response: {
          200: { type: 'object', properties: { rule: storedRuleSchema }, required: ['rule'] },
          ...errorResponses(400, 401, 404, 429, 500, 503),
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const rule = await enforce('params', reply, (hooks) => rules.remove(id, hooks));
      if (!rule) throw new ApiError(404, 'not_found', `rule ${id} does not exist`);
      return { rule };
    },
  );

  app.put<{ Body: { rules: RuleSpec[] } }>(
    '/rules',
    {
      bodyLimit: ctx.largeBodyLimit,
      schema: {
        summary: 'Replace the whole rule set atomically (a blocklist of up to a million rules)',
        description:
          'All or nothing: when one rule is invalid the answer names it (`body/rules/<index>/<field>`) ' +
          'and the rule set is unchanged.',
        tags: ['rules'],
        body: ruleSetSchema,
        response: { 200: ruleReplaceSchema, ...errorResponses(400, 401, 409, 413, 415, 429, 500, 503) },
      },
    },
    async (request, reply) => {
      return enforce('body', reply, (hooks) => rules.replace(request.body.rules, hooks));
    },
  );
}
