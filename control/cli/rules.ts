/**
 * `flowgate rules …`: the agent's filter rules through its REST API.
 *
 *   flowgate rules list [--action drop|allow] [--prefix cidr] [--comment text] [--limit n] [--offset n]
 *                       [--format table|json]
 *   flowgate rules add --action drop|allow [--src cidr] [--dst cidr] [--protocol p] [--src-ports p]
 *                      [--dst-ports p] [--priority n] [--iface name] [--ttl 10m | --expires ISO] [--comment text]
 *                      [--id n] [--format table|json]
 *   flowgate rules delete <id>…
 *   flowgate rules import <file|-> [--action drop|allow] [--dst] [--priority n] [--comment text] [--replace]
 *
 * `add` checks the rule with the agent's own rule model first, so a bad value
 * is one line naming the flag (exit 2) rather than the API's field name.
 * `import` is one atomic PUT /rules: the current rules (unless --replace)
 * plus the list's, so the agent never enforces half a list.
 */
import type { Command } from 'commander';
import { parseDuration, parsePositiveInt } from '../agent/flags.js';
import {
  BlocklistError,
  parseBlocklist,
  readBlocklist,
  type Blocklist,
  type BlocklistOptions,
} from '../rules/blocklist.js';
import { parsePrefix, PrefixError } from '../rules/prefix.js';
import { DEFAULT_PRIORITY, MAX_PRIORITY, parseRule, RuleError, type RuleSpec } from '../rules/rule.js';
import type { RuleChange, RulePage, RuleReplace, StoredRule } from '../rules/types.js';
import { ApiClient, CliError, TOKEN_ENV, type ClientOptions } from './client.js';
import { cellText, formatTable } from './format.js';
import { addClientOptions, choice, clientFrom, FlagError, parseIfaceName, type ClientFlags } from './options.js';

export const RULES_FORMATS = ['table', 'json'] as const;
export type RulesFormat = (typeof RULES_FORMATS)[number];
const ACTIONS = ['drop', 'allow'] as const;
type ActionName = (typeof ACTIONS)[number];

/** The API's page bounds (GET /rules). */
const MAX_PAGE = 10_000;
const MAX_RULE_ID = 0xffff_ffff;
/** A million-rule PUT takes a while to parse, compile and load: more than the client's default minute. */
const IMPORT_TIMEOUT_MS = 10 * 60_000;
/** Local warnings printed one per line; past this many, a count. */
const MAX_WARNING_LINES = 20;
/** Comments are cut to this many characters in the table (the JSON output has them whole). */
const COMMENT_WIDTH = 48;

// ---- output -----------------------------------------------------------------

function portsText(rule: StoredRule): string {
  const parts: string[] = [];
  if (rule.srcPorts !== undefined) parts.push(`src ${rule.srcPorts}`);
  if (rule.dstPorts !== undefined) parts.push(`dst ${rule.dstPorts}`);
  return parts.length ? parts.join(' ') : '-';
}

/** "2025-01-02T03:04:05.000Z" → "2025-01-02T03:04:05Z": the milliseconds are noise in a table. */
function timeText(iso: string | undefined): string {
  if (iso === undefined) return '-';
  return iso.replace(/\.000Z$/, 'Z');
}

/** Terminal-safe and short: control characters escaped, long comments cut. */
function commentText(comment: string | undefined): string {
  if (comment === undefined || comment === '') return '-';
  const safe = cellText(comment);
  return safe.length > COMMENT_WIDTH ? `${safe.slice(0, COMMENT_WIDTH - 1)}…` : safe;
}

const HEADER = ['ID', 'ACTION', 'SRC', 'DST', 'PROTO', 'PORTS', 'PRIORITY', 'IFACE', 'EXPIRES', 'COMMENT'];

/** Rules as an aligned table; absent members are "-" (any address, any protocol, no expiry). */
export function rulesTable(rules: readonly StoredRule[]): string {
  const rows = rules.map((r) => [
    String(r.id),
    r.action,
    r.src ?? '-',
    r.dst ?? '-',
    r.protocol === undefined ? '-' : String(r.protocol),
    portsText(r),
    String(r.priority),
    r.iface ?? '-',
    timeText(r.expiresAt),
    commentText(r.comment),
  ]);
  return formatTable(HEADER, rows, ['right', 'left', 'left', 'left', 'left', 'left', 'right']);
}

/** A page as printed by `rules list`: the table and a line saying which rules these are. */
export function renderRulePage(page: RulePage): string {
  const n = page.rules.length;
  let footer: string;
  if (n === 0) {
    footer = page.total === 0 ? '(no rules)' : `(no rules at offset ${page.offset}; ${page.total} in all)`;
  } else if (page.offset === 0 && n === page.total) {
    footer = `(${n} ${n === 1 ? 'rule' : 'rules'})`;
  } else {
    const last = page.offset + n;
    const more = last < page.total ? `; next page: --offset ${last}` : '';
    footer = `(rules ${page.offset + 1}-${last} of ${page.total}${more})`;
  }
  return `${rulesTable(page.rules)}${footer}\n`;
}

/** One line: "7 drop src 198.51.100.0/24 tcp dst 443 priority 100". */
export function describeRule(r: StoredRule): string {
  const parts = [String(r.id), r.action];
  if (r.src) parts.push(`src ${r.src}`);
  if (r.dst) parts.push(`dst ${r.dst}`);
  if (r.protocol !== undefined) parts.push(String(r.protocol));
  if (r.srcPorts !== undefined || r.dstPorts !== undefined) parts.push(`ports ${portsText(r)}`);
  parts.push(`priority ${r.priority}`);
  if (r.iface) parts.push(`on ${r.iface}`);
  if (r.expiresAt) parts.push(`until ${timeText(r.expiresAt)}`);
  return parts.join(' ');
}

function printWarnings(warnings: readonly string[], total = warnings.length): void {
  const shown = warnings.slice(0, MAX_WARNING_LINES);
  for (const w of shown) process.stderr.write(`flowgate: warning: ${w}\n`);
  if (total > shown.length) process.stderr.write(`flowgate: warning: … and ${total - shown.length} more\n`);
}

// ---- flag values ----------------------------------------------------------

/** The rule-model field each `add` flag sets, to name the flag in errors. */
const FLAG_OF: Record<string, string> = {
  action: '--action',
  src: '--src',
  dst: '--dst',
  protocol: '--protocol',
  srcPorts: '--src-ports',
  dstPorts: '--dst-ports',
  priority: '--priority',
  iface: '--iface',
  expiresAt: '--expires',
  ttlSeconds: '--ttl',
  comment: '--comment',
  id: '--id',
};

function parsePrefixFlag(flag: string, text: string): string {
  try {
    parsePrefix(text);
  } catch (err) {
    if (err instanceof PrefixError) throw new FlagError(flag, err.message);
    throw err;
  }
  return text;
}

/** --ttl 10m → 600 (seconds; the API counts whole seconds). */
function parseTtl(text: string): number {
  const ms = parseDuration('--ttl', text);
  if (ms % 1000 !== 0) throw new FlagError('--ttl', `must be whole seconds, got "${text}"`);
  return ms / 1000;
}

/** --expires: any date-time Date understands (local time without a zone), sent as ISO-8601 UTC. */
function parseExpires(text: string): string {
  const t = new Date(text);
  if (Number.isNaN(t.getTime())) {
    throw new FlagError('--expires', `must be an ISO-8601 date-time like 2030-01-01T00:00:00Z, got "${text}"`);
  }
  if (t.getTime() <= Date.now()) throw new FlagError('--expires', `is in the past: ${t.toISOString()}`);
  return t.toISOString();
}

interface AddFlags extends ClientFlags {
  action: ActionName;
  src?: string;
  dst?: string;
  protocol?: string;
  srcPorts?: string;
  dstPorts?: string;
  priority?: number;
  iface?: string;
  ttl?: number;
  expires?: string;
  comment?: string;
  id?: number;
  format: RulesFormat;
}

/** The flags as a RuleSpec, checked by the agent's rule model; errors name the flag. */
export function specFromFlags(flags: Omit<AddFlags, 'api' | 'format'>): RuleSpec {
  if (flags.ttl !== undefined && flags.expires !== undefined) {
    throw new FlagError('--ttl', 'and --expires exclude each other: give one');
  }
  const spec: RuleSpec = { action: flags.action };
  if (flags.id !== undefined) spec.id = flags.id;
  if (flags.src !== undefined) spec.src = flags.src;
  if (flags.dst !== undefined) spec.dst = flags.dst;
  if (flags.protocol !== undefined) {
    spec.protocol = /^\d+$/.test(flags.protocol) ? Number(flags.protocol) : flags.protocol.toLowerCase();
  }
  if (flags.srcPorts !== undefined) spec.srcPorts = flags.srcPorts;
  if (flags.dstPorts !== undefined) spec.dstPorts = flags.dstPorts;
  if (flags.priority !== undefined) spec.priority = flags.priority;
  if (flags.iface !== undefined) spec.iface = flags.iface;
  if (flags.ttl !== undefined) spec.ttlSeconds = flags.ttl;
  if (flags.expires !== undefined) spec.expiresAt = flags.expires;
  if (flags.comment !== undefined) spec.comment = flags.comment;
  try {
    parseRule(spec, spec.id ?? 1);
  } catch (err) {
    if (err instanceof RuleError) {
      const prefix = `${err.field}: `;
      const message = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
      throw new FlagError(FLAG_OF[err.field] ?? err.field, message);
    }
    throw err;
  }
  return spec;
}

// ---- import -----------------------------------------------------------------

/** A stored rule as a spec that PUT /rules takes back unchanged (same id, no timestamps). */
export function specOf(r: StoredRule): RuleSpec {
  const spec: RuleSpec = { id: r.id, action: r.action, priority: r.priority };
  if (r.src !== undefined) spec.src = r.src;
  if (r.dst !== undefined) spec.dst = r.dst;
  if (r.protocol !== undefined) spec.protocol = r.protocol;
  if (r.srcPorts !== undefined) spec.srcPorts = r.srcPorts;
  if (r.dstPorts !== undefined) spec.dstPorts = r.dstPorts;
  if (r.iface !== undefined) spec.iface = r.iface;
  if (r.expiresAt !== undefined) spec.expiresAt = r.expiresAt;
  if (r.comment !== undefined) spec.comment = r.comment;
  return spec;
}

/** What makes two plain prefix rules the same rule (comments aside). */
function plainKey(r: { action: string; src?: string; dst?: string; priority?: number }): string {
  return `${r.action} ${r.src ?? '-'} ${r.dst ?? '-'} ${r.priority ?? DEFAULT_PRIORITY}`;
}

function isPlain(r: StoredRule): boolean {
  return (
    r.protocol === undefined &&
    r.srcPorts === undefined &&
    r.dstPorts === undefined &&
    r.iface === undefined &&
    r.expiresAt === undefined
  );
}

/** Every rule, page by page. */
export async function fetchAllRules(client: ApiClient): Promise<StoredRule[]> {
  const all: StoredRule[] = [];
  for (;;) {
    const page = await client.request<RulePage>('GET', `/api/v1/rules?limit=${MAX_PAGE}&offset=${all.length}`);
    all.push(...page.rules);
    if (page.rules.length === 0 || all.length >= page.total) return all;
  }
}

/**
 * The rule set an import sends: the current rules (unless `replace`) and the
 * list's rules that are not among them already (a list imported twice adds
 * nothing). A change another client makes between the listing and the PUT is
 * lost: the API has no conditional replace.
 */
export function mergeImport(
  current: readonly StoredRule[],
  imported: readonly RuleSpec[],
  replace: boolean,
  now = Date.now(),
): { rules: RuleSpec[]; added: number; present: number } {
  if (replace) return { rules: [...imported], added: imported.length, present: 0 };
  // A rule that expired since it was listed is gone; sending it back would fail the whole import.
  const live = current.filter((r) => r.expiresAt === undefined || Date.parse(r.expiresAt) > now);
  const have = new Set(live.filter(isPlain).map(plainKey));
  const fresh = imported.filter((spec) => !have.has(plainKey(spec)));
  return {
    rules: [...live.map(specOf), ...fresh],
    added: fresh.length,
    present: imported.length - fresh.length,
  };
}

/** The list from a file or stdin ("-"); an unreadable file is a usage error naming it. */
async function readList(file: string, opts: BlocklistOptions): Promise<Blocklist> {
  try {
    if (file !== '-') return await readBlocklist(file, opts);
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return parseBlocklist(Buffer.concat(chunks).toString('utf8'), opts, 'stdin');
  } catch (err) {
    if (err instanceof BlocklistError) throw new CliError(`import: ${err.message}`);
    const e = err as NodeJS.ErrnoException;
    if (typeof e.code === 'string') throw new CliError(`import: cannot read ${file}: ${e.message}`, 2);
    throw err;
  }
}

interface ImportFlags extends ClientFlags {
  action: ActionName;
  dst: boolean;
  priority?: number;
  comment?: string;
  replace: boolean;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

// ---- commands -----------------------------------------------------------------

export function registerRules(program: Command): void {
  const rules = program
    .command('rules')
    .description('list, add, delete and import the filter rules of a running agent');

  addClientOptions(
    rules
      .command('list')
      .description('list rules in id order (a page at a time)')
      .option('--action <action>', 'only drop or only allow rules', choice('--action', ACTIONS))
      .option('--prefix <cidr>', 'rules whose src or dst overlaps this prefix', (v: string) =>
        parsePrefixFlag('--prefix', v),
      )
      .option('--comment <text>', 'rules whose comment contains this (case-insensitive)')
      .option(
        '--limit <n>',
        `rules per page (at most ${MAX_PAGE})`,
        (v: string) => parsePositiveInt('--limit', v, 1, MAX_PAGE),
        100,
      )
      .option('--offset <n>', 'rules to skip', (v: string) => parsePositiveInt('--offset', v, 0), 0)
      .option('--format <format>', 'table or json', choice('--format', RULES_FORMATS), 'table' as RulesFormat),
  ).action(
    async (
      flags: ClientFlags & {
        action?: ActionName;
        prefix?: string;
        comment?: string;
        limit: number;
        offset: number;
        format: RulesFormat;
      },
    ) => {
      const query = new URLSearchParams();
      if (flags.action) query.set('action', flags.action);
      if (flags.prefix) query.set('prefix', flags.prefix);
      if (flags.comment) query.set('comment', flags.comment);
      query.set('limit', String(flags.limit));
      query.set('offset', String(flags.offset));
      const page = await clientFrom(flags).request<RulePage>('GET', `/api/v1/rules?${query.toString()}`);
      process.stdout.write(flags.format === 'json' ? `${JSON.stringify(page, null, 2)}\n` : renderRulePage(page));
    },
  );

  addClientOptions(
    rules
      .command('add')
      .description('add a rule; it is enforced when the command returns')
      .requiredOption('--action <action>', 'drop or allow', choice('--action', ACTIONS))
      .option('--src <cidr>', 'source prefix or address (IPv4 or IPv6)')
      .option('--dst <cidr>', 'destination prefix or address')
      .option('--protocol <proto>', 'tcp, udp, icmp, icmpv6, sctp or a number')
      .option('--src-ports <ports>', 'a port or a range like 1000-2000 (needs --protocol tcp, udp or sctp)')
      .option('--dst-ports <ports>', 'a port or a range')
      .option('--priority <n>', `0 to ${MAX_PRIORITY}, higher wins (default ${DEFAULT_PRIORITY})`, (v: string) =>
        parsePositiveInt('--priority', v, 0, MAX_PRIORITY),
      )
      .option('--iface <name>', 'only on this interface', (v: string) => parseIfaceName('--iface', v))
      .option('--ttl <duration>', 'expire after this long, e.g. 10m, 2h, 7d', parseTtl)
      .option('--expires <time>', 'expire at this ISO-8601 time, e.g. 2030-01-01T00:00:00Z', parseExpires)
      .option('--comment <text>', 'a note kept with the rule')
      .option('--id <n>', 'use this rule id (default: the next free one)', (v: string) =>
        parsePositiveInt('--id', v, 1, MAX_RULE_ID),
      )
      .option('--format <format>', 'table or json', choice('--format', RULES_FORMATS), 'table' as RulesFormat),
  ).action(async (flags: AddFlags) => {
    const spec = specFromFlags(flags);
    const change = await clientFrom(flags).request<RuleChange>('POST', '/api/v1/rules', spec);
    if (flags.format === 'json') {
      process.stdout.write(`${JSON.stringify(change, null, 2)}\n`);
    } else {
      process.stdout.write(`added rule ${change.rule.id}\n${rulesTable([change.rule])}`);
    }
    printWarnings(change.warnings);
  });

  addClientOptions(
    rules
      .command('delete')
      .description('delete rules by id; they are no longer enforced when the command returns')
      .argument('<id...>', 'rule ids'),
  ).action(async (ids: string[], flags: ClientFlags) => {
    const numbers = ids.map((id) => parsePositiveInt('rule id', id, 1, MAX_RULE_ID));
    const client = clientFrom(flags);
    // Each id on its own: one that is gone must not keep the others.
    const failed: string[] = [];
    for (const id of numbers) {
      try {
        const { rule } = await client.request<{ rule: StoredRule }>('DELETE', `/api/v1/rules/${id}`);
        process.stdout.write(`deleted rule ${describeRule(rule)}\n`);
      } catch (err) {
        // A rule that is gone already does not stop the others; anything else (auth, outage) does.
        if (!(err instanceof CliError) || !err.message.startsWith('not_found:')) throw err;
        failed.push(err.message);
      }
    }
    if (failed.length > 0) {
      const deleted = numbers.length - failed.length;
      const tail = numbers.length > 1 ? ` (${deleted} of ${numbers.length} deleted)` : '';
      throw new CliError(`${failed.join('; ')}${tail}`);
    }
  });

  addClientOptions(
    rules
      .command('import')
      .description(
        'import a blocklist (one prefix per line, ; or # comments, the Spamhaus DROP format) in one atomic change',
      )
      .argument('<file>', 'the blocklist; "-" reads stdin')
      .option('--action <action>', 'drop or allow', choice('--action', ACTIONS), 'drop' as ActionName)
      .option('--dst', 'match the prefixes as destinations (default: as sources)', false)
      .option('--priority <n>', `0 to ${MAX_PRIORITY} (default ${DEFAULT_PRIORITY})`, (v: string) =>
        parsePositiveInt('--priority', v, 0, MAX_PRIORITY),
      )
      .option('--comment <text>', 'put in front of every rule comment, e.g. the list name')
      .option('--replace', 'replace the whole rule set with the list (default: add it to the current rules)', false),
  ).action(async (file: string, flags: ImportFlags) => {
    const opts: BlocklistOptions = { action: flags.action, direction: flags.dst ? 'dst' : 'src' };
    if (flags.priority !== undefined) opts.priority = flags.priority;
    if (flags.comment !== undefined) opts.comment = flags.comment;
    const list = await readList(file, opts);
    // Also with --replace: an empty file (a failed download) must not wipe the rule set.
    if (list.rules.length === 0) throw new CliError(`import: ${file === '-' ? 'stdin' : file} holds no prefixes`);
    const token = process.env[TOKEN_ENV]?.trim();
    const clientOpts: ClientOptions = { api: flags.api, timeoutMs: IMPORT_TIMEOUT_MS };
    if (token) clientOpts.token = token;
    const client = new ApiClient(clientOpts);
    const current = flags.replace ? [] : await fetchAllRules(client);
    const merged = mergeImport(current, list.rules, flags.replace);
    const result = await client.request<RuleReplace>('PUT', '/api/v1/rules', { rules: merged.rules });
    printWarnings(list.warnings);
    printWarnings(result.warnings, result.warningCount);
    const present = merged.present ? ` (${plural(merged.present, 'rule')} already present)` : '';
    process.stdout.write(
      flags.replace
        ? `replaced the rule set with ${plural(merged.added, 'rule')}\n`
        : `imported ${plural(merged.added, 'rule')}${present}; the rule set now has ${plural(result.count, 'rule')}\n`,
    );
  });
}
