/**
 * deploy/systemd: the unit passes `systemd-analyze verify` without a single
 * warning (verify exits 0 on most mistakes and only prints them, so any
 * output fails), a deliberately broken copy fails the same check, the unit
 * has the shape the issue asks for, and install.sh parses and its --dry-run
 * names each step and changes nothing. Nothing is installed here.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEFAULTS } from '../../control/cli/run.js';
import { isCI } from '../lib/privileges.js';

const UNIT = fileURLToPath(new URL('../../deploy/systemd/flowgate.service', import.meta.url));
const INSTALL = fileURLToPath(new URL('../../deploy/systemd/install.sh', import.meta.url));
const unitText = readFileSync(UNIT, 'utf8');

let work: string;
before(() => {
  work = mkdtempSync(path.join(tmpdir(), 'flowgate-systemd-test-'));
});
after(() => {
  rmSync(work, { recursive: true, force: true });
});

/** systemd-analyze must run: skipped without it, failed under CI=true (like test/lib/privileges.ts). */
function requireSystemdAnalyze(t: TestContext): boolean {
  const r = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8', timeout: 30_000 });
  if (!r.error && r.status === 0) return true;
  const reason = `needs systemd-analyze (${r.error?.message ?? `exit ${r.status}`}); install systemd`;
  if (isCI()) throw new Error(`CI=true: cannot run, failing instead of skipping: ${reason}`);
  t.skip(reason);
  return false;
}

/** [Section] → key → values, in order (comments and blank lines dropped; no continuation lines in this unit). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(current && eq > 0, `not a key=value in a section: ${line}`);
    const key = line.slice(0, eq);
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1)]);
  }
  return sections;
}

const EXEC_KEYS = /^(Exec(?:Start|StartPre|StartPost|Stop|StopPost|Reload|Condition)=)([-+@!:]*)(\S+)/;

/**
 * A copy of the unit in its own directory whose commands are stubs there: verify
 * checks that each command exists, and /usr/bin/node or the like need not exist
 * where the test runs. The paths themselves are checked by the shape test.
 */
function unitCopy(text: string): string {
  const dir = mkdtempSync(path.join(work, 'unit-'));
  mkdirSync(path.join(dir, 'bin'));
  const lines = text.split('\n').map((line) => {
    const m = EXEC_KEYS.exec(line);
    if (!m) return line;
    const stub = path.join(dir, 'bin', path.basename(m[3]!));
    writeFileSync(stub, '#!/bin/sh\nexit 0\n');
    chmodSync(stub, 0o755);
    return `${m[1]!}${m[2]!}${stub}${line.slice(m[0].length)}`;
  });
  const file = path.join(dir, 'flowgate.service');
  writeFileSync(file, lines.join('\n'));
  return file;
}

/** verify's verdict: clean only when it exits 0 and prints nothing. */
function verify(file: string): { clean: boolean; output: string } {
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', '--recursive-errors=no', file], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (r.error) throw r.error;
  const output = `${r.stdout}${r.stderr}`.trim();
  return { clean: r.status === 0 && output === '', output: `exit ${r.status}: ${output}` };
}

describe('flowgate.service', () => {
  it('passes systemd-analyze verify with no warning', (t) => {
    if (!requireSystemdAnalyze(t)) return;
    const r = verify(unitCopy(unitText));
    assert.ok(r.clean, r.output);
  });

  it('the verify check fails on a broken unit', (t) => {
    if (!requireSystemdAnalyze(t)) return;
    const breakages: Array<[string, (s: string) => string]> = [
      ['unknown key', (s) => s.replace(/^Restart=/m, 'Restrat=')],
      ['bad boolean', (s) => s.replace(/^NoNewPrivileges=yes$/m, 'NoNewPrivileges=maybe')],
      ['bad time', (s) => s.replace(/^TimeoutStopSec=\S+$/m, 'TimeoutStopSec=soon')],
      ['unknown section', (s) => s.replace(/^\[Service\]$/m, '[Servce]')],
      ['line outside a section', (s) => `User=flowgate\n${s}`],
      ['bad address family', (s) => s.replace(/^(RestrictAddressFamilies=.*)AF_NETLINK/m, '$1AF_NETLNK')],
    ];
    for (const [what, breakIt] of breakages) {
      const broken = breakIt(unitText);
      assert.notEqual(broken, unitText, `${what}: the unit changed`);
      const r = verify(unitCopy(broken));
      assert.ok(!r.clean, `${what}: verify found nothing (${r.output})`);
    }
    // A command that does not exist (stubs are made only for the unit's own commands).
    const file = unitCopy(unitText);
    const text = readFileSync(file, 'utf8').replace(/^ExecStart=\S+/m, `ExecStart=${path.join(work, 'no-such-node')}`);
    writeFileSync(file, text);
    assert.ok(!verify(file).clean, 'missing ExecStart command');
  });

  it('runs as flowgate with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON only, hardened', () => {
    const unit = parseUnit(unitText);
    const service = unit.get('Service')!;
    assert.ok(service, 'has [Service]');
    const one = (key: string): string | undefined => {
      const v = service.get(key);
      assert.ok(!v || v.length === 1, `${key} is set once`);
      return v?.[0];
    };
    const words = (key: string): string[] => (one(key) ?? '').split(/\s+/).filter(Boolean).sort();

    assert.equal(one('User'), 'flowgate');
    assert.equal(one('Group'), 'flowgate');
    const caps = ['CAP_BPF', 'CAP_NET_ADMIN', 'CAP_PERFMON'];
    assert.deepEqual(words('AmbientCapabilities'), caps);
    assert.deepEqual(words('CapabilityBoundingSet'), caps);
    assert.equal(one('NoNewPrivileges'), 'yes');
    // V8's JIT needs W+X memory: with it the agent would not start.
    for (const [, section] of unit) assert.ok(!section.has('MemoryDenyWriteExecute'), 'no MemoryDenyWriteExecute=');
    assert.equal(one('StateDirectory'), 'flowgate');
    assert.equal(one('ProtectSystem'), 'strict');
    assert.equal(one('ProtectHome'), 'yes');
    assert.equal(one('PrivateTmp'), 'yes');
    assert.equal(one('ProtectKernelTunables'), 'yes');
    assert.equal(one('LockPersonality'), 'yes');
    assert.equal(one('SystemCallArchitectures'), 'native');
    assert.deepEqual(words('RestrictAddressFamilies'), ['AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_UNIX']);
    assert.equal(one('LimitMEMLOCK'), 'infinity');
    assert.equal(one('Restart'), 'on-failure');
    assert.match(one('RestartSec') ?? '', /^\d+s?$/);
    assert.equal(one('KillSignal'), 'SIGTERM');
    assert.ok(Number(/^(\d+)s?$/.exec(one('TimeoutStopSec') ?? '')?.[1]) >= 30, 'time for the final drain and flush');

    assert.equal(one('EnvironmentFile'), '/etc/flowgate/flowgate.env');
    assert.equal(
      one('ExecStart'),
      `/usr/bin/node /opt/flowgate/bin/flowgate.js run $FLOWGATE_ARGS --store ${DEFAULTS.store}`,
    );
    // The state directory is the agent's default --store, and the pins go to its default --bpffs,
    // made by root before the start and bound into the service's view.
    assert.equal(path.join('/var/lib', one('StateDirectory')!), DEFAULTS.store);
    assert.equal(one('BindPaths'), DEFAULTS.bpffs);
    const pre = service.get('ExecStartPre') ?? [];
    assert.ok(pre.length > 0);
    for (const cmd of pre) assert.match(cmd, /^\+\/\S+ /, `runs as root, by absolute path: ${cmd}`);
    assert.ok(
      pre.some((c) => c.startsWith('+/usr/bin/install -d -o flowgate -g flowgate') && c.endsWith(` ${DEFAULTS.bpffs}`)),
      'creates the pin directory for flowgate',
    );
  });
});

describe('install.sh', () => {
  const run = (args: string[]): { status: number | null; out: string } => {
    const r = spawnSync('bash', [INSTALL, ...args], { encoding: 'utf8', timeout: 60_000 });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };

  it('parses (bash -n)', () => {
    const r = spawnSync('bash', ['-n', INSTALL], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  it('--dry-run names every step and changes nothing', () => {
    const root = mkdtempSync(path.join(work, 'root-'));
    const prefix = path.join(root, 'opt/flowgate');
    const etc = path.join(root, 'etc/flowgate');
    const units = path.join(root, 'units');
    const r = run(['--dry-run', '--prefix', prefix, '--config-dir', etc, '--unit-dir', units]);
    assert.equal(r.status, 0, r.out);
    for (const step of [
      '==> 1/5 system user and group flowgate',
      `==> 2/5 checkout to ${prefix}`,
      `==> 3/5 settings in ${etc}/flowgate.env`,
      `==> 4/5 unit ${units}/flowgate.service`,
      '==> 5/5 systemctl daemon-reload',
    ]) {
      assert.ok(r.out.includes(step), `names "${step}":\n${r.out}`);
    }
    assert.match(r.out, new RegExp(`would write ${etc}/flowgate\\.env \\(mode 0640, root:flowgate\\)`));
    assert.match(r.out, new RegExp(`would write ${units}/flowgate\\.service`));
    assert.match(r.out, /dry run/);
    assert.deepEqual(readdirSync(root), [], 'nothing was created');
  });

  it('--dry-run over an existing install keeps the settings and an up-to-date unit', () => {
    const root = mkdtempSync(path.join(work, 'root-'));
    const prefix = path.join(root, 'opt/flowgate');
    const etc = path.join(root, 'etc/flowgate');
    const units = path.join(root, 'units');
    const args = ['--dry-run', '--prefix', prefix, '--config-dir', etc, '--unit-dir', units];
    const first = run(args);
    const node = /ExecStart=(\S+) /.exec(first.out)?.[1];
    assert.ok(node, first.out);
    mkdirSync(etc, { recursive: true });
    mkdirSync(units);
    writeFileSync(path.join(etc, 'flowgate.env'), 'FLOWGATE_ARGS="--iface eth9"\n');
    // The unit as install.sh writes it: this node, these directories.
    writeFileSync(
      path.join(units, 'flowgate.service'),
      unitText
        .replace('/usr/bin/node ', `${node} `)
        .replaceAll('/opt/flowgate/', `${prefix}/`)
        .replaceAll('/etc/flowgate/flowgate.env', `${etc}/flowgate.env`),
    );
    const again = run(args);
    assert.equal(again.status, 0, again.out);
    assert.ok(again.out.includes(`${etc}/flowgate.env exists: kept as it is`), again.out);
    assert.ok(again.out.includes(`${units}/flowgate.service is up to date: kept`), again.out);
    assert.equal(readFileSync(path.join(etc, 'flowgate.env'), 'utf8'), 'FLOWGATE_ARGS="--iface eth9"\n');
    assert.ok(!existsSync(prefix), 'the checkout was not copied');
  });

  it('refuses bad arguments with one line and the usage', () => {
    for (const args of [['--bogus'], ['--prefix', 'relative/dir'], ['--prefix', '/opt/with space'], ['--prefix']]) {
      const r = run([...args, '--dry-run']);
      assert.equal(r.status, 1, `${args.join(' ')}: ${r.out}`);
      assert.match(r.out, /^install\.sh: /m, r.out);
    }
  });
});
