/**
 * Expands a Grafana ClickHouse panel query (grafana-clickhouse-datasource,
 * v4) into the SQL the server receives, in the plugin's three steps:
 *
 * 1. Frontend, `$__conditionalAll(condition, $var)` (Datasource.
 *    applyConditionalAll in src/data/CHDatasource.ts): `1=1` when the
 *    variable's current value is All (`$__all`) or empty, else the condition
 *    as written. Arguments are split on the commas at the first bracket
 *    level, as its getMacroArgs does.
 * 2. Frontend, dashboard variables (Grafana's templateSrv.replace with the
 *    plugin's format function): `$var` and `${var}` with no format become
 *    the value as is for one value and `'a','b'` for several; `${var:format}`
 *    uses Grafana's format (singlequote, sqlstring, csv, raw, pipe). All
 *    without an allValue stands for every option. Names that are not
 *    variables (`$__timeFilter`, …) are left for the backend.
 * 3. Backend, the macros of pkg/macros/macros.go, found the way
 *    grafana-plugin-sdk-go's sqlutil.Interpolate finds them (its
 *    getMacroMatches): after `$__name`, the text up to the matching `)` of
 *    the first `(` is the argument list, unless a `)` comes first. So a macro
 *    without arguments must be followed by `)` before any `(` — write
 *    `($__interval_s)`, `toStartOfHour($__fromTime)` — or it swallows the
 *    text up to the next parenthesis. This reproduces that, and Go's map
 *    order is random: `backendOrder` lets a test try more than one.
 *
 * Times are whole seconds (Go's time.Unix()); `$__timeInterval` and
 * `$__interval_s` are the query interval in seconds, at least 1.
 */

export const ALL = '$__all';

export interface GrafanaVariable {
  /** The selected values, or ALL. */
  current: readonly string[] | typeof ALL;
  /** Every option (what All stands for when the variable has no allValue). */
  options: readonly string[];
  /** Multi-select: the value is an array even with one selected (the plugin quotes arrays). */
  multi: boolean;
  /** A custom All value (the variable's allValue), used as is. */
  allValue?: string;
}

export interface ExpandContext {
  from: Date;
  to: Date;
  /** The query's interval ($__interval), seconds. */
  intervalSeconds: number;
  variables: Record<string, GrafanaVariable>;
}

/** Step 1: $__conditionalAll, innermost-last like the plugin (lastIndexOf, repeatedly). */
export function applyConditionalAll(sql: string, variables: Record<string, GrafanaVariable>): string {
  const macro = '$__conditionalAll(';
  let out = sql;
  let at = out.lastIndexOf(macro);
  while (at !== -1) {
    const args = frontendMacroArgs(out, at + macro.length - 1);
    if (args.length !== 2) throw new Error(`$__conditionalAll needs 2 arguments at ${out.slice(at, at + 60)}`);
    const [condition, varArg] = args as [string, string];
    const name = /(?<=\$\{)\w+(?=\})|(?<=\$)\w+/.exec(varArg.trim())?.[0];
    let phrase = condition;
    if (name !== undefined) {
      const v = variables[name];
      if (!v) throw new Error(`$__conditionalAll refers to an unknown variable ${name}`);
      const value = v.current === ALL ? ALL : v.current.join(',');
      if (value === '' || value === ALL) phrase = '1=1';
    }
    const whole = `${macro}${condition},${varArg})`;
    const i = out.indexOf(whole);
    out = out.slice(0, i) + phrase + out.slice(i + whole.length);
    at = out.lastIndexOf(macro);
  }
  return out;
}

/** The plugin's getMacroArgs: the text from `(` at `open` to its `)`, split on commas at depth 1. */
function frontendMacroArgs(sql: string, open: number): string[] {
  const args: string[] = [];
  const s = sql.slice(open);
  let depth = 0;
  let last = 1;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c !== ',') continue;
    if (c === ',' && depth === 1) {
      args.push(s.slice(last, i));
      last = i + 1;
    }
    if (depth === 0) {
      args.push(s.slice(last, i));
      return args;
    }
  }
  return [];
}

function formatValues(values: readonly string[], format: string | undefined, isArray: boolean): string {
  switch (format) {
    case undefined:
      // The plugin's own format function: an array quoted and joined (unescaped), a single value as is.
      return isArray ? `'${values.join("','")}'` : (values[0] ?? '');
    case 'singlequote':
      return values.map((v) => `'${v.replace(/'/g, "\\'")}'`).join(',');
    case 'sqlstring':
      return values.map((v) => `'${v.replace(/'/g, "''")}'`).join(',');
    case 'csv':
      return values.join(',');
    case 'pipe':
      return values.join('|');
    case 'raw':
      return values.join(',');
    default:
      throw new Error(`variable format ${format} is not modelled here`);
  }
}

/** Step 2: dashboard variables. Unknown names (macros, Grafana's built-ins) are left alone. */
export function interpolateVariables(sql: string, variables: Record<string, GrafanaVariable>): string {
  // Grafana's variable syntax: $name, [[name:format]], ${name.fieldPath:format}.
  const re = /\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}/g;
  return sql.replace(
    re,
    (
      match: string,
      plain?: string,
      bracket?: string,
      bracketFormat?: string,
      braced?: string,
      _path?: string,
      bracedFormat?: string,
    ) => {
      const name = plain ?? bracket ?? braced;
      const v = name === undefined ? undefined : variables[name];
      if (!v) return match;
      if (v.current === ALL && v.allValue !== undefined) return v.allValue;
      const values = v.current === ALL ? v.options : v.current;
      return formatValues(values, bracketFormat ?? bracedFormat, v.multi || v.current === ALL);
    },
  );
}

/** sqlutil's getMacroMatches: [whole text, argument text] for each `$__name\b`. */
function backendMacroMatches(sql: string, name: string): Array<[string, string]> {
  const re = new RegExp(`\\$__${name}\\b`, 'g');
  const out: Array<[string, string]> = [];
  for (const m of sql.matchAll(re)) {
    const start = m.index;
    const rest = sql.slice(start);
    let depth = 0;
    let argStart = 0;
    let end = 0;
    for (let i = 0; i < rest.length; i++) {
      if (depth === 0 && end > 0) break;
      const c = rest[i];
      if (c === '(') {
        depth++;
        if (argStart === 0) argStart = i + 1;
      } else if (c === ')') {
        if (depth === 0) {
          end = 0;
          break;
        }
        depth--;
        end = i + 1;
      }
    }
    if (end === 0) end = m[0].length;
    out.push([rest.slice(0, end), argStart > 0 ? rest.slice(argStart, end - 1) : '']);
  }
  return out;
}

type MacroFn = (args: string[], ctx: ExpandContext) => string;

const unix = (d: Date): number => Math.floor(d.getTime() / 1000);
const dateTime = (d: Date): string => `toDateTime(${unix(d)})`;
const dateTime64 = (d: Date): string => `fromUnixTimestamp64Milli(${d.getTime()})`;
const date = (d: Date): string => `toDate('${d.toISOString().slice(0, 10)}')`;
const seconds = (ctx: ExpandContext): number => Math.max(Math.trunc(ctx.intervalSeconds), 1);

function oneArg(name: string, args: string[]): string {
  if (args.length !== 1 || args[0] === '') throw new Error(`$__${name}: expected 1 argument, got ${args.length}`);
  return args[0]!;
}

function dateTimeFilter(args: string[], ctx: ExpandContext): string {
  if (args.length !== 2) throw new Error(`$__dateTimeFilter: expected 2 arguments, got ${args.length}`);
  const [d, t] = args as [string, string];
  return `(${d} >= ${date(ctx.from)} AND ${d} <= ${date(ctx.to)}) AND (${t} >= ${dateTime(ctx.from)} AND ${t} <= ${dateTime(ctx.to)})`;
}

/** pkg/macros/macros.go, keyed by name without `$__`. */
export const BACKEND_MACROS: Record<string, MacroFn> = {
  fromTime: (_a, ctx) => dateTime(ctx.from),
  toTime: (_a, ctx) => dateTime(ctx.to),
  fromTime_ms: (_a, ctx) => dateTime64(ctx.from),
  toTime_ms: (_a, ctx) => dateTime64(ctx.to),
  timeFilter: (a, ctx) => {
    const c = oneArg('timeFilter', a);
    return `${c} >= ${dateTime(ctx.from)} AND ${c} <= ${dateTime(ctx.to)}`;
  },
  timeFilter_ms: (a, ctx) => {
    const c = oneArg('timeFilter_ms', a);
    return `${c} >= ${dateTime64(ctx.from)} AND ${c} <= ${dateTime64(ctx.to)}`;
  },
  dateFilter: (a, ctx) => {
    const c = oneArg('dateFilter', a);
    return `${c} >= ${date(ctx.from)} AND ${c} <= ${date(ctx.to)}`;
  },
  dateTimeFilter: (a, ctx) => dateTimeFilter(a, ctx),
  dt: (a, ctx) => dateTimeFilter(a, ctx),
  timeInterval: (a, ctx) =>
    `toStartOfInterval(toDateTime(${oneArg('timeInterval', a)}), INTERVAL ${seconds(ctx)} second)`,
  interval_s: (_a, ctx) => String(seconds(ctx)),
};

/** Step 3: the backend macros, in `order` (Go iterates its macro map in random order). */
export function interpolateMacros(sql: string, ctx: ExpandContext, order = Object.keys(BACKEND_MACROS)): string {
  let out = sql;
  for (const name of order) {
    const fn = BACKEND_MACROS[name]!;
    for (const [whole, argText] of backendMacroMatches(out, name)) {
      const args = argText.split(',').map((s) => s.trim()); // "" gives [""], as strings.Split does
      out = out.split(whole).join(fn(args, ctx));
    }
  }
  return out;
}

/** All three steps. Throws on anything left unexpanded (`$name`, `$__macro`). */
export function expandQuery(sql: string, ctx: ExpandContext, order?: string[]): string {
  const out = interpolateMacros(
    interpolateVariables(applyConditionalAll(sql, ctx.variables), ctx.variables),
    ctx,
    order,
  );
  const left = /\$\{?\w+/.exec(out);
  if (left) throw new Error(`unexpanded ${left[0]} in:\n${out}`);
  return out;
}
