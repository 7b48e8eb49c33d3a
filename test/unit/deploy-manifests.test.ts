/**
 * Deployment artifacts: the agent's image (Dockerfile, .dockerignore), the
 * one-host stack (deploy/compose) and the DaemonSet (deploy/kubernetes) have
 * the shape the issue asks for, and agree with the code they run: every flag
 * is one `flowgate run` accepts, with a value it accepts (parsed by the CLI
 * itself); the probes' path is a public route and the scraped path one that
 * takes the token (asked of the real API); the capabilities are the systemd
 * unit's; the image copies what the agent opens at run time; the mounts meet
 * the paths the flags name. Nothing is built or started: there is no docker or
 * kubectl here. Every check is also shown to fail on a broken copy.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { API_PREFIX } from '../../control/api/server.js';
import { buildProgram } from '../../control/cli/commands.js';
import { flowgateObjectPath } from '../../native/index.js';
import { withTestApi } from '../lib/api.js';
import { FakeRulesAgent } from '../lib/fake-rules.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const COMPOSE_DIR = path.join(ROOT, 'deploy/compose');
const K8S_DIR = path.join(ROOT, 'deploy/kubernetes');
const DOCKERFILE = path.join(ROOT, 'Dockerfile');
const read = (file: string): string => readFileSync(file, 'utf8');

let work: string;
before(() => {
  work = mkdtempSync(path.join(tmpdir(), 'flowgate-deploy-test-'));
});
after(() => {
  rmSync(work, { recursive: true, force: true });
});

// ---- plain values out of parsed YAML ------------------------------------------

type Mapping = Record<string, unknown>;

function isMapping(v: unknown): v is Mapping {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function mapping(v: unknown, what: string): Mapping {
  assert.ok(isMapping(v), `${what}: expected a mapping, got ${JSON.stringify(v)}`);
  return v;
}
function list(v: unknown, what: string): unknown[] {
  assert.ok(Array.isArray(v), `${what}: expected a list, got ${JSON.stringify(v)}`);
  return v;
}
function text(v: unknown, what: string): string {
  assert.ok(typeof v === 'string', `${what}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}
function strings(v: unknown, what: string): string[] {
  return list(v, what).map((x, i) => text(x, `${what}[${i}]`));
}
/** Every pair of `sub` is in `labels` (a selector selects them). */
function selects(sub: unknown, labels: unknown, what: string): void {
  const want = mapping(sub, `${what}: selector`);
  const have = mapping(labels, `${what}: labels`);
  assert.ok(Object.keys(want).length > 0, `${what}: empty selector`);
  for (const [k, v] of Object.entries(want)) assert.equal(have[k], v, `${what}: selector ${k}=${String(v)}`);
}

/** Every document of a YAML stream, parse errors (and duplicate keys) failing. */
function yamlDocs(source: string, what: string): unknown[] {
  const out: unknown[] = [];
  for (const doc of parseAllDocuments(source)) {
    assert.deepEqual(
      doc.errors.map((e) => e.message),
      [],
      `${what}: YAML errors`,
    );
    const value: unknown = doc.toJS();
    if (value !== null) out.push(value);
  }
  return out;
}

// ---- what the code says ---------------------------------------------------------

/** CAP_BPF CAP_NET_ADMIN CAP_PERFMON from the systemd unit, as Docker and Kubernetes name them. */
const unitText = read(path.join(ROOT, 'deploy/systemd/flowgate.service'));
const UNIT_CAPS = (/^AmbientCapabilities=(.*)$/m.exec(unitText)?.[1] ?? '')
  .split(/\s+/)
  .filter(Boolean)
  .map((c) => c.replace(/^CAP_/, ''))
  .sort();
const UNIT_STOP_SECONDS = Number(/^TimeoutStopSec=(\d+)s?$/m.exec(unitText)?.[1]);
const HEALTH_PATH = `${API_PREFIX}/health`;
const PACKAGE = JSON.parse(read(path.join(ROOT, 'package.json'))) as {
  version: string;
  engines: { node: string };
};

/** Seconds of a compose duration: 60s, 1m30s, 2m. */
function seconds(duration: string, what: string): number {
  const m = /^(?:(\d+)m)?(?:(\d+)s)?$/.exec(duration);
  assert.ok(m && duration !== '', `${what}: not a duration: ${duration}`);
  return Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0);
}

interface RunOptions {
  iface: string[];
  store: string;
  bpffs: string;
  host: string;
  listen: { host: string; port: number };
  apiTokenFile?: string;
  clickhouseUrl?: string;
  clickhousePasswordFile?: string;
}

/**
 * The options `flowgate run <args>` would start with: the CLI's own parser and
 * flag checks (an unknown flag or a bad value throws naming it), the agent not
 * started.
 */
function parseRun(args: readonly string[], where: string): RunOptions {
  const program = buildProgram();
  const run = program.commands.find((c) => c.name() === 'run');
  assert.ok(run, 'the CLI has a run command');
  let parsed: RunOptions | undefined;
  run.action((opts: RunOptions) => {
    parsed = opts;
  });
  assert.equal(args[0], 'run', `${where}: runs \`flowgate run\``);
  try {
    program.parse([...args], { from: 'user' });
  } catch (err) {
    assert.fail(`${where}: flowgate ${args.join(' ')}: ${(err as Error).message}`);
  }
  assert.ok(parsed, `${where}: flowgate run did not run`);
  return parsed;
}

/** The long flags of `flowgate run` (and --help). */
function runFlags(): Set<string> {
  const run = buildProgram().commands.find((c) => c.name() === 'run');
  assert.ok(run);
  return new Set([...run.options.map((o) => o.long ?? ''), '--help']);
}

// ---- Dockerfile -------------------------------------------------------------------

interface Instruction {
  keyword: string;
  args: string;
}
interface Stage {
  name?: string;
  image: string;
  body: Instruction[];
}

/** Instructions with continuation lines joined and comments dropped, grouped into stages. */
function readDockerfile(source: string): Stage[] {
  const lines: string[] = [];
  let pending = '';
  for (const raw of source.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#')) continue; // comments, also inside a continued instruction
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const whole = (pending + line).trim();
    pending = '';
    if (whole) lines.push(whole);
  }
  assert.equal(pending, '', 'Dockerfile: ends inside a continued line');
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of lines) {
    const m = /^([A-Za-z]+)\s+(.*)$/.exec(line);
    assert.ok(m, `Dockerfile: not an instruction: ${line}`);
    const keyword = m[1]!.toUpperCase();
    const args = m[2]!;
    if (keyword === 'FROM') {
      const from = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      assert.ok(from, `Dockerfile: FROM ${args}`);
      const image = from[1]!.replace(/\$\{(\w+)\}/g, (_, name: string) => {
        const v = globalArgs.get(name);
        assert.ok(v !== undefined, `Dockerfile: FROM uses \${${name}}, an ARG without a default before the first FROM`);
        return v;
      });
      stages.push({ name: from[2], image, body: [] });
    } else if (stages.length === 0) {
      assert.equal(keyword, 'ARG', `Dockerfile: ${keyword} before the first FROM`);
      const arg = /^(\w+)=(\S+)$/.exec(args);
      if (arg) globalArgs.set(arg[1]!, arg[2]!);
    } else {
      stages.at(-1)!.body.push({ keyword, args });
    }
  }
  return stages;
}

/** COPY's flags and paths (the shell form; no spaces in these paths). */
function copyOf(args: string): { from?: string; sources: string[]; dest: string } {
  const words = args.split(/\s+/);
  let from: string | undefined;
  while (words[0]?.startsWith('--')) {
    const flag = words.shift()!;
    if (flag.startsWith('--from=')) from = flag.slice('--from='.length);
  }
  assert.ok(words.length >= 2, `COPY ${args}: needs a source and a destination`);
  return { from, sources: words.slice(0, -1), dest: words.at(-1)! };
}

/** The packages of every `apt-get install` in a stage. */
function aptPackages(stage: Stage): string[] {
  const out: string[] = [];
  for (const ins of stage.body.filter((i) => i.keyword === 'RUN')) {
    for (const m of ins.args.matchAll(/apt-get install((?:\s+[^\s&;|]+)+)/g)) {
      out.push(...m[1]!.split(/\s+/).filter((w) => w && !w.startsWith('-')));
    }
  }
  return out;
}

function workdir(stage: Stage): string {
  const dirs = stage.body.filter((i) => i.keyword === 'WORKDIR').map((i) => i.args);
  assert.ok(
    dirs.length > 0 && dirs.every((d) => d.startsWith('/')),
    `stage ${stage.name ?? stage.image}: an absolute WORKDIR`,
  );
  return dirs.at(-1)!;
}

/** .dockerignore as Docker reads it: a path is out if it or a parent matches; the last match decides; `!` takes back. */
function dockerIgnored(ignoreText: string): (rel: string) => boolean {
  const rules = ignoreText
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = (negate ? l.slice(1) : l).replace(/^\/+|\/+$/g, '');
      const re = pattern
        .split(/(\*\*\/?|\*|\?)/)
        .map((part) =>
          part === '**/' || part === '**'
            ? '(?:.*/)?'
            : part === '*'
              ? '[^/]*'
              : part === '?'
                ? '[^/]'
                : part.replace(/[.+^${}()|[\]\\]/g, '\\$&'),
        )
        .join('');
      return { negate, re: new RegExp(`^${re}$`) };
    });
  return (rel) => {
    const parts = rel.replace(/^\.\/|\/+$/g, '').split('/');
    let out = false;
    for (const rule of rules) {
      for (let n = 1; n <= parts.length; n++) {
        if (rule.re.test(parts.slice(0, n).join('/'))) {
          out = !rule.negate;
          break;
        }
      }
    }
    return out;
  };
}

/** Where the build stage's outputs come from: the Makefile's objects, binding.gyp's target, tsc's outDir. */
function buildOutputs(): { bpfObjects: string[]; addon: string; tsOut: string } {
  const makefile = read(path.join(ROOT, 'datapath/Makefile'));
  const objs = /^OBJS\s*:=\s*(.*)$/m.exec(makefile)?.[1];
  assert.ok(objs, 'datapath/Makefile names its OBJS');
  const gyp = read(path.join(ROOT, 'native/binding.gyp'));
  const target = /"target_name"\s*:\s*"([^"]+)"/.exec(gyp)?.[1];
  assert.ok(target, 'native/binding.gyp names its target');
  const tsconfig = read(path.join(ROOT, 'tsconfig.json'));
  const outDir = /"outDir"\s*:\s*"([^"]+)"/.exec(tsconfig)?.[1];
  assert.ok(outDir, 'tsconfig.json has an outDir');
  return {
    bpfObjects: objs.split(/\s+/).map((o) => `datapath/${o}`),
    addon: `native/build/Release/${target}.node`,
    tsOut: outDir,
  };
}

/** binding.gyp's -l libraries and the Debian (bookworm) packages that hold them at run time. */
const RUNTIME_LIBRARY_PACKAGES: Record<string, string> = { bpf: 'libbpf1', elf: 'libelf1', z: 'zlib1g' };

function checkDockerfile(source: string, ignoreText: string): void {
  const stages = readDockerfile(source);
  assert.ok(stages.length >= 2, `Dockerfile: a build and a runtime stage, found ${stages.length} stage(s)`);
  const build = stages[0]!;
  const runtime = stages.at(-1)!;
  assert.ok(build.name, 'Dockerfile: the build stage is named (FROM … AS build)');

  // Same Node major in both, and one package.json accepts.
  const major = (image: string): number => Number(/^node:(\d+)-/.exec(image)?.[1]);
  assert.match(build.image, /^node:\d+-bookworm$/, 'Dockerfile: build FROM node:<major>-bookworm');
  assert.match(runtime.image, /^node:\d+-bookworm-slim$/, 'Dockerfile: runtime FROM node:<major>-bookworm-slim');
  assert.equal(major(build.image), major(runtime.image), 'Dockerfile: the same Node major in both stages');
  assert.ok(
    major(runtime.image) >= Number(/\d+/.exec(PACKAGE.engines.node)?.[0]),
    `node ${PACKAGE.engines.node} (package.json engines)`,
  );

  // Build: the toolchain, then npm ci, build, prune.
  const buildPkgs = aptPackages(build);
  for (const p of ['clang', 'libbpf-dev', 'libelf-dev', 'zlib1g-dev', 'make', 'g++', 'python3']) {
    assert.ok(buildPkgs.includes(p), `Dockerfile: the build stage installs ${p}`);
  }
  const runs = build.body.filter((i) => i.keyword === 'RUN').map((i) => i.args);
  const at = (cmd: RegExp): number => runs.findIndex((r) => cmd.test(r));
  const steps = [/\bnpm ci\b/, /\bnpm run build\b/, /\bnpm prune --omit=dev\b/].map(at);
  assert.ok(
    steps.every((s) => s >= 0) && steps[0]! < steps[1]! && steps[1]! < steps[2]!,
    'Dockerfile: the build stage runs npm ci, then npm run build, then npm prune --omit=dev',
  );

  // Every source the build copies exists in the checkout and is in the build context.
  const ignored = dockerIgnored(ignoreText);
  const buildDir = workdir(build);
  const copiedIn: string[] = [];
  for (const ins of build.body.filter((i) => i.keyword === 'COPY')) {
    const copy = copyOf(ins.args);
    assert.equal(copy.from, undefined, `Dockerfile: the build stage copies from the context only: COPY ${ins.args}`);
    for (const src of copy.sources) {
      const rel = src.replace(/\/+$/, '');
      assert.ok(existsSync(path.join(ROOT, rel)), `Dockerfile: COPY ${src}: does not exist in the repo`);
      assert.ok(!ignored(rel), `Dockerfile: COPY ${src}: .dockerignore leaves it out of the context`);
      copiedIn.push(rel);
    }
  }
  // Host builds stay out of the context: the image builds its own.
  for (const rel of ['.git', 'node_modules', 'dist', 'native/build', 'datapath/build']) {
    assert.ok(ignored(rel), `.dockerignore: leaves out ${rel}`);
  }

  // Runtime: only what the build made or copied, from the build stage.
  const names = new Set(stages.slice(0, -1).map((s) => s.name));
  const out = buildOutputs();
  const inBuild = (rel: string): boolean =>
    // a source the build copied in (not a host build of it: those stay out of the context)
    (copiedIn.some((c) => rel === c || rel.startsWith(`${c}/`)) && existsSync(path.join(ROOT, rel)) && !ignored(rel)) ||
    rel === 'node_modules' ||
    rel === out.addon ||
    out.bpfObjects.includes(rel) ||
    // tsc's output of a copied directory of TypeScript
    copiedIn.some(
      (c) =>
        (rel === `${out.tsOut}/${c}` || rel.startsWith(`${out.tsOut}/${c}/`)) &&
        statSync(path.join(ROOT, c)).isDirectory() &&
        readdirSync(path.join(ROOT, c)).some((f) => f.endsWith('.ts')),
    );
  const runDir = workdir(runtime);
  const provided: string[] = []; // absolute paths in the runtime image
  let fromBuild = 0;
  for (const ins of runtime.body.filter((i) => i.keyword === 'COPY')) {
    const copy = copyOf(ins.args);
    assert.ok(copy.from !== undefined, `Dockerfile: the runtime stage copies only from the build: COPY ${ins.args}`);
    assert.ok(names.has(copy.from), `Dockerfile: COPY --from=${copy.from}: no such stage`);
    if (copy.from === build.name) fromBuild++;
    const dest = path.posix.resolve(runDir, copy.dest);
    for (const src of copy.sources) {
      assert.ok(src.startsWith(`${buildDir}/`), `Dockerfile: COPY --from ${src}: not under the build's ${buildDir}`);
      const rel = path.posix.relative(buildDir, src.replace(/\/+$/, ''));
      assert.ok(inBuild(rel), `Dockerfile: COPY --from ${src}: the build stage neither copies nor makes it`);
      const isDir = src.endsWith('/');
      provided.push(isDir || !/[/.]$/.test(copy.dest) ? dest : path.posix.join(dest, path.posix.basename(src)));
    }
  }
  assert.ok(fromBuild > 0, `Dockerfile: the runtime stage copies from the ${build.name} stage`);

  // What the agent opens at run time, where it looks for it (relative to the checkout).
  const binText = read(path.join(ROOT, 'bin/flowgate.js'));
  const builtCli = /new URL\('(dist\/[^']+)'/.exec(binText)?.[1];
  assert.ok(builtCli, 'bin/flowgate.js names its built CLI');
  const needed = [
    'package.json',
    'node_modules',
    'bin/flowgate.js',
    builtCli,
    `${out.tsOut}/native/index.js`,
    `${out.tsOut}/control/agent/ship-worker.js`,
    out.addon,
    path.relative(ROOT, flowgateObjectPath),
    'schema',
  ];
  for (const rel of needed) {
    const want = path.posix.join(runDir, rel);
    assert.ok(
      provided.some((p) => want === p || want.startsWith(`${p}/`)),
      `Dockerfile: the runtime image lacks ${rel} (at ${want})`,
    );
  }

  // Runtime libraries: one package per library the addon links, and no toolchain.
  const runtimePkgs = aptPackages(runtime);
  const gyp = read(path.join(ROOT, 'native/binding.gyp'));
  for (const m of gyp.matchAll(/"-l([\w+-]+)"/g)) {
    const pkg = RUNTIME_LIBRARY_PACKAGES[m[1]!];
    assert.ok(pkg, `-l${m[1]!}: which Debian package holds it at run time? (add it to RUNTIME_LIBRARY_PACKAGES)`);
    assert.ok(runtimePkgs.includes(pkg), `Dockerfile: the runtime stage installs ${pkg} (-l${m[1]!})`);
  }
  for (const p of runtimePkgs) {
    assert.ok(!/-dev$|^(clang|llvm|gcc|g\+\+|make)$/.test(p), `Dockerfile: the runtime stage installs build tool ${p}`);
  }

  // ENTRYPOINT: node on the copied bin/flowgate.js; CMD: flags of flowgate run.
  const json = (keyword: string): string[] => {
    const ins = runtime.body.filter((i) => i.keyword === keyword).at(-1);
    assert.ok(ins, `Dockerfile: the runtime stage has ${keyword}`);
    return strings(JSON.parse(ins.args) as unknown, `Dockerfile: ${keyword} (exec form)`);
  };
  const entry = json('ENTRYPOINT');
  assert.equal(entry[0], 'node', 'Dockerfile: ENTRYPOINT runs node');
  assert.equal(entry[1], path.posix.join(runDir, 'bin/flowgate.js'), 'Dockerfile: ENTRYPOINT runs bin/flowgate.js');
  const cmd = json('CMD');
  assert.equal(cmd[0], 'run', 'Dockerfile: CMD is flowgate run');
  const flags = runFlags();
  for (const arg of cmd.filter((a) => a.startsWith('--'))) {
    assert.ok(flags.has(arg.split('=')[0]!), `Dockerfile: CMD: ${arg} is no flag of flowgate run`);
  }
}

// ---- ClickHouse users and server settings -----------------------------------------

interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

/** Enough XML for ClickHouse's config files: elements, attributes, text, comments; balanced or it throws. */
function parseXml(source: string, what: string): XmlElement {
  const body = source.replace(/^\s*<\?xml[^?]*\?>/, '');
  const stack: XmlElement[] = [{ name: '#document', attrs: {}, children: [], text: '' }];
  const token = /<!--[\s\S]*?-->|<(\/?)([A-Za-z_][\w.-]*)((?:\s+[\w:.-]+\s*=\s*"[^"<]*")*)\s*(\/?)>|([^<]+)|(<)/g;
  for (const m of body.matchAll(token)) {
    const top = stack.at(-1)!;
    if (m[0].startsWith('<!--')) continue;
    assert.ok(
      m[6] === undefined,
      `${what}: XML: a stray or malformed tag at ${JSON.stringify(body.slice(m.index, m.index + 40))}`,
    );
    if (m[5] !== undefined) {
      assert.ok(stack.length > 1 || !m[5].trim(), `${what}: XML: text outside the root element`);
      top.text += m[5];
      continue;
    }
    const [, closing, name, attrText, selfClosing] = m;
    if (closing) {
      assert.equal(name, top.name, `${what}: XML: </${name!}> closes <${top.name}>`);
      stack.pop();
      continue;
    }
    const attrs: Record<string, string> = {};
    for (const a of (attrText ?? '').matchAll(/([\w:.-]+)\s*=\s*"([^"]*)"/g)) attrs[a[1]!] = a[2]!;
    const el: XmlElement = { name: name!, attrs, children: [], text: '' };
    top.children.push(el);
    if (!selfClosing) stack.push(el);
  }
  assert.equal(stack.length, 1, `${what}: XML: <${stack.at(-1)!.name}> is never closed`);
  const roots = stack[0]!.children;
  assert.equal(roots.length, 1, `${what}: XML: one root element`);
  return roots[0]!;
}

function child(el: XmlElement | undefined, ...names: string[]): XmlElement | undefined {
  let at = el;
  for (const name of names) at = at?.children.find((c) => c.name === name);
  return at;
}

interface ClickHouseUser {
  passwordEnv: string;
  readonly: boolean;
  grants: string[];
}

/**
 * users.d: every user's password from the server's environment; `grafana`
 * read-only (readonly = 1) and allowed to set max_execution_time
 * (changeable_in_readonly), reading flowgate.* only. config.d: the constraint
 * type enabled.
 */
function checkClickHouseConfig(usersXml: string, configXml: string): Map<string, ClickHouseUser> {
  const root = parseXml(usersXml, 'users.d');
  assert.equal(root.name, 'clickhouse', 'users.d: root <clickhouse>');
  const profiles = child(root, 'profiles');
  const users = new Map<string, ClickHouseUser>();
  for (const user of child(root, 'users')?.children ?? []) {
    const where = `users.d: user ${user.name}`;
    const password = child(user, 'password');
    assert.ok(password, `${where}: has a password`);
    const env = password.attrs.from_env;
    assert.ok(env && !password.text.trim(), `${where}: the password comes from_env, not from the file`);
    const profileName = child(user, 'profile')?.text.trim() ?? 'default';
    const profile = child(profiles, profileName);
    // `default` is the server's own profile (not read-only) unless this file redefines it.
    assert.ok(profile || profileName === 'default', `${where}: profile ${profileName} is not defined`);
    const readonly = (child(profile, 'readonly')?.text.trim() ?? '0') !== '0';
    if (readonly) {
      assert.ok(
        child(profile, 'constraints', 'max_execution_time', 'changeable_in_readonly'),
        `${where}: read-only, so its profile ${profileName} needs a changeable_in_readonly constraint on max_execution_time (the Grafana plugin sets it on every query)`,
      );
    }
    const grants = (child(user, 'grants')?.children ?? []).map((q) => q.text.trim());
    assert.ok(grants.length > 0, `${where}: has <grants>`);
    users.set(user.name, { passwordEnv: env, readonly, grants });
  }
  const grafana = users.get('grafana');
  assert.ok(grafana, 'users.d: defines the grafana user');
  assert.ok(grafana.readonly, 'users.d: grafana is read-only (readonly = 1)');
  assert.deepEqual(grafana.grants, ['GRANT SELECT ON flowgate.*'], 'users.d: grafana may only SELECT flowgate.*');
  const writer = [...users.values()].filter((u) => !u.readonly && u.grants.includes('GRANT ALL ON flowgate.*'));
  assert.ok(writer.length > 0, 'users.d: a user that may write flowgate.* (the agent)');

  const config = parseXml(configXml, 'config.d');
  assert.equal(config.name, 'clickhouse', 'config.d: root <clickhouse>');
  assert.equal(
    child(config, 'access_control_improvements', 'settings_constraints_replace_previous')?.text.trim(),
    'true',
    'config.d: settings_constraints_replace_previous is true (changeable_in_readonly needs it)',
  );
  return users;
}

// ---- compose -----------------------------------------------------------------------

/** .env.example: the documented variables, with values for a test run (an empty one gets a made-up value). */
function envExample(source: string): Map<string, string> {
  const env = new Map<string, string>();
  for (const line of source.split('\n')) {
    const m = /^#?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) env.set(m[1]!, m[2]! || `t${m[1]!.toLowerCase().replace(/[^a-z]/g, '')}`);
  }
  return env;
}

/** Compose's interpolation of ${VAR}, ${VAR:-default}, ${VAR:?error}; every name used is recorded. */
function interpolate(value: unknown, env: Map<string, string>, used: Set<string>, where: string): unknown {
  if (typeof value === 'string') {
    return value.replace(
      /\$\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}/g,
      (_, name: string, op: string | undefined, arg: string | undefined) => {
        used.add(name);
        const v = env.get(name);
        if ((op === ':-' && !v) || (op === '-' && v === undefined)) return arg ?? '';
        if ((op === ':?' && !v) || (op === '?' && v === undefined)) assert.fail(`${where}: ${name}: ${arg ?? ''}`);
        return v ?? '';
      },
    );
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, env, used, `${where}[${i}]`));
  if (isMapping(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, env, used, `${where}.${k}`)]));
  }
  return value;
}

interface Mount {
  type: string;
  source: string;
  target: string;
  propagation?: string;
}

function mounts(service: Mapping, what: string): Mount[] {
  return list(service.volumes ?? [], `${what}: volumes`).map((v, i) => {
    if (typeof v === 'string') {
      const [source = '', target = ''] = v.split(':');
      return { type: /^[./]/.test(source) ? 'bind' : 'volume', source, target };
    }
    const m = mapping(v, `${what}: volumes[${i}]`);
    const bind = isMapping(m.bind) ? m.bind : {};
    return {
      type: text(m.type, `${what}: volumes[${i}].type`),
      source: text(m.source, `${what}: volumes[${i}].source`),
      target: text(m.target, `${what}: volumes[${i}].target`),
      propagation: typeof bind.propagation === 'string' ? bind.propagation : undefined,
    };
  });
}

/** The bind of `target` (exactly), its source resolved against the compose file's folder and existing. */
function boundDir(service: Mount[], target: string, composeDir: string, what: string): string {
  const m = service.find((v) => v.target === target);
  assert.ok(m && m.type === 'bind', `${what}: nothing is bound at ${target}`);
  const source = path.resolve(composeDir, m.source);
  assert.ok(existsSync(source), `${what}: ${m.source} (bound at ${target}) does not exist`);
  return source;
}

/** "127.0.0.1:8123:8123" → host address, host port, container port. */
function ports(service: Mapping, what: string): Array<{ ip: string; host: number; container: number }> {
  return strings(service.ports ?? [], `${what}: ports`).map((p) => {
    const m = /^(?:([\d.:[\]]+):)?(\d+):(\d+)(?:\/tcp)?$/.exec(p);
    assert.ok(m, `${what}: port ${p}: expected ip:host:container`);
    return { ip: m[1] ?? '', host: Number(m[2]), container: Number(m[3]) };
  });
}

function checkCompose(composeText: string, composeDir: string): void {
  const env = envExample(read(path.join(composeDir, '.env.example')));
  const used = new Set<string>();
  const docs = yamlDocs(composeText, 'compose.yaml');
  assert.equal(docs.length, 1, 'compose.yaml: one document');
  const doc = mapping(interpolate(docs[0], env, used, 'compose.yaml'), 'compose.yaml');
  for (const name of used) assert.ok(env.has(name), `compose.yaml: \${${name}} is not documented in .env.example`);
  const services = mapping(doc.services, 'compose.yaml: services');
  const volumes = mapping(doc.volumes ?? {}, 'compose.yaml: volumes');
  const service = (name: string): Mapping => mapping(services[name], `compose.yaml: service ${name}`);
  const namedVolumeAt = (m: Mount[], target: string, what: string): void => {
    const v = m.find((x) => x.target === target);
    assert.ok(v && v.type === 'volume' && v.source in volumes, `${what}: a named volume at ${target}`);
  };
  const loopbackOnly = (s: Mapping, what: string): void => {
    for (const p of ports(s, what))
      assert.equal(p.ip, '127.0.0.1', `${what}: port ${p.host} is published on loopback only`);
  };

  // clickhouse: pinned server, data volume, users and settings, loopback HTTP, healthcheck.
  const ch = service('clickhouse');
  assert.match(
    text(ch.image, 'clickhouse.image'),
    /^clickhouse\/clickhouse-server:\d+\.\d+(\.\d+)*$/,
    'compose.yaml: clickhouse image pinned to a version',
  );
  const chMounts = mounts(ch, 'clickhouse');
  namedVolumeAt(chMounts, '/var/lib/clickhouse', 'clickhouse');
  const xmlAt = (dir: string): string => {
    const m = chMounts.find((v) => v.target.startsWith(`/etc/clickhouse-server/${dir}/`) && v.target.endsWith('.xml'));
    assert.ok(m, `clickhouse: mounts a ${dir} XML file`);
    return read(boundDir(chMounts, m.target, composeDir, 'clickhouse'));
  };
  const users = checkClickHouseConfig(xmlAt('users.d'), xmlAt('config.d'));
  const chEnv = mapping(ch.environment, 'clickhouse.environment');
  for (const [name, user] of users) {
    assert.ok(chEnv[user.passwordEnv], `clickhouse: ${user.passwordEnv} (user ${name}'s password) is set`);
  }
  loopbackOnly(ch, 'clickhouse');
  const chHttp = ports(ch, 'clickhouse').find((p) => p.container === 8123);
  assert.ok(chHttp, 'clickhouse: HTTP (8123) is published for the agent');
  assert.ok(list(mapping(ch.healthcheck, 'clickhouse.healthcheck').test, 'healthcheck.test').length > 1);

  // flowgate: the Dockerfile, host network, the unit's capabilities, the host's bpffs, flags.
  const fg = service('flowgate');
  const buildSpec = mapping(fg.build, 'flowgate.build');
  const context = path.resolve(composeDir, text(buildSpec.context, 'flowgate.build.context'));
  assert.equal(path.join(context, text(buildSpec.dockerfile ?? 'Dockerfile', 'dockerfile')), DOCKERFILE);
  assert.equal(fg.network_mode, 'host', 'flowgate: network_mode host (it attaches to the host NICs)');
  assert.notEqual(fg.privileged, true, 'flowgate: not privileged');
  const caps = (v: unknown): string[] => strings(v ?? [], 'caps').map((c) => c.replace(/^CAP_/, ''));
  assert.deepEqual(caps(fg.cap_add).sort(), UNIT_CAPS, "flowgate: cap_add is the systemd unit's capabilities");
  assert.ok(caps(fg.cap_drop).includes('ALL'), 'flowgate: cap_drop ALL');
  assert.equal(fg.read_only, true, 'flowgate: read-only root file system');
  assert.equal(
    mapping(mapping(fg.depends_on, 'flowgate.depends_on').clickhouse, 'depends_on.clickhouse').condition,
    'service_started',
    'flowgate: starts after clickhouse, and must not wait for its health (counting and enforcement never wait for the store)',
  );
  const opts = parseRun(strings(fg.command, 'flowgate.command'), 'compose flowgate');
  const fgMounts = mounts(fg, 'flowgate');
  const bpffs = fgMounts.find((m) => m.type === 'bind' && m.source === '/sys/fs/bpf');
  assert.ok(bpffs, "flowgate: binds the host's /sys/fs/bpf");
  assert.ok(
    opts.bpffs.startsWith(`${bpffs.target}/`),
    `flowgate: --bpffs ${opts.bpffs} is on the bound bpffs (${bpffs.target})`,
  );
  assert.ok(!bpffs.target.startsWith('/sys/'), 'flowgate: the bpffs is bound outside /sys (AppArmor docker-default)');
  namedVolumeAt(fgMounts, opts.store, 'flowgate (--store)');
  // ClickHouse: the published loopback port, as a user that writes, with that user's password.
  assert.ok(opts.clickhouseUrl, 'flowgate: --clickhouse-url');
  const url = new URL(opts.clickhouseUrl);
  assert.equal(url.hostname, '127.0.0.1', 'flowgate: --clickhouse-url on loopback (host network)');
  assert.equal(Number(url.port), chHttp.host, "flowgate: --clickhouse-url is clickhouse's published port");
  const agentUser = users.get(url.username);
  assert.ok(agentUser && !agentUser.readonly, `flowgate: --clickhouse-url user ${url.username} writes`);
  assert.equal(url.password, '', 'flowgate: no password in --clickhouse-url (ps shows it): --clickhouse-password-file');
  // A file compose writes from a secret: what it holds, read from .env.example as compose would.
  const secretFile = (file: string | undefined, flag: string): string => {
    const secret = /^\/run\/secrets\/([\w.-]+)$/.exec(file ?? '')?.[1];
    assert.ok(secret, `flowgate: ${flag} from a compose secret (/run/secrets/…)`);
    assert.ok(strings(fg.secrets ?? [], 'flowgate.secrets').includes(secret), `flowgate: is granted secret ${secret}`);
    const secretSpec = mapping(mapping(doc.secrets ?? {}, 'secrets')[secret], `compose.yaml: secret ${secret}`);
    if (typeof secretSpec.environment === 'string') {
      const value = env.get(secretSpec.environment);
      assert.ok(value !== undefined, `compose.yaml: ${secretSpec.environment} is not documented in .env.example`);
      return value;
    }
    assert.ok(typeof secretSpec.file === 'string', `compose.yaml: secret ${secret} from a file or the environment`);
    return `<${secretSpec.file}>`;
  };
  assert.equal(
    secretFile(opts.clickhousePasswordFile, '--clickhouse-password-file'),
    chEnv[agentUser.passwordEnv],
    `flowgate: --clickhouse-password-file holds ${url.username}'s password`,
  );
  // The token, from a compose secret.
  secretFile(opts.apiTokenFile, '--api-token-file');
  assert.ok(
    seconds(text(fg.stop_grace_period, 'flowgate.stop_grace_period'), 'stop_grace_period') >= UNIT_STOP_SECONDS,
    "flowgate: stop_grace_period as long as the unit's TimeoutStopSec (final drain and flush)",
  );

  // grafana: the plugin, deploy/grafana mounted where its provisioning says, the read-only user.
  const gf = service('grafana');
  const gfImage = /^grafana\/grafana:(\d+)\.(\d+)(?:\.\d+)?$/.exec(text(gf.image, 'grafana.image'));
  assert.ok(gfImage, 'compose.yaml: grafana image pinned to a version');
  assert.ok(Number(gfImage[1]) * 100 + Number(gfImage[2]) >= 1105, 'grafana: 11.5 or later (GF_PLUGINS_PREINSTALL)');
  const gfEnv = mapping(gf.environment, 'grafana.environment');
  assert.ok(
    text(gfEnv.GF_PLUGINS_PREINSTALL, 'GF_PLUGINS_PREINSTALL')
      .split(',')
      .some((p) => p.trim().split('@')[0] === 'grafana-clickhouse-datasource'),
    'grafana: GF_PLUGINS_PREINSTALL has grafana-clickhouse-datasource',
  );
  const gfMounts = mounts(gf, 'grafana');
  const provisioning = boundDir(gfMounts, '/etc/grafana/provisioning', composeDir, 'grafana');
  assert.equal(
    provisioning,
    path.join(ROOT, 'deploy/grafana/provisioning'),
    'grafana: provisioning from deploy/grafana',
  );
  const provider = mapping(
    list(
      mapping(yamlDocs(read(path.join(provisioning, 'dashboards/flowgate.yaml')), 'dashboards provider')[0], 'provider')
        .providers,
      'providers',
    )[0],
    'provider',
  );
  const dashboardsPath = text(mapping(provider.options, 'provider.options').path, 'provider.options.path');
  const dashboards = boundDir(gfMounts, dashboardsPath, composeDir, 'grafana (the dashboards provider path)');
  assert.equal(dashboards, path.join(ROOT, 'deploy/grafana/dashboards'), 'grafana: dashboards from deploy/grafana');
  const ds = mapping(
    list(
      mapping(
        yamlDocs(read(path.join(provisioning, 'datasources/clickhouse.yaml')), 'datasource')[0],
        'datasource file',
      ).datasources,
      'datasources',
    )[0],
    'datasource',
  );
  const jsonData = mapping(ds.jsonData, 'datasource.jsonData');
  assert.ok(
    isMapping(services[text(jsonData.host, 'jsonData.host')]),
    `grafana: the datasource's host ${String(jsonData.host)} is a service`,
  );
  assert.ok(
    ports(ch, 'clickhouse').some((p) => p.container === jsonData.port),
    `grafana: the datasource's port ${String(jsonData.port)} is clickhouse's HTTP port`,
  );
  const gfUser = users.get(text(gfEnv.CLICKHOUSE_USER, 'grafana CLICKHOUSE_USER'));
  assert.ok(gfUser && gfUser.readonly, 'grafana: CLICKHOUSE_USER is a read-only ClickHouse user');
  assert.equal(gfEnv.CLICKHOUSE_PASSWORD, chEnv[gfUser.passwordEnv], "grafana: CLICKHOUSE_PASSWORD is that user's");
  loopbackOnly(gf, 'grafana');
  assert.ok(
    ports(gf, 'grafana').some((p) => p.container === 3000),
    'grafana: port 3000 is published',
  );
}

// ---- Kubernetes ----------------------------------------------------------------------

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: Mapping;
  body: Mapping;
  file: string;
}

/** Every object of every YAML file in `dir`, and the kustomization. */
function k8sObjects(dir: string): { objects: K8sObject[]; kustomization: Mapping; files: string[] } {
  const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));
  let kustomization: Mapping | undefined;
  const objects: K8sObject[] = [];
  for (const file of files) {
    for (const doc of yamlDocs(read(path.join(dir, file)), file)) {
      const o = mapping(doc, file);
      const kind = text(o.kind, `${file}: kind`);
      if (kind === 'Kustomization') {
        kustomization = o;
        continue;
      }
      const metadata = mapping(o.metadata, `${file}: ${kind}.metadata`);
      text(metadata.name, `${file}: ${kind}.metadata.name`);
      objects.push({ apiVersion: text(o.apiVersion, `${file}: apiVersion`), kind, metadata, body: o, file });
    }
  }
  assert.ok(kustomization, `${dir}: no kustomization.yaml`);
  return { objects, kustomization, files };
}

interface K8sPaths {
  healthPath: string;
  metricsPath: string;
}

function checkKubernetes(dir: string): K8sPaths {
  const { objects, kustomization, files } = k8sObjects(dir);
  // The kustomization lists every file, and only files that exist.
  const resources = strings(kustomization.resources, 'kustomization.resources');
  assert.deepEqual(
    [...resources].sort(),
    files.filter((f) => f !== 'kustomization.yaml').sort(),
    'kustomization.yaml: resources list every manifest in the folder',
  );
  const one = (kind: string): K8sObject => {
    const found = objects.filter((o) => o.kind === kind);
    assert.equal(found.length, 1, `one ${kind}`);
    return found[0]!;
  };
  const ns = one('Namespace');
  const nsName = text(ns.metadata.name, 'Namespace name');
  for (const o of objects.filter((x) => x !== ns)) {
    assert.equal(o.metadata.namespace, nsName, `${o.file}: ${o.kind} in namespace ${nsName}`);
  }
  assert.equal(
    mapping(ns.metadata.labels, 'Namespace labels')['pod-security.kubernetes.io/enforce'],
    'privileged',
    'Namespace: Pod Security level privileged (hostNetwork, hostPath, added capabilities)',
  );
  const configMap = one('ConfigMap');
  const cmData = mapping(configMap.body.data, 'ConfigMap data');
  const secret = one('Secret');
  const secretData = {
    ...mapping(secret.body.data ?? {}, 'Secret data'),
    ...mapping(secret.body.stringData ?? {}, 'Secret stringData'),
  };

  // DaemonSet.
  const ds = one('DaemonSet');
  const spec = mapping(ds.body.spec, 'DaemonSet spec');
  const template = mapping(spec.template, 'DaemonSet template');
  const podLabels = mapping(mapping(template.metadata, 'template.metadata').labels, 'template labels');
  selects(mapping(spec.selector, 'DaemonSet selector').matchLabels, podLabels, 'DaemonSet');
  const update = mapping(spec.updateStrategy, 'updateStrategy');
  assert.equal(update.type, 'RollingUpdate', 'DaemonSet: RollingUpdate');
  assert.equal(mapping(update.rollingUpdate, 'rollingUpdate').maxUnavailable, 1, 'DaemonSet: maxUnavailable 1');
  const pod = mapping(template.spec, 'pod spec');
  assert.equal(pod.hostNetwork, true, 'DaemonSet: hostNetwork');
  assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet', 'DaemonSet: dnsPolicy ClusterFirstWithHostNet');
  assert.ok(
    list(pod.tolerations ?? [], 'tolerations').some(
      (t) => isMapping(t) && t.operator === 'Exists' && t.key === undefined,
    ),
    'DaemonSet: tolerates every taint (runs on all nodes)',
  );
  assert.ok(
    Number(pod.terminationGracePeriodSeconds) >= UNIT_STOP_SECONDS,
    "DaemonSet: terminationGracePeriodSeconds as long as the unit's TimeoutStopSec (final drain and flush)",
  );
  const containers = list(pod.containers, 'containers');
  assert.equal(containers.length, 1, 'DaemonSet: one container');
  const c = mapping(containers[0], 'container');

  // Image: the kustomization can set it; this release's version.
  const [imageName, imageTag] = text(c.image, 'image').split(':');
  assert.ok(
    list(kustomization.images ?? [], 'kustomization.images').some((i) => isMapping(i) && i.name === imageName),
    `kustomization.yaml: images names ${imageName!}`,
  );
  assert.equal(imageTag, PACKAGE.version, "DaemonSet: the image tag is package.json's version");

  // Environment: NODE_NAME from the downward API; the rest from the ConfigMap and the Secret, keys that exist.
  const env = new Map<string, string>();
  const cmKeysUsed = new Set<string>();
  for (const [i, e] of list(c.env ?? [], 'env').entries()) {
    const v = mapping(e, `env[${i}]`);
    const name = text(v.name, `env[${i}].name`);
    if (typeof v.value === 'string') {
      env.set(name, v.value);
      continue;
    }
    const from = mapping(v.valueFrom, `env ${name}.valueFrom`);
    if (from.fieldRef) {
      const field = text(mapping(from.fieldRef, 'fieldRef').fieldPath, 'fieldPath');
      env.set(name, field === 'spec.nodeName' ? 'node-1' : `<${field}>`);
    } else if (from.configMapKeyRef) {
      const ref = mapping(from.configMapKeyRef, 'configMapKeyRef');
      assert.equal(ref.name, configMap.metadata.name, `env ${name}: the ConfigMap`);
      const key = text(ref.key, 'key');
      const value = cmData[key];
      assert.ok(typeof value === 'string', `env ${name}: ConfigMap has no key ${key}`);
      cmKeysUsed.add(key);
      env.set(name, value);
    } else if (from.secretKeyRef) {
      const ref = mapping(from.secretKeyRef, 'secretKeyRef');
      assert.equal(ref.name, secret.metadata.name, `env ${name}: the Secret`);
      const key = text(ref.key, 'key');
      const value = secretData[key];
      assert.ok(typeof value === 'string', `env ${name}: Secret has no key ${key}`);
      env.set(name, value);
    } else {
      assert.fail(`env ${name}: unknown valueFrom`);
    }
  }
  for (const key of Object.keys(cmData)) assert.ok(cmKeysUsed.has(key), `ConfigMap: ${key} is used by no env`);
  const args = strings(c.args, 'args').map((a) =>
    a.replace(/\$\(([A-Za-z_]\w*)\)/g, (_, name: string) => {
      const v = env.get(name);
      assert.ok(v !== undefined, `DaemonSet args: $(${name}) is no env of the container`);
      return v;
    }),
  );
  const opts = parseRun(args, 'DaemonSet');
  assert.equal(opts.host, 'node-1', 'DaemonSet: --host is $(NODE_NAME), the spec.nodeName');

  // Volumes: the host's bpffs under --bpffs, the host's state dir at --store, the token from the Secret.
  const volumes = new Map(
    list(pod.volumes, 'volumes').map((v, i) => {
      const m = mapping(v, `volumes[${i}]`);
      return [text(m.name, `volumes[${i}].name`), m] as const;
    }),
  );
  const volumeMounts = list(c.volumeMounts, 'volumeMounts').map((v, i) => mapping(v, `volumeMounts[${i}]`));
  const mountOf = (file: string): { mount: Mapping; volume: Mapping } => {
    const mount = volumeMounts.find((m) => file === m.mountPath || file.startsWith(`${String(m.mountPath)}/`));
    assert.ok(mount, `DaemonSet: nothing is mounted at ${file}`);
    const volume = volumes.get(text(mount.name, 'volumeMount name'));
    assert.ok(volume, `DaemonSet: no volume ${String(mount.name)}`);
    return { mount, volume };
  };
  const bpffs = mountOf(opts.bpffs);
  const bpffsHost = mapping(bpffs.volume.hostPath, `DaemonSet: --bpffs ${opts.bpffs} is on a hostPath volume`);
  assert.equal(bpffsHost.path, '/sys/fs/bpf', "DaemonSet: --bpffs is on the host's /sys/fs/bpf");
  assert.ok(
    ['Directory', 'DirectoryOrCreate'].includes(String(bpffsHost.type)),
    'DaemonSet: bpffs hostPath is a directory',
  );
  assert.notEqual(
    bpffs.mount.mountPropagation,
    'Bidirectional',
    'DaemonSet: Bidirectional propagation needs a privileged container',
  );
  assert.ok(
    !String(bpffs.mount.mountPath).startsWith('/sys/'),
    "DaemonSet: the bpffs is mounted outside /sys (the runtime's AppArmor profile)",
  );
  const store = mountOf(opts.store);
  assert.equal(store.mount.mountPath, opts.store, 'DaemonSet: --store is a mount of its own');
  assert.equal(mapping(store.volume.hostPath, 'DaemonSet: --store on a hostPath').path, '/var/lib/flowgate');
  /** The key of the Secret a flag's file is (on a secret volume of the Secret). */
  const secretKeyOf = (file: string | undefined, flag: string): string => {
    assert.ok(file, `DaemonSet: ${flag}`);
    const at = mountOf(file);
    const volume = mapping(at.volume.secret, `DaemonSet: ${flag} is on a secret volume`);
    assert.equal(volume.secretName, secret.metadata.name, `DaemonSet: ${flag} from the Secret`);
    const rel = path.posix.relative(text(at.mount.mountPath, 'mountPath'), file);
    const items = list(volume.items ?? [], 'items').map((i) => mapping(i, 'item'));
    const key = items.length ? items.find((i) => i.path === rel)?.key : rel;
    assert.ok(
      typeof key === 'string' && typeof secretData[key] === 'string',
      `DaemonSet: ${file} is no key of the Secret`,
    );
    return key;
  };
  const tokenKey = secretKeyOf(opts.apiTokenFile, '--api-token-file (it listens beyond loopback)');
  assert.ok(opts.clickhouseUrl, 'DaemonSet: --clickhouse-url');
  assert.equal(new URL(opts.clickhouseUrl).password, '', 'DaemonSet: no password in --clickhouse-url (ps shows it)');
  assert.equal(
    secretKeyOf(opts.clickhousePasswordFile, '--clickhouse-password-file'),
    'clickhouse-password',
    "DaemonSet: --clickhouse-password-file is the Secret's clickhouse-password",
  );

  // Security: the unit's capabilities and no others, not privileged, read-only root.
  const sc = mapping(c.securityContext, 'securityContext');
  const capabilities = mapping(sc.capabilities, 'capabilities');
  assert.deepEqual(
    strings(capabilities.add, 'capabilities.add').sort(),
    UNIT_CAPS,
    "DaemonSet: adds the systemd unit's capabilities",
  );
  assert.ok(strings(capabilities.drop, 'capabilities.drop').includes('ALL'), 'DaemonSet: drops ALL others');
  assert.notEqual(sc.privileged, true, 'DaemonSet: not privileged');
  assert.equal(sc.allowPrivilegeEscalation, false, 'DaemonSet: allowPrivilegeEscalation false');
  assert.equal(sc.readOnlyRootFilesystem, true, 'DaemonSet: readOnlyRootFilesystem');
  const compute = mapping(c.resources, 'resources');
  const requests = mapping(compute.requests, 'requests');
  assert.ok(requests.cpu && requests.memory, 'DaemonSet: requests cpu and memory');
  assert.ok(mapping(compute.limits, 'limits').memory, 'DaemonSet: a memory limit');

  // Port and probes: --listen's port, named; the probes GET the health path on it.
  const containerPorts = list(c.ports, 'ports').map((p) => mapping(p, 'port'));
  const apiPort = containerPorts.find((p) => p.containerPort === opts.listen.port);
  assert.ok(apiPort, `DaemonSet: no containerPort ${opts.listen.port} (--listen)`);
  const portName = text(apiPort.name, 'the API port name');
  for (const probe of ['livenessProbe', 'readinessProbe']) {
    const get = mapping(mapping(c[probe], probe).httpGet, `${probe}.httpGet`);
    assert.equal(get.path, HEALTH_PATH, `DaemonSet: ${probe} GETs ${HEALTH_PATH}`);
    const port =
      typeof get.port === 'string' ? containerPorts.find((p) => p.name === get.port)?.containerPort : get.port;
    assert.equal(port, opts.listen.port, `DaemonSet: ${probe} on --listen's port`);
  }

  // Service: headless, the pods, the API port by name.
  const svc = one('Service');
  assert.equal(svc.metadata.name, 'flowgate-metrics', 'Service: flowgate-metrics');
  const svcSpec = mapping(svc.body.spec, 'Service spec');
  assert.equal(svcSpec.clusterIP, 'None', 'Service: headless');
  selects(svcSpec.selector, podLabels, 'Service');
  const svcPort = list(svcSpec.ports, 'Service ports')
    .map((p) => mapping(p, 'Service port'))
    .find((p) => p.name === 'http-metrics');
  assert.ok(svcPort, 'Service: a port named http-metrics');
  assert.equal(svcPort.port, opts.listen.port, "Service: http-metrics is --listen's port");
  const target = svcPort.targetPort;
  assert.ok(target === portName || target === opts.listen.port, 'Service: targets the API port');

  // ServiceMonitor: that Service, that port, /metrics with the same token.
  const sm = one('ServiceMonitor');
  assert.equal(sm.apiVersion, 'monitoring.coreos.com/v1', 'ServiceMonitor: monitoring.coreos.com/v1');
  const smSpec = mapping(sm.body.spec, 'ServiceMonitor spec');
  selects(mapping(smSpec.selector, 'ServiceMonitor selector').matchLabels, svc.metadata.labels, 'ServiceMonitor');
  assert.ok(
    strings(mapping(smSpec.namespaceSelector, 'namespaceSelector').matchNames, 'matchNames').includes(nsName),
    'ServiceMonitor: looks in the namespace',
  );
  const endpoints = list(smSpec.endpoints, 'endpoints').map((e) => mapping(e, 'endpoint'));
  assert.ok(endpoints.length > 0, 'ServiceMonitor: an endpoint');
  let metricsPath = '';
  for (const ep of endpoints) {
    assert.equal(ep.port, svcPort.name, "ServiceMonitor: scrapes the Service's http-metrics port");
    metricsPath = text(ep.path, 'endpoint path');
    const credentials = mapping(mapping(ep.authorization, 'authorization').credentials, 'credentials');
    assert.equal(credentials.name, secret.metadata.name, 'ServiceMonitor: the token from the Secret');
    assert.equal(credentials.key, tokenKey, "ServiceMonitor: the Secret's key the agents read their token from");
  }
  return { healthPath: HEALTH_PATH, metricsPath };
}

// ---- the tests ------------------------------------------------------------------------

/** `broken` differs from `good` and fails `check` with a message matching `why`. */
function assertBreaks(what: string, good: string, broken: string, why: RegExp, check: (text: string) => unknown): void {
  assert.notEqual(broken, good, `${what}: the mutation changed nothing`);
  assert.throws(() => check(broken), why, `${what}: not caught`);
}

describe('Dockerfile', () => {
  const source = read(DOCKERFILE);
  const ignore = read(path.join(ROOT, '.dockerignore'));

  it('builds in one stage and runs the agent from a slim one with what it opens', () => {
    checkDockerfile(source, ignore);
  });

  it('the checks fail on a broken Dockerfile or .dockerignore', () => {
    const check = (s: string): void => checkDockerfile(s, ignore);
    const cases: Array<[string, string, RegExp]> = [
      [
        'one stage',
        source.slice(0, source.indexOf('FROM node:${NODE_MAJOR}-bookworm-slim')),
        /build and a runtime stage/,
      ],
      ['missing source', source.replace('COPY control/ control/', 'COPY contrl/ control/'), /contrl\/: does not exist/],
      [
        'ignored source',
        source.replace('COPY schema/ schema/', 'COPY schema/ schema/\nCOPY .ci/ .ci/'),
        /dockerignore/,
      ],
      ['no prune', source.replace('RUN npm prune --omit=dev', 'RUN true'), /npm prune --omit=dev/],
      ['no libbpf1', source.replace('libbpf1 libelf1 zlib1g', 'libelf1 zlib1g'), /libbpf1/],
      [
        'toolchain at run time',
        source.replace('libbpf1 libelf1 zlib1g', 'libbpf1 libelf1 zlib1g make'),
        /build tool make/,
      ],
      ['no BPF object', source.replace(/^COPY --from=build \S*flowgate\.bpf\.o.*$/m, ''), /flowgate\.bpf\.o/],
      ['no schema', source.replace(/^COPY --from=build \/src\/schema\/ schema\/$/m, ''), /lacks schema/],
      [
        'not from the build',
        source.replace('COPY --from=build /src/package.json', 'COPY --from=nowhere /src/package.json'),
        /no such stage/,
      ],
      [
        'not made',
        source.replace('/src/dist/native/ dist/native/', '/src/dist/nativ/ dist/native/'),
        /neither copies nor makes/,
      ],
      [
        'not the addon',
        source.replace('/src/native/build/Release/flowgate_native.node', '/src/native/build/Release/flowgate.node'),
        /flowgate\.node: the build stage neither copies nor makes/,
      ],
      [
        'entrypoint',
        source.replace('"/opt/flowgate/bin/flowgate.js"', '"/opt/flowgate/bin/flowgate.ts"'),
        /ENTRYPOINT runs bin\/flowgate\.js/,
      ],
      ['cmd flag', source.replace('"run", "--help"', '"run", "--hepl"'), /--hepl is no flag/],
      [
        'node major',
        source.replace('FROM node:${NODE_MAJOR}-bookworm-slim', 'FROM node:22-bookworm-slim'),
        /same Node major/,
      ],
    ];
    for (const [what, broken, why] of cases) assertBreaks(what, source, broken, why, check);
    assertBreaks(
      'ignore keeps node_modules',
      ignore,
      ignore.replace(/^node_modules$/m, ''),
      /leaves out node_modules/,
      (i) => checkDockerfile(source, i),
    );
  });
});

describe('deploy/compose', () => {
  const composeText = read(path.join(COMPOSE_DIR, 'compose.yaml'));
  const usersXml = read(path.join(COMPOSE_DIR, 'clickhouse/users.d/flowgate.xml'));
  const configXml = read(path.join(COMPOSE_DIR, 'clickhouse/config.d/flowgate.xml'));

  it('runs clickhouse, the agent on the host network with three capabilities, and grafana with deploy/grafana', () => {
    checkCompose(composeText, COMPOSE_DIR);
  });

  it('FLOWGATE_IFACE is required', () => {
    const doc = mapping(yamlDocs(composeText, 'compose.yaml')[0], 'compose');
    const withoutIface = envExample(read(path.join(COMPOSE_DIR, '.env.example')));
    withoutIface.delete('FLOWGATE_IFACE');
    assert.throws(
      () => interpolate(doc, withoutIface, new Set(), 'compose.yaml'),
      /FLOWGATE_IFACE: set FLOWGATE_IFACE/,
    );
  });

  it('the ClickHouse users: grafana read-only with max_execution_time changeable, passwords from the environment', () => {
    const users = checkClickHouseConfig(usersXml, configXml);
    assert.deepEqual([...users.keys()].sort(), ['flowgate', 'grafana']);
  });

  it('the compose checks fail on a broken compose.yaml', () => {
    const check = (s: string): void => checkCompose(s, COMPOSE_DIR);
    const cases: Array<[string, string, RegExp]> = [
      ['bridge network', composeText.replace('network_mode: host', 'network_mode: bridge'), /network_mode host/],
      ['privileged', composeText.replace('privileged: false', 'privileged: true'), /not privileged/],
      [
        'SYS_ADMIN',
        composeText.replace('[BPF, NET_ADMIN, PERFMON]', '[BPF, NET_ADMIN, PERFMON, SYS_ADMIN]'),
        /cap_add/,
      ],
      ['no cap_drop', composeText.replace('cap_drop: [ALL]', 'cap_drop: []'), /cap_drop ALL/],
      [
        'no bpffs',
        composeText.replace('source: /sys/fs/bpf', 'source: /sys/fs/bpf2'),
        /binds the host's \/sys\/fs\/bpf/,
      ],
      [
        'bpffs elsewhere',
        composeText.replace('--bpffs=/host/sys/fs/bpf/flowgate', '--bpffs=/sys/fs/bpf/flowgate'),
        /--bpffs/,
      ],
      ['store not a volume', composeText.replace('--store=/var/lib/flowgate', '--store=/var/lib/fg'), /--store/],
      ['unknown flag', composeText.replace('--drain-interval=', '--drain-every='), /unknown option '--drain-every=/],
      ['bad value', composeText.replace('${FLOWGATE_RETENTION:-30d}', '30 days'), /--retention/],
      [
        'undocumented variable',
        composeText.replace('${FLOWGATE_RETENTION:-30d}', '${FLOWGATE_KEEP:-30d}'),
        /FLOWGATE_KEEP.*\.env\.example/,
      ],
      [
        'waits for the store',
        composeText.replace('condition: service_started', 'condition: service_healthy'),
        /must not wait for its health/,
      ],
      ['published everywhere', composeText.replace("'127.0.0.1:8123:8123'", "'8123:8123'"), /loopback only/],
      ['wrong port', composeText.replace('@127.0.0.1:8123', '@127.0.0.1:9000'), /published port/],
      ['agent as grafana', composeText.replace('http://flowgate@', 'http://grafana@'), /user grafana writes/],
      ['token elsewhere', composeText.replace('/run/secrets/flowgate_api_token', '/run/secrets/other'), /secret other/],
      [
        'password in the URL',
        composeText.replace('http://flowgate@', 'http://flowgate:${FLOWGATE_CLICKHOUSE_PASSWORD}@'),
        /no password in --clickhouse-url/,
      ],
      [
        "grafana's password",
        composeText.replace('environment: FLOWGATE_CLICKHOUSE_PASSWORD', 'environment: GRAFANA_CLICKHOUSE_PASSWORD'),
        /holds flowgate's password/,
      ],
      [
        'password secret not granted',
        composeText.replace('      - flowgate_clickhouse_password\n', ''),
        /granted secret flowgate_clickhouse_password/,
      ],
      ['short grace', composeText.replace('stop_grace_period: 60s', 'stop_grace_period: 10s'), /stop_grace_period/],
      ['unpinned', composeText.replace('clickhouse-server:25.8', 'clickhouse-server:latest'), /pinned/],
      [
        'no plugin',
        composeText.replace('GF_PLUGINS_PREINSTALL: grafana-clickhouse-datasource', 'GF_PLUGINS_PREINSTALL: x'),
        /grafana-clickhouse-datasource/,
      ],
      ['provisioning', composeText.replace('../grafana/provisioning:', '../grafana/provision:'), /does not exist/],
      [
        'dashboards path',
        composeText.replace(':/var/lib/grafana/dashboards/flowgate:', ':/var/lib/grafana/dashboards:'),
        /dashboards provider path/,
      ],
      [
        'grafana as writer',
        composeText.replace('CLICKHOUSE_USER: grafana', 'CLICKHOUSE_USER: flowgate'),
        /read-only ClickHouse user/,
      ],
      [
        'grafana wrong password',
        composeText.replace(/^(\s+)CLICKHOUSE_PASSWORD: \$\{GRAFANA_/m, '$1CLICKHOUSE_PASSWORD: ${FLOWGATE_'),
        /CLICKHOUSE_PASSWORD is that user's/,
      ],
    ];
    for (const [what, broken, why] of cases) assertBreaks(what, composeText, broken, why, check);
  });

  it('the ClickHouse checks fail on broken users.d and config.d', () => {
    const users = (s: string): unknown => checkClickHouseConfig(s, configXml);
    const cases: Array<[string, string, RegExp]> = [
      ['not read-only', usersXml.replace('<readonly>1</readonly>', '<readonly>0</readonly>'), /grafana is read-only/],
      ['no constraint', usersXml.replace('<changeable_in_readonly/>', ''), /changeable_in_readonly/],
      ['unbalanced', usersXml.replace('</grants>', ''), /XML/],
      ['stray tag', usersXml.replace('<users>', '<users'), /XML/],
      ['grafana writes', usersXml.replace('GRANT SELECT ON flowgate.*', 'GRANT ALL ON flowgate.*'), /only SELECT/],
      [
        'plain password',
        usersXml.replace('<password from_env="GRAFANA_CLICKHOUSE_PASSWORD"/>', '<password>x</password>'),
        /from_env/,
      ],
      ['no grafana', usersXml.replace(/<grafana>[\s\S]*<\/grafana>/, ''), /defines the grafana user/],
    ];
    for (const [what, broken, why] of cases) assertBreaks(what, usersXml, broken, why, users);
    assertBreaks(
      'constraints off',
      configXml,
      configXml.replace('>true<', '>false<'),
      /settings_constraints_replace_previous/,
      (s) => checkClickHouseConfig(usersXml, s),
    );
  });
});

describe('deploy/kubernetes', () => {
  it('a DaemonSet on the host network with the host bpffs, probes on the health path, metrics for Prometheus', () => {
    checkKubernetes(K8S_DIR);
  });

  it('the probed path answers without the token, the scraped path needs it (the real API)', async () => {
    const { healthPath, metricsPath } = checkKubernetes(K8S_DIR);
    const token = 'deploy-test-token';
    await withTestApi({ agent: new FakeRulesAgent(), token, rateLimit: false }, async (app) => {
      const health = await app.inject({ method: 'GET', url: healthPath });
      assert.equal(health.statusCode, 200, `${healthPath} without a token: ${health.body}`);
      const bare = await app.inject({ method: 'GET', url: metricsPath });
      assert.equal(bare.statusCode, 401, `${metricsPath} without a token`);
      const scraped = await app.inject({
        method: 'GET',
        url: metricsPath,
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(scraped.statusCode, 200, `${metricsPath} with the token`);
      assert.match(scraped.body, /^# HELP flowgate_/m);
    });
  });

  it('the checks fail on broken manifests', () => {
    const files = readdirSync(K8S_DIR);
    let n = 0;
    /** A copy of the folder with `file` replaced by `edit` of it (or added when absent). */
    const brokenCopy = (file: string, edit: (s: string) => string): { dir: string; changed: boolean } => {
      const dir = path.join(work, `k8s-${++n}`);
      cpSync(K8S_DIR, dir, { recursive: true });
      const target = path.join(dir, file);
      const before = existsSync(target) ? read(target) : '';
      const after = edit(before);
      writeFileSync(target, after);
      return { dir, changed: after !== before };
    };
    const cases: Array<[string, string, (s: string) => string, RegExp]> = [
      ['no hostNetwork', 'daemonset.yaml', (s) => s.replace('hostNetwork: true', 'hostNetwork: false'), /hostNetwork/],
      [
        'dnsPolicy',
        'daemonset.yaml',
        (s) => s.replace('dnsPolicy: ClusterFirstWithHostNet', 'dnsPolicy: ClusterFirst'),
        /dnsPolicy/,
      ],
      [
        'host name',
        'daemonset.yaml',
        (s) => s.replace('fieldPath: spec.nodeName', 'fieldPath: metadata.name'),
        /--host is \$\(NODE_NAME\)/,
      ],
      [
        'undefined variable',
        'daemonset.yaml',
        (s) => s.replace('--host=$(NODE_NAME)', '--host=$(NODE)'),
        /\$\(NODE\) is no env/,
      ],
      [
        'unknown flag',
        'daemonset.yaml',
        (s) => s.replace('--max-flows=', '--max-flow='),
        /unknown option '--max-flow=/,
      ],
      [
        'bad setting',
        'configmap.yaml',
        (s) => s.replace('drain-interval: 5s', 'drain-interval: often'),
        /--drain-interval/,
      ],
      ['missing key', 'configmap.yaml', (s) => s.replace('retention: 30d', 'retain: 30d'), /no key retention/],
      [
        'unused key',
        'configmap.yaml',
        (s) => s.replace('\ndata:\n', '\ndata:\n  colour: blue\n'),
        /colour is used by no env/,
      ],
      [
        'liveness path',
        'daemonset.yaml',
        (s) => s.replace(/(livenessProbe:\n\s+httpGet:\n\s+path: )\S+/, '$1/api/v1/status'),
        /livenessProbe GETs/,
      ],
      [
        'readiness port',
        'daemonset.yaml',
        (s) =>
          s.replace(/(readinessProbe:\n\s+httpGet:\n\s+path: \S+\n\s+port: )\S+/, (_, head: string) => `${head}7651`),
        /readinessProbe on --listen's port/,
      ],
      [
        'listen port',
        'daemonset.yaml',
        (s) => s.replace('--listen=0.0.0.0:7650', '--listen=0.0.0.0:7651'),
        /containerPort 7651/,
      ],
      [
        'SYS_ADMIN',
        'daemonset.yaml',
        (s) => s.replace('add: [BPF, NET_ADMIN, PERFMON]', 'add: [BPF, NET_ADMIN, PERFMON, SYS_ADMIN]'),
        /capabilities/,
      ],
      ['keeps defaults', 'daemonset.yaml', (s) => s.replace('drop: [ALL]', 'drop: [NET_RAW]'), /drops ALL/],
      [
        'writable root',
        'daemonset.yaml',
        (s) => s.replace('readOnlyRootFilesystem: true', 'readOnlyRootFilesystem: false'),
        /readOnlyRootFilesystem/,
      ],
      ['privileged', 'daemonset.yaml', (s) => s.replace('privileged: false', 'privileged: true'), /not privileged/],
      [
        'bidirectional',
        'daemonset.yaml',
        (s) => s.replace('mountPropagation: HostToContainer', 'mountPropagation: Bidirectional'),
        /Bidirectional/,
      ],
      [
        'no bpffs',
        'daemonset.yaml',
        (s) => s.replace('path: /sys/fs/bpf', 'path: /var/run/bpf'),
        /host's \/sys\/fs\/bpf/,
      ],
      [
        'bpffs elsewhere',
        'daemonset.yaml',
        (s) => s.replace('--bpffs=/host/sys/fs/bpf/flowgate', '--bpffs=/run/flowgate/pins'),
        /nothing is mounted at \/run\/flowgate\/pins/,
      ],
      ['token key', 'daemonset.yaml', (s) => s.replace('- key: api-token', '- key: token'), /is no key of the Secret/],
      [
        'short grace',
        'daemonset.yaml',
        (s) => s.replace('terminationGracePeriodSeconds: 60', 'terminationGracePeriodSeconds: 5'),
        /terminationGracePeriodSeconds/,
      ],
      ['surge', 'daemonset.yaml', (s) => s.replace('maxUnavailable: 1', 'maxUnavailable: 3'), /maxUnavailable 1/],
      [
        'tolerations',
        'daemonset.yaml',
        (s) => s.replace('- operator: Exists', '- operator: Exists\n          key: gpu'),
        /tolerates every taint/,
      ],
      ['no limits', 'daemonset.yaml', (s) => s.replace(/limits:\n\s+memory: \S+/, 'limits: {}'), /memory limit/],
      [
        'password in the URL',
        'daemonset.yaml',
        (s) => s.replace('http://$(CLICKHOUSE_USER)@', 'http://$(CLICKHOUSE_USER):pw@'),
        /no password in --clickhouse-url/,
      ],
      [
        'password file not mounted',
        'daemonset.yaml',
        (s) => s.replace('/etc/flowgate/secret/clickhouse-password', '/etc/flowgate/clickhouse-password'),
        /nothing is mounted at \/etc\/flowgate\/clickhouse-password/,
      ],
      [
        'password file is the token',
        'daemonset.yaml',
        (s) => s.replace('path: clickhouse-password', 'path: clickhouse-password-x'),
        /clickhouse-password is no key of the Secret/,
      ],
      [
        'image tag',
        'daemonset.yaml',
        (s) => s.replace('image: flowgate:0.1.0', 'image: flowgate:9.9.9'),
        /package\.json's version/,
      ],
      [
        'service selector',
        'service.yaml',
        (s) => s.replace('app.kubernetes.io/component: agent\n  ports', 'app.kubernetes.io/component: db\n  ports'),
        /Service: selector/,
      ],
      ['not headless', 'service.yaml', (s) => s.replace('clusterIP: None', 'clusterIP: 10.0.0.9'), /headless/],
      [
        'port name',
        'service.yaml',
        (s) => s.replace('- name: http-metrics', '- name: metrics'),
        /port named http-metrics/,
      ],
      [
        'monitor port',
        'servicemonitor.yaml',
        (s) => s.replace('- port: http-metrics', '- port: metrics'),
        /http-metrics port/,
      ],
      [
        'monitor key',
        'servicemonitor.yaml',
        (s) => s.replace('key: api-token', 'key: clickhouse-password'),
        /read their token from/,
      ],
      [
        'monitor selector',
        'servicemonitor.yaml',
        (s) =>
          s.replace(
            'app.kubernetes.io/component: agent\n  namespaceSelector',
            'app.kubernetes.io/component: x\n  namespaceSelector',
          ),
        /ServiceMonitor: selector/,
      ],
      [
        'other namespace',
        'service.yaml',
        (s) => s.replace('namespace: flowgate', 'namespace: default'),
        /in namespace flowgate/,
      ],
      ['PSA', 'namespace.yaml', (s) => s.replace('enforce: privileged', 'enforce: baseline'), /Pod Security/],
      [
        'unlisted file',
        'extra.yaml',
        () => 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: flowgate\n',
        /resources list every manifest/,
      ],
      [
        'not in the kustomization',
        'kustomization.yaml',
        (s) => s.replace('  - service.yaml\n', ''),
        /resources list every manifest/,
      ],
    ];
    for (const [what, file, edit, why] of cases) {
      const { dir, changed } = brokenCopy(file, edit);
      assert.ok(changed || !files.includes(file), `${what}: the mutation changed nothing`);
      assert.throws(() => checkKubernetes(dir), why, `${what}: not caught`);
    }
  });
});
