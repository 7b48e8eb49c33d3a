/**
 * Privilege gate for tests that need root, bpf() or network namespaces.
 *
 *   test('attaches XDP', (t) => {
 *     if (!requirePrivileges(t, ['root', 'bpf'])) return;
 *     ...
 *   });
 *
 * When a need is unmet:
 *  - under CI (process.env.CI === 'true') it throws, so the test FAILS — CI runs
 *    as root on a kernel that has everything, so a missing privilege there is a bug;
 *  - otherwise it calls t.skip(reason) and returns false; the caller must return.
 * Returns true when every need is met.
 *
 * Needs:
 *  - 'root':  process.getuid() === 0.
 *  - 'bpf':   root and /sys/kernel/btf/vmlinux exists (a kernel we can load programs into).
 *  - 'netns': `ip netns list` exits 0. Creating namespaces also needs root: ask for ['root', 'netns'].
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { TestContext } from 'node:test';

export type Privilege = 'root' | 'bpf' | 'netns';

const cache = new Map<Privilege, string | null>();

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Why the need is unmet, or null when it is met. */
function check(need: Privilege): string | null {
  switch (need) {
    case 'root':
      return isRoot() ? null : `needs root (uid is ${process.getuid?.() ?? 'unknown'}); run: sudo bash scripts/test.sh`;
    case 'bpf':
      if (!isRoot()) return 'needs bpf(): run as root (sudo bash scripts/test.sh)';
      if (!existsSync('/sys/kernel/btf/vmlinux'))
        return 'needs bpf(): kernel has no BTF (/sys/kernel/btf/vmlinux missing)';
      return null;
    case 'netns': {
      const r = spawnSync('ip', ['netns', 'list'], {
        stdio: 'ignore',
        timeout: 10_000,
        env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` },
      });
      if (r.error) return `needs network namespaces: cannot run 'ip netns list' (${r.error.message}); install iproute2`;
      return r.status === 0 ? null : `needs network namespaces: 'ip netns list' exited ${r.status ?? r.signal}`;
    }
  }
}

function reasonFor(need: Privilege): string | null {
  if (!cache.has(need)) cache.set(need, check(need));
  return cache.get(need) ?? null;
}

export function isCI(): boolean {
  return process.env.CI === 'true';
}

/**
 * Gate a test on privileges: true when all are available; otherwise throws under
 * CI=true (the test fails) or skips the test and returns false.
 */
export function requirePrivileges(t: TestContext, needs: Privilege[]): boolean {
  const unmet = [...new Set(needs)].map(reasonFor).filter((r): r is string => r !== null);
  if (unmet.length === 0) return true;
  const reason = unmet.join('; ');
  if (isCI()) {
    throw new Error(`CI=true: privileged test cannot run, failing instead of skipping: ${reason}`);
  }
  t.skip(reason);
  return false;
}
